//! The functions every Go template has (`text/template/funcs.go`), with Go's behaviour and
//! error texts: `not`, `len`, `index`, `slice`, `print`, `printf`, `println`, the comparisons,
//! `html`, `js` and `urlquery`. (`and` and `or` short-circuit, so the executor runs them.)

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::exec::{Call, Func, FuncError};
use crate::fmt::sprintf;
use crate::value::Value;

fn func(
    f: impl Fn(&mut Call, &[Value]) -> Result<Value, FuncError> + Send + Sync + 'static,
) -> Func {
    Arc::new(f)
}

/// The builtin functions.
pub fn builtins() -> BTreeMap<String, Func> {
    let mut m: BTreeMap<String, Func> = BTreeMap::new();
    m.insert(
        "not".into(),
        func(|_, a| {
            let [v] = a else {
                return Err(want("not", 1, a.len()));
            };
            Ok(Value::Bool(!v.is_true()))
        }),
    );
    m.insert(
        "len".into(),
        func(|_, a| {
            let [v] = a else {
                return Err(want("len", 1, a.len()));
            };
            Ok(len(v).map(Value::Int)?)
        }),
    );
    m.insert(
        "index".into(),
        func(|_, a| {
            let Some((item, indexes)) = a.split_first() else {
                return Err(want_at_least("index", 1, 0));
            };
            Ok(index(item, indexes)?)
        }),
    );
    m.insert(
        "slice".into(),
        func(|_, a| {
            let Some((item, indexes)) = a.split_first() else {
                return Err(want_at_least("slice", 1, 0));
            };
            Ok(slice(item, indexes)?)
        }),
    );
    m.insert("print".into(), func(|_, a| Ok(Value::from(sprint(a)))));
    m.insert("println".into(), func(|_, a| Ok(Value::from(sprintln(a)))));
    m.insert(
        "printf".into(),
        func(|_, a| {
            let Some((format, args)) = a.split_first() else {
                return Err(want_at_least("printf", 1, 0));
            };
            let Value::String(format) = format else {
                return Err(FuncError::WrongArg {
                    index: 0,
                    message: format!(
                        "wrong type for value; expected string; got {}",
                        format.type_name()
                    ),
                });
            };
            Ok(Value::from(sprintf(format, args)))
        }),
    );
    m.insert(
        "eq".into(),
        func(|_, a| {
            let Some((first, rest)) = a.split_first() else {
                return Err(want_at_least("eq", 1, 0));
            };
            Ok(eq(first, rest).map(Value::Bool)?)
        }),
    );
    m.insert(
        "ne".into(),
        func(|_, a| {
            let [x, y] = a else {
                return Err(want("ne", 2, a.len()));
            };
            Ok(eq(x, std::slice::from_ref(y)).map(|b| Value::Bool(!b))?)
        }),
    );
    for (name, op) in [
        ("lt", Ord::Lt),
        ("le", Ord::Le),
        ("gt", Ord::Gt),
        ("ge", Ord::Ge),
    ] {
        m.insert(
            name.into(),
            func(move |_, a| {
                let [x, y] = a else {
                    return Err(want(name, 2, a.len()));
                };
                Ok(compare(x, y, op).map(Value::Bool)?)
            }),
        );
    }
    m.insert(
        "html".into(),
        func(|_, a| Ok(Value::from(html_escape(&eval_args(a))))),
    );
    m.insert(
        "js".into(),
        func(|_, a| Ok(Value::from(js_escape(&eval_args(a))))),
    );
    m.insert(
        "urlquery".into(),
        func(|_, a| Ok(Value::from(query_escape(&eval_args(a))))),
    );
    m.insert(
        "call".into(),
        func(|_, _| Err("call is not supported: templates here have no function values".into())),
    );
    m
}

/// Go's error for a call with the wrong number of arguments.
pub fn want(name: &str, want: usize, got: usize) -> FuncError {
    FuncError::Usage(format!(
        "wrong number of args for {name}: want {want} got {got}"
    ))
}

