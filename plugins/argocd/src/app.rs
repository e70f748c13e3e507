//! One Argo CD Application as the cluster stores it (JSON), and what the steps read from and do
//! to it: consent, desired revisions and sources, whether a sync is needed, the sync request,
//! health.

use dray_sdk::StepError;
use dray_sdk::kube::{PatchKind, Target};
use serde_json::{Map, Value, json};

use crate::{AUTHORIZED_STAGE, SourceUpdate};

/// The `operation.info` entry by which a sync is known as this Promotion's (Kargo's key).
const PROMOTION_INFO: &str = "kargo.akuity.io/promotion";

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    Failed,
    Succeeded,
}

pub struct App {
    pub name: String,
    pub namespace: String,
    cluster: Option<String>,
    object: Value,
}

/// The target of Application `name` (none: all) in `namespace`.
pub fn target(cluster: Option<&str>, namespace: &str, name: Option<&str>) -> Target {
    Target {
        cluster: cluster.map(String::from),
        api_version: "argoproj.io/v1alpha1".into(),
        kind: "Application".into(),
        namespace: Some(namespace.into()),
        name: name.map(String::from),
    }
}

impl App {
    pub fn parse(text: &str, cluster: Option<&str>) -> Result<App, StepError> {
        let object: Value = serde_json::from_str(text).map_err(|e| {
            dray_sdk::retryable(format!(
                "the cluster sent an Application that is not JSON: {e}"
            ))
        })?;
        let field = |p: &str| {
            object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(App {
            name: field("/metadata/name"),
            namespace: field("/metadata/namespace"),
            cluster: cluster.map(String::from),
            object,
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "Argo CD Application {:?} in namespace {:?}",
            self.name, self.namespace
        )
    }

    fn text(&self, pointer: &str) -> Option<&str> {
        self.object.pointer(pointer).and_then(Value::as_str)
    }

    /// Refuses unless the Application consents to `project`'s Stage `stage` changing it.
    pub fn authorize(&self, project: &str, stage: &str) -> Result<(), StepError> {
        let wanted = format!("{project}:{stage}");
        let annotation = self
            .object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(AUTHORIZED_STAGE))
            .and_then(Value::as_str);
        match annotation {
            Some(value) if value == wanted => Ok(()),
            Some(value) if value.contains('*') => Err(dray_sdk::terminal(format!(
                "{} names Stages with a pattern in its annotation {AUTHORIZED_STAGE} ({value:?}), which is no longer honoured: write {wanted:?}",
                self.describe()
            ))),
            Some(value) => Err(dray_sdk::terminal(format!(
                "{} does not permit changes by Stage {stage:?} of project {project:?}: its annotation {AUTHORIZED_STAGE} is {value:?}; make it {wanted:?}",
                self.describe()
            ))),
            None => Err(dray_sdk::terminal(format!(
                "{} does not permit changes by Stage {stage:?} of project {project:?}: add the annotation `{AUTHORIZED_STAGE}: {wanted}` to it",
                self.describe()
            ))),
        }
    }

    /// The Application's sources (`spec.sources`, or its one `spec.source`).
    fn sources(&self) -> Vec<Value> {
        match self
            .object
            .pointer("/spec/sources")
            .and_then(Value::as_array)
        {
            Some(sources) if !sources.is_empty() => sources.clone(),
            _ => self
                .object
                .pointer("/spec/source")
                .map(|s| vec![s.clone()])
                .unwrap_or_default(),
        }
    }

    /// For each source of the Application, the revision the update wants it synced to (empty:
    /// any).
    pub fn desired_revisions(
        &self,
        updates: &[SourceUpdate],
        outputs: &Value,
    ) -> Result<Vec<String>, StepError> {
        self.sources()
            .iter()
            .map(|source| {
                let Some(update) = updates.iter().find(|u| applies(u, source)) else {
                    return Ok(String::new());
                };
                if let Some(revision) = &update.desired_revision {
                    return Ok(revision.clone());
                }
                match &update.desired_commit_from_step {
                    None => Ok(String::new()),
                    Some(step) => outputs
                        .get(step)
                        .and_then(|o| o.get("commit"))
                        .and_then(Value::as_str)
                        .map(String::from)
                        .ok_or_else(|| {
                            StepError::InvalidConfig(format!(
                                "desiredCommitFromStep: no earlier step {step:?} has a commit output"
                            ))
                        }),
                }
            })
            .collect()
    }

    /// The Application's sources with the updates applied; every update must apply to one.
    pub fn desired_sources(
        &self,
        updates: &[SourceUpdate],
        desired: &[String],
    ) -> Result<Vec<Value>, StepError> {
        let mut sources = self.sources();
        for update in updates {
            let Some(i) = sources.iter().position(|s| applies(update, s)) else {
                let chart = update
                    .chart
                    .as_ref()
                    .map(|c| format!(" and chart {c:?}"))
                    .unwrap_or_default();
                return Err(StepError::InvalidConfig(format!(
                    "no source of {} has repoURL {}{chart}",
                    self.describe(),
                    update.repo_url
                )));
            };
            let source = &mut sources[i];
            if update.update_target_revision {
                let revision = desired.get(i).filter(|r| !r.is_empty()).ok_or_else(|| {
                    StepError::InvalidConfig(
                        "updateTargetRevision needs desiredRevision (or desiredCommitFromStep)"
                            .into(),
                    )
                })?;
                source["targetRevision"] = json!(revision);
            }
            if let Some(kustomize) = &update.kustomize {
                let images: Vec<Value> = kustomize
                    .images
                    .iter()
                    .map(|image| {
                        let mut text = image.repo_url.clone();
                        if let Some(new_name) = &image.new_name {
                            text = format!("{text}={new_name}");
                        }
                        match (&image.digest, &image.tag) {
                            (Some(digest), _) => json!(format!("{text}@{digest}")),
                            (None, tag) => {
                                json!(format!("{text}:{}", tag.as_deref().unwrap_or_default()))
                            }
                        }
                    })
                    .collect();
                ensure_object(source, "kustomize")["images"] = Value::Array(images);
            }
            if let Some(helm) = &update.helm {
                let helm_source = ensure_object(source, "helm");
                let parameters = helm_source
                    .as_object_mut()
                    .expect("an object")
                    .entry("parameters")
                    .or_insert_with(|| json!([]));
                if !parameters.is_array() {
                    *parameters = json!([]);
                }
                let list = parameters.as_array_mut().expect("an array");
                for image in &helm.images {
                    let parameter = json!({"name": image.key, "value": image.value});
                    match list.iter_mut().find(|p| p["name"] == image.key.as_str()) {
                        Some(existing) => *existing = parameter,
                        None => list.push(parameter),
                    }
                }
            }
        }
        Ok(sources)
    }

    /// Whether a sync must be requested, the phase of the operation that decides it, and why
    /// (for the log), as Kargo decides: an operation of someone else or of another Promotion is
    /// waited for, then replaced; this Promotion's is done once it synced the desired revisions.
    pub fn must_update(
        &self,
        promotion: &str,
        desired: &[String],
    ) -> (Option<Phase>, bool, Option<String>) {
        let Some(state) = self.object.pointer("/status/operationState") else {
            return (None, true, Some("no operation yet".into()));
        };
        let phase = phase_of(
            state
                .get("phase")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        let info = state.pointer("/operation/info").and_then(Value::as_array);
        let ours = info.and_then(|info| {
            info.iter()
                .find(|i| i["name"] == PROMOTION_INFO)
                .and_then(|i| i["value"].as_str())
        });
        match ours {
            Some(p) if p == promotion => {}
            other => {
                let whose = match other {
                    Some(p) => format!("Promotion {p}"),
                    None => format!(
                        "{:?}",
                        state
                            .pointer("/operation/initiatedBy/username")
                            .and_then(Value::as_str)
                            .unwrap_or("someone else")
                    ),
                };
                if phase == Phase::Running {
                    return (
                        Some(Phase::Running),
                        false,
                        Some(format!("waiting for the operation of {whose} to finish")),
                    );
                }
                return (
                    None,
                    true,
                    Some(format!("the last operation was {whose}'s")),
                );
            }
        }
        if phase != Phase::Succeeded {
            return (Some(phase), false, None);
        }
        let Some(result) = state.get("syncResult") else {
            return (
                None,
                true,
                Some("the operation ended without a sync result".into()),
            );
        };
        let observed: Vec<&str> = match result.get("revisions").and_then(Value::as_array) {
            Some(revisions) if !revisions.is_empty() => {
                revisions.iter().filter_map(Value::as_str).collect()
            }
            _ => vec![
                result
                    .get("revision")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ],
        };
        for (i, want) in desired.iter().enumerate() {
            if !want.is_empty() && observed.get(i).is_some_and(|seen| seen != want) {
                return (
                    None,
                    true,
                    Some(format!(
                        "it synced {observed:?}, not the desired {desired:?}"
                    )),
                );
            }
        }
        (Some(Phase::Succeeded), false, None)
    }

    /// Requests a sync of `sources` for `promotion`, as Kargo does: a hard refresh, the sources
    /// set, and an `operation` that names the Promotion (one merge patch).
    pub fn sync(&self, promotion: &str, sources: &[Value]) -> Result<(), StepError> {
        let mut spec = Map::new();
        if self
            .object
            .pointer("/spec/sources")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty())
        {
            spec.insert("sources".into(), Value::Array(sources.to_vec()));
        } else if let Some(source) = sources.first() {
            spec.insert("source".into(), source.clone());
        }
        let mut operation = json!({
            "initiatedBy": {"username": "dray", "automated": true},
            "info": [
                {"name": "Reason", "value": "Promotion triggered a sync of this Application resource."},
                {"name": PROMOTION_INFO, "value": promotion},
            ],
            "sync": {"revisions": []},
        });
        if let Some(policy) = self.object.pointer("/spec/syncPolicy") {
            if let Some(retry) = policy.get("retry") {
                operation["retry"] = retry.clone();
            }
            if let Some(options) = policy.get("syncOptions") {
                operation["sync"]["syncOptions"] = options.clone();
            }
        }
        let mut patch = json!({
            "metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}},
            "spec": spec,
            "operation": operation,
        });
        // Argo CD's API server clears the last operation's state when it starts one; a write
        // straight to the resource must do it itself (argo-cd#20875).
        if self.object.get("status").is_some_and(Value::is_object) {
            patch["status"] = json!({"operationState": null});
        }
        dray_sdk::kube::patch(
            &target(self.cluster.as_deref(), &self.namespace, Some(&self.name)),
            PatchKind::Merge,
            &patch.to_string(),
        )
        .map_err(dray_sdk::retryable)?;
        Ok(())
    }

    pub fn operation_message(&self) -> String {
        self.text("/status/operationState/message")
            .unwrap_or("no message")
            .to_string()
    }

    fn health(&self) -> &str {
        self.text("/status/health/status").unwrap_or("Unknown")
    }

    /// What the Application's conditions and health say, for a message.
    fn conditions(&self) -> String {
        let mut said: Vec<String> = self
            .object
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{}: {}",
                    c["type"].as_str().unwrap_or("condition"),
                    c["message"].as_str().unwrap_or_default()
                )
            })
            .collect();
        if let Some(message) = self.text("/status/health/message") {
            said.insert(0, message.to_string());
        }
        if said.is_empty() {
            String::new()
        } else {
            format!(" ({})", said.join("; "))
        }
    }

    /// After a successful sync: none once the Application is Healthy and Argo CD has looked at
    /// it since the sync finished, else what it waits for.
    pub fn health_wait(&self) -> Option<String> {
        let health = self.health();
        let finished = self.text("/status/operationState/finishedAt");
        let reconciled = self.text("/status/reconciledAt");
        // RFC 3339 UTC times compare as text.
        let stale = matches!((finished, reconciled), (Some(f), Some(r)) if r < f);
        if health == "Healthy" && !stale {
            return None;
        }
        Some(if stale {
            format!(
                "{} is synced; waiting for Argo CD to assess its health",
                self.describe()
            )
        } else {
            format!(
                "{} is synced but {health}{}",
                self.describe(),
                self.conditions()
            )
        })
    }

    /// For `argocd-wait`: none once the Application is as `what` asks, else why not.
    pub fn not_yet(&self, what: &str) -> Option<String> {
        let health = self.health();
        let sync = self.text("/status/sync/status").unwrap_or("Unknown");
        let done = match what {
            "health" => health == "Healthy",
            "sync" => sync == "Synced",
            "suspended" => health == "Suspended",
            "degraded" => health == "Degraded",
            _ => {
                self.object.get("operation").is_none_or(Value::is_null)
                    && self
                        .text("/status/operationState/phase")
                        .is_none_or(|p| phase_of(p) != Phase::Running)
            }
        };
        (!done).then(|| {
            format!(
                "{} is {health} and {sync}, waiting for {what}{}",
                self.describe(),
                self.conditions()
            )
        })
    }
}

