//! Helm's own template functions (`include`, `tpl`, `required`, `toYaml`, `fromYaml`, `toJson`,
//! `fromJson`, `lookup`, …), the objects charts see (`.Files`, `.Capabilities`), and
//! `semverCompare`, as Helm 3 defines them.

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::{FuncError, Object, Templates, Value};

use crate::yaml;

/// Installs Sprig's and Helm's functions into `set`. `include` and `tpl` nest at most
/// `gotmpl::exec::MAX_DEPTH` deep (Helm stops recursion at 1,000).
pub fn install(set: &mut Templates) {
    gotmpl::sprig::install(set);
    set.func("include", |call, a| {
        if a.len() != 2 {
            return Err(gotmpl::funcs::want("include", 2, a.len()));
        }
        let Value::String(name) = &a[0] else {
            return Err(FuncError::WrongArg {
                index: 0,
                message: format!(
                    "wrong type for value; expected string; got {}",
                    a[0].type_name()
                ),
            });
        };
        Ok(Value::from(call.include(name, a[1].clone())?))
    });
    set.func("tpl", |call, a| {
        if a.len() != 2 {
            return Err(gotmpl::funcs::want("tpl", 2, a.len()));
        }
        let Value::String(text) = &a[0] else {
            return Err(FuncError::WrongArg {
                index: 0,
                message: format!(
                    "wrong type for value; expected string; got {}",
                    a[0].type_name()
                ),
            });
        };
        let name = call.template_name().to_string();
        let out = call.render(&name, text, a[1].clone()).map_err(|e| {
            format!(
                "error during tpl function execution for {:?}: {e}",
                text.as_ref()
            )
        })?;
        Ok(Value::from(out.replace("<no value>", "")))
    });
    set.func("required", |_, a| {
        if a.len() != 2 {
            return Err(gotmpl::funcs::want("required", 2, a.len()));
        }
        let message = gotmpl::sprig::strval(&a[0]);
        match &a[1] {
            Value::Nil => Err(FuncError::Failed(message)),
            Value::String(s) if s.is_empty() => Err(FuncError::Failed(message)),
            v => Ok(v.clone()),
        }
    });
    set.func("toYaml", |_, a| {
        one("toYaml", a)?;
        Ok(Value::from(
            yaml::dump(&a[0]).trim_end_matches('\n').to_string(),
        ))
    });
    set.func("fromYaml", |_, a| {
        one("fromYaml", a)?;
        let text = gotmpl::sprig::strval(&a[0]);
        Ok(match yaml::load(&text) {
            Ok(docs) => match docs.into_iter().next() {
                Some(Value::Map(m)) => Value::Map(m),
                Some(Value::Nil) | None => Value::map([]),
                Some(other) => error_map(format!(
                    "error unmarshaling JSON: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                    json_kind(&other)
                )),
            },
            Err(e) => error_map(e.to_string()),
        })
    });
    set.func("fromYamlArray", |_, a| {
        one("fromYamlArray", a)?;
        let text = gotmpl::sprig::strval(&a[0]);
        Ok(match yaml::load(&text) {
            Ok(docs) => match docs.into_iter().next() {
                Some(Value::List(l)) => Value::List(l),
                Some(Value::Nil) | None => Value::list([]),
                Some(other) => Value::list([Value::from(format!(
                    "error unmarshaling JSON: json: cannot unmarshal {} into Go value of type []interface {{}}",
                    json_kind(&other)
                ))]),
            },
            Err(e) => Value::list([Value::from(e.to_string())]),
        })
    });
    set.func("toJson", |_, a| {
        one("toJson", a)?;
        Ok(Value::from(to_json(&a[0], true)))
    });
    set.func("toRawJson", |_, a| {
        one("toRawJson", a)?;
        Ok(Value::from(to_json(&a[0], false)))
    });
    set.func("mustToJson", |_, a| {
        one("mustToJson", a)?;
        Ok(Value::from(to_json(&a[0], true)))
    });
    set.func("toPrettyJson", |_, a| {
        one("toPrettyJson", a)?;
        let compact = to_json(&a[0], true);
        let parsed: serde_json::Value =
            serde_json::from_str(&compact).map_err(|e| FuncError::Failed(e.to_string()))?;
        Ok(Value::from(pretty(&parsed, 0)))
    });
    set.func("fromJson", |_, a| {
        one("fromJson", a)?;
        Ok(
            match serde_json::from_str::<serde_json::Value>(&gotmpl::sprig::strval(&a[0])) {
                Ok(serde_json::Value::Object(o)) => from_json(&serde_json::Value::Object(o)),
                Ok(other) => error_map(format!(
                    "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                    json_kind(&from_json(&other))
                )),
                Err(e) => error_map(e.to_string()),
            },
        )
    });
    set.func("fromJsonArray", |_, a| {
        one("fromJsonArray", a)?;
        Ok(
            match serde_json::from_str::<serde_json::Value>(&gotmpl::sprig::strval(&a[0])) {
                Ok(serde_json::Value::Array(items)) => Value::list(items.iter().map(from_json)),
                Ok(other) => Value::list([Value::from(format!(
                    "json: cannot unmarshal {} into Go value of type []interface {{}}",
                    json_kind(&from_json(&other))
                ))]),
                Err(e) => Value::list([Value::from(e.to_string())]),
            },
        )
    });
    // `helm template` talks to no cluster: lookup finds nothing.
    set.func("lookup", |_, a| {
        if a.len() != 4 {
            return Err(gotmpl::funcs::want("lookup", 4, a.len()));
        }
        Ok(Value::map([]))
    });
    set.func("semverCompare", |_, a| {
        if a.len() != 2 {
            return Err(gotmpl::funcs::want("semverCompare", 2, a.len()));
        }
        let constraint = gotmpl::sprig::strval(&a[0]);
        let version = gotmpl::sprig::strval(&a[1]);
        let v = crate::semver::Version::parse(&version)
            .ok_or_else(|| FuncError::Failed("Invalid Semantic Version".to_string()))?;
        let c = crate::semver::Constraint::parse(&constraint)
            .ok_or_else(|| FuncError::Failed(format!("improper constraint: {constraint}")))?;
        Ok(Value::Bool(c.matches(&v)))
    });
    set.func("semver", |_, a| {
        one("semver", a)?;
        let text = gotmpl::sprig::strval(&a[0]);
        let version = crate::semver::Version::parse(&text)
            .ok_or_else(|| FuncError::Failed("Invalid Semantic Version".to_string()))?;
        let metadata = text
            .split_once('+')
            .map(|(_, m)| m.to_string())
            .unwrap_or_default();
        Ok(Value::Object(Arc::new(SemverObject {
            version,
            metadata,
            original: text,
        })))
    });
    set.func("toToml", |_, a| {
        one("toToml", a)?;
        Ok(Value::from(to_toml(&a[0])))
    });
}

