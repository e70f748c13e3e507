//! YAML as values files and chart metadata bring it: loaded (both number modes), and what loads
//! is dumped again. Errors are fine; a panic, a hang or an unbounded allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for json_numbers in [false, true] {
        if let Ok(docs) = chart::yaml::load_with(text, json_numbers) {
            for doc in &docs {
                let _ = chart::yaml::dump(doc);
            }
        }
    }
});
