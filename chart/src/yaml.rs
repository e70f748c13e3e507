//! YAML as Helm reads and writes it. Helm decodes YAML with Go's `yaml.v2` (YAML 1.1: `yes`,
//! `on` and `off` are booleans, `0755` is octal) and then through JSON, so every number becomes
//! a float64 and every key a string; [`load`] gives exactly those values. [`dump`] writes what
//! `toYaml` writes (`sigs.k8s.io/yaml`: keys sorted, sequences not indented under a key, strings
//! quoted only where a plain scalar would read as something else).

use std::collections::BTreeMap;

use gotmpl::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The most nodes one document may expand to through aliases (an alias bomb fails instead).
pub const MAX_NODES: usize = 1_000_000;

/// A YAML error: what and where (line, column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub message: String,
    pub line: usize,
    pub col: usize,
}

impl std::fmt::Display for YamlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "yaml: line {}: {}", self.line, self.message)
    }
}

/// Every document of `text`, as Helm's values (numbers as float64).
pub fn load(text: &str) -> Result<Vec<Value>, YamlError> {
    load_with(text, true)
}

/// Every document of `text`; `json_numbers`: numbers as float64, as they come out of JSON (Helm's
/// values, `fromYaml`), else integers as ints.
pub fn load_with(text: &str, json_numbers: bool) -> Result<Vec<Value>, YamlError> {
    let mut builder = Builder {
        json_numbers,
        stack: Vec::new(),
        docs: Vec::new(),
        anchors: BTreeMap::new(),
        nodes: 0,
        error: None,
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| YamlError {
        message: e.info().to_string(),
        line: e.marker().line(),
        col: e.marker().col(),
    })?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.docs)
}

enum Frame {
    List(Vec<Value>, usize),
    Map(BTreeMap<String, Value>, Option<String>, usize),
}

struct Builder {
    json_numbers: bool,
    stack: Vec<Frame>,
    docs: Vec<Value>,
    anchors: BTreeMap<usize, Value>,
    nodes: usize,
    error: Option<YamlError>,
}

impl Builder {
    fn fail(&mut self, mark: Marker, message: String) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                message,
                line: mark.line(),
                col: mark.col(),
            });
        }
    }

    fn count(&mut self, value: &Value, mark: Marker) -> bool {
        self.nodes += size(value);
        if self.nodes > MAX_NODES {
            self.fail(
                mark,
                format!("the document expands to more than {MAX_NODES} nodes"),
            );
            return false;
        }
        true
    }

    fn push(&mut self, value: Value, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(value),
            Some(Frame::List(items, _)) => items.push(value),
            Some(Frame::Map(map, key, _)) => match key.take() {
                None => {
                    let k = key_string(&value);
                    *key = Some(k);
                }
                Some(k) => {
                    if k == "<<" {
                        // A merge key: the mapping(s) it names fill in missing keys.
                        let sources = match &value {
                            Value::List(l) => l.as_ref().clone(),
                            other => vec![other.clone()],
                        };
                        for source in sources {
                            if let Value::Map(m) = source {
                                for (mk, mv) in m.entries() {
                                    map.entry(mk).or_insert(mv);
                                }
                            }
                        }
                    } else {
                        map.insert(k, value);
                    }
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
                let value = scalar(&text, style, tag.as_ref(), self.json_numbers);
                self.nodes += 1;
                self.push(value, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::List(Vec::new(), anchor)),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(BTreeMap::new(), None, anchor))
            }
            Event::SequenceEnd => {
                if let Some(Frame::List(items, anchor)) = self.stack.pop() {
                    self.nodes += 1;
                    self.push(Value::from(items), anchor);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(map, _, anchor)) = self.stack.pop() {
                    self.nodes += 1;
                    self.push(Value::from(map), anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(v) => {
                    if self.count(&v, mark) {
                        self.push(v, 0);
                    }
                }
                None => self.fail(mark, "unknown anchor".into()),
            },
            Event::DocumentEnd => {
                self.anchors.clear();
            }
            _ => {}
        }
    }
}

fn size(v: &Value) -> usize {
    match v {
        Value::List(l) => 1 + l.iter().map(size).sum::<usize>(),
        Value::Map(m) => 1 + m.entries().iter().map(|(_, v)| size(v)).sum::<usize>(),
        _ => 1,
    }
}

