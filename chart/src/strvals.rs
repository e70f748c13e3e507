//! Helm's `--set` syntax (`helm.sh/helm/v3/pkg/strvals`): `a.b=1,c[0].d=x,e={x,y}` into a values
//! map. Values are typed as `--set` types them (`true`/`false`, `null`, integers as int64, else
//! strings); `--set-string` and `--set-literal` keep the text.

use std::collections::BTreeMap;

use gotmpl::Value;
use gotmpl::value::Map;

/// How a value's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typing {
    /// `--set`
    Typed,
    /// `--set-string`
    String,
}

/// Applies `--set EXPR` to `values`.
pub fn set(values: &Map, expr: &str, typing: Typing) -> Result<(), String> {
    let mut rest = expr;
    while !rest.is_empty() {
        let (key, after) = take_until(rest, &['=', ',']);
        let key_path = parse_key(&key).map_err(|e| format!("{expr:?}: {e}"))?;
        let Some(after) = after.strip_prefix('=') else {
            return Err(format!("key {key:?} has no value (write {key}=VALUE)"));
        };
        let (value, remaining) = if let Some(list) = after.strip_prefix('{') {
            let end = list
                .find('}')
                .ok_or_else(|| format!("{expr:?}: a list value is not closed with }}"))?;
            let items = list[..end]
                .split(',')
                .map(|s| typed(&unescape(s), typing))
                .collect::<Vec<_>>();
            (Value::from(items), &list[end + 1..])
        } else {
            let (value, remaining) = take_until(after, &[',']);
            (typed(&unescape(&value), typing), remaining)
        };
        assign(values, &key_path, value)?;
        rest = remaining.strip_prefix(',').unwrap_or(remaining);
    }
    Ok(())
}

/// `--set-literal KEY=VALUE`: the value as it is, commas and all.
pub fn set_literal(values: &Map, expr: &str) -> Result<(), String> {
    let (key, value) = expr
        .split_once('=')
        .ok_or_else(|| format!("{expr:?} has no value (write KEY=VALUE)"))?;
    let key_path = parse_key(key)?;
    assign(values, &key_path, Value::from(value))
}

/// Text up to an unescaped stop character (escapes kept), and the rest from it.
fn take_until<'a>(text: &'a str, stops: &[char]) -> (String, &'a str) {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            out.push(c);
            if let Some((_, next)) = chars.next() {
                out.push(next);
            }
            continue;
        }
        if stops.contains(&c) {
            return (out, &text[i..]);
        }
        out.push(c);
    }
    (out, "")
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `a.b[0].c` (dots may be escaped with `\`).
fn parse_key(key: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut current = String::new();
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    current.push(n);
                }
            }
            '.' => {
                if !current.is_empty() {
                    steps.push(Step::Key(std::mem::take(&mut current)));
                }
            }
            '[' => {
                if !current.is_empty() {
                    steps.push(Step::Key(std::mem::take(&mut current)));
                }
                let mut digits = String::new();
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    digits.push(d);
                }
                let index: usize = digits
                    .parse()
                    .map_err(|_| format!("invalid index {digits:?} in key {key:?}"))?;
                if index > 65_536 {
                    return Err(format!("index {index} in key {key:?} is too large"));
                }
                steps.push(Step::Index(index));
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        steps.push(Step::Key(current));
    }
    if steps.is_empty() || matches!(steps[0], Step::Index(_)) {
        return Err(format!("{key:?} is not a key (write a.b or a.b[0])"));
    }
    Ok(steps)
}

fn typed(text: &str, typing: Typing) -> Value {
    if typing == Typing::String {
        return Value::from(text);
    }
    match text {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "null" => return Value::Nil,
        _ => {}
    }
    // As strvals: an integer without a leading zero is an int64; anything else a string.
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && let Ok(i) = text.parse::<i64>()
    {
        return Value::Int(i);
    }
    Value::from(text)
}

fn assign(values: &Map, path: &[Step], value: Value) -> Result<(), String> {
    let Step::Key(first) = &path[0] else {
        return Err("a key must start with a name".into());
    };
    if path.len() == 1 {
        values.insert(first.clone(), value);
        return Ok(());
    }
    let current = values.get(first).unwrap_or(Value::Nil);
    let updated = assign_into(current, &path[1..], value)?;
    values.insert(first.clone(), updated);
    Ok(())
}

fn assign_into(current: Value, path: &[Step], value: Value) -> Result<Value, String> {
    let Some(step) = path.first() else {
        return Ok(value);
    };
    match step {
        Step::Key(k) => {
            let map = match current {
                Value::Map(m) => m,
                _ => Map::new(BTreeMap::new()),
            };
            let inner = map.get(k).unwrap_or(Value::Nil);
            map.insert(k.clone(), assign_into(inner, &path[1..], value)?);
            Ok(Value::Map(map))
        }
        Step::Index(i) => {
            let mut list = match current {
                Value::List(l) => l.as_ref().clone(),
                _ => Vec::new(),
            };
            while list.len() <= *i {
                list.push(Value::Nil);
            }
            let inner = std::mem::replace(&mut list[*i], Value::Nil);
            list[*i] = assign_into(inner, &path[1..], value)?;
            Ok(Value::from(list))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(exprs: &[&str]) -> String {
        let m = Map::new(BTreeMap::new());
        for e in exprs {
            set(&m, e, Typing::Typed).expect("sets");
        }
        Value::Map(m).to_go_string()
    }

    #[test]
    fn set_paths_and_types_as_helm() {
        assert_eq!(apply(&["a.b=1,c=true"]), "map[a:map[b:1] c:true]");
        assert_eq!(
            apply(&["image.tag=1.2.3", "replicas=03"]),
            "map[image:map[tag:1.2.3] replicas:03]"
        );
        assert_eq!(apply(&["list[1].name=x"]), "map[list:[<nil> map[name:x]]]");
        assert_eq!(apply(&["hosts={a,b}"]), "map[hosts:[a b]]");
        assert_eq!(
            apply(&["dotted\\.key=v", "n=null"]),
            "map[dotted.key:v n:<nil>]"
        );
        let m = Map::new(BTreeMap::new());
        assert!(set(&m, "novalue", Typing::Typed).is_err());
        assert!(set(&m, "a[99999999]=x", Typing::Typed).is_err());
        set_literal(&m, "k=a,b=c").expect("literal");
        assert_eq!(m.get("k"), Some(Value::from("a,b=c")));
    }
}