/// Go's error for a variadic call with too few arguments.
pub fn want_at_least(name: &str, want: usize, got: usize) -> FuncError {
    FuncError::Usage(format!(
        "wrong number of args for {name}: want at least {want} got {got}"
    ))
}

/// `len`: bytes of a string, items of a list or map.
pub fn len(v: &Value) -> Result<i64, String> {
    match v {
        Value::String(s) => Ok(s.len() as i64),
        Value::List(l) => Ok(l.len() as i64),
        Value::Map(m) => Ok(m.len() as i64),
        Value::Nil => Err("len of nil pointer".into()),
        Value::Object(o) => match o.data() {
            Some(d) => len(&d),
            None => Err(format!("len of type {}", o.type_name())),
        },
        other => Err(format!("len of type {}", other.type_name())),
    }
}

fn int_index(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Nil => Err("cannot index slice/array with nil".into()),
        other => Err(format!(
            "cannot index slice/array with type {}",
            other.type_name()
        )),
    }
}

/// `index item k…`: map entries (a missing one is nil) and list items, in turn.
pub fn index(item: &Value, indexes: &[Value]) -> Result<Value, String> {
    let mut item = item.clone();
    for i in indexes {
        if let Value::Object(o) = &item
            && let Some(d) = o.data()
        {
            item = d;
        }
        item = match &item {
            Value::Nil => return Err("index of untyped nil".into()),
            Value::List(l) => {
                let x = int_index(i)?;
                if x < 0 || x as usize >= l.len() {
                    return Err(format!("index out of range: {x}"));
                }
                l[x as usize].clone()
            }
            Value::String(s) => {
                let x = int_index(i)?;
                if x < 0 || x as usize >= s.len() {
                    return Err(format!("index out of range: {x}"));
                }
                Value::Int(s.as_bytes()[x as usize] as i64)
            }
            Value::Map(m) => match i {
                Value::String(k) => m.get(k).unwrap_or(Value::Nil),
                Value::Nil => return Err("value is nil; should be of type string".into()),
                other => {
                    return Err(format!(
                        "value has type {}; should be string",
                        other.type_name()
                    ));
                }
            },
            other => return Err(format!("can't index item of type {}", other.type_name())),
        };
    }
    Ok(item)
}

/// `slice item [i [j [k]]]`: a sub-list or a sub-string (by bytes).
pub fn slice(item: &Value, indexes: &[Value]) -> Result<Value, String> {
    if indexes.len() > 3 {
        return Err(format!("too many slice indexes: {}", indexes.len()));
    }
    let len = match item {
        Value::String(s) => s.len(),
        Value::List(l) => l.len(),
        Value::Nil => return Err("slice of untyped nil".into()),
        other => return Err(format!("can't slice item of type {}", other.type_name())),
    };
    if matches!(item, Value::String(_)) && indexes.len() == 3 {
        return Err("cannot 3-index slice a string".into());
    }
    let mut idx = [0usize, len, len];
    for (n, i) in indexes.iter().enumerate() {
        let x = int_index(i)?;
        if x < 0 || x as usize > len {
            return Err(format!("index out of range: {x}"));
        }
        idx[n] = x as usize;
    }
    if idx[0] > idx[1] {
        return Err(format!("invalid slice index: {} > {}", idx[0], idx[1]));
    }
    Ok(match item {
        Value::String(s) => {
            let bytes = &s.as_bytes()[idx[0]..idx[1]];
            Value::from(String::from_utf8_lossy(bytes).into_owned())
        }
        Value::List(l) => Value::list(l[idx[0]..idx[1]].iter().cloned()),
        _ => unreachable!("checked above"),
    })
}

/// `fmt.Sprint`: operands joined with a space where neither side is a string.
pub fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !matches!(a, Value::String(_)) && !matches!(args[i - 1], Value::String(_)) {
            out.push(' ');
        }
        out.push_str(&a.to_go_string());
    }
    out
}

