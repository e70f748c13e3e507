//! The `http` and `http-download` steps ([`download`]), as Kargo's. `http`: one request, then `successExpression` / `failureExpression`
//! over the response decide between success (with `outputs`), a terminal failure, or "running,
//! ask again after `pollInterval`" (polling an external system until it is ready). Without
//! expressions a 2xx response succeeds and anything else is a failure that the step's retry
//! policy may retry.
//!
//! The request goes out through `wasi:http`, so it reaches only the hosts the operator allowed
//! (`[steps] allow-hosts`); a denied host is a terminal error that says what to allow.
//!
//! Expressions see `response.status`, `response.headers` (header name → list of values) and
//! `response.body` (parsed as JSON or YAML by content type, text otherwise), and the function
//! `header(name)` (the first value, any case). Kargo writes that one `response.header(name)`.

use dray_sdk::expr::lang::{Environment, Value as X};
use dray_sdk::http::{HttpError, Request, Response};
use dray_sdk::{Capability, Step, StepContext, StepError, StepKind, StepResult};
use serde::Deserialize;
use serde_json::{Map, Value, json};

mod download;

/// The plugin's step kinds (or verifiers): exported by `plugins/steps` with the other built-ins.
pub struct Http;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NameValue {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Output {
    name: String,
    from_expression: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: Vec<NameValue>,
    #[serde(default)]
    query_params: Vec<NameValue>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_from_file: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    #[serde(default)]
    proxy: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    poll_interval: Option<String>,
    #[serde(default)]
    response_content_type: Option<String>,
    #[serde(default)]
    success_expression: Option<String>,
    #[serde(default)]
    failure_expression: Option<String>,
    #[serde(default)]
    error_expression: Option<String>,
    #[serde(default)]
    outputs: Vec<Output>,
}

pub(crate) use dray_sdk::duration;

/// Headers as Go's `http.Header` holds them: canonical names, lists of values.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Headers as the request takes them.
pub(crate) fn pairs(list: &[NameValue]) -> Vec<(String, String)> {
    list.iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect()
}

/// `url` with `params` added to its query.
pub(crate) fn url_with(url: &str, params: &[NameValue]) -> Result<url::Url, StepError> {
    let mut url =
        url::Url::parse(url).map_err(|e| StepError::InvalidConfig(format!("url: {url:?}: {e}")))?;
    if !params.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for p in params {
            pairs.append_pair(&p.name, &p.value);
        }
    }
    Ok(url)
}

/// What a failed request means for the promotion.
pub(crate) fn step_error(e: HttpError) -> StepError {
    match e {
        HttpError::Invalid(m) => StepError::InvalidConfig(m),
        HttpError::Denied(m) | HttpError::TooLarge(m) => StepError::Terminal(m),
        HttpError::Transient(m) => StepError::Retryable(m),
    }
}

/// The expression variables: `response` with status, headers and the parsed body.
fn variables(
    response: &Response,
    content_type: Option<&str>,
) -> Result<Map<String, Value>, StepError> {
    let mut headers: Map<String, Value> = Map::new();
    for (k, v) in &response.headers {
        let entry = headers.entry(canonical(k)).or_insert(json!([]));
        entry.as_array_mut().expect("an array").push(json!(v));
    }
    let declared = content_type.map(str::to_string).or_else(|| {
        response
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
    });
    let text = String::from_utf8_lossy(&response.body).into_owned();
    let body = if response.body.is_empty() {
        json!({})
    } else {
        match declared.as_deref() {
            Some("application/yaml" | "text/yaml" | "application/x-yaml" | "yaml") => {
                let docs = dray_sdk::yaml::lang::YamlLoader::load_from_str(&text).map_err(|e| {
                    StepError::Retryable(format!("the response is not valid YAML: {e}"))
                })?;
                docs.first()
                    .map(dray_sdk::yaml::to_json)
                    .unwrap_or(Value::Null)
            }
            Some("text/plain" | "text") => Value::String(text),
            Some("application/json" | "json") => serde_json::from_str(&text).map_err(|e| {
                StepError::Retryable(format!("the response is not valid JSON: {e}"))
            })?,
            // Anything else: JSON if it parses (as Kargo), the text otherwise.
            _ => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    };
    let mut vars = Map::new();
    vars.insert(
        "response".into(),
        json!({"status": response.status, "headers": headers, "body": body}),
    );
    Ok(vars)
}

fn environment(response: &Response) -> Environment<'static> {
    let headers = response.headers.clone();
    let mut env = dray_sdk::expr::environment();
    env.add_function("header", move |c| {
        let name = c
            .args
            .first()
            .and_then(|a| a.as_string())
            .unwrap_or_default()
            .to_string();
        let value = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v.clone());
        Ok(value.map_or(X::String(String::new()), X::String))
    });
    env
}

