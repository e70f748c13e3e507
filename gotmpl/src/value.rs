//! The values templates work on, with Go's rules for them: how each prints (`fmt`'s `%v`), what
//! is true, and what type name an error gives it.
//!
//! Go's templates see Go values of any type; charts see what YAML and JSON decode to (nil, bool,
//! int64 or float64 numbers, strings, `[]interface{}` and `map[string]interface{}`), plus a few
//! objects with fields and methods (`.Files`, `.Capabilities`), which [`Object`] stands for.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// A value.
#[derive(Clone, Debug)]
pub enum Value {
    /// A nil interface (a missing map entry, YAML's `null`).
    Nil,
    Bool(bool),
    /// Go's `int` (and `int64`): what `len`, constants and integer YAML give.
    Int(i64),
    /// Go's `float64`: what numbers decoded through JSON are (Helm's values).
    Float(f64),
    String(Arc<str>),
    /// `[]interface{}`
    List(Arc<Vec<Value>>),
    /// `map[string]interface{}`, its keys sorted (Go prints maps sorted). Shared, as Go's maps
    /// are: `set` on it changes it for every holder.
    Map(Map),
    /// A Go struct or named type with fields and methods.
    Object(Arc<dyn Object>),
}

/// A map, shared and mutable as a Go map is.
#[derive(Clone, Default)]
pub struct Map(Arc<std::sync::RwLock<BTreeMap<String, Value>>>);

impl Map {
    pub fn new(entries: BTreeMap<String, Value>) -> Map {
        Map(Arc::new(std::sync::RwLock::new(entries)))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Value>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Value>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &str) -> Option<Value> {
        self.read().get(key).cloned()
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.read().contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// A copy of its entries, sorted by key.
    pub fn entries(&self) -> Vec<(String, Value)> {
        self.read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn keys(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// A copy of the map itself (its values still shared).
    pub fn snapshot(&self) -> BTreeMap<String, Value> {
        self.read().clone()
    }

    pub fn insert(&self, key: String, value: Value) {
        self.write().insert(key, value);
    }

    pub fn remove(&self, key: &str) -> Option<Value> {
        self.write().remove(key)
    }

    /// Whether both are the same map.
    pub fn same(&self, other: &Map) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.try_read() {
            Ok(m) => f.debug_map().entries(m.iter()).finish(),
            Err(_) => f.write_str("map[…]"),
        }
    }
}

/// A value with fields and methods, as a Go struct is to a template.
pub trait Object: std::fmt::Debug + Send + Sync {
    /// Its Go type name, for error messages (`*chart.Metadata`).
    fn type_name(&self) -> String;
    /// A field, or a method called without arguments; `None` if it has no such name.
    fn field(&self, name: &str) -> Option<Result<Value, String>>;
    /// A method called with arguments; `None` if it has no such method.
    fn method(&self, _name: &str, _args: &[Value]) -> Option<Result<Value, String>> {
        None
    }
    /// How `%v` prints it.
    fn display(&self) -> String;
    /// Whether `if` takes it as true (a struct always is).
    fn truthy(&self) -> bool {
        true
    }
    /// The value a function that wants plain data (`toYaml`, `keys`) sees.
    fn data(&self) -> Option<Value> {
        None
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Nil, Value::Nil) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a.same(b) || a.snapshot() == b.snapshot(),
            (Value::Object(a), Value::Object(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.into())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s.into())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::List(Arc::new(v))
    }
}

impl From<BTreeMap<String, Value>> for Value {
    fn from(m: BTreeMap<String, Value>) -> Self {
        Value::Map(Map::new(m))
    }
}

impl Value {
    pub fn map(entries: impl IntoIterator<Item = (String, Value)>) -> Value {
        Value::Map(Map::new(entries.into_iter().collect()))
    }

    pub fn list(items: impl IntoIterator<Item = Value>) -> Value {
        Value::List(Arc::new(items.into_iter().collect()))
    }

