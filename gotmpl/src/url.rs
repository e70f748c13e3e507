//! URLs as Go's `net/url` parses and prints them, for Sprig's `urlParse` and `urlJoin`: the
//! same split into scheme, user, host, path, query and fragment, the same percent-decoding of
//! the path, and the same escaping when joined again.

/// A parsed URL, with Go's fields (path and fragment decoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub opaque: String,
    /// `user` or `user:password`, as given (still escaped), if there was an `@`.
    pub user: Option<String>,
    pub host: String,
    pub path: String,
    pub raw_query: String,
    pub force_query: bool,
    pub fragment: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Path,
    Host,
    UserPassword,
    Fragment,
}

fn should_escape(c: u8, mode: Mode) -> bool {
    if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') {
        return false;
    }
    if mode == Mode::Host
        && matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
                | b'<'
                | b'>'
                | b'"'
        )
    {
        return false;
    }
    if matches!(
        c,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@'
    ) {
        return match mode {
            Mode::Path => c == b'?',
            Mode::UserPassword => matches!(c, b'@' | b'/' | b'?' | b':'),
            Mode::Fragment => false,
            Mode::Host => true,
        };
    }
    if mode == Mode::Fragment && matches!(c, b'!' | b'(' | b')' | b'*') {
        return false;
    }
    true
}

fn escape(s: &str, mode: Mode) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if should_escape(c, mode) {
            out.push_str(&format!("%{c:02X}"));
        } else {
            out.push(c as char);
        }
    }
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                .ok_or_else(|| format!("invalid URL escape {:?}", &s[i..(i + 3).min(s.len())]))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The scheme and the rest, as Go's `getScheme`.
fn scheme(raw: &str) -> Result<(String, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".into()),
            b':' => return Ok((raw[..i].to_ascii_lowercase(), &raw[i + 1..])),
            _ => return Ok((String::new(), raw)),
        }
    }
    Ok((String::new(), raw))
}