/// `fmt.Sprintln`: operands joined with spaces, and a newline.
pub fn sprintln(args: &[Value]) -> String {
    let mut out = args
        .iter()
        .map(Value::to_go_string)
        .collect::<Vec<_>>()
        .join(" ");
    out.push('\n');
    out
}

/// What `html`, `js` and `urlquery` escape: one string argument as it is, else `fmt.Sprint`.
fn eval_args(args: &[Value]) -> String {
    if let [Value::String(s)] = args {
        return s.to_string();
    }
    sprint(args)
}

/// Go's kinds for comparison.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum Kind {
    Invalid,
    Bool,
    Int,
    Float,
    String,
    Other,
}

fn kind(v: &Value) -> Kind {
    match v {
        Value::Nil => Kind::Invalid,
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) => Kind::Int,
        Value::Float(_) => Kind::Float,
        Value::String(_) => Kind::String,
        _ => Kind::Other,
    }
}

const BAD_COMPARISON: &str = "incompatible types for comparison";
const BAD_COMPARISON_TYPE: &str = "invalid type for comparison";

/// `eq a b…`: whether `a` equals any of the others, with Go's rule that values of different
/// kinds do not compare (an int and a float64 are an error, not unequal).
pub fn eq(first: &Value, others: &[Value]) -> Result<bool, String> {
    if others.is_empty() {
        return Err("missing argument for comparison".into());
    }
    let k1 = kind(first);
    for other in others {
        let k2 = kind(other);
        let truth = if k1 != k2 {
            if k1 != Kind::Invalid && k2 != Kind::Invalid {
                return Err(BAD_COMPARISON.into());
            }
            false
        } else {
            match (first, other) {
                (Value::Nil, Value::Nil) => true,
                (Value::Bool(a), Value::Bool(b)) => a == b,
                (Value::Int(a), Value::Int(b)) => a == b,
                (Value::Float(a), Value::Float(b)) => a == b,
                (Value::String(a), Value::String(b)) => a == b,
                (Value::List(_), _) | (_, Value::List(_)) => {
                    return Err(format!(
                        "non-comparable type {}: {}",
                        other.to_go_string(),
                        other.type_name()
                    ));
                }
                (Value::Map(_), _) | (_, Value::Map(_)) => {
                    return Err(format!(
                        "non-comparable type {}: {}",
                        other.to_go_string(),
                        other.type_name()
                    ));
                }
                (a, b) => a == b,
            }
        };
        if truth {
            return Ok(true);
        }
    }
    Ok(false)
}

#[derive(Clone, Copy)]
enum Ord {
    Lt,
    Le,
    Gt,
    Ge,
}

fn compare(x: &Value, y: &Value, op: Ord) -> Result<bool, String> {
    let (k1, k2) = (kind(x), kind(y));
    for k in [k1, k2] {
        if matches!(k, Kind::Invalid | Kind::Other) {
            return Err(BAD_COMPARISON_TYPE.into());
        }
    }
    if k1 != k2 {
        return Err(BAD_COMPARISON.into());
    }
    let less = |a: &Value, b: &Value| -> Result<bool, String> {
        Ok(match (a, b) {
            (Value::Int(a), Value::Int(b)) => a < b,
            (Value::Float(a), Value::Float(b)) => a < b,
            (Value::String(a), Value::String(b)) => a < b,
            _ => return Err(BAD_COMPARISON_TYPE.into()),
        })
    };
    Ok(match op {
        Ord::Lt => less(x, y)?,
        Ord::Le => less(x, y)? || eq(x, std::slice::from_ref(y))?,
        Ord::Gt => !less(x, y)? && !eq(x, std::slice::from_ref(y))?,
        Ord::Ge => !less(x, y)?,
    })
}

/// `template.HTMLEscapeString`.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\0' => out.push('\u{FFFD}'),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// `template.JSEscapeString`.
pub fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