fn check(
    env: &Environment,
    field: &str,
    expression: &Option<String>,
    vars: &Map<String, Value>,
) -> Result<Option<bool>, StepError> {
    let Some(expression) = expression else {
        return Ok(None);
    };
    match dray_sdk::expr::eval_in(env, expression, vars) {
        Ok(Value::Bool(b)) => Ok(Some(b)),
        Ok(other) => Err(StepError::Terminal(format!(
            "{field}: {expression} gave {other}, not true or false"
        ))),
        Err(e) => Err(StepError::Terminal(format!("{field}: {expression}: {e}"))),
    }
}

fn run(config: Config) -> Result<StepResult, StepError> {
    if config.insecure_skip_tls_verify {
        return Err(StepError::InvalidConfig(
            "insecureSkipTLSVerify: a sandboxed step always verifies TLS; use http:// for a test server".into(),
        ));
    }
    if config.proxy.is_some() {
        return Err(StepError::InvalidConfig(
            "proxy: requests from the sandbox go out through the daemon; it has no per-step proxy"
                .into(),
        ));
    }
    let url = url_with(&config.url, &config.query_params)?;
    let body =
        match (&config.body, &config.body_from_file) {
            (Some(b), None) => Some(b.clone().into_bytes()),
            (None, Some(path)) => Some(std::fs::read(path).map_err(|e| {
                StepError::Terminal(format!("bodyFromFile: cannot read {path}: {e}"))
            })?),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(StepError::InvalidConfig(
                    "give body or bodyFromFile, not both".into(),
                ));
            }
        };
    let request = Request {
        method: config.method.clone().unwrap_or_else(|| "GET".into()),
        url: url.to_string(),
        headers: pairs(&config.headers),
        body,
        timeout: duration(config.timeout.as_deref().unwrap_or("10s"), "timeout")?,
    };
    let response = dray_sdk::http::send(&request).map_err(step_error)?;
    dray_sdk::info!(
        "{} {url}: {}",
        config.method.as_deref().unwrap_or("GET"),
        response.status
    );
    let vars = variables(&response, config.response_content_type.as_deref())?;
    let env = environment(&response);
    let success = check(&env, "successExpression", &config.success_expression, &vars)?;
    let failure = check(&env, "failureExpression", &config.failure_expression, &vars)?;
    let outputs = || -> Result<StepResult, StepError> {
        let mut outputs = Map::new();
        for o in &config.outputs {
            let value = dray_sdk::expr::eval_in(&env, &o.from_expression, &vars).map_err(|e| {
                StepError::Terminal(format!("outputs ({}): {}: {e}", o.name, o.from_expression))
            })?;
            outputs.insert(o.name.clone(), value);
        }
        Ok(dray_sdk::succeeded(Value::Object(outputs)))
    };
    match (success, failure) {
        (_, Some(true)) => {
            let detail = match &config.error_expression {
                Some(e) => match dray_sdk::expr::eval_in(&env, e, &vars) {
                    Ok(Value::String(s)) if !s.is_empty() => format!(": {s:?}"),
                    Ok(Value::Null) | Ok(Value::String(_)) => String::new(),
                    Ok(other) => format!(": {other}"),
                    Err(err) => {
                        return Err(StepError::Terminal(format!("errorExpression: {e}: {err}")));
                    }
                },
                None => String::new(),
            };
            Err(StepError::Terminal(format!(
                "HTTP ({}) response met the failure criteria{detail}",
                response.status
            )))
        }
        (Some(true), _) => outputs(),
        (None, None) if (200..300).contains(&response.status) => outputs(),
        (None, None) => Err(StepError::Retryable(format!(
            "{url}: HTTP {}",
            response.status
        ))),
        _ => {
            let interval = duration(
                config.poll_interval.as_deref().unwrap_or("30s"),
                "pollInterval",
            )?;
            let seconds = interval.as_secs_f64().ceil().max(1.0) as u32;
            Ok(dray_sdk::running(
                seconds,
                format!(
                    "HTTP {}: the success criteria are not met yet",
                    response.status
                ),
            ))
        }
    }
}