/// Sprig's `semver` result: Masterminds' `*semver.Version`.
#[derive(Debug)]
struct SemverObject {
    version: crate::semver::Version,
    metadata: String,
    original: String,
}

impl SemverObject {
    fn canonical(&self) -> String {
        let v = &self.version;
        let mut text = format!("{}.{}.{}", v.major, v.minor, v.patch);
        if !v.pre.is_empty() {
            text.push('-');
            text.push_str(&v.pre.join("."));
        }
        if !self.metadata.is_empty() {
            text.push('+');
            text.push_str(&self.metadata);
        }
        text
    }
}

impl Object for SemverObject {
    fn type_name(&self) -> String {
        "*semver.Version".into()
    }

    fn field(&self, name: &str) -> Option<Result<Value, String>> {
        let v = &self.version;
        Some(Ok(match name {
            "Major" => Value::Int(v.major as i64),
            "Minor" => Value::Int(v.minor as i64),
            "Patch" => Value::Int(v.patch as i64),
            "Prerelease" => Value::from(v.pre.join(".").as_str()),
            "Metadata" => Value::from(self.metadata.as_str()),
            "Original" => Value::from(self.original.as_str()),
            "String" => Value::from(self.canonical().as_str()),
            _ => return None,
        }))
    }

    fn display(&self) -> String {
        self.canonical()
    }
}

