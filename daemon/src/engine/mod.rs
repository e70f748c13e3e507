//! The engine: Promotions queued per Stage and run step by step, verifications, auto-promotion
//! and garbage collection. Three layers, each using only the ones below it:
//!
//! - [`crate::rules`] (outside the engine): the decisions as pure functions;
//! - [`decisions`]: those decisions applied in one store transaction each (a Promotion
//!   created, its end recorded on the Stage, an auto-promotion pass, a verification started…);
//! - [`run`]: the executors that call plugins (a Promotion's steps, a verification's
//!   measurements), writing their progress after every call;
//! - this module: the [`Engine`] handle and the scheduler that decides what runs when;
//!   [`logs`] keeps every step's and measurement's log lines.
//!
//! Scheduling is event-driven: the engine follows the store's event log, and whenever a
//! Promotion of a Stage changes it looks at that Stage's queue. At most one Promotion runs per
//! Stage, the oldest first (names sort by creation time); different Stages never wait on each
//! other. At start, Promotions left `Running` by a previous process are resumed first.

pub mod decisions;
mod health;
pub mod logs;
pub mod run;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::credentials::{ProjectGitCredentials, ProjectSecrets};
use crate::host::credentials::{SecretSource, Secrets};
use crate::host::git::GitAccess;
use crate::host::http::AllowList;
use crate::host::metadata::{Metadata, ProjectMetadata};
use crate::resource::status::{
    FreightStatus, PromotionPhase, PromotionStatus, StageStatus, has_ended,
};
use crate::resource::{Kind, LabelSelector, Object, SHARED_NAMESPACE};
use crate::rules::expr::Lookup;
use crate::runtime::{Limits, Plugin};
use crate::store::{Reader, StatusMode, Store, StoreError};
use decisions::{analysis, auto, gc, promotion};
use run::verification;

/// How often the engine rescans for Pending Promotions, in case an event was missed.
const RESCAN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// What the operator decides for steps run by the daemon.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Hosts the `http`-granted steps may reach.
    pub allow_hosts: AllowList,
    /// Directories whose local Git repositories steps may clone.
    pub git_local_roots: Vec<PathBuf>,
    /// How git pushes take in a branch that moved on (`[steps] git-push-integration`).
    pub git_push_integration: crate::host::git::PushIntegration,
    /// The known-hosts file SSH remotes are checked against (`None`: `~/.ssh/known_hosts`).
    pub ssh_known_hosts: Option<PathBuf>,
    /// The operator's self-hosted Git services (pull request steps).
    pub git_hosts: Arc<crate::host::forge::Hosts>,
    /// Plugin name → the generic secrets it may read (plugins granted `credentials`).
    pub secrets: BTreeMap<String, Vec<String>>,
    /// Plugin name → the kinds it may reach in clusters (plugins granted `kube`).
    pub kube_rules: BTreeMap<String, Arc<[crate::host::kube::Rule]>>,
    /// The clusters of the daemon config (none: `kube` calls say how to add one).
    pub clusters: Option<Arc<crate::clusters::Clusters>>,
    /// How much history garbage collection keeps.
    pub retention: gc::Retention,
    /// What a promotion's work directory may hold.
    pub work_dir_quota: crate::runtime::disk::Quota,
    /// Plugins named by reference (`uses: oci://…`); `None`: none may be used.
    pub registry_plugins: Option<Arc<crate::oci::plugins::RegistryPlugins>>,
    /// How steps granted `oci` reach registries (none: they cannot).
    pub registries: Option<Arc<crate::discovery::registry::Registries>>,
    /// Where promotions, step calls and verifications are counted.
    pub metrics: crate::metrics::Metrics,
}

/// (project, stage).
type StageKey = (String, String);

/// What of a Stage an auto-promotion pass depends on besides what other objects' events
/// announce: its spec (by generation), its labels and its health.
#[derive(Clone, PartialEq)]
struct StageSeen {
    generation: Option<u64>,
    labels: BTreeMap<String, String>,
    health: Option<serde_json::Value>,
}

impl StageSeen {
    fn of(stage: &Object) -> StageSeen {
        StageSeen {
            generation: stage.metadata.generation,
            labels: stage.metadata.labels.clone(),
            health: stage
                .body
                .get("status")
                .and_then(|s| s.get("health"))
                .cloned(),
        }
    }
}

/// A running Promotion: its name, its abort switch, and what wakes its waiting step.
type Running = (String, watch::Sender<bool>, Arc<tokio::sync::Notify>);