/// A mapping key as JSON makes it: a string (`1` is `"1"`, `true` is `"true"`, null `"null"`).
fn key_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Nil => "null".into(),
        Value::Float(f) => gotmpl::value::format_float_g(*f),
        other => other.to_go_string(),
    }
}

/// A scalar resolved as `yaml.v2` resolves it (YAML 1.1); quoted scalars are strings.
fn scalar(text: &str, style: TScalarStyle, tag: Option<&Tag>, json_numbers: bool) -> Value {
    if let Some(tag) = tag {
        match tag.suffix.as_str() {
            "str" => return Value::from(text),
            "int" | "float" => {
                if let Some(v) = number(text, json_numbers) {
                    return v;
                }
            }
            "bool" => {
                if let Some(b) = boolean(text) {
                    return Value::Bool(b);
                }
            }
            "null" => return Value::Nil,
            _ => {}
        }
    }
    if style != TScalarStyle::Plain {
        return Value::from(text);
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Value::Nil;
    }
    if let Some(b) = boolean(text) {
        return Value::Bool(b);
    }
    if let Some(n) = number(text, json_numbers) {
        return n;
    }
    Value::from(text)
}

fn boolean(text: &str) -> Option<bool> {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Some(false)
        }
        _ => None,
    }
}

/// An int (`0x1F`, `0755` octal, `1_000`) or a float (`1.5`, `.5`, `1e3`, `.inf`, `.nan`) as
/// `yaml.v2` reads them.
fn number(text: &str, json_numbers: bool) -> Option<Value> {
    let plain = text.replace('_', "");
    let int = |v: i64| {
        if json_numbers {
            Value::Float(v as f64)
        } else {
            Value::Int(v)
        }
    };
    let (neg, digits) = match plain.strip_prefix('-') {
        Some(d) => (true, d.to_string()),
        None => (false, plain.strip_prefix('+').unwrap_or(&plain).to_string()),
    };
    if digits.is_empty() {
        return None;
    }
    let signed = |v: i64| if neg { -v } else { v };
    if let Some(hex) = digits.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(|v| int(signed(v)));
    }
    if let Some(bin) = digits.strip_prefix("0b") {
        return i64::from_str_radix(bin, 2).ok().map(|v| int(signed(v)));
    }
    if digits.bytes().all(|b| b.is_ascii_digit()) {
        if digits.len() > 1 && digits.starts_with('0') {
            return i64::from_str_radix(&digits[1..], 8)
                .ok()
                .map(|v| int(signed(v)));
        }
        return match digits.parse::<i64>() {
            Ok(v) => Some(int(signed(v))),
            Err(_) => digits
                .parse::<f64>()
                .ok()
                .map(|f| Value::Float(if neg { -f } else { f })),
        };
    }
    match plain.as_str() {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Some(Value::Float(f64::INFINITY));
        }
        "-.inf" | "-.Inf" | "-.INF" => return Some(Value::Float(f64::NEG_INFINITY)),
        ".nan" | ".NaN" | ".NAN" => return Some(Value::Float(f64::NAN)),
        _ => {}
    }
    // A float: digits with one point and/or an exponent, as YAML 1.1 writes them.
    let looks_float = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && digits.bytes().any(|b| b.is_ascii_digit())
        && (digits.contains('.') || digits.contains(['e', 'E']));
    if !looks_float {
        return None;
    }
    digits
        .parse::<f64>()
        .ok()
        .map(|f| Value::Float(if neg { -f } else { f }))
}

