//! A Stage's health, from the health checks its last successful Promotion registered: today the
//! Argo CD Applications its `argocd-update` steps synced, judged as Kargo judges them. An app is
//! Healthy when Argo CD says so and it is synced to the revisions the step wanted; a sync in
//! progress, a health not yet assessed since the last sync, or an app that cannot be read is
//! Unknown; Progressing and Suspended are Progressing; an error condition, a wrong revision or
//! any other health (Degraded, Missing) is Unhealthy. The Stage takes the worst of its apps.

use serde_json::{Value, json};

use crate::resource::status::{HealthCheck, HealthState, StageHealth, StepExecution};

/// The kind of step whose outputs register Argo CD health checks (Kargo's checker's name).
pub const ARGOCD_UPDATE: &str = "argocd-update";

/// The Argo CD conditions that make an app Unhealthy whatever its health says.
const ERROR_CONDITIONS: [&str; 2] = ["ComparisonError", "InvalidSpecError"];

/// The health checks a Promotion registers: one per `argocd-update` step that succeeded, with
/// the apps it synced (its `apps` output). `kinds` are the steps' kinds, in order.
pub fn checks(
    kinds: &[Option<&str>],
    metas: &[StepExecution],
    state: &serde_json::Map<String, Value>,
) -> Vec<HealthCheck> {
    metas
        .iter()
        .zip(kinds)
        .filter(|(m, kind)| {
            **kind == Some(ARGOCD_UPDATE)
                && m.status == Some(crate::resource::status::StepStatus::Succeeded)
        })
        .filter_map(|(m, _)| {
            let apps = state.get(&m.alias)?.get("apps")?.as_array()?.clone();
            (!apps.is_empty()).then(|| HealthCheck {
                uses: ARGOCD_UPDATE.into(),
                input: json!({ "apps": apps }),
            })
        })
        .collect()
}

/// One app to look at: where it is and what it should be synced to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppRef {
    /// The cluster of the daemon config (none: the project's only one).
    pub cluster: Option<String>,
    pub namespace: String,
    pub name: String,
}

