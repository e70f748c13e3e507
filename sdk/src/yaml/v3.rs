//! YAML read as Go's `gopkg.in/yaml.v3` reads it and then turned into JSON, as kustomize (and so
//! `kubectl kustomize`) sees resources: `0755` is octal (493), `0x1F`, `0b101`, `0o17` and
//! `1_000` are integers, `yes`/`on` stay strings, unquoted timestamps become RFC 3339 strings,
//! mapping keys become strings, merge keys (`<<`) fill in. Aliases expand, bounded by
//! [`MAX_NODES`].

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The most nodes one text may expand to through aliases (an alias bomb fails instead).
pub const MAX_NODES: usize = 1_000_000;

/// Every document of `text` (empty documents are `null`).
pub fn load(text: &str) -> Result<Vec<Value>, String> {
    let mut builder = Builder {
        stack: Vec::new(),
        docs: Vec::new(),
        anchors: std::collections::HashMap::new(),
        nodes: 0,
        error: None,
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| {
        format!(
            "line {}, column {}: {}",
            e.marker().line(),
            e.marker().col() + 1,
            e.info()
        )
    })?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.docs)
}

enum Frame {
    List(Vec<Value>, usize),
    /// The mapping, the key waiting for its value, the anchor, the keys written (not merged).
    Map(
        Map<String, Value>,
        Option<String>,
        usize,
        std::collections::HashSet<String>,
    ),
}

struct Builder {
    stack: Vec<Frame>,
    docs: Vec<Value>,
    anchors: std::collections::HashMap<usize, Value>,
    nodes: usize,
    error: Option<String>,
}

fn size(v: &Value) -> usize {
    match v {
        Value::Array(l) => 1 + l.iter().map(size).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(size).sum::<usize>(),
        _ => 1,
    }
}

/// A key as JSON needs it: a string.
fn key_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Builder {
    fn fail(&mut self, mark: Marker, message: &str) {
        if self.error.is_none() {
            self.error = Some(format!(
                "line {}, column {}: {message}",
                mark.line(),
                mark.col() + 1
            ));
        }
    }

    fn push(&mut self, value: Value, anchor: usize, mark: Marker) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        if let Some(Frame::Map(_, None, _, written)) = self.stack.last() {
            // JSON keys are strings. A mapping or sequence as a key would be written out as
            // text, and nested ones double their escaping at every level: 40 levels of `{{{…}}}`
            // (found by fuzzing) took hours.
            if matches!(value, Value::Array(_) | Value::Object(_)) {
                self.fail(
                    mark,
                    "a mapping or a sequence cannot be a mapping key here; use a string",
                );
                return;
            }
            let key = key_string(&value);
            if key != "<<" && written.contains(&key) {
                // As yaml.v3 refuses it (a later value would silently win otherwise).
                self.fail(mark, &format!("mapping key {key:?} already defined"));
                return;
            }
        }
        match self.stack.last_mut() {
            None => self.docs.push(value),
            Some(Frame::List(items, _)) => items.push(value),
            Some(Frame::Map(map, key, _, written)) => match key.take() {
                None => {
                    let k = key_string(&value);
                    written.insert(k.clone());
                    *key = Some(k);
                }
                Some(k) if k == "<<" => {
                    let sources = match value {
                        Value::Array(l) => l,
                        other => vec![other],
                    };
                    for source in sources {
                        if let Value::Object(m) = source {
                            for (mk, mv) in m {
                                map.entry(mk).or_insert(mv);
                            }
                        }
                    }
                }
                Some(k) => {
                    map.insert(k, value);
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                self.nodes += 1;
                self.push(scalar(&text, style, tag.as_ref()), anchor, mark);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::List(Vec::new(), anchor)),
            Event::MappingStart(anchor, _) => {
                self.stack
                    .push(Frame::Map(Map::new(), None, anchor, Default::default()))
            }
            Event::SequenceEnd => {
                if let Some(Frame::List(items, anchor)) = self.stack.pop() {
                    self.nodes += 1;
                    self.push(Value::Array(items), anchor, mark);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(map, _, anchor, _)) = self.stack.pop() {
                    self.nodes += 1;
                    self.push(Value::Object(map), anchor, mark);
                }
            }
            Event::Alias(id) => {
                match self.anchors.get(&id).cloned() {
                    Some(v) => {
                        self.nodes += size(&v);
                        if self.nodes > MAX_NODES {
                            self.fail(
                            mark,
                            &format!("the text expands to more than {MAX_NODES} nodes through aliases"),
                        );
                            return;
                        }
                        self.push(v, 0, mark);
                    }
                    None => self.fail(mark, "unknown anchor"),
                }
            }
            Event::DocumentEnd => self.anchors.clear(),
            _ => {}
        }
    }
}

