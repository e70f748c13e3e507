//! Expressions over data a step has read (feature `expr`): what Kargo's `json-parse`,
//! `yaml-parse` and `http` steps evaluate in `fromExpression`, `successExpression` and friends.
//! It is the same language and library (`expr-lang`) the host uses for `${{ }}`, evaluated inside
//! the sandbox, so an expression over a large document costs the plugin's memory and time, not
//! the daemon's.
//!
//! ```
//! let data = serde_json::json!({"spec": {"replicas": 3}});
//! let value = dray_sdk::expr::eval("spec.replicas * 2", data.as_object().unwrap()).unwrap();
//! assert_eq!(value, serde_json::json!(6));
//! ```

pub use expr as lang;
use expr::{Context, Environment, Value as X};
use serde_json::{Map, Value};

/// JSON as an expression value.
pub fn to_x(v: &Value) -> X {
    match v {
        Value::Null => X::Nil,
        Value::Bool(b) => X::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => X::Integer(i),
            None => X::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => X::String(s.clone()),
        Value::Array(a) => X::Array(a.iter().map(to_x).collect()),
        Value::Object(o) => X::Map(o.iter().map(|(k, v)| (k.clone(), to_x(v))).collect()),
    }
}

/// An expression value as JSON (what JSON cannot hold becomes its text).
pub fn from_x(v: &X) -> Value {
    match v {
        X::Nil => Value::Null,
        X::Bool(b) => Value::Bool(*b),
        X::Integer(i) => Value::from(*i),
        X::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        X::String(s) => Value::String(s.clone()),
        X::Array(a) => Value::Array(a.iter().map(from_x).collect()),
        X::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), from_x(v))).collect()),
        other => Value::String(other.to_string()),
    }
}

/// An environment for [`eval_in`]: expr-lang's, with what the rewriting of map literals needs.
/// A plugin adds functions of its own to it.
pub fn environment<'a>() -> Environment<'a> {
    let mut env = Environment::new();
    expr_syntax::add_map_function(&mut env);
    env
}

/// Evaluates `expression` with each key of `variables` as a variable; the result as JSON. The
/// error is the library's message (the caller adds which field it came from).
pub fn eval(expression: &str, variables: &Map<String, Value>) -> Result<Value, String> {
    eval_in(&environment(), expression, variables)
}

/// [`eval`] in an environment the plugin made from [`environment`] (e.g. with functions of its
/// own). Map literals are rewritten first, as the host does: expr-lang 2.1 reads their values
/// as constants (`{"a": x}` would crash the plugin, `{"a": 1 + 1}` yield 1).
pub fn eval_in(
    env: &Environment,
    expression: &str,
    variables: &Map<String, Value>,
) -> Result<Value, String> {
    let code = expr_syntax::rewrite_maps(expression)?;
    let mut ctx = Context::default();
    for (k, v) in variables {
        ctx.insert(k.clone(), to_x(v));
    }
    env.eval(&code, &ctx)
        .map(|v| from_x(&v))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_literals_hold_their_evaluated_values() {
        let vars = serde_json::json!({"x": 3, "items": [1, 2]});
        let vars = vars.as_object().unwrap();
        assert_eq!(eval("{'a': 1 + 1}.a", vars).unwrap(), serde_json::json!(2));
        assert_eq!(
            eval("{'a': x, \"b\": {'c': -x}, 'n': len(items)}", vars).unwrap(),
            serde_json::json!({"a": 3, "b": {"c": -3}, "n": 2})
        );
        // A map inside a string is text.
        assert_eq!(eval("'{a: x}'", vars).unwrap(), serde_json::json!("{a: x}"));
        assert!(eval("{'a': ", vars).is_err());
    }
}
