//! A Go template as a chart brings it: parsed, then executed on a small value with an output
//! bound. Errors are fine; a panic, a hang or an unbounded allocation is a bug.
#![no_main]

use gotmpl::Templates;
use gotmpl::value::Value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut templates = Templates::new();
    templates.max_output(1 << 20);
    // `range 4000000000` is bounded by the plugin's deadline in Dray; here by a step budget, so
    // that only real hangs time out.
    templates.max_steps(100_000);
    if templates.parse("t", text).is_err() {
        return;
    }
    let data = Value::map([
        ("name".to_string(), Value::String("web".into())),
        ("replicas".to_string(), Value::Int(3)),
        (
            "list".to_string(),
            Value::List(std::sync::Arc::new(vec![Value::Int(1), Value::Nil])),
        ),
    ]);
    let _ = templates.execute("t", &data);
});