/// A scalar as `yaml.v3` resolves it; quoted and block scalars are strings.
fn scalar(text: &str, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(tag) = tag {
        match tag.suffix.as_str() {
            "str" | "binary" => return Value::String(text.to_string()),
            "null" => return Value::Null,
            "bool" | "int" | "float" | "timestamp" => return plain(text),
            _ => {}
        }
    }
    if style != TScalarStyle::Plain {
        return Value::String(text.to_string());
    }
    plain(text)
}

fn plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.')) {
        return Value::String(text.to_string());
    }
    if let Some(t) = timestamp(text) {
        return Value::String(t);
    }
    let digits = text.replace('_', "");
    if let Some(n) = parse_int(&digits) {
        return Value::Number(n);
    }
    if is_yaml_float(&digits)
        && let Ok(f) = digits.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text.to_string())
}

/// Go's `strconv.ParseInt(s, 0, 64)` (then `ParseUint`): a sign, then `0x`, `0o`, `0b` or a
/// leading `0` (octal) picks the base.
fn parse_int(s: &str) -> Option<Number> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) =
        if let Some(d) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            (16, d)
        } else if let Some(d) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
            (8, d)
        } else if let Some(d) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
            (2, d)
        } else if body.len() > 1 && body.starts_with('0') {
            (8, &body[1..])
        } else {
            (10, body)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        if magnitude <= i64::MAX as u64 + 1 {
            return Some(Number::from((magnitude as i128).wrapping_neg() as i64));
        }
        return None;
    }
    Some(Number::from(magnitude))
}

/// `yaml.v3`'s float syntax: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Whether `text`, written plain, would read back as a timestamp (so a writer must quote it).
pub fn is_timestamp(text: &str) -> bool {
    timestamp(text).is_some()
}

