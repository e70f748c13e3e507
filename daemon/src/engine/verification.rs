//! Verification: after a successful Promotion, the Stage's AnalysisTemplates are measured by
//! verifier components, without Argo Rollouts.
//!
//! A verification is an `AnalysisRun` (Argo Rollouts' schema) made from every template the
//! Stage names, with `{{args.NAME}}` filled from the Stage's `verification.args` (which may hold
//! `${{ }}` expressions) over the templates' defaults. Each metric takes measurements with the
//! verifier its provider names (`web` and `prometheus` are built in; `plugin: {KIND: config}`
//! runs any verifier component the daemon loaded), after `initialDelay`, every `interval`, until
//! `count` (1 without an interval). `successCondition`/`failureCondition` are evaluated over
//! `result` as Argo does; a metric fails once its failed measurements exceed `failureLimit`
//! (default 0), is inconclusive past `inconclusiveLimit` (0), errors past
//! `consecutiveErrorLimit` (4), and succeeds when it has its count. `dryRun` metrics are
//! measured and shown but decide nothing. The run ends Failed, Error or Inconclusive as its worst
//! metric, otherwise Successful, which marks the Freight `verifiedIn` the Stage.
//!
//! The AnalysisRun's status is the whole truth and is written after every measurement, so a
//! restarted daemon resumes a run where it stood. Every line a verifier logs is stored with the
//! run (`dray logs verification`). While a Stage verifies, its next Promotion waits.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::expr::{self, FreightView, Scope};
use super::pipeline::{self, time_text};
use super::{Engine, logs};
use crate::resource::analysis::{Argument, IntOrString, Metric};
use crate::resource::validate::parse_duration;
use crate::resource::{AnalysisTemplateSpec, Kind, Object, ObjectMeta, StageSpec};
use crate::runtime::{self, MeasurementPhase};
use crate::store::{Reader, StatusMode, StoreError, WriteTx};

pub const STAGE_LABEL: &str = "kargo.akuity.io/stage";
pub const COLLECTION_LABEL: &str = "kargo.akuity.io/freight-collection";
pub const PROMOTION_LABEL: &str = "kargo.akuity.io/promotion";

/// How many verifications a `freightHistory` entry keeps.
const VERIFICATION_HISTORY: usize = 10;
/// The longest one measurement may take.
const MEASUREMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a Stage verifies with templates (otherwise a successful Promotion verifies).
pub fn configured(spec: &StageSpec) -> bool {
    spec.verification
        .as_ref()
        .is_some_and(|v| !v.analysis_templates.is_empty())
}

