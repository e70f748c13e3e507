//! Running one Promotion: its steps in order, in a work directory under the data dir.
//!
//! The Promotion's status is the whole truth: `currentStep`, `stepExecutionMetadata` (one entry
//! per step: alias, status, times, error count, message) and `state` (the outputs by alias) are
//! written after every step, and a step is marked `Running` before it is called. So when the
//! daemon dies, the next start resumes at the step that was running and runs it again; the work
//! directory (`<data dir>/work/<project>/<promotion>`) survives the restart and is removed once
//! the Promotion ends.
//!
//! Semantics follow Kargo (KARGO-REFERENCE §4): an `if` is evaluated once, before a step first
//! starts; with none a step runs only while nothing before it failed (GitHub Actions' rule);
//! `continueOnError` failures count for neither `failure()` nor the phase; a failed call is
//! retried until `retry.errorThreshold` consecutive failures (default 1: no retries) unless it
//! failed for good (`terminal`, `invalid-config`); a step answering `running` is asked again
//! after its `retry-after` until `retry.timeout`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::expr::{self, FreightView, Scope};
use super::{Engine, auto, logs, pipeline, verification};
use crate::credentials::{ProjectGitCredentials, ProjectSecrets};
use crate::host::credentials::{SecretSource, Secrets};
use crate::host::git::GitAccess;
use crate::host::metadata::{Metadata, ProjectMetadata};
use crate::resource::now;
use crate::resource::validate::parse_duration;
use crate::resource::{Kind, NamedValue, PromotionSpec, PromotionStep, StageSpec};
use crate::runtime::{self, FailureKind, Limits, StepContext};
use crate::store::{Reader, StatusMode};

/// The shortest wait before asking a `running` step again.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How many Freight a Stage's `freightHistory` keeps.
const FREIGHT_HISTORY: usize = 10;

/// How a Promotion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Succeeded,
    Failed,
    Errored,
    Aborted,
}

impl Ending {
    fn phase(self) -> &'static str {
        match self {
            Ending::Succeeded => "Succeeded",
            Ending::Failed => "Failed",
            Ending::Errored => "Errored",
            Ending::Aborted => "Aborted",
        }
    }
}

/// One Promotion being run.
struct Run {
    engine: Engine,
    project: String,
    name: String,
    spec: PromotionSpec,
    stage_vars: Vec<NamedValue>,
    status: Map<String, Value>,
    workdir: PathBuf,
    abort: watch::Receiver<bool>,
    /// The values of the project's generic Secrets, hidden in every message and log line the
    /// run keeps (a step's config may carry one, and a failing step may echo its config).
    redactor: crate::credentials::Redactor,
}

/// Runs (or resumes) Promotion `name` of `project` to its end.
pub(super) async fn run(
    engine: Engine,
    project: String,
    name: String,
    abort: watch::Receiver<bool>,
) {
    let loaded = engine
        .store()
        .read_async({
            let (project, name) = (project.clone(), name.clone());
            move |r| r.get(Kind::Promotion, &project, &name)
        })
        .await;
    let object = match loaded {
        Ok(Some(o)) => o,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(%project, promotion = %name, error = %e, "cannot read the promotion");
            return;
        }
    };
    let spec: PromotionSpec = match serde_json::from_value(object.spec().clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%project, promotion = %name, error = %e, "unreadable promotion spec");
            return;
        }
    };
    let stage_vars = engine
        .store()
        .read_async({
            let (project, stage) = (project.clone(), spec.stage.clone());
            move |r| r.get(Kind::Stage, &project, &stage)
        })
        .await
        .ok()
        .flatten()
        .and_then(|s| serde_json::from_value::<StageSpec>(s.spec().clone()).ok())
        .map(|s| s.vars)
        .unwrap_or_default();
    let workdir = engine.data_dir().join("work").join(&project).join(&name);
    let mut run = Run {
        engine,
        project,
        name,
        spec,
        stage_vars,
        status: object.status().as_object().cloned().unwrap_or_default(),
        workdir,
        abort,
        redactor: Default::default(),
    };
    let ending = run.steps().await;
    run.finish(ending).await;
}

