//! Sprig's functions (`github.com/Masterminds/sprig/v3`, as Helm installs them), with Sprig's
//! semantics: its loose numbers (`add 1 "2"` is 3, `add 1 2.5` is 3: Sprig converts to int64),
//! maps that `set` changes for every holder, `default` and `empty` by Go's zero values, and
//! Go's argument types (`indent` wants an int and a string).
//!
//! Functions Sprig has that are not here yet fail when called, naming themselves (see
//! [`NOT_SUPPORTED`]), so a chart that never calls them still renders.

use std::collections::BTreeMap;

use base64::Engine as _;
use sha2::Digest as _;

use crate::Templates;
use crate::exec::FuncError;
use crate::funcs::{want, want_at_least};
use crate::value::Value;

type R = Result<Value, FuncError>;

/// Functions of Sprig's that are not implemented: calling one fails with its name.
pub const NOT_SUPPORTED: &[&str] = &[
    "genPrivateKey",
    "derivePassword",
    "buildCustomCert",
    "genCA",
    "genCAWithKey",
    "genSelfSignedCert",
    "genSelfSignedCertWithKey",
    "genSignedCert",
    "genSignedCertWithKey",
    "encryptAES",
    "decryptAES",
    "htpasswd",
    "getHostByName",
    "semverCompare",
    "randBytes",
    "fromJson",
    "mustFromJson",
    "toJson",
    "mustToJson",
    "toPrettyJson",
    "mustToPrettyJson",
    "toRawJson",
    "mustToRawJson",
];

/// Installs Sprig's functions (Helm's set: without `env` and `expandenv`) into `set`.
pub fn install(set: &mut Templates) {
    for name in NOT_SUPPORTED {
        let name = name.to_string();
        set.func(&name.clone(), move |_, _| {
            Err(FuncError::Failed(format!(
                "{name} is not supported by this renderer yet"
            )))
        });
    }
    strings(set);
    lists(set);
    dicts(set);
    numbers(set);
    defaults(set);
    encodings(set);
    reflection(set);
    dates(set);
    paths_and_urls(set);
}

// Arguments, with Go's assignability rules for typed parameters.

fn wrong(index: usize, expected: &str, got: &Value) -> FuncError {
    FuncError::WrongArg {
        index,
        message: match got {
            Value::Nil => format!("invalid value; expected {expected}"),
            _ => format!(
                "wrong type for value; expected {expected}; got {}",
                got.type_name()
            ),
        },
    }
}

/// A `string` parameter.
fn string(a: &[Value], i: usize) -> Result<String, FuncError> {
    match &a[i] {
        Value::String(s) => Ok(s.to_string()),
        other => Err(wrong(i, "string", other)),
    }
}

/// An `int` parameter.
fn int(a: &[Value], i: usize) -> Result<i64, FuncError> {
    match &a[i] {
        Value::Int(n) => Ok(*n),
        other => Err(wrong(i, "int", other)),
    }
}

/// A `[]interface{}` parameter (Sprig's list functions take `interface{}` and convert).
fn list_of(v: &Value, name: &str) -> Result<Vec<Value>, FuncError> {
    match v {
        Value::List(l) => Ok(l.as_ref().clone()),
        Value::Nil => Ok(Vec::new()),
        other => Err(FuncError::Failed(format!(
            "Cannot {name} on type {}",
            other.type_name()
        ))),
    }
}

fn exactly(name: &str, a: &[Value], n: usize) -> Result<(), FuncError> {
    if a.len() != n {
        return Err(want(name, n, a.len()));
    }
    Ok(())
}

/// Sprig's `strval`: a string as it is, else `%v`.
pub fn strval(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        other => other.to_go_string(),
    }
}

/// `cast.ToInt64`: numbers (floats truncated), numeric strings, bools; anything else is 0.
pub fn to_int64(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Float(f) => *f as i64,
        Value::Bool(b) => *b as i64,
        Value::String(s) => {
            let s = s.trim();
            let s = s.strip_suffix(".0").unwrap_or(s);
            parse_int_base0(s).unwrap_or(0)
        }
        _ => 0,
    }
}