/// TOML's view of a value's type, as BurntSushi/toml v0.3.1 (Helm 3.6's `toToml`) sees it:
/// `None` for nil; arrays must hold one type.
#[derive(PartialEq, Clone, Copy)]
enum TomlType {
    Bool,
    Integer,
    Float,
    String,
    Array,
    Hash,
    ArrayOfHashes,
}

fn toml_type(v: &Value) -> Result<Option<TomlType>, String> {
    Ok(Some(match v {
        Value::Nil => return Ok(None),
        Value::Bool(_) => TomlType::Bool,
        Value::Int(_) => TomlType::Integer,
        Value::Float(_) => TomlType::Float,
        Value::Map(_) => TomlType::Hash,
        Value::List(items) => match items.first() {
            None => TomlType::Array,
            Some(first) => {
                let first_type =
                    toml_type(first)?.ok_or("toml: cannot encode array with nil element")?;
                let mut mixed = false;
                for item in items.iter().skip(1) {
                    match toml_type(item)? {
                        None => return Err("toml: cannot encode array with nil element".into()),
                        Some(t) if t != first_type => mixed = true,
                        _ => {}
                    }
                }
                // TOML 1.0 allows arrays of mixed types (today's encoder writes them; Helm
                // 3.6's refused them).
                if first_type == TomlType::Hash && !mixed {
                    TomlType::ArrayOfHashes
                } else {
                    TomlType::Array
                }
            }
        },
        _ => TomlType::String,
    }))
}

fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        format!("\"{}\"", k.replace('"', "\\\""))
    }
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct TomlWriter {
    out: String,
}

impl TomlWriter {
    fn newline(&mut self) {
        if !self.out.is_empty() {
            self.out.push('\n');
        }
    }

    fn indent(key: &[String]) -> String {
        "  ".repeat(key.len().saturating_sub(1))
    }

    fn element(&mut self, v: &Value) -> Result<(), String> {
        match v {
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => self.out.push_str(&i.to_string()),
            Value::Float(f) => {
                // Go's strconv 'f' with the shortest digits: Rust's Display.
                let text = format!("{f}");
                self.out.push_str(&text);
                if !text.contains('.') {
                    self.out.push_str(".0");
                }
            }
            Value::List(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                    self.element(item)?;
                }
                self.out.push(']');
            }
            other => self
                .out
                .push_str(&toml_string(&gotmpl::sprig::strval(other))),
        }
        Ok(())
    }

    fn encode(&mut self, key: &[String], v: &Value) -> Result<(), String> {
        // A map can hold itself (`set $d "self" $d`): nesting is bounded as toJson's is.
        if key.len() > 200 {
            return Err("toml: tables nest more than 200 deep".into());
        }
        match toml_type(v)? {
            None => Ok(()),
            Some(TomlType::Hash) => self.table(key, v),
            Some(TomlType::ArrayOfHashes) => {
                let Value::List(items) = v else { return Ok(()) };
                for item in items.iter() {
                    self.newline();
                    let path: Vec<String> = key.iter().map(|k| toml_key(k)).collect();
                    self.out
                        .push_str(&format!("{}[[{}]]", Self::indent(key), path.join(".")));
                    self.newline();
                    self.map(key, item)?;
                }
                Ok(())
            }
            Some(_) => {
                let Some(last) = key.last() else {
                    // A value that is not a table is written as it is, as today's encoder does
                    // (Helm 3.6's refused it).
                    return self.element(v);
                };
                self.out
                    .push_str(&format!("{}{} = ", Self::indent(key), toml_key(last)));
                self.element(v)?;
                self.newline();
                Ok(())
            }
        }
    }

    fn table(&mut self, key: &[String], v: &Value) -> Result<(), String> {
        if key.len() == 1 {
            self.newline();
        }
        if !key.is_empty() {
            let path: Vec<String> = key.iter().map(|k| toml_key(k)).collect();
            self.out
                .push_str(&format!("{}[{}]", Self::indent(key), path.join(".")));
            self.newline();
        }
        self.map(key, v)
    }

    fn map(&mut self, key: &[String], v: &Value) -> Result<(), String> {
        let Value::Map(m) = v else { return Ok(()) };
        let mut direct = Vec::new();
        let mut sub = Vec::new();
        for (k, item) in m.entries() {
            match toml_type(&item)? {
                Some(TomlType::Hash | TomlType::ArrayOfHashes) => sub.push((k, item)),
                _ => direct.push((k, item)),
            }
        }
        for (k, item) in direct.into_iter().chain(sub) {
            let mut path = key.to_vec();
            path.push(k);
            self.encode(&path, &item)?;
        }
        Ok(())
    }
}

