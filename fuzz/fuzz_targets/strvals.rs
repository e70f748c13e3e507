//! `--set` and `--set-literal` expressions (Helm's strvals), applied to an empty map.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let values = gotmpl::value::Map::default();
    let _ = chart::strvals::set(&values, text, chart::strvals::Typing::Typed);
    let _ = chart::strvals::set(&values, text, chart::strvals::Typing::String);
    let _ = chart::strvals::set_literal(&values, text);
});