/// Replaces `{{args.NAME}}` (and `{{ args.NAME }}`) in every string of `value`.
fn substitute(value: &mut Value, args: &BTreeMap<String, String>) {
    match value {
        Value::String(s) if s.contains("{{") => {
            for (name, v) in args {
                for form in [
                    format!("{{{{args.{name}}}}}"),
                    format!("{{{{ args.{name} }}}}"),
                ] {
                    if s.contains(&form) {
                        *s = s.replace(&form, v);
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, args)),
        Value::Object(map) => map.values_mut().for_each(|v| substitute(v, args)),
        _ => {}
    }
}

/// The run's spec from the Stage's templates, or why it cannot be made.
fn build_spec(
    r: &impl Reader,
    project: &str,
    stage: &str,
    spec: &StageSpec,
    freight: &[Value],
) -> Result<Value, String> {
    let verification = spec.verification.clone().unwrap_or_default();
    let mut metrics: Vec<Value> = Vec::new();
    let mut declared: BTreeMap<String, Argument> = BTreeMap::new();
    let mut dry_run = Vec::new();
    let mut retention = Vec::new();
    for reference in &verification.analysis_templates {
        if reference
            .kind
            .as_deref()
            .is_some_and(|k| k != "AnalysisTemplate")
        {
            return Err(format!(
                "verification names a {} {:?}; only AnalysisTemplates in the project are supported",
                reference.kind.as_deref().unwrap_or_default(),
                reference.name
            ));
        }
        let template = r
            .get(Kind::AnalysisTemplate, project, &reference.name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "AnalysisTemplate {:?} not found in project {project:?} (apply it, or fix the Stage's spec.verification.analysisTemplates)",
                    reference.name
                )
            })?;
        let t: AnalysisTemplateSpec = serde_json::from_value(template.spec().clone())
            .map_err(|e| format!("AnalysisTemplate {}: {e}", reference.name))?;
        for metric in &t.metrics {
            if metrics.iter().any(|m| m["name"] == json!(metric.name)) {
                return Err(format!(
                    "metric {:?} is defined by two of the Stage's AnalysisTemplates",
                    metric.name
                ));
            }
            metrics.push(serde_json::to_value(metric).map_err(|e| e.to_string())?);
        }
        for arg in t.args {
            declared.entry(arg.name.clone()).or_insert(arg);
        }
        dry_run.extend(t.dry_run.iter().map(|d| d.metric_name.clone()));
        retention.extend(t.measurement_retention.iter().cloned());
    }
    // The Stage's args, with expressions over ctx, vars and the Freight.
    let views: Vec<FreightView> = freight.iter().map(FreightView::of).collect();
    let mut vars = Map::new();
    for var in &spec.vars {
        let scope = Scope {
            variables: json!({"ctx": {"project": project, "stage": stage}, "vars": vars.clone()})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            freight: &views,
            ..Scope::default()
        };
        let value = expr::eval_string(var.value.as_deref().unwrap_or_default(), &scope)
            .map_err(|e| format!("Stage var {:?}: {e}", var.name))?;
        vars.insert(var.name.clone(), value);
    }
    let scope = Scope {
        variables: json!({"ctx": {"project": project, "stage": stage}, "vars": vars})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        freight: &views,
        ..Scope::default()
    };
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut args = Vec::new();
    for arg in &verification.args {
        if !declared.contains_key(&arg.name) {
            return Err(format!(
                "verification arg {:?} is not declared by the Stage's AnalysisTemplates (they declare {})",
                arg.name,
                declared.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let value = expr::eval_string(arg.value.as_deref().unwrap_or_default(), &scope)
            .map_err(|e| format!("verification arg {:?}: {e}", arg.name))?;
        let text = match value {
            Value::String(s) => s,
            other => other.to_string(),
        };
        values.insert(arg.name.clone(), text);
    }
    for (name, arg) in &declared {
        if let Some(v) = values.get(name) {
            args.push(json!({"name": name, "value": v}));
        } else if let Some(v) = &arg.value {
            values.insert(name.clone(), v.clone());
            args.push(json!({"name": name, "value": v}));
        } else if let Some(from) = &arg.value_from {
            // Secret values are read at each measurement, never stored in the run.
            args.push(json!({"name": name, "valueFrom": from}));
        } else {
            return Err(format!(
                "AnalysisTemplate arg {name:?} has no value; give it one in the Stage's spec.verification.args"
            ));
        }
    }
    for metric in &mut metrics {
        substitute(metric, &values);
    }
    let names: Vec<String> = freight
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_string))
        .collect();
    Ok(json!({
        "metrics": metrics,
        "args": args,
        "dryRun": dry_run.iter().map(|m| json!({"metricName": m})).collect::<Vec<_>>(),
        "measurementRetention": retention,
        "freight": names.first().cloned().unwrap_or_default(),
        "freightCollection": freight,
    }))
}

/// Measurements kept per metric when `measurementRetention` does not say (Argo's default).
const DEFAULT_MEASUREMENTS_KEPT: usize = 10;

/// Whether a `metricName` of `dryRun` or `measurementRetention` names `metric`: the name
/// itself, `*`, or (as Argo allows) a regular expression matching the whole name.
fn names(pattern: &str, metric: &str) -> bool {
    pattern == metric
        || pattern == "*"
        || regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|r| r.is_match(metric))
}