/// `toToml`: the value as Helm's TOML encoder (BurntSushi/toml) writes it: sorted keys, plain
/// values before tables, nested tables indented by two spaces, floats with a decimal point; an
/// error's text instead of TOML, as Helm returns it. Where Helm 3.6's encoder (v0.3.1) and
/// today's (v1, in Helm 3.14+ and 4) differ, today's: arrays of mixed types and a value that is
/// not a table are written, not refused.
pub fn to_toml(v: &Value) -> String {
    let mut w = TomlWriter { out: String::new() };
    match w.encode(&[], v) {
        Ok(()) => w.out,
        Err(e) => e,
    }
}

fn one(name: &str, a: &[Value]) -> Result<(), FuncError> {
    if a.len() != 1 {
        return Err(gotmpl::funcs::want(name, 1, a.len()));
    }
    Ok(())
}

fn error_map(message: String) -> Value {
    Value::map([("Error".to_string(), Value::from(message))])
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "null",
        Value::Bool(_) => "bool",
        Value::Int(_) | Value::Float(_) => "number",
        Value::String(_) => "string",
        Value::List(_) => "array",
        _ => "object",
    }
}

/// JSON as Go's `encoding/json` decodes it into `interface{}`: numbers are float64.
pub fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::list(a.iter().map(from_json)),
        serde_json::Value::Object(o) => {
            Value::map(o.iter().map(|(k, v)| (k.clone(), from_json(v))))
        }
    }
}

/// `json.Marshal`: keys sorted, no spaces, `<`, `>` and `&` escaped when `escape_html`.
pub fn to_json(v: &Value, escape_html: bool) -> String {
    let mut out = String::new();
    write_json(&mut out, v, escape_html, 0);
    out
}

fn write_json(out: &mut String, v: &Value, escape_html: bool, depth: usize) {
    if depth > 200 {
        out.push_str("null");
        return;
    }
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(&json_number(*f)),
        Value::String(s) => json_string(out, s, escape_html),
        Value::List(l) => {
            out.push('[');
            for (i, item) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item, escape_html, depth + 1);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, v)) in m.entries().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(out, k, escape_html);
                out.push(':');
                write_json(out, v, escape_html, depth + 1);
            }
            out.push('}');
        }
        Value::Object(o) => match o.data() {
            Some(d) => write_json(out, &d, escape_html, depth + 1),
            None => json_string(out, &o.display(), escape_html),
        },
    }
}

/// A float64 as `encoding/json` writes it: `%f` style between 1e-6 and 1e21, else exponent.
fn json_number(f: f64) -> String {
    if !f.is_finite() {
        return "null".into();
    }
    if f == f.trunc() && f.abs() < 1e21 {
        return format!("{}", f as i128);
    }
    let a = f.abs();
    if (1e-6..1e21).contains(&a) {
        format!("{f}")
    } else {
        let s = format!("{f:e}");
        let (m, e) = s.split_once('e').expect("an exponent");
        let e: i32 = e.parse().expect("a number");
        format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
            .replace("e+0", "e+")
            .replace("e-0", "e-")
    }
}