impl Url {
    /// `url.Parse`.
    pub fn parse(raw: &str) -> Result<Url, String> {
        let fail = |e: String| format!("parse {raw:?}: {e}");
        let (rest, fragment) = match raw.split_once('#') {
            Some((r, f)) => (r, unescape(f).map_err(fail)?),
            None => (raw, String::new()),
        };
        if rest.bytes().any(|c| c < 0x20 || c == 0x7f) {
            return Err(fail("net/url: invalid control character in URL".into()));
        }
        let mut url = Url {
            fragment,
            ..Url::default()
        };
        if rest.is_empty() {
            return Ok(url);
        }
        let (scheme, mut rest) = scheme(rest).map_err(fail)?;
        url.scheme = scheme;
        if rest.ends_with('?') && rest.matches('?').count() == 1 {
            url.force_query = true;
            rest = &rest[..rest.len() - 1];
        } else if let Some((r, q)) = rest.split_once('?') {
            url.raw_query = q.to_string();
            rest = r;
        }
        if !rest.starts_with('/') {
            if !url.scheme.is_empty() {
                url.opaque = rest.to_string();
                return Ok(url);
            }
            let first = rest.split('/').next().unwrap_or("");
            if first.contains(':') {
                return Err(fail(
                    "first path segment in URL cannot contain colon".into(),
                ));
            }
        }
        if (!url.scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
            let after = &rest[2..];
            let end = after.find('/').unwrap_or(after.len());
            let authority = &after[..end];
            rest = &after[end..];
            let host = match authority.rfind('@') {
                Some(i) => {
                    let user = &authority[..i];
                    if user
                        .bytes()
                        .any(|c| !(c.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&c)))
                    {
                        return Err(fail("net/url: invalid userinfo".into()));
                    }
                    url.user = Some(user.to_string());
                    &authority[i + 1..]
                }
                None => authority,
            };
            url.host = unescape(host).map_err(fail)?;
        }
        url.path = unescape(rest).map_err(fail)?;
        Ok(url)
    }

    /// The host without its port (and an IPv6 address without brackets).
    pub fn hostname(&self) -> String {
        let host = self.host.as_str();
        if let Some(inner) = host.strip_prefix('[') {
            return inner.split(']').next().unwrap_or("").to_string();
        }
        match host.rfind(':') {
            Some(i) => host[..i].to_string(),
            None => host.to_string(),
        }
    }

    /// The user info as Go's `Userinfo.String` prints it (each part escaped again).
    pub fn userinfo(&self) -> String {
        let Some(user) = &self.user else {
            return String::new();
        };
        let unescaped = |s: &str| unescape(s).unwrap_or_else(|_| s.to_string());
        match user.split_once(':') {
            Some((name, password)) => format!(
                "{}:{}",
                escape(&unescaped(name), Mode::UserPassword),
                escape(&unescaped(password), Mode::UserPassword)
            ),
            None => escape(&unescaped(user), Mode::UserPassword),
        }
    }

    /// `url.URL.String()`.
    pub fn to_go_string(&self) -> String {
        let mut out = String::new();
        if !self.scheme.is_empty() {
            out.push_str(&self.scheme);
            out.push(':');
        }
        if !self.opaque.is_empty() {
            out.push_str(&self.opaque);
        } else {
            if !self.scheme.is_empty() || !self.host.is_empty() || self.user.is_some() {
                if !self.host.is_empty() || !self.path.is_empty() || self.user.is_some() {
                    out.push_str("//");
                }
                if self.user.is_some() {
                    out.push_str(&self.userinfo());
                    out.push('@');
                }
                out.push_str(&escape(&self.host, Mode::Host));
            }
            let path = escape(&self.path, Mode::Path);
            if !path.is_empty() && !path.starts_with('/') && !self.host.is_empty() {
                out.push('/');
            }
            if out.is_empty()
                && let Some(i) = path.find(':')
                && !path[..i].contains('/')
            {
                out.push_str("./");
            }
            out.push_str(&path);
        }
        if self.force_query || !self.raw_query.is_empty() {
            out.push('?');
            out.push_str(&self.raw_query);
        }
        if !self.fragment.is_empty() {
            out.push('#');
            out.push_str(&escape(&self.fragment, Mode::Fragment));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_go() {
        let u =
            Url::parse("https://user:p%40ss@Example.com:8443/a%20b/c?x=1&y=2#frag%21").expect("ok");
        assert_eq!(u.scheme, "https");
        assert_eq!(u.host, "Example.com:8443");
        assert_eq!(u.hostname(), "Example.com");
        assert_eq!(u.path, "/a b/c");
        assert_eq!(u.raw_query, "x=1&y=2");
        assert_eq!(u.fragment, "frag!");
        assert_eq!(u.userinfo(), "user:p%40ss");
        assert_eq!(
            u.to_go_string(),
            "https://user:p%40ss@Example.com:8443/a%20b/c?x=1&y=2#frag!"
        );
        let m = Url::parse("mailto:ops@example.com").expect("ok");
        assert_eq!(
            (m.scheme.as_str(), m.opaque.as_str()),
            ("mailto", "ops@example.com")
        );
        assert_eq!(m.to_go_string(), "mailto:ops@example.com");
        let v6 = Url::parse("http://[::1]:80/").expect("ok");
        assert_eq!(v6.hostname(), "::1");
        assert!(Url::parse(":foo").is_err());
        assert!(Url::parse("a:b/c:d").is_ok());
        assert!(Url::parse("ab/c:d").is_ok());
        assert!(Url::parse("c:d/x").is_ok());
        assert!(Url::parse("x/%zz").is_err());
        assert!(Url::parse("http://a\nb").is_err());
    }

    #[test]
    fn joins_as_go() {
        let u = Url {
            scheme: "http".into(),
            host: "example.com".into(),
            path: "path with space".into(),
            raw_query: "q=1".into(),
            ..Url::default()
        };
        assert_eq!(
            u.to_go_string(),
            "http://example.com/path%20with%20space?q=1"
        );
        let relative = Url {
            path: "a:b".into(),
            ..Url::default()
        };
        assert_eq!(relative.to_go_string(), "./a:b");
    }
}
