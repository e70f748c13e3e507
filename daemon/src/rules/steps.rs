//! How a Promotion's steps follow each other: which step runs, what a failed or still-running
//! call leads to, and how the Promotion ends. Pure functions over the typed status; the runner
//! (`engine::run::promotion`) calls the step and writes what these decide.
//!
//! Semantics follow Kargo (KARGO-REFERENCE §4): an `if` is evaluated once, before a step first
//! starts; with none a step runs only while nothing before it failed (GitHub Actions' rule);
//! `continueOnError` failures count for neither `failure()` nor the phase; a failed call is
//! retried until `retry.errorThreshold` consecutive failures (default 1: no retries) unless it
//! failed for good; a step answering `running` is asked again after its `retry-after` until
//! `retry.timeout`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::resource::PromotionStep;
use crate::resource::StepRetry;
use crate::resource::status::{PromotionPhase, StepExecution, StepStatus};
use crate::runtime::FailureKind;

/// The shortest wait before asking a `running` step again.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The wait when a `running` step does not say.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(10);
/// The longest wait between two tries of a failing step.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The step kind whose outputs, inside a task, are the task's outputs (Kargo's rule).
pub const TASK_OUTPUT_KIND: &str = "compose-output";
/// The functions that read the project's Stage and Freight metadata.
pub const LOOKUP_FUNCTIONS: [&str; 5] = [
    "stageMetadata",
    "freightMetadata",
    "freightStatus",
    "configMap",
    "sharedConfigMap",
];

/// A step's alias: its `as`, else `step-N` (1-based).
pub fn alias(step: &PromotionStep, index: usize) -> String {
    step.as_
        .clone()
        .unwrap_or_else(|| format!("step-{}", index + 1))
}

/// Whether this step's end counts against the Promotion: it failed and may not continue.
pub fn blocks(meta: &StepExecution) -> bool {
    meta.status.is_some_and(StepStatus::is_failure) && meta.continue_on_error != Some(true)
}

/// Whether a step before `index` failed in a way that counts (what `failure()` answers).
pub fn failed_before(metas: &[StepExecution], index: usize) -> bool {
    metas[..index.min(metas.len())].iter().any(blocks)
}

/// The statuses of the steps before `index`, by alias (what `status("alias")` answers).
pub fn statuses(metas: &[StepExecution], index: usize) -> BTreeMap<String, String> {
    metas[..index.min(metas.len())]
        .iter()
        .filter_map(|m| Some((m.alias.clone(), m.status?.as_str().to_string())))
        .collect()
}

/// What to do with a step the first time the runner reaches it.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    Run,
    Skip,
    /// The `if` could not be decided: the step errors with this message.
    Error(String),
}

/// Decides [`Start`] from the step's `if` (`None` when it has none; else what the expression
/// gave) and whether a step before it failed.
pub fn start(condition: Option<(&str, Result<Value, String>)>, failed_before: bool) -> Start {
    match condition {
        None if failed_before => Start::Skip,
        None => Start::Run,
        Some((_, Ok(Value::Bool(true)))) => Start::Run,
        Some((_, Ok(Value::Bool(false)))) => Start::Skip,
        Some((code, Ok(other))) => {
            Start::Error(format!("if: {code:?} must be true or false, not {other}"))
        }
        Some((code, Err(e))) => Start::Error(format!("if: {code:?}: {e}")),
    }
}

/// What a failed call leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterFailure {
    /// Call the step again after this long.
    Retry(Duration),
    /// The step ends with this status.
    Give(StepStatus),
}

/// The policy for a failed call, the `errors`-th in a row: retry with exponential backoff
/// (2 s, 4 s, … at most [`MAX_BACKOFF`]) until `retry.errorThreshold` (default 1) is reached;
/// a failure for good (bad config, a terminal answer, an unknown kind, a full work dir) is not
/// retried and makes the step `Failed`, running out of tries makes it `Errored`.
pub fn after_failure(kind: FailureKind, errors: u32, retry: Option<&StepRetry>) -> AfterFailure {
    let for_good = matches!(
        kind,
        FailureKind::Terminal
            | FailureKind::InvalidConfig
            | FailureKind::UnknownKind
            | FailureKind::DiskQuota
    );
    if for_good {
        return AfterFailure::Give(StepStatus::Failed);
    }
    if errors < threshold(retry) {
        return AfterFailure::Retry(backoff(errors));
    }
    AfterFailure::Give(StepStatus::Errored)
}