fn json_string(out: &mut String, s: &str, escape_html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' if escape_html => out.push_str(&format!("\\u{:04x}", c as u32)),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `json.MarshalIndent(v, "", "  ")`.
fn pretty(v: &serde_json::Value, indent: usize) -> String {
    let pad = "  ".repeat(indent + 1);
    let end = "  ".repeat(indent);
    match v {
        serde_json::Value::Array(a) if !a.is_empty() => {
            let items: Vec<String> = a
                .iter()
                .map(|x| format!("{pad}{}", pretty(x, indent + 1)))
                .collect();
            format!("[\n{}\n{end}]", items.join(",\n"))
        }
        serde_json::Value::Object(o) if !o.is_empty() => {
            let items: Vec<String> = o
                .iter()
                .map(|(k, x)| {
                    format!(
                        "{pad}{}: {}",
                        serde_json::Value::String(k.clone()),
                        pretty(x, indent + 1)
                    )
                })
                .collect();
            format!("{{\n{}\n{end}}}", items.join(",\n"))
        }
        other => {
            let mut s = String::new();
            write_json(&mut s, &from_json(other), true, 0);
            s
        }
    }
}

/// `.Files`: the chart's files other than templates, values and dependencies.
#[derive(Debug, Clone)]
pub struct Files(pub Arc<BTreeMap<String, Vec<u8>>>);

impl Files {
    fn get(&self, name: &str) -> String {
        self.0
            .get(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }

    fn glob(&self, pattern: &str) -> Files {
        Files(Arc::new(
            self.0
                .iter()
                .filter(|(name, _)| glob_match(pattern, name))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ))
    }
}

/// A glob as Helm's `.Files.Glob` reads one (`gobwas/glob` with `/` separators): `*` within a
/// path segment, `**` across them, `?` one character, `{a,b}` alternatives, `[abc]` classes.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn expand(p: &str) -> Vec<String> {
        if let Some(open) = p.find('{')
            && let Some(close) = p[open..].find('}')
        {
            let close = open + close;
            let (head, body, tail) = (&p[..open], &p[open + 1..close], &p[close + 1..]);
            return body
                .split(',')
                .flat_map(|alt| expand(&format!("{head}{alt}{tail}")))
                .collect();
        }
        vec![p.to_string()]
    }
    fn matches(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') if p.get(1) == Some(&'*') => (0..=n.len()).any(|i| matches(&p[2..], &n[i..])),
            Some('*') => {
                for i in 0..=n.len() {
                    if matches(&p[1..], &n[i..]) {
                        return true;
                    }
                    if i < n.len() && n[i] == '/' {
                        break;
                    }
                }
                false
            }
            Some('?') => !n.is_empty() && n[0] != '/' && matches(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|c| *c == ']') else {
                    return false;
                };
                let class = &p[1..end];
                let (negate, class) = match class.first() {
                    Some('!') | Some('^') => (true, &class[1..]),
                    _ => (false, class),
                };
                !n.is_empty()
                    && (class.contains(&n[0]) != negate)
                    && matches(&p[end + 1..], &n[1..])
            }
            Some(c) => !n.is_empty() && n[0] == *c && matches(&p[1..], &n[1..]),
        }
    }
    let name: Vec<char> = name.chars().collect();
    expand(pattern)
        .iter()
        .any(|p| matches(&p.chars().collect::<Vec<_>>(), &name))
}

impl Object for Files {
    fn type_name(&self) -> String {
        "chart.Files".into()
    }

    fn field(&self, _name: &str) -> Option<Result<Value, String>> {
        None
    }

