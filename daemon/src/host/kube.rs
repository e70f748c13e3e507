//! The `dray:plugin/kube` interface (capability `kube`): a step reads and changes Kubernetes
//! objects through the host's client, with the cluster credentials of the daemon config, which
//! the guest never sees. Three fences stand between a guest and a cluster: the cluster must be
//! one the promotion's project may use (`projects` of `[clusters.NAME]`), in a namespace the
//! config allows (`namespaces`), and the kind and verb must be granted to the plugin (its `kube`
//! rules: `"get,patch Application.argoproj.io"`). Behind them, the cluster's RBAC answers for the
//! daemon's own user. Only namespaced kinds are reachable; objects are at most
//! [`MAX_OBJECT_BYTES`] each way, lists at most [`MAX_LIST`] items, and a step makes at most
//! [`MAX_CALLS`] calls.

use std::sync::Arc;

use ::kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, WatchEvent, WatchParams,
};
use futures_util::StreamExt;
use serde_json::Value;
use wasmtime::component::{HasSelf, Linker};

use crate::clusters::{Cluster, Clusters, describe};
use crate::runtime::bindings::dray::plugin::kube::{
    self as wit, Change, Event, PatchKind, Target, Watched,
};
use crate::runtime::log::{Source, StepLog};

/// The most calls one step call may make (a wait that polls every few seconds for ten minutes
/// makes a few hundred).
pub const MAX_CALLS: u32 = 2_000;
/// The largest object a call takes or returns, as JSON.
pub const MAX_OBJECT_BYTES: usize = 4 << 20;
/// The most objects `list` returns.
pub const MAX_LIST: u32 = 1_000;
/// The field manager of server-side apply.
pub const FIELD_MANAGER: &str = "dray";

/// What a call may do to objects: `apply`, `get`, `list`, `watch`, `patch`, `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Apply,
    Patch,
    Delete,
    /// Read a Pod's log (`follow-logs`).
    Logs,
}

const VERBS: [(&str, Verb); 7] = [
    ("get", Verb::Get),
    ("list", Verb::List),
    ("watch", Verb::Watch),
    ("apply", Verb::Apply),
    ("patch", Verb::Patch),
    ("delete", Verb::Delete),
    ("logs", Verb::Logs),
];

/// The longest a `follow-logs` call follows.
pub const MAX_FOLLOW_SECONDS: u32 = 3_600;

/// The longest a `watch` call waits.
pub const MAX_WATCH_SECONDS: u32 = 60;
/// The most events one `watch` call answers.
pub const MAX_EVENTS: usize = 100;

/// One grant of the operator: verbs on one kind (`get,patch Application.argoproj.io`, `* Job.batch`,
/// `get,list Pod` for the core group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    verbs: Vec<Verb>,
    kind: String,
    group: String,
}

impl Rule {
    /// Reads a rule as the daemon config writes it.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let usage = || {
            format!(
                "kube rule {text:?}: write VERBS KIND[.GROUP], e.g. \"get,patch Application.argoproj.io\" or \"get,list Pod\" (verbs: get, list, watch, apply, patch, delete, logs, or *)"
            )
        };
        let (verbs, resource) = text.trim().split_once(' ').ok_or_else(usage)?;
        let verbs = if verbs == "*" {
            VERBS.iter().map(|(_, v)| *v).collect()
        } else {
            verbs
                .split(',')
                .map(|v| {
                    VERBS
                        .iter()
                        .find(|(name, _)| *name == v.trim())
                        .map(|(_, verb)| *verb)
                        .ok_or_else(usage)
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let (kind, group) = resource
            .trim()
            .split_once('.')
            .unwrap_or((resource.trim(), ""));
        if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(usage());
        }
        Ok(Rule {
            verbs,
            kind: kind.into(),
            group: group.into(),
        })
    }

    fn allows(&self, verb: Verb, group: &str, kind: &str) -> bool {
        self.verbs.contains(&verb) && self.kind == kind && self.group == group
    }
}