/// `strconv.ParseInt(s, 0, 64)`: `0x`, `0o`, `0b` and leading-`0` octal prefixes.
fn parse_int_base0(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let digits = digits.replace('_', "");
    let lower = digits.to_ascii_lowercase();
    let v = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if lower.len() > 1 && lower.starts_with('0') {
        i64::from_str_radix(&lower[1..], 8).ok()?
    } else {
        lower.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

/// `cast.ToFloat64`.
pub fn to_float64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => *b as i64 as f64,
        Value::String(s) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Sprig's `empty`: Go's zero values (nil, false, 0, "", empty collections).
pub fn empty(v: &Value) -> bool {
    !v.is_true()
}

fn strings(set: &mut Templates) {
    fn s1(set: &mut Templates, name: &'static str, f: fn(&str) -> String) {
        set.func(name, move |_, a| {
            exactly(name, a, 1)?;
            Ok(Value::from(f(&string(a, 0)?)))
        });
    }
    s1(set, "trim", |s| s.trim_matches(is_go_space).to_string());
    s1(set, "upper", |s| s.to_uppercase());
    s1(set, "lower", |s| s.to_lowercase());
    s1(set, "title", title);
    s1(set, "untitle", untitle);
    s1(set, "nospace", |s| {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    });
    s1(set, "initials", |s| {
        s.split_whitespace()
            .filter_map(|w| w.chars().next())
            .collect()
    });
    s1(set, "snakecase", |s| separated(s, '_'));
    s1(set, "kebabcase", |s| separated(s, '-'));
    s1(set, "camelcase", camelcase);
    s1(set, "swapcase", |s| {
        s.chars()
            .map(|c| {
                if c.is_uppercase() {
                    c.to_lowercase().collect::<String>()
                } else {
                    c.to_uppercase().collect()
                }
            })
            .collect()
    });
    s1(set, "regexQuoteMeta", regex::escape);
    s1(set, "base", path_base);
    s1(set, "dir", path_dir);
    s1(set, "ext", |s| {
        let base = s.rsplit('/').next().unwrap_or(s);
        match base.rfind('.') {
            Some(i) => base[i..].to_string(),
            None => String::new(),
        }
    });
    s1(set, "clean", path_clean);
    set.func("isAbs", |_, a| {
        exactly("isAbs", a, 1)?;
        Ok(Value::Bool(string(a, 0)?.starts_with('/')))
    });
    set.func("trimAll", |_, a| {
        exactly("trimAll", a, 2)?;
        let (cut, s) = (string(a, 0)?, string(a, 1)?);
        Ok(Value::from(s.trim_matches(|c| cut.contains(c)).to_string()))
    });
    set.func("trimPrefix", |_, a| {
        exactly("trimPrefix", a, 2)?;
        let (p, s) = (string(a, 0)?, string(a, 1)?);
        Ok(Value::from(s.strip_prefix(&p).unwrap_or(&s).to_string()))
    });
    set.func("trimSuffix", |_, a| {
        exactly("trimSuffix", a, 2)?;
        let (p, s) = (string(a, 0)?, string(a, 1)?);
        Ok(Value::from(s.strip_suffix(&p).unwrap_or(&s).to_string()))
    });
    set.func("contains", |_, a| {
        exactly("contains", a, 2)?;
        Ok(Value::Bool(string(a, 1)?.contains(&string(a, 0)?)))
    });
    set.func("hasPrefix", |_, a| {
        exactly("hasPrefix", a, 2)?;
        Ok(Value::Bool(string(a, 1)?.starts_with(&string(a, 0)?)))
    });
    set.func("hasSuffix", |_, a| {
        exactly("hasSuffix", a, 2)?;
        Ok(Value::Bool(string(a, 1)?.ends_with(&string(a, 0)?)))
    });
    set.func("repeat", |_, a| {
        exactly("repeat", a, 2)?;
        let (n, s) = (int(a, 0)?, string(a, 1)?);
        if n < 0 {
            return Err("negative Repeat count".into());
        }
        if (n as usize).saturating_mul(s.len()) > 16 << 20 {
            return Err(FuncError::Failed(
                "repeat: the result would pass 16 MiB".into(),
            ));
        }
        Ok(Value::from(s.repeat(n as usize)))
    });
    set.func("substr", |_, a| {
        exactly("substr", a, 3)?;
        let (start, end, s) = (int(a, 0)?, int(a, 1)?, string(a, 2)?);
        let bytes = s.as_bytes();
        let len = bytes.len() as i64;
        let out = if start < 0 {
            &bytes[..end.clamp(0, len) as usize]
        } else if end < 0 || end > len {
            &bytes[start.min(len) as usize..]
        } else if start > end {
            return Err("slice bounds out of range".into());
        } else {
            &bytes[start as usize..end as usize]
        };
        Ok(Value::from(String::from_utf8_lossy(out).into_owned()))
    });
    set.func("trunc", |_, a| {
        exactly("trunc", a, 2)?;
        let (c, s) = (int(a, 0)?, string(a, 1)?);
        let len = s.len() as i64;
        let out = if c < 0 && len + c > 0 {
            &s.as_bytes()[(len + c) as usize..]
        } else if c >= 0 && len > c {
            &s.as_bytes()[..c as usize]
        } else {
            s.as_bytes()
        };
        Ok(Value::from(String::from_utf8_lossy(out).into_owned()))
    });
    set.func("abbrev", |_, a| {
        exactly("abbrev", a, 2)?;
        let (width, s) = (int(a, 0)?, string(a, 1)?);
        if width < 4 || s.len() as i64 <= width {
            return Ok(Value::from(s));
        }
        Ok(Value::from(format!("{}...", &s[..(width - 3) as usize])))
    });
    set.func("quote", |_, a| {
        let parts: Vec<String> = a
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(|v| crate::exec::go_quote(&strval(v)))
            .collect();
        Ok(Value::from(parts.join(" ")))
    });
    set.func("squote", |_, a| {
        let parts: Vec<String> = a
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(|v| format!("'{}'", strval(v)))
            .collect();
        Ok(Value::from(parts.join(" ")))
    });
    set.func("cat", |_, a| {
        let parts: Vec<String> = a
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(strval)
            .collect();
        Ok(Value::from(parts.join(" ")))
    });
    set.func("indent", |_, a| {
        exactly("indent", a, 2)?;
        let (n, s) = (int(a, 0)?, string(a, 1)?);
        Ok(Value::from(indent("indent", n, &s)?))
    });
    set.func("nindent", |_, a| {
        exactly("nindent", a, 2)?;
        let (n, s) = (int(a, 0)?, string(a, 1)?);
        Ok(Value::from(format!("\n{}", indent("nindent", n, &s)?)))
    });
    set.func("replace", |_, a| {
        exactly("replace", a, 3)?;
        let (old, new, s) = (string(a, 0)?, string(a, 1)?, string(a, 2)?);
        Ok(Value::from(go_replace(&s, &old, &new)))
    });
    set.func("plural", |_, a| {
        exactly("plural", a, 3)?;
        let (one, many, n) = (string(a, 0)?, string(a, 1)?, int(a, 2)?);
        Ok(Value::from(if n == 1 { one } else { many }))
    });
    set.func("toString", |_, a| {
        exactly("toString", a, 1)?;
        Ok(Value::from(strval(&a[0])))
    });
    set.func("toStrings", |_, a| {
        exactly("toStrings", a, 1)?;
        let items = match &a[0] {
            Value::List(l) => l.iter().map(|v| Value::from(strval(v))).collect(),
            Value::Nil => Vec::new(),
            other => vec![Value::from(strval(other))],
        };
        Ok(Value::from(items))
    });
    set.func("join", |_, a| {
        exactly("join", a, 2)?;
        let sep = string(a, 0)?;
        let parts: Vec<String> = match &a[1] {
            Value::List(l) => l
                .iter()
                .filter(|v| !matches!(v, Value::Nil))
                .map(strval)
                .collect(),
            Value::Nil => Vec::new(),
            other => vec![strval(other)],
        };
        Ok(Value::from(parts.join(&sep)))
    });
    set.func("splitList", |_, a| {
        exactly("splitList", a, 2)?;
        let (sep, s) = (string(a, 0)?, string(a, 1)?);
        Ok(Value::list(
            go_split(&s, &sep, -1).into_iter().map(Value::from),
        ))
    });
    set.func("split", |_, a| {
        exactly("split", a, 2)?;
        let (sep, s) = (string(a, 0)?, string(a, 1)?);
        Ok(indexed(go_split(&s, &sep, -1)))
    });
    set.func("splitn", |_, a| {
        exactly("splitn", a, 3)?;
        let (sep, n, s) = (string(a, 0)?, int(a, 1)?, string(a, 2)?);
        Ok(indexed(go_split(&s, &sep, n)))
    });
    set.func("sortAlpha", |_, a| {
        exactly("sortAlpha", a, 1)?;
        let mut items: Vec<String> = match &a[0] {
            Value::List(l) => l.iter().map(strval).collect(),
            other => vec![strval(other)],
        };
        items.sort();
        Ok(Value::list(items.into_iter().map(Value::from)))
    });
    regexes(set);
    set.func("randAlphaNum", |_, a| {
        random(
            a,
            "randAlphaNum",
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        )
    });
    set.func("randAlpha", |_, a| {
        random(
            a,
            "randAlpha",
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        )
    });
    set.func("randNumeric", |_, a| {
        random(a, "randNumeric", b"0123456789")
    });
    set.func("randAscii", |_, a| {
        let printable: Vec<u8> = (32u8..127).collect();
        random(a, "randAscii", &printable)
    });
}

fn random(a: &[Value], name: &str, alphabet: &[u8]) -> R {
    use rand::Rng as _;
    exactly(name, a, 1)?;
    let n = int(a, 0)?.clamp(0, 1 << 20) as usize;
    let mut rng = rand::rng();
    Ok(Value::from(
        (0..n)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
            .collect::<String>(),
    ))
}

fn indexed(parts: Vec<String>) -> Value {
    Value::map(
        parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| (format!("_{i}"), Value::from(p))),
    )
}

fn is_go_space(c: char) -> bool {
    c.is_whitespace()
}

/// `strings.Split` / `SplitN`: an empty separator splits into characters; `n < 0` is all.
fn go_split(s: &str, sep: &str, n: i64) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let mut out: Vec<String> = if sep.is_empty() {
        s.chars().map(String::from).collect()
    } else if n > 0 {
        s.splitn(n as usize, sep).map(String::from).collect()
    } else {
        s.split(sep).map(String::from).collect()
    };
    if sep.is_empty() && n > 0 && out.len() > n as usize {
        let rest: String = out[n as usize - 1..].concat();
        out.truncate(n as usize - 1);
        out.push(rest);
    }
    out
}