impl Run {
    fn aborted(&self) -> bool {
        *self.abort.borrow()
    }

    fn log(&self, alias: &str, lines: &[runtime::log::Line]) {
        let redacted: Vec<runtime::log::Line>;
        let lines = if self.redactor.is_empty() {
            lines
        } else {
            redacted = lines.iter().map(|l| l.redacted(&self.redactor)).collect();
            &redacted
        };
        logs::append(
            self.engine.data_dir(),
            &self.project,
            &self.name,
            alias,
            lines,
        );
    }

    fn note(&self, alias: &str, level: &str, message: String) {
        self.log(
            alias,
            &[runtime::log::Line {
                time: now(),
                source: runtime::log::Source::Host,
                level: level.into(),
                message,
                fields: Vec::new(),
            }],
        );
    }

    /// Writes the status; false if the Promotion is gone (deleted meanwhile).
    async fn save(&self) -> bool {
        let (project, name, status) =
            (self.project.clone(), self.name.clone(), self.status.clone());
        let saved = self
            .engine
            .store()
            .write_retrying(move |tx| {
                let Some(mut object) = tx.get(Kind::Promotion, &project, &name)? else {
                    return Ok::<bool, crate::store::StoreError>(false);
                };
                object
                    .body
                    .insert("status".into(), Value::Object(status.clone()));
                tx.put(object, None, StatusMode::Replace)?;
                Ok(true)
            })
            .await;
        saved.unwrap_or_else(|e| {
            tracing::error!(project = %self.project, promotion = %self.name, error = %e, "cannot save the promotion's status");
            false
        })
    }

    fn metas(&mut self) -> &mut Vec<Value> {
        let entry = self
            .status
            .entry("stepExecutionMetadata")
            .or_insert_with(|| Value::Array(Vec::new()));
        if !entry.is_array() {
            *entry = Value::Array(Vec::new());
        }
        entry.as_array_mut().expect("an array")
    }

    fn state(&self) -> Map<String, Value> {
        self.status
            .get("state")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }

    fn freight_views(&self) -> Vec<FreightView> {
        let items = self.status["freightCollection"]["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        items.iter().map(FreightView::of).collect()
    }

    fn ctx(&self, alias: &str) -> Value {
        let freight = &self.status["freight"];
        json!({
            "project": self.project,
            "stage": self.spec.stage,
            "promotion": self.name,
            "targetFreight": {
                "name": freight["name"],
                "alias": freight["alias"],
                "origin": {"name": freight["origin"]["name"]},
            },
            "meta": {
                "promotion": {"actor": Value::Null, "rollback": false},
                "step": {"alias": alias},
            },
        })
    }

    /// The step's variables: Stage vars < Promotion vars < step vars, each evaluated in order.
    fn vars(
        &self,
        step: &PromotionStep,
        base: &Map<String, Value>,
        freight: &[FreightView],
        secret: &expr::SecretLookup,
        metadata: &expr::MetadataLookup,
    ) -> Result<Map<String, Value>, String> {
        let mut vars = Map::new();
        let layers: [(&str, &[NamedValue], bool); 3] = [
            ("Stage var", &self.stage_vars, false),
            ("promotion var", &self.spec.vars, false),
            ("step var", &step.vars, true),
        ];
        for (what, list, with_outputs) in layers {
            for var in list {
                let mut variables = base.clone();
                variables.insert("vars".into(), Value::Object(vars.clone()));
                if !with_outputs {
                    variables.remove("outputs");
                    variables.remove("task");
                }
                let scope = Scope {
                    variables,
                    freight,
                    secret: Some(secret),
                    metadata: Some(metadata),
                    ..Scope::default()
                };
                let text = var.value.clone().unwrap_or_default();
                let value = expr::eval_string(&text, &scope)
                    .map_err(|e| format!("{what} {:?}: {e}", var.name))?;
                vars.insert(var.name.clone(), value);
            }
        }
        Ok(vars)
    }

    /// Runs the steps from `currentStep`; returns how the Promotion ends.
    async fn steps(&mut self) -> Ending {
        if self.status.get("phase").and_then(Value::as_str) != Some("Running") {
            self.status.insert("phase".into(), json!("Running"));
            self.status.insert("startedAt".into(), json!(now()));
            self.status.remove("message");
            if !self.save().await {
                return Ending::Aborted;
            }
            self.engine
                .stage_started(&self.project, &self.spec.stage, &self.name)
                .await;
        }
        if let Err(e) = std::fs::create_dir_all(&self.workdir) {
            self.status.insert(
                "message".into(),
                json!(format!(
                    "cannot create the work directory {}: {e}",
                    self.workdir.display()
                )),
            );
            return Ending::Errored;
        }
        let steps = self.spec.steps.clone();
        loop {
            let current = self
                .status
                .get("currentStep")
                .and_then(Value::as_u64)
                .unwrap_or(0) as usize;
            let Some(step) = steps.get(current) else {
                break;
            };
            if self.aborted() {
                return Ending::Aborted;
            }
            let alias = step
                .as_
                .clone()
                .unwrap_or_else(|| format!("step-{}", current + 1));
            while self.metas().len() <= current {
                let n = self.metas().len();
                let a = steps[n]
                    .as_
                    .clone()
                    .unwrap_or_else(|| format!("step-{}", n + 1));
                self.metas().push(json!({"alias": a}));
            }
            match self.step(current, step, &alias).await {
                StepEnd::Next => {
                    self.status.insert("currentStep".into(), json!(current + 1));
                    if !self.save().await {
                        return Ending::Aborted;
                    }
                }
                StepEnd::Again(wait) => {
                    if !self.save().await {
                        return Ending::Aborted;
                    }
                    let mut abort = self.abort.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = abort.wait_for(|a| *a) => return Ending::Aborted,
                    }
                }
                StepEnd::Aborted => return Ending::Aborted,
            }
        }
        // The phase: the first failure that did not continue on error decides it.
        let metas = self.metas().clone();
        let failed = metas.iter().find(|m| {
            matches!(m["status"].as_str(), Some("Failed" | "Errored"))
                && m["continueOnError"] != json!(true)
        });
        match failed {
            None => Ending::Succeeded,
            Some(m) => {
                let message = format!(
                    "step {} {}: {}",
                    m["alias"].as_str().unwrap_or("?"),
                    m["status"].as_str().unwrap_or("failed").to_lowercase(),
                    m["message"].as_str().unwrap_or("")
                );
                self.status.insert("message".into(), json!(message));
                if m["status"] == "Errored" {
                    Ending::Errored
                } else {
                    Ending::Failed
                }
            }
        }
    }