/// `retry.errorThreshold`, at least 1.
pub fn threshold(retry: Option<&StepRetry>) -> u32 {
    retry.and_then(|r| r.error_threshold).unwrap_or(1).max(1)
}

/// The wait after the `errors`-th failure in a row.
pub fn backoff(errors: u32) -> Duration {
    Duration::from_secs(1u64 << errors.min(6)).min(MAX_BACKOFF)
}

/// What a step that answered `running` leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum StillRunning {
    /// Ask again after this long.
    AskAgain(Duration),
    /// It has run past its `retry.timeout` (given): it fails.
    TimedOut(Duration),
}

/// The `retry.timeout` of a step of kind `uses` that sets none, as Kargo's registry gives it:
/// five minutes for the Argo CD steps, none (wait as long as it takes) for the others.
pub fn default_timeout(uses: &str) -> Option<Duration> {
    matches!(uses, "argocd-update" | "argocd-wait").then_some(Duration::from_secs(300))
}

/// Decides [`StillRunning`] for a step of kind `uses` that started at `started` (as its status
/// says) and now asks to be called again after `retry_after`.
pub fn still_running(
    uses: &str,
    started: Option<SystemTime>,
    now: SystemTime,
    retry: Option<&StepRetry>,
    retry_after: Option<Duration>,
) -> StillRunning {
    let limit = retry
        .and_then(|r| r.timeout.as_deref())
        .and_then(|t| crate::resource::validate::parse_duration(t).ok())
        .or_else(|| default_timeout(uses));
    if let (Some(limit), Some(started)) = (limit, started)
        && now.duration_since(started).unwrap_or_default() > limit
    {
        return StillRunning::TimedOut(limit);
    }
    StillRunning::AskAgain(
        retry_after
            .unwrap_or(DEFAULT_RETRY_AFTER)
            .max(MIN_RETRY_AFTER),
    )
}

/// How the Promotion ends once every step has had its turn: the first failure that counts
/// decides the phase (`Failed` or `Errored`) and the message; with none it `Succeeded`.
pub fn ending(metas: &[StepExecution]) -> (PromotionPhase, String) {
    match metas.iter().find(|m| blocks(m)) {
        None => (PromotionPhase::Succeeded, "all steps done".into()),
        Some(m) => {
            let status = m.status.unwrap_or(StepStatus::Errored);
            let message = format!(
                "step {} {}: {}",
                m.alias,
                status.as_str().to_lowercase(),
                m.message.as_deref().unwrap_or("")
            );
            let phase = if status == StepStatus::Errored {
                PromotionPhase::Errored
            } else {
                PromotionPhase::Failed
            };
            (phase, message)
        }
    }
}

/// Records a step's outputs in the Promotion's `state`: under its alias, and, for a
/// [`TASK_OUTPUT_KIND`] step inside a task (`task::step`), under the task's alias too.
pub fn publish(state: &mut Map<String, Value>, uses: &str, alias: &str, outputs: Value) {
    if uses == TASK_OUTPUT_KIND
        && let Some((task, _)) = alias.split_once("::")
    {
        state.insert(task.to_string(), outputs.clone());
    }
    state.insert(alias.to_string(), outputs);
}

/// The outputs of the other steps of the task a step belongs to (`task.outputs`), by their
/// alias inside the task; `None` for a step that is not in a task.
pub fn task_outputs(state: &Map<String, Value>, alias: &str) -> Option<Map<String, Value>> {
    let (task, _) = alias.split_once("::")?;
    let prefix = format!("{task}::");
    Some(
        state
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(&prefix)
                    .map(|inner| (inner.to_string(), v.clone()))
            })
            .collect(),
    )
}

