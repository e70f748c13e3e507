//! Masterminds semver constraints and versions, as Warehouses and chart dependencies write them:
//! the input's first line is a constraint, the rest versions to check against it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let Some(constraint) = lines.next().and_then(chart::semver::Constraint::parse) else {
        return;
    };
    for line in lines {
        if let Some(version) = chart::semver::Version::parse(line) {
            let _ = constraint.matches(&version);
        }
    }
});
