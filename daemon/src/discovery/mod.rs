//! Warehouse discovery: finds the newest artifacts of each Warehouse's subscriptions and turns
//! each new combination into Freight, as Kargo does (one Freight per discovery at most: the best
//! candidate of every subscription, created only if that combination is new).
//!
//! A Warehouse is discovered when it is created or its spec changes, when someone asks
//! ([`Discovery::refresh`]: the API, `dray refresh warehouse`, later webhooks), and every
//! `spec.interval` otherwise. Warehouses never wait on each other beyond a small concurrency
//! limit; one Warehouse is never discovered twice at once. What was found is kept in the
//! Warehouse's `status.discoveredArtifacts` (`dray get warehouse W -o yaml` shows it).
//!
//! Git ([`git`]), image ([`image`]) and chart ([`chart`]) subscriptions are discovered here.

pub mod chart;
pub mod git;
pub mod image;
pub mod registry;

use crate::resource::status::WarehouseStatus;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::admission::{self, Source};
use crate::credentials::ProjectGitCredentials;
use crate::host::git::GitAccess;
use crate::resource::validate::parse_duration;
use crate::resource::{FreightCreationPolicy, Kind, Object, WarehouseSpec};
use crate::rules::expr::{self, FreightView, Scope};
use crate::store::{Change, EventType, Reader, StatusMode, Store};

/// The longest one subscription's discovery may take (a registry or DNS that does not answer
/// must not hold its Warehouse forever).
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// Most Warehouses discovered at once: each is mostly waiting on a remote, or on a registry's
/// rate limit, which must not keep Warehouses on other registries waiting for a turn.
const CONCURRENCY: usize = 32;

/// Most Git subscriptions fetched and walked at once (the costly part: blocking threads, disk).
const GIT_CONCURRENCY: usize = 4;

/// What discovery may reach.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directories whose local repositories (`file://` URLs, paths) Git subscriptions may read.
    pub local_roots: Vec<PathBuf>,
    /// The known-hosts file SSH remotes are checked against (`None`: `~/.ssh/known_hosts`).
    pub ssh_known_hosts: Option<PathBuf>,
    /// Requests per second each OCI registry gets (at least 1).
    pub registry_rate: u32,
    /// Mirror host by registry name, for image and OCI chart discovery.
    pub registry_mirrors: BTreeMap<String, String>,
    /// Where discoveries are counted, by host.
    pub metrics: crate::metrics::Metrics,
}

type Key = (String, String);
/// A refresh request: which Warehouse, and the token to report back.
type Request = (Key, Option<String>);

/// The discovery service; cheap to clone.
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Replaced by [`Discovery::reload`] (SIGHUP); a std lock held only to clone or swap it.
    settings: std::sync::RwLock<Arc<Settings>>,
    /// Bare mirrors of Git repositories, one per URL, reused between discoveries.
    mirrors: Arc<git::Mirrors>,
    /// Turns for Git subscriptions ([`GIT_CONCURRENCY`]).
    git_turns: tokio::sync::Semaphore,
    /// What discovery knows of each OCI registry: grants, rate limits, back-off, mirrors.
    registries: registry::Registries,
    refresh: mpsc::UnboundedSender<Request>,
    /// Taken by the loop when it starts (a std mutex: held only for that take).
    requests: Mutex<Option<mpsc::UnboundedReceiver<Request>>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the last discovery found for the subscription to `url`, from the Warehouse's
/// `status.discoveredArtifacts[list]`.
fn last_result<T: serde::de::DeserializeOwned>(
    previous: &Value,
    list: &str,
    url: &str,
) -> Option<T> {
    previous
        .get(list)
        .and_then(Value::as_array)
        .and_then(|items| items.iter().find(|r| r["repoURL"] == url))
        .and_then(|r| serde_json::from_value(r.clone()).ok())
}

