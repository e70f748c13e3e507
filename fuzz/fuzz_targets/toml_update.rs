//! The `toml-update` and `toml-parse` steps on files a Git repository holds: the input's first
//! line is a Kargo key path, the second a JSON value, the rest the TOML file (edited with
//! toml_edit, which keeps comments and layout). Errors are fine; a panic, a hang, or an edit
//! that returns a file toml_edit cannot read again is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../plugins/data/src/toml.rs"]
mod toml;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let (Some(key), Some(value), Some(file)) = (lines.next(), lines.next(), lines.next()) else {
        return;
    };
    let _ = toml::to_json(file);
    let Ok(path) = dray_sdk::path::split(key) else {
        return;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(value) else {
        return;
    };
    if let Ok(edited) = toml::update(file, &[(path, value)]) {
        assert!(
            edited.parse::<toml_edit::DocumentMut>().is_ok(),
            "an edit returned TOML that does not parse"
        );
    }
});