/// An unquoted timestamp as `yaml.v3` reads it (`2001-12-14`, `2001-12-14T21:59:43.10-05:00`,
/// `2001-12-14 21:59:43.10`), written as Go's JSON writes a `time.Time` (RFC 3339, nanoseconds
/// trimmed).
fn timestamp(text: &str) -> Option<String> {
    /// Up to `max` digits from the front of `rest`.
    fn number(rest: &mut &str, max: usize) -> Option<u32> {
        let n = rest
            .bytes()
            .take(max)
            .take_while(u8::is_ascii_digit)
            .count();
        if n == 0 {
            return None;
        }
        let v = rest[..n].parse().ok()?;
        *rest = &rest[n..];
        Some(v)
    }
    let b = text.as_bytes();
    if b.len() < 8 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return None;
    }
    let year: u32 = text[..4].parse().ok()?;
    let mut rest = &text[5..];
    let month = number(&mut rest, 2)?;
    rest = rest.strip_prefix('-')?;
    let day = number(&mut rest, 2)?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days {
        return None;
    }
    let date = format!("{year:04}-{month:02}-{day:02}");
    if rest.is_empty() {
        return Some(format!("{date}T00:00:00Z"));
    }
    let spaced = rest.starts_with(' ');
    rest = rest.strip_prefix(['T', 't', ' '])?;
    let hour = number(&mut rest, 2)?;
    rest = rest.strip_prefix(':')?;
    let minute = number(&mut rest, 2)?;
    rest = rest.strip_prefix(':')?;
    let second = number(&mut rest, 2)?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut fraction = String::new();
    if let Some(f) = rest.strip_prefix('.') {
        let n = f.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let digits = f[..n.min(9)].trim_end_matches('0');
        if !digits.is_empty() {
            fraction = format!(".{digits}");
        }
        rest = &f[n..];
    }
    let zone = if spaced || rest == "Z" {
        if spaced && !rest.is_empty() {
            return None;
        }
        "Z".to_string()
    } else {
        let sign = rest.chars().next().filter(|c| *c == '+' || *c == '-')?;
        let (h, m) = rest[1..].split_once(':')?;
        if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|c| c.is_ascii_digit()) {
            return None;
        }
        if h == "00" && m == "00" {
            "Z".to_string()
        } else {
            format!("{sign}{h}:{m}")
        }
    };
    Some(format!(
        "{date}T{hour:02}:{minute:02}:{second:02}{fraction}{zone}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_as_yaml_v3_and_json() {
        let docs = load(
            "mode: 0755\nhex: 0x1F\nbin: 0b101\noct: 0o17\nunder: 1_000\neight: 08\nfloat: 1e3\nhalf: .5\n\
             yes: yes\non: on\nt: True\nnothing: ~\nquoted: '0755'\nts: 2001-12-14\n\
             tt: 2001-12-14T21:59:43.10-05:00\nsp: 2001-12-14 21:59:43.10\nbad: 2001-13-14\nneg: -0x10\n\
             big: 18446744073709551615\nver: 1.2.3\n",
        )
        .expect("loads");
        assert_eq!(
            docs[0],
            json!({
                "mode": 493, "hex": 31, "bin": 5, "oct": 15, "under": 1000, "eight": 8.0,
                "float": 1000.0, "half": 0.5, "yes": "yes", "on": "on", "t": true, "nothing": null,
                "quoted": "0755", "ts": "2001-12-14T00:00:00Z", "tt": "2001-12-14T21:59:43.1-05:00",
                "sp": "2001-12-14T21:59:43.1Z", "bad": "2001-13-14", "neg": -16,
                "big": 18_446_744_073_709_551_615u64, "ver": "1.2.3"
            })
        );
    }

    /// Found by fuzzing (fuzz/ target `yaml_update`): nested flow mappings as keys.
    #[test]
    fn a_mapping_as_a_key_is_refused_at_once() {
        let text = format!("a:\n {}{}\n", "{".repeat(40), "}".repeat(40));
        let error = load(&text).expect_err("refused");
        assert!(error.contains("cannot be a mapping key"), "{error}");
        let error = load("? [1, 2]\n: x\n").expect_err("refused");
        assert!(error.contains("cannot be a mapping key"), "{error}");
        assert!(load("a: {b: {c: 1}}\n").is_ok());
    }

    #[test]
    fn merges_and_bounds_aliases() {
        let docs = load("base: &b {a: 1, b: 2}\nover:\n  <<: *b\n  b: 3\n").expect("loads");
        assert_eq!(docs[0]["over"], json!({"a": 1, "b": 3}));
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            bomb.push_str(&format!(
                "b{i}: &b{i} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n",
                p = if i == 0 {
                    "a".to_string()
                } else {
                    format!("b{}", i - 1)
                }
            ));
        }
        let e = load(&bomb).expect_err("an alias bomb is refused");
        assert!(e.contains("more than"), "{e}");
        let e = load("a: 1\nb: 2\na: 3\n").expect_err("a duplicate key is refused");
        assert!(e.contains("mapping key \"a\" already defined"), "{e}");
    }
}