/// Creates the AnalysisRun for the Freight collection a Stage now holds (inside the caller's
/// transaction) and returns the `verificationHistory` record for it. A run that cannot be
/// built (a missing template, an arg without value) is stored as an Error with the reason.
#[allow(clippy::too_many_arguments)]
pub fn start(
    tx: &mut WriteTx,
    project: &str,
    stage: &str,
    spec: &StageSpec,
    freight: &[Value],
    collection_id: &str,
    promotion: Option<&str>,
    actor: &str,
    now: SystemTime,
) -> Result<Value, StoreError> {
    let name = format!("{stage}.{}", ulid::Ulid::new().to_string().to_lowercase());
    let verification = spec.verification.clone().unwrap_or_default();
    let metadata = verification.analysis_run_metadata.unwrap_or_default();
    let mut labels = metadata.labels.clone();
    labels.insert(STAGE_LABEL.into(), stage.into());
    labels.insert(COLLECTION_LABEL.into(), collection_id.into());
    if let Some(p) = promotion {
        labels.insert(PROMOTION_LABEL.into(), p.into());
    }
    let (run_spec, status) = match build_spec(tx, project, stage, spec, freight) {
        Ok(s) => (s, json!({"phase": "Pending", "startedAt": time_text(now)})),
        Err(message) => (
            json!({"metrics": [], "freightCollection": freight}),
            json!({"phase": "Error", "message": message, "startedAt": time_text(now), "completedAt": time_text(now)}),
        ),
    };
    let mut body = Map::new();
    body.insert("spec".into(), run_spec);
    body.insert("status".into(), status.clone());
    let object = Object {
        api_version: crate::resource::ROLLOUTS_API_VERSION.into(),
        kind: Kind::AnalysisRun,
        metadata: ObjectMeta {
            name: name.clone(),
            namespace: Some(project.into()),
            labels,
            annotations: metadata.annotations.clone(),
            ..ObjectMeta::default()
        },
        body,
    };
    tx.put(object, Some("0"), StatusMode::Replace)?;
    Ok(json!({
        "id": name,
        "actor": actor,
        "startTime": time_text(now),
        "phase": status["phase"],
        "message": status["message"],
        "analysisRun": {"namespace": project, "name": name, "phase": status["phase"]},
    }))
}

/// Starts a verification of what Stage `stage` holds now (`dray verify stage`). Fails when the
/// Stage holds nothing, has no verification, or is verifying already.
pub fn reverify(
    tx: &mut WriteTx,
    project: &str,
    stage: &str,
    actor: &str,
) -> Result<Result<String, String>, StoreError> {
    let Some(mut object) = tx.get(Kind::Stage, project, stage)? else {
        return Ok(Err(format!(
            "Stage {stage:?} not found in project {project:?}"
        )));
    };
    let Ok(spec) = serde_json::from_value::<StageSpec>(object.spec().clone()) else {
        return Ok(Err(format!("Stage {stage:?} has an unreadable spec")));
    };
    if !configured(&spec) {
        return Ok(Err(format!(
            "Stage {stage:?} has no spec.verification.analysisTemplates; its Freight is verified when a promotion succeeds"
        )));
    }
    let mut status = object.status().as_object().cloned().unwrap_or_default();
    let mut history = status
        .get("freightHistory")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(current) = history.first_mut() else {
        return Ok(Err(format!(
            "Stage {stage:?} holds no Freight yet; promote some first"
        )));
    };
    let last = &current["verificationHistory"][0]["phase"];
    if last
        .as_str()
        .is_some_and(|p| !crate::resource::phase_ended(p))
    {
        return Ok(Err(format!(
            "Stage {stage:?} is verifying already ({}); abort it first with `dray verify stage {stage} --abort`",
            current["verificationHistory"][0]["id"]
                .as_str()
                .unwrap_or_default()
        )));
    }
    let items: Vec<Value> = current["items"]
        .as_object()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    let id = current["id"].as_str().unwrap_or_default().to_string();
    let record = start(
        tx,
        project,
        stage,
        &spec,
        &items,
        &id,
        None,
        actor,
        SystemTime::now(),
    )?;
    let run = record["id"].as_str().unwrap_or_default().to_string();
    let list = current
        .as_object_mut()
        .expect("a history entry")
        .entry("verificationHistory")
        .or_insert_with(|| json!([]));
    if let Value::Array(list) = list {
        list.insert(0, record);
        list.truncate(VERIFICATION_HISTORY);
    }
    status.insert("freightHistory".into(), Value::Array(history));
    object.body.insert("status".into(), Value::Object(status));
    tx.put(object, None, StatusMode::Replace)?;
    Ok(Ok(run))
}

/// The running verification of a Stage, if any (its AnalysisRun's name).
pub fn current_run(stage: &Object) -> Option<String> {
    let record = &stage.status()["freightHistory"][0]["verificationHistory"][0];
    let phase = record["phase"].as_str().unwrap_or_default();
    (!crate::resource::phase_ended(phase))
        .then(|| record["id"].as_str().map(str::to_string))
        .flatten()
}

/// The state of one metric while a run goes on (`status.metricResults[]`).
#[derive(Debug, Clone, Default)]
struct Tally {
    count: i64,
    successful: i64,
    failed: i64,
    inconclusive: i64,
    error: i64,
    consecutive_error: i64,
}

fn limit(v: &Option<IntOrString>, default: i64) -> i64 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => s.trim().parse().unwrap_or(default),
        None => default,
    }
}