/// `strings.Replace(s, old, new, -1)`: an empty `old` inserts `new` between characters.
fn go_replace(s: &str, old: &str, new: &str) -> String {
    if old.is_empty() {
        let mut out = String::from(new);
        for c in s.chars() {
            out.push(c);
            out.push_str(new);
        }
        return out;
    }
    s.replace(old, new)
}

/// Each line of `s` after `n` spaces; refused (as `repeat` is) when that would pass 16 MiB.
fn indent(name: &str, n: i64, s: &str) -> Result<String, FuncError> {
    let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
    let lines = s.bytes().filter(|&b| b == b'\n').count() + 1;
    if n.saturating_mul(lines).saturating_add(s.len()) > 16 << 20 {
        return Err(FuncError::Failed(format!(
            "{name}: the result would pass 16 MiB"
        )));
    }
    let pad = " ".repeat(n);
    Ok(format!("{pad}{}", s.replace('\n', &format!("\n{pad}"))))
}

/// `strings.Title`: the first letter of each word upper-cased.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_letter = false;
    for c in s.chars() {
        if !prev_letter && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
    }
    out
}

fn untitle(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_space = true;
    for c in s.chars() {
        if prev_space && c.is_alphabetic() {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
        prev_space = c.is_whitespace();
    }
    out
}

/// Words of `s` for the case conversions: split at non-alphanumerics and before an upper-case
/// letter that follows a lower-case one.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        word.push(c);
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn separated(s: &str, sep: char) -> String {
    words(s)
        .iter()
        .map(|w| w.to_lowercase())
        .collect::<Vec<_>>()
        .join(&sep.to_string())
}

fn camelcase(s: &str) -> String {
    words(s)
        .iter()
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + &c.as_str().to_lowercase(),
                None => String::new(),
            }
        })
        .collect()
}