    async fn step(&mut self, index: usize, step: &PromotionStep, alias: &str) -> StepEnd {
        let first_time = self.metas()[index].get("status").is_none();
        let state = self.state();
        let freight = self.freight_views();
        let needs_secrets = serde_json::to_string(step)
            .unwrap_or_default()
            .contains("ecret(")
            || self
                .stage_vars
                .iter()
                .chain(&self.spec.vars)
                .any(|v| v.value.as_deref().unwrap_or("").contains("ecret("));
        // Read for every step: also a step that uses none in its config may be granted
        // `credentials` and print what it reads.
        let all_secrets = match self.engine.generic_secrets(&self.project).await {
            Ok(secrets) => secrets,
            Err(e) => return self.store_fault(alias, "the project's Secrets", e),
        };
        self.redactor = crate::credentials::Redactor::of(&all_secrets);
        let secrets = if needs_secrets {
            all_secrets
        } else {
            BTreeMap::new()
        };
        // Metadata is read only for steps whose expressions ask for it.
        let metadata = if serde_json::to_string(step)
            .unwrap_or_default()
            .contains("Metadata(")
        {
            match self.engine.metadata(&self.project).await {
                Ok(metadata) => metadata,
                Err(e) => return self.store_fault(alias, "the project's metadata", e),
            }
        } else {
            BTreeMap::new()
        };
        let metadata_fn = move |stage: bool, name: &str| {
            let kind = if stage { "Stage" } else { "Freight" };
            metadata
                .get(&format!("{kind}/{name}"))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let secret_fn = move |name: &str, shared: bool| {
            let key = if shared {
                format!("shared/{name}")
            } else {
                format!("project/{name}")
            };
            secrets.get(&key).cloned().unwrap_or_default()
        };
        let mut base = Map::new();
        base.insert("ctx".into(), self.ctx(alias));
        base.insert("outputs".into(), Value::Object(state.clone()));
        if let Some((task, _)) = alias.split_once("::") {
            let prefix = format!("{task}::");
            let siblings: Map<String, Value> = state
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(&prefix)
                        .map(|inner| (inner.to_string(), v.clone()))
                })
                .collect();
            base.insert("task".into(), json!({"outputs": siblings}));
        }

        // The step's vars, once: for its `if` and for its config.
        let vars = self.vars(step, &base, &freight, &secret_fn, &metadata_fn);
        if first_time {
            let metas = self.metas().clone();
            let statuses: BTreeMap<String, String> = metas[..index]
                .iter()
                .filter_map(|m| {
                    Some((
                        m["alias"].as_str()?.to_string(),
                        m["status"].as_str()?.to_string(),
                    ))
                })
                .collect();
            let failed = metas[..index].iter().any(|m| {
                matches!(m["status"].as_str(), Some("Failed" | "Errored"))
                    && m["continueOnError"] != json!(true)
            });
            let run = match &step.if_ {
                None => Ok(!failed),
                Some(condition) => {
                    let mut variables = base.clone();
                    let known = vars.as_ref().cloned().unwrap_or_default();
                    variables.insert("vars".into(), Value::Object(known));
                    let scope = Scope {
                        variables,
                        freight: &freight,
                        statuses: Some(&statuses),
                        failed,
                        secret: Some(&secret_fn),
                        metadata: Some(&metadata_fn),
                    };
                    let code = condition.trim();
                    let code = code
                        .strip_prefix("${{")
                        .and_then(|c| c.strip_suffix("}}"))
                        .unwrap_or(code);
                    match expr::eval_expression(code, &scope) {
                        Ok(Value::Bool(b)) => Ok(b),
                        Ok(other) => Err(format!(
                            "if: {condition:?} must be true or false, not {other}"
                        )),
                        Err(e) => Err(format!("if: {condition:?}: {e}")),
                    }
                }
            };
            let meta = &mut self.metas()[index];
            meta["startedAt"] = json!(now());
            meta["continueOnError"] = json!(step.continue_on_error);
            match run {
                Ok(true) => {}
                Ok(false) => {
                    meta["status"] = json!("Skipped");
                    meta["finishedAt"] = meta["startedAt"].clone();
                    self.note(alias, "info", format!("step {alias} skipped"));
                    return StepEnd::Next;
                }
                Err(message) => return self.fail(index, alias, "Errored", message),
            }
        }

        let uses = step.uses.clone().unwrap_or_default();
        let Some(plugin) = self.engine.plugin_for(&uses) else {
            let known = self.engine.step_kinds().join(", ");
            return self.fail(
                index,
                alias,
                "Errored",
                format!("there is no step kind {uses:?}; Dray offers {known}"),
            );
        };
        let vars = match vars {
            Ok(v) => v,
            Err(e) => return self.fail(index, alias, "Errored", format!("step {alias}: {e}")),
        };
        let mut variables = base.clone();
        variables.insert("vars".into(), Value::Object(vars.clone()));
        let scope = Scope {
            variables,
            freight: &freight,
            secret: Some(&secret_fn),
            metadata: Some(&metadata_fn),
            ..Scope::default()
        };
        let config = match expr::eval_config(step.config.as_ref().unwrap_or(&json!({})), &scope) {
            Ok(c) => c,
            Err(e) => {
                return self.fail(
                    index,
                    alias,
                    "Errored",
                    format!("step {alias} ({uses}): {e}"),
                );
            }
        };

