//! Argo CD steps, as Kargo's: `argocd-update` points Applications at what the promotion made
//! (a revision, Helm parameters, Kustomize images), requests a sync the way Kargo does (the
//! Application's `operation` field, marked with the Promotion's name) and answers `running`
//! until Argo CD has synced it and the Application is Healthy; `argocd-wait` waits for health,
//! sync or an operation without changing anything. The Applications are reached through the
//! host (the `kube` interface), with the cluster credentials of the daemon config, which this
//! component never sees.
//!
//! An Application must consent to the Stage changing it: `argocd-update` refuses one without
//! the annotation `kargo.akuity.io/authorized-stage: <project>:<stage>`.

mod app;

use dray_sdk::{Step, StepContext, StepError, StepKind, StepResult};
use serde::Deserialize;
use serde_json::{Value, json};

use app::{App, Phase};

/// The plugin's step kinds (or verifiers): exported by `plugins/steps` with the other built-ins.
pub struct ArgoCd;

/// The namespace Applications live in unless a step says otherwise (Argo CD's own).
const DEFAULT_NAMESPACE: &str = "argocd";
/// How long to wait between two looks while Argo CD works (Kargo asks again after 30 s; a
/// sync of a small app is done in seconds).
const POLL_SECONDS: u32 = 2;
/// The annotation by which an Application lets a Stage change it.
pub const AUTHORIZED_STAGE: &str = "kargo.akuity.io/authorized-stage";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Update {
    apps: Vec<AppUpdate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppUpdate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    selector: Option<Selector>,
    #[serde(default)]
    namespace: Option<String>,
    /// Dray: which cluster of the daemon config (none: the project's only one).
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    sources: Vec<SourceUpdate>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceUpdate {
    #[serde(rename = "repoURL")]
    repo_url: String,
    #[serde(default)]
    chart: Option<String>,
    #[serde(default)]
    desired_revision: Option<String>,
    /// Kargo's older field: the `commit` output of the step with this alias.
    #[serde(default)]
    desired_commit_from_step: Option<String>,
    #[serde(default)]
    update_target_revision: bool,
    #[serde(default)]
    kustomize: Option<KustomizeUpdate>,
    #[serde(default)]
    helm: Option<HelmUpdate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KustomizeUpdate {
    images: Vec<KustomizeImage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KustomizeImage {
    #[serde(rename = "repoURL")]
    repo_url: String,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    new_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HelmUpdate {
    images: Vec<HelmImage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HelmImage {
    key: String,
    value: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    match_labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<Requirement>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Requirement {
    key: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Wait {
    apps: Vec<AppWait>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AppWait {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    selector: Option<Selector>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    wait_for: Vec<String>,
}

impl Step for ArgoCd {
    fn describe() -> Vec<StepKind> {
        vec![
            dray_sdk::kind(
                "argocd-update",
                "Points Argo CD Applications at a revision, Helm parameters or Kustomize images, syncs them and waits until they are synced and Healthy",
                update_schema(),
                &[],
            ),
            dray_sdk::kind(
                "argocd-wait",
                "Waits until Argo CD Applications are healthy, synced, done with their operation, suspended or degraded, changing nothing",
                wait_schema(),
                &[],
            ),
        ]
    }

    fn run(kind: String, context: StepContext, config: String) -> Result<StepResult, StepError> {
        match kind.as_str() {
            "argocd-update" => update(&context, dray_sdk::config(&config)?),
            "argocd-wait" => wait(dray_sdk::config(&config)?),
            other => Err(StepError::InvalidConfig(format!(
                "argocd offers argocd-update and argocd-wait, not {other:?}"
            ))),
        }
    }
}

fn selector_schema() -> Value {
    json!({
        "type": "object", "additionalProperties": false,
        "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "matchExpressions": {"type": "array", "items": {
                "type": "object", "additionalProperties": false, "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string", "minLength": 1},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                }
            }},
        }
    })
}

fn app_properties() -> serde_json::Map<String, Value> {
    let mut properties = serde_json::Map::new();
    properties.insert("name".into(), json!({"type": "string", "minLength": 1, "description": "The Application's name (or selector)"}));
    properties.insert("selector".into(), selector_schema());
    properties.insert(
        "namespace".into(),
        json!({"type": "string", "minLength": 1, "description": "Its namespace (default argocd)"}),
    );
    properties.insert("cluster".into(), json!({"type": "string", "minLength": 1, "description": "Dray: the cluster of the daemon config it is in (default: the project's only one)"}));
    properties
}

fn update_schema() -> Value {
    let mut app = app_properties();
    app.insert(
        "sources".into(),
        json!({"type": "array", "items": {
            "type": "object", "additionalProperties": false, "required": ["repoURL"],
            "properties": {
                "repoURL": {"type": "string", "minLength": 1},
                "chart": {"type": "string"},
                "desiredRevision": {"type": "string"},
                "desiredCommitFromStep": {"type": "string", "description": "Older form: the commit output of the step with this alias"},
                "updateTargetRevision": {"type": "boolean"},
                "kustomize": {"type": "object", "additionalProperties": false, "required": ["images"], "properties": {
                    "images": {"type": "array", "items": {
                        "type": "object", "additionalProperties": false, "required": ["repoURL"],
                        "properties": {
                            "repoURL": {"type": "string", "minLength": 1},
                            "tag": {"type": "string"}, "digest": {"type": "string"}, "newName": {"type": "string"},
                        }
                    }}
                }},
                "helm": {"type": "object", "additionalProperties": false, "required": ["images"], "properties": {
                    "images": {"type": "array", "items": {
                        "type": "object", "additionalProperties": false, "required": ["key", "value"],
                        "properties": {"key": {"type": "string", "minLength": 1}, "value": {"type": "string"}}
                    }}
                }},
            }
        }}),
    );
    json!({
        "type": "object", "additionalProperties": false, "required": ["apps"],
        "properties": {"apps": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": false, "properties": app,
            "oneOf": [{"required": ["name"]}, {"required": ["selector"]}],
        }}}
    })
}

fn wait_schema() -> Value {
    let mut app = app_properties();
    app.insert(
        "waitFor".into(),
        json!({"type": "array", "items": {"enum": ["health", "sync", "operation", "suspended", "degraded"]}}),
    );
    json!({
        "type": "object", "additionalProperties": false, "required": ["apps"],
        "properties": {"apps": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": false, "properties": app,
            "oneOf": [{"required": ["name"]}, {"required": ["selector"]}],
        }}}
    })
}

