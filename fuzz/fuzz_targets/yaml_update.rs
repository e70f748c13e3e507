//! The `yaml-update` step's editor, on files a Git repository holds: the input's first line is
//! a Kargo key path, the second a JSON value, the rest the YAML file to edit in place; and the
//! YAML reader steps share (Go's yaml.v3 rules). Errors are fine; a panic, a hang or an
//! unbounded allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let (Some(key), Some(value), Some(file)) = (lines.next(), lines.next(), lines.next()) else {
        return;
    };
    let _ = dray_sdk::yaml::v3::load(file);
    let Ok(path) = dray_sdk::path::split(key) else {
        return;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(value) else {
        return;
    };
    let _ = dray_sdk::yaml::edit::update(file, &[(path, value)]);
});