        self.metas()[index]["status"] = json!("Running");
        if !self.save().await {
            return StepEnd::Aborted;
        }
        let context = StepContext {
            project: self.project.clone(),
            stage: self.spec.stage.clone(),
            promotion: self.name.clone(),
            step_alias: alias.to_string(),
            freight: self.wit_freight(),
            vars: Value::Object(vars).to_string(),
            outputs: Value::Object(state).to_string(),
        };
        let limits = self.engine.limits(&self.project, &plugin.name);
        self.note(alias, "info", format!("step {alias} ({uses}) started"));
        let mut abort = self.abort.clone();
        let report = tokio::select! {
            report = plugin.run(&uses, &context, &config, &self.workdir, &limits) => report,
            _ = abort.wait_for(|a| *a) => {
                self.note(alias, "warn", format!("step {alias} stopped: the promotion was aborted"));
                let meta = &mut self.metas()[index];
                meta["status"] = json!("Aborted");
                meta["finishedAt"] = json!(now());
                return StepEnd::Aborted;
            }
        };
        self.log(alias, &report.log);
        let took = format!("{:.0} ms", report.duration.as_secs_f64() * 1000.0);
        // The work directory is measured after every call too: a short call (or the host on
        // its behalf, as in a clone) may have filled it between two of the watch's looks.
        let mut report = report;
        if report.outcome.is_ok()
            && let Some(reason) = crate::runtime::disk::check(&self.workdir, limits.disk).await
        {
            report.outcome = Err(crate::runtime::over_quota(reason));
        }
        match report.outcome {
            Ok(done) if done.status == runtime::Status::Running => {
                let started = self.metas()[index]["startedAt"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
                let limit = step
                    .retry
                    .as_ref()
                    .and_then(|r| r.timeout.as_deref())
                    .and_then(|t| parse_duration(t).ok());
                if let (Some(limit), Some(started)) = (limit, started)
                    && started.elapsed().unwrap_or_default() > limit
                {
                    return self.fail(
                        index,
                        alias,
                        "Failed",
                        format!(
                            "still running after its retry.timeout of {}",
                            humantime::format_duration(limit)
                        ),
                    );
                }
                let message = done.message.as_deref().map(|m| self.redactor.redact(m));
                let meta = &mut self.metas()[index];
                meta["message"] = json!(message);
                let wait = done
                    .retry_after
                    .unwrap_or(Duration::from_secs(10))
                    .max(MIN_RETRY_AFTER);
                self.note(
                    alias,
                    "info",
                    format!(
                        "step {alias} is still running; asking again in {}",
                        humantime::format_duration(wait)
                    ),
                );
                StepEnd::Again(wait)
            }
            Ok(done) => {
                let outputs = Value::Object(done.outputs);
                let mut state = self.state();
                state.insert(alias.to_string(), outputs.clone());
                // A compose-output step inside a task publishes the task's outputs.
                if uses == "compose-output"
                    && let Some((task, _)) = alias.split_once("::")
                {
                    state.insert(task.to_string(), outputs);
                }
                self.status.insert("state".into(), Value::Object(state));
                let message = done.message.as_deref().map(|m| self.redactor.redact(m));
                let meta = &mut self.metas()[index];
                meta["status"] = json!("Succeeded");
                meta["finishedAt"] = json!(now());
                if let Some(m) = message {
                    meta["message"] = json!(m);
                }
                self.note(
                    alias,
                    "info",
                    format!(
                        "step {alias} succeeded in {took}{}",
                        done.message.map(|m| format!(": {m}")).unwrap_or_default()
                    ),
                );
                StepEnd::Next
            }
            Err(failure) => {
                let errors = self.metas()[index]["errorCount"].as_u64().unwrap_or(0) + 1;
                self.metas()[index]["errorCount"] = json!(errors);
                let threshold = step
                    .retry
                    .as_ref()
                    .and_then(|r| r.error_threshold)
                    .unwrap_or(1)
                    .max(1) as u64;
                let for_good = matches!(
                    failure.kind,
                    FailureKind::Terminal
                        | FailureKind::InvalidConfig
                        | FailureKind::UnknownKind
                        | FailureKind::DiskQuota
                );
                if !for_good && errors < threshold {
                    let wait = Duration::from_secs((1u64 << errors.min(6)).min(60));
                    let message = self.redactor.redact(&failure.message);
                    self.metas()[index]["message"] = json!(message);
                    self.note(alias, "warn", format!("step {alias} failed ({errors} of {threshold} allowed): {}; retrying in {}", failure.message, humantime::format_duration(wait)));
                    return StepEnd::Again(wait);
                }
                let status = if for_good { "Failed" } else { "Errored" };
                self.fail(index, alias, status, failure.message)
            }
        }
    }

