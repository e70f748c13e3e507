//! Running one verification: an AnalysisRun's metrics measured by verifier components, without
//! Argo Rollouts.
//!
//! Each metric takes measurements with the verifier its provider names (`web` and `prometheus`
//! are built in; `plugin: {KIND: config}` runs any verifier component the daemon loaded), after
//! `initialDelay`, every `interval`, until the rules in [`crate::rules::analysis`] end it. The
//! run ends Failed, Error or Inconclusive as its worst metric, otherwise Successful, which marks
//! the Freight `verifiedIn` the Stage (`engine::decisions::analysis::record_end`).
//!
//! The AnalysisRun's [`AnalysisRunStatus`] is the whole truth and is written after every
//! measurement, so a restarted daemon resumes a run where it stood. Every line a verifier logs
//! is stored with the run (`dray logs verification`). While a Stage verifies, its next
//! Promotion waits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::engine::decisions::analysis::{self, PROMOTION_LABEL, STAGE_LABEL};
use crate::engine::{Engine, logs};
use crate::resource::analysis::{AnalysisRunSpec, Metric};
use crate::resource::status::{AnalysisPhase, AnalysisRunStatus, Measurement, MetricResult};
use crate::resource::{Kind, Object};
use crate::rules::analysis as rules;
use crate::rules::availability::{parse_time, time_text};
use crate::runtime;
use crate::store::{Reader, StatusMode, StoreError};

/// The longest one measurement may take.
const MEASUREMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a `job` measurement (a Job and its log) may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(3600);

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
    if let Some(job) = &p.job {
        return Ok(("job".into(), job.clone()));
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
        "metric {:?}: provider {named} is not run by Dray; use web, prometheus, job, or plugin: {{VERIFIER: config}} with a verifier component",
        metric.name
    ))
}

/// One AnalysisRun being measured.
struct Verification {
    engine: Engine,
    project: String,
    name: String,
    spec: AnalysisRunSpec,
    context: runtime::StepContext,
    workdir: PathBuf,
    /// The values of `valueFrom.secretKeyRef` args, read when the run (re)starts.
    secrets: BTreeMap<String, String>,
}

/// Runs (or resumes) AnalysisRun `name` of `project` to its end.
pub(crate) async fn run(
    engine: Engine,
    project: String,
    name: String,
    mut abort: watch::Receiver<bool>,
) {
    let (p, n) = (project.clone(), name.clone());
    let read = engine
        .store()
        .read_async(move |r| r.get(Kind::AnalysisRun, &p, &n))
        .await;
    let object = match read {
        Ok(Some(o)) => o,
        Ok(None) => return,
        Err(e) => {
            // The rescan starts it again.
            tracing::error!(%project, run = %name, error = %e, "cannot read the verification");
            return;
        }
    };
    let status: AnalysisRunStatus = match object.status_of() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot resume the verification");
            return;
        }
    };
    if status.phase().is_terminal() {
        finish(&engine, &object, status).await;
        return;
    }
    let spec: AnalysisRunSpec = match serde_json::from_value(object.spec().clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%project, run = %name, error = %e, "unreadable AnalysisRun spec");
            return;
        }
    };
    let secrets = match secret_args(&engine, &project, &spec).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%project, run = %name, error = %e, "cannot read the verification's Secrets");
            return;
        }
    };
    let label = |key: &str| object.metadata.labels.get(key).cloned().unwrap_or_default();
    let verification = Verification {
        context: runtime::StepContext {
            project: project.clone(),
            stage: label(STAGE_LABEL),
            promotion: label(PROMOTION_LABEL),
            step_alias: String::new(),
            freight: Vec::new(),
            vars: "{}".into(),
            outputs: "{}".into(),
        },
        workdir: engine.data_dir().join("work").join(&project).join(&name),
        engine,
        project,
        name,
        spec,
        secrets,
    };
    let Some(status) = verification.measure_all(status, &mut abort).await else {
        return; // deleted
    };
    let _ = std::fs::remove_dir_all(&verification.workdir);
    finish(&verification.engine, &object, status).await;
}

