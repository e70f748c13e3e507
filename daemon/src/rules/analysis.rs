//! How a verification decides: a metric's conditions over a measured value, its tally, when a
//! metric and the run end, and which metric is due next. Pure functions over the typed
//! AnalysisRun status; `engine::run::verification` takes the measurements and writes what
//! these decide.
//!
//! Semantics are Argo Rollouts'. `successCondition`/`failureCondition` are evaluated over
//! `result`; a metric fails once its failed measurements exceed `failureLimit` (default 0), is
//! inconclusive past `inconclusiveLimit` (0), errors past `consecutiveErrorLimit` (4), and
//! succeeds when it has its `count` (1 without an interval; with an interval and no count it
//! measures until something else ends it). `dryRun` metrics are measured and shown but decide
//! nothing. The run ends as its worst metric (Failed > Error > Inconclusive > Successful).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::expr::{self, Scope};
use crate::resource::analysis::{AnalysisRunSpec, IntOrString, Metric};
use crate::resource::status::{AnalysisPhase, Measurement, MetricResult};
use crate::resource::validate::parse_duration;

/// Measurements kept per metric when `measurementRetention` does not say (Argo's default).
pub const DEFAULT_MEASUREMENTS_KEPT: usize = 10;
/// Argo's default `consecutiveErrorLimit`.
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: i64 = 4;

/// Replaces `{{args.NAME}}` (and `{{ args.NAME }}`) in every string of `value`.
pub fn substitute(value: &mut Value, args: &BTreeMap<String, String>) {
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

/// Whether a `metricName` of `dryRun` or `measurementRetention` names `metric`: the name
/// itself, `*`, or (as Argo allows) a regular expression matching the whole name.
pub fn names(pattern: &str, metric: &str) -> bool {
    pattern == metric
        || pattern == "*"
        || regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|r| r.is_match(metric))
}

/// Whether the run's spec marks `metric` as a dry run.
pub fn is_dry(spec: &AnalysisRunSpec, metric: &str) -> bool {
    spec.dry_run.iter().any(|d| names(&d.metric_name, metric))
}

/// Measurements kept for `metric`: the first `measurementRetention` entry naming it, else
/// [`DEFAULT_MEASUREMENTS_KEPT`].
pub fn kept(spec: &AnalysisRunSpec, metric: &str) -> usize {
    spec.measurement_retention
        .iter()
        .find(|r| names(&r.metric_name, metric))
        .map_or(DEFAULT_MEASUREMENTS_KEPT, |r| r.limit.max(1) as usize)
}

fn limit(v: &Option<IntOrString>, default: i64) -> i64 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => s.trim().parse().unwrap_or(default),
        None => default,
    }
}

/// Applies `successCondition` / `failureCondition` to a measured value, as Argo does: with
/// both, failure wins and neither is Inconclusive; with one, its opposite decides the other way;
/// with none, any value is Successful.
pub fn evaluate(metric: &Metric, value: &Value) -> Result<AnalysisPhase, String> {
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
        match expr::eval_expression(expr::condition_code(code), &scope) {
            Ok(Value::Bool(b)) => Ok(Some(b)),
            Ok(other) => Err(format!("{what} {code:?} gave {other}, not true or false")),
            Err(e) => Err(format!("{what} {code:?}: {e}")),
        }
    };
    let success = check("successCondition", &metric.success_condition)?;
    let failure = check("failureCondition", &metric.failure_condition)?;
    use AnalysisPhase::{Failed, Inconclusive, Successful};
    Ok(match (success, failure) {
        (None, None) => Successful,
        (Some(true), None) | (None, Some(false)) => Successful,
        (Some(false), None) | (None, Some(true)) => Failed,
        (_, Some(true)) => Failed,
        (Some(true), Some(false)) => Successful,
        (Some(false), Some(false)) => Inconclusive,
    })
}

/// Adds one measurement to a metric's tally and keeps its latest `kept` measurements. An
/// `Error` counts toward `consecutiveError` (as a provider error does in Argo); any other
/// phase counts toward `count` and resets it.
pub fn record(result: &mut MetricResult, measurement: Measurement, kept: usize) {
    let counter = match measurement.phase {
        AnalysisPhase::Successful => Some(&mut result.successful),
        AnalysisPhase::Failed => Some(&mut result.failed),
        AnalysisPhase::Inconclusive => Some(&mut result.inconclusive),
        _ => None,
    };
    match counter {
        Some(counter) => {
            *counter += 1;
            result.count += 1;
            result.consecutive_error = 0;
        }
        None => {
            result.error += 1;
            result.consecutive_error += 1;
        }
    }
    result.measurements.push(measurement);
    let excess = result.measurements.len().saturating_sub(kept);
    result.measurements.drain(..excess);
}