/// The kube rules of the built-in plugins: the steps (`argocd-update`, `argocd-wait`) read,
/// list and patch Argo CD Applications; the verifiers (`job`) run Jobs and read their pods and
/// logs.
pub fn builtin_rules() -> std::collections::BTreeMap<String, Arc<[Rule]>> {
    [
        ("steps", &["get,list,patch Application.argoproj.io"][..]),
        (
            "verifiers",
            &["apply,get,delete Job.batch", "list,logs Pod"][..],
        ),
    ]
    .into_iter()
    .map(|(plugin, rules)| {
        let rules: Vec<Rule> = rules
            .iter()
            .map(|r| Rule::parse(r).expect("a built-in rule parses"))
            .collect();
        (plugin.to_string(), rules.into())
    })
    .collect()
}

/// Where `kube` calls may go: the clusters (none: the call says how to configure one), the
/// project whose clusters and namespaces apply, and the plugin's rules.
#[derive(Debug, Clone, Default)]
pub struct KubeAccess {
    pub clusters: Option<Arc<Clusters>>,
    pub project: String,
    pub rules: Arc<[Rule]>,
}

/// What the `kube` capability keeps for one call.
pub struct KubeState {
    pub access: KubeAccess,
    pub log: StepLog,
    pub calls: u32,
}

impl KubeState {
    pub fn new(access: KubeAccess, log: StepLog) -> KubeState {
        KubeState {
            access,
            log,
            calls: 0,
        }
    }

    /// The cluster and API for `target` if every fence lets `verb` through.
    async fn api(
        &mut self,
        verb: Verb,
        target: &Target,
    ) -> Result<(&Cluster, Api<DynamicObject>), String> {
        self.calls += 1;
        if self.calls > MAX_CALLS {
            return Err(format!("a step may make at most {MAX_CALLS} kube calls"));
        }
        let group = target
            .api_version
            .split_once('/')
            .map_or("", |(group, _)| group);
        if !self
            .access
            .rules
            .iter()
            .any(|r| r.allows(verb, group, &target.kind))
        {
            let resource = if group.is_empty() {
                target.kind.clone()
            } else {
                format!("{}.{group}", target.kind)
            };
            return Err(format!(
                "this plugin may not {} {resource}: the operator grants it with a kube rule (`kube = [\"{} {resource}\"]` for the plugin in the daemon config)",
                if verb == Verb::Logs {
                    "read the logs of"
                } else {
                    verb_name(verb)
                },
                verb_name(verb)
            ));
        }
        let clusters = self.access.clusters.as_ref().ok_or(
            "no Kubernetes cluster is configured: add [clusters.NAME] with its kubeconfig and the projects that may use it to the daemon config",
        )?;
        let cluster = clusters.for_project(&self.access.project, target.cluster.as_deref())?;
        let (resource, namespaced) = cluster.resource(&target.api_version, &target.kind).await?;
        if !namespaced {
            return Err(format!(
                "{} is cluster-scoped: steps reach namespaced kinds only",
                target.kind
            ));
        }
        let namespace = target
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{} needs a namespace", target.kind))?;
        if !cluster.allows_namespace(namespace) {
            return Err(format!(
                "namespace {namespace:?} of cluster {:?} is not open to project {:?}: {}",
                cluster.name, self.access.project, cluster.namespace_hint
            ));
        }
        let api = Api::namespaced_with(cluster.client.clone(), namespace, &resource);
        Ok((cluster, api))
    }

    async fn get(&mut self, target: Target) -> Result<Option<String>, String> {
        let name = name_of(&target)?;
        let (cluster, api) = self.api(Verb::Get, &target).await?;
        let found = api
            .get_opt(&name)
            .await
            .map_err(|e| describe(&cluster.name, e))?;
        found.map(|o| bounded(&o)).transpose()
    }

    async fn list(
        &mut self,
        target: Target,
        selector: Option<String>,
    ) -> Result<Vec<String>, String> {
        let (cluster, api) = self.api(Verb::List, &target).await?;
        let mut params = ListParams::default().limit(MAX_LIST);
        if let Some(selector) = &selector {
            params = params.labels(selector);
        }
        let list = api
            .list(&params)
            .await
            .map_err(|e| describe(&cluster.name, e))?;
        list.items.iter().map(bounded).collect()
    }

