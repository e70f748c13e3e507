//! Writes resources as `kustomize build` does: keys sorted, sequences at their key's indent,
//! strings quoted only where YAML would read them back as something else.

use serde_json::Value;

/// Whether `s` would read back as a string when written plain.
fn plain_ok(s: &str) -> bool {
    if s.is_empty() || s.trim() != s || s.contains('\n') {
        return false;
    }
    let first = s.chars().next().expect("not empty");
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        // `-`, `?` and `:` may start a plain scalar when a non-space follows (`-x`, `:x`).
        let second = s.chars().nth(1);
        if !("-?:".contains(first) && second.is_some_and(|c| c != ' ')) {
            return false;
        }
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    !s.chars().any(|c| c.is_control())
}

/// Strings a YAML 1.1 or 1.2 reader takes for another type.
fn looks_typed(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
    ) {
        return true;
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return true;
    }
    if digits.parse::<f64>().is_ok()
        && digits
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.')
    {
        return true;
    }
    if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0o"))
    {
        return !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    if dray_sdk::yaml::v3::is_timestamp(s) {
        return true;
    }
    matches!(lower.as_str(), ".inf" | "-.inf" | "+.inf" | ".nan")
        || (digits.contains(':')
            && digits
                .split(':')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())))
}

/// The column the next character lands in.
fn column(out: &str) -> usize {
    out.rsplit('\n')
        .next()
        .map_or(0, |line| line.chars().count())
}

/// How wide a line grows before a scalar breaks at a space (libyaml's `best_width`).
const BEST_WIDTH: usize = 80;

/// Writes `text` (already escaped for its style), breaking at single spaces past
/// [`BEST_WIDTH`] as go-yaml's emitter does: a break becomes a new line at `indent`; `inner`
/// keeps the first and last characters from breaking (quoted styles), `escape_space` writes a
/// `\` before a following space (double-quoted).
fn folded(text: &str, indent: usize, out: &mut String, inner: bool, escape_space: bool) {
    let chars: Vec<char> = text.chars().collect();
    let mut col = column(out);
    let mut spaces = false;
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let next_space = chars.get(i + 1) == Some(&' ');
            let inside = !inner || (i > 0 && i + 1 < chars.len());
            if !spaces && col > BEST_WIDTH && inside && (escape_space || !next_space) {
                out.push('\n');
                out.push_str(&" ".repeat(indent));
                col = indent;
                if escape_space && next_space {
                    out.push('\\');
                    col += 1;
                }
            } else {
                out.push(c);
                col += 1;
            }
            spaces = true;
        } else {
            out.push(c);
            col += 1;
            spaces = false;
        }
    }
}

/// A double-quoted scalar, folded as go-yaml folds one.
fn double_quoted(s: &str, indent: usize, out: &mut String, breaks: bool) {
    let quoted = Value::String(s.to_string()).to_string();
    if !breaks || !s.contains(' ') {
        out.push_str(&quoted);
        return;
    }
    out.push('"');
    folded(&quoted[1..quoted.len() - 1], indent, out, true, true);
    out.push('"');
}

/// A Go float as `sigs.k8s.io/yaml` writes it (through JSON, then `yaml.v2`): an integral
/// value as an integer, others as `strconv.FormatFloat(f, 'g', -1, 64)`.
fn go_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 9.223_372_036_854_775e18 {
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
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{f}")
}

fn string(s: &str, indent: usize, out: &mut String) {
    write_string(s, indent, out, true);
}

fn key(s: &str, indent: usize, out: &mut String) {
    write_string(s, indent, out, false);
}

fn write_string(s: &str, indent: usize, out: &mut String, breaks: bool) {
    if s.contains('\n')
        && !s.chars().any(|c| c.is_control() && c != '\n')
        && !s.lines().any(|l| l.ends_with(' '))
    {
        let chomp = if s.ends_with("\n\n") {
            "+"
        } else if s.ends_with('\n') {
            ""
        } else {
            "-"
        };
        let pad = " ".repeat(indent.max(1) + if indent == 0 { 1 } else { 0 });
        out.push('|');
        out.push_str(chomp);
        if s.starts_with(' ') {
            out.push('2');
        }
        for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
            out.push('\n');
            if !line.is_empty() {
                out.push_str(&pad);
                out.push_str(line);
            }
        }
    } else if s.is_empty() || looks_typed(s) {
        double_quoted(s, indent, out, breaks);
    } else if plain_ok(s) {
        if breaks {
            folded(s, indent, out, false, false);
        } else {
            out.push_str(s);
        }
    } else if !s.chars().any(|c| c.is_control()) {
        out.push('\'');
        let escaped = s.replace('\'', "''");
        if breaks {
            folded(&escaped, indent, out, true, false);
        } else {
            out.push_str(&escaped);
        }
        out.push('\'');
    } else {
        double_quoted(s, indent, out, breaks);
    }
}

fn scalar(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::String(s) => string(s, indent, out),
        Value::Null => out.push_str("null"),
        Value::Number(n) if n.is_f64() => out.push_str(&go_float(n.as_f64().unwrap_or(0.0))),
        other => out.push_str(&other.to_string()),
    }
}

fn is_collection(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

/// Writes a mapping's entries at `indent`; the first line's indent is already written.
fn mapping(map: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push_str(&" ".repeat(indent));
        }
        self::key(key, indent, out);
        out.push(':');
        let value = &map[key];
        match value {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                out.push_str(&" ".repeat(indent + 2));
                mapping(m, indent + 2, out);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                out.push_str(&" ".repeat(indent));
                sequence(a, indent, out);
            }
            Value::Object(_) => out.push_str(" {}\n"),
            Value::Array(_) => out.push_str(" []\n"),
            other => {
                out.push(' ');
                scalar(other, indent + 2, out);
                out.push('\n');
            }
        }
    }
}

fn sequence(items: &[Value], indent: usize, out: &mut String) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => mapping(m, indent + 2, out),
            Value::Array(a) if !a.is_empty() => sequence(a, indent + 2, out),
            Value::Object(_) => out.push_str("{}\n"),
            Value::Array(_) => out.push_str("[]\n"),
            other => {
                scalar(other, indent + 2, out);
                out.push('\n');
            }
        }
    }
}

/// One document.
pub fn document(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if is_collection(v) => mapping(m, 0, &mut out),
        other => {
            scalar(other, 0, &mut out);
            out.push('\n');
        }
    }
    out
}

/// Documents separated by `---`.
pub fn documents<'a>(docs: impl IntoIterator<Item = &'a Value>) -> String {
    docs.into_iter()
        .map(document)
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_like_kustomize() {
        let doc = json!({
            "kind": "Deployment", "apiVersion": "apps/v1",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}], "args": ["--port", "8080", "*"]}]}}},
            "data": {"empty": "", "yes": "yes", "text": "a\nb\n", "v": "1.0"}
        });
        assert_eq!(
            document(&doc),
            "apiVersion: apps/v1\ndata:\n  empty: \"\"\n  text: |\n    a\n    b\n  v: \"1.0\"\n  \"yes\": \"yes\"\nkind: Deployment\nmetadata:\n  labels:\n    app: web\n  name: web\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n      - args:\n        - --port\n        - \"8080\"\n        - '*'\n        image: nginx:1.25\n        name: web\n        ports:\n        - containerPort: 80\n"
        );
    }
}
