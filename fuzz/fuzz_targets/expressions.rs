//! Kargo expressions as manifests write them, through what Dray rewrites before expr-lang reads
//! them: map literals, method calls, and the functions they call.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(code) = std::str::from_utf8(data) else {
        return;
    };
    let _ = expr_syntax::rewrite_maps(code);
    let _ = expr_syntax::rewrite_methods(code);
    let _ = expr_syntax::called_functions(code);
});
