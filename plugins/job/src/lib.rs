//! Argo Rollouts' `job` metric provider, run by Dray: a measurement creates the Job (the
//! metric's `metadata` and `spec`, unchanged) in the cluster, follows its pod's log into the
//! measurement's log while it runs (so `dray logs verification -f` shows the tests' output live,
//! and keeps it after the pod is gone), waits for the Job to end, and judges it as Argo Rollouts
//! does: Successful when the Job completes, Failed when it fails. The Job is deleted afterwards.
//!
//! The Job goes to the project's namespace (Kargo runs verifications there), or to `namespace`
//! and `cluster` given beside `metadata` and `spec` (Dray's). Everything goes through the host's
//! `kube` interface, with the cluster credentials of the daemon config, which this component
//! never sees.

use std::time::Duration;

use dray_sdk::kube::{self, Target};
use dray_sdk::verifier::{Measurement, MeasurementPhase};
use dray_sdk::{StepContext, StepKind, Verifier};
use serde::Deserialize;
use serde_json::{Value, json};

/// The plugin's step kinds (or verifiers): exported by `plugins/verifiers` with the other built-ins.
pub struct Jobs;

/// How long a measurement waits for a pod, then for the Job to end after its log closed.
const WAIT_SECONDS: u64 = 600;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JobMetric {
    #[serde(default)]
    metadata: Value,
    spec: Value,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    cluster: Option<String>,
}

fn target(cluster: &Option<String>, kind: &str, namespace: &str, name: Option<&str>) -> Target {
    Target {
        cluster: cluster.clone(),
        api_version: if kind == "Job" { "batch/v1" } else { "v1" }.into(),
        kind: kind.into(),
        namespace: Some(namespace.into()),
        name: name.map(String::from),
    }
}

/// A DNS-1123 name from `text`: lowercase letters, digits and `-`, at most 63 characters.
fn dns_name(text: &str) -> String {
    let mut name: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(63);
    name.trim_matches('-').to_string()
}

/// How a Job stands: `Some(true)` complete, `Some(false)` failed, `None` still running.
fn ended(job: &Value) -> Option<bool> {
    let conditions = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)?;
    conditions.iter().find_map(|c| {
        let on = c["status"] == "True";
        match c["type"].as_str() {
            Some("Complete") if on => Some(true),
            Some("Failed") if on => Some(false),
            _ => None,
        }
    })
}

fn measure(context: &StepContext, metric: JobMetric) -> Result<Measurement, String> {
    let namespace = metric
        .namespace
        .clone()
        .unwrap_or_else(|| context.project.clone());
    let cluster = metric.cluster.clone();
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    // The measurement's own name: the AnalysisRun and metric (`step-alias`), and when.
    let name = dns_name(&format!("{}-{seconds}", context.step_alias));
    let mut metadata = match metric.metadata {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    metadata.insert("name".into(), json!(name));
    metadata.insert("namespace".into(), json!(namespace));
    let job =
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": metric.spec});
    kube::apply(cluster.as_deref(), &job.to_string())?;
    dray_sdk::info!("created Job {name} in namespace {namespace}");
    let outcome = follow(&cluster, &namespace, &name);
    // The Job and its pods go; their log stays in the measurement's.
    let _ = kube::delete(&target(&cluster, "Job", &namespace, Some(&name)));
    let (complete, job) = outcome?;
    let value = json!({
        "job": name,
        "succeeded": job.pointer("/status/succeeded").cloned().unwrap_or(json!(0)),
        "failed": job.pointer("/status/failed").cloned().unwrap_or(json!(0)),
    });
    Ok(Measurement {
        phase: if complete {
            MeasurementPhase::Successful
        } else {
            MeasurementPhase::Failed
        },
        value: value.to_string(),
        message: Some(if complete {
            format!("Job {name} completed")
        } else {
            let why = job
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "Failed"))
                .and_then(|c| c["message"].as_str())
                .unwrap_or("no reason given");
            format!("Job {name} failed: {why}")
        }),
    })
}

/// Follows the Job's pods' logs as they come and waits for the Job's end: whether it completed,
/// and the Job as it ended.
fn follow(cluster: &Option<String>, namespace: &str, name: &str) -> Result<(bool, Value), String> {
    let pods = target(cluster, "Pod", namespace, None);
    let selector = format!("job-name={name}");
    let job_target = target(cluster, "Job", namespace, Some(name));
    let mut followed: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(WAIT_SECONDS);
    loop {
        let job: Value = kube::get(&job_target)?
            .map(|t| serde_json::from_str(&t).unwrap_or_default())
            .ok_or_else(|| format!("Job {name} is gone"))?;
        // Each pod's log, once it has started (the container ran or runs).
        for pod in kube::list(&pods, Some(&selector))? {
            let pod: Value = serde_json::from_str(&pod).unwrap_or_default();
            let pod_name = pod
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let started = matches!(
                pod.pointer("/status/phase").and_then(Value::as_str),
                Some("Running" | "Succeeded" | "Failed")
            );
            if started && !followed.iter().any(|f| f == pod_name) {
                followed.push(pod_name.to_string());
                dray_sdk::info!("following the log of pod {pod_name}");
                let remaining = deadline.saturating_duration_since(std::time::Instant::now());
                kube::follow_logs(
                    &target(cluster, "Pod", namespace, Some(pod_name)),
                    None,
                    remaining.as_secs().max(1) as u32,
                )?;
            }
        }
        if let Some(complete) = ended(&job) {
            return Ok((complete, job));
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("Job {name} did not end within {WAIT_SECONDS}s"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl Verifier for Jobs {
    fn describe() -> Vec<StepKind> {
        vec![dray_sdk::kind(
            "job",
            "Argo Rollouts' job metric: runs a Kubernetes Job, keeps its pod's log, and measures whether it completed",
            json!({
                "type": "object", "additionalProperties": false, "required": ["spec"],
                "properties": {
                    "metadata": {"type": ["object", "null"], "description": "The Job's labels and annotations"},
                    "spec": {"type": "object", "description": "The Job's spec (batch/v1)"},
                    "namespace": {"type": "string", "minLength": 1, "description": "Dray: where the Job runs (default: the project's name)"},
                    "cluster": {"type": "string", "minLength": 1, "description": "Dray: which cluster of the daemon config (default: the project's only one)"},
                }
            }),
            &[],
        )]
    }

    fn verify(kind: String, context: StepContext, config: String) -> Result<Measurement, String> {
        if kind != "job" {
            return Err(format!("the job plugin has no verifier {kind:?}"));
        }
        let metric: JobMetric =
            serde_json::from_str(&config).map_err(|e| format!("job config: {e}"))?;
        measure(&context, metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ends_read_as_kubernetes_writes_them() {
        assert_eq!(
            dns_name("Test.Run/Integration_Tests-17"),
            "test-run-integration-tests-17"
        );
        assert_eq!(dns_name(&"a".repeat(80)).len(), 63);
        let job = |t: &str, s: &str| json!({"status": {"conditions": [{"type": t, "status": s}]}});
        assert_eq!(ended(&job("Complete", "True")), Some(true));
        assert_eq!(ended(&job("Failed", "True")), Some(false));
        assert_eq!(ended(&job("Complete", "False")), None);
        assert_eq!(ended(&json!({"status": {}})), None);
    }
}
