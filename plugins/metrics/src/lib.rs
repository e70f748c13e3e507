//! Dray's built-in verifiers: Argo Rollouts' `web` and `prometheus` metric providers, run in the
//! sandbox instead of by Argo Rollouts.
//!
//! Each `verify` call takes one measurement and returns its value as JSON: for `web`, the
//! response (JSON) or the part of it that `jsonPath` selects; for `prometheus`, the query's
//! result (a number for a scalar, a list of numbers for a vector), as Argo gives them to
//! `successCondition` and `failureCondition`. The host evaluates those conditions, counts
//! measurements and applies the limits; a measurement that cannot be taken (no answer, not JSON,
//! an HTTP error status) has the phase `error`.
//!
//! `jsonPath` is the subset of Kubernetes JSONPath that metric templates use: `{$.a.b[0]}`,
//! `$.a['b']`, with or without braces and the leading `$`.

use std::time::Duration;

use dray_sdk::http::{Request, Response};
use dray_sdk::verifier::Measurement;
use dray_sdk::verifier::MeasurementPhase;
use dray_sdk::{StepContext, StepKind, Verifier};
use serde::Deserialize;
use serde_json::{Value, json};

/// The plugin's step kinds (or verifiers): exported by `plugins/verifiers` with the other built-ins.
pub struct Metrics;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyValue {
    key: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Web {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: Vec<KeyValue>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    json_body: Option<Value>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
    #[serde(default)]
    json_path: Option<String>,
    #[serde(default)]
    insecure: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Prometheus {
    #[serde(default)]
    address: Option<String>,
    query: String,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    headers: Vec<KeyValue>,
    #[serde(default)]
    authentication: Option<Value>,
}

fn measured(value: Value, message: Option<String>) -> Measurement {
    Measurement {
        phase: MeasurementPhase::Successful,
        value: value.to_string(),
        message,
    }
}

fn error(message: String) -> Measurement {
    Measurement {
        phase: MeasurementPhase::Error,
        value: "null".into(),
        message: Some(message),
    }
}

fn parse_json(response: &Response, url: &str) -> Result<Value, String> {
    serde_json::from_slice(&response.body).map_err(|e| {
        let text = String::from_utf8_lossy(&response.body);
        let shown: String = text.chars().take(200).collect();
        format!("{url}: the response is not JSON ({e}): {shown:?}")
    })
}

/// Selects with the JSONPath subset described above; `None` when nothing is there.
fn select<'a>(value: &'a Value, path: &str) -> Result<Option<&'a Value>, String> {
    let trimmed = path.trim();
    let inner = trimmed
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(trimmed)
        .trim();
    let mut rest = inner.strip_prefix('$').unwrap_or(inner);
    let mut at = value;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if key.is_empty() {
                return Err(format!("jsonPath {path:?}: an empty name after '.'"));
            }
            match at.get(key) {
                Some(v) => at = v,
                None => return Ok(None),
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r
                .find(']')
                .ok_or_else(|| format!("jsonPath {path:?}: '[' without ']'"))?;
            let index = r[..end].trim();
            let quoted = index
                .strip_prefix('\'')
                .and_then(|i| i.strip_suffix('\''))
                .or_else(|| index.strip_prefix('"').and_then(|i| i.strip_suffix('"')));
            let next = match quoted {
                Some(key) => at.get(key),
                None => {
                    let n: usize = index.parse().map_err(|_| {
                        format!(
                            "jsonPath {path:?}: [{index}] is not supported (use a number or a quoted name)"
                        )
                    })?;
                    at.get(n)
                }
            };
            match next {
                Some(v) => at = v,
                None => return Ok(None),
            }
            rest = &r[end + 1..];
        } else {
            // `{.a.b}` without `$`, or a bare name first.
            rest = if rest.starts_with(['.', '[']) {
                rest
            } else {
                return select(value, &format!("$.{rest}"));
            };
        }
    }
    Ok(Some(at))
}

fn headers(list: &[KeyValue]) -> Vec<(String, String)> {
    list.iter()
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect()
}

fn web(config: Web) -> Measurement {
    if config.insecure {
        return error(
            "insecure: a sandboxed verifier always verifies TLS; use http:// for a test endpoint"
                .into(),
        );
    }
    let mut request = Request::get(&config.url);
    request.method = config.method.clone().unwrap_or_else(|| "GET".into());
    request.headers = headers(&config.headers);
    request.timeout = Duration::from_secs(config.timeout_seconds.unwrap_or(10).max(1));
    request.body = match (&config.body, &config.json_body) {
        (Some(b), _) => Some(b.clone().into_bytes()),
        (None, Some(j)) => {
            if !request
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                request
                    .headers
                    .push(("content-type".into(), "application/json".into()));
            }
            Some(j.to_string().into_bytes())
        }
        (None, None) => None,
    };
    let response = match dray_sdk::http::send(&request) {
        Ok(r) => r,
        Err(e) => return error(e.to_string()),
    };
    dray_sdk::info!("{} {}: {}", request.method, config.url, response.status);
    if !(200..300).contains(&response.status) {
        return error(format!(
            "{}: received HTTP {} (a measurement needs a 2xx answer)",
            config.url, response.status
        ));
    }
    let body = match parse_json(&response, &config.url) {
        Ok(v) => v,
        Err(e) => return error(e),
    };
    match &config.json_path {
        None => measured(body, None),
        Some(path) => match select(&body, path) {
            Ok(Some(v)) => measured(v.clone(), None),
            Ok(None) => error(format!(
                "{}: jsonPath {path:?} selects nothing in the response",
                config.url
            )),
            Err(e) => error(e),
        },
    }
}

