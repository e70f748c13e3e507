//! `http-download`, as Kargo's: one GET into a file of the work directory, at most
//! [`MAX_DOWNLOAD`] bytes. The body goes to a temporary file beside the target and is renamed
//! into place only when it is whole, so a failed download leaves nothing behind, and an
//! existing file is replaced only with `allowOverwrite`.

use std::io::Write;
use std::path::{Path, PathBuf};

use dray_sdk::http::{HttpError, Request};
use dray_sdk::{StepError, StepResult};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{NameValue, duration, duration_schema, pair_schema, pairs, step_error, url_with};

/// The most one download may write (Kargo's limit).
pub const MAX_DOWNLOAD: u64 = 100 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    url: String,
    out_path: String,
    #[serde(default)]
    allow_overwrite: bool,
    #[serde(default)]
    headers: Vec<NameValue>,
    #[serde(default)]
    query_params: Vec<NameValue>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    #[serde(default)]
    timeout: Option<String>,
}

pub fn schema() -> Value {
    let pair = pair_schema();
    let mut timeout = duration_schema();
    timeout["description"] = json!("For connecting and between bytes (5m by default)");
    json!({
        "type": "object", "additionalProperties": false, "required": ["url", "outPath"],
        "properties": {
            "url": {"type": "string", "minLength": 1, "description": "What to download (the host must be in [steps] allow-hosts)"},
            "outPath": {"type": "string", "minLength": 1, "description": "The file in the work directory to write"},
            "allowOverwrite": {"type": "boolean", "description": "Replace outPath if it exists (else the step fails)"},
            "headers": {"type": "array", "items": pair, "description": "Request headers"},
            "queryParams": {"type": "array", "items": pair, "description": "Query parameters to add to the URL"},
            "insecureSkipTLSVerify": {"type": "boolean", "description": "Refused: the sandbox always verifies TLS"},
            "timeout": timeout
        }
    })
}

/// Where the body goes until it is whole: beside the target, so the rename stays in one
/// directory.
fn partial(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.download"))
}

pub fn run(config: Config) -> Result<StepResult, StepError> {
    if config.insecure_skip_tls_verify {
        return Err(StepError::InvalidConfig(
            "insecureSkipTLSVerify: a sandboxed step always verifies TLS; use http:// for a test server".into(),
        ));
    }
    let out = PathBuf::from(&config.out_path);
    // The sandbox refuses it anyway; this says why.
    let leaves = out.components().any(|c| {
        !matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    if leaves {
        return Err(StepError::InvalidConfig(format!(
            "outPath {:?} leaves the work directory; name a file inside it",
            config.out_path
        )));
    }
    if out.is_dir() {
        return Err(StepError::Terminal(format!(
            "outPath {:?} is a directory; name a file",
            config.out_path
        )));
    }
    if out.exists() && !config.allow_overwrite {
        return Err(StepError::Terminal(format!(
            "outPath {:?} exists; set allowOverwrite: true to replace it",
            config.out_path
        )));
    }
    let url = url_with(&config.url, &config.query_params)?;
    let request = Request {
        method: "GET".into(),
        url: url.to_string(),
        headers: pairs(&config.headers),
        body: None,
        timeout: duration(config.timeout.as_deref().unwrap_or("5m"), "timeout")?,
    };
    let incoming = dray_sdk::http::fetch(&request).map_err(step_error)?;
    if !(200..300).contains(&incoming.status) {
        // As Kargo: a failure the step's retry policy may retry.
        return Err(StepError::Retryable(format!(
            "{url}: HTTP {}",
            incoming.status
        )));
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| StepError::Terminal(format!("cannot create {}: {e}", parent.display())))?;
    }
    let temporary = partial(&out);
    let mut file = std::fs::File::create(&temporary)
        .map_err(|e| StepError::Terminal(format!("cannot write {}: {e}", temporary.display())))?;
    let mut written = 0u64;
    let copied = incoming.read(|chunk| {
        written += chunk.len() as u64;
        if written > MAX_DOWNLOAD {
            return Err(HttpError::TooLarge(format!(
                "{url}: the download is larger than {} MiB",
                MAX_DOWNLOAD >> 20
            )));
        }
        file.write_all(chunk)
            .map_err(|e| HttpError::TooLarge(format!("cannot write {}: {e}", config.out_path)))
    });
    let finished = copied.map_err(step_error).and_then(|()| {
        file.flush()
            .and_then(|()| std::fs::rename(&temporary, &out))
            .map_err(|e| StepError::Terminal(format!("cannot write {}: {e}", config.out_path)))
    });
    if let Err(e) = finished {
        drop(file);
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    dray_sdk::info!(
        "downloaded {written} bytes from {url} to {}",
        config.out_path
    );
    Ok(dray_sdk::succeeded(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_out_of_the_work_directory_is_refused_before_any_request() {
        for path in ["../x", "/etc/passwd", "a/../../x"] {
            let config: Config =
                serde_json::from_value(json!({"url": "http://h/x", "outPath": path})).unwrap();
            match run(config) {
                Err(StepError::InvalidConfig(m)) => {
                    assert!(m.contains("leaves the work directory"), "{m}")
                }
                other => panic!("{path}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn the_partial_file_sits_beside_the_target() {
        assert_eq!(
            partial(Path::new("charts/app.tgz")),
            Path::new("charts/.app.tgz.download")
        );
        assert_eq!(
            partial(Path::new("app.tgz")),
            Path::new(".app.tgz.download")
        );
    }
}
