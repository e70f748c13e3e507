//! What Dray reads in an expression's text before expr-lang does: the functions it calls (for
//! apply-time checks), method calls on Kargo's typed values, and map literals.
//!
//! expr-lang 2.1 reads a map literal's values as constants: `{"a": -1}` and `{"a": {"b": 1}}`
//! panic inside it, and `{"a": x ? 1 : 2}` silently yields the first literal. Every map literal
//! is therefore rewritten into a call, `{a: x, "b": y}` into `__map("a", (x), "b", (y))`, which
//! the environment answers with the map of evaluated values.
//!
//! expr-lang (the crate) dispatches methods only to its own date and duration values, and keeps
//! its syntax tree private. Kargo's `semverParse(v)` returns a Go value with methods
//! (`semverParse(v).IncMinor().String()`), so a call of one of those methods is rewritten, on
//! tokens, into a function call the environment answers: `R.IncMinor()` becomes
//! `__method(R, 'IncMinor', false)`. Strings and comments are tokens of their own, so nothing
//! inside them is touched.

/// The methods of Kargo's semantic version values (Masterminds' `*semver.Version`).
pub const SEMVER_METHODS: [&str; 16] = [
    "Major",
    "Minor",
    "Patch",
    "Prerelease",
    "Metadata",
    "Original",
    "String",
    "IncMajor",
    "IncMinor",
    "IncPatch",
    "SetPrerelease",
    "SetMetadata",
    "LessThan",
    "GreaterThan",
    "Equal",
    "Compare",
];

/// The function method calls are rewritten into.
pub const METHOD_FUNCTION: &str = "__method";
/// The function map literals are rewritten into.
pub const MAP_FUNCTION: &str = "__map";

/// Words of the language that look like identifiers.
const KEYWORDS: [&str; 14] = [
    "not",
    "in",
    "and",
    "or",
    "contains",
    "matches",
    "startsWith",
    "endsWith",
    "let",
    "if",
    "else",
    "true",
    "false",
    "nil",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Ident,
    Literal,
    Punct,
}

#[derive(Debug, Clone, Copy)]
struct Token<'s> {
    class: Class,
    text: &'s str,
    start: usize,
    end: usize,
}

impl Token<'_> {
    fn is(&self, punct: &str) -> bool {
        self.class == Class::Punct && self.text == punct
    }

    fn name(&self) -> Option<&str> {
        (self.class == Class::Ident && !KEYWORDS.contains(&self.text)).then_some(self.text)
    }
}

/// Adds [`MAP_FUNCTION`] to `env`: the map of its (key, value) arguments, in order. Every
/// environment that evaluates code rewritten by [`rewrite_maps`] needs it.
pub fn add_map_function(env: &mut expr::Environment) {
    env.add_function(MAP_FUNCTION, |c| {
        let mut map = indexmap::IndexMap::new();
        for pair in c.args.chunks(2) {
            let key = match pair.first() {
                Some(expr::Value::String(k)) => k.clone(),
                other => return Err(format!("a map key must be a string, not {other:?}").into()),
            };
            map.insert(key, pair.get(1).cloned().unwrap_or(expr::Value::Nil));
        }
        Ok(expr::Value::Map(map))
    });
}

/// The tokens of `code`; an unterminated string or comment is an error.
fn tokens(code: &str) -> Result<Vec<Token<'_>>, String> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let class = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i = code[i..].find('\n').map_or(bytes.len(), |n| i + n);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = code[i + 2..]
                    .find("*/")
                    .ok_or_else(|| format!("a comment at byte {i} is not closed"))?;
                i += end + 4;
                continue;
            }
            b'\'' | b'"' | b'`' => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(format!("a string at byte {start} is not closed")),
                        Some(b'\\') if c != b'`' => i += 2,
                        Some(&b) if b == c => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                Class::Literal
            }
            b'0'..=b'9' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'_'
                        || (bytes[i] == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)))
                {
                    i += 1;
                }
                Class::Literal
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'$' | b'#' => {
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                Class::Ident
            }
            b'?' if matches!(bytes.get(i + 1), Some(b'.' | b'?')) => {
                i += 2;
                Class::Punct
            }
            _ => {
                i += code[i..].chars().next().map_or(1, char::len_utf8);
                Class::Punct
            }
        };
        out.push(Token {
            class,
            text: &code[start..i],
            start,
            end: i,
        });
    }
    Ok(out)
}