/// A sample's value: Prometheus sends numbers as strings (`"0.99"`, `"NaN"`).
fn sample(v: &Value) -> Value {
    let text = v[1].as_str().unwrap_or_default();
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => json!(f),
        _ => json!(text),
    }
}

fn prometheus(config: Prometheus) -> Measurement {
    if config.insecure {
        return error(
            "insecure: a sandboxed verifier always verifies TLS; use http:// for a test server"
                .into(),
        );
    }
    if config.authentication.is_some() {
        return error(
            "authentication (sigv4, oauth2) is not supported; pass a bearer token in headers"
                .into(),
        );
    }
    let Some(address) = config.address.as_deref().filter(|a| !a.is_empty()) else {
        return error("address: the Prometheus server's URL is required".into());
    };
    let mut url = match url::Url::parse(&format!("{}/api/v1/query", address.trim_end_matches('/')))
    {
        Ok(u) => u,
        Err(e) => return error(format!("address {address:?}: {e}")),
    };
    url.query_pairs_mut().append_pair("query", &config.query);
    let mut request = Request::get(url.as_str());
    request.headers = headers(&config.headers);
    request.timeout = Duration::from_secs(config.timeout.unwrap_or(30).max(1));
    let response = match dray_sdk::http::send(&request) {
        Ok(r) => r,
        Err(e) => return error(e.to_string()),
    };
    let body = match parse_json(&response, address) {
        Ok(v) => v,
        Err(e) => return error(e),
    };
    if body["status"] != "success" {
        return error(format!(
            "{address}: the query failed (HTTP {}): {} {}",
            response.status,
            body["errorType"].as_str().unwrap_or_default(),
            body["error"].as_str().unwrap_or_default()
        ));
    }
    let data = &body["data"];
    let value = match data["resultType"].as_str() {
        Some("vector") => Value::Array(
            data["result"]
                .as_array()
                .map(|r| r.iter().map(|s| sample(&s["value"])).collect())
                .unwrap_or_default(),
        ),
        Some("scalar") => sample(&data["result"]),
        other => {
            return error(format!(
                "{address}: the query returned a {} result; use a query that returns a vector or a scalar",
                other.unwrap_or("missing")
            ));
        }
    };
    dray_sdk::info!("prometheus {}: {}", config.query, value);
    measured(value, None)
}

fn schema(kind: &str) -> Value {
    let kv = json!({"type": "object", "additionalProperties": false, "required": ["key", "value"],
        "properties": {"key": {"type": "string"}, "value": {"type": "string"}}});
    match kind {
        "web" => json!({
            "type": "object", "additionalProperties": false, "required": ["url"],
            "properties": {
                "url": {"type": "string", "minLength": 1},
                "method": {"type": "string"},
                "headers": {"type": "array", "items": kv},
                "body": {"type": "string"},
                "jsonBody": {},
                "timeoutSeconds": {"type": "integer", "minimum": 1},
                "jsonPath": {"type": "string"},
                "insecure": {"type": "boolean"},
            }
        }),
        _ => json!({
            "type": "object", "additionalProperties": false, "required": ["query"],
            "properties": {
                "address": {"type": "string"},
                "query": {"type": "string", "minLength": 1},
                "timeout": {"type": "integer", "minimum": 1},
                "insecure": {"type": "boolean"},
                "headers": {"type": "array", "items": kv},
                "authentication": {"type": "object"},
            }
        }),
    }
}

impl Verifier for Metrics {
    fn describe() -> Vec<StepKind> {
        vec![
            dray_sdk::kind(
                "web",
                "Argo Rollouts' web metric: an HTTP request whose JSON answer (or its jsonPath) is the measured value",
                schema("web"),
                &[dray_sdk::Capability::Http],
            ),
            dray_sdk::kind(
                "prometheus",
                "Argo Rollouts' prometheus metric: an instant query whose result is the measured value",
                schema("prometheus"),
                &[dray_sdk::Capability::Http],
            ),
        ]
    }

    fn verify(kind: String, _context: StepContext, config: String) -> Result<Measurement, String> {
        let bad = |e: serde_json::Error| format!("{kind} config: {e}");
        Ok(match kind.as_str() {
            "web" => web(serde_json::from_str(&config).map_err(bad)?),
            "prometheus" => prometheus(serde_json::from_str(&config).map_err(bad)?),
            other => return Err(format!("the metrics plugin has no verifier {other:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_select_like_kubernetes_jsonpath() {
        let doc = json!({"data": {"ok": true, "items": [{"v": 1}, {"v": 2}], "a-b": 3}});
        assert_eq!(select(&doc, "{$.data.ok}").unwrap(), Some(&json!(true)));
        assert_eq!(select(&doc, "$.data.items[1].v").unwrap(), Some(&json!(2)));
        assert_eq!(select(&doc, "{.data['a-b']}").unwrap(), Some(&json!(3)));
        assert_eq!(select(&doc, "data.ok").unwrap(), Some(&json!(true)));
        assert_eq!(select(&doc, "{$}").unwrap(), Some(&doc));
        assert_eq!(select(&doc, "$.data.missing").unwrap(), None);
        assert!(select(&doc, "$.data.items[?(@.v>1)]").is_err());
    }

    #[test]
    fn prometheus_samples_become_numbers() {
        assert_eq!(sample(&json!([1.0, "0.99"])), json!(0.99));
        assert_eq!(sample(&json!([1.0, "NaN"])), json!("NaN"));
    }
}