/// The apps of `checks`, with the revisions each should be synced to.
pub fn apps(checks: &[HealthCheck]) -> Vec<(AppRef, Vec<String>)> {
    checks
        .iter()
        .filter(|c| c.uses == ARGOCD_UPDATE)
        .flat_map(|c| c.input["apps"].as_array().cloned().unwrap_or_default())
        .filter_map(|app| {
            let text = |k: &str| app[k].as_str().map(String::from);
            let desired = app["desiredRevisions"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .map(|v| v.as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .unwrap_or_default();
            Some((
                AppRef {
                    cluster: text("cluster"),
                    namespace: text("namespace").unwrap_or_else(|| "argocd".into()),
                    name: text("name")?,
                },
                desired,
            ))
        })
        .collect()
}

/// How one app counts, why (if not Healthy), and its status as the Stage shows it.
pub fn app(
    at: &AppRef,
    found: Result<Option<&Value>, &str>,
    desired: &[String],
) -> (HealthState, Option<String>, Value) {
    let called = format!(
        "Argo CD Application {:?} in namespace {:?}",
        at.name, at.namespace
    );
    let app = match found {
        Err(why) => {
            return (
                HealthState::Unknown,
                Some(format!("{called} cannot be read: {why}")),
                json!({"name": at.name, "namespace": at.namespace}),
            );
        }
        Ok(None) => {
            return (
                HealthState::Unknown,
                Some(format!("unable to find {called}")),
                json!({"name": at.name, "namespace": at.namespace}),
            );
        }
        Ok(Some(app)) => app,
    };
    let status = &app["status"];
    let shown = json!({
        "name": at.name,
        "namespace": at.namespace,
        "health": status["health"],
        "sync": status["sync"],
    });
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let finished = text(&status["operationState"]["finishedAt"]);
    let reconciled = text(&status["reconciledAt"]);
    // RFC 3339 UTC times compare as text.
    if !finished.is_empty() && (reconciled.is_empty() || reconciled < finished) {
        return (
            HealthState::Unknown,
            Some(format!(
                "{called} was not reconciled after its most recent operation completed; its health is not trusted yet"
            )),
            shown,
        );
    }
    let errors: Vec<String> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| ERROR_CONDITIONS.contains(&c["type"].as_str().unwrap_or_default()))
        .map(|c| {
            format!(
                "{called} has {:?} condition: {}",
                text(&c["type"]),
                text(&c["message"])
            )
        })
        .collect();
    if !errors.is_empty() {
        return (HealthState::Unhealthy, Some(errors.join("; ")), shown);
    }
    if desired.iter().any(|r| !r.is_empty()) {
        let syncing = app["operation"]["sync"].is_object();
        if syncing || finished.is_empty() {
            return (
                HealthState::Unknown,
                Some(format!("{called} is being synced")),
                shown,
            );
        }
        let result = &status["operationState"]["syncResult"];
        let observed: Vec<String> = match result["revisions"].as_array() {
            Some(r) if !r.is_empty() => r.iter().map(text).collect(),
            _ => vec![text(&result["revision"])],
        };
        let wrong: Vec<String> = desired
            .iter()
            .enumerate()
            .filter(|(i, want)| !want.is_empty() && observed.get(*i) != Some(*want))
            .map(|(i, want)| format!("source {i} is not synced to the desired revision {want:?}"))
            .collect();
        if !wrong.is_empty() {
            return (
                HealthState::Unhealthy,
                Some(format!("{called}: {}", wrong.join("; "))),
                shown,
            );
        }
    }
    match status["health"]["status"].as_str().unwrap_or_default() {
        "Healthy" => (HealthState::Healthy, None, shown),
        "" | "Progressing" => (
            HealthState::Progressing,
            Some(format!("{called} is progressing")),
            shown,
        ),
        "Suspended" => (
            HealthState::Progressing,
            Some(format!("{called} is suspended")),
            shown,
        ),
        other => {
            let message = status["health"]["message"]
                .as_str()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            (
                HealthState::Unhealthy,
                Some(format!("{called} has health state {other:?}{message}")),
                shown,
            )
        }
    }
}

/// The Stage's health from each app's judgement: the worst state, every issue, every app.
pub fn stage(judged: Vec<(HealthState, Option<String>, Value)>) -> StageHealth {
    let mut health = StageHealth {
        status: HealthState::Healthy,
        ..StageHealth::default()
    };
    let mut apps = Vec::new();
    for (state, issue, shown) in judged {
        health.status = health.status.max(state);
        health.issues.extend(issue);
        apps.push(shown);
    }
    health.output = Some(json!({ "applicationStatuses": apps }));
    health
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> AppRef {
        AppRef {
            cluster: None,
            namespace: "argocd".into(),
            name: "web".into(),
        }
    }

    fn judge(app: Value, desired: &[&str]) -> (HealthState, Option<String>) {
        let desired: Vec<String> = desired.iter().map(|s| s.to_string()).collect();
        let (state, issue, _) = super::app(&at(), Ok(Some(&app)), &desired);
        (state, issue)
    }

    fn synced(health: &str, revision: &str) -> Value {
        json!({"status": {
            "health": {"status": health, "message": "deadline exceeded"},
            "sync": {"status": "Synced", "revision": revision},
            "operationState": {"phase": "Succeeded", "finishedAt": "2026-11-30T10:00:00Z", "syncResult": {"revision": revision}},
            "reconciledAt": "2026-11-30T10:00:01Z",
        }})
    }

    #[test]
    fn an_app_counts_as_kargo_counts_it() {
        assert_eq!(
            judge(synced("Healthy", "abc"), &["abc"]).0,
            HealthState::Healthy
        );
        assert_eq!(
            judge(synced("Healthy", "abc"), &[""]).0,
            HealthState::Healthy
        );
        let (state, issue) = judge(synced("Healthy", "old"), &["abc"]);
        assert_eq!(state, HealthState::Unhealthy);
        assert!(
            issue
                .unwrap_or_default()
                .contains("not synced to the desired revision \"abc\"")
        );
        let (state, issue) = judge(synced("Degraded", "abc"), &["abc"]);
        assert_eq!(state, HealthState::Unhealthy);
        assert!(
            issue
                .unwrap_or_default()
                .contains("\"Degraded\": deadline exceeded")
        );
        assert_eq!(
            judge(synced("Progressing", "abc"), &["abc"]).0,
            HealthState::Progressing
        );
        assert_eq!(
            judge(synced("Suspended", "abc"), &["abc"]).0,
            HealthState::Progressing
        );

        let mut stale = synced("Healthy", "abc");
        stale["status"]["reconciledAt"] = json!("2026-11-30T09:59:59Z");
        assert_eq!(judge(stale, &["abc"]).0, HealthState::Unknown);
        let mut syncing = synced("Healthy", "abc");
        syncing["operation"] = json!({"sync": {}});
        assert_eq!(judge(syncing, &["abc"]).0, HealthState::Unknown);
        let mut broken = synced("Healthy", "abc");
        broken["status"]["conditions"] = json!([{"type": "ComparisonError", "message": "bad"}]);
        assert_eq!(judge(broken, &["abc"]).0, HealthState::Unhealthy);

        let (state, issue, _) = app(&at(), Ok(None), &[]);
        assert_eq!(state, HealthState::Unknown);
        assert!(issue.unwrap_or_default().contains("unable to find"));
    }

    #[test]
    fn the_stage_takes_the_worst_app() {
        let health = stage(vec![
            (HealthState::Healthy, None, json!({})),
            (HealthState::Progressing, Some("p".into()), json!({})),
            (HealthState::Unhealthy, Some("u".into()), json!({})),
        ]);
        assert_eq!(health.status, HealthState::Unhealthy);
        assert_eq!(health.issues, ["p", "u"]);
        assert_eq!(stage(vec![]).status, HealthState::Healthy);
    }
}
