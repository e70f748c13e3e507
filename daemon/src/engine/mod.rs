//! The engine: Promotions queued per Stage and run step by step.
//!
//! - [`promotion`] creates a Promotion from a Stage's template and a Freight;
//! - [`runner`] runs one Promotion's steps (and resumes it after a restart);
//! - [`expr`] evaluates `${{ }}` expressions in step config;
//! - [`logs`] stores every step's log lines.
//!
//! Scheduling is event-driven: the engine follows the store's event log, and whenever a
//! Promotion of a Stage changes it looks at that Stage's queue. At most one Promotion runs per
//! Stage, the oldest first (names sort by creation time); different Stages never wait on each
//! other. At start, Promotions left `Running` by a previous process are resumed first.

pub mod expr;
pub mod logs;
pub mod promotion;
mod runner;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::host::http::AllowList;
use crate::resource::{Kind, LabelSelector, SHARED_NAMESPACE};
use crate::runtime::{Limits, Plugin};
use crate::store::{Reader, StatusMode, Store};

/// How often the engine rescans for Pending Promotions, in case an event was missed.
const RESCAN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// What the operator decides for steps run by the daemon.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Hosts the `http`-granted steps may reach.
    pub allow_hosts: AllowList,
    /// Directories whose local Git repositories steps may clone.
    pub git_local_roots: Vec<PathBuf>,
    /// Plugin name → the generic secrets it may read (plugins granted `credentials`).
    pub secrets: BTreeMap<String, Vec<String>>,
}

/// (project, stage).
type StageKey = (String, String);

/// The engine handle: cheap to clone, shared by the API and the scheduler.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    data_dir: PathBuf,
    settings: Settings,
    /// Step kind → the plugin that offers it.
    plugins: BTreeMap<String, Arc<Plugin>>,
    /// Promotions running now, by (project, stage): the name and the abort switch. A std mutex:
    /// it is held for map operations only, never across an await.
    running: Mutex<HashMap<StageKey, (String, watch::Sender<bool>)>>,
    /// A Stage whose Promotion just ended, to look at its queue again.
    kick: mpsc::UnboundedSender<StageKey>,
    /// The scheduler's end of `kick`, taken by [`Engine::spawn`].
    kicked: Mutex<Option<mpsc::UnboundedReceiver<StageKey>>>,
    /// The scheduler and every running Promotion, so shutdown can stop them all; `None` once
    /// stopped (nothing new starts then).
    tasks: Mutex<Option<JoinSet<()>>>,
}

fn phase(o: &crate::resource::Object) -> &str {
    o.status()["phase"].as_str().unwrap_or("Pending")
}