impl Verification {
    /// Takes measurements until every metric has ended, one ended the run, or it was aborted;
    /// `None` if the run was deleted meanwhile.
    async fn measure_all(
        &self,
        mut status: AnalysisRunStatus,
        abort: &mut watch::Receiver<bool>,
    ) -> Option<AnalysisRunStatus> {
        let started = parse_time(status.started_at.as_deref()).unwrap_or_else(SystemTime::now);
        status.phase = Some(AnalysisPhase::Running);
        status.started_at.get_or_insert_with(|| time_text(started));
        let metrics = &self.spec.metrics;
        // One result per metric, in the metrics' order (a resumed run keeps its tallies).
        let mut results: Vec<MetricResult> = metrics
            .iter()
            .map(|m| {
                status
                    .metric_results
                    .iter()
                    .find(|r| r.name == m.name)
                    .cloned()
                    .unwrap_or_else(|| {
                        MetricResult::new(&m.name, rules::is_dry(&self.spec, &m.name))
                    })
            })
            .collect();
        loop {
            status.metric_results.clone_from(&results);
            if !self.save(&status).await {
                return None;
            }
            let Some((index, at)) = rules::next_due(metrics, &results, started) else {
                break;
            };
            if let Ok(wait) = at.duration_since(SystemTime::now()) {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = abort.changed() => {}
                }
            }
            if *abort.borrow() {
                status.phase = Some(AnalysisPhase::Aborted);
                status.message = Some("aborted".into());
                break;
            }
            let metric = &metrics[index];
            let taken = self.measure(metric).await;
            let kept = rules::kept(&self.spec, &metric.name);
            rules::record(&mut results[index], taken, kept);
            if rules::conclude(metric, &mut results[index]) {
                rules::stop_others(&mut results);
            }
        }
        status.metric_results = results;
        if status.phase != Some(AnalysisPhase::Aborted) {
            let (phase, message) = rules::outcome(&status.metric_results);
            status.phase = Some(phase);
            status.message = Some(message);
        }
        status.completed_at = Some(time_text(SystemTime::now()));
        Some(status)
    }

    /// Takes one measurement of `metric`: the verifier's answer, judged by the conditions.
    async fn measure(&self, metric: &Metric) -> Measurement {
        let started = SystemTime::now();
        // Secret args may reach a message (a URL that carries a token, say): hide them.
        let redactor = crate::credentials::Redactor::new(self.secrets.values().cloned());
        let done = |phase: AnalysisPhase, value: Value, message: Option<String>| Measurement {
            phase,
            value,
            started_at: Some(time_text(started)),
            finished_at: Some(time_text(SystemTime::now())),
            message: message.map(|m| redactor.redact(&m)),
            other: Map::new(),
        };
        // The measurement's log is followed while it runs: `dray logs verification -f` shows
        // a long one's lines (an integration test's output) as they come.
        let log = runtime::log::StepLog::new(runtime::Limits::default().log_bytes);
        let write = |lines: &[runtime::log::Line]| {
            logs::append(
                self.engine.data_dir(),
                &self.project,
                &self.name,
                &metric.name,
                &lines
                    .iter()
                    .map(|l| l.redacted(&redactor))
                    .collect::<Vec<_>>(),
            );
        };
        let (called, written) = logs::followed(&log, write, self.call(metric, &log)).await;
        let (phase, value, message) = match called {
            Err(message) => (AnalysisPhase::Error, Value::Null, Some(message)),
            Ok((report, lines)) => {
                write(lines.get(written..).unwrap_or_default());
                judge(metric, report)
            }
        };
        let said = message
            .as_deref()
            .map(|m| format!(": {}", redactor.redact(m)))
            .unwrap_or_default();
        let line = runtime::log::Line {
            time: time_text(SystemTime::now()),
            level: if phase == AnalysisPhase::Successful {
                "info"
            } else {
                "warn"
            }
            .into(),
            source: runtime::log::Source::Host,
            message: format!(
                "measurement: {} (value {value}){said}",
                phase.as_str().to_lowercase()
            ),
            fields: Vec::new(),
        };
        logs::append(
            self.engine.data_dir(),
            &self.project,
            &self.name,
            &metric.name,
            &[line],
        );
        done(phase, value, message)
    }

    /// Calls the metric's verifier; `Err` when it cannot be called at all.
    async fn call(
        &self,
        metric: &Metric,
        log: &runtime::log::StepLog,
    ) -> Result<
        (
            Result<runtime::Measured, runtime::Failure>,
            Vec<runtime::log::Line>,
        ),
        String,
    > {
        let (kind, mut config) = provider(metric)?;
        rules::substitute(&mut config, &self.secrets);
        // A verifier from a registry (`plugin: {oci://…: config}`), or a loaded one by kind.
        let (plugin, kind, mut limits) = if crate::oci::PluginRef::is_oci(&kind) {
            let resolved = self.engine.registry_plugin(&kind, &self.project).await?;
            let mut limits = self.engine.limits_with(&self.project, resolved.secrets);
            limits.kube.rules = resolved.kube;
            (resolved.plugin, resolved.kind, limits)
        } else {
            let plugin = self.engine.verifier_for(&kind).ok_or_else(|| {
                format!(
                    "no verifier {kind:?} is loaded; the built-in ones are {}",
                    self.engine.verifier_kinds().join(", ")
                )
            })?;
            let limits = self.engine.limits(&self.project, &plugin.name);
            (plugin, kind, limits)
        };
        if plugin.role != runtime::Role::Verifier {
            return Err(format!(
                "{kind} is a step, not a verifier (it exports no `verify`)"
            ));
        }
        std::fs::create_dir_all(&self.workdir)
            .map_err(|e| format!("cannot make {}: {e}", self.workdir.display()))?;
        // A Job runs as long as its tests do.
        limits.timeout = if kind == "job" {
            JOB_TIMEOUT
        } else {
            MEASUREMENT_TIMEOUT
        };
        limits.log = Some(log.clone());
        // For a verifier, `step-alias` names the measurement: the AnalysisRun and the metric.
        let context = runtime::StepContext {
            step_alias: format!("{}-{}", self.name, metric.name),
            ..self.context.clone()
        };
        let mut report = plugin
            .verify(&kind, &context, &config, &self.workdir, &limits)
            .await;
        if report.outcome.is_ok()
            && let Some(reason) = runtime::disk::check(&self.workdir, limits.disk).await
        {
            report.outcome = Err(runtime::over_quota(reason));
        }
        Ok((report.outcome, report.log))
    }

    /// Writes the run's status; false if the run is gone.
    async fn save(&self, status: &AnalysisRunStatus) -> bool {
        let (project, name, status) = (self.project.clone(), self.name.clone(), status.clone());
        let saved = self
            .engine
            .store()
            .write_retrying(move |tx| {
                let Some(mut o) = tx.get(Kind::AnalysisRun, &project, &name)? else {
                    return Ok::<bool, StoreError>(false);
                };
                o.set_status(&status);
                tx.put(o, None, StatusMode::Replace)?;
                Ok(true)
            })
            .await;
        saved.unwrap_or_else(|e| {
            tracing::error!(project = %self.project, run = %self.name, error = %e, "cannot save the verification's status");
            false
        })
    }
}