/// `toYaml`: `sigs.k8s.io/yaml.Marshal` (through JSON, then `yaml.v2`), with the trailing newline.
pub fn dump(value: &Value) -> String {
    let mut out = String::new();
    write_node(&mut out, value, 0, Place::Top, 0);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Place {
    Top,
    /// After `key:`
    MapValue,
    /// After `- `
    ListItem,
}

fn write_node(out: &mut String, value: &Value, indent: usize, place: Place, depth: usize) {
    if depth > 200 {
        out.push_str("null\n");
        return;
    }
    let value = match value {
        Value::Object(o) => o.data().unwrap_or(Value::Nil),
        other => other.clone(),
    };
    match &value {
        Value::Map(m) if !m.is_empty() => {
            let entries = m.entries();
            let pad = " ".repeat(indent);
            for (i, (k, v)) in entries.iter().enumerate() {
                if i == 0 && place == Place::ListItem {
                    // First key on the `- ` line.
                } else if i == 0 && place == Place::MapValue {
                    out.push('\n');
                    out.push_str(&pad);
                } else {
                    out.push_str(&pad);
                }
                out.push_str(&scalar_string(k));
                out.push(':');
                write_child(out, v, indent, depth);
            }
        }
        Value::List(l) if !l.is_empty() => {
            // yaml.v2 writes a sequence under a key at the key's indentation.
            let pad = " ".repeat(indent);
            for (i, item) in l.iter().enumerate() {
                if i == 0 && place == Place::ListItem {
                } else if i == 0 && place == Place::MapValue {
                    out.push('\n');
                    out.push_str(&pad);
                } else {
                    out.push_str(&pad);
                }
                out.push_str("- ");
                write_node(out, item, indent + 2, Place::ListItem, depth + 1);
            }
        }
        scalar => {
            if place == Place::MapValue {
                out.push(' ');
            }
            out.push_str(&scalar_text(scalar, indent));
            out.push('\n');
        }
    }
}

fn write_child(out: &mut String, v: &Value, indent: usize, depth: usize) {
    let v = match v {
        Value::Object(o) => o.data().unwrap_or(Value::Nil),
        other => other.clone(),
    };
    match &v {
        Value::Map(m) if !m.is_empty() => {
            write_node(out, &v, indent + 2, Place::MapValue, depth + 1)
        }
        Value::List(l) if !l.is_empty() => write_node(out, &v, indent, Place::MapValue, depth + 1),
        _ => write_node(out, &v, indent, Place::MapValue, depth + 1),
    }
}

fn scalar_text(v: &Value, indent: usize) -> String {
    match v {
        Value::Nil => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => json_float(*f),
        Value::String(s) => {
            if s.contains('\n') {
                literal(s, indent)
            } else {
                scalar_string(s)
            }
        }
        Value::Map(_) => "{}".into(),
        Value::List(_) => "[]".into(),
        Value::Object(o) => o.display(),
    }
}

/// A float64 as JSON writes it, then as YAML reads it back: integral values without a point.
fn json_float(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e21 {
        return format!("{}", f as i64);
    }
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+.inf".into()
        } else {
            "-.inf".into()
        };
    }
    let a = f.abs();
    if (1e-6..1e21).contains(&a) {
        format!("{f}")
    } else {
        gotmpl::value::format_float(f, 21)
            .replace("e-0", "e-")
            .replace("e+0", "e+")
    }
}

/// A literal block (`|`, `|-` or `|+`) as `yaml.v2` writes a multi-line string.
fn literal(s: &str, indent: usize) -> String {
    let chomp = if s.ends_with("\n\n") || s == "\n" {
        "+"
    } else if s.ends_with('\n') {
        ""
    } else {
        "-"
    };
    let lead = if s.starts_with(' ') || s.starts_with('\n') {
        "2"
    } else {
        ""
    };
    let pad = " ".repeat(indent + 2);
    let body = s.strip_suffix('\n').unwrap_or(s);
    let mut out = format!("|{lead}{chomp}");
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    out
}

/// A string as `yaml.v2` writes it: plain if it reads back as the same string, else quoted
/// (double quotes when a plain scalar would read as another type, single quotes when its
/// characters forbid a plain scalar).
fn scalar_string(s: &str) -> String {
    let resolves_to_string = matches!(
        scalar(s, TScalarStyle::Plain, None, false),
        Value::String(_)
    );
    if !resolves_to_string || is_base60_float(s) {
        return double_quoted(s);
    }
    if plain_allowed(s) {
        return s.to_string();
    }
    if s.chars().all(|c| !c.is_control() || c == '\t') {
        return format!("'{}'", s.replace('\'', "''"));
    }
    double_quoted(s)
}