/// Whether any expression of the step (its `if`, vars and config) or of `vars` calls one of
/// `functions`: the runner reads the project's metadata only for steps that ask for it.
pub fn calls(
    step: &PromotionStep,
    vars: &[&crate::resource::NamedValue],
    functions: &[&str],
) -> bool {
    fn in_text(text: &str, functions: &[&str]) -> bool {
        functions.iter().any(|f| {
            text.match_indices(f).any(|(at, _)| {
                let before = text[..at].chars().next_back();
                let after = text[at + f.len()..].trim_start().starts_with('(');
                after && !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
        })
    }
    fn in_value(v: &Value, functions: &[&str]) -> bool {
        match v {
            Value::String(s) => in_text(s, functions),
            Value::Array(items) => items.iter().any(|i| in_value(i, functions)),
            Value::Object(map) => map.values().any(|i| in_value(i, functions)),
            _ => false,
        }
    }
    step.if_.as_deref().is_some_and(|c| in_text(c, functions))
        || step.config.as_ref().is_some_and(|c| in_value(c, functions))
        || step
            .vars
            .iter()
            .chain(vars.iter().copied())
            .filter_map(|v| v.value.as_deref())
            .any(|v| in_text(v, functions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(alias: &str, status: StepStatus, continue_on_error: bool) -> StepExecution {
        StepExecution {
            alias: alias.into(),
            status: Some(status),
            continue_on_error: Some(continue_on_error),
            message: Some(format!("{alias} said so")),
            ..StepExecution::default()
        }
    }

    fn retry(timeout: Option<&str>, threshold: Option<u32>) -> StepRetry {
        StepRetry {
            timeout: timeout.map(str::to_string),
            error_threshold: threshold,
        }
    }

    #[test]
    fn without_an_if_a_step_runs_only_while_nothing_failed() {
        assert_eq!(start(None, false), Start::Run);
        assert_eq!(start(None, true), Start::Skip);
    }

    #[test]
    fn an_if_decides_even_after_a_failure() {
        assert_eq!(start(Some(("always()", Ok(json!(true)))), true), Start::Run);
        assert_eq!(start(Some(("false", Ok(json!(false)))), false), Start::Skip);
    }

    #[test]
    fn an_if_that_is_not_a_boolean_is_an_error_that_quotes_it() {
        let Start::Error(m) = start(Some(("vars.x", Ok(json!("yes")))), false) else {
            panic!("not an error");
        };
        assert!(
            m.contains("\"vars.x\"") && m.contains("true or false"),
            "{m}"
        );
        let Start::Error(m) = start(Some(("nope(", Err("syntax".into()))), false) else {
            panic!("not an error");
        };
        assert!(m.ends_with("syntax"), "{m}");
    }

    #[test]
    fn a_failure_that_may_continue_counts_for_neither_failure_nor_the_phase() {
        let metas = [
            meta("a", StepStatus::Failed, true),
            meta("b", StepStatus::Succeeded, false),
        ];
        assert!(!failed_before(&metas, 2));
        assert_eq!(ending(&metas).0, PromotionPhase::Succeeded);
    }

    #[test]
    fn the_first_counting_failure_decides_phase_and_message() {
        let metas = [
            meta("a", StepStatus::Succeeded, false),
            meta("b", StepStatus::Errored, false),
            meta("c", StepStatus::Failed, false),
        ];
        assert!(failed_before(&metas, 2));
        assert!(!failed_before(&metas, 1));
        let (phase, message) = ending(&metas);
        assert_eq!(phase, PromotionPhase::Errored);
        assert_eq!(message, "step b errored: b said so");
        assert_eq!(ending(&metas[2..]).0, PromotionPhase::Failed);
    }

    #[test]
    fn skipped_and_aborted_steps_do_not_fail_a_promotion() {
        let metas = [
            meta("a", StepStatus::Skipped, false),
            meta("b", StepStatus::Aborted, false),
        ];
        assert_eq!(ending(&metas).0, PromotionPhase::Succeeded);
        assert_eq!(statuses(&metas, 2)["a"], "Skipped");
        assert_eq!(statuses(&metas, 1).len(), 1, "only the steps before");
    }

    #[test]
    fn a_failed_call_is_not_retried_by_default() {
        assert_eq!(
            after_failure(FailureKind::Crashed, 1, None),
            AfterFailure::Give(StepStatus::Errored)
        );
    }

    #[test]
    fn retries_back_off_until_the_threshold() {
        let r = retry(None, Some(3));
        assert_eq!(
            after_failure(FailureKind::TimedOut, 1, Some(&r)),
            AfterFailure::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            after_failure(FailureKind::Retryable, 2, Some(&r)),
            AfterFailure::Retry(Duration::from_secs(4))
        );
        assert_eq!(
            after_failure(FailureKind::Retryable, 3, Some(&r)),
            AfterFailure::Give(StepStatus::Errored)
        );
        assert_eq!(backoff(40), MAX_BACKOFF);
        assert_eq!(threshold(Some(&retry(None, Some(0)))), 1);
    }

    #[test]
    fn failures_for_good_are_never_retried() {
        let r = retry(None, Some(10));
        for kind in [
            FailureKind::Terminal,
            FailureKind::InvalidConfig,
            FailureKind::UnknownKind,
            FailureKind::DiskQuota,
        ] {
            assert_eq!(
                after_failure(kind, 1, Some(&r)),
                AfterFailure::Give(StepStatus::Failed),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_running_step_is_asked_again_until_its_timeout() {
        let started = SystemTime::UNIX_EPOCH;
        let r = retry(Some("5m"), None);
        let early = started + Duration::from_secs(60);
        assert_eq!(
            still_running(
                "http",
                Some(started),
                early,
                Some(&r),
                Some(Duration::from_millis(10))
            ),
            StillRunning::AskAgain(MIN_RETRY_AFTER)
        );
        assert_eq!(
            still_running("http", Some(started), early, Some(&r), None),
            StillRunning::AskAgain(DEFAULT_RETRY_AFTER)
        );
        let late = started + Duration::from_secs(301);
        assert_eq!(
            still_running("http", Some(started), late, Some(&r), None),
            StillRunning::TimedOut(Duration::from_secs(300))
        );
        assert!(matches!(
            still_running("http", Some(started), late, None, None),
            StillRunning::AskAgain(_)
        ));
        assert_eq!(
            still_running("argocd-update", Some(started), late, None, None),
            StillRunning::TimedOut(Duration::from_secs(300)),
            "Kargo's default for the Argo CD steps"
        );
    }

    #[test]
    fn compose_output_in_a_task_publishes_the_tasks_outputs() {
        let mut state = Map::new();
        publish(
            &mut state,
            "git-clone",
            "build::clone",
            json!({"commit": "abc"}),
        );
        publish(&mut state, TASK_OUTPUT_KIND, "build::out", json!({"x": 1}));
        publish(&mut state, TASK_OUTPUT_KIND, "top", json!({"y": 2}));
        assert_eq!(state["build"], json!({"x": 1}));
        assert_eq!(state["top"], json!({"y": 2}));
        assert!(!state.contains_key(""));
        let siblings = task_outputs(&state, "build::next").expect("in a task");
        assert_eq!(siblings["clone"], json!({"commit": "abc"}));
        assert!(task_outputs(&state, "top").is_none());
    }

    #[test]
    fn metadata_is_read_only_for_steps_that_call_for_it() {
        let step = |config: Value| PromotionStep {
            uses: Some("x".into()),
            config: Some(config),
            ..PromotionStep::default()
        };
        let calls_metadata = |s: &PromotionStep| calls(s, &[], &LOOKUP_FUNCTIONS);
        assert!(calls_metadata(&step(
            json!({"a": ["${{ stageMetadata('uat').owner }}"]})
        )));
        assert!(calls_metadata(&step(
            json!({"a": "${{ freightMetadata (ctx.x) }}"})
        )));
        assert!(!calls_metadata(&step(
            json!({"stageMetadata": "plain text"})
        )));
        assert!(!calls_metadata(&step(
            json!({"a": "${{ xstageMetadata('x') }}"})
        )));
        let var = crate::resource::NamedValue {
            name: "v".into(),
            value: Some("${{ stageMetadata('x') }}".into()),
        };
        assert!(calls(&step(json!({})), &[&var], &LOOKUP_FUNCTIONS));
    }
}
