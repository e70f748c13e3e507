//! The manifest reader (`dray apply`, `--apply`, the API's apply): a YAML or JSON stream into
//! documents with positions, bounded in alias expansion, depth and documents. Every field path
//! it reports is looked up again. Errors are fine; a panic, a hang or an unbounded allocation is
//! a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../daemon/src/manifest.rs"]
#[allow(dead_code)]
mod manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(documents) = manifest::parse(text) {
        for document in &documents {
            for (path, _) in &document.warnings {
                let _ = document.position(path);
            }
            let _ = document.position("spec.steps[0].config");
        }
    }
});