fn is_base60_float(s: &str) -> bool {
    // `1:20` reads as a sexagesimal number in YAML 1.1.
    let mut parts = s.split(':');
    let first = parts.next().unwrap_or("");
    let rest: Vec<&str> = parts.collect();
    !rest.is_empty()
        && !first.is_empty()
        && first
            .trim_start_matches(['-', '+'])
            .bytes()
            .all(|b| b.is_ascii_digit())
        && rest.iter().all(|p| {
            let int_part = p.split('.').next().unwrap_or("");
            !int_part.is_empty()
                && int_part.len() <= 2
                && p.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        })
}

/// Whether the emitter may write `s` as a plain scalar (libyaml's analysis, in block context).
fn plain_allowed(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    let first = s.chars().next().expect("not empty");
    let last = s.chars().last().expect("not empty");
    if first.is_whitespace() || last.is_whitespace() {
        return false;
    }
    if matches!(
        first,
        '-' | '?'
            | ':'
            | ','
            | '['
            | ']'
            | '{'
            | '}'
            | '#'
            | '&'
            | '*'
            | '!'
            | '|'
            | '>'
            | '\''
            | '"'
            | '%'
            | '@'
            | '`'
    ) {
        // `-`, `?` and `:` start a plain scalar only when followed by a non-space.
        let second = s.chars().nth(1);
        if !(matches!(first, '-' | '?' | ':') && second.is_some_and(|c| !c.is_whitespace())) {
            return false;
        }
        if s == "-" {
            return false;
        }
    }
    if s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    !s.chars().any(|c| c.is_control() || c == '\u{FEFF}')
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Value {
        load(text).expect("loads").remove(0)
    }

    #[test]
    fn yaml_1_1_scalars_as_helm_reads_them() {
        let v = one(
            "a: yes\nb: off\nc: 0755\nd: 0x1F\ne: 1_000\nf: 1.5\ng: ~\nh: \"yes\"\ni: 3\nj: abc\nk: .5\nl: 1e3\n",
        );
        let Value::Map(m) = v else { panic!() };
        assert_eq!(m.get("a"), Some(Value::Bool(true)));
        assert_eq!(m.get("b"), Some(Value::Bool(false)));
        assert_eq!(m.get("c"), Some(Value::Float(493.0)));
        assert_eq!(m.get("d"), Some(Value::Float(31.0)));
        assert_eq!(m.get("e"), Some(Value::Float(1000.0)));
        assert_eq!(m.get("f"), Some(Value::Float(1.5)));
        assert_eq!(m.get("g"), Some(Value::Nil));
        assert_eq!(m.get("h"), Some(Value::from("yes")));
        assert_eq!(m.get("i"), Some(Value::Float(3.0)));
        assert_eq!(m.get("j"), Some(Value::from("abc")));
        assert_eq!(m.get("k"), Some(Value::Float(0.5)));
        assert_eq!(m.get("l"), Some(Value::Float(1000.0)));
    }

    #[test]
    fn anchors_merges_and_bombs() {
        // (`y` unquoted would be the boolean true in YAML 1.1, and so the key "true".)
        let v = one("base: &b {x: 1, w: 2}\nother:\n  <<: *b\n  w: 3\n");
        let Value::Map(m) = v else { panic!() };
        assert_eq!(
            m.get("other"),
            Some(Value::map([
                ("w".to_string(), Value::Float(3.0)),
                ("x".to_string(), Value::Float(1.0))
            ]))
        );
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (i, prev) in ["a", "b", "c", "d", "e", "f", "g"].iter().enumerate() {
            let name = ["b", "c", "d", "e", "f", "g", "h"][i];
            bomb.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let e = load(&bomb).expect_err("refused");
        assert!(e.message.contains("more than"), "{e}");
    }

    #[test]
    fn dump_writes_what_to_yaml_writes() {
        let v = one(
            "b: [1, two]\na: {x: 'yes', \"y\": \"\", z: \"a: b\", o: {}, m: 1.5}\nc: []\nd: {}\ne: \"line1\\nline2\"\nf: 8080\ng: '8080'\nh: [{k: v, l: w}]\n",
        );
        assert_eq!(
            dump(&v),
            "a:\n  m: 1.5\n  o: {}\n  x: \"yes\"\n  \"y\": \"\"\n  z: 'a: b'\nb:\n- 1\n- two\nc: []\nd: {}\ne: |-\n  line1\n  line2\nf: 8080\ng: \"8080\"\nh:\n- k: v\n  l: w\n"
        );
    }
}
