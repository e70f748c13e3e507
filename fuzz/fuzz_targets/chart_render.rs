//! A chart from a registry: the input is split on NUL bytes into Chart.yaml, values.yaml, a
//! template and a helpers file, then rendered as `helm template` would. Errors are fine; a
//! panic, a hang or an unbounded allocation is a bug.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == 0);
    let names = [
        "Chart.yaml",
        "values.yaml",
        "templates/a.yaml",
        "templates/_helpers.tpl",
    ];
    let mut files = BTreeMap::new();
    for name in names {
        files.insert(name.to_string(), parts.next().unwrap_or_default().to_vec());
    }
    let Ok(chart) = chart::Chart::from_files(files, "fuzz") else {
        return;
    };
    // A loop of billions of empty iterations is bounded by the plugin's deadline in Dray; here
    // by a step budget, so that only real hangs time out.
    let options = chart::Options {
        max_steps: Some(100_000),
        ..chart::Options::default()
    };
    let _ = chart::render(&chart, &options);
});