    async fn apply(&mut self, cluster: Option<String>, object: String) -> Result<String, String> {
        let value = object_of(&object)?;
        let field = |name: &str| {
            value
                .pointer(name)
                .and_then(Value::as_str)
                .map(String::from)
        };
        let target = Target {
            cluster,
            api_version: field("/apiVersion").ok_or("the object has no apiVersion")?,
            kind: field("/kind").ok_or("the object has no kind")?,
            namespace: field("/metadata/namespace"),
            name: Some(field("/metadata/name").ok_or("the object has no metadata.name")?),
        };
        let name = name_of(&target)?;
        let (cluster, api) = self.api(Verb::Apply, &target).await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let stored = api
            .patch(&name, &params, &Patch::Apply(&value))
            .await
            .map_err(|e| describe(&cluster.name, e))?;
        bounded(&stored)
    }

    async fn patch(
        &mut self,
        target: Target,
        kind: PatchKind,
        patch: String,
    ) -> Result<String, String> {
        let name = name_of(&target)?;
        let value = object_of(&patch)?;
        let (cluster, api) = self.api(Verb::Patch, &target).await?;
        let params = PatchParams::default();
        let stored = match kind {
            PatchKind::Merge => api.patch(&name, &params, &Patch::Merge(&value)).await,
            PatchKind::Json => {
                let operations: json_patch::Patch = serde_json::from_value(value)
                    .map_err(|e| format!("the JSON patch is not a list of operations: {e}"))?;
                api.patch(&name, &params, &Patch::<()>::Json(operations))
                    .await
            }
        }
        .map_err(|e| describe(&cluster.name, e))?;
        bounded(&stored)
    }

    async fn delete(&mut self, target: Target) -> Result<(), String> {
        let name = name_of(&target)?;
        let (cluster, api) = self.api(Verb::Delete, &target).await?;
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(::kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(describe(&cluster.name, e)),
        }
    }