/// `call`, unless it takes longer than [`DISCOVERY_TIMEOUT`].
async fn within<T>(call: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(DISCOVERY_TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer within {} s", DISCOVERY_TIMEOUT.as_secs()))
}

/// The outcome of discovering one Warehouse, for the log and the status.
struct Found {
    artifacts: Value,
    problems: Vec<String>,
    freight: Option<(String, Change)>,
}

impl Discovery {
    pub fn new(store: Store, data_dir: &std::path::Path, settings: Settings) -> Discovery {
        let (refresh, requests) = mpsc::unbounded_channel();
        let registries =
            registry::Registries::new(settings.registry_rate, settings.registry_mirrors.clone());
        Discovery {
            inner: Arc::new(Inner {
                store,
                settings: std::sync::RwLock::new(Arc::new(settings)),
                mirrors: Arc::new(git::Mirrors::new(data_dir.join("git-mirrors"))),
                git_turns: tokio::sync::Semaphore::new(GIT_CONCURRENCY),
                registries,
                refresh,
                requests: Mutex::new(Some(requests)),
                stop: watch::channel(false).0,
                task: Mutex::new(None),
            }),
        }
    }

    fn settings(&self) -> Arc<Settings> {
        self.inner
            .settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts new local roots and known hosts in force for the discoveries that start from now
    /// on. The registries' rate and mirrors are the ones the daemon started with.
    pub fn reload(&self, local_roots: Vec<PathBuf>, ssh_known_hosts: Option<PathBuf>) {
        let mut slot = self
            .inner
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut settings = Settings::clone(&slot);
        settings.local_roots = local_roots;
        settings.ssh_known_hosts = ssh_known_hosts;
        *slot = Arc::new(settings);
    }

    /// Starts the loop.
    pub fn spawn(&self) {
        let this = self.clone();
        let handle = tokio::spawn(async move { this.run().await });
        *self.inner.task.lock().expect("task slot") = Some(handle);
    }

    /// Asks for a discovery of `warehouse` now; `token` (if any) is written to its
    /// `status.lastHandledRefresh` when that discovery ends, so a caller can wait for it.
    pub fn refresh(&self, project: &str, warehouse: &str, token: Option<String>) {
        let _ = self
            .inner
            .refresh
            .send(((project.into(), warehouse.into()), token));
    }

    /// Stops the loop and waits for running discoveries to end.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        let handle = self.inner.task.lock().expect("task slot").take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    async fn run(self) {
        let Some(mut requests) = self.inner.requests.lock().expect("requests").take() else {
            return;
        };
        let mut stop = self.inner.stop.subscribe();
        let mut changes = self.store().subscribe();
        let mut seen = self.store().last_seq();
        let mut generations: BTreeMap<Key, u64> = BTreeMap::new();
        let mut due: BTreeMap<Key, Instant> = BTreeMap::new();
        let mut tokens: BTreeMap<Key, Vec<String>> = BTreeMap::new();
        let mut running: BTreeSet<Key> = BTreeSet::new();
        let mut again: BTreeSet<Key> = BTreeSet::new();
        let mut tasks: JoinSet<(Key, Option<Duration>)> = JoinSet::new();
        let all = self
            .store()
            .read_async(|r| r.list(Kind::Warehouse, None, None))
            .await
            .unwrap_or_default();
        for w in all {
            let key = (w.project().to_string(), w.name().to_string());
            generations.insert(key.clone(), w.metadata.generation.unwrap_or(1));
            due.insert(key, Instant::now());
        }
        loop {
            let next = due.values().min().copied();
            tokio::select! {
                _ = stop.changed() => break,
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let events = self.store().read_async(move |r| r.events_after(seen, 100_000)).await.unwrap_or_default();
                    for event in events {
                        seen = seen.max(event.seq);
                        if event.object.kind != Kind::Warehouse {
                            continue;
                        }
                        let key = (event.object.project().to_string(), event.object.name().to_string());
                        if event.kind == EventType::Deleted {
                            generations.remove(&key);
                            due.remove(&key);
                            continue;
                        }
                        let generation = event.object.metadata.generation.unwrap_or(1);
                        // Our own status writes do not change the generation; a spec change does.
                        if generations.insert(key.clone(), generation) != Some(generation) {
                            due.insert(key, Instant::now());
                        }
                    }
                }
                Some((key, token)) = requests.recv() => {
                    if let Some(token) = token {
                        tokens.entry(key.clone()).or_default().push(token);
                    }
                    due.insert(key, Instant::now());
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok((key, interval)) = done {
                        running.remove(&key);
                        let next = if again.remove(&key) { Duration::ZERO } else { interval.unwrap_or(Duration::from_secs(300)) };
                        if generations.contains_key(&key) {
                            due.insert(key, Instant::now() + next);
                        }
                    }
                }
                _ = tokio::time::sleep_until(next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))) => {}
            }
            let now = Instant::now();
            let ready: Vec<Key> = due
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in ready {
                if running.contains(&key) {
                    // Asked again while it runs: once more right after.
                    due.remove(&key);
                    again.insert(key);
                    continue;
                }
                if running.len() >= CONCURRENCY {
                    break;
                }
                due.remove(&key);
                running.insert(key.clone());
                let this = self.clone();
                let token = tokens.remove(&key).and_then(|t| t.into_iter().last());
                tasks.spawn(async move {
                    let interval = this.discover(&key.0, &key.1, token).await;
                    (key, interval)
                });
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Discovers one Warehouse and records the result; returns its interval.
    async fn discover(&self, project: &str, name: &str, token: Option<String>) -> Option<Duration> {
        let (p, n) = (project.to_string(), name.to_string());
        let warehouse = self
            .store()
            .read_async(move |r| r.get(Kind::Warehouse, &p, &n))
            .await
            .ok()
            .flatten()?;
        let spec: WarehouseSpec = serde_json::from_value(warehouse.spec().clone()).ok()?;
        let interval = parse_duration(&spec.interval).ok();
        let started = std::time::Instant::now();
        let found = self.find(&warehouse, &spec).await;
        match &found.freight {
            Some((freight, Change::Created)) => {
                tracing::info!(
                    project,
                    warehouse = name,
                    freight,
                    "discovered new artifacts; Freight created"
                )
            }
            _ => {
                tracing::debug!(project, warehouse = name, took = ?started.elapsed(), "discovery found nothing new")
            }
        }
        for problem in &found.problems {
            tracing::warn!(project, warehouse = name, "{problem}");
        }
        self.record(project, name, found, token).await;
        interval
    }

    async fn find(&self, warehouse: &Object, spec: &WarehouseSpec) -> Found {
        let project = warehouse.project().to_string();
        // What the last discovery found (`Null` the first time, or when it cannot be read:
        // then everything counts as new).
        let previous = match warehouse.status_of::<WarehouseStatus>() {
            Ok(status) => status.discovered_artifacts.unwrap_or(Value::Null),
            Err(e) => {
                tracing::error!(error = %e, "discovering as if for the first time");
                Value::Null
            }
        };
        let mut git_results = Vec::new();
        let mut image_results = Vec::new();
        let mut chart_results = Vec::new();
        let mut problems = Vec::new();
        let mut best = Vec::new();
        for (i, sub) in spec.subscriptions.iter().enumerate() {
            if let Some(git_sub) = &sub.git {
                let before: Option<git::GitResult> =
                    last_result(&previous, "git", &git_sub.repo_url);
                let access = GitAccess {
                    credentials: Some(Arc::new(ProjectGitCredentials {
                        store: self.store().clone(),
                        project: project.clone(),
                    })),
                    local_roots: self.settings().local_roots.clone(),
                    known_hosts: self.settings().ssh_known_hosts.clone(),
                    ..GitAccess::default()
                };
                let (mirrors, sub_clone) = (self.inner.mirrors.clone(), git_sub.clone());
                let _turn = self.inner.git_turns.acquire().await;
                let result = tokio::task::spawn_blocking(move || {
                    git::discover(&sub_clone, &access, &mirrors, before.as_ref())
                })
                .await
                .unwrap_or_else(|e| Err(format!("discovery crashed: {e}")));
                self.settings()
                    .metrics
                    .discovered("git", &git_sub.repo_url, result.is_ok());
                match result {
                    Ok(r) => {
                        match r.commits.first() {
                            Some(c) => best.push(json!({"kind": "commit", "value": {
                                "repoURL": r.repo_url, "id": c.id, "branch": c.branch, "tag": c.tag,
                                "message": c.subject, "author": c.author, "committer": c.committer}})),
                            None => problems.push(format!("subscriptions[{i}] ({}): no commit matches", git_sub.repo_url)),
                        }
                        git_results.push(serde_json::to_value(&r).unwrap_or(Value::Null));
                    }
                    Err(e) => {
                        problems.push(format!("subscriptions[{i}] ({}): {e}", git_sub.repo_url))
                    }
                }
            } else if let Some(image_sub) = &sub.image {
                let before: Option<image::ImageResult> =
                    last_result(&previous, "images", &image_sub.repo_url);
                let auth = match self
                    .basic_auth(
                        crate::credentials::CredType::Image,
                        &project,
                        &image_sub.repo_url,
                    )
                    .await
                {
                    Some((user, password)) => {
                        oci_client::secrets::RegistryAuth::Basic(user, password)
                    }
                    None => oci_client::secrets::RegistryAuth::Anonymous,
                };
                let discovered = within(image::discover(
                    image_sub,
                    auth,
                    before.as_ref(),
                    &self.inner.registries,
                ))
                .await
                .unwrap_or_else(|e| Err(image::ImageError::Failed(e)));
                self.settings().metrics.discovered(
                    "image",
                    &image_sub.repo_url,
                    discovered.is_ok(),
                );
                match discovered {
                    Ok(r) => {
                        match r.references.first() {
                            Some(best_image) => {
                                let mut value = json!({"repoURL": r.repo_url, "tag": best_image.tag, "digest": best_image.digest});
                                if !best_image.annotations.is_empty() {
                                    value["annotations"] =
                                        Value::Object(best_image.annotations.clone());
                                }
                                best.push(json!({"kind": "image", "value": value}));
                            }
                            None => problems.push(format!(
                                "subscriptions[{i}] ({}): no tag matches",
                                image_sub.repo_url
                            )),
                        }
                        image_results.push(serde_json::to_value(&r).unwrap_or(Value::Null));
                    }
                    Err(e) => {
                        problems.push(format!("subscriptions[{i}] ({}): {e}", image_sub.repo_url))
                    }
                }
            } else if let Some(generic) = &sub.subscription
                && spec.freight_creation_policy == FreightCreationPolicy::Automatic
            {
                problems.push(format!(
                    "subscriptions[{i}] ({}): Dray has no subscriber for subscriptionType {:?}; make this Warehouse's Freight by hand (dray apply a Freight with artifacts) and set freightCreationPolicy: Manual",
                    sub.name.as_deref().unwrap_or_default(),
                    generic.subscription_type
                ));
            } else if let Some(chart_sub) = &sub.chart {
                let before: Option<chart::ChartResult> =
                    last_result(&previous, "charts", &chart_sub.repo_url);
                let auth = self
                    .basic_auth(
                        crate::credentials::CredType::Helm,
                        &project,
                        &chart_sub.repo_url,
                    )
                    .await;
                let discovered = within(chart::discover(
                    chart_sub,
                    auth,
                    before.as_ref(),
                    &self.inner.registries,
                ))
                .await
                .unwrap_or_else(Err);
                self.settings().metrics.discovered(
                    "chart",
                    &chart_sub.repo_url,
                    discovered.is_ok(),
                );
                match discovered {
                    Ok(r) => {
                        match chart::best(&r) {
                            Some(value) => best.push(json!({"kind": "chart", "value": value})),
                            None => problems.push(format!(
                                "subscriptions[{i}] ({}): no version matches",
                                chart_sub.repo_url
                            )),
                        }
                        chart_results.push(serde_json::to_value(&r).unwrap_or(Value::Null));
                    }
                    Err(e) => {
                        problems.push(format!("subscriptions[{i}] ({}): {e}", chart_sub.repo_url))
                    }
                }
            }
        }
        let artifacts = json!({
            "discoveredAt": crate::resource::now(),
            "git": git_results,
            "images": image_results,
            "charts": chart_results,
        });
        let mut freight = None;
        if problems.is_empty()
            && spec.freight_creation_policy == FreightCreationPolicy::Automatic
            && !best.is_empty()
        {
            let doc = freight_doc(&project, warehouse.name(), &best);
            match admitted_by(spec, &doc) {
                Ok(true) => match self.create_freight(doc).await {
                    Ok(made) => freight = Some(made),
                    Err(e) => problems.push(format!("cannot create Freight: {e}")),
                },
                Ok(false) => tracing::info!(
                    project,
                    warehouse = warehouse.name(),
                    "the newest artifacts do not meet freightCreationCriteria; no Freight"
                ),
                Err(e) => problems.push(e),
            }
        }
        Found {
            artifacts,
            problems,
            freight,
        }
    }

    /// Creates the Freight of `best` (one candidate per subscription) through admission, which
    /// names it by fingerprint and gives it an alias; an existing one is left as it is.
    /// User and password from the `cred_type` Secret matched by URL (the project's, then the
    /// shared ones), if any.
    async fn basic_auth(
        &self,
        cred_type: crate::credentials::CredType,
        project: &str,
        url: &str,
    ) -> chart::Basic {
        let (project, url) = (project.to_string(), url.to_string());
        let secret = self
            .store()
            .read_async(move |r| Ok(crate::credentials::find(r, cred_type, &project, &url)))
            .await
            .ok()
            .flatten();
        secret.and_then(|s| Some((s.value("username")?, s.value("password")?)))
    }

    async fn create_freight(&self, doc: Value) -> Result<(String, Change), String> {
        let name = format!(
            "discovery of Warehouse {}/{}",
            doc["metadata"]["namespace"].as_str().unwrap_or(""),
            doc["origin"]["name"].as_str().unwrap_or("")
        );
        let store = self.store().clone();
        let sources = vec![Source {
            name,
            content: doc.to_string(),
        }];
        let outcomes = tokio::task::spawn_blocking(move || {
            admission::apply(&store, &sources, None, false, None)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| match e {
            admission::ApplyError::Invalid(problems) => problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        })?;
        let outcome = outcomes
            .into_iter()
            .next()
            .ok_or("admission returned nothing")?;
        Ok((outcome.name, outcome.action))
    }

    async fn record(&self, project: &str, name: &str, found: Found, token: Option<String>) {
        let (p, n) = (project.to_string(), name.to_string());
        let written = self
            .store()
            .write_async(move |tx| {
                let Some(mut warehouse) = tx.get(Kind::Warehouse, &p, &n)? else {
                    return Ok::<(), crate::store::StoreError>(());
                };
                let mut status: WarehouseStatus = warehouse.status_of()?;
                status.discovered_artifacts = Some(found.artifacts);
                status.message = (!found.problems.is_empty()).then(|| found.problems.join("; "));
                if let Some((freight, _)) = &found.freight {
                    status.last_freight_id = Some(freight.clone());
                }
                if token.is_some() {
                    status.last_handled_refresh = token;
                }
                status.observed_generation = Some(warehouse.metadata.generation.unwrap_or(1));
                warehouse.set_status(&status);
                tx.put(warehouse, None, StatusMode::Replace)?;
                Ok(())
            })
            .await;
        if let Err(e) = written {
            tracing::error!(project, warehouse = name, error = %e, "cannot record a discovery");
        }
    }
}

/// The Freight of `best` (one candidate per subscription), as a manifest.
fn freight_doc(project: &str, warehouse: &str, best: &[Value]) -> Value {
    // Absent fields, not nulls: the Freight schema has no nullable strings.
    let compact = |v: &Value| -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        }
    };
    let pick = |kind: &str| -> Vec<Value> {
        best.iter()
            .filter(|b| b["kind"] == kind)
            .map(|b| compact(&b["value"]))
            .collect()
    };
    json!({
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Freight",
        "metadata": {"name": "", "namespace": project},
        "origin": {"kind": "Warehouse", "name": warehouse},
        "commits": pick("commit"),
        "images": pick("image"),
        "charts": pick("chart"),
    })
}

/// Whether `spec.freightCreationCriteria.expression` (if any) accepts the Freight `doc`; the
/// expression reads it with `commitFrom()`, `imageFrom()` and `chartFrom()`, as in Kargo.
fn admitted_by(spec: &WarehouseSpec, doc: &Value) -> Result<bool, String> {
    let Some(criteria) = &spec.freight_creation_criteria else {
        return Ok(true);
    };
    let freight = [FreightView::of(doc)];
    let scope = Scope {
        freight: &freight,
        ..Scope::default()
    };
    match expr::eval_expression(expr::condition_code(&criteria.expression), &scope) {
        Ok(Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!(
            "freightCreationCriteria.expression {:?} must be true or false, not {other}",
            criteria.expression
        )),
        Err(e) => Err(format!(
            "freightCreationCriteria.expression {:?}: {e}",
            criteria.expression
        )),
    }
}
