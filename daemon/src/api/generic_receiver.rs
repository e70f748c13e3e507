//! Kargo's `generic` webhook receiver: any POST, with the receiver's own `actions` deciding
//! what to do. Each action (`action: Refresh`) runs when its `whenExpression` holds, on the
//! Warehouses its `targetSelectionCriteria` select (by `name`, `labelSelector`, and
//! `indexSelector.matchIndices` on `subscribedURLs`; criteria are ANDed, and values may be
//! `${{ }}` expressions). Expressions see `request.body` (the JSON), `request.headers` (name →
//! list of values), `request.method` and `request.url`; `request.header('Name')` reads one
//! header, any case. Refreshing Promotions (Kargo wakes one waiting on an external system) is
//! not done: Dray's polling steps are asked again on their own interval.

use axum::http::HeaderMap;
use serde_json::{Map, Value, json};

use super::webhooks::Receiver;
use super::{ApiError, AppState};
use crate::resource::urls::{normalize_chart, normalize_git, normalize_image};
use crate::resource::{Kind, LabelSelector, WarehouseSpec};
use crate::rules::expr::{self, Scope};
use crate::store::Reader;

/// `request.header('X-Name')` as an index into the lower-cased header map.
fn rewrite_header_calls(code: &str) -> String {
    static CALL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"request\.header\(\s*(['"])([^'"]*)['"]\s*\)"#)
            .expect("a valid pattern")
    });
    CALL.replace_all(code, |c: &regex::Captures| {
        format!("request.header[\"{}\"]", c[2].to_ascii_lowercase())
    })
    .into_owned()
}

fn request(headers: &HeaderMap, payload: &Value, path: &str) -> Map<String, Value> {
    let mut all: Map<String, Value> = Map::new();
    let mut first: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let value = value.to_str().unwrap_or_default().to_string();
        let key = name.as_str().to_ascii_lowercase();
        first.entry(key.clone()).or_insert_with(|| json!(value));
        if let Value::Array(list) = all.entry(key).or_insert_with(|| json!([])) {
            list.push(json!(value));
        }
    }
    let mut vars = Map::new();
    vars.insert(
        "request".into(),
        json!({"body": payload, "headers": all, "header": first, "method": "POST", "url": path}),
    );
    vars
}

fn eval(text: &str, vars: &Map<String, Value>, as_expression: bool) -> Result<Value, String> {
    let scope = Scope {
        variables: vars.clone(),
        ..Scope::default()
    };
    let text = rewrite_header_calls(text);
    if as_expression {
        expr::eval_expression(&text, &scope)
    } else {
        expr::eval_string(&text, &scope)
    }
}

