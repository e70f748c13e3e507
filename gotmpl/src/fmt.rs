//! Go's `fmt.Sprintf` for the values templates have: flags (`-+# 0`), width, precision (also
//! `*`), the verbs `v s q d b o O x X c U e E f F g G t T %`, and Go's texts for what goes wrong
//! (`%!d(string=abc)`, `%!s(MISSING)`, `%!(EXTRA int=1)`).

use std::fmt::Write as _;

use crate::exec::go_quote;
use crate::value::{Value, format_float};

#[derive(Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    zero: bool,
    space: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// `fmt.Sprintf(format, args…)`.
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut next = 0usize;
    let mut chars = format.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        // Flags.
        while let Some(&(_, f)) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '#' => spec.sharp = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                _ => break,
            }
            chars.next();
        }
        // Width.
        if chars.peek().map(|p| p.1) == Some('*') {
            chars.next();
            match args.get(next) {
                Some(Value::Int(w)) if !too_large(w.unsigned_abs()) => {
                    if *w < 0 {
                        spec.minus = true;
                    }
                    spec.width = Some(w.unsigned_abs() as usize);
                }
                _ => out.push_str("%!(BADWIDTH)"),
            }
            next += 1;
        } else {
            match number(&mut chars) {
                Ok(width) => spec.width = width,
                // As Go: a crazy long number takes the rest of the format with it.
                Err(()) => {
                    out.push_str("%!(NOVERB)");
                    break;
                }
            }
        }
        // Precision.
        if chars.peek().map(|p| p.1) == Some('.') {
            chars.next();
            if chars.peek().map(|p| p.1) == Some('*') {
                chars.next();
                match args.get(next) {
                    Some(Value::Int(p)) if *p >= 0 && !too_large(p.unsigned_abs()) => {
                        spec.precision = Some(*p as usize);
                    }
                    _ => out.push_str("%!(BADPREC)"),
                }
                next += 1;
            } else {
                match number(&mut chars) {
                    Ok(precision) => spec.precision = Some(precision.unwrap_or(0)),
                    Err(()) => {
                        out.push_str("%!(NOVERB)");
                        break;
                    }
                }
            }
        }
        let Some((_, verb)) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        out.push_str(&format_one(verb, arg, spec));
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", a.type_name(), a.to_go_string()))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

/// Go's limit on a width or precision (`fmt`'s `tooLarge`): a million.
fn too_large(n: u64) -> bool {
    n > 1_000_000
}

/// A width or precision written in the format; `Err` past [`too_large`], as Go's `parsenum`.
fn number(chars: &mut std::iter::Peekable<std::str::CharIndices>) -> Result<Option<usize>, ()> {
    let mut n: Option<usize> = None;
    while let Some(&(_, d)) = chars.peek() {
        let Some(v) = d.to_digit(10) else { break };
        if n.is_some_and(|n| too_large(n as u64)) {
            return Err(());
        }
        n = Some(n.unwrap_or(0) * 10 + v as usize);
        chars.next();
    }
    Ok(n)
}

fn bad(verb: char, arg: &Value) -> String {
    match arg {
        Value::Nil => format!("%!{verb}(<nil>)"),
        _ => format!("%!{verb}({}={})", arg.type_name(), arg.to_go_string()),
    }
}

/// Pads `s` to the spec's width (zeros after a sign when asked, for numbers).
fn pad(s: String, spec: Spec, numeric: bool) -> String {
    let Some(width) = spec.width else { return s };
    let len = s.chars().count();
    if len >= width {
        return s;
    }
    let fill = width - len;
    if spec.minus {
        return s + &" ".repeat(fill);
    }
    if spec.zero && numeric {
        let (sign, digits) = match s.chars().next() {
            Some(c @ ('-' | '+' | ' ')) => (c.to_string(), s[1..].to_string()),
            _ => (String::new(), s),
        };
        return sign + &"0".repeat(fill) + &digits;
    }
    " ".repeat(fill) + &s
}

fn signed(s: String, negative: bool, spec: Spec) -> String {
    if negative {
        format!("-{s}")
    } else if spec.plus {
        format!("+{s}")
    } else if spec.space {
        format!(" {s}")
    } else {
        s
    }
}

