//! The CLI's HTTP client: where the daemon is, how to authenticate, and what failures mean.

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::admission::Problem;
use crate::service;

/// Exit codes scripts can branch on.
pub mod exit {
    pub const OK: u8 = 0;
    /// The daemon refused the request (invalid manifests, conflict) or failed.
    pub const FAILED: u8 = 1;
    /// Wrong command-line usage (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// The daemon cannot be reached, or the token is missing or wrong.
    pub const UNREACHABLE: u8 = 3;
    /// The named resource does not exist.
    pub const NOT_FOUND: u8 = 4;
}

/// A failed CLI command: what to print and which exit code to use.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
    /// Located problems of an apply, printed one per line.
    pub problems: Vec<Problem>,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            problems: Vec::new(),
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    /// Where requests go: the server's URL, or `http://localhost` over a Unix socket.
    base: String,
    token: String,
    /// The server as the user named it, for messages and saved sign-ins.
    shown: String,
    /// Whether requests carry the saved sign-in's ID token (refreshed as needed).
    signed_in: bool,
}

/// Where to find the token when none is given: the local daemon's data dir.
fn token_for(server: &str, data_dir: Option<PathBuf>) -> Result<String, CliError> {
    let local = server.starts_with("unix:")
        || ["//127.0.0.1", "//localhost", "//[::1]"]
            .iter()
            .any(|h| server.contains(h));
    let dir = data_dir.unwrap_or_else(service::default_data_dir);
    let path = service::token_path(&dir);
    if !local {
        return Err(CliError::new(
            exit::UNREACHABLE,
            format!(
                "no API token for {server}: pass --token or set DRAY_TOKEN (the token is in the daemon's data dir, file 'token')"
            ),
        ));
    }
    std::fs::read_to_string(&path).map(|t| t.trim().to_string()).map_err(|e| {
        CliError::new(
            exit::UNREACHABLE,
            format!(
                "cannot read the API token {}: {e}. Start the daemon with `dray serve` (it creates the token), or pass --token / --data-dir",
                path.display()
            ),
        )
    })
}

impl Client {
    /// A client of `server` authenticated, in this order, by `token` (--token, DRAY_TOKEN), by
    /// the sign-in `dray login` saved for `server`, or by the local daemon's token file.
    pub fn new(
        server: &str,
        token: Option<String>,
        data_dir: Option<PathBuf>,
    ) -> Result<Client, CliError> {
        let signed_in =
            token.is_none() && super::login::saved(server.trim_end_matches('/')).is_some();
        let token = match token {
            Some(t) => t,
            None if signed_in => String::new(),
            None => token_for(server, data_dir)?,
        };
        let mut client = Client::anonymous(server, Some(token))?;
        client.signed_in = signed_in;
        Ok(client)
    }

    /// A client with `token`, or (for `dray login`) none.
    pub fn anonymous(server: &str, token: Option<String>) -> Result<Client, CliError> {
        let server = server.trim_end_matches('/');
        let socket = server
            .strip_prefix("unix:")
            .map(|path| PathBuf::from(path.trim_start_matches("//")));
        if socket.is_none() && !server.starts_with("http://") && !server.starts_with("https://") {
            return Err(CliError::new(
                exit::USAGE,
                format!(
                    "--server {server:?} must start with http://, https:// or unix: (unix:/run/dray/dray.sock)"
                ),
            ));
        }
        let token = token.unwrap_or_default();
        let mut http = crate::tls::client_builder()
            .user_agent(concat!("dray-cli/", env!("CARGO_PKG_VERSION")));
        let base = match &socket {
            Some(path) => {
                http = http.unix_socket(path.as_path());
                "http://localhost".to_string()
            }
            None => server.to_string(),
        };
        // A daemon whose certificate no public authority signed: trust the given CA as well.
        if let Some(file) = std::env::var_os("DRAY_CA_CERT") {
            let pem = std::fs::read(&file).map_err(|e| {
                CliError::new(
                    exit::USAGE,
                    format!(
                        "DRAY_CA_CERT {}: cannot read it: {e}",
                        file.to_string_lossy()
                    ),
                )
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                CliError::new(
                    exit::USAGE,
                    format!(
                        "DRAY_CA_CERT {}: not PEM certificates: {e}",
                        file.to_string_lossy()
                    ),
                )
            })? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|e| {
            CliError::new(exit::FAILED, format!("cannot build the HTTP client: {e}"))
        })?;
        Ok(Client {
            http,
            base,
            token,
            shown: server.to_string(),
            signed_in: false,
        })
    }

    /// The bearer token of the next request.
    async fn bearer(&self) -> String {
        if self.signed_in
            && let Some(token) = super::login::bearer(&self.http, &self.shown).await
        {
            return token;
        }
        self.token.clone()
    }

    /// `dray login` against this client's server.
    pub async fn login(&self) -> Result<(), CliError> {
        super::login::login(&self.http, &self.shown, &self.base).await
    }

    /// Sends a GET and returns the response for streaming (non-2xx answers become errors).
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response, CliError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .bearer_auth(self.bearer().await)
            .send()
            .await
            .map_err(|e| {
                CliError::new(
                    exit::UNREACHABLE,
                    format!(
                        "cannot reach the dray daemon at {}: {}",
                        self.shown,
                        root_cause(&e)
                    ),
                )
            })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let code = match response.status() {
            StatusCode::NOT_FOUND => exit::NOT_FOUND,
            StatusCode::UNAUTHORIZED => exit::UNREACHABLE,
            _ => exit::FAILED,
        };
        let text = response.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let message = json
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| json.to_string(), str::to_string);
        Err(CliError::new(code, message))
    }

    /// Sends a request and returns the JSON answer, or a [`CliError`] saying what went wrong.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(self.bearer().await);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            CliError::new(
                exit::UNREACHABLE,
                format!("cannot reach the dray daemon at {}: {}. Is `dray serve` running? (set --server or DRAY_SERVER)", self.shown, root_cause(&e)),
            )
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| CliError::new(exit::FAILED, format!("reading the answer: {e}")))?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(json);
        }
        let message = json
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| json.to_string(), str::to_string);
        let problems: Vec<Problem> = json
            .get("errors")
            .and_then(|e| serde_json::from_value(e.clone()).ok())
            .unwrap_or_default();
        let code = match status {
            StatusCode::UNAUTHORIZED => exit::UNREACHABLE,
            StatusCode::NOT_FOUND => exit::NOT_FOUND,
            _ => exit::FAILED,
        };
        Err(CliError {
            code,
            message,
            problems,
        })
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