fn path_base(s: &str) -> String {
    if s.is_empty() {
        return ".".into();
    }
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".into();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

fn path_dir(s: &str) -> String {
    let dir = match s.rfind('/') {
        Some(i) => &s[..=i],
        None => "",
    };
    path_clean(dir)
}

/// `path.Clean`.
fn path_clean(s: &str) -> String {
    if s.is_empty() {
        return ".".into();
    }
    let rooted = s.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

fn regexes(set: &mut Templates) {
    fn compile(pattern: &str) -> Result<regex::Regex, FuncError> {
        regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| FuncError::Failed(format!("error parsing regexp: {e}")))
    }
    for name in ["regexMatch", "mustRegexMatch"] {
        set.func(name, move |_, a| {
            exactly(name, a, 2)?;
            let re = compile(&string(a, 0)?)?;
            Ok(Value::Bool(re.is_match(&string(a, 1)?)))
        });
    }
    for name in ["regexFindAll", "mustRegexFindAll"] {
        set.func(name, move |_, a| {
            exactly(name, a, 3)?;
            let re = compile(&string(a, 0)?)?;
            let s = string(a, 1)?;
            let n = int(a, 2)?;
            let found = re.find_iter(&s).map(|m| Value::from(m.as_str()));
            Ok(Value::list(if n < 0 {
                found.collect::<Vec<_>>()
            } else {
                found.take(n as usize).collect()
            }))
        });
    }
    for name in ["regexFind", "mustRegexFind"] {
        set.func(name, move |_, a| {
            exactly(name, a, 2)?;
            let re = compile(&string(a, 0)?)?;
            let s = string(a, 1)?;
            Ok(Value::from(
                re.find(&s).map_or("", |m| m.as_str()).to_string(),
            ))
        });
    }
    for name in ["regexReplaceAll", "mustRegexReplaceAll"] {
        set.func(name, move |_, a| {
            exactly(name, a, 3)?;
            let re = compile(&string(a, 0)?)?;
            let (s, repl) = (string(a, 1)?, string(a, 2)?);
            Ok(Value::from(re.replace_all(&s, repl.as_str()).into_owned()))
        });
    }
    for name in ["regexReplaceAllLiteral", "mustRegexReplaceAllLiteral"] {
        set.func(name, move |_, a| {
            exactly(name, a, 3)?;
            let re = compile(&string(a, 0)?)?;
            let (s, repl) = (string(a, 1)?, string(a, 2)?);
            Ok(Value::from(
                re.replace_all(&s, regex::NoExpand(&repl)).into_owned(),
            ))
        });
    }
    for name in ["regexSplit", "mustRegexSplit"] {
        set.func(name, move |_, a| {
            exactly(name, a, 3)?;
            let re = compile(&string(a, 0)?)?;
            let (s, n) = (string(a, 1)?, int(a, 2)?);
            let parts: Vec<Value> = if n < 0 {
                re.split(&s).map(Value::from).collect()
            } else if n == 0 {
                Vec::new()
            } else {
                re.splitn(&s, n as usize).map(Value::from).collect()
            };
            Ok(Value::from(parts))
        });
    }
}

fn lists(set: &mut Templates) {
    set.func("list", |_, a| Ok(Value::from(a.to_vec())));
    for name in ["first", "mustFirst"] {
        set.func(name, move |_, a| {
            exactly(name, a, 1)?;
            Ok(list_of(&a[0], "find first")?
                .first()
                .cloned()
                .unwrap_or(Value::Nil))
        });
    }
    for name in ["last", "mustLast"] {
        set.func(name, move |_, a| {
            exactly(name, a, 1)?;
            Ok(list_of(&a[0], "find last")?
                .last()
                .cloned()
                .unwrap_or(Value::Nil))
        });
    }
    for name in ["rest", "mustRest"] {
        set.func(name, move |_, a| {
            exactly(name, a, 1)?;
            let l = list_of(&a[0], "find rest")?;
            Ok(if l.is_empty() {
                Value::Nil
            } else {
                Value::from(l[1..].to_vec())
            })
        });
    }
    for name in ["initial", "mustInitial"] {
        set.func(name, move |_, a| {
            exactly(name, a, 1)?;
            let l = list_of(&a[0], "find initial")?;
            Ok(if l.is_empty() {
                Value::Nil
            } else {
                Value::from(l[..l.len() - 1].to_vec())
            })
        });
    }
    for name in ["append", "push", "mustAppend", "mustPush"] {
        set.func(name, move |_, a| {
            exactly(name, a, 2)?;
            let mut l = list_of(&a[0], "append")?;
            l.push(a[1].clone());
            Ok(Value::from(l))
        });
    }
    for name in ["prepend", "mustPrepend"] {
        set.func(name, move |_, a| {
            exactly(name, a, 2)?;
            let mut l = list_of(&a[0], "prepend")?;
            l.insert(0, a[1].clone());
            Ok(Value::from(l))
        });
    }
    set.func("concat", |_, a| {
        let mut out = Vec::new();
        for v in a {
            out.extend(list_of(v, "concat")?);
        }
        Ok(Value::from(out))
    });
    for name in ["reverse", "mustReverse"] {
        set.func(name, move |_, a| {
            exactly(name, a, 1)?;
            let mut l = list_of(&a[0], "find reverse")?;
            l.reverse();
            Ok(Value::from(l))
        });
    }
    for name in ["uniq", "mustUniq"] {
        set.func(name, move |_, a| {
            exactly(name, a, 1)?;
            let mut out: Vec<Value> = Vec::new();
            for v in list_of(&a[0], "find uniq")? {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
            Ok(Value::from(out))
        });
    }
    for name in ["without", "mustWithout"] {
        set.func(name, move |_, a| {
            let Some((l, omit)) = a.split_first() else {
                return Err(want_at_least(name, 1, 0));
            };
            let out: Vec<Value> = list_of(l, "find without")?
                .into_iter()
                .filter(|v| !omit.contains(v))
                .collect();
            Ok(Value::from(out))
        });
    }
    for name in ["has", "mustHas"] {
        set.func(name, move |_, a| {
            exactly(name, a, 2)?;
            if matches!(a[1], Value::Nil) {
                return Ok(Value::Bool(false));
            }
            Ok(Value::Bool(list_of(&a[1], "find has")?.contains(&a[0])))
        });
    }
    for name in ["compact", "mustCompact"] {
        set.func(name, move |_, a| {
            exactly(name, a, 1)?;
            let out: Vec<Value> = list_of(&a[0], "compact")?
                .into_iter()
                .filter(|v| !empty(v))
                .collect();
            Ok(Value::from(out))
        });
    }
    set.func("until", |_, a| {
        exactly("until", a, 1)?;
        let n = int(a, 0)?;
        steps(0, n, if n < 0 { -1 } else { 1 })
    });
    set.func("untilStep", |_, a| {
        exactly("untilStep", a, 3)?;
        steps(int(a, 0)?, int(a, 1)?, int(a, 2)?)
    });
    set.func("seq", |_, a| {
        let n: Vec<i64> = a.iter().map(to_int64).collect();
        let (start, step, end) = match n.as_slice() {
            [] => return Ok(Value::from("")),
            [end] => (1, if *end >= 1 { 1 } else { -1 }, *end),
            [start, end] => (*start, if end >= start { 1 } else { -1 }, *end),
            [start, step, end, ..] => (*start, *step, *end),
        };
        if step == 0 || (end - start).signum() * step.signum() < 0 {
            return Ok(Value::from(""));
        }
        let count = ((end - start) / step + 1).min(1 << 20);
        Ok(Value::from(
            (0..count)
                .map(|i| (start + i * step).to_string())
                .collect::<Vec<_>>()
                .join(" "),
        ))
    });
    for name in ["chunk", "mustChunk"] {
        set.func(name, move |_, a| {
            exactly(name, a, 2)?;
            let size = int(a, 0)?;
            if size < 1 {
                return Err("chunk size must be positive".into());
            }
            let l = list_of(&a[1], "chunk")?;
            Ok(Value::list(
                l.chunks(size as usize).map(|c| Value::from(c.to_vec())),
            ))
        });
    }
    for name in ["slice", "mustSlice"] {
        set.func(name, move |_, a| {
            let Some((l, idx)) = a.split_first() else {
                return Err(want_at_least(name, 1, 0));
            };
            let l = match l {
                Value::List(l) => l.as_ref().clone(),
                other => {
                    return Err(FuncError::Failed(format!(
                        "list should be type of slice or array but {}",
                        kind_name(other)
                    )));
                }
            };
            let idx: Vec<i64> = idx.iter().map(to_int64).collect();
            let (start, end) = match idx.as_slice() {
                [] => (0, l.len() as i64),
                [s] => (*s, l.len() as i64),
                [s, e, ..] => (*s, *e),
            };
            if start < 0 || end > l.len() as i64 || start > end {
                return Err(FuncError::Failed(format!(
                    "slice bounds out of range [{start}:{end}]"
                )));
            }
            Ok(Value::from(l[start as usize..end as usize].to_vec()))
        });
    }
}

fn steps(start: i64, stop: i64, step: i64) -> R {
    if step == 0 || (stop - start).signum() * step.signum() <= 0 {
        return Ok(Value::list([]));
    }
    let (span, stride) = ((stop - start).abs(), step.abs());
    let count = span / stride + i64::from(span % stride != 0);
    if count > 1 << 20 {
        return Err(FuncError::Failed(format!(
            "a list of {count} numbers is too long"
        )));
    }
    Ok(Value::list(
        (0..count).map(|i| Value::Int(start + i * step)),
    ))
}

fn dict_of(v: &Value, i: usize) -> Result<crate::value::Map, FuncError> {
    match v {
        Value::Map(m) => Ok(m.clone()),
        other => Err(wrong(i, "map[string]interface {}", other)),
    }
}

fn dicts(set: &mut Templates) {
    set.func("dict", |_, a| {
        let mut m = BTreeMap::new();
        for pair in a.chunks(2) {
            let key = strval(&pair[0]);
            m.insert(key, pair.get(1).cloned().unwrap_or(Value::from("")));
        }
        Ok(Value::from(m))
    });
    set.func("get", |_, a| {
        exactly("get", a, 2)?;
        let m = dict_of(&a[0], 0)?;
        Ok(m.get(&string(a, 1)?).unwrap_or(Value::from("")))
    });
    set.func("set", |_, a| {
        exactly("set", a, 3)?;
        let m = dict_of(&a[0], 0)?;
        m.insert(string(a, 1)?, a[2].clone());
        Ok(Value::Map(m))
    });
    set.func("unset", |_, a| {
        exactly("unset", a, 2)?;
        let m = dict_of(&a[0], 0)?;
        m.remove(&string(a, 1)?);
        Ok(Value::Map(m))
    });
    set.func("hasKey", |_, a| {
        exactly("hasKey", a, 2)?;
        Ok(Value::Bool(dict_of(&a[0], 0)?.contains_key(&string(a, 1)?)))
    });
    set.func("pluck", |_, a| {
        let Some((key, maps)) = a.split_first() else {
            return Err(want_at_least("pluck", 1, 0));
        };
        let key = match key {
            Value::String(s) => s.to_string(),
            other => return Err(wrong(0, "string", other)),
        };
        let mut out = Vec::new();
        for (i, m) in maps.iter().enumerate() {
            if let Some(v) = dict_of(m, i + 1)?.get(&key) {
                out.push(v);
            }
        }
        Ok(Value::from(out))
    });
    set.func("keys", |_, a| {
        let mut out = Vec::new();
        for (i, m) in a.iter().enumerate() {
            out.extend(dict_of(m, i)?.keys().into_iter().map(Value::from));
        }
        // Sprig's keys come in Go's map order, which is random; charts sort them.
        Ok(Value::from(out))
    });
    set.func("values", |_, a| {
        exactly("values", a, 1)?;
        Ok(Value::list(
            dict_of(&a[0], 0)?.entries().into_iter().map(|(_, v)| v),
        ))
    });
    set.func("pick", |_, a| {
        let Some((m, keys)) = a.split_first() else {
            return Err(want_at_least("pick", 1, 0));
        };
        let m = dict_of(m, 0)?;
        let mut out = BTreeMap::new();
        for k in keys {
            let k = strval(k);
            if let Some(v) = m.get(&k) {
                out.insert(k, v);
            }
        }
        Ok(Value::from(out))
    });
    set.func("omit", |_, a| {
        let Some((m, keys)) = a.split_first() else {
            return Err(want_at_least("omit", 1, 0));
        };
        let omit: Vec<String> = keys.iter().map(strval).collect();
        let out: BTreeMap<String, Value> = dict_of(m, 0)?
            .entries()
            .into_iter()
            .filter(|(k, _)| !omit.contains(k))
            .collect();
        Ok(Value::from(out))
    });
    for (name, overwrite) in [
        ("merge", false),
        ("mustMerge", false),
        ("mergeOverwrite", true),
        ("mustMergeOverwrite", true),
    ] {
        set.func(name, move |_, a| {
            let Some((dst, srcs)) = a.split_first() else {
                return Err(want_at_least(name, 1, 0));
            };
            let dst = dict_of(dst, 0)?;
            for (i, src) in srcs.iter().enumerate() {
                merge_into(&dst, &dict_of(src, i + 1)?, overwrite, 0);
            }
            Ok(Value::Map(dst))
        });
    }
    for name in ["deepCopy", "mustDeepCopy"] {
        set.func(name, move |_, a| {
            exactly(name, a, 1)?;
            Ok(deep_copy(&a[0], 0))
        });
    }
    set.func("dig", |_, a| {
        if a.len() < 3 {
            return Err(want_at_least("dig", 3, a.len()));
        }
        let dict = dict_of(&a[a.len() - 1], a.len() - 1)?;
        let default = a[a.len() - 2].clone();
        let mut current = Value::Map(dict);
        for key in &a[..a.len() - 2] {
            let key = strval(key);
            current = match &current {
                Value::Map(m) => match m.get(&key) {
                    Some(v) => v,
                    None => return Ok(default),
                },
                _ => return Ok(default),
            };
        }
        Ok(current)
    });
}

/// Merges `src` into `dst` as mergo does for Sprig: maps recursively; other values only where
/// `dst` has none (or, with `overwrite`, where `src`'s is not empty).
fn merge_into(dst: &crate::value::Map, src: &crate::value::Map, overwrite: bool, depth: usize) {
    if depth > 100 {
        return;
    }
    for (k, v) in src.entries() {
        match (dst.get(&k), &v) {
            (Some(Value::Map(d)), Value::Map(s)) if !d.same(s) => {
                merge_into(&d, s, overwrite, depth + 1)
            }
            (None, _) | (Some(Value::Nil), _) => dst.insert(k, deep_copy(&v, 0)),
            (Some(_), v) if overwrite && !empty(v) => dst.insert(k, deep_copy(v, 0)),
            _ => {}
        }
    }
}

fn deep_copy(v: &Value, depth: usize) -> Value {
    if depth > 100 {
        return Value::Nil;
    }
    match v {
        Value::Map(m) => Value::map(
            m.entries()
                .into_iter()
                .map(|(k, v)| (k, deep_copy(&v, depth + 1))),
        ),
        Value::List(l) => Value::list(l.iter().map(|v| deep_copy(v, depth + 1))),
        other => other.clone(),
    }
}

fn numbers(set: &mut Templates) {
    fn binary(set: &mut Templates, name: &'static str, f: fn(i64, i64) -> Result<i64, String>) {
        set.func(name, move |_, a| {
            exactly(name, a, 2)?;
            Ok(Value::Int(f(to_int64(&a[0]), to_int64(&a[1]))?))
        });
    }
    binary(set, "sub", |a, b| Ok(a.wrapping_sub(b)));
    binary(set, "div", |a, b| {
        if b == 0 {
            Err("runtime error: integer divide by zero".into())
        } else {
            Ok(a.wrapping_div(b))
        }
    });
    binary(set, "mod", |a, b| {
        if b == 0 {
            Err("runtime error: integer divide by zero".into())
        } else {
            Ok(a.wrapping_rem(b))
        }
    });
    set.func("add", |_, a| {
        Ok(Value::Int(
            a.iter().map(to_int64).fold(0i64, i64::wrapping_add),
        ))
    });
    set.func("mul", |_, a| {
        let Some((first, rest)) = a.split_first() else {
            return Err(want_at_least("mul", 1, 0));
        };
        Ok(Value::Int(
            rest.iter()
                .map(to_int64)
                .fold(to_int64(first), i64::wrapping_mul),
        ))
    });
    set.func("add1", |_, a| {
        exactly("add1", a, 1)?;
        Ok(Value::Int(to_int64(&a[0]).wrapping_add(1)))
    });
    set.func("max", |_, a| {
        let Some((first, rest)) = a.split_first() else {
            return Err(want_at_least("max", 1, 0));
        };
        Ok(Value::Int(
            rest.iter().map(to_int64).fold(to_int64(first), i64::max),
        ))
    });
    set.func("min", |_, a| {
        let Some((first, rest)) = a.split_first() else {
            return Err(want_at_least("min", 1, 0));
        };
        Ok(Value::Int(
            rest.iter().map(to_int64).fold(to_int64(first), i64::min),
        ))
    });
    set.func("addf", |_, a| {
        Ok(Value::Float(a.iter().map(to_float64).sum()))
    });
    set.func("add1f", |_, a| {
        exactly("add1f", a, 1)?;
        Ok(Value::Float(to_float64(&a[0]) + 1.0))
    });
    for (name, op) in [
        ("subf", (|x, y| x - y) as fn(f64, f64) -> f64),
        ("mulf", |x, y| x * y),
        ("divf", |x, y| x / y),
    ] {
        set.func(name, move |_, a| {
            let Some((first, rest)) = a.split_first() else {
                return Err(want_at_least(name, 1, 0));
            };
            Ok(Value::Float(
                rest.iter().map(to_float64).fold(to_float64(first), op),
            ))
        });
    }
    set.func("maxf", |_, a| {
        Ok(Value::Float(
            a.iter().map(to_float64).fold(f64::MIN, f64::max),
        ))
    });
    set.func("minf", |_, a| {
        Ok(Value::Float(
            a.iter().map(to_float64).fold(f64::MAX, f64::min),
        ))
    });
    set.func("floor", |_, a| {
        exactly("floor", a, 1)?;
        Ok(Value::Float(to_float64(&a[0]).floor()))
    });
    set.func("ceil", |_, a| {
        exactly("ceil", a, 1)?;
        Ok(Value::Float(to_float64(&a[0]).ceil()))
    });
    set.func("round", |_, a| {
        if a.len() < 2 {
            return Err(want_at_least("round", 2, a.len()));
        }
        let places = to_int64(&a[1]).clamp(0, 15) as i32;
        let half = a.get(2).map_or(0.5, to_float64);
        let pow = 10f64.powi(places);
        let v = to_float64(&a[0]) * pow;
        let rounded = if v.fract().abs() >= half {
            v.trunc() + v.signum()
        } else {
            v.trunc()
        };
        Ok(Value::Float(rounded / pow))
    });
    set.func("int", |_, a| {
        exactly("int", a, 1)?;
        Ok(Value::Int(to_int64(&a[0])))
    });
    set.func("int64", |_, a| {
        exactly("int64", a, 1)?;
        Ok(Value::Int(to_int64(&a[0])))
    });
    set.func("float64", |_, a| {
        exactly("float64", a, 1)?;
        Ok(Value::Float(to_float64(&a[0])))
    });
    set.func("atoi", |_, a| {
        exactly("atoi", a, 1)?;
        Ok(Value::Int(string(a, 0)?.trim().parse().unwrap_or(0)))
    });
    set.func("toDecimal", |_, a| {
        exactly("toDecimal", a, 1)?;
        Ok(Value::Int(
            i64::from_str_radix(&strval(&a[0]), 8).unwrap_or(0),
        ))
    });
}

fn defaults(set: &mut Templates) {
    set.func("default", |_, a| {
        let Some((d, given)) = a.split_first() else {
            return Err(want_at_least("default", 1, 0));
        };
        match given.first() {
            Some(v) if !empty(v) => Ok(v.clone()),
            _ => Ok(d.clone()),
        }
    });
    set.func("empty", |_, a| {
        exactly("empty", a, 1)?;
        Ok(Value::Bool(empty(&a[0])))
    });
    set.func("coalesce", |_, a| {
        Ok(a.iter().find(|v| !empty(v)).cloned().unwrap_or(Value::Nil))
    });
    set.func("all", |_, a| Ok(Value::Bool(a.iter().all(|v| !empty(v)))));
    set.func("any", |_, a| Ok(Value::Bool(a.iter().any(|v| !empty(v)))));
    set.func("ternary", |_, a| {
        exactly("ternary", a, 3)?;
        let cond = match &a[2] {
            Value::Bool(b) => *b,
            other => return Err(wrong(2, "bool", other)),
        };
        Ok(if cond { a[0].clone() } else { a[1].clone() })
    });
    set.func("fail", |_, a| {
        exactly("fail", a, 1)?;
        Err(FuncError::Failed(string(a, 0)?))
    });
}

fn encodings(set: &mut Templates) {
    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
    set.func("b64enc", |_, a| {
        exactly("b64enc", a, 1)?;
        Ok(Value::from(B64.encode(string(a, 0)?)))
    });
    set.func("b64dec", |_, a| {
        exactly("b64dec", a, 1)?;
        Ok(Value::from(match B64.decode(string(a, 0)?) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => e.to_string(),
        }))
    });
    set.func("sha256sum", |_, a| {
        exactly("sha256sum", a, 1)?;
        Ok(Value::from(hex(&sha2::Sha256::digest(
            string(a, 0)?.as_bytes(),
        ))))
    });
    set.func("adler32sum", |_, a| {
        exactly("adler32sum", a, 1)?;
        Ok(Value::from(adler32(string(a, 0)?.as_bytes()).to_string()))
    });
    set.func("b32enc", |_, a| {
        exactly("b32enc", a, 1)?;
        Ok(Value::from(base32_encode(string(a, 0)?.as_bytes())))
    });
    set.func("b32dec", |_, a| {
        exactly("b32dec", a, 1)?;
        Ok(Value::from(match base32_decode(&string(a, 0)?) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => e,
        }))
    });
    set.func("uuidv4", |_, a| {
        use rand::RngCore as _;
        exactly("uuidv4", a, 0)?;
        let mut b = [0u8; 16];
        rand::rng().fill_bytes(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex(&b);
        Ok(Value::from(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )))
    });
    set.func("sha1sum", |_, a| {
        exactly("sha1sum", a, 1)?;
        Ok(Value::from(hex(&sha1::Sha1::digest(
            string(a, 0)?.as_bytes(),
        ))))
    });
}