impl Engine {
    pub fn new(
        store: Store,
        data_dir: PathBuf,
        plugins: Vec<Plugin>,
        settings: Settings,
    ) -> Engine {
        let mut by_kind = BTreeMap::new();
        for plugin in plugins {
            let plugin = Arc::new(plugin);
            for kind in &plugin.kinds {
                by_kind.insert(kind.name.clone(), plugin.clone());
            }
        }
        let (kick, kicked) = mpsc::unbounded_channel();
        Engine {
            inner: Arc::new(Inner {
                kick,
                kicked: Mutex::new(Some(kicked)),
                tasks: Mutex::new(Some(JoinSet::new())),
                store,
                data_dir,
                settings,
                plugins: by_kind,
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    fn plugin_for(&self, kind: &str) -> Option<Arc<Plugin>> {
        self.inner.plugins.get(kind).cloned()
    }

    /// Every step kind the engine can run, sorted.
    pub fn step_kinds(&self) -> Vec<String> {
        self.inner.plugins.keys().cloned().collect()
    }

    /// The policy of one call of `plugin` for `project`: the operator's hosts, local Git roots
    /// and the secrets granted to that plugin.
    fn limits(&self, project: &str, plugin: &str) -> Limits {
        let settings = &self.inner.settings;
        let secrets = settings.secrets.get(plugin).cloned().unwrap_or_default();
        runner::limits(
            self,
            project,
            settings.allow_hosts.clone(),
            settings.git_local_roots.clone(),
            secrets,
        )
    }

    /// Generic secrets for `secret()` (`project/NAME`) and `sharedSecret()` (`shared/NAME`).
    /// The `status.metadata` of the project's Stages and Freight, keyed `Stage/<name>`,
    /// `Freight/<name>` and `Freight/<alias>` (for `stageMetadata()` and `freightMetadata()`).
    async fn metadata(&self, project: &str) -> BTreeMap<String, serde_json::Value> {
        let project = project.to_string();
        self.store()
            .read_async(move |r| {
                let mut out = BTreeMap::new();
                for kind in [Kind::Stage, Kind::Freight] {
                    for object in r.list(kind, Some(&project), None)? {
                        let Some(metadata) =
                            object.status().get("metadata").filter(|m| m.is_object())
                        else {
                            continue;
                        };
                        out.insert(
                            format!("{}/{}", kind.as_str(), object.metadata.name),
                            metadata.clone(),
                        );
                        if let Some(alias) =
                            object.body.get("alias").and_then(serde_json::Value::as_str)
                        {
                            out.insert(format!("Freight/{alias}"), metadata.clone());
                        }
                    }
                }
                Ok(out)
            })
            .await
            .unwrap_or_default()
    }

    async fn generic_secrets(&self, project: &str) -> BTreeMap<String, BTreeMap<String, String>> {
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
            .unwrap_or_default()
    }

    /// Marks the Stage as promoting (`status.currentPromotion`).
    async fn stage_started(&self, project: &str, stage: &str, promotion: &str) {
        let (project, stage, promotion) = (
            project.to_string(),
            stage.to_string(),
            promotion.to_string(),
        );
        let _ = self
            .store()
            .write_async(move |tx| {
                if let Some(mut o) = tx.get(Kind::Stage, &project, &stage)? {
                    let mut s = o.status().as_object().cloned().unwrap_or_default();
                    s.insert("currentPromotion".into(), json!({"name": promotion}));
                    o.body.insert("status".into(), Value::Object(s));
                    tx.put(o, None, StatusMode::Replace)?;
                }
                Ok::<(), crate::store::StoreError>(())
            })
            .await;
    }

    /// Follows the store and runs queued Promotions until the process ends.
    pub fn spawn(&self) {
        let engine = self.clone();
        self.spawn_task(async move { engine.schedule_loop().await });
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

    /// Schedules every Stage that has a Pending or Running Promotion.
    async fn rescan(&self) {
        let stages = self
            .store()
            .read_async(|r| {
                let all = r.list(Kind::Promotion, None, None)?;
                Ok(all
                    .iter()
                    .filter(|o| matches!(phase(o), "Pending" | "Running"))
                    .map(|o| {
                        (
                            o.project().to_string(),
                            o.spec()["stage"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect::<BTreeSet<_>>())
            })
            .await
            .unwrap_or_default();
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
        loop {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                Some((project, stage)) = kicked.recv() => {
                    self.schedule(&project, &stage).await;
                    continue;
                }
                _ = fallback.tick() => {
                    self.rescan().await;
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
            for event in &events {
                seen = seen.max(event.seq);
                if event.object.kind == Kind::Promotion {
                    let stage = event.object.spec()["stage"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    touched.insert((event.object.project().to_string(), stage));
                }
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
                let queue = r.list(Kind::Promotion, Some(&p), Some(&selector))?;
                // A Running one (resumed after a restart) goes first, then the oldest Pending.
                let running = queue.iter().find(|o| phase(o) == "Running");
                let pending = queue.iter().find(|o| phase(o) == "Pending");
                Ok(running.or(pending).map(|o| o.name().to_string()))
            })
            .await
            .ok()
            .flatten();
        let Some(name) = next else { return };
        let (abort, abort_rx) = watch::channel(false);
        {
            let mut running = self.inner.running.lock().expect("running map");
            if running.contains_key(&key) {
                return;
            }
            running.insert(key.clone(), (name.clone(), abort));
        }
        tracing::info!(%project, %stage, promotion = %name, "promotion starting");
        let engine = self.clone();
        let started = self.spawn_task(async move {
            runner::run(engine.clone(), key.0.clone(), name, abort_rx).await;
            engine
                .inner
                .running
                .lock()
                .expect("running map")
                .remove(&key);
            let _ = engine.inner.kick.send(key);
        });
        if !started {
            let key = (project.to_string(), stage.to_string());
            self.inner.running.lock().expect("running map").remove(&key);
        }
    }

    /// Aborts a Promotion: a running one stops at once (its step call is dropped), a pending
    /// one is marked Aborted. Returns false if it had already ended.
    pub async fn abort(&self, project: &str, name: &str) -> Result<bool, crate::store::StoreError> {
        let signalled = {
            let running = self.inner.running.lock().expect("running map");
            running
                .iter()
                .find(|((p, _), (n, _))| p == project && n == name)
                .map(|(_, (_, switch))| switch.send_replace(true))
                .is_some()
        };
        if signalled {
            return Ok(true);
        }
        let (project, name) = (project.to_string(), name.to_string());
        self.store()
            .write_async(move |tx| {
                let Some(mut o) = tx.get(Kind::Promotion, &project, &name)? else {
                    return Err(crate::store::StoreError::NotFound {
                        kind: Kind::Promotion,
                        project,
                        name,
                    });
                };
                if phase(&o) != "Pending" {
                    return Ok(false);
                }
                let mut s = o.status().as_object().cloned().unwrap_or_default();
                s.insert("phase".into(), json!("Aborted"));
                s.insert("message".into(), json!("aborted before it started"));
                s.insert(
                    "finishedAt".into(),
                    json!(
                        humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
                    ),
                );
                o.body.insert("status".into(), Value::Object(s));
                tx.put(o, None, StatusMode::Replace)?;
                Ok(true)
            })
            .await
    }
}