/// A metric's phase from its tally, or `None` while it goes on.
fn assess(metric: &Metric, t: &Tally) -> Option<&'static str> {
    if t.failed > limit(&metric.failure_limit, 0) {
        return Some("Failed");
    }
    if t.inconclusive > limit(&metric.inconclusive_limit, 0) {
        return Some("Inconclusive");
    }
    if t.consecutive_error > limit(&metric.consecutive_error_limit, 4) {
        return Some("Error");
    }
    let count = match (&metric.count, &metric.interval) {
        (Some(c), _) => limit(&Some(c.clone()), 1),
        (None, None) => 1,
        (None, Some(_)) => 0, // Argo: with an interval and no count, measure until it fails
    };
    (count > 0 && t.count >= count).then_some("Successful")
}

/// Applies `successCondition` / `failureCondition` to a measured value, as Argo does.
fn evaluate(metric: &Metric, value: &Value) -> Result<&'static str, String> {
    let scope = Scope {
        variables: json!({"result": value})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        ..Scope::default()
    };
    let check = |what: &str, code: &Option<String>| -> Result<Option<bool>, String> {
        let Some(code) = code.as_deref().filter(|c| !c.trim().is_empty()) else {
            return Ok(None);
        };
        match expr::eval_expression(code, &scope) {
            Ok(Value::Bool(b)) => Ok(Some(b)),
            Ok(other) => Err(format!("{what} {code:?} gave {other}, not true or false")),
            Err(e) => Err(format!("{what} {code:?}: {e}")),
        }
    };
    let success = check("successCondition", &metric.success_condition)?;
    let failure = check("failureCondition", &metric.failure_condition)?;
    Ok(match (success, failure) {
        (None, None) => "Successful",
        (Some(s), None) => {
            if s {
                "Successful"
            } else {
                "Failed"
            }
        }
        (None, Some(f)) => {
            if f {
                "Failed"
            } else {
                "Successful"
            }
        }
        (Some(s), Some(f)) => {
            if f {
                "Failed"
            } else if s {
                "Successful"
            } else {
                "Inconclusive"
            }
        }
    })
}

/// The verifier kind and config a metric's provider names.
fn provider(metric: &Metric) -> Result<(String, Value), String> {
    let p = &metric.provider;
    if let Some(web) = &p.web {
        return Ok(("web".into(), serde_json::to_value(web).unwrap_or_default()));
    }
    if let Some(prom) = &p.prometheus {
        return Ok((
            "prometheus".into(),
            serde_json::to_value(prom).unwrap_or_default(),
        ));
    }
    if let Some(Value::Object(plugin)) = &p.plugin
        && plugin.len() == 1
        && let Some((kind, config)) = plugin.iter().next()
    {
        return Ok((kind.clone(), config.clone()));
    }
    let named = serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_object().and_then(|m| m.keys().next().cloned()))
        .unwrap_or_else(|| "none".into());
    Err(format!(
        "metric {:?}: provider {named} is not run by Dray; use web, prometheus, or plugin: {{VERIFIER: config}} with a verifier component",
        metric.name
    ))
}

