//! The health monitor: keeps `status.health` of every Stage with health checks current. It
//! watches the Argo CD Applications those checks name (one Kubernetes watch per cluster and
//! namespace, started when a Stage needs it and stopped when none does), and judges a Stage
//! again whenever one of its apps changes, so a Stage's health follows Argo CD within about a
//! second instead of on a fixed poll (Kargo users see "Unknown" for minutes). A Stage is written
//! only when its health changed.
//!
//! A watch that cannot start (no such cluster, RBAC without `list` and `watch` on Applications)
//! makes the Stages that need it Unknown, with the reason as their issue; the watch tries again
//! with backoff.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use serde_json::Value;

use super::Engine;
use crate::clusters::Clusters;
use crate::resource::Kind;
use crate::resource::status::{HealthCheck, HealthState, StageHealth, StageStatus};
use crate::rules::health::{self, AppRef};
use crate::store::{Reader, StatusMode};

/// How often every Stage is judged again even with no change seen (a missed event, a clock).
const RESYNC: Duration = Duration::from_secs(30);
/// The shortest pause between two readings of the Stages.
const STAGES_EVERY: Duration = Duration::from_secs(1);
/// How long to let a burst of changes settle before judging.
const SETTLE: Duration = Duration::from_millis(100);

/// (cluster, namespace): one watch.
type Place = (String, String);

/// What the watches have seen, shared with the monitor.
#[derive(Default)]
struct Seen {
    /// (cluster, namespace, name) → the Application as last seen.
    apps: HashMap<(String, String, String), Value>,
    /// Places whose first listing is done (before it, an app not seen is not known missing).
    listed: std::collections::HashSet<Place>,
    /// Places whose watch failed last, and why.
    failed: HashMap<Place, String>,
}

struct Watches {
    seen: Arc<Mutex<Seen>>,
    changed: Arc<tokio::sync::Notify>,
    running: HashMap<Place, tokio::task::JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in self.running.values() {
            task.abort();
        }
    }
}

/// A Stage with health checks, as the monitor needs it.
struct Watched {
    project: String,
    stage: String,
    checks: Vec<HealthCheck>,
    health: Option<StageHealth>,
}

impl Engine {
    /// Runs the health monitor until the engine stops.
    pub(super) async fn health_loop(&self) {
        let clusters = self.settings().clusters.clone();
        let mut watches = Watches {
            seen: Arc::default(),
            changed: Arc::default(),
            running: HashMap::new(),
        };
        let mut writes = self.store().subscribe();
        let mut stages = Vec::new();
        let mut stale = true;
        loop {
            // The Stages are read again only after a write (at most once a second: a busy
            // store writes far more often than Stages gain or lose checks).
            if stale {
                match self.watched().await {
                    Ok(found) => stages = found,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the Stages' health checks; will try again");
                    }
                }
            }
            let needed = self
                .judge_all(&mut stages, clusters.as_deref(), &mut watches)
                .await;
            watches.running.retain(|place, task| {
                let keep = needed.contains_key(place);
                if !keep {
                    task.abort();
                }
                keep
            });
            let changed = watches.changed.clone();
            stale = tokio::select! {
                _ = changed.notified() => false,
                _ = writes.changed() => {
                    tokio::time::sleep(STAGES_EVERY).await;
                    true
                }
                _ = tokio::time::sleep(RESYNC) => true,
            };
            tokio::time::sleep(SETTLE).await;
        }
    }

    /// Every Stage that has health checks.
    async fn watched(&self) -> Result<Vec<Watched>, crate::store::StoreError> {
        self.store()
            .read_async(|r| {
                let mut found = Vec::new();
                for o in r.list(Kind::Stage, None, None)? {
                    let status: StageStatus = o.status_of()?;
                    if status.health_checks.is_empty() {
                        continue;
                    }
                    found.push(Watched {
                        project: o.project().to_string(),
                        stage: o.name().to_string(),
                        checks: status.health_checks,
                        health: status.health,
                    });
                }
                Ok(found)
            })
            .await
    }

    /// Judges every Stage from what the watches have seen, writes the ones whose health
    /// changed, and starts the watches that are missing; returns the places needed.
    async fn judge_all(
        &self,
        stages: &mut [Watched],
        clusters: Option<&Clusters>,
        watches: &mut Watches,
    ) -> BTreeMap<Place, ()> {
        let mut needed = BTreeMap::new();
        for watched in stages {
            let mut judged = Vec::new();
            for (at, desired) in health::apps(&watched.checks) {
                let place = clusters
                    .ok_or_else(|| {
                        "no Kubernetes cluster is configured (add [clusters.NAME] to the daemon config)"
                            .to_string()
                    })
                    .and_then(|c| c.for_project(&watched.project, at.cluster.as_deref()))
                    .map(|c| (c.name.clone(), at.namespace.clone()));
                let verdict = match place {
                    Err(why) => health::app(&at, Err(&why), &desired),
                    Ok(place) => {
                        needed.insert(place.clone(), ());
                        if !watches.running.contains_key(&place)
                            && let Some(clusters) = clusters
                        {
                            let task = watch(clusters, &place, &watches.seen, &watches.changed);
                            watches.running.insert(place.clone(), task);
                        }
                        judge(&watches.seen, &place, &at, &desired)
                    }
                };
                judged.push(verdict);
            }
            let health = health::stage(judged);
            if watched.health.as_ref() != Some(&health) {
                self.write_health(watched, health.clone()).await;
                watched.health = Some(health);
            }
        }
        needed
    }

    async fn write_health(&self, watched: &Watched, health: StageHealth) {
        let (project, stage, checks) = (
            watched.project.clone(),
            watched.stage.clone(),
            watched.checks.clone(),
        );
        let written = self
            .store()
            .write_retrying(move |tx| {
                let Some(mut o) = tx.get(Kind::Stage, &project, &stage)? else {
                    return Ok(());
                };
                let mut status: StageStatus = o.status_of()?;
                // A newer Promotion registered other checks: its own judgement comes next.
                if status.health_checks != checks {
                    return Ok(());
                }
                status.health = Some(health.clone());
                // Healthy: what the Stage holds and waited for that is verified now.
                if health.status == HealthState::Healthy {
                    super::decisions::stage::healthy(tx, &mut status, &o, SystemTime::now())?;
                }
                o.set_status(&status);
                tx.put(o, None, StatusMode::Replace)?;
                Ok(())
            })
            .await;
        if let Err(e) = written {
            tracing::error!(project = %watched.project, stage = %watched.stage, error = %e, "cannot record the Stage's health");
        }
    }
}