/// The value of a store operation whose failure the engine outlives (the next event or the
/// fallback timer tries again), or the empty value, with the failure logged: a store fault must
/// never pass silently for "nothing there".
fn or_logged<T: Default>(result: Result<T, StoreError>, what: &str) -> T {
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot {what}; will try again");
        T::default()
    })
}

impl crate::admission::StepKinds for Engine {
    fn names(&self) -> Vec<String> {
        self.step_kinds()
    }

    fn config_problems(
        &self,
        kind: &str,
        config: &serde_json::Value,
    ) -> Option<Vec<crate::admission::ConfigProblem>> {
        self.plugin_for(kind)?.config_problems(kind, config)
    }
}

/// The key under which [`Engine::lookups`] keeps the answer to `what` for `name`.
pub(crate) fn lookup_key(what: Lookup, name: &str) -> String {
    format!("{what:?}/{name}")
}

/// The engine handle: cheap to clone, shared by the API and the scheduler.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    data_dir: PathBuf,
    /// The operator's settings; replaced whole by [`Engine::reload`] (SIGHUP). A std lock, held
    /// only to clone or swap the `Arc`: a step call keeps the settings it started with.
    settings: std::sync::RwLock<Arc<Settings>>,
    /// Where the engine counts what it does; kept across reloads.
    metrics: crate::metrics::Metrics,
    /// Step kind → the plugin that offers it.
    plugins: BTreeMap<String, Arc<Plugin>>,
    /// Verifier kind → the verifier component that offers it.
    verifiers: BTreeMap<String, Arc<Plugin>>,
    /// Verifications running now, by (project, AnalysisRun): the abort switch. A std mutex, as
    /// for `running`.
    verifying: Mutex<HashMap<(String, String), watch::Sender<bool>>>,
    /// Promotions running now, by (project, stage): the name and the abort switch. A std mutex:
    /// it is held for map operations only, never across an await.
    running: Mutex<HashMap<StageKey, Running>>,
    /// Project → when a soak ends there and auto-promotion should look again. A std mutex: map
    /// operations only.
    wakes: Mutex<HashMap<String, std::time::SystemTime>>,
    /// A Stage whose Promotion just ended, to look at its queue again.
    kick: mpsc::UnboundedSender<StageKey>,
    /// The scheduler's end of `kick`, taken by [`Engine::spawn`].
    kicked: Mutex<Option<mpsc::UnboundedReceiver<StageKey>>>,
    /// The scheduler and every running Promotion, so shutdown can stop them all; `None` once
    /// stopped (nothing new starts then).
    tasks: Mutex<Option<JoinSet<()>>>,
}

/// Whether a Promotion or an AnalysisRun has ended; one whose status cannot be read is left
/// alone (and logged), as if it had.
fn ended(o: &Object) -> bool {
    has_ended(o).unwrap_or_else(|e| {
        tracing::error!(error = %e, "skipped");
        true
    })
}

/// A Promotion's phase; `None` (logged) when its status cannot be read.
fn promotion_phase(o: &Object) -> Option<PromotionPhase> {
    match o.status_of::<PromotionStatus>() {
        Ok(s) => Some(s.phase()),
        Err(e) => {
            tracing::error!(error = %e, "skipped");
            None
        }
    }
}