/// The Applications one entry names (in `namespace`, default `argocd`): by name, or every one
/// its selector matches.
fn select(
    cluster: Option<&str>,
    namespace: Option<&str>,
    name: Option<&str>,
    selector: Option<&Selector>,
) -> Result<Vec<App>, StepError> {
    let namespace = namespace.unwrap_or(DEFAULT_NAMESPACE);
    if let Some(name) = name {
        let found = dray_sdk::kube::get(&app::target(cluster, namespace, Some(name)))
            .map_err(dray_sdk::retryable)?
            .ok_or_else(|| {
                dray_sdk::retryable(format!(
                    "unable to find Argo CD Application {name:?} in namespace {namespace:?}"
                ))
            })?;
        return Ok(vec![App::parse(&found, cluster)?]);
    }
    let selector = selector.map(label_selector).unwrap_or_default();
    let found = dray_sdk::kube::list(
        &app::target(cluster, namespace, None),
        Some(&selector)
            .filter(|s| !s.is_empty())
            .map(String::as_str),
    )
    .map_err(dray_sdk::retryable)?;
    if found.is_empty() {
        return Err(dray_sdk::retryable(format!(
            "no Argo CD Application in namespace {namespace:?} matches the selector {selector:?}"
        )));
    }
    found.iter().map(|a| App::parse(a, cluster)).collect()
}