/// The schema of a `{name, value}` pair (headers, query parameters).
pub(crate) fn pair_schema() -> Value {
    json!({"type": "object", "additionalProperties": false, "required": ["name", "value"],
        "properties": {"name": {"type": "string", "minLength": 1}, "value": {"type": "string"}}})
}

/// The schema of a Go duration (`30s`, `1m30s`).
pub(crate) fn duration_schema() -> Value {
    json!({"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"})
}

fn schema() -> Value {
    let pair = pair_schema();
    let go_duration = duration_schema();
    json!({
        "type": "object", "additionalProperties": false, "required": ["url"],
        "properties": {
            "url": {"type": "string", "minLength": 1, "description": "The URL (the host must be in [steps] allow-hosts)"},
            "method": {"type": "string", "pattern": "^(DELETE|GET|HEAD|PATCH|POST|PUT)$", "description": "GET by default"},
            "headers": {"type": "array", "items": pair, "description": "Request headers"},
            "queryParams": {"type": "array", "items": pair, "description": "Query parameters to add to the URL"},
            "body": {"type": "string", "description": "The request body"},
            "bodyFromFile": {"type": "string", "minLength": 1, "description": "A file in the work directory to send as the body"},
            "insecureSkipTLSVerify": {"type": "boolean", "description": "Refused: the sandbox always verifies TLS"},
            "proxy": {"type": "string", "description": "Refused: requests go out through the daemon"},
            "timeout": go_duration.clone(),
            "pollInterval": go_duration,
            "responseContentType": {"type": "string", "description": "How to parse the body (application/json, application/yaml, text/plain); by Content-Type otherwise"},
            "successExpression": {"type": "string", "description": "Succeeds when true (with outputs); while false, the step polls"},
            "failureExpression": {"type": "string", "description": "Fails the step for good when true"},
            "errorExpression": {"type": "string", "description": "A message to add when failureExpression is true"},
            "outputs": {"type": "array", "items": {"type": "object", "additionalProperties": false, "required": ["name", "fromExpression"],
                "properties": {"name": {"type": "string", "minLength": 1}, "fromExpression": {"type": "string", "minLength": 1}}}, "description": "Outputs computed from the response"}
        }
    })
}

impl Step for Http {
    fn describe() -> Vec<StepKind> {
        vec![
            dray_sdk::kind(
                "http",
                "Sends an HTTP request and decides from the response: success with outputs, failure, or poll again",
                schema(),
                &[Capability::Http],
            ),
            dray_sdk::kind(
                "http-download",
                "Downloads a file into the work directory (at most 100 MiB)",
                download::schema(),
                &[Capability::Http],
            ),
        ]
    }

    fn run(kind: String, _context: StepContext, config: String) -> Result<StepResult, StepError> {
        match kind.as_str() {
            "http" => run(dray_sdk::config(&config)?),
            "http-download" => download::run(dray_sdk::config(&config)?),
            other => Err(StepError::InvalidConfig(format!(
                "the http plugin has no step {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_durations() {
        assert_eq!(
            duration("1m30s", "t").unwrap(),
            std::time::Duration::from_secs(90)
        );
        assert_eq!(
            duration("500ms", "t").unwrap(),
            std::time::Duration::from_millis(500)
        );
        assert!(duration("5", "t").is_err());
        assert!(duration("5d", "t").is_err());
    }

    #[test]
    fn canonicalises_header_names_as_go() {
        assert_eq!(canonical("content-type"), "Content-Type");
        assert_eq!(canonical("x-request-ID"), "X-Request-Id");
    }
}