impl Engine {
    pub fn new(
        store: Store,
        data_dir: PathBuf,
        plugins: Vec<Plugin>,
        settings: Settings,
    ) -> Engine {
        let mut by_kind = BTreeMap::new();
        let mut verifiers = BTreeMap::new();
        for plugin in plugins {
            let plugin = Arc::new(plugin);
            let map = match plugin.role {
                crate::runtime::Role::Step => &mut by_kind,
                crate::runtime::Role::Verifier => &mut verifiers,
            };
            for kind in &plugin.kinds {
                map.insert(kind.name.clone(), plugin.clone());
            }
        }
        let (kick, kicked) = mpsc::unbounded_channel();
        Engine {
            inner: Arc::new(Inner {
                kick,
                kicked: Mutex::new(Some(kicked)),
                wakes: Mutex::new(HashMap::new()),
                tasks: Mutex::new(Some(JoinSet::new())),
                store,
                data_dir,
                metrics: settings.metrics.clone(),
                settings: std::sync::RwLock::new(Arc::new(settings)),
                plugins: by_kind,
                verifiers,
                verifying: Mutex::new(HashMap::new()),
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        self.inner
            .settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts `settings` in force for every step call and verification that starts from now on;
    /// running calls finish with the settings they started with. The metrics stay.
    pub fn reload(&self, settings: Settings) {
        *self
            .inner
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(settings);
    }

    /// Where the engine counts what it does (shared with the API's `/metrics`).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// Promotions running in this process now.
    pub fn running_promotions(&self) -> usize {
        self.inner.running.lock().expect("running map").len()
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    pub(crate) fn plugin_for(&self, kind: &str) -> Option<Arc<Plugin>> {
        self.inner.plugins.get(kind).cloned()
    }

    pub(crate) fn verifier_for(&self, kind: &str) -> Option<Arc<Plugin>> {
        self.inner.verifiers.get(kind).cloned()
    }

    /// The plugins from registries, if the daemon has any.
    pub fn registry_plugins(&self) -> Option<Arc<crate::oci::plugins::RegistryPlugins>> {
        self.settings().registry_plugins.clone()
    }

    /// A plugin named by reference (`oci://…`) for a step or a measurement of `project`.
    pub(crate) async fn registry_plugin(
        &self,
        uses: &str,
        project: &str,
    ) -> Result<crate::oci::plugins::Resolved, String> {
        match self.registry_plugins() {
            Some(registry) => registry.get(uses, project).await,
            None => Err(format!(
                "{uses}: this daemon runs no plugins from registries (add [[steps.oci]] rules to its config)"
            )),
        }
    }

    /// Every verifier kind the engine can run, sorted.
    pub fn verifier_kinds(&self) -> Vec<String> {
        self.inner.verifiers.keys().cloned().collect()
    }

    /// Every step kind the engine can run, sorted.
    pub fn step_kinds(&self) -> Vec<String> {
        self.inner.plugins.keys().cloned().collect()
    }

    /// The policy of one call of `plugin` for `project`: the operator's hosts, local Git roots
    /// and the secrets granted to that plugin.
    /// Git with the project's credentials, and the generic secrets granted to the plugin
    /// (none: the `credentials` interface says so).
    pub(crate) fn limits(&self, project: &str, plugin: &str) -> Limits {
        let settings = self.settings();
        let allowed = settings.secrets.get(plugin).cloned().unwrap_or_default();
        let mut limits = self.limits_with(project, allowed);
        if let Some(rules) = settings.kube_rules.get(plugin) {
            limits.kube.rules = rules.clone();
        }
        limits
    }

    /// [`Engine::limits`] with the generic secrets `allowed` (a plugin from a registry has its
    /// rule's).
    pub(crate) fn limits_with(&self, project: &str, allowed: Vec<String>) -> Limits {
        let settings = self.settings();
        let store = self.store();
        let secrets = if allowed.is_empty() {
            Secrets::default()
        } else {
            let source: Arc<dyn SecretSource> = Arc::new(ProjectSecrets {
                store: store.clone(),
                project: project.into(),
                allowed,
            });
            Secrets(Some(source))
        };
        Limits {
            project: project.into(),
            allow_hosts: settings.allow_hosts.clone(),
            secrets,
            metadata: Metadata(Some(Arc::new(ProjectMetadata {
                store: store.clone(),
                project: project.into(),
            }))),
            git: GitAccess {
                credentials: Some(Arc::new(ProjectGitCredentials {
                    store: store.clone(),
                    project: project.into(),
                })),
                local_roots: settings.git_local_roots.clone(),
                known_hosts: settings.ssh_known_hosts.clone(),
                hosts: settings.git_hosts.clone(),
                push_integration: settings.git_push_integration,
                cache: Some(crate::host::git::GitCache {
                    dir: self.data_dir().join("git-cache"),
                    max_fetch_bytes: settings.work_dir_quota.bytes,
                }),
                ..GitAccess::default()
            },
            disk: settings.work_dir_quota,
            oci: crate::host::oci::OciAccess {
                registries: settings.registries.clone(),
                credentials: Some(Arc::new(crate::credentials::ProjectOciCredentials {
                    store: store.clone(),
                    project: project.into(),
                })),
            },
            kube: crate::host::kube::KubeAccess {
                clusters: settings.clusters.clone(),
                project: project.into(),
                rules: Arc::from([]),
            },
            ..Limits::default()
        }
    }

    /// What expressions of `project` may look up (`stageMetadata()`, `freightMetadata()`,
    /// `freightStatus()`, `configMap()`, `sharedConfigMap()`), keyed by [`lookup_key`]; a
    /// Freight under its alias too.
    pub(crate) async fn lookups(
        &self,
        project: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>, StoreError> {
        let project = project.to_string();
        self.store()
            .read_async(move |r| {
                let mut out = BTreeMap::new();
                for object in r.list(Kind::Stage, Some(&project), None)? {
                    if let Some(metadata) = object.status_of::<StageStatus>()?.metadata {
                        let key = lookup_key(Lookup::StageMetadata, object.name());
                        out.insert(key, serde_json::Value::Object(metadata));
                    }
                }
                for object in r.list(Kind::Freight, Some(&project), None)? {
                    let status = object.status_of::<FreightStatus>()?;
                    let alias = object.body.get("alias").and_then(serde_json::Value::as_str);
                    for name in std::iter::once(object.name()).chain(alias) {
                        if let Some(metadata) = &status.metadata {
                            let key = lookup_key(Lookup::FreightMetadata, name);
                            out.insert(key, serde_json::Value::Object(metadata.clone()));
                        }
                        // A Freight with no status yet has an empty one, as in Kargo.
                        let status = match object.status() {
                            serde_json::Value::Null => serde_json::json!({}),
                            status => status.clone(),
                        };
                        out.insert(lookup_key(Lookup::FreightStatus, name), status);
                    }
                }
                for (what, namespace) in [
                    (Lookup::ConfigMap, project.as_str()),
                    (Lookup::SharedConfigMap, SHARED_NAMESPACE),
                ] {
                    for object in r.list(Kind::ConfigMap, Some(namespace), None)? {
                        let data = object.body.get("data").cloned();
                        let data = data.unwrap_or_else(|| serde_json::json!({}));
                        out.insert(lookup_key(what, object.name()), data);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Generic secrets for `secret()` (`project/NAME`) and `sharedSecret()` (`shared/NAME`).
    pub(crate) async fn generic_secrets(
        &self,
        project: &str,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, StoreError> {
        let project = project.to_string();
        self.store()
            .read_async(move |r| {
                let mut out = BTreeMap::new();
                for (prefix, namespace) in
                    [("project", project.as_str()), ("shared", SHARED_NAMESPACE)]
                {
                    for (name, values) in crate::credentials::generic_secrets(r, namespace) {
                        out.insert(format!("{prefix}/{name}"), values);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Follows the store and runs queued Promotions until the process ends.
    pub fn spawn(&self) {
        let engine = self.clone();
        self.spawn_task(async move { engine.schedule_loop().await });
        let engine = self.clone();
        self.spawn_task(async move { engine.health_loop().await });
    }

    /// Runs `task` until it ends or the engine stops; false if the engine has stopped.
    fn spawn_task(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        let mut tasks = self.inner.tasks.lock().expect("task set");
        match tasks.as_mut() {
            Some(set) => {
                while set.try_join_next().is_some() {} // forget the finished ones
                set.spawn(task);
                true
            }
            None => false,
        }
    }

    /// Stops the scheduler and every running Promotion where it stands. A stopped step is left
    /// `Running` in the store, so the next start runs it again: the same path as a crash, and
    /// the only one that needs no cooperation from a plugin that is busy.
    pub async fn shutdown(&self) {
        let tasks = self.inner.tasks.lock().expect("task set").take();
        if let Some(mut set) = tasks {
            let running = self.inner.running.lock().expect("running map").len();
            if running > 0 {
                tracing::info!(
                    running,
                    "stopping running promotions; they resume at their current step on the next start"
                );
            }
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
    }

    /// Schedules every Stage that has a Pending or Running Promotion, resumes every unfinished
    /// verification, and runs auto-promotion over every project.
    async fn rescan(&self) {
        let found = self
            .store()
            .read_async(|r| {
                let runs: Vec<(String, String)> = r
                    .list(Kind::AnalysisRun, None, None)?
                    .iter()
                    .filter(|o| !ended(o))
                    .map(|o| (o.project().to_string(), o.name().to_string()))
                    .collect();
                let projects: Vec<String> = r
                    .list(Kind::Project, None, None)?
                    .iter()
                    .map(|o| o.name().to_string())
                    .collect();
                Ok((runs, projects))
            })
            .await;
        let (runs, projects) = or_logged(found, "list what to resume");
        for (project, run) in runs {
            self.start_verification(&project, &run);
        }
        for project in projects {
            self.auto_promote(&project).await;
        }
        self.rescan_promotions().await;
    }

    /// One garbage-collection pass over every project.
    pub async fn collect_garbage(&self) {
        let projects = self
            .store()
            .read_async(|r| {
                Ok(r.list(Kind::Project, None, None)?
                    .iter()
                    .map(|o| o.name().to_string())
                    .collect::<Vec<_>>())
            })
            .await;
        let projects = or_logged(projects, "list the projects to collect garbage in");
        for project in projects {
            let (p, data_dir, rules) = (
                project.clone(),
                self.data_dir().to_path_buf(),
                self.settings().retention.clone(),
            );
            let done = self
                .store()
                .write_async(move |tx| {
                    gc::collect(tx, &data_dir, &p, &rules, std::time::SystemTime::now())
                })
                .await;
            match done {
                Ok(c) if c != gc::Collected::default() => tracing::info!(
                    %project,
                    freight = c.freight.len(),
                    promotions = c.promotions.len(),
                    analysis_runs = c.analysis_runs.len(),
                    events = c.events,
                    "garbage collected"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(%project, error = %e, "garbage collection failed"),
            }
        }
    }

    /// One auto-promotion pass over `project`; remembers when a soak ends.
    async fn auto_promote(&self, project: &str) {
        let p = project.to_string();
        let outcome = self
            .store()
            .write_async(move |tx| auto::reconcile(tx, &p, std::time::SystemTime::now()))
            .await;
        match outcome {
            Ok((created, wake)) => {
                for promotion in created {
                    tracing::info!(%project, promotion = %promotion.name(), "auto-promotion created a promotion");
                }
                if let Some(at) = wake {
                    let mut wakes = self.inner.wakes.lock().expect("wake map");
                    let entry = wakes.entry(project.to_string()).or_insert(at);
                    *entry = (*entry).min(at);
                }
            }
            Err(e) => tracing::warn!(%project, error = %e, "auto-promotion pass failed"),
        }
    }

    /// Starts running AnalysisRun `run` unless it runs already.
    fn start_verification(&self, project: &str, run: &str) {
        let key = (project.to_string(), run.to_string());
        let (abort, abort_rx) = watch::channel(false);
        {
            let mut verifying = self.inner.verifying.lock().expect("verifying map");
            if verifying.contains_key(&key) {
                return;
            }
            verifying.insert(key.clone(), abort);
        }
        tracing::info!(%project, %run, "verification starting");
        let engine = self.clone();
        let started = self.spawn_task(async move {
            verification::run(engine.clone(), key.0.clone(), key.1.clone(), abort_rx).await;
            engine
                .inner
                .verifying
                .lock()
                .expect("verifying map")
                .remove(&key);
        });
        if !started {
            let key = (project.to_string(), run.to_string());
            self.inner
                .verifying
                .lock()
                .expect("verifying map")
                .remove(&key);
        }
    }

    /// Aborts the running verification of a Stage. Returns its AnalysisRun's name, or None if
    /// the Stage is not verifying.
    pub async fn abort_verification(
        &self,
        project: &str,
        stage: &str,
    ) -> Result<Option<String>, crate::store::StoreError> {
        let (p, s) = (project.to_string(), stage.to_string());
        let run = self
            .store()
            .read_async(move |r| {
                let Some(stage) = r.get(Kind::Stage, &p, &s)? else {
                    return Ok(None);
                };
                let status: StageStatus = stage.status_of()?;
                Ok(status.running_verification().map(str::to_string))
            })
            .await?;
        let Some(run) = run else { return Ok(None) };
        let key = (project.to_string(), run.clone());
        let signalled = self
            .inner
            .verifying
            .lock()
            .expect("verifying map")
            .get(&key)
            .map(|switch| switch.send_replace(true))
            .is_some();
        if !signalled {
            // Not running in this process (yet): end it in the store, then let the runner
            // record the end on the Stage (it does so for a run that has already ended).
            let (p, n) = key.clone();
            self.store()
                .write_async(move |tx| {
                    if let Some(mut o) = tx.get(Kind::AnalysisRun, &p, &n)? {
                        let mut status: crate::resource::status::AnalysisRunStatus =
                            o.status_of()?;
                        status.phase = Some(crate::resource::status::AnalysisPhase::Aborted);
                        status.message = Some("aborted".into());
                        o.set_status(&status);
                        tx.put(o, None, StatusMode::Replace)?;
                    }
                    Ok::<(), crate::store::StoreError>(())
                })
                .await?;
            self.start_verification(&key.0, &key.1);
        }
        Ok(Some(run))
    }

    /// Schedules every Stage that has a Pending or Running Promotion.
    async fn rescan_promotions(&self) {
        let stages = self
            .store()
            .read_async(|r| {
                let mut stages = BTreeSet::new();
                for project in r.list(Kind::Project, None, None)? {
                    let project = project.name();
                    for stage in auto::stages_with_unfinished_promotions(r, project)? {
                        stages.insert((project.to_string(), stage));
                    }
                }
                Ok(stages)
            })
            .await;
        let stages = or_logged(stages, "list the Promotions to resume");
        for (project, stage) in stages {
            self.schedule(&project, &stage).await;
        }
    }

    async fn schedule_loop(self) {
        let Some(mut kicked) = self.inner.kicked.lock().expect("kick receiver").take() else {
            return; // spawned twice: the first loop serves
        };
        let mut changes = self.store().subscribe();
        let mut seen = self.store().last_seq();
        // Everything once: what a previous process left Running or Pending.
        self.rescan().await;
        // The event log drives scheduling; a slow timer rescans too, so that a Promotion is
        // never left Pending by a missed event (DESIGN: events first, timers as a fallback).
        let mut fallback = tokio::time::interval(RESCAN_EVERY);
        fallback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        fallback.tick().await;
        // Garbage collection: once at start, then on its interval.
        let mut collect = tokio::time::interval(self.settings().retention.interval);
        collect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Each Warehouse's labels as last seen: Stages select origins by them, so a Warehouse
        // that comes, goes or is labelled anew asks for a pass over its project; discovery
        // writing its status does not.
        let mut warehouse_labels: HashMap<(String, String), BTreeMap<String, String>> =
            HashMap::new();
        // Each Stage's generation (its spec), labels (promotion policies select by them) and
        // health (auto-rollback acts on it) as last seen: a change to one of them asks for a
        // pass over its project. The rest of a Stage's status is written as its Promotions
        // start and end, whose own events ask for the passes that need them; a pass for each
        // of those writes (two a Promotion) held the store's writer for a scan of the
        // project's Stages while the Promotions waited to record their steps.
        let mut stages_seen: HashMap<(String, String), StageSeen> = HashMap::new();
        loop {
            // The next soak to end, for auto-promotion.
            let wake = {
                let wakes = self.inner.wakes.lock().expect("wake map");
                wakes
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(p, at)| (p.clone(), *at))
            };
            let until_wake = wake.as_ref().map_or(RESCAN_EVERY * 4, |(_, at)| {
                at.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
            });
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                Some((project, stage)) = kicked.recv() => {
                    self.schedule(&project, &stage).await;
                    continue;
                }
                _ = fallback.tick() => {
                    self.rescan().await;
                    // What the bursts of work since the last tick freed goes back to the system.
                    tokio::task::spawn_blocking(crate::alloc::give_back);
                    continue;
                }
                _ = collect.tick() => {
                    self.collect_garbage().await;
                    tokio::task::spawn_blocking(crate::alloc::give_back);
                    continue;
                }
                _ = tokio::time::sleep(until_wake), if wake.is_some() => {
                    if let Some((project, _)) = wake {
                        self.inner.wakes.lock().expect("wake map").remove(&project);
                        self.auto_promote(&project).await;
                    }
                    continue;
                }
            }
            let events = self
                .store()
                .read_async(move |r| r.events_after(seen, 100_000))
                .await;
            let events = match events {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "the engine lost its place in the event log; rescanning");
                    seen = self.store().last_seq();
                    self.rescan().await;
                    continue;
                }
            };
            let mut touched = BTreeSet::new();
            let mut projects = BTreeSet::new();
            let mut runs = BTreeSet::new();
            for event in &events {
                seen = seen.max(event.seq);
                let object = &event.object;
                let project = object.project().to_string();
                let ended = ended(object);
                match object.kind {
                    Kind::Promotion => {
                        let stage = object.spec()["stage"].as_str().unwrap_or_default();
                        touched.insert((project.clone(), stage.to_string()));
                        if ended {
                            projects.insert(project);
                        }
                    }
                    Kind::AnalysisRun if event.kind != crate::store::EventType::Deleted => {
                        if ended {
                            // The Stage's queue waited for this verification.
                            if let Some(stage) = object.metadata.labels.get(analysis::STAGE_LABEL) {
                                touched.insert((project.clone(), stage.clone()));
                            }
                            projects.insert(project);
                        } else {
                            runs.insert((project, object.name().to_string()));
                        }
                    }
                    Kind::Warehouse => {
                        let key = (project.clone(), object.name().to_string());
                        let labels = &object.metadata.labels;
                        let relabelled = if event.kind == crate::store::EventType::Deleted {
                            warehouse_labels.remove(&key);
                            true
                        } else {
                            warehouse_labels.insert(key, labels.clone()).as_ref() != Some(labels)
                        };
                        if relabelled {
                            projects.insert(project);
                        }
                    }
                    Kind::Stage => {
                        let key = (project.clone(), object.name().to_string());
                        let changed = if event.kind == crate::store::EventType::Deleted {
                            stages_seen.remove(&key);
                            true
                        } else {
                            let seen = StageSeen::of(object);
                            stages_seen.insert(key, seen.clone()).as_ref() != Some(&seen)
                        };
                        if changed {
                            projects.insert(project);
                        }
                    }
                    Kind::Freight | Kind::ProjectConfig => {
                        projects.insert(project);
                    }
                    Kind::Project => {
                        projects.insert(object.name().to_string());
                    }
                    _ => {}
                }
            }
            tracing::debug!(events = events.len(), ?touched, ?projects, "engine: events");
            for (project, run) in runs {
                self.start_verification(&project, &run);
            }
            for project in projects {
                self.auto_promote(&project).await;
            }
            for (project, stage) in touched {
                self.schedule(&project, &stage).await;
            }
        }
    }

    /// Starts the next Promotion of a Stage unless one is running.
    async fn schedule(&self, project: &str, stage: &str) {
        let key = (project.to_string(), stage.to_string());
        if self
            .inner
            .running
            .lock()
            .expect("running map")
            .contains_key(&key)
        {
            tracing::debug!(%project, %stage, "schedule: a promotion runs already");
            return;
        }
        let (p, s) = key.clone();
        let next = self
            .store()
            .read_async(move |r| {
                let selector = LabelSelector {
                    match_labels: [(promotion::STAGE_LABEL.to_string(), s.clone())].into(),
                    ..LabelSelector::default()
                };
                // A Stage that is verifying holds its queue until the verification ends.
                if let Some(stage) = r.get(Kind::Stage, &p, &s)?
                    && stage
                        .status_of::<StageStatus>()?
                        .running_verification()
                        .is_some()
                {
                    return Ok(None);
                }
                // Promotions are named after their Stage (`STAGE.ULID.FREIGHT`), so the Stage's
                // queue is one range of the store; the label tells `s` from a Stage `s.x`.
                let queue =
                    r.list_prefixed(Kind::Promotion, &p, &format!("{s}."), Some(&selector))?;
                // A Running one (resumed after a restart) goes first, then the oldest Pending
                // (the newest under `Supersede`, the older ones discarded).
                let running = queue
                    .iter()
                    .find(|o| promotion_phase(o) == Some(PromotionPhase::Running));
                let pending: Vec<&Object> = queue
                    .iter()
                    .filter(|o| promotion_phase(o) == Some(PromotionPhase::Pending))
                    .collect();
                let supersede = pending.len() > 1
                    && running.is_none()
                    && match r.get(Kind::Stage, &p, &s)? {
                        Some(stage) => auto::supersedes(r, &p, &stage)?,
                        None => false,
                    };
                let next = if supersede {
                    pending.last().copied()
                } else {
                    running.or(pending.first().copied())
                };
                let discard: Vec<String> = if supersede {
                    pending[..pending.len() - 1]
                        .iter()
                        .map(|o| o.name().to_string())
                        .collect()
                } else {
                    Vec::new()
                };
                Ok(next.map(|o| (o.name().to_string(), discard)))
            })
            .await;
        let next = match next {
            Ok(next) => next,
            Err(e) => {
                // The next event, a kick or the fallback rescan schedules the Stage again.
                tracing::error!(%project, %stage, error = %e, "cannot read the Stage's queue");
                return;
            }
        };
        let next = match next {
            Some((name, discard)) if !discard.is_empty() => {
                self.discard(project, &discard, &name).await;
                Some(name)
            }
            other => other.map(|(name, _)| name),
        };
        let Some(name) = next else {
            tracing::debug!(%project, %stage, "schedule: nothing to start (or verifying)");
            return;
        };
        let (abort, abort_rx) = watch::channel(false);
        let wake = Arc::new(tokio::sync::Notify::new());
        {
            let mut running = self.inner.running.lock().expect("running map");
            if running.contains_key(&key) {
                return;
            }
            running.insert(key.clone(), (name.clone(), abort, wake.clone()));
        }
        tracing::info!(%project, %stage, promotion = %name, "promotion starting");
        let engine = self.clone();
        let started = self.spawn_task(async move {
            run::promotion::run(engine.clone(), key.0.clone(), name, abort_rx, wake).await;
            let idle = {
                let mut running = engine.inner.running.lock().expect("running map");
                running.remove(&key);
                running.is_empty()
            };
            if idle {
                // What a burst of Promotions freed goes back to the system.
                tokio::task::spawn_blocking(crate::alloc::give_back_when_idle);
            }
            let _ = engine.inner.kick.send(key);
        });
        if !started {
            let key = (project.to_string(), stage.to_string());
            self.inner.running.lock().expect("running map").remove(&key);
        }
    }

    /// Marks waiting Promotions `Discarded` in favour of the newer `by` (queue policy
    /// `Supersede`), each with a `PromotionDiscarded` event.
    async fn discard(&self, project: &str, names: &[String], by: &str) {
        let (project, names, by) = (project.to_string(), names.to_vec(), by.to_string());
        let done = self
            .store()
            .write_async(move |tx| {
                for name in &names {
                    promotion::end_pending(
                        tx,
                        &project,
                        name,
                        PromotionPhase::Discarded,
                        &format!("superseded by the newer Promotion {by}"),
                    )?;
                }
                Ok::<(), crate::store::StoreError>(())
            })
            .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "cannot discard superseded promotions");
        }
    }

    /// Asks the running Promotions of `project` (of every project for "", a ClusterConfig's
    /// receiver) whose current step waits on a pull request
    /// (`git-wait-for-pr`, `git-merge-pr`) to look again now, as a pull request webhook says
    /// something changed. Returns their names.
    pub async fn wake_pull_request_waits(&self, project: &str) -> Vec<String> {
        let running: Vec<(String, Arc<tokio::sync::Notify>)> = {
            let running = self.inner.running.lock().expect("running map");
            running
                .iter()
                .filter(|((p, _), _)| project.is_empty() || p == project)
                .map(|(_, (name, _, wake))| (name.clone(), wake.clone()))
                .collect()
        };
        let mut woken = Vec::new();
        for (name, wake) in running {
            let (store, p, n) = (self.store().clone(), project.to_string(), name.clone());
            let waiting = store
                .read_async(move |r| r.get(Kind::Promotion, &p, &n))
                .await
                .ok()
                .flatten()
                .is_some_and(|promotion| waits_on_a_pull_request(&promotion));
            if waiting {
                // A permit is kept if the step is not sleeping yet: its next wait ends at once.
                wake.notify_one();
                woken.push(name);
            }
        }
        woken
    }

    /// Aborts a Promotion: a running one stops at once (its step call is dropped), a pending
    /// one is marked Aborted. Returns false if it had already ended.
    pub async fn abort(&self, project: &str, name: &str) -> Result<bool, crate::store::StoreError> {
        let signalled = {
            let running = self.inner.running.lock().expect("running map");
            running
                .iter()
                .find(|((p, _), (n, _, _))| p == project && n == name)
                .map(|(_, (_, switch, _))| switch.send_replace(true))
                .is_some()
        };
        if signalled {
            return Ok(true);
        }
        let (project, name) = (project.to_string(), name.to_string());
        self.store()
            .write_async(move |tx| {
                if tx.get(Kind::Promotion, &project, &name)?.is_none() {
                    return Err(crate::store::StoreError::NotFound {
                        kind: Kind::Promotion,
                        project,
                        name,
                    });
                }
                promotion::end_pending(
                    tx,
                    &project,
                    &name,
                    PromotionPhase::Aborted,
                    "before it started",
                )
            })
            .await
    }
}

/// Whether a Promotion's current step is one that polls a pull request.
fn waits_on_a_pull_request(promotion: &crate::resource::Object) -> bool {
    let Ok(spec) =
        serde_json::from_value::<crate::resource::PromotionSpec>(promotion.spec().clone())
    else {
        return false;
    };
    let current = promotion
        .status_of::<crate::resource::status::PromotionStatus>()
        .map(|s| s.current_step)
        .unwrap_or(0);
    spec.steps
        .get(current)
        .and_then(|step| step.uses.as_deref())
        .is_some_and(|uses| matches!(uses, "git-wait-for-pr" | "git-merge-pr"))
}