    /// Go's name of its type, as errors print it.
    pub fn type_name(&self) -> String {
        match self {
            Value::Nil => "<nil>".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) => "int".into(),
            Value::Float(_) => "float64".into(),
            Value::String(_) => "string".into(),
            Value::List(_) => "[]interface {}".into(),
            Value::Map(_) => "map[string]interface {}".into(),
            Value::Object(o) => o.type_name(),
        }
    }

    /// Go's truth (`if`, `and`, `or`, `not`): false, 0, nil and empty are false.
    pub fn is_true(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::String(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Object(o) => o.truthy(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// How `{{ . }}` prints it: `fmt.Print`, where a nil at the top is `<no value>`.
    pub fn print(&self) -> String {
        match self {
            Value::Nil => "<no value>".into(),
            v => v.to_go_string(),
        }
    }

    /// `fmt`'s `%v`.
    pub fn to_go_string(&self) -> String {
        let mut out = String::new();
        self.write_go(&mut out);
        out
    }

    fn write_go(&self, out: &mut String) {
        self.write_go_at(out, 0);
    }

    /// Writes `%v`; a structure nested past 100 levels (a map that holds itself) is cut short.
    fn write_go_at(&self, out: &mut String, depth: usize) {
        if depth > 100 {
            out.push_str("...");
            return;
        }
        match self {
            Value::Nil => out.push_str("<nil>"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => out.push_str(&format_float_g(*f)),
            Value::String(s) => out.push_str(s),
            Value::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    item.write_go_at(out, depth + 1);
                }
                out.push(']');
            }
            Value::Map(map) => {
                out.push_str("map[");
                for (i, (k, v)) in map.entries().iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    v.write_go_at(out, depth + 1);
                }
                out.push(']');
            }
            Value::Object(o) => out.push_str(&o.display()),
        }
    }
}

/// `fmt`'s `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`): the shortest digits that
/// read back as `f`, in exponent form when the decimal exponent is below -4 or at least 6 (so a
/// million prints `1e+06`, as charts' users know).
pub fn format_float_g(f: f64) -> String {
    format_float(f, 6)
}

/// Go's `%g` with the shortest digits, switching to exponent form when the decimal exponent is
/// below -4 or at least `eprec`.
pub fn format_float(f: f64, eprec: i32) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: d.ddddde±x.
    let sci = format!("{:e}", f);
    let (mantissa, exp) = sci.split_once('e').expect("an exponent");
    let exp: i32 = exp.parse().expect("a number");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if exp < -4 || exp >= eprec {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let point = exp as usize + 1;
        if digits.len() <= point {
            out.push_str(&digits);
            for _ in digits.len()..point {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_go_prints_them() {
        // fmt.Sprint(float64(x)) in Go.
        for (f, go) in [
            (3.0, "3"),
            (0.5, "0.5"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (1e21, "1e+21"),
            (100000.0, "100000"),
        ] {
            assert_eq!(format_float(f, 6), go, "{f}");
        }
    }

    #[test]
    fn collections_print_as_go_prints_them() {
        let v = Value::map([
            (
                "b".to_string(),
                Value::list([Value::Int(1), Value::Nil, "x".into()]),
            ),
            ("a".to_string(), Value::Bool(true)),
        ]);
        assert_eq!(v.to_go_string(), "map[a:true b:[1 <nil> x]]");
        assert_eq!(Value::Nil.print(), "<no value>");
    }

    #[test]
    fn truth_is_gos() {
        for v in [
            Value::Nil,
            Value::Int(0),
            Value::Float(0.0),
            "".into(),
            Value::list([]),
            Value::map([]),
        ] {
            assert!(!v.is_true(), "{v:?}");
        }
        for v in [
            Value::Int(-1),
            "0".into(),
            Value::list([Value::Nil]),
            Value::Bool(true),
        ] {
            assert!(v.is_true(), "{v:?}");
        }
    }
}