    async fn watch(
        &mut self,
        target: Target,
        selector: Option<String>,
        version: String,
        timeout: u32,
    ) -> Result<Watched, String> {
        let (cluster, api) = self.api(Verb::Watch, &target).await?;
        let describe = |e| describe(&cluster.name, e);
        if version.is_empty() {
            let mut params = ListParams::default().limit(MAX_LIST);
            if let Some(selector) = &selector {
                params = params.labels(selector);
            }
            if let Some(name) = &target.name {
                params = params.fields(&format!("metadata.name={name}"));
            }
            let list = api.list(&params).await.map_err(describe)?;
            let events = list
                .items
                .iter()
                .map(|o| {
                    Ok(Event {
                        change: Change::Added,
                        object: bounded(o)?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            return Ok(Watched {
                events,
                resource_version: list.metadata.resource_version.unwrap_or_default(),
            });
        }
        let wait = timeout.clamp(1, MAX_WATCH_SECONDS);
        let mut params = WatchParams::default().timeout(wait);
        if let Some(selector) = &selector {
            params = params.labels(selector);
        }
        if let Some(name) = &target.name {
            params = params.fields(&format!("metadata.name={name}"));
        }
        let stream = api.watch(&params, &version).await.map_err(describe)?;
        let mut stream = std::pin::pin!(stream);
        let mut events = Vec::new();
        let mut resource_version = version;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait.into());
        loop {
            // After the first event, only what follows at once joins it.
            let until = if events.is_empty() {
                deadline
            } else {
                deadline.min(tokio::time::Instant::now() + std::time::Duration::from_millis(50))
            };
            let next = match tokio::time::timeout_at(until, stream.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(next)) => next.map_err(describe)?,
            };
            let (change, object) = match next {
                WatchEvent::Added(o) => (Change::Added, o),
                WatchEvent::Modified(o) => (Change::Modified, o),
                WatchEvent::Deleted(o) => (Change::Deleted, o),
                WatchEvent::Bookmark(b) => {
                    resource_version = b.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(status) if status.code == 410 => {
                    return Err(format!(
                        "resource version {resource_version} is too old to watch from: start again with an empty one"
                    ));
                }
                WatchEvent::Error(status) => return Err(describe(::kube::Error::Api(status))),
            };
            if let Some(v) = &object.metadata.resource_version {
                resource_version.clone_from(v);
            }
            events.push(Event {
                change,
                object: bounded(&object)?,
            });
            if events.len() >= MAX_EVENTS {
                break;
            }
        }
        Ok(Watched {
            events,
            resource_version,
        })
    }

    async fn follow_logs(
        &mut self,
        target: Target,
        container: Option<String>,
        timeout: u32,
    ) -> Result<u64, String> {
        use futures_util::AsyncBufReadExt;
        if target.api_version != "v1" || target.kind != "Pod" {
            return Err(format!(
                "logs are a Pod's: the target is {} {}",
                target.api_version, target.kind
            ));
        }
        let name = name_of(&target)?;
        let (cluster, api) = self.api(Verb::Logs, &target).await?;
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(cluster.client.clone(), api.namespace().unwrap_or_default());
        let params = ::kube::api::LogParams {
            container,
            follow: true,
            ..Default::default()
        };
        let cluster_name = cluster.name.clone();
        let log = self.log.clone();
        let pod = name.clone();
        let follow = async move {
            let stream = pods
                .log_stream(&pod, &params)
                .await
                .map_err(|e| describe(&cluster_name, e))?;
            let mut lines = stream.lines();
            let mut bytes = 0u64;
            while let Some(line) = lines.next().await {
                let line = line.map_err(|e| format!("reading the log of Pod {pod}: {e}"))?;
                bytes += line.len() as u64 + 1;
                log.push(
                    Source::Stdout,
                    "info",
                    line,
                    vec![("pod".into(), pod.clone())],
                );
            }
            Ok::<u64, String>(bytes)
        };
        let wait = std::time::Duration::from_secs(timeout.clamp(1, MAX_FOLLOW_SECONDS).into());
        match tokio::time::timeout(wait, follow).await {
            Ok(copied) => copied,
            Err(_) => Err(format!(
                "the log of Pod {name} was still open after {}s",
                wait.as_secs()
            )),
        }
    }

    fn record<T>(
        &self,
        what: &str,
        target: &Target,
        started: std::time::Instant,
        result: &Result<T, String>,
    ) {
        let place = format!(
            "{}{} {}/{}",
            target
                .cluster
                .as_deref()
                .map(|c| format!("{c}: "))
                .unwrap_or_default(),
            target.kind,
            target.namespace.as_deref().unwrap_or("-"),
            target.name.as_deref().unwrap_or("*"),
        );
        let (level, message) = match result {
            // Reads that went well leave no line: a step that polls would drown its own log.
            Ok(_) if matches!(what, "get" | "list" | "watch") => return,
            Ok(_) => (
                "info",
                format!("kube {what} {place} ({} ms)", started.elapsed().as_millis()),
            ),
            Err(e) => ("warn", format!("kube {what} {place} failed: {e}")),
        };
        self.log.push(Source::Host, level, message, Vec::new());
    }
}

fn verb_name(verb: Verb) -> &'static str {
    VERBS
        .iter()
        .find(|(_, v)| *v == verb)
        .map_or("?", |(name, _)| name)
}

fn name_of(target: &Target) -> Result<String, String> {
    target
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("which {}? the call names none", target.kind))
}

/// A JSON object (or list, for JSON patches) from the guest, bounded.
fn object_of(text: &str) -> Result<Value, String> {
    if text.len() > MAX_OBJECT_BYTES {
        return Err(format!(
            "the object is {} bytes; at most {MAX_OBJECT_BYTES} are taken",
            text.len()
        ));
    }
    serde_json::from_str(text).map_err(|e| format!("the object is not JSON: {e}"))
}

/// An object as JSON for the guest, bounded.
fn bounded(object: &DynamicObject) -> Result<String, String> {
    let text = serde_json::to_string(object).map_err(|e| e.to_string())?;
    if text.len() > MAX_OBJECT_BYTES {
        return Err(format!(
            "{} is {} bytes as JSON; at most {MAX_OBJECT_BYTES} are passed to a step",
            object.metadata.name.as_deref().unwrap_or("the object"),
            text.len()
        ));
    }
    Ok(text)
}

impl wit::Host for KubeState {
    async fn get(&mut self, target: Target) -> wasmtime::Result<Result<Option<String>, String>> {
        let started = std::time::Instant::now();
        let result = KubeState::get(self, target.clone()).await;
        self.record("get", &target, started, &result);
        Ok(result)
    }

