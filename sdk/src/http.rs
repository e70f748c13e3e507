//! Outbound HTTP from inside the sandbox (feature `http`), through `wasi:http`: what the `http`
//! step and the `web`/`prometheus` verifiers send. The request reaches only hosts the operator
//! allowed; a denied host comes back as [`HttpError::Denied`].
//!
//! ```no_run
//! let response = dray_sdk::http::send(&dray_sdk::http::Request::get("http://localhost:8080/health")).unwrap();
//! assert_eq!(response.status, 200);
//! ```

use std::time::Duration;

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasi::io::streams::StreamError;

/// The most of a response body read (Kargo's limit for its `http` step).
pub const MAX_BODY: usize = 2 << 20;

/// One request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD`.
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// For connecting, for the first byte and between bytes.
    pub timeout: Duration,
}

impl Request {
    /// A GET of `url` with a 10 s timeout.
    pub fn get(url: &str) -> Request {
        Request {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// As sent (lowercase names), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a request brought no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The request itself is wrong (method, URL, header); retrying will not help.
    Invalid(String),
    /// The operator did not allow the host.
    Denied(String),
    /// The response body is larger than [`MAX_BODY`].
    TooLarge(String),
    /// A timeout or a network failure; it may work next time.
    Transient(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Invalid(m)
            | HttpError::Denied(m)
            | HttpError::TooLarge(m)
            | HttpError::Transient(m) => f.write_str(m),
        }
    }
}

fn method(name: &str) -> Result<Method, HttpError> {
    Ok(match name.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        other => {
            return Err(HttpError::Invalid(format!(
                "method: {other} is not one of GET, POST, PUT, PATCH, DELETE, HEAD"
            )));
        }
    })
}

fn send_error(url: &url::Url, code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied(format!(
            "{url}: the host is not in the allowed hosts; an operator can allow it with [steps] allow-hosts in the daemon config"
        )),
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::HttpResponseTimeout => {
            HttpError::Transient(format!("{url}: timed out ({code:?})"))
        }
        other => HttpError::Transient(format!("{url}: the request failed: {other:?}")),
    }
}

/// Sends `request` and reads the whole response (at most [`MAX_BODY`]).
pub fn send(request: &Request) -> Result<Response, HttpError> {
    let incoming = fetch(request)?;
    let mut body = Vec::new();
    incoming.read(|chunk| {
        body.extend_from_slice(chunk);
        if body.len() > MAX_BODY {
            return Err(HttpError::TooLarge(format!(
                "{}: the response body is larger than {} MiB",
                incoming.url,
                MAX_BODY >> 20
            )));
        }
        Ok(())
    })?;
    Ok(Response {
        status: incoming.status,
        headers: incoming.headers.clone(),
        body,
    })
}

/// A response whose status and headers have come and whose body has not been read yet.
pub struct Incoming {
    pub status: u16,
    /// As sent (lowercase names), in order.
    pub headers: Vec<(String, String)>,
    url: url::Url,
    // Dropped in this order: a stream before its body, a body before its response.
    stream: wasi::io::streams::InputStream,
    _body: wasi::http::types::IncomingBody,
    _response: wasi::http::types::IncomingResponse,
}

impl Incoming {
    /// Hands the body to `each`, chunk by chunk, until it ends or `each` refuses.
    pub fn read(
        &self,
        mut each: impl FnMut(&[u8]) -> Result<(), HttpError>,
    ) -> Result<(), HttpError> {
        loop {
            match self.stream.blocking_read(64 * 1024) {
                Ok(chunk) => each(&chunk)?,
                Err(StreamError::Closed) => return Ok(()),
                Err(e) => {
                    return Err(HttpError::Transient(format!(
                        "{}: reading the response: {e:?}",
                        self.url
                    )));
                }
            }
        }
    }
}

/// Sends `request` and returns when the response's status and headers have come: the body is
/// read as it arrives ([`Incoming::read`]), so a large download need not fit in memory.
pub fn fetch(request: &Request) -> Result<Incoming, HttpError> {
    let url = url::Url::parse(&request.url)
        .map_err(|e| HttpError::Invalid(format!("url: {:?}: {e}", request.url)))?;
    let invalid =
        |what: &str| HttpError::Invalid(format!("{what} is not valid in an HTTP request"));
    let mut entries: Vec<(String, Vec<u8>)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    // A known length, not chunked encoding: some servers read no body without one.
    if let Some(bytes) = &request.body
        && !entries
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        entries.push((
            "content-length".into(),
            bytes.len().to_string().into_bytes(),
        ));
    }
    let fields =
        Fields::from_list(&entries).map_err(|e| HttpError::Invalid(format!("headers: {e:?}")))?;
    let outgoing_request = OutgoingRequest::new(fields);
    outgoing_request
        .set_method(&method(&request.method)?)
        .map_err(|()| invalid("the method"))?;
    let scheme = match url.scheme() {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => {
            return Err(HttpError::Invalid(format!(
                "url: the scheme {other} is not http or https"
            )));
        }
    };
    outgoing_request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("the scheme"))?;
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    outgoing_request
        .set_authority(Some(&authority))
        .map_err(|()| invalid("the host"))?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    outgoing_request
        .set_path_with_query(Some(&path))
        .map_err(|()| invalid("the path"))?;
    let options = RequestOptions::new();
    let nanos = request.timeout.as_nanos() as u64;
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));

    // Send first, then stream the body: the host reads it as it goes, so a large body cannot
    // fill a buffer nobody drains.
    let outgoing = outgoing_request.body().map_err(|()| invalid("a body"))?;
    let pending = outgoing_handler::handle(outgoing_request, Some(options))
        .map_err(|code| send_error(&url, code))?;
    if let Some(bytes) = &request.body {
        let stream = outgoing.write().map_err(|()| invalid("a body"))?;
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| HttpError::Transient(format!("{url}: sending the body: {e:?}")))?;
        }
        drop(stream);
    }
    OutgoingBody::finish(outgoing, None).map_err(|code| send_error(&url, code))?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(send_error(&url, code)),
        other => {
            return Err(HttpError::Transient(format!(
                "{url}: no response ({other:?})"
            )));
        }
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let no_body = || HttpError::Transient(format!("{url}: no response body"));
    let body = response.consume().map_err(|()| no_body())?;
    let stream = body.stream().map_err(|()| no_body())?;
    Ok(Incoming {
        status,
        headers,
        url,
        stream,
        _body: body,
        _response: response,
    })
}