/// One app's verdict from what the watch of `place` has seen.
fn judge(
    seen: &Mutex<Seen>,
    place: &Place,
    at: &AppRef,
    desired: &[String],
) -> (crate::resource::status::HealthState, Option<String>, Value) {
    let seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(why) = seen.failed.get(place) {
        return health::app(at, Err(why), desired);
    }
    if !seen.listed.contains(place) {
        return health::app(at, Err("its namespace is still being listed"), desired);
    }
    let key = (place.0.clone(), place.1.clone(), at.name.clone());
    health::app(at, Ok(seen.apps.get(&key)), desired)
}

/// Starts the watch of the Applications of `place`.
fn watch(
    clusters: &Clusters,
    place: &Place,
    seen: &Arc<Mutex<Seen>>,
    changed: &Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<()> {
    let cluster = clusters.get(&place.0);
    let (place, seen, changed) = (place.clone(), seen.clone(), changed.clone());
    tokio::spawn(async move {
        let Some(cluster) = cluster else {
            return;
        };
        let name = cluster.name.clone();
        let note = |why: Option<String>| {
            let mut s = seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match why {
                Some(why) => {
                    s.failed.insert(place.clone(), why);
                }
                None => {
                    s.failed.remove(&place);
                }
            }
            drop(s);
            changed.notify_one();
        };
        let resource = loop {
            match cluster
                .resource("argoproj.io/v1alpha1", "Application")
                .await
            {
                Ok((resource, _)) => break resource,
                Err(why) => {
                    note(Some(why));
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(cluster.client.clone(), &place.1, &resource);
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            let key = |o: &DynamicObject| {
                (
                    place.0.clone(),
                    place.1.clone(),
                    o.metadata.name.clone().unwrap_or_default(),
                )
            };
            let value = |o: &DynamicObject| serde_json::to_value(o).unwrap_or_default();
            let mut s = seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match event {
                Ok(watcher::Event::Init) => {
                    s.apps.retain(|(c, n, _), _| (c, n) != (&place.0, &place.1));
                    continue;
                }
                Ok(watcher::Event::InitApply(o)) => {
                    s.apps.insert(key(&o), value(&o));
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    s.listed.insert(place.clone());
                    s.failed.remove(&place);
                }
                Ok(watcher::Event::Apply(o)) => {
                    s.apps.insert(key(&o), value(&o));
                    s.failed.remove(&place);
                }
                Ok(watcher::Event::Delete(o)) => {
                    s.apps.remove(&key(&o));
                }
                Err(e) => {
                    let why = match e {
                        watcher::Error::InitialListFailed(e)
                        | watcher::Error::WatchStartFailed(e)
                        | watcher::Error::WatchFailed(e) => crate::clusters::describe(&name, e),
                        watcher::Error::WatchError(status) => {
                            crate::clusters::describe(&name, kube::Error::Api(status))
                        }
                        e => format!("cluster {name:?}: {e}"),
                    };
                    drop(s);
                    note(Some(format!(
                        "the Applications of namespace {:?} cannot be watched: {why}",
                        place.1
                    )));
                    continue;
                }
            }
            drop(s);
            changed.notify_one();
        }
    })
}