/// The index of the bracket that `close` (at `at`) closes.
fn opening(tokens: &[Token], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    for i in (0..=at).rev() {
        match tokens[i].text {
            ")" | "]" | "}" if tokens[i].class == Class::Punct => depth += 1,
            "(" | "[" | "{" if tokens[i].class == Class::Punct => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The index of the bracket that closes the one at `at`.
fn closing(tokens: &[Token], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(at) {
        match t.text {
            "(" | "[" | "{" if t.class == Class::Punct => depth += 1,
            ")" | "]" | "}" if t.class == Class::Punct => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Where the operand that ends at token `end` begins: a name, literal or bracketed group, with
/// the member accesses, indexes and calls that follow it (`a.b[0].c(1)`).
fn operand_start(tokens: &[Token], end: usize) -> Option<usize> {
    let mut k = end;
    loop {
        let t = &tokens[k];
        let start = if t.class == Class::Punct && matches!(t.text, ")" | "]" | "}") {
            let open = opening(tokens, k)?;
            let before = open.checked_sub(1).map(|b| &tokens[b]);
            match before {
                // A call `f(...)` or an index `a[...]`, `f()[...]`: part of what precedes.
                Some(b)
                    if tokens[open].text != "{"
                        && (b.name().is_some()
                            || b.is(")")
                            || b.is("]")
                            || (b.class == Class::Literal && tokens[open].text == "[")) =>
                {
                    k = open - 1;
                    continue;
                }
                // `a?.[i]`
                Some(b) if b.is("?.") && tokens[open].text == "[" && open >= 2 => {
                    k = open - 2;
                    continue;
                }
                _ => open,
            }
        } else if t.name().is_some() || t.class == Class::Literal {
            k
        } else {
            return None;
        };
        match start.checked_sub(1).map(|b| &tokens[b]) {
            Some(b) if (b.is(".") || b.is("?.")) && start >= 2 => k = start - 2,
            _ => return Some(start),
        }
    }
}

/// Whether the `{` at `at` opens a map literal: `{}`, or `{KEY:` with a name or string as KEY
/// (a predicate `{# > 1}` or a block `{ x }` never has a key and a colon first).
fn opens_map(tokens: &[Token], at: usize) -> bool {
    if !tokens[at].is("{") {
        return false;
    }
    match (tokens.get(at + 1), tokens.get(at + 2)) {
        (Some(close), _) if close.is("}") => true,
        (Some(key), Some(colon)) => {
            let named = key.class == Class::Ident
                || (key.class == Class::Literal && matches!(key.text.as_bytes()[0], b'"' | b'\''));
            named && colon.is(":")
        }
        _ => false,
    }
}

/// `code` with every map literal rewritten into a call of [`MAP_FUNCTION`] (see the module's
/// documentation), in one pass over its tokens. Code without map literals comes back as it is.
pub fn rewrite_maps(code: &str) -> Result<std::borrow::Cow<'_, str>, String> {
    let toks = tokens(code)?;
    if !(0..toks.len()).any(|i| opens_map(&toks, i)) {
        return Ok(std::borrow::Cow::Borrowed(code));
    }
    /// Where a map literal is: before an entry's key, between key and colon, in a value.
    #[derive(PartialEq)]
    enum At {
        Key,
        Colon,
        Value,
    }
    /// An open bracket; a map's says where in the map the tokens are and whether an entry came.
    struct Open {
        map: Option<At>,
        entries: usize,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut out = String::with_capacity(code.len() * 2);
    let mut copied = 0;
    for (i, t) in toks.iter().enumerate() {
        // What lies between tokens (spaces, comments) stays as written.
        out.push_str(&code[copied..t.start]);
        copied = t.end;
        let top = stack.last_mut();
        match top {
            _ if opens_map(&toks, i) => {
                out.push_str(MAP_FUNCTION);
                out.push('(');
                stack.push(Open {
                    map: Some(At::Key),
                    entries: 0,
                });
            }
            Some(open) if open.map.is_some() && open.map != Some(At::Colon) && t.is("}") => {
                out.push_str(if open.map == Some(At::Value) {
                    "))"
                } else {
                    ")"
                });
                stack.pop();
            }
            Some(open) if open.map == Some(At::Key) => {
                let named = t.class == Class::Ident
                    || (t.class == Class::Literal && matches!(t.text.as_bytes()[0], b'"' | b'\''));
                if !named {
                    return Err(format!("a map entry at byte {} is not KEY: VALUE", t.start));
                }
                if open.entries > 0 {
                    out.push_str(", ");
                }
                open.entries += 1;
                open.map = Some(At::Colon);
                match t.class {
                    Class::Ident => out.push_str(&format!("\"{}\"", t.text)),
                    _ => out.push_str(t.text),
                }
            }
            Some(open) if open.map == Some(At::Colon) => {
                if !t.is(":") {
                    return Err(format!("a map key at byte {} has no ':' after it", t.start));
                }
                out.push_str(", (");
                open.map = Some(At::Value);
            }
            Some(open) if open.map == Some(At::Value) && t.is(",") => {
                out.push(')');
                open.map = Some(At::Key);
            }
            _ => {
                if t.class == Class::Punct && matches!(t.text, "(" | "[" | "{") {
                    stack.push(Open {
                        map: None,
                        entries: 0,
                    });
                } else if t.class == Class::Punct && matches!(t.text, ")" | "]" | "}") {
                    stack.pop();
                }
                out.push_str(t.text);
            }
        }
    }
    out.push_str(&code[copied..]);
    Ok(std::borrow::Cow::Owned(out))
}

/// The most method calls one expression may make: each is rewritten with a pass over the text.
const MAX_METHOD_CALLS: usize = 256;

/// `code` with every call of one of [`SEMVER_METHODS`] on an operand rewritten into a call of
/// [`METHOD_FUNCTION`]: `R.Name(args)` becomes `__method(R, 'Name', false, args)` (`true` for
/// `R?.Name(args)`). Code without such calls comes back as it is.
pub fn rewrite_methods(code: &str) -> Result<std::borrow::Cow<'_, str>, String> {
    let mut current = std::borrow::Cow::Borrowed(code);
    // Every round removes one method call, with a pass over the text: at most
    // MAX_METHOD_CALLS of them.
    for _ in 0..=MAX_METHOD_CALLS {
        let toks = tokens(&current)?;
        let found = (0..toks.len().saturating_sub(2)).find_map(|i| {
            let (dot, name, paren) = (&toks[i], &toks[i + 1], &toks[i + 2]);
            let is_method = (dot.is(".") || dot.is("?."))
                && name.class == Class::Ident
                && SEMVER_METHODS.contains(&name.text)
                && paren.is("(");
            if !is_method || i == 0 {
                return None;
            }
            let start = operand_start(&toks, i - 1)?;
            let close = closing(&toks, i + 2)?;
            Some((start, i, close))
        });
        let Some((start, dot, close)) = found else {
            return Ok(current);
        };
        let args = current[toks[dot + 2].end..toks[close].start].trim();
        let rewritten = format!(
            "{}{METHOD_FUNCTION}({}, '{}', {}{}{}){}",
            &current[..toks[start].start],
            &current[toks[start].start..toks[dot].start],
            toks[dot + 1].text,
            toks[dot].is("?."),
            if args.is_empty() { "" } else { ", " },
            args,
            &current[toks[close].end..],
        );
        current = std::borrow::Cow::Owned(rewritten);
    }
    Err(format!(
        "an expression may call methods at most {MAX_METHOD_CALLS} times"
    ))
}

/// The functions `code` calls, with their byte offsets: names followed by `(` that are not a
/// member's (`a.f()` is a method).
pub fn called_functions(code: &str) -> Result<Vec<(String, usize)>, String> {
    let toks = tokens(code)?;
    Ok(toks
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let name = t.name()?;
            let called = toks.get(i + 1).is_some_and(|n| n.is("("));
            let member = i > 0 && (toks[i - 1].is(".") || toks[i - 1].is("?."));
            (called && !member).then(|| (name.to_string(), t.start))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(code: &str) -> String {
        rewrite_methods(code).unwrap().into_owned()
    }

    #[test]
    fn a_method_call_becomes_a_function_call_over_its_whole_operand() {
        assert_eq!(
            rewritten("semverParse(vars.v).IncMinor().String()"),
            "__method(__method(semverParse(vars.v), 'IncMinor', false), 'String', false)"
        );
        assert_eq!(
            rewritten("1 + semverParse(a.b[0]).Major() > 2"),
            "1 + __method(semverParse(a.b[0]), 'Major', false) > 2"
        );
        assert_eq!(
            rewritten("v?.LessThan(semverParse('2.0.0'))"),
            "__method(v, 'LessThan', true, semverParse('2.0.0'))"
        );
        assert_eq!(
            rewritten("(x ?? y).Patch() == 3"),
            "__method((x ?? y), 'Patch', false) == 3"
        );
        assert_eq!(
            rewritten("not outputs['a-b'].v.Equal(w)"),
            "not __method(outputs['a-b'].v, 'Equal', false, w)"
        );
    }

    #[test]
    fn other_methods_strings_and_fields_are_left_alone() {
        for code in [
            "commitDate.After(date('2025-01-01'))",
            "'x.Major()' + \"y.String()\"",
            "semverParse(v).Major",
            "vars.Major == 1 // .Major()",
            "filter(list, {.Major > 1})",
        ] {
            assert_eq!(rewritten(code), code);
        }
    }

    #[test]
    fn a_method_without_an_operand_or_an_unclosed_string_is_not_rewritten() {
        assert_eq!(rewritten(".Major()"), ".Major()");
        assert!(rewrite_methods("'open").is_err());
        assert!(rewrite_methods("/* open").is_err());
    }

    #[test]
    fn map_literals_become_calls_with_their_values_in_parentheses() {
        let maps = |code: &str| rewrite_maps(code).unwrap().into_owned();
        assert_eq!(
            maps(r#"{"a": {b: -1, 'c': x ? 1 : 2}, d: [1, {e: f(1, 2)}][0],}"#),
            r#"__map("a", ( __map("b", ( -1) , 'c', ( x ? 1 : 2))) , "d", ( [1, __map("e", ( f(1, 2)))][0]))"#
        );
        assert_eq!(maps("asYAML({})"), "asYAML(__map())");
        for code in [
            "filter(xs, {# > 1})",
            "if a { b } else { c }",
            "m['{a: 1}']",
        ] {
            assert_eq!(maps(code), code);
        }
        assert!(rewrite_maps("{a: 1, b}").is_err());
    }

    #[test]
    fn called_functions_are_the_names_before_parentheses_that_are_not_members() {
        let found: Vec<String> =
            called_functions("asYAML(x) + a.trim() + len(imageFrom('r').Tag) | upper() + 'f(x)'")
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
        assert_eq!(found, ["asYAML", "len", "imageFrom", "upper"]);
        assert!(
            called_functions("not (a in b) and if x { y } else { z }")
                .unwrap()
                .is_empty()
        );
    }
}