/// A metric's phase from its tally, or `None` while it goes on.
pub fn assess(metric: &Metric, t: &MetricResult) -> Option<AnalysisPhase> {
    if t.failed > limit(&metric.failure_limit, 0) {
        return Some(AnalysisPhase::Failed);
    }
    if t.inconclusive > limit(&metric.inconclusive_limit, 0) {
        return Some(AnalysisPhase::Inconclusive);
    }
    if t.consecutive_error
        > limit(
            &metric.consecutive_error_limit,
            DEFAULT_CONSECUTIVE_ERROR_LIMIT,
        )
    {
        return Some(AnalysisPhase::Error);
    }
    let count = match (&metric.count, &metric.interval) {
        (Some(c), _) => limit(&Some(c.clone()), 1),
        (None, None) => 1,
        (None, Some(_)) => 0, // Argo: with an interval and no count, measure until it fails
    };
    (count > 0 && t.count >= count).then_some(AnalysisPhase::Successful)
}

/// Ends a metric after a measurement if its tally says so; returns true when that ends the
/// whole run (a metric that did not succeed and is not a dry run: Argo terminates the others).
pub fn conclude(metric: &Metric, result: &mut MetricResult) -> bool {
    let Some(phase) = assess(metric, result) else {
        return false;
    };
    result.phase = phase;
    if let Some(m) = result.measurements.last().and_then(|m| m.message.clone()) {
        result.message = Some(m);
    }
    phase != AnalysisPhase::Successful && !result.dry_run
}

/// Stops the metrics still running because another one ended the run.
pub fn stop_others(results: &mut [MetricResult]) {
    for r in results
        .iter_mut()
        .filter(|r| r.phase == AnalysisPhase::Running)
    {
        r.phase = AnalysisPhase::Successful;
        r.message = Some("stopped: another metric ended the run".into());
    }
}