fn format_int(i: i64, verb: char, spec: Spec) -> String {
    let negative = i < 0;
    let u = i.unsigned_abs();
    let mut digits = match verb {
        'd' | 'v' => u.to_string(),
        'b' => format!("{u:b}"),
        'o' | 'O' => format!("{u:o}"),
        'x' => format!("{u:x}"),
        'X' => format!("{u:X}"),
        _ => unreachable!(),
    };
    if let Some(p) = spec.precision {
        if p == 0 && u == 0 {
            digits.clear();
        }
        while digits.len() < p {
            digits.insert(0, '0');
        }
    }
    let prefix = match verb {
        'O' => "0o",
        'b' if spec.sharp => "0b",
        'o' if spec.sharp => "0",
        'x' if spec.sharp => "0x",
        'X' if spec.sharp => "0X",
        _ => "",
    };
    let s = signed(format!("{prefix}{digits}"), negative, spec);
    pad(
        s,
        Spec {
            zero: spec.zero && spec.precision.is_none(),
            ..spec
        },
        true,
    )
}

fn format_float_verb(f: f64, verb: char, spec: Spec) -> String {
    let negative = f.is_sign_negative() && !f.is_nan();
    let a = f.abs();
    let body = if a.is_infinite() {
        "Inf".to_string()
    } else if a.is_nan() {
        "NaN".to_string()
    } else {
        match verb {
            'f' | 'F' => format!("{:.*}", spec.precision.unwrap_or(6), a),
            'e' | 'E' => {
                let s = exp_format(a, spec.precision.unwrap_or(6));
                if verb == 'E' { s.to_uppercase() } else { s }
            }
            'g' | 'G' | 'v' => {
                let s = match spec.precision {
                    None => shortest_g(a),
                    Some(p) => g_with_precision(a, p.max(1)),
                };
                if verb == 'G' { s.to_uppercase() } else { s }
            }
            _ => unreachable!(),
        }
    };
    let s = signed(body, negative, spec);
    pad(s, spec, !a.is_nan() && !a.is_infinite())
}