fn text_of(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The normalized URLs a Warehouse subscribes to (Kargo's `subscribedURLs` index).
fn subscribed_urls(spec: &WarehouseSpec) -> Vec<String> {
    let mut out = Vec::new();
    for s in &spec.subscriptions {
        if let Some(g) = &s.git {
            out.push(normalize_git(&g.repo_url));
        }
        if let Some(i) = &s.image {
            out.push(normalize_image(&i.repo_url));
        }
        if let Some(c) = &s.chart {
            out.push(normalize_chart(&c.repo_url));
        }
    }
    out
}

/// Whether `value` names one of `urls`, compared the way each kind normalizes.
fn url_matches(urls: &[String], value: &str) -> bool {
    [
        normalize_git(value),
        normalize_image(value),
        normalize_chart(value),
    ]
    .iter()
    .any(|v| urls.contains(v))
}

/// Runs the receiver's actions; returns the Warehouses refreshed. A bad action (unknown kind,
/// failing expression) is a 400 that names it, and nothing is refreshed.
pub async fn act(
    state: &AppState,
    receiver: &Receiver,
    headers: &HeaderMap,
    payload: &Value,
) -> Result<Vec<String>, ApiError> {
    let vars = request(headers, payload, &receiver.path);
    // A ClusterConfig's receiver (project "") acts on the Warehouses of every project.
    let project = receiver.project.clone();
    let warehouses = state
        .store
        .read_async(move |r| {
            r.list(
                Kind::Warehouse,
                Some(project.as_str()).filter(|p| !p.is_empty()),
                None,
            )
        })
        .await?;
    let mut chosen: Vec<(String, String)> = Vec::new();
    let bad = |i: usize, m: String| {
        ApiError::BadRequest(format!("receiver {}: actions[{i}]: {m}", receiver.name))
    };
    for (i, action) in receiver.actions.iter().enumerate() {
        let kind = action["action"].as_str().unwrap_or("Refresh");
        if kind != "Refresh" {
            return Err(bad(
                i,
                format!("action {kind:?} is not supported; use Refresh"),
            ));
        }
        if let Some(when) = action["whenExpression"]
            .as_str()
            .filter(|w| !w.trim().is_empty())
        {
            match eval(expr::condition_code(when), &vars, true) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => continue,
                Ok(other) => {
                    return Err(bad(
                        i,
                        format!("whenExpression gave {other}, not true or false"),
                    ));
                }
                Err(e) => return Err(bad(i, format!("whenExpression: {e}"))),
            }
        }
        let criteria = action["targetSelectionCriteria"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (j, c) in criteria.iter().enumerate() {
            let at = |m: String| bad(i, format!("targetSelectionCriteria[{j}]: {m}"));
            match c["kind"].as_str().unwrap_or("Warehouse") {
                "Warehouse" => {}
                "Promotion" => continue,
                other => return Err(at(format!("kind {other:?} cannot be refreshed"))),
            }
            let name = match c["name"].as_str() {
                Some(n) => Some(text_of(
                    eval(n, &vars, false).map_err(|e| at(format!("name: {e}")))?,
                )),
                None => None,
            };
            let labels: Option<LabelSelector> = match c.get("labelSelector") {
                Some(v) if !v.is_null() => Some(
                    serde_json::from_value(v.clone())
                        .map_err(|e| at(format!("labelSelector: {e}")))?,
                ),
                _ => None,
            };
            let mut indices = Vec::new();
            for (k, m) in c["indexSelector"]["matchIndices"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let key = m["key"].as_str().unwrap_or_default();
                if key != "subscribedURLs" {
                    return Err(at(format!(
                        "indexSelector.matchIndices[{k}].key {key:?}: only subscribedURLs selects Warehouses"
                    )));
                }
                let equals = match m["operator"].as_str().unwrap_or("Equals") {
                    "Equals" => true,
                    "NotEquals" => false,
                    other => {
                        return Err(at(format!(
                            "indexSelector.matchIndices[{k}].operator {other:?}: use Equals or NotEquals"
                        )));
                    }
                };
                let value = text_of(
                    eval(m["value"].as_str().unwrap_or_default(), &vars, false)
                        .map_err(|e| at(format!("indexSelector.matchIndices[{k}].value: {e}")))?,
                );
                indices.push((equals, value));
            }
            for w in &warehouses {
                let Ok(spec) = serde_json::from_value::<WarehouseSpec>(w.spec().clone()) else {
                    continue;
                };
                let urls = subscribed_urls(&spec);
                let selected = name.as_deref().is_none_or(|n| n == w.name())
                    && labels
                        .as_ref()
                        .is_none_or(|l| l.matches(&w.metadata.labels))
                    && indices
                        .iter()
                        .all(|(equals, v)| url_matches(&urls, v) == *equals);
                let key = (w.project().to_string(), w.name().to_string());
                if selected && !chosen.contains(&key) {
                    chosen.push(key);
                }
            }
        }
    }
    for (project, w) in &chosen {
        state.discovery.refresh(project, w, None);
    }
    Ok(chosen
        .into_iter()
        .map(|(project, w)| super::webhooks::refreshed_name(receiver, &project, &w))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_calls_read_the_lowercased_header_map() {
        assert_eq!(
            rewrite_header_calls("request.header('X-Event-Type') == 'push'"),
            "request.header[\"x-event-type\"] == 'push'"
        );
        let mut headers = HeaderMap::new();
        headers.insert("X-Event-Type", "push".parse().unwrap());
        let vars = request(
            &headers,
            &json!({"repo": "acme/web"}),
            "/webhooks/generic/x",
        );
        assert_eq!(
            eval("request.header('X-Event-Type') == 'push'", &vars, true).unwrap(),
            json!(true)
        );
        assert_eq!(
            eval("registry.local/${{ request.body.repo }}", &vars, false).unwrap(),
            json!("registry.local/acme/web")
        );
    }
}