/// The run's phase and message once its metrics have ended: the worst metric that is not a dry
/// run decides, and the message names every metric that ended that way.
pub fn outcome(results: &[MetricResult]) -> (AnalysisPhase, String) {
    let deciding = || results.iter().filter(|r| !r.dry_run);
    let worst = deciding()
        .map(|r| {
            if r.phase.is_terminal() {
                r.phase
            } else {
                AnalysisPhase::Error
            }
        })
        .max_by_key(|p| p.rank())
        .unwrap_or(AnalysisPhase::Successful);
    let message = deciding()
        .filter(|r| r.phase == worst)
        .map(|r| {
            format!(
                "metric {}: {}{}",
                r.name,
                worst.as_str().to_lowercase(),
                r.message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    (worst, message)
}

/// The metric due next and when: each running metric is due `initialDelay` after the run
/// started, then `interval` after its last measurement; `None` once none is running.
pub fn next_due(
    metrics: &[Metric],
    results: &[MetricResult],
    started: SystemTime,
) -> Option<(usize, SystemTime)> {
    let wait = |d: &Option<String>| -> Duration {
        d.as_deref()
            .and_then(|d| parse_duration(d).ok())
            .unwrap_or_default()
    };
    let mut due: Option<(usize, SystemTime)> = None;
    for (i, (m, r)) in metrics.iter().zip(results).enumerate() {
        if r.phase != AnalysisPhase::Running {
            continue;
        }
        let last = r
            .measurements
            .last()
            .and_then(|l| super::availability::parse_time(l.finished_at.as_deref()));
        let at = match last {
            None => started + wait(&m.initial_delay),
            Some(t) => t + wait(&m.interval),
        };
        if due.is_none_or(|(_, d)| at < d) {
            due = Some((i, at));
        }
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn metric(yaml: Value) -> Metric {
        serde_json::from_value(yaml).unwrap()
    }

    fn measured(phase: AnalysisPhase, finished_at: &str) -> Measurement {
        Measurement {
            phase,
            value: json!(1),
            started_at: None,
            finished_at: Some(finished_at.into()),
            message: Some(format!("{phase}")),
            other: Map::new(),
        }
    }

    fn tally(count: i64, failed: i64, consecutive_error: i64) -> MetricResult {
        MetricResult {
            count,
            failed,
            successful: count - failed,
            consecutive_error,
            error: consecutive_error,
            ..MetricResult::new("m", false)
        }
    }

    #[test]
    fn conditions_decide_as_argo_does() {
        use AnalysisPhase::*;
        let both = metric(
            json!({"name": "m", "successCondition": "result > 5", "failureCondition": "result < 2", "provider": {}}),
        );
        assert_eq!(evaluate(&both, &json!(7)).unwrap(), Successful);
        assert_eq!(evaluate(&both, &json!(1)).unwrap(), Failed);
        assert_eq!(evaluate(&both, &json!(3)).unwrap(), Inconclusive);
        let success =
            metric(json!({"name": "m", "successCondition": "result[0] >= 0.9", "provider": {}}));
        assert_eq!(evaluate(&success, &json!([0.5])).unwrap(), Failed);
        let failure =
            metric(json!({"name": "m", "failureCondition": "result > 3", "provider": {}}));
        assert_eq!(evaluate(&failure, &json!(1)).unwrap(), Successful);
        let none = metric(json!({"name": "m", "provider": {}}));
        assert_eq!(evaluate(&none, &json!("anything")).unwrap(), Successful);
        let helper =
            metric(json!({"name": "m", "successCondition": "asInt(result) == 3", "provider": {}}));
        assert_eq!(evaluate(&helper, &json!("3")).unwrap(), Successful);
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
        use AnalysisPhase::*;
        let once = metric(json!({"name": "m", "provider": {}}));
        assert_eq!(assess(&once, &tally(0, 0, 0)), None);
        assert_eq!(assess(&once, &tally(1, 0, 0)), Some(Successful));
        let tolerant = metric(
            json!({"name": "m", "count": 3, "interval": "1s", "failureLimit": 1, "provider": {}}),
        );
        assert_eq!(assess(&tolerant, &tally(1, 1, 0)), None);
        assert_eq!(assess(&tolerant, &tally(2, 2, 0)), Some(Failed));
        assert_eq!(assess(&tolerant, &tally(0, 0, 5)), Some(Error));
        let forever = metric(json!({"name": "m", "interval": "1s", "provider": {}}));
        assert_eq!(assess(&forever, &tally(100, 0, 0)), None);
        let by_arg = metric(json!({"name": "m", "count": "2", "provider": {}}));
        assert_eq!(assess(&by_arg, &tally(2, 0, 0)), Some(Successful));
    }

    #[test]
    fn errors_count_in_a_row_and_a_measurement_resets_them() {
        let mut r = MetricResult::new("m", false);
        for _ in 0..3 {
            record(
                &mut r,
                measured(AnalysisPhase::Error, "2026-01-01T00:00:00Z"),
                10,
            );
        }
        assert_eq!((r.count, r.error, r.consecutive_error), (0, 3, 3));
        record(
            &mut r,
            measured(AnalysisPhase::Successful, "2026-01-01T00:00:01Z"),
            10,
        );
        assert_eq!((r.count, r.error, r.consecutive_error), (1, 3, 0));
        assert_eq!(r.successful, 1);
    }

    #[test]
    fn only_the_latest_measurements_are_kept() {
        let mut r = MetricResult::new("m", false);
        for i in 0..5 {
            record(
                &mut r,
                measured(
                    AnalysisPhase::Successful,
                    &format!("2026-01-01T00:00:0{i}Z"),
                ),
                2,
            );
        }
        assert_eq!(r.count, 5);
        assert_eq!(r.measurements.len(), 2);
        assert_eq!(
            r.measurements[1].finished_at.as_deref(),
            Some("2026-01-01T00:00:04Z")
        );
    }

    #[test]
    fn a_failing_metric_ends_the_run_unless_it_is_a_dry_run() {
        let m = metric(json!({"name": "m", "provider": {}}));
        let mut real = MetricResult::new("m", false);
        record(
            &mut real,
            measured(AnalysisPhase::Failed, "2026-01-01T00:00:00Z"),
            10,
        );
        assert!(conclude(&m, &mut real));
        assert_eq!(real.phase, AnalysisPhase::Failed);
        assert_eq!(real.message.as_deref(), Some("Failed"));
        let mut dry = MetricResult::new("m", true);
        record(
            &mut dry,
            measured(AnalysisPhase::Failed, "2026-01-01T00:00:00Z"),
            10,
        );
        assert!(!conclude(&m, &mut dry));
        assert_eq!(dry.phase, AnalysisPhase::Failed, "shown, deciding nothing");
    }

    #[test]
    fn the_run_ends_as_its_worst_deciding_metric() {
        let ended = |name: &str, phase, dry_run| MetricResult {
            phase,
            message: Some("why".into()),
            ..MetricResult::new(name, dry_run)
        };
        let results = [
            ended("a", AnalysisPhase::Successful, false),
            ended("b", AnalysisPhase::Inconclusive, false),
            ended("c", AnalysisPhase::Failed, true),
        ];
        let (phase, message) = outcome(&results);
        assert_eq!(phase, AnalysisPhase::Inconclusive);
        assert_eq!(message, "metric b: inconclusive (why)");
        assert_eq!(outcome(&[]).0, AnalysisPhase::Successful);
        let mut running = vec![
            ended("a", AnalysisPhase::Running, false),
            ended("b", AnalysisPhase::Error, false),
        ];
        stop_others(&mut running);
        assert_eq!(outcome(&running).0, AnalysisPhase::Error);
    }

    #[test]
    fn the_next_measurement_waits_for_its_delay_and_interval() {
        let metrics = [
            metric(json!({"name": "a", "initialDelay": "30s", "provider": {}})),
            metric(json!({"name": "b", "interval": "10s", "count": 3, "provider": {}})),
        ];
        let start = humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let mut results = vec![MetricResult::new("a", false), MetricResult::new("b", false)];
        assert_eq!(next_due(&metrics, &results, start), Some((1, start)));
        record(
            &mut results[1],
            measured(AnalysisPhase::Successful, "2026-01-01T00:00:05Z"),
            10,
        );
        assert_eq!(
            next_due(&metrics, &results, start),
            Some((1, start + Duration::from_secs(15)))
        );
        results[1].phase = AnalysisPhase::Successful;
        assert_eq!(
            next_due(&metrics, &results, start),
            Some((0, start + Duration::from_secs(30)))
        );
        results[0].phase = AnalysisPhase::Failed;
        assert_eq!(next_due(&metrics, &results, start), None);
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
