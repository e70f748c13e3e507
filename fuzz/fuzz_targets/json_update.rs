//! The `json-update` step's editor, on files a Git repository holds: the input's first line is a
//! Kargo key path, the second a JSON value, the rest the JSON file to edit in place (only the
//! value's text is replaced, so its own small scanner reads the file). Errors are fine; a panic,
//! a hang, or an edit of a valid file that leaves it invalid is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../plugins/data/src/json.rs"]
mod json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let (Some(key), Some(value), Some(file)) = (lines.next(), lines.next(), lines.next()) else {
        return;
    };
    let Ok(path) = dray_sdk::path::split(key) else {
        return;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(value) else {
        return;
    };
    match json::update(file, &[(path, value)]) {
        Ok(edited) => assert!(
            serde_json::from_str::<serde_json::Value>(&edited).is_ok(),
            "an edit returned invalid JSON"
        ),
        Err(e) => assert!(
            !(e.starts_with("the edit made the file invalid")
                && serde_json::from_str::<serde_json::Value>(file).is_ok()),
            "an edit of a valid file made it invalid: {e}"
        ),
    }
});