/// A verifier's answer as a measurement: a call that failed (crash, timeout, bad config) is an
/// Error measurement, which counts toward `consecutiveErrorLimit` as a provider error does in
/// Argo; a value is judged by the metric's conditions.
fn judge(
    metric: &Metric,
    outcome: Result<runtime::Measured, runtime::Failure>,
) -> (AnalysisPhase, Value, Option<String>) {
    match outcome {
        Err(f) => (AnalysisPhase::Error, Value::Null, Some(f.message)),
        Ok(m) => match AnalysisPhase::from(m.phase) {
            AnalysisPhase::Successful => match rules::evaluate(metric, &m.value) {
                Ok(phase) => (phase, m.value, m.message),
                Err(e) => (AnalysisPhase::Error, m.value, Some(e)),
            },
            phase => (phase, m.value, m.message),
        },
    }
}

/// The values of `valueFrom.secretKeyRef` args, read now from the project's Secrets.
async fn secret_args(
    engine: &Engine,
    project: &str,
    spec: &AnalysisRunSpec,
) -> Result<BTreeMap<String, String>, StoreError> {
    let refs: Vec<(String, String, String)> = spec
        .args
        .iter()
        .filter_map(|arg| {
            let r = &arg.value_from.as_ref()?["secretKeyRef"];
            Some((
                arg.name.clone(),
                r["name"].as_str()?.to_string(),
                r["key"].as_str()?.to_string(),
            ))
        })
        .collect();
    if refs.is_empty() {
        return Ok(BTreeMap::new());
    }
    let project = project.to_string();
    engine
        .store()
        .read_async(move |r| {
            let secrets = crate::credentials::generic_secrets(r, &project);
            let mut out = BTreeMap::new();
            for (arg, secret, key) in refs {
                if let Some(v) = secrets
                    .iter()
                    .find(|(n, _)| **n == secret)
                    .and_then(|(_, values)| values.get(&key))
                {
                    out.insert(arg, v.clone());
                }
            }
            Ok(out)
        })
        .await
}