    fn method(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        let arg = |i: usize| args.get(i).map(gotmpl::sprig::strval).unwrap_or_default();
        Some(Ok(match name {
            "Get" => Value::from(self.get(&arg(0))),
            "GetBytes" => Value::from(self.get(&arg(0))),
            "Glob" => Value::Object(Arc::new(self.glob(&arg(0)))),
            "Lines" => {
                let text = self.get(&arg(0));
                if text.is_empty() {
                    Value::list([])
                } else {
                    Value::list(text.split('\n').map(Value::from))
                }
            }
            "AsConfig" => {
                let m: BTreeMap<String, Value> = self
                    .0
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.rsplit('/').next().unwrap_or(k).to_string(),
                            Value::from(String::from_utf8_lossy(v).into_owned()),
                        )
                    })
                    .collect();
                Value::from(
                    yaml::dump(&Value::from(m))
                        .trim_end_matches('\n')
                        .to_string(),
                )
            }
            "AsSecrets" => {
                use base64::Engine as _;
                let m: BTreeMap<String, Value> = self
                    .0
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.rsplit('/').next().unwrap_or(k).to_string(),
                            Value::from(base64::engine::general_purpose::STANDARD.encode(v)),
                        )
                    })
                    .collect();
                Value::from(
                    yaml::dump(&Value::from(m))
                        .trim_end_matches('\n')
                        .to_string(),
                )
            }
            _ => return None,
        }))
    }

    fn display(&self) -> String {
        let names: Vec<String> = self.0.keys().map(|k| format!("{k}:[…]")).collect();
        format!("map[{}]", names.join(" "))
    }

    fn truthy(&self) -> bool {
        !self.0.is_empty()
    }

    fn data(&self) -> Option<Value> {
        Some(Value::map(self.0.iter().map(|(k, v)| {
            (
                k.clone(),
                Value::from(String::from_utf8_lossy(v).into_owned()),
            )
        })))
    }
}

/// `.Capabilities`: the Kubernetes version and API versions `helm template` assumes.
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub kube_version: String,
    pub api_versions: Vec<String>,
}

#[derive(Debug)]
struct KubeVersion(String);

#[derive(Debug)]
struct ApiVersions(Vec<String>);

impl Object for Capabilities {
    fn type_name(&self) -> String {
        "*chartutil.Capabilities".into()
    }

    fn field(&self, name: &str) -> Option<Result<Value, String>> {
        Some(Ok(match name {
            "KubeVersion" => Value::Object(Arc::new(KubeVersion(self.kube_version.clone()))),
            "APIVersions" => Value::Object(Arc::new(ApiVersions(self.api_versions.clone()))),
            "HelmVersion" => Value::map([
                ("Version".to_string(), Value::from("v3.6.2")),
                ("GoVersion".to_string(), Value::from("go1.16.5")),
            ]),
            _ => return None,
        }))
    }

    fn display(&self) -> String {
        format!("&{{{} {:?}}}", self.kube_version, self.api_versions)
    }
}

impl Object for KubeVersion {
    fn type_name(&self) -> String {
        "chartutil.KubeVersion".into()
    }

    fn field(&self, name: &str) -> Option<Result<Value, String>> {
        let v = self.0.trim_start_matches('v');
        let mut parts = v.split('.');
        let (major, minor) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        Some(Ok(match name {
            "Version" | "GitVersion" | "String" => Value::from(self.0.as_str()),
            "Major" => Value::from(major),
            "Minor" => Value::from(minor),
            _ => return None,
        }))
    }

    fn display(&self) -> String {
        self.0.clone()
    }
}

impl Object for ApiVersions {
    fn type_name(&self) -> String {
        "chartutil.VersionSet".into()
    }

    fn field(&self, _name: &str) -> Option<Result<Value, String>> {
        None
    }

    fn method(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        match name {
            "Has" => {
                let wanted = args.first().map(gotmpl::sprig::strval).unwrap_or_default();
                Some(Ok(Value::Bool(self.0.contains(&wanted))))
            }
            _ => None,
        }
    }

    fn display(&self) -> String {
        format!("[{}]", self.0.join(" "))
    }

    fn data(&self) -> Option<Value> {
        Some(Value::list(self.0.iter().map(|v| Value::from(v.as_str()))))
    }
}