    async fn list(
        &mut self,
        target: Target,
        label_selector: Option<String>,
    ) -> wasmtime::Result<Result<Vec<String>, String>> {
        let started = std::time::Instant::now();
        let result = KubeState::list(self, target.clone(), label_selector).await;
        self.record("list", &target, started, &result);
        Ok(result)
    }

    async fn apply(
        &mut self,
        cluster: Option<String>,
        object: String,
    ) -> wasmtime::Result<Result<String, String>> {
        let started = std::time::Instant::now();
        let result = KubeState::apply(self, cluster.clone(), object).await;
        let target = match &result {
            Ok(stored) => {
                let v: Value = serde_json::from_str(stored).unwrap_or_default();
                let field = |p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
                Target {
                    cluster,
                    api_version: field("/apiVersion").unwrap_or_default(),
                    kind: field("/kind").unwrap_or_default(),
                    namespace: field("/metadata/namespace"),
                    name: field("/metadata/name"),
                }
            }
            Err(_) => Target {
                cluster,
                api_version: String::new(),
                kind: "object".into(),
                namespace: None,
                name: None,
            },
        };
        self.record("apply", &target, started, &result);
        Ok(result)
    }

    async fn patch(
        &mut self,
        target: Target,
        kind: PatchKind,
        patch: String,
    ) -> wasmtime::Result<Result<String, String>> {
        let started = std::time::Instant::now();
        let result = KubeState::patch(self, target.clone(), kind, patch).await;
        self.record("patch", &target, started, &result);
        Ok(result)
    }

    async fn delete(&mut self, target: Target) -> wasmtime::Result<Result<(), String>> {
        let started = std::time::Instant::now();
        let result = KubeState::delete(self, target.clone()).await;
        self.record("delete", &target, started, &result);
        Ok(result)
    }

    async fn watch(
        &mut self,
        target: Target,
        label_selector: Option<String>,
        resource_version: String,
        timeout_seconds: u32,
    ) -> wasmtime::Result<Result<Watched, String>> {
        let started = std::time::Instant::now();
        let result = KubeState::watch(
            self,
            target.clone(),
            label_selector,
            resource_version,
            timeout_seconds,
        )
        .await;
        self.record("watch", &target, started, &result);
        Ok(result)
    }

    async fn follow_logs(
        &mut self,
        target: Target,
        container: Option<String>,
        timeout_seconds: u32,
    ) -> wasmtime::Result<Result<u64, String>> {
        let started = std::time::Instant::now();
        let result = KubeState::follow_logs(self, target.clone(), container, timeout_seconds).await;
        self.record("logs of", &target, started, &result);
        Ok(result)
    }
}

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut KubeState,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSelf<KubeState>>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_verbs_kind_and_group() {
        let rule = Rule::parse("get,patch Application.argoproj.io").expect("a rule");
        assert!(rule.allows(Verb::Get, "argoproj.io", "Application"));
        assert!(rule.allows(Verb::Patch, "argoproj.io", "Application"));
        assert!(!rule.allows(Verb::Delete, "argoproj.io", "Application"));
        assert!(!rule.allows(Verb::Get, "", "Application"));
        let core = Rule::parse("* Pod").expect("a rule");
        assert!(core.allows(Verb::Delete, "", "Pod"));
        assert!(!core.allows(Verb::Get, "apps", "Pod"));
        for bad in ["get", "fly Pod", "get Pod/x", " Pod", "get,,list Pod"] {
            let error = Rule::parse(bad).expect_err(bad);
            assert!(error.contains("VERBS KIND[.GROUP]"), "{error}");
        }
    }
}