/// `%e` with `precision` digits after the point: `1.234560e+03`.
fn exp_format(a: f64, precision: usize) -> String {
    let s = format!("{:.*e}", precision, a);
    let (m, e) = s.split_once('e').expect("an exponent");
    let e: i32 = e.parse().expect("a number");
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

/// `%g` with the shortest digits (Go's `%v` and `%g` of a float64): exponent form below 1e-4
/// and from 1e+06.
fn shortest_g(a: f64) -> String {
    format_float(a, 6)
}

/// `%.Pg`: `p` significant digits, exponent form when the exponent is < -4 or >= p.
fn g_with_precision(a: f64, p: usize) -> String {
    if a == 0.0 {
        return "0".into();
    }
    let s = format!("{:.*e}", p - 1, a);
    let (m, e) = s.split_once('e').expect("an exponent");
    let e: i32 = e.parse().expect("a number");
    if e < -4 || e >= p as i32 {
        let m = trim_zeros(m);
        format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    } else {
        let decimals = (p as i32 - 1 - e).max(0) as usize;
        trim_zeros(&format!("{:.*}", decimals, a)).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn format_one(verb: char, arg: &Value, spec: Spec) -> String {
    match verb {
        'T' => pad(arg.type_name(), spec, false),
        'v' => match arg {
            Value::Int(i) => format_int(*i, 'd', spec),
            Value::Float(f) => pad(
                signed(shortest_g(f.abs()), f.is_sign_negative() && *f != 0.0, spec),
                spec,
                true,
            ),
            Value::String(s) if spec.sharp => pad(go_quote(s), spec, false),
            other => pad(other.to_go_string(), spec, false),
        },
        's' => match arg {
            Value::String(s) => pad(truncate(s, spec.precision), spec, false),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Nil => bad(verb, arg),
            other => pad(truncate(&other.to_go_string(), spec.precision), spec, false),
        },
        'q' => match arg {
            Value::String(s) => pad(
                if spec.sharp && !s.contains('`') {
                    format!("`{s}`")
                } else {
                    go_quote(s)
                },
                spec,
                false,
            ),
            Value::Int(i) => match char::from_u32(*i as u32) {
                Some(c) => pad(format!("'{}'", c.escape_default()), spec, false),
                None => bad(verb, arg),
            },
            other => bad(verb, other),
        },
        'd' | 'b' | 'o' | 'O' | 'x' | 'X' => match arg {
            Value::Int(i) => format_int(*i, verb, spec),
            Value::String(s) if matches!(verb, 'x' | 'X') => {
                let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
                pad(
                    if verb == 'X' { hex.to_uppercase() } else { hex },
                    spec,
                    false,
                )
            }
            Value::Float(f) if verb == 'x' || verb == 'X' || verb == 'b' => {
                bad(verb, &Value::Float(*f))
            }
            other => bad(verb, other),
        },
        'c' => match arg {
            Value::Int(i) => pad(
                char::from_u32(*i as u32).unwrap_or('\u{FFFD}').to_string(),
                spec,
                false,
            ),
            other => bad(verb, other),
        },
        'U' => match arg {
            Value::Int(i) => pad(format!("U+{:04X}", i), spec, false),
            other => bad(verb, other),
        },
        'e' | 'E' | 'f' | 'F' | 'g' | 'G' => match arg {
            Value::Float(f) => format_float_verb(*f, verb, spec),
            other => bad(verb, other),
        },
        't' => match arg {
            Value::Bool(b) => pad(b.to_string(), spec, false),
            other => bad(verb, other),
        },
        _ => format!("%!{verb}({}={})", arg.type_name(), arg.to_go_string()),
    }
}

fn truncate(s: &str, precision: Option<usize>) -> String {
    match precision {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(format: &str, args: &[Value]) -> String {
        sprintf(format, args)
    }

    #[test]
    fn verbs_as_go_prints_them() {
        // Each expectation is what Go's fmt.Sprintf gives.
        assert_eq!(f("%s-%d", &["a".into(), Value::Int(3)]), "a-3");
        assert_eq!(
            f(
                "%5d|%-5d|%05d",
                &[Value::Int(42), Value::Int(42), Value::Int(-42)]
            ),
            "   42|42   |-0042"
        );
        assert_eq!(
            f(
                "%x %X %o %b %#x",
                &[
                    Value::Int(255),
                    Value::Int(255),
                    Value::Int(8),
                    Value::Int(5),
                    Value::Int(255)
                ]
            ),
            "ff FF 10 101 0xff"
        );
        assert_eq!(f("%q", &["a\"b".into()]), r#""a\"b""#);
        assert_eq!(f("%v %v", &[Value::Float(1.5), Value::Float(3.0)]), "1.5 3");
        assert_eq!(
            f(
                "%.2f %6.1f %e",
                &[
                    Value::Float(2.5),
                    Value::Float(2.0),
                    Value::Float(1234.5678)
                ]
            ),
            "2.50    2.0 1.234568e+03"
        );
        assert_eq!(
            f("%g %g", &[Value::Float(100000.0), Value::Float(0.000012)]),
            "100000 1.2e-05"
        );
        assert_eq!(f("%t %v", &[Value::Bool(true), Value::Nil]), "true <nil>");
        assert_eq!(
            f(
                "%.3s|%8s|%-8s|",
                &["abcdef".into(), "ab".into(), "ab".into()]
            ),
            "abc|      ab|ab      |"
        );
        assert_eq!(
            f("%c %U", &[Value::Int(65), Value::Int(0x1F600)]),
            "A U+1F600"
        );
        assert_eq!(f("100%%", &[]), "100%");
        assert_eq!(
            f("%v", &[Value::list([Value::Int(1), "a".into()])]),
            "[1 a]"
        );
    }

    /// Found by fuzzing (fuzz/ target `gotmpl`): a width of 777…7 asked for a string of that
    /// many spaces. Go refuses widths and precisions above a million.
    #[test]
    fn widths_and_precisions_are_bounded_as_in_go() {
        assert_eq!(
            f("%777777777777777777777v", &[Value::Int(1)]),
            "%!(NOVERB)%!(EXTRA int=1)"
        );
        assert_eq!(
            f("%*d", &[Value::Int(10_000_000), Value::Int(1)]),
            "%!(BADWIDTH)1"
        );
        assert_eq!(
            f("%.*f", &[Value::Int(2_000_000), Value::Float(1.5)]),
            "%!(BADPREC)1.500000"
        );
        assert_eq!(f("%6d|", &[Value::Int(1)]), "     1|");
    }

    #[test]
    fn mistakes_print_as_go_prints_them() {
        assert_eq!(f("%d", &["abc".into()]), "%!d(string=abc)");
        assert_eq!(f("%s %s", &["a".into()]), "a %!s(MISSING)");
        assert_eq!(f("%s", &["a".into(), Value::Int(1)]), "a%!(EXTRA int=1)");
        assert_eq!(f("%s", &[Value::Int(3)]), "%!s(int=3)");
        assert_eq!(f("%d", &[Value::Float(2.0)]), "%!d(float64=2)");
    }
}