fn phase_of(text: &str) -> Phase {
    match text {
        "Failed" | "Error" => Phase::Failed,
        "Succeeded" => Phase::Succeeded,
        _ => Phase::Running,
    }
}

fn ensure_object<'a>(value: &'a mut Value, key: &str) -> &'a mut Value {
    let entry = value
        .as_object_mut()
        .expect("a source is an object")
        .entry(key)
        .or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry
}

/// Whether `update` is for `source`: a chart source by its exact repository and chart, a Git
/// source by its repository, however its URL is spelled.
fn applies(update: &SourceUpdate, source: &Value) -> bool {
    let repo = source["repoURL"].as_str().unwrap_or_default();
    let chart = source["chart"].as_str().unwrap_or_default();
    let wanted_chart = update.chart.as_deref().unwrap_or_default();
    if !chart.is_empty() || !wanted_chart.is_empty() {
        return repo == update.repo_url && chart == wanted_chart;
    }
    same_git_repo(repo, &update.repo_url)
}

/// Two spellings of one Git repository: case, a trailing `/` or `.git`, and credentials in an
/// http(s) URL do not matter.
fn same_git_repo(a: &str, b: &str) -> bool {
    fn plain(url: &str) -> String {
        let lower = url.trim().to_lowercase();
        let lower = match lower.split_once("://") {
            Some((scheme, rest)) if scheme.starts_with("http") => {
                let rest = match rest.split_once('/') {
                    Some((authority, path)) => format!(
                        "{}/{path}",
                        authority
                            .rsplit_once('@')
                            .map_or(authority, |(_, host)| host)
                    ),
                    None => rest.to_string(),
                };
                format!("{scheme}://{rest}")
            }
            _ => lower,
        };
        let trimmed = lower.trim_end_matches('/');
        trimmed.strip_suffix(".git").unwrap_or(trimmed).to_string()
    }
    plain(a) == plain(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(object: Value) -> App {
        App::parse(&object.to_string(), None).expect("an app")
    }

    fn update(value: Value) -> SourceUpdate {
        serde_json::from_value(value).expect("an update")
    }

    #[test]
    fn consent_is_the_exact_project_and_stage() {
        let with = |v: &str| {
            app(
                json!({"metadata": {"name": "a", "namespace": "argocd", "annotations": {AUTHORIZED_STAGE: v}}}),
            )
        };
        assert!(with("shop:test").authorize("shop", "test").is_ok());
        for (value, says) in [
            ("shop:prod", "make it \"shop:test\""),
            ("shop:*", "no longer honoured"),
        ] {
            let StepError::Terminal(message) =
                with(value).authorize("shop", "test").expect_err(value)
            else {
                panic!("terminal")
            };
            assert!(message.contains(says), "{message}");
        }
        let none = app(json!({"metadata": {"name": "a", "namespace": "argocd"}}));
        let StepError::Terminal(message) = none.authorize("shop", "test").expect_err("none") else {
            panic!("terminal")
        };
        assert!(
            message.contains("add the annotation `kargo.akuity.io/authorized-stage: shop:test`"),
            "{message}"
        );
    }

    #[test]
    fn updates_find_their_source_and_change_only_it() {
        let a = app(
            json!({"metadata": {"name": "a", "namespace": "argocd"}, "spec": {"sources": [
                {"repoURL": "https://git.example/Shop.git", "targetRevision": "main"},
                {"repoURL": "https://charts.example", "chart": "web", "targetRevision": "1.0.0",
                 "helm": {"parameters": [{"name": "image.tag", "value": "1"}, {"name": "x", "value": "y"}]}},
            ]}}),
        );
        let updates = vec![
            update(
                json!({"repoURL": "https://user@git.example/shop/", "desiredRevision": "abc", "updateTargetRevision": true,
                "kustomize": {"images": [{"repoURL": "shop/web", "tag": "2.0"}, {"repoURL": "shop/api", "newName": "m/api", "digest": "sha256:1"}]}}),
            ),
            update(
                json!({"repoURL": "https://charts.example", "chart": "web", "helm": {"images": [{"key": "image.tag", "value": "2"}, {"key": "new", "value": "v"}]}}),
            ),
        ];
        let desired = a
            .desired_revisions(&updates, &json!({}))
            .expect("revisions");
        assert_eq!(desired, ["abc", ""]);
        let sources = a.desired_sources(&updates, &desired).expect("sources");
        assert_eq!(sources[0]["targetRevision"], "abc");
        assert_eq!(
            sources[0]["kustomize"]["images"],
            json!(["shop/web:2.0", "shop/api=m/api@sha256:1"])
        );
        assert_eq!(sources[1]["targetRevision"], "1.0.0");
        assert_eq!(
            sources[1]["helm"]["parameters"],
            json!([{"name": "image.tag", "value": "2"}, {"name": "x", "value": "y"}, {"name": "new", "value": "v"}])
        );
        let stray = vec![update(json!({"repoURL": "https://other.example/x.git"}))];
        assert!(a.desired_sources(&stray, &desired).is_err());
        let from_step = vec![update(
            json!({"repoURL": "https://git.example/shop.git", "desiredCommitFromStep": "commit"}),
        )];
        let outputs = json!({"commit": {"commit": "f00"}});
        assert_eq!(
            a.desired_revisions(&from_step, &outputs)
                .expect("revisions"),
            ["f00", ""]
        );
        assert!(a.desired_revisions(&from_step, &json!({})).is_err());
    }

    #[test]
    fn a_sync_is_needed_until_this_promotion_synced_the_desired_revision() {
        let with = |state: Value| {
            app(
                json!({"metadata": {"name": "a", "namespace": "argocd"}, "status": {"operationState": state}}),
            )
        };
        let info = |p: &str| json!({"info": [{"name": PROMOTION_INFO, "value": p}]});
        let desired = vec!["abc".to_string()];
        let none = app(json!({"metadata": {"name": "a", "namespace": "argocd"}}));
        assert!(none.must_update("p1", &desired).1);
        let theirs_running =
            with(json!({"phase": "Running", "operation": {"initiatedBy": {"username": "alice"}}}));
        assert_eq!(
            theirs_running.must_update("p1", &desired).0,
            Some(Phase::Running)
        );
        assert!(!theirs_running.must_update("p1", &desired).1);
        assert!(
            with(json!({"phase": "Succeeded", "operation": info("p0")}))
                .must_update("p1", &desired)
                .1
        );
        assert_eq!(
            with(json!({"phase": "Running", "operation": info("p1")})).must_update("p1", &desired),
            (Some(Phase::Running), false, None)
        );
        assert_eq!(
            with(json!({"phase": "Failed", "operation": info("p1")}))
                .must_update("p1", &desired)
                .0,
            Some(Phase::Failed)
        );
        let synced = |rev: &str| {
            with(
                json!({"phase": "Succeeded", "operation": info("p1"), "syncResult": {"revision": rev}}),
            )
        };
        assert_eq!(
            synced("abc").must_update("p1", &desired),
            (Some(Phase::Succeeded), false, None)
        );
        assert!(synced("old").must_update("p1", &desired).1);
    }
}
