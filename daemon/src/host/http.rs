//! Outbound HTTP (`wasi:http`), only to the hosts a step is allowed to reach.
//!
//! The allowlist grammar (wasmCloud's, which Spin and Extism resemble), matched without regard to
//! case; an empty list denies everything:
//!
//! | Pattern | Allows |
//! |---|---|
//! | `*` | any host |
//! | `*.example.com` | any subdomain of example.com (not example.com itself) |
//! | `api.example.com` | that host, any scheme and port |
//! | `api.example.com:8443` | that host on that port |
//! | `https://api.example.com` | that host over https (any port) |
//!
//! A denied request fails in the guest as `HTTP request denied` and leaves a line in the step's
//! log naming the URL, so the operator sees what to allow.

use std::future::Future;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::runtime::log::{Source, StepLog};

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    /// `.example.com`: a proper subdomain.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    scheme: Option<String>,
    host: HostMatch,
    port: Option<u16>,
}

/// The hosts one step may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    patterns: Vec<HostPattern>,
}

impl AllowList {
    /// Parses patterns; an error names the pattern and the accepted forms.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<AllowList, String> {
        let mut parsed = Vec::new();
        for raw in patterns {
            let raw = raw.as_ref();
            parsed.push(parse_pattern(raw).ok_or_else(|| {
                format!("{raw:?} is not a host pattern: use *, *.example.com, host, host:port or https://host[:port]")
            })?);
        }
        Ok(AllowList { patterns: parsed })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a request to `scheme://host:port` may go out.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let (scheme, host) = (scheme.to_ascii_lowercase(), host.to_ascii_lowercase());
        self.patterns.iter().any(|p| {
            p.scheme.as_ref().is_none_or(|s| *s == scheme)
                && p.port.is_none_or(|want| want == port)
                && match &p.host {
                    HostMatch::Any => true,
                    HostMatch::Exact(h) => *h == host,
                    HostMatch::Suffix(s) => host.ends_with(s.as_str()) && host.len() > s.len(),
                }
        })
    }
}

fn parse_pattern(raw: &str) -> Option<HostPattern> {
    let lower = raw.trim().to_ascii_lowercase();
    if lower == "*" {
        return Some(HostPattern {
            scheme: None,
            host: HostMatch::Any,
            port: None,
        });
    }
    let (scheme, rest) = match lower.split_once("://") {
        Some((s, r)) if s == "http" || s == "https" => (Some(s.to_string()), r.to_string()),
        Some(_) => return None,
        None => (None, lower.clone()),
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
            (h.to_string(), Some(p.parse::<u16>().ok()?))
        }
        _ => (rest, None),
    };
    let host = if host == "*" {
        HostMatch::Any
    } else if let Some(suffix) = host.strip_prefix("*.") {
        if suffix.is_empty() || suffix.contains('*') {
            return None;
        }
        HostMatch::Suffix(format!(".{suffix}"))
    } else if host.is_empty() || host.contains('*') {
        return None;
    } else {
        HostMatch::Exact(host)
    };
    Some(HostPattern { scheme, host, port })
}

/// The per-call hooks: the allowlist, and the log to note denials in.
pub struct Egress {
    pub allow: AllowList,
    pub log: StepLog,
}

type Io = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Io,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, Io), HttpError>> + Send> {
        drop(fut);
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_string();
        let host = uri.host().unwrap_or("").to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        if !self.allow.allows(&scheme, &host, port) {
            self.log.push(
                Source::Host,
                "warn",
                format!("denied an HTTP request to {scheme}://{host}:{port}: not in the step's allowed hosts"),
                Vec::new(),
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let log = self.log.clone();
        Box::new(async move {
            match wasmtime_wasi_http::default_send_request(request, options).await {
                Ok((response, io)) => Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Io)),
                Err(e) => {
                    let message = format!("HTTP request to {scheme}://{host}:{port} failed: {e}");
                    log.push(Source::Host, "warn", message, Vec::new());
                    Err(e)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(patterns: &[&str], scheme: &str, host: &str, port: u16) -> bool {
        AllowList::parse(patterns)
            .expect("valid patterns")
            .allows(scheme, host, port)
    }

    #[test]
    fn an_empty_list_denies_everything() {
        assert!(!allows(&[], "https", "example.com", 443));
    }

    #[test]
    fn patterns_match_as_documented() {
        assert!(allows(&["*"], "http", "anything.test", 8080));
        assert!(allows(&["*.example.com"], "https", "api.example.com", 443));
        assert!(!allows(&["*.example.com"], "https", "example.com", 443));
        assert!(!allows(&["*.example.com"], "https", "evilexample.com", 443));
        assert!(allows(
            &["API.Example.com"],
            "http",
            "api.example.com",
            1234
        ));
        assert!(allows(
            &["api.example.com:8443"],
            "https",
            "api.example.com",
            8443
        ));
        assert!(!allows(
            &["api.example.com:8443"],
            "https",
            "api.example.com",
            443
        ));
        assert!(allows(
            &["https://api.example.com"],
            "https",
            "api.example.com",
            9000
        ));
        assert!(!allows(
            &["https://api.example.com"],
            "http",
            "api.example.com",
            80
        ));
        assert!(allows(&["127.0.0.1:5000"], "http", "127.0.0.1", 5000));
        assert!(!allows(&["127.0.0.1:5000"], "http", "127.0.0.1", 5001));
    }

    #[test]
    fn refuses_patterns_with_paths_or_odd_schemes() {
        for bad in [
            "https://x.com/path",
            "ftp://x.com",
            "",
            "x.com:notaport",
            "*.",
            "a*b.com",
            "user@x.com",
        ] {
            assert!(AllowList::parse(&[bad]).is_err(), "{bad:?}");
        }
    }
}