/// `hash/adler32`.
fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + byte as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// `base32.StdEncoding.EncodeToString`, with padding.
fn base32_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = buf.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
        let chars = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < chars {
                out.push(BASE32[((bits >> (35 - i * 5)) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `base32.StdEncoding.DecodeString`; the error as Go words it.
fn base32_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(8) {
        return Err(format!(
            "illegal base32 data at input byte {}",
            bytes.len() / 8 * 8
        ));
    }
    let mut out = Vec::new();
    for (c, chunk) in bytes.chunks(8).enumerate() {
        let mut bits = 0u64;
        let mut n = 0;
        for (i, ch) in chunk.iter().enumerate() {
            if *ch == b'=' {
                break;
            }
            let v = BASE32
                .iter()
                .position(|x| x == ch)
                .ok_or_else(|| format!("illegal base32 data at input byte {}", c * 8 + i))?;
            bits = (bits << 5) | v as u64;
            n += 1;
        }
        bits <<= 5 * (8 - n);
        let len = n * 5 / 8;
        for i in 0..len {
            out.push((bits >> (32 - i * 8)) as u8);
        }
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Go's `reflect.Kind` name of a value.
fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "invalid",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::List(_) => "slice",
        Value::Map(_) => "map",
        Value::Object(_) => "ptr",
    }
}

fn reflection(set: &mut Templates) {
    set.func("typeOf", |_, a| {
        exactly("typeOf", a, 1)?;
        Ok(Value::from(a[0].type_name()))
    });
    set.func("kindOf", |_, a| {
        exactly("kindOf", a, 1)?;
        Ok(Value::from(kind_name(&a[0])))
    });
    set.func("typeIs", |_, a| {
        exactly("typeIs", a, 2)?;
        Ok(Value::Bool(string(a, 0)? == a[1].type_name()))
    });
    set.func("kindIs", |_, a| {
        exactly("kindIs", a, 2)?;
        Ok(Value::Bool(string(a, 0)? == kind_name(&a[1])))
    });
    set.func("typeIsLike", |_, a| {
        exactly("typeIsLike", a, 2)?;
        let t = string(a, 0)?;
        let actual = a[1].type_name();
        Ok(Value::Bool(t == actual || t == format!("*{actual}")))
    });
    set.func("deepEqual", |_, a| {
        exactly("deepEqual", a, 2)?;
        Ok(Value::Bool(a[0] == a[1]))
    });
}

// Dates (Go's `time`, UTC only: see `crate::time`).

/// A `time.Time` argument, if it is one.
fn time_of(v: &Value) -> Option<crate::time::Time> {
    match v {
        Value::Object(o) if o.type_name() == "time.Time" => {
            match (o.field("Unix"), o.field("Nanosecond")) {
                (Some(Ok(Value::Int(secs))), Some(Ok(Value::Int(nanos)))) => Some(
                    crate::time::Time::utc(i128::from(secs) * 1_000_000_000 + i128::from(nanos)),
                ),
                _ => None,
            }
        }
        _ => None,
    }
}

fn time_value(t: crate::time::Time) -> Value {
    Value::Object(std::sync::Arc::new(t))
}

/// Sprig's date argument: a time, or seconds since the epoch; anything else is now.
fn date_arg(v: &Value) -> crate::time::Time {
    match v {
        Value::Int(n) => crate::time::Time::utc(i128::from(*n) * 1_000_000_000),
        other => time_of(other).unwrap_or_else(crate::time::Time::now),
    }
}

fn date_in_zone(layout: &str, date: &Value, zone: &str) -> R {
    let t = date_arg(date).in_zone(zone).map_err(FuncError::Failed)?;
    Ok(Value::from(t.format(layout)))
}

/// A `time.Time` parameter.
fn time_param(a: &[Value], i: usize) -> Result<crate::time::Time, FuncError> {
    time_of(&a[i]).ok_or_else(|| wrong(i, "time.Time", &a[i]))
}

fn dates(set: &mut Templates) {
    set.func("now", |_, a| {
        exactly("now", a, 0)?;
        Ok(time_value(crate::time::Time::now()))
    });
    set.func("date", |_, a| {
        exactly("date", a, 2)?;
        date_in_zone(&string(a, 0)?, &a[1], "Local")
    });
    for name in ["dateInZone", "date_in_zone"] {
        set.func(name, move |_, a| {
            exactly(name, a, 3)?;
            date_in_zone(&string(a, 0)?, &a[1], &string(a, 2)?)
        });
    }
    set.func("htmlDate", |_, a| {
        exactly("htmlDate", a, 1)?;
        date_in_zone("2006-01-02", &a[0], "Local")
    });
    set.func("htmlDateInZone", |_, a| {
        exactly("htmlDateInZone", a, 2)?;
        date_in_zone("2006-01-02", &a[0], &string(a, 1)?)
    });
    for (name, must) in [
        ("dateModify", false),
        ("date_modify", false),
        ("mustDateModify", true),
        ("must_date_modify", true),
    ] {
        set.func(name, move |_, a| {
            exactly(name, a, 2)?;
            let change = string(a, 0)?;
            let t = time_param(a, 1)?;
            match crate::time::parse_duration(&change) {
                Ok(d) => Ok(time_value(crate::time::Time::utc(t.nanos + i128::from(d)))),
                Err(e) if must => Err(FuncError::Failed(e)),
                Err(_) => Ok(time_value(t)),
            }
        });
    }
    set.func("ago", |_, a| {
        exactly("ago", a, 1)?;
        let since = crate::time::Time::now().nanos - date_arg(&a[0]).nanos;
        let rounded = (since + 500_000_000).div_euclid(1_000_000_000) * 1_000_000_000;
        Ok(Value::from(crate::time::duration_string(rounded as i64)))
    });
    set.func("duration", |_, a| {
        exactly("duration", a, 1)?;
        // Sprig takes a string or an int64; a template's numbers are int or float64: 0.
        let secs = match &a[0] {
            Value::String(s) => s.parse::<i64>().unwrap_or(0),
            _ => 0,
        };
        Ok(Value::from(crate::time::duration_string(
            secs.saturating_mul(1_000_000_000),
        )))
    });
    set.func("durationRound", |_, a| {
        exactly("durationRound", a, 1)?;
        let d: i128 = match &a[0] {
            Value::String(s) => i128::from(crate::time::parse_duration(s).unwrap_or(0)),
            other => match time_of(other) {
                Some(t) => crate::time::Time::now().nanos - t.nanos,
                None => 0,
            },
        };
        let u = d.unsigned_abs();
        let hour = 3_600_000_000_000u128;
        let text = [
            (hour * 24 * 365, "y"),
            (hour * 24 * 30, "mo"),
            (hour * 24, "d"),
            (hour, "h"),
            (60_000_000_000, "m"),
            (1_000_000_000, "s"),
        ]
        .iter()
        .find(|(unit, _)| u > *unit)
        .map_or_else(
            || "0s".to_string(),
            |(unit, suffix)| format!("{}{suffix}", u / unit),
        );
        Ok(Value::from(text))
    });
    for (name, must) in [("toDate", false), ("mustToDate", true)] {
        set.func(name, move |_, a| {
            exactly(name, a, 2)?;
            match crate::time::Time::parse(&string(a, 0)?, &string(a, 1)?) {
                Ok(t) => Ok(time_value(t)),
                Err(e) if must => Err(FuncError::Failed(e)),
                // Go's zero time.
                Err(_) => Ok(time_value(crate::time::Time::utc(
                    -62_135_596_800 * 1_000_000_000,
                ))),
            }
        });
    }
    set.func("unixEpoch", |_, a| {
        exactly("unixEpoch", a, 1)?;
        Ok(Value::from(time_param(a, 0)?.unix().to_string()))
    });
}

// Paths (Go's `path/filepath` on Linux), URLs (`net/url`) and wrapping (`goutils`).

/// `filepath.Clean`: the shortest equivalent path.
pub fn clean_path(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

fn base_path(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".into();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

fn dir_path(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean_path(&path[..=i]),
        None => ".".into(),
    }
}

fn ext_path(path: &str) -> String {
    let last = path.rsplit('/').next().unwrap_or(path);
    match last.rfind('.') {
        Some(i) => last[i..].to_string(),
        None => String::new(),
    }
}

/// `goutils.WrapCustom`: lines of at most `width` bytes, broken at spaces; a longer word is
/// cut (`long_words`) or left whole.
pub fn wrap_custom(text: &str, width: i64, newline: &str, long_words: bool) -> String {
    if text.is_empty() {
        return String::new();
    }
    let newline = if newline.is_empty() { "\n" } else { newline };
    let width = width.max(1) as usize;
    let s = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(s.len() + 16);
    let mut offset = 0usize;
    while s.len() - offset > width {
        if s[offset] == b' ' {
            offset += 1;
            continue;
        }
        let end = width + offset + 1;
        match s[offset..end].iter().rposition(|&c| c == b' ') {
            Some(i) => {
                out.extend_from_slice(&s[offset..offset + i]);
                out.extend_from_slice(newline.as_bytes());
                offset += i + 1;
            }
            None if long_words => {
                out.extend_from_slice(&s[offset..offset + width]);
                out.extend_from_slice(newline.as_bytes());
                offset += width;
            }
            None => {
                let end = width + offset;
                match s[end..].iter().position(|&c| c == b' ') {
                    None => {
                        out.extend_from_slice(&s[offset..]);
                        offset = s.len();
                    }
                    Some(i) => {
                        out.extend_from_slice(&s[offset..end + i]);
                        out.extend_from_slice(newline.as_bytes());
                        offset = end + i + 1;
                    }
                }
            }
        }
    }
    out.extend_from_slice(&s[offset..]);
    String::from_utf8_lossy(&out).into_owned()
}

fn paths_and_urls(set: &mut Templates) {
    for (name, f) in [
        ("osBase", base_path as fn(&str) -> String),
        ("osDir", dir_path),
        ("osClean", clean_path),
        ("osExt", ext_path),
    ] {
        set.func(name, move |_, a| {
            exactly(name, a, 1)?;
            Ok(Value::from(f(&string(a, 0)?)))
        });
    }
    set.func("osIsAbs", |_, a| {
        exactly("osIsAbs", a, 1)?;
        Ok(Value::Bool(string(a, 0)?.starts_with('/')))
    });
    set.func("wrap", |_, a| {
        exactly("wrap", a, 2)?;
        Ok(Value::from(wrap_custom(
            &string(a, 1)?,
            int(a, 0)?,
            "",
            false,
        )))
    });
    set.func("wrapWith", |_, a| {
        exactly("wrapWith", a, 3)?;
        Ok(Value::from(wrap_custom(
            &string(a, 2)?,
            int(a, 0)?,
            &string(a, 1)?,
            true,
        )))
    });
    set.func("urlParse", |_, a| {
        exactly("urlParse", a, 1)?;
        let u = crate::url::Url::parse(&string(a, 0)?)
            .map_err(|e| FuncError::Failed(format!("unable to parse url: {e}")))?;
        let s = |v: &str| Value::from(v);
        Ok(Value::map([
            ("scheme".to_string(), s(&u.scheme)),
            ("host".to_string(), s(&u.host)),
            ("hostname".to_string(), s(&u.hostname())),
            ("path".to_string(), s(&u.path)),
            ("query".to_string(), s(&u.raw_query)),
            ("opaque".to_string(), s(&u.opaque)),
            ("fragment".to_string(), s(&u.fragment)),
            ("userinfo".to_string(), s(&u.userinfo())),
        ]))
    });
    set.func("urlJoin", |_, a| {
        exactly("urlJoin", a, 1)?;
        let Value::Map(d) = &a[0] else {
            return Err(wrong(0, "map[string]interface {}", &a[0]));
        };
        let field = |k: &str| -> Result<String, FuncError> {
            match d.get(k) {
                None => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.to_string()),
                Some(other) => Err(FuncError::Failed(format!(
                    "unable to parse {k} field: wrong type {}",
                    other.type_name()
                ))),
            }
        };
        let userinfo = field("userinfo")?;
        let user = if userinfo.is_empty() {
            None
        } else {
            let probe = crate::url::Url::parse(&format!("proto://{userinfo}@host"))
                .map_err(|e| FuncError::Failed(format!("unable to parse userinfo in dict: {e}")))?;
            probe.user
        };
        let u = crate::url::Url {
            scheme: field("scheme")?,
            host: field("host")?,
            path: field("path")?,
            raw_query: field("query")?,
            opaque: field("opaque")?,
            fragment: field("fragment")?,
            user,
            force_query: false,
        };
        Ok(Value::from(u.to_go_string()))
    });
}