/// Records a run's end (see [`analysis::record_end`]).
async fn finish(engine: &Engine, run: &Object, status: AnalysisRunStatus) {
    let (project, name) = (run.project().to_string(), run.name().to_string());
    let phase = status.phase();
    let stage = run
        .metadata
        .labels
        .get(STAGE_LABEL)
        .cloned()
        .unwrap_or_default();
    let run = run.clone();
    let saved = engine
        .store()
        .write_retrying(move |tx| analysis::record_end(tx, &run, &status, SystemTime::now()))
        .await;
    if let Err(e) = saved {
        tracing::error!(%project, run = %name, error = %e, "cannot record the verification's end");
    }
    engine
        .metrics()
        .verification_ended(&project, &stage, &phase.to_string());
    tracing::info!(%project, %stage, run = %name, %phase, "verification finished");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_verifier_answer_is_judged_by_the_conditions() {
        let metric: Metric = serde_json::from_value(
            json!({"name": "m", "successCondition": "result > 5", "provider": {}}),
        )
        .unwrap();
        let measured = |phase, value| {
            Ok(runtime::Measured {
                phase,
                value,
                message: None,
            })
        };
        use runtime::MeasurementPhase as M;
        assert_eq!(
            judge(&metric, measured(M::Successful, json!(7))).0,
            AnalysisPhase::Successful
        );
        assert_eq!(
            judge(&metric, measured(M::Successful, json!(1))).0,
            AnalysisPhase::Failed
        );
        assert_eq!(
            judge(&metric, measured(M::Inconclusive, json!(9))).0,
            AnalysisPhase::Inconclusive
        );
        let crashed = Err(runtime::Failure {
            kind: runtime::FailureKind::Crashed,
            message: "boom".into(),
        });
        assert_eq!(judge(&metric, crashed).0, AnalysisPhase::Error);
    }

    #[test]
    fn a_provider_dray_does_not_run_is_named() {
        let metric: Metric =
            serde_json::from_value(json!({"name": "m", "provider": {"datadog": {}}})).unwrap();
        let e = provider(&metric).unwrap_err();
        assert!(e.contains("datadog"), "{e}");
    }
}