    /// A step that cannot read what it needs from the store waits and tries again: a store
    /// fault (a full disk) must not run it with no secrets, nor fail the Promotion for good.
    fn store_fault(&self, alias: &str, what: &str, e: crate::store::StoreError) -> StepEnd {
        self.note(
            alias,
            "warn",
            format!("step {alias} waits: cannot read {what} ({e}); trying again in 5s"),
        );
        StepEnd::Again(Duration::from_secs(5))
    }

    fn fail(&mut self, index: usize, alias: &str, status: &str, message: String) -> StepEnd {
        let message = self.redactor.redact(&message);
        self.note(
            alias,
            "error",
            format!("step {alias} {}: {message}", status.to_lowercase()),
        );
        let meta = &mut self.metas()[index];
        meta["status"] = json!(status);
        meta["message"] = json!(message);
        meta["finishedAt"] = json!(now());
        if meta.get("startedAt").is_none() {
            meta["startedAt"] = meta["finishedAt"].clone();
        }
        StepEnd::Next
    }

    fn wit_freight(&self) -> Vec<runtime::Freight> {
        let items = self.status["freightCollection"]["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        items
            .iter()
            .map(|f| runtime::Freight {
                name: f["name"].as_str().unwrap_or_default().into(),
                alias: f["alias"].as_str().map(str::to_string),
                origin: f["origin"]["name"].as_str().unwrap_or_default().into(),
                commits: f["commits"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| runtime::Commit {
                        repo_url: c["repoURL"].as_str().unwrap_or_default().into(),
                        id: c["id"].as_str().unwrap_or_default().into(),
                        branch: c["branch"].as_str().map(str::to_string),
                        tag: c["tag"].as_str().map(str::to_string),
                        message: c["message"].as_str().map(str::to_string),
                        author: c["author"].as_str().map(str::to_string),
                    })
                    .collect(),
                images: f["images"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| runtime::Image {
                        repo_url: i["repoURL"].as_str().unwrap_or_default().into(),
                        tag: i["tag"].as_str().map(str::to_string),
                        digest: i["digest"].as_str().map(str::to_string),
                        annotations: i["annotations"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect(),
                    })
                    .collect(),
                charts: f["charts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| runtime::Chart {
                        repo_url: c["repoURL"].as_str().unwrap_or_default().into(),
                        name: c["name"].as_str().map(str::to_string),
                        version: c["version"].as_str().unwrap_or_default().into(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Records the end: the phase, the Stage's history, and the work directory removed.
    async fn finish(&mut self, ending: Ending) {
        self.status.insert("phase".into(), json!(ending.phase()));
        self.status.insert("finishedAt".into(), json!(now()));
        if ending == Ending::Aborted && self.status.get("message").is_none() {
            self.status.insert("message".into(), json!("aborted"));
        }
        if ending == Ending::Succeeded {
            self.status
                .insert("message".into(), json!("all steps done"));
        }
        let summary = format!(
            "promotion {}: {}",
            ending.phase().to_lowercase(),
            self.status["message"].as_str().unwrap_or_default()
        );
        self.note(
            "",
            if ending == Ending::Succeeded {
                "info"
            } else {
                "error"
            },
            summary,
        );
        // The work directory goes before the final status is written: a reader that sees the
        // end sees it gone, and a crash in between only repeats this end (no step runs again).
        // Both found before either goes (the repositories' place is found from the work dir).
        for dir in [
            crate::host::git::repositories_dir(&self.workdir),
            self.workdir.clone(),
        ] {
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the promotion's work directory");
            }
        }
        let (project, name, stage, status) = (
            self.project.clone(),
            self.name.clone(),
            self.spec.stage.clone(),
            self.status.clone(),
        );
        let saved = self
            .engine
            .store()
            .write_retrying(move |tx| {
                let Some(mut promotion) = tx.get(Kind::Promotion, &project, &name)? else {
                    return Ok::<(), crate::store::StoreError>(());
                };
                promotion
                    .body
                    .insert("status".into(), Value::Object(status.clone()));
                let promotion_annotations = promotion.metadata.annotations.clone();
                tx.put(promotion, None, StatusMode::Replace)?;
                if let Some(stage) = tx.get(Kind::Stage, &project, &stage)? {
                    record_on_stage(tx, stage, &promotion_annotations, &name, &status)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = saved {
            tracing::error!(project = %self.project, promotion = %self.name, error = %e, "cannot record the promotion's end");
        }
        tracing::info!(project = %self.project, promotion = %self.name, phase = ending.phase(), "promotion finished");
    }
}

/// Records a Promotion's end on its Stage, in the same transaction: `lastPromotion`; and when
/// it succeeded, the new `freightHistory` entry, the Freight's `currentlyIn`, auto-promotion
/// holds, and either a verification or (with none configured) `verifiedIn` at once.
fn record_on_stage(
    tx: &mut crate::store::WriteTx,
    mut stage: crate::resource::Object,
    annotations: &BTreeMap<String, String>,
    name: &str,
    status: &Map<String, Value>,
) -> Result<(), crate::store::StoreError> {
    let now = std::time::SystemTime::now();
    // Indexed as a Value: a missing field reads as null instead of panicking.
    let status = &Value::Object(status.clone());
    let project = stage.project().to_string();
    let stage_name = stage.name().to_string();
    let mut s = stage.status().as_object().cloned().unwrap_or_default();
    s.remove("currentPromotion");
    s.insert("lastPromotion".into(), json!({
        "name": name,
        "freight": status["freight"],
        "status": {"phase": status["phase"], "finishedAt": status["finishedAt"], "message": status["message"]},
    }));
    if status["phase"] == "Succeeded" {
        let previous = pipeline::current_freight(&stage);
        let collection: Vec<Value> = status["freightCollection"]["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut items = Map::new();
        for item in &collection {
            let origin: crate::resource::FreightOrigin =
                serde_json::from_value(item["origin"].clone()).unwrap_or_default();
            items.insert(pipeline::origin_key(&origin), item.clone());
        }
        let names: Vec<String> = collection
            .iter()
            .filter_map(|i| i["name"].as_str().map(str::to_string))
            .collect();
        let id = pipeline::collection_id(&names);
        let spec: StageSpec = serde_json::from_value(stage.spec().clone()).unwrap_or_default();
        let mut entry = json!({"id": id, "items": items, "promotion": name});
        let actor = annotations
            .get(super::promotion::ACTOR_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        if verification::configured(&spec) {
            let record = verification::start(
                tx,
                &project,
                &stage_name,
                &spec,
                &collection,
                &id,
                Some(name),
                &actor,
                now,
            )?;
            entry["verificationHistory"] = json!([record]);
        }
        let mut history = s
            .get("freightHistory")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        history.insert(0, entry);
        history.truncate(FREIGHT_HISTORY);
        s.insert("freightHistory".into(), Value::Array(history));
        pipeline::record_entry(tx, &project, &stage_name, &previous, &names, now)?;
        if !verification::configured(&spec) {
            pipeline::record_verified(tx, &project, &stage_name, &names, now)?;
        }
        // Auto-promotion holds: a person chose other Freight than auto-promotion would (hold),
        // or the same (lift).
        let origin: crate::resource::FreightOrigin =
            serde_json::from_value(status["freight"]["origin"].clone()).unwrap_or_default();
        let key = pipeline::origin_key(&origin);
        let holds = s.entry("autoPromotionHolds").or_insert_with(|| json!({}));
        if let Value::Object(holds) = holds {
            if annotations.contains_key(auto::HOLD_ANNOTATION) {
                holds.insert(
                    key,
                    json!({
                        "freightName": status["freight"]["name"],
                        "origin": status["freight"]["origin"],
                        "promotionName": name,
                        "actor": actor,
                        "createdAt": pipeline::time_text(now),
                    }),
                );
            } else if annotations.contains_key(auto::RESUME_ANNOTATION) {
                holds.remove(&key);
            }
            if holds.is_empty() {
                s.remove("autoPromotionHolds");
            }
        }
    }
    stage.body.insert("status".into(), Value::Object(s));
    tx.put(stage, None, StatusMode::Replace)?;
    let phase = status["phase"].as_str().unwrap_or_default();
    let freight = status["freight"]["name"].as_str().unwrap_or_default();
    let shown = status["freight"]["alias"].as_str().unwrap_or(freight);
    let actor = annotations
        .get(super::promotion::ACTOR_ANNOTATION)
        .map(String::as_str);
    super::events::record(
        tx,
        &project,
        &format!("Promotion{phase}"),
        format!(
            "Promotion of Freight {shown} into Stage {stage_name} {}: {}",
            phase.to_lowercase(),
            status["message"].as_str().unwrap_or_default()
        ),
        (Kind::Promotion, name),
        super::events::About {
            actor,
            freight: Some(freight),
            stage: Some(&stage_name),
            promotion: Some(name),
            ..Default::default()
        },
    )?;
    Ok(())
}

/// What to do after one pass over a step.
enum StepEnd {
    /// Move on to the next step.
    Next,
    /// Call the same step again after this long.
    Again(Duration),
    /// Stop: the Promotion was aborted or deleted.
    Aborted,
}

/// The per-call policy of a step of `project`: Git with the project's credentials, HTTP to
/// `allow`, and the generic secrets in `secrets` (none: the `credentials` interface says so).
pub(super) fn limits(
    engine: &Engine,
    project: &str,
    allow: crate::host::http::AllowList,
    local_roots: Vec<PathBuf>,
    known_hosts: Option<PathBuf>,
    secrets: Vec<String>,
) -> Limits {
    let secrets = if secrets.is_empty() {
        Secrets::default()
    } else {
        let source: Arc<dyn SecretSource> = Arc::new(ProjectSecrets {
            store: engine.store().clone(),
            project: project.into(),
            allowed: secrets,
        });
        Secrets(Some(source))
    };
    Limits {
        project: project.into(),
        allow_hosts: allow,
        secrets,
        metadata: Metadata(Some(Arc::new(ProjectMetadata {
            store: engine.store().clone(),
            project: project.into(),
        }))),
        git: GitAccess {
            credentials: Some(Arc::new(ProjectGitCredentials {
                store: engine.store().clone(),
                project: project.into(),
            })),
            local_roots,
            known_hosts,
            ..GitAccess::default()
        },
        ..Limits::default()
    }
}