/// A selector as the API's `labelSelector` parameter writes it.
fn label_selector(selector: &Selector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for r in &selector.match_expressions {
        parts.push(match r.operator.as_str() {
            "In" => format!("{} in ({})", r.key, r.values.join(",")),
            "NotIn" => format!("{} notin ({})", r.key, r.values.join(",")),
            "Exists" => r.key.clone(),
            _ => format!("!{}", r.key),
        });
    }
    parts.join(",")
}

fn update(context: &StepContext, config: Update) -> Result<StepResult, StepError> {
    let outputs: Value = serde_json::from_str(&context.outputs).unwrap_or_default();
    let mut waiting = Vec::new();
    let mut touched = Vec::new();
    for entry in &config.apps {
        let cluster = entry.cluster.as_deref();
        let apps = select(
            cluster,
            entry.namespace.as_deref(),
            entry.name.as_deref(),
            entry.selector.as_ref(),
        )?;
        // Every selected Application must take the update before any is changed.
        let mut planned = Vec::new();
        for app in apps {
            app.authorize(&context.project, &context.stage)?;
            let desired = app.desired_revisions(&entry.sources, &outputs)?;
            let sources = app.desired_sources(&entry.sources, &desired)?;
            planned.push((app, desired, sources));
        }
        for (app, desired, sources) in planned {
            let (phase, must, why) = app.must_update(&context.promotion, &desired);
            if let Some(why) = &why {
                dray_sdk::info!("{}: {why}", app.describe());
            }
            let phase = if must {
                app.sync(&context.promotion, &sources)?;
                dray_sdk::info!("{}: sync requested", app.describe());
                Phase::Running
            } else {
                phase.unwrap_or(Phase::Succeeded)
            };
            match phase {
                Phase::Failed => {
                    return Err(dray_sdk::retryable(format!(
                        "{} failed to sync: {}",
                        app.describe(),
                        app.operation_message()
                    )));
                }
                Phase::Running => waiting.push(format!("{} is syncing", app.describe())),
                Phase::Succeeded => match app.health_wait() {
                    None => {}
                    Some(why) => waiting.push(why),
                },
            }
            touched.push(json!({
                "name": app.name, "namespace": app.namespace, "cluster": cluster,
                "desiredRevisions": desired,
            }));
        }
    }
    if !waiting.is_empty() {
        return Ok(dray_sdk::running(POLL_SECONDS, waiting.join("; ")));
    }
    Ok(dray_sdk::succeeded(json!({"apps": touched})))
}

fn wait(config: Wait) -> Result<StepResult, StepError> {
    let mut waiting = Vec::new();
    let mut seen = Vec::new();
    for entry in &config.apps {
        let apps = select(
            entry.cluster.as_deref(),
            entry.namespace.as_deref(),
            entry.name.as_deref(),
            entry.selector.as_ref(),
        )?;
        let wanted: Vec<&str> = if entry.wait_for.is_empty() {
            vec!["health"]
        } else {
            entry.wait_for.iter().map(String::as_str).collect()
        };
        for app in apps {
            waiting.extend(wanted.iter().filter_map(|w| app.not_yet(w)));
            seen.push(json!({"name": app.name, "namespace": app.namespace}));
        }
    }
    if !waiting.is_empty() {
        return Ok(dray_sdk::running(POLL_SECONDS, waiting.join("; ")));
    }
    Ok(dray_sdk::succeeded(json!({"apps": seen})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_read_as_the_api_takes_them() {
        let selector: Selector = serde_json::from_value(json!({
            "matchLabels": {"team": "shop", "env": "prod"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "api"]},
                {"key": "old", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "Exists"},
                {"key": "x", "operator": "NotIn", "values": ["1"]},
            ]
        }))
        .expect("a selector");
        assert_eq!(
            label_selector(&selector),
            "env=prod,team=shop,tier in (web,api),!old,zone,x notin (1)"
        );
    }
}
