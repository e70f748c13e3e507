//! Field checks shared by every kind, and the error list they fill.
//!
//! A check never stops at the first problem: it records each one with the JSON path of the field
//! (`spec.requestedFreight[0].origin.name`), so a user fixes a manifest in one round.

use std::fmt;
use std::time::Duration;

use regex::Regex;

use super::semver::Constraint;

/// One problem with one field of one document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Dotted path from the document root, with `[i]` for list items.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Collects [`FieldError`]s while a document is checked.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks an RFC 1123 DNS subdomain (the rule for most resource names).
    pub fn subdomain(&mut self, path: &str, value: &str) {
        if let Err(why) = check_subdomain(value) {
            self.add(path, why);
        }
    }

    /// Checks an RFC 1123 DNS label (project names, subscription names).
    pub fn label(&mut self, path: &str, value: &str) {
        if let Err(why) = check_label(value) {
            self.add(path, why);
        }
    }

    pub fn required(&mut self, path: &str, value: &str) -> bool {
        if value.trim().is_empty() {
            self.add(path, "is required");
            false
        } else {
            true
        }
    }

    pub fn duration(&mut self, path: &str, value: &str) {
        if let Err(why) = parse_duration(value) {
            self.add(path, why);
        }
    }

    pub fn regex(&mut self, path: &str, value: &str) {
        if let Err(e) = Regex::new(value) {
            self.add(path, format!("is not a valid regular expression: {e}"));
        }
    }

    /// Every `${{ }}` of a string parses and calls only functions that exist.
    pub fn expressions(&mut self, path: &str, value: &str) {
        if let Err(e) = crate::rules::expr::check_string(value) {
            self.add(path, e);
        }
    }

    /// Every string in `value` (a step's config), as [`Errors::expressions`]; `path` names it.
    pub fn expressions_in(&mut self, path: &str, value: &serde_json::Value) {
        match value {
            serde_json::Value::String(s) => self.expressions(path, s),
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.expressions_in(&format!("{path}[{i}]"), item);
                }
            }
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    self.expressions_in(&format!("{path}.{key}"), item);
                }
            }
            _ => {}
        }
    }

    /// A condition: an expression with or without its `${{ }}`.
    pub fn condition(&mut self, path: &str, value: &str) {
        let code = crate::rules::expr::condition_code(value);
        if let Err(e) = crate::rules::expr::check(code) {
            self.add(path, e);
        }
    }

    pub fn constraint(&mut self, path: &str, value: &str) {
        if let Err(e) = Constraint::parse(value) {
            self.add(path, e.to_string());
        }
    }

    /// Exactly one of the named options must be set.
    pub fn exactly_one(&mut self, path: &str, options: &[(&str, bool)]) {
        let set: Vec<&str> = options
            .iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect();
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        match set.len() {
            1 => {}
            0 => self.add(
                path,
                format!("exactly one of {} must be set", names.join(", ")),
            ),
            _ => self.add(
                path,
                format!(
                    "exactly one of {} may be set, found {}",
                    names.join(", "),
                    set.join(" and ")
                ),
            ),
        }
    }

    pub fn range(&mut self, path: &str, value: i64, min: i64, max: i64) {
        if value < min || value > max {
            self.add(
                path,
                format!("must be between {min} and {max}, got {value}"),
            );
        }
    }
}

pub fn check_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is required".into());
    }
    if value.len() > 253 {
        return Err(format!("{value:?} is longer than 253 characters"));
    }
    for part in value.split('.') {
        check_label_chars(value, part)?;
    }
    Ok(())
}

pub fn check_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is required".into());
    }
    if value.len() > 63 {
        return Err(format!("{value:?} is longer than 63 characters"));
    }
    check_label_chars(value, value)
}

fn check_label_chars(whole: &str, part: &str) -> Result<(), String> {
    let ok = !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !part.starts_with('-')
        && !part.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{whole:?} is not a valid name: use lower-case letters, digits and '-', starting and ending with a letter or digit (RFC 1123)"
        ))
    }
}

/// Parses a Go duration as Kargo's fields take them (`5m`, `1h30m`, `1.5s`, `300ms`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("{text:?} is not a duration: use a number and a unit, e.g. 30s, 5m, 1h30m");
    if text.is_empty() {
        return Err(bad());
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_end);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * seconds;
        rest = tail;
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        assert_eq!(parse_duration("5m0s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "5", "five minutes", "5d", "m5"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_follow_rfc_1123() {
        assert!(check_subdomain("kargo-demo.test").is_ok());
        assert!(check_label("kargo-demo").is_ok());
        assert!(check_label("kargo.demo").is_err());
        assert!(check_subdomain("Demo").is_err());
        assert!(check_subdomain("-demo").is_err());
        assert!(check_subdomain(&"a".repeat(254)).is_err());
    }
}