/// Runs (or resumes) AnalysisRun `name` of `project` to its end.
pub(super) async fn run(
    engine: Engine,
    project: String,
    name: String,
    mut abort: watch::Receiver<bool>,
) {
    let read = |engine: &Engine| {
        let (project, name) = (project.clone(), name.clone());
        let store = engine.store().clone();
        async move {
            store
                .read_async(move |r| r.get(Kind::AnalysisRun, &project, &name))
                .await
        }
    };
    let Ok(Some(object)) = read(&engine).await else {
        return;
    };
    let mut status = object.status().as_object().cloned().unwrap_or_default();
    if crate::resource::phase_ended(
        status
            .get("phase")
            .and_then(Value::as_str)
            .unwrap_or("Pending"),
    ) {
        finish(&engine, &object, status).await;
        return;
    }
    let metrics: Vec<Metric> = object.spec()["metrics"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|v| serde_json::from_value(v.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    let dry: Vec<String> = object.spec()["dryRun"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|m| m["metricName"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let is_dry = |m: &str| dry.iter().any(|d| names(d, m));
    // Measurements kept per metric: the first `measurementRetention` entry naming it, else
    // Argo's default of 10.
    let retention: Vec<(String, usize)> = object.spec()["measurementRetention"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|r| {
                    Some((
                        r["metricName"].as_str()?.to_string(),
                        r["limit"].as_u64()?.max(1) as usize,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let kept = |m: &str| {
        retention
            .iter()
            .find(|(pattern, _)| names(pattern, m))
            .map_or(DEFAULT_MEASUREMENTS_KEPT, |(_, limit)| *limit)
    };
    let started = status
        .get("startedAt")
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .unwrap_or_else(SystemTime::now);
    status.insert("phase".into(), json!("Running"));
    status
        .entry("startedAt")
        .or_insert_with(|| json!(time_text(started)));
    let mut results: Vec<Value> = status
        .get("metricResults")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for m in &metrics {
        if !results.iter().any(|r| r["name"] == json!(m.name)) {
            results.push(json!({"name": m.name, "phase": "Running", "count": 0, "successful": 0, "failed": 0, "inconclusive": 0, "error": 0, "consecutiveError": 0, "measurements": [], "dryRun": is_dry(&m.name)}));
        }
    }
    let workdir = engine.data_dir().join("work").join(&project).join(&name);
    let context = runtime::StepContext {
        project: project.clone(),
        stage: object
            .metadata
            .labels
            .get(STAGE_LABEL)
            .cloned()
            .unwrap_or_default(),
        promotion: object
            .metadata
            .labels
            .get(PROMOTION_LABEL)
            .cloned()
            .unwrap_or_default(),
        step_alias: String::new(),
        freight: Vec::new(),
        vars: "{}".into(),
        outputs: "{}".into(),
    };
    let secret_args = secret_args(&engine, &project, object.spec()).await;
    loop {
        status.insert("metricResults".into(), Value::Array(results.clone()));
        if !save(&engine, &project, &name, &status).await {
            return; // deleted
        }
        // What is still going, and when each is due next.
        let now = SystemTime::now();
        let mut due: Option<(usize, SystemTime)> = None;
        for (i, m) in metrics.iter().enumerate() {
            if results[i]["phase"] != "Running" {
                continue;
            }
            let last = results[i]["measurements"]
                .as_array()
                .and_then(|l| l.last())
                .and_then(|l| l["finishedAt"].as_str())
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
            let wait = |d: &Option<String>| {
                d.as_deref()
                    .and_then(|d| parse_duration(d).ok())
                    .unwrap_or_default()
            };
            let at = match last {
                None => started + wait(&m.initial_delay),
                Some(t) => t + wait(&m.interval),
            };
            if due.is_none_or(|(_, d)| at < d) {
                due = Some((i, at));
            }
        }
        let Some((index, at)) = due else { break };
        if let Ok(wait) = at.duration_since(now) {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = abort.changed() => {}
            }
        }
        if *abort.borrow() {
            status.insert("phase".into(), json!("Aborted"));
            status.insert("message".into(), json!("aborted"));
            break;
        }
        let metric = &metrics[index];
        let taken = measure(
            &engine,
            &project,
            &name,
            metric,
            &context,
            &workdir,
            &secret_args,
        )
        .await;
        let entry = results[index].as_object_mut().expect("a metric result");
        let mut t = Tally {
            count: entry["count"].as_i64().unwrap_or(0),
            successful: entry["successful"].as_i64().unwrap_or(0),
            failed: entry["failed"].as_i64().unwrap_or(0),
            inconclusive: entry["inconclusive"].as_i64().unwrap_or(0),
            error: entry["error"].as_i64().unwrap_or(0),
            consecutive_error: entry["consecutiveError"].as_i64().unwrap_or(0),
        };
        match taken["phase"].as_str().unwrap_or("Error") {
            "Successful" => {
                t.successful += 1;
                t.count += 1;
                t.consecutive_error = 0;
            }
            "Failed" => {
                t.failed += 1;
                t.count += 1;
                t.consecutive_error = 0;
            }
            "Inconclusive" => {
                t.inconclusive += 1;
                t.count += 1;
                t.consecutive_error = 0;
            }
            _ => {
                t.error += 1;
                t.consecutive_error += 1;
            }
        }
        for (k, v) in [
            ("count", t.count),
            ("successful", t.successful),
            ("failed", t.failed),
            ("inconclusive", t.inconclusive),
            ("error", t.error),
            ("consecutiveError", t.consecutive_error),
        ] {
            entry.insert(k.into(), json!(v));
        }
        if let Some(Value::Array(list)) = entry.get_mut("measurements") {
            list.push(taken.clone());
            let excess = list.len().saturating_sub(kept(&metric.name));
            list.drain(..excess);
        }
        if let Some(phase) = assess(metric, &t) {
            entry.insert("phase".into(), json!(phase));
            if let Some(m) = taken["message"].as_str() {
                entry.insert("message".into(), json!(m));
            }
            // A failing metric ends the run (Argo terminates the others).
            if phase != "Successful" && !is_dry(&metric.name) {
                for r in results.iter_mut() {
                    if r["phase"] == "Running" {
                        r["phase"] = json!("Successful");
                        r["message"] = json!("stopped: another metric ended the run");
                    }
                }
            }
        }
    }
    status.insert("metricResults".into(), Value::Array(results.clone()));
    if status["phase"] != "Aborted" {
        let worst = results
            .iter()
            .filter(|r| r["dryRun"] != true)
            .map(|r| r["phase"].as_str().unwrap_or("Error"))
            .max_by_key(|p| match *p {
                "Successful" => 0,
                "Inconclusive" => 1,
                "Error" => 2,
                _ => 3,
            })
            .unwrap_or("Successful");
        status.insert("phase".into(), json!(worst));
        let message = results
            .iter()
            .filter(|r| r["phase"] == json!(worst) && r["dryRun"] != true)
            .map(|r| {
                format!(
                    "metric {}: {}{}",
                    r["name"].as_str().unwrap_or_default(),
                    worst.to_lowercase(),
                    r["message"]
                        .as_str()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        status.insert("message".into(), json!(message));
    }
    status.insert("completedAt".into(), json!(time_text(SystemTime::now())));
    let _ = std::fs::remove_dir_all(&workdir);
    let mut object = object;
    object
        .body
        .insert("status".into(), Value::Object(status.clone()));
    finish(&engine, &object, status).await;
}

/// The values of `valueFrom.secretKeyRef` args, read now from the project's Secrets.
async fn secret_args(engine: &Engine, project: &str, spec: &Value) -> BTreeMap<String, String> {
    let refs: Vec<(String, String, String)> = spec["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|arg| {
                    let r = &arg["valueFrom"]["secretKeyRef"];
                    Some((
                        arg["name"].as_str()?.to_string(),
                        r["name"].as_str()?.to_string(),
                        r["key"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    if refs.is_empty() {
        return BTreeMap::new();
    }
    let project = project.to_string();
    engine
        .store()
        .read_async(move |r| {
            let mut out = BTreeMap::new();
            for (arg, secret, key) in refs {
                if let Some(values) = crate::credentials::generic_secrets(r, &project)
                    .into_iter()
                    .find(|(n, _)| *n == secret)
                    .map(|(_, v)| v)
                    && let Some(v) = values.get(&key)
                {
                    out.insert(arg, v.clone());
                }
            }
            Ok(out)
        })
        .await
        .unwrap_or_default()
}

/// Takes one measurement of `metric`: the verifier's answer, judged by the conditions.
async fn measure(
    engine: &Engine,
    project: &str,
    run: &str,
    metric: &Metric,
    context: &runtime::StepContext,
    workdir: &std::path::Path,
    secrets: &BTreeMap<String, String>,
) -> Value {
    let started = SystemTime::now();
    // Secret args may reach a message (a URL that carries a token, say): hide them.
    let redactor = crate::credentials::Redactor::new(secrets.values().cloned());
    let done = |phase: &str, value: Value, message: Option<String>| {
        let message = message.map(|m| redactor.redact(&m));
        let mut m = json!({
            "phase": phase,
            "value": value,
            "startedAt": time_text(started),
            "finishedAt": time_text(SystemTime::now()),
        });
        if let Some(message) = message {
            m["message"] = json!(message);
        }
        m
    };
    let (kind, mut config) = match provider(metric) {
        Ok(p) => p,
        Err(e) => return done("Error", Value::Null, Some(e)),
    };
    substitute(&mut config, secrets);
    let Some(plugin) = engine.verifier_for(&kind) else {
        return done(
            "Error",
            Value::Null,
            Some(format!(
                "no verifier {kind:?} is loaded; the built-in ones are {}",
                engine.verifier_kinds().join(", ")
            )),
        );
    };
    if let Err(e) = std::fs::create_dir_all(workdir) {
        return done(
            "Error",
            Value::Null,
            Some(format!("cannot make {}: {e}", workdir.display())),
        );
    }
    let mut limits = engine.limits(project, &plugin.name);
    limits.timeout = MEASUREMENT_TIMEOUT;
    let mut report = plugin
        .verify(&kind, context, &config, workdir, &limits)
        .await;
    if report.outcome.is_ok()
        && let Some(reason) = crate::runtime::disk::check(workdir, limits.disk).await
    {
        report.outcome = Err(crate::runtime::over_quota(reason));
    }
    let log: Vec<runtime::log::Line> = report.log.iter().map(|l| l.redacted(&redactor)).collect();
    logs::append(engine.data_dir(), project, run, &metric.name, &log);
    let (phase, value, message) = match report.outcome {
        // A call that failed (crash, timeout, bad config) is an Error measurement: it counts
        // toward consecutiveErrorLimit, as a provider error does in Argo.
        Err(f) => ("Error", Value::Null, Some(f.message)),
        Ok(m) => match m.phase {
            MeasurementPhase::Successful => match evaluate(metric, &m.value) {
                Ok(phase) => (phase, m.value, m.message),
                Err(e) => ("Error", m.value, Some(e)),
            },
            MeasurementPhase::Failed => ("Failed", m.value, m.message),
            MeasurementPhase::Inconclusive => ("Inconclusive", m.value, m.message),
            MeasurementPhase::Error => ("Error", m.value, m.message),
        },
    };
    let line = runtime::log::Line {
        time: time_text(SystemTime::now()),
        level: if phase == "Successful" {
            "info"
        } else {
            "warn"
        }
        .into(),
        source: runtime::log::Source::Host,
        message: format!(
            "measurement: {} (value {value}){}",
            phase.to_lowercase(),
            message
                .as_deref()
                .map(|m| format!(": {}", redactor.redact(m)))
                .unwrap_or_default()
        ),
        fields: Vec::new(),
    };
    logs::append(engine.data_dir(), project, run, &metric.name, &[line]);
    done(phase, value, message)
}

/// Writes the run's status; false if the run is gone.
async fn save(engine: &Engine, project: &str, name: &str, status: &Map<String, Value>) -> bool {
    let (project, name, status) = (project.to_string(), name.to_string(), status.clone());
    engine
        .store()
        .write_retrying(move |tx| {
            let Some(mut o) = tx.get(Kind::AnalysisRun, &project, &name)? else {
                return Ok::<bool, StoreError>(false);
            };
            o.body
                .insert("status".into(), Value::Object(status.clone()));
            tx.put(o, None, StatusMode::Replace)?;
            Ok(true)
        })
        .await
        .unwrap_or(false)
}

/// Records a run's end: its status, the Stage's verification record, and (when Successful)
/// `verifiedIn` on every Freight of the collection.
async fn finish(engine: &Engine, run: &Object, status: Map<String, Value>) {
    let project = run.project().to_string();
    let name = run.name().to_string();
    let stage = run
        .metadata
        .labels
        .get(STAGE_LABEL)
        .cloned()
        .unwrap_or_default();
    let collection = run
        .metadata
        .labels
        .get(COLLECTION_LABEL)
        .cloned()
        .unwrap_or_default();
    let phase = status["phase"].as_str().unwrap_or("Error").to_string();
    let items: Vec<String> = run.spec()["freightCollection"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|i| i["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let (p, n, st) = (project.clone(), name.clone(), stage.clone());
    let saved = engine
        .store()
        .write_retrying(move |tx| {
            let now = SystemTime::now();
            if let Some(mut o) = tx.get(Kind::AnalysisRun, &p, &n)? {
                o.body
                    .insert("status".into(), Value::Object(status.clone()));
                tx.put(o, None, StatusMode::Replace)?;
            }
            // Indexed as a Value: a missing field reads as null instead of panicking.
            let status = Value::Object(status.clone());
            let Some(mut stage) = tx.get(Kind::Stage, &p, &st)? else {
                return Ok::<(), StoreError>(());
            };
            let mut s = stage.status().as_object().cloned().unwrap_or_default();
            let mut history = s
                .get("freightHistory")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for entry in history.iter_mut().filter(|e| e["id"] == json!(collection)) {
                if let Some(Value::Array(list)) = entry.get_mut("verificationHistory") {
                    for record in list.iter_mut().filter(|r| r["id"] == json!(n)) {
                        record["phase"] = json!(status["phase"]);
                        record["message"] = status["message"].clone();
                        record["finishTime"] = status["completedAt"].clone();
                        record["analysisRun"]["phase"] = json!(status["phase"]);
                    }
                }
            }
            s.insert("freightHistory".into(), Value::Array(history));
            stage.body.insert("status".into(), Value::Object(s));
            tx.put(stage, None, StatusMode::Replace)?;
            if status["phase"] == "Successful" {
                pipeline::record_verified(tx, &p, &st, &items, now)?;
            }
            let reason = match status["phase"].as_str().unwrap_or("Error") {
                "Successful" => "Succeeded",
                "Error" => "Errored",
                other => other,
            };
            super::events::record(
                tx,
                &p,
                &format!("FreightVerification{reason}"),
                format!(
                    "verification in Stage {st}: {}{}",
                    reason.to_lowercase(),
                    status["message"]
                        .as_str()
                        .filter(|m| !m.is_empty())
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ),
                (Kind::AnalysisRun, &n),
                super::events::About {
                    freight: items.first().map(String::as_str),
                    stage: Some(&st),
                    analysis_run: Some(&n),
                    ..Default::default()
                },
            )?;
            Ok(())
        })
        .await;
    if let Err(e) = saved {
        tracing::error!(%project, run = %name, error = %e, "cannot record the verification's end");
    }
    tracing::info!(%project, %stage, run = %name, %phase, "verification finished");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(yaml: Value) -> Metric {
        serde_json::from_value(yaml).unwrap()
    }

    #[test]
    fn conditions_decide_as_argo_does() {
        let both = metric(
            json!({"name": "m", "successCondition": "result > 5", "failureCondition": "result < 2", "provider": {}}),
        );
        assert_eq!(evaluate(&both, &json!(7)).unwrap(), "Successful");
        assert_eq!(evaluate(&both, &json!(1)).unwrap(), "Failed");
        assert_eq!(evaluate(&both, &json!(3)).unwrap(), "Inconclusive");
        let success =
            metric(json!({"name": "m", "successCondition": "result[0] >= 0.9", "provider": {}}));
        assert_eq!(evaluate(&success, &json!([0.5])).unwrap(), "Failed");
        let none = metric(json!({"name": "m", "provider": {}}));
        assert_eq!(evaluate(&none, &json!("anything")).unwrap(), "Successful");
        let helper =
            metric(json!({"name": "m", "successCondition": "asInt(result) == 3", "provider": {}}));
        assert_eq!(evaluate(&helper, &json!("3")).unwrap(), "Successful");
        let bad = metric(json!({"name": "m", "successCondition": "result", "provider": {}}));
        assert!(evaluate(&bad, &json!(3)).is_err());
    }

    #[test]
    fn metric_names_match_exactly_by_star_or_by_a_whole_regex() {
        assert!(names("healthy", "healthy"));
        assert!(names("*", "healthy"));
        assert!(names("health.*", "healthy"));
        assert!(
            !names("health", "healthy"),
            "a regex must match the whole name"
        );
        assert!(!names("[", "healthy"), "a bad regex names nothing");
    }

    #[test]
    fn limits_and_counts_end_a_metric() {
        let once = metric(json!({"name": "m", "provider": {}}));
        assert_eq!(assess(&once, &Tally::default()), None);
        let one = Tally {
            count: 1,
            successful: 1,
            ..Tally::default()
        };
        assert_eq!(assess(&once, &one), Some("Successful"));
        let tolerant = metric(
            json!({"name": "m", "count": 3, "interval": "1s", "failureLimit": 1, "provider": {}}),
        );
        let failed_once = Tally {
            count: 1,
            failed: 1,
            ..Tally::default()
        };
        assert_eq!(assess(&tolerant, &failed_once), None);
        let failed_twice = Tally {
            count: 2,
            failed: 2,
            ..Tally::default()
        };
        assert_eq!(assess(&tolerant, &failed_twice), Some("Failed"));
        let errors = Tally {
            error: 5,
            consecutive_error: 5,
            ..Tally::default()
        };
        assert_eq!(assess(&tolerant, &errors), Some("Error"));
        let forever = metric(json!({"name": "m", "interval": "1s", "provider": {}}));
        let many = Tally {
            count: 100,
            successful: 100,
            ..Tally::default()
        };
        assert_eq!(assess(&forever, &many), None);
    }

    #[test]
    fn args_fill_every_string_of_a_metric() {
        let mut m = json!({"provider": {"web": {"url": "http://{{args.host}}/health?stage={{ args.stage }}"}}});
        let args = [
            ("host".to_string(), "svc:8080".to_string()),
            ("stage".to_string(), "uat".to_string()),
        ]
        .into();
        substitute(&mut m, &args);
        assert_eq!(
            m["provider"]["web"]["url"],
            "http://svc:8080/health?stage=uat"
        );
    }
}
