//! The daemon as a Unix service: configuration, the API token, systemd readiness, shutdown.
//!
//! [`run`] takes an already-bound listener and a shutdown future (as mini-redis does), so tests
//! start a daemon on port 0 and stop it when they like.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::store::Store;

mod listeners;
mod reload;
mod restore;
pub use listeners::{Activated, Listeners, TlsFiles};
pub use restore::{Restored, restore};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
const TOKEN_FILE: &str = "token";
const DATABASE_FILE: &str = "dray.redb";

/// Daemon settings. Precedence: command-line flags, then `DRAY_*` environment variables, then the
/// TOML config file, then these defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Where the database, the token and (later) work directories live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Manifest files or directories applied (in one transaction) every time the daemon starts.
    #[serde(default)]
    pub apply: Vec<PathBuf>,
    /// What promotion steps may reach.
    #[serde(default)]
    pub steps: StepPolicy,
    /// How much history garbage collection keeps (`[gc]`).
    #[serde(default)]
    pub gc: GcConfig,
    /// How Warehouses reach registries (`[discovery]`).
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    /// The known-hosts file (OpenSSH's format) that Git remotes reached over SSH must be listed
    /// in, for discovery and git steps. Unset: the daemon user's `~/.ssh/known_hosts`.
    #[serde(default)]
    pub ssh_known_hosts: Option<PathBuf>,
    /// Kubernetes clusters steps may reach through the `kube` capability (`[clusters.NAME]`).
    #[serde(default)]
    pub clusters: std::collections::BTreeMap<String, crate::clusters::ClusterConfig>,
    /// Self-hosted Git services, for the pull request steps (`[git-hosts."HOST[:PORT]"]` with
    /// `provider` and, optionally, `api-url`).
    #[serde(default)]
    pub git_hosts: std::collections::BTreeMap<String, crate::host::forge::HostConfig>,
    /// How the daemon writes its log to standard error (`log-format`, `DRAY_LOG_FORMAT`,
    /// `--log-format`).
    #[serde(default)]
    pub log_format: LogFormat,
    /// Serve the API over HTTPS with this certificate and key (`[tls]`), reloaded on SIGHUP.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Also serve the API on this Unix socket, for local use (a token is still needed).
    #[serde(default)]
    pub unix_socket: Option<PathBuf>,
    /// People's sign-in with OpenID Connect (`[oidc]`, with `[[oidc.roles]]`).
    #[serde(default)]
    pub oidc: Option<crate::auth::oidc::OidcConfig>,
    /// Where the resources are kept: `embedded` (a redb file in the data dir, the default) or
    /// `kubernetes` (custom resources in the cluster of `[kubernetes]`).
    #[serde(default)]
    pub store: StoreKind,
    /// The cluster of `store = "kubernetes"`: a kubeconfig and context, or in-cluster; unset,
    /// the one kubectl would use (`KUBECONFIG`, `~/.kube/config`, or the pod's account).
    #[serde(default)]
    pub kubernetes: Option<KubernetesStore>,
    /// The file this config was read from, read again on SIGHUP (none: nothing to reload).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// Where the daemon keeps its resources.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// A redb file in the data dir: one machine, nothing else to run.
    #[default]
    Embedded,
    /// A Kubernetes cluster's custom resources (Kargo's kinds), for more than one replica.
    Kubernetes,
}

/// `[kubernetes]`: the cluster of `store = "kubernetes"`, and how its replicas elect the one
/// that runs discovery, promotions and verifications.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KubernetesStore {
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub in_cluster: bool,
    /// Where the Lease is [default: kargo-system-resources].
    #[serde(default)]
    pub lease_namespace: Option<String>,
    /// The leader election's timings, in seconds [default: 10, 7, 2: a crashed leader's work
    /// resumes elsewhere within 15 s].
    #[serde(default)]
    pub lease_duration_seconds: Option<f64>,
    #[serde(default)]
    pub renew_deadline_seconds: Option<f64>,
    #[serde(default)]
    pub retry_period_seconds: Option<f64>,
}

impl KubernetesStore {
    /// The Lease this replica contends for, as `identity`.
    pub fn lease(
        &self,
        identity: &str,
    ) -> anyhow::Result<crate::store::kubernetes::lease::LeaseConfig> {
        let seconds = |what: &str, v: Option<f64>, default: f64| -> anyhow::Result<Duration> {
            let v = v.unwrap_or(default);
            if !(v.is_finite() && v > 0.0 && v <= 3600.0) {
                anyhow::bail!(
                    "[kubernetes] {what} = {v}: a number of seconds above 0, at most 3600"
                );
            }
            Ok(Duration::from_secs_f64(v))
        };
        let lease = crate::store::kubernetes::lease::LeaseConfig {
            lease_duration: seconds("lease-duration-seconds", self.lease_duration_seconds, 10.0)?,
            renew_deadline: seconds("renew-deadline-seconds", self.renew_deadline_seconds, 7.0)?,
            retry_period: seconds("retry-period-seconds", self.retry_period_seconds, 2.0)?,
            ..crate::store::kubernetes::lease::LeaseConfig::new(
                self.lease_namespace
                    .as_deref()
                    .unwrap_or(crate::resource::SYSTEM_NAMESPACE),
                "dray-leader",
                identity,
            )
        };
        lease
            .check()
            .map_err(|e| anyhow::anyhow!("[kubernetes]: {e}"))?;
        Ok(lease)
    }
}

/// The daemon's log lines: `text` for a person, `json` (one JSON object per line, every line,
/// the first start's token message included) for journald's and log shippers' parsers.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[discovery]`: how discovery treats OCI registries.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct DiscoveryConfig {
    /// Requests per second Dray sends to any one registry, across all Warehouses.
    pub registry_requests_per_second: u32,
    /// `registry = "mirror-host[:port]"`: read that registry's images and charts from a mirror
    /// (`"docker.io" = "mirror.internal:5000"`). Freight still names the original images.
    pub registry_mirrors: std::collections::BTreeMap<String, String>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            registry_requests_per_second: crate::discovery::registry::DEFAULT_RATE,
            registry_mirrors: Default::default(),
        }
    }
}

/// `[gc]`: Kargo's retention settings and defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct GcConfig {
    /// Freight kept per Warehouse beyond what is in use.
    pub max_retained_freight: usize,
    /// Freight younger than this is never deleted.
    pub min_freight_deletion_age: String,
    /// Ended Promotions (and verifications) kept per Stage.
    pub max_retained_promotions: usize,
    /// Promotions younger than this are never deleted.
    pub min_promotion_deletion_age: String,
    /// How often garbage collection runs.
    pub interval: String,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            max_retained_freight: 20,
            min_freight_deletion_age: "336h".into(),
            max_retained_promotions: 20,
            min_promotion_deletion_age: "336h".into(),
            interval: "10m".into(),
        }
    }
}

impl GcConfig {
    fn retention(&self) -> anyhow::Result<crate::engine::decisions::gc::Retention> {
        let duration = |key: &str, text: &str| {
            crate::resource::validate::parse_duration(text)
                .map_err(|e| anyhow::anyhow!("config gc.{key}: {e}"))
        };
        let interval = duration("interval", &self.interval)?;
        if interval.is_zero() {
            anyhow::bail!("config gc.interval: must be more than 0 (e.g. 10m)");
        }
        Ok(crate::engine::decisions::gc::Retention {
            max_retained_freight: self.max_retained_freight,
            min_freight_deletion_age: duration(
                "min-freight-deletion-age",
                &self.min_freight_deletion_age,
            )?,
            max_retained_promotions: self.max_retained_promotions,
            min_promotion_deletion_age: duration(
                "min-promotion-deletion-age",
                &self.min_promotion_deletion_age,
            )?,
            interval,
        })
    }
}

/// The operator's grants to promotion steps (`[steps]` in the config file).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StepPolicy {
    /// Hosts the `http` step (and plugins granted `http`) may reach: `*`, `*.example.com`,
    /// `host[:port]`, `https://host[:port]`. Empty: none.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Directories whose local Git repositories (`file://` URLs, plain paths) git steps may
    /// clone. Empty: none (remote repositories only).
    #[serde(default)]
    pub git_local_roots: Vec<PathBuf>,
    /// How `git-push` takes in a branch that moved on before it pushes again (Kargo's push
    /// integration policy): `RebaseOrMerge` (default), `AlwaysRebase`, `RebaseOrFail`,
    /// `AlwaysMerge`.
    #[serde(default)]
    pub git_push_integration: crate::host::git::PushIntegration,
    /// Custom step plugins, loaded at start (`[[steps.plugins]]`); their step kinds are used in
    /// Stages like built-in ones.
    #[serde(default)]
    pub plugins: Vec<PluginEntry>,
    /// Where plugins named by reference (`uses: oci://HOST/REPO:TAG`) may come from, and what
    /// each may be granted (`[[steps.oci]]`). Empty: none.
    #[serde(default)]
    pub oci: Vec<crate::oci::plugins::OciRule>,
    /// The most a promotion's work directory (with the clones' repositories) may hold, in MiB;
    /// a step that passes it is stopped. Default 2048.
    #[serde(default)]
    pub work_dir_max_mib: Option<u64>,
    /// The most files and directories it may hold. Default 200,000.
    #[serde(default)]
    pub work_dir_max_files: Option<u64>,
}

impl StepPolicy {
    /// The work-directory quota these settings ask for.
    pub fn work_dir_quota(&self) -> crate::runtime::disk::Quota {
        let default = crate::runtime::disk::Quota::default();
        crate::runtime::disk::Quota {
            bytes: self
                .work_dir_max_mib
                .map_or(default.bytes, |m| m.saturating_mul(1 << 20)),
            files: self.work_dir_max_files.unwrap_or(default.files),
        }
    }
}

/// One custom plugin and what the operator grants it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginEntry {
    /// A `.wasm` component (a path, or a `file://` URL).
    pub file: PathBuf,
    /// Capabilities it may import: `http`, `git`, `credentials`, `metadata`, `oci`, `helm`,
    /// `kube`. None by default.
    #[serde(default)]
    pub grants: Vec<String>,
    /// With `credentials`: the generic Secrets (by name, or `*`) it may read, from the Stage's
    /// project or the shared namespace.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// With `kube`: the kinds it may reach and how (`"get,patch Application.argoproj.io"`, `"*
    /// Job.batch"`, `"get,list Pod"`), in the clusters and namespaces its project may use.
    #[serde(default)]
    pub kube: Vec<String>,
}

impl Config {
    /// What serde cannot check: refused before anything is created.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.steps.work_dir_max_mib != Some(0) && self.steps.work_dir_max_files != Some(0),
            "config steps.work-dir-max-mib and work-dir-max-files must be above 0 (a work directory that may hold nothing fails every step)"
        );
        anyhow::ensure!(
            self.discovery.registry_requests_per_second > 0,
            "config [discovery] registry-requests-per-second is 0; it must be at least 1 (the default is {})",
            crate::discovery::registry::DEFAULT_RATE
        );
        crate::host::forge::Hosts::new(&self.git_hosts)
            .map_err(|e| anyhow::anyhow!("config {e}"))?;
        if let Some(oidc) = &self.oidc {
            oidc.check().map_err(|e| anyhow::anyhow!("config {e}"))?;
        }
        if let Some(file) = &self.ssh_known_hosts
            && let Err(e) = std::fs::read_to_string(file)
        {
            anyhow::bail!(
                "config ssh-known-hosts: cannot read {} ({e}); create it with the hosts' keys (`ssh-keyscan -p PORT HOST`, checked before trusting them) or remove the setting",
                file.display()
            );
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            listen: default_listen(),
            apply: Vec::new(),
            steps: StepPolicy::default(),
            gc: GcConfig::default(),
            discovery: DiscoveryConfig::default(),
            ssh_known_hosts: None,
            clusters: Default::default(),
            git_hosts: Default::default(),
            log_format: LogFormat::Text,
            tls: None,
            unix_socket: None,
            oidc: None,
            store: StoreKind::Embedded,
            kubernetes: None,
            file: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid default address")
}

/// `$XDG_DATA_HOME/dray` (usually `~/.local/share/dray`), or `/var/lib/dray` without a home.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir().map_or_else(|| PathBuf::from("/var/lib/dray"), |d| d.join("dray"))
}

/// The config file used when none is named: `$XDG_CONFIG_HOME/dray/config.toml` if it exists.
pub fn default_config_file() -> Option<PathBuf> {
    dirs::config_dir()
        .map(|d| d.join("dray").join("config.toml"))
        .filter(|p| p.exists())
}

impl Config {
    /// Reads the file (if any), then applies `DRAY_DATA_DIR`, `DRAY_LISTEN` and
    /// `DRAY_LOG_FORMAT`.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Config> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
            }
            None => Config::default(),
        };
        config.file = file.map(Path::to_path_buf);
        if let Some(dir) = env("DRAY_DATA_DIR") {
            config.data_dir = dir.into();
        }
        if let Some(listen) = env("DRAY_LISTEN") {
            config.listen = listen.parse().with_context(|| {
                format!("DRAY_LISTEN={listen:?} is not an address like 127.0.0.1:7070")
            })?;
        }
        if let Some(format) = env("DRAY_LOG_FORMAT") {
            config.log_format = clap::ValueEnum::from_str(&format, false).map_err(|_| {
                anyhow::anyhow!("DRAY_LOG_FORMAT={format:?} is not a log format: use text or json")
            })?;
        }
        Ok(config)
    }
}

/// The store `config` names: the data dir's file, or a mirror of the Kubernetes cluster
/// (returned with the cluster's client and the watches that keep it current).
async fn open_store(config: &Config) -> anyhow::Result<(Store, Option<Cluster>)> {
    match config.store {
        StoreKind::Embedded => {
            let db_path = config.data_dir.join(DATABASE_FILE);
            let store = tokio::task::spawn_blocking(move || Store::open(&db_path)).await??;
            Ok((store, None))
        }
        StoreKind::Kubernetes => {
            use crate::store::kubernetes::{mirror, remote::Remote};
            crate::tls::install_provider();
            let client = match &config.kubernetes {
                Some(k) => crate::clusters::client(&crate::clusters::ClusterConfig {
                    kubeconfig: k.kubeconfig.clone(),
                    context: k.context.clone(),
                    in_cluster: k.in_cluster,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("config [kubernetes]: {e}"))?,
                None => kube::Client::try_default().await.map_err(|e| {
                    anyhow::anyhow!(
                        "store = \"kubernetes\": no cluster found ({e}); set KUBECONFIG or [kubernetes] kubeconfig"
                    )
                })?,
            };
            let store = Store::open_mirror(Remote::new(client.clone()))?;
            let tasks = mirror::follow(&store, &client, &mirror::MIRRORED)
                .await
                .map_err(|e| anyhow::anyhow!("store = \"kubernetes\": {e}"))?;
            tracing::info!("the store is the Kubernetes cluster's custom resources");
            Ok((
                store,
                Some(Cluster {
                    client,
                    _mirror: tasks,
                }),
            ))
        }
    }
}

/// The cluster a Kubernetes store is in, and the watches that keep its mirror (stopped when
/// it is dropped, letting the store go).
struct Cluster {
    client: kube::Client,
    _mirror: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self._mirror {
            task.abort();
        }
    }
}

/// This replica's name in the Lease: the pod's (`POD_NAME`, set from the downward API), else
/// the host's, with the process and a random part so two on one host differ.
fn replica_identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "dray".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &ulid::Ulid::new().to_string().to_lowercase()[20..]
    )
}

/// Runs discovery, promotions and verifications while this replica holds the Lease: from the
/// moment it takes it; when it loses it, stops them at once (they resume on the replica that
/// takes over, at their current step) and stops the daemon, to start again as a follower.
async fn lead(
    mut leading: tokio::sync::watch::Receiver<Option<crate::store::kubernetes::lease::Term>>,
    engine: crate::engine::Engine,
    discovery: crate::discovery::Discovery,
    stop: tokio::sync::watch::Sender<bool>,
) {
    while leading.borrow_and_update().is_none() {
        if leading.changed().await.is_err() {
            return;
        }
    }
    tracing::info!("this replica leads: it runs discovery, promotions and verifications");
    engine.spawn();
    discovery.spawn();
    while leading.borrow_and_update().is_some() {
        if leading.changed().await.is_err() {
            return;
        }
    }
    tracing::error!(
        "this replica lost the Lease: stopping its work and itself, for another replica to take over"
    );
    engine.shutdown().await;
    discovery.shutdown().await;
    let _ = stop.send(true);
}

/// The path of the API token file in a data dir.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Reads the token, or creates one (mode 0600) on first start. Returns it and whether it is new.
pub fn load_or_create_token(data_dir: &Path) -> anyhow::Result<(String, bool)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok((token.trim().to_string(), false)),
        Ok(_) => anyhow::bail!(
            "the token file {} is empty: delete it and restart to make a new one",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the token file {}", path.display()));
        }
    }
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    let token = hex::encode(bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create the token file {}", path.display()))?;
    writeln!(file, "{token}")?;
    file.sync_all()?;
    Ok((token, true))
}

/// Tells systemd (when started with `Type=notify`) how the service is doing; a no-op otherwise.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(state)
    {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Pets systemd's watchdog (`WatchdogSec=`, seen as `WATCHDOG_USEC`) at half its interval
/// while the daemon is alive: its async threads run, and a store read on the blocking pool comes
/// back in time. A daemon hung on either stops petting, and systemd restarts it. A store that
/// answers with an error (a full disk) is alive: `/readyz` reports that, and a restart would
/// not help. Nothing to do without a watchdog.
async fn watchdog(store: Store, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = interval / 2;
    tracing::info!(?interval, "systemd watchdog enabled");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let store = store.clone();
        let read = tokio::task::spawn_blocking(move || store.read(|_| Ok(())).is_ok());
        match tokio::time::timeout(every, read).await {
            Ok(Ok(_)) => notify(&[sd_notify::NotifyState::Watchdog]),
            _ => tracing::error!("watchdog not petted: a store read did not come back in time"),
        }
    }
}

/// Opens the data dir, then serves the API on `listener` (and the config's Unix socket) until
/// `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listeners = Listeners {
        tcp: listener,
        unix: None,
    };
    run_on(config, listeners, shutdown).await
}

/// [`run`] on listeners made elsewhere (systemd's, say); the config's `unix-socket` is bound
/// unless a Unix listener is given.
pub async fn run_on(
    config: Config,
    mut listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.check()?;
    // The listeners' settings first: a bad certificate or a busy socket stops the start at once.
    let tls = match &config.tls {
        Some(files) => Some(listeners::load_tls(files).await?),
        None => None,
    };

    private_data_dir(&config.data_dir)?;
    // After the umask is set, so the socket is made private (and made so again below).
    if listeners.unix.is_none()
        && let Some(path) = &config.unix_socket
    {
        listeners.unix = Some(listeners::bind_unix(path)?);
    }
    let (token, new) = load_or_create_token(&config.data_dir)?;
    if new {
        // Printed once, on first start; afterwards it is only in the file.
        let file = token_path(&config.data_dir);
        match config.log_format {
            LogFormat::Text => eprintln!(
                "dray: created API token {token}\ndray: it is stored in {} (mode 0600); the CLI on this machine reads it from there",
                file.display()
            ),
            LogFormat::Json => tracing::warn!(
                token = %token,
                file = %file.display(),
                "created API token; it is stored in the file (mode 0600), where the CLI on this machine reads it"
            ),
        }
    }
    let (store, cluster) = open_store(&config).await?;
    // Invalid manifests stop the start at once, before the plugins load (a first start
    // compiles them, which takes a while); their steps are checked after.
    let manifests = check_at_start(&store, &config.apply).await?;
    let (runtime, plugins) =
        load_plugins(&config.data_dir, &config.steps.plugins, config.log_format).await?;
    let metrics = crate::metrics::Metrics::new();
    let registries = std::sync::Arc::new(crate::discovery::registry::Registries::new(
        config.discovery.registry_requests_per_second,
        config.discovery.registry_mirrors.clone(),
    ));
    let settings = engine_settings(&config, &runtime, &store, &metrics, registries).await?;
    let engine =
        crate::engine::Engine::new(store.clone(), config.data_dir.clone(), plugins, settings);
    // Before the engine starts, so it finds them at its first pass; after the plugins are
    // loaded, so their steps are checked against the kinds this daemon runs.
    apply_at_start(&store, &engine, manifests).await?;
    // On Kubernetes, the replica that holds the Lease does the work (see `lead`).
    let election = match &cluster {
        None => None,
        Some(cluster) => {
            let lease = config
                .kubernetes
                .clone()
                .unwrap_or_default()
                .lease(&replica_identity())?;
            crate::store::kubernetes::remote::ensure_namespace(&cluster.client, &lease.namespace)
                .await
                .map_err(|e| anyhow::anyhow!("the Lease's namespace {}: {e}", lease.namespace))?;
            let elector =
                crate::store::kubernetes::lease::Elector::new(cluster.client.clone(), lease)
                    .map_err(|e| anyhow::anyhow!("[kubernetes]: {e}"))?;
            let (leading_tx, leading) = tokio::sync::watch::channel(None);
            let (stop_electing, electing) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(elector.run(leading_tx, electing));
            Some((leading, stop_electing, task))
        }
    };
    if election.is_none() {
        engine.spawn();
    }
    let discovery = crate::discovery::Discovery::new(
        store.clone(),
        &config.data_dir,
        crate::discovery::Settings {
            local_roots: config.steps.git_local_roots.clone(),
            ssh_known_hosts: config.ssh_known_hosts.clone(),
            registry_rate: config.discovery.registry_requests_per_second,
            registry_mirrors: config.discovery.registry_mirrors.clone(),
            metrics: metrics.clone(),
        },
    );
    if election.is_none() {
        discovery.spawn();
    }
    let state = AppState {
        store: store.clone(),
        token: token.into(),
        engine: engine.clone(),
        discovery: discovery.clone(),
        deliveries: Default::default(),
        oidc: config
            .oidc
            .clone()
            .map(|o| std::sync::Arc::new(crate::auth::oidc::Oidc::new(o))),
    };
    let address = listeners.tcp.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%address, %scheme, unix_socket = ?config.unix_socket, data_dir = %config.data_dir.display(), "dray is serving");
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("serving on {address}")),
    ]);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let election = election.map(|(leading, stop_electing, task)| {
        tokio::spawn(lead(
            leading,
            engine.clone(),
            discovery.clone(),
            stop.clone(),
        ));
        (stop_electing, task)
    });
    let watchdog = tokio::spawn(watchdog(store.clone(), stopping.clone()));
    let hangups = tokio::spawn(reload::on_hangup(
        reload::Running {
            config: config.clone(),
            runtime: runtime.clone(),
            store: store.clone(),
            engine: engine.clone(),
            discovery: discovery.clone(),
            tls: tls.clone(),
        },
        stopping.clone(),
    ));
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing open requests");
        notify(&[sd_notify::NotifyState::Stopping]);
        let _ = stop.send(true);
    });
    listeners::serve(api::router(state), listeners, tls, stopping).await?;
    // A reload under way finishes first; then nothing else holds the engine or the store.
    let _ = hangups.await;
    let _ = watchdog.await;
    discovery.shutdown().await;
    drop(discovery);
    engine.shutdown().await;
    drop(engine);
    // The work has stopped: the Lease goes to another replica at once.
    if let Some((stop_electing, task)) = election {
        let _ = stop_electing.send(true);
        let _ = task.await;
    }
    drop(cluster);
    // The database closes when its last handle goes: wait for work cancelled above that is
    // still finishing on the blocking pool, so a new start on this data dir finds it free.
    if !store.wait_until_last(Duration::from_secs(30)).await {
        tracing::warn!("some store work did not finish within 30 s; stopping anyway");
    }
    drop(store);
    tracing::info!("stopped");
    Ok(())
}

/// The engine's settings from `config`: what steps may reach, and who may use what. Made at
/// start and again on SIGHUP; `registries` (with their request rates) carry over a reload.
pub(crate) async fn engine_settings(
    config: &Config,
    runtime: &crate::runtime::Runtime,
    store: &Store,
    metrics: &crate::metrics::Metrics,
    registries: std::sync::Arc<crate::discovery::registry::Registries>,
) -> anyhow::Result<crate::engine::Settings> {
    let registry_plugins = crate::oci::plugins::RegistryPlugins::new(
        runtime.clone(),
        store.clone(),
        &config.steps.oci,
        config.data_dir.join("plugins"),
        crate::discovery::registry::Registries::new(
            config.discovery.registry_requests_per_second,
            config.discovery.registry_mirrors.clone(),
        ),
    )?;
    Ok(crate::engine::Settings {
        metrics: metrics.clone(),
        registry_plugins: Some(std::sync::Arc::new(registry_plugins)),
        registries: Some(registries),
        allow_hosts: crate::host::http::AllowList::parse(&config.steps.allow_hosts)
            .map_err(|e| anyhow::anyhow!("config steps.allow-hosts: {e}"))?,
        git_local_roots: config.steps.git_local_roots.clone(),
        git_push_integration: config.steps.git_push_integration,
        ssh_known_hosts: config.ssh_known_hosts.clone(),
        git_hosts: std::sync::Arc::new(
            crate::host::forge::Hosts::new(&config.git_hosts).map_err(anyhow::Error::msg)?,
        ),
        secrets: secret_grants(&config.steps.plugins),
        kube_rules: kube_grants(&config.steps.plugins)?,
        clusters: if config.clusters.is_empty() {
            None
        } else {
            Some(std::sync::Arc::new(
                crate::clusters::Clusters::connect(&config.clusters).await?,
            ))
        },
        retention: config.gc.retention()?,
        work_dir_quota: config.steps.work_dir_quota(),
    })
}

/// Creates the data dir (or tightens an existing one) so that only the daemon's user may enter
/// it: it holds Secrets (in the database), the API token, work directories and compiled code.
/// Everything the daemon creates afterwards is private too, whatever umask it was started with.
pub fn private_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| {
        format!(
            "cannot make the data dir {} private (mode 0700); is it owned by another user?",
            dir.display()
        )
    })
}

/// Plugin name (its file's stem, as [`load_plugins`] names it) → the kube rules it was granted,
/// with the built-in plugins' own.
fn kube_grants(
    entries: &[PluginEntry],
) -> anyhow::Result<std::collections::BTreeMap<String, std::sync::Arc<[crate::host::kube::Rule]>>> {
    let mut grants = crate::host::kube::builtin_rules();
    for entry in entries {
        if entry.kube.is_empty() {
            continue;
        }
        let rules = entry
            .kube
            .iter()
            .map(|r| crate::host::kube::Rule::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                anyhow::anyhow!("config [[steps.plugins]] {}: {e}", entry.file.display())
            })?;
        grants.insert(plugin_name(&plugin_path(&entry.file)), rules.into());
    }
    Ok(grants)
}

/// Plugin name (its file's stem, as [`load_plugins`] names it) → the secrets it may read.
fn secret_grants(entries: &[PluginEntry]) -> std::collections::BTreeMap<String, Vec<String>> {
    entries
        .iter()
        .filter(|e| !e.secrets.is_empty())
        .map(|e| (plugin_name(&plugin_path(&e.file)), e.secrets.clone()))
        .collect()
}

fn plugin_path(file: &Path) -> PathBuf {
    let text = file.to_string_lossy();
    PathBuf::from(text.strip_prefix("file://").unwrap_or(&text))
}

fn plugin_name(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// Loads the built-in plugins through the compile cache in the data dir, so a broken build
/// fails at start and the log shows whether each was compiled or read from the cache.
async fn load_plugins(
    data_dir: &Path,
    custom: &[PluginEntry],
    log_format: LogFormat,
) -> anyhow::Result<(crate::runtime::Runtime, Vec<crate::runtime::Plugin>)> {
    let runtime = crate::runtime::Runtime::tiered(Some(data_dir.join("cache").join("plugins")))?;
    let started = std::time::Instant::now();
    let mut plugins = runtime.load_builtins().await?;
    for entry in custom {
        let path = plugin_path(&entry.file);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "config steps.plugins: cannot read the plugin {}",
                path.display()
            )
        })?;
        let name = plugin_name(&path);
        let grants = crate::runtime::Grants::parse(&entry.grants)
            .map_err(|e| anyhow::anyhow!("config steps.plugins ({}): {e}", path.display()))?;
        // A plugin that cannot be loaded (its `describe` fails, say) is reported and left out:
        // the rest of the daemon, and every other plugin, still start. Steps that use its
        // kinds fail with "no step kind" until it is fixed.
        let plugin = match runtime.load(&name, bytes, &grants).await {
            Ok(plugin) => plugin,
            Err(e) => {
                tracing::error!(plugin = %path.display(), error = %e, "plugin not loaded; the daemon starts without it");
                if log_format == LogFormat::Text {
                    eprintln!(
                        "dray: config steps.plugins ({}): {e}; starting without it",
                        path.display()
                    );
                }
                continue;
            }
        };
        for kind in &plugin.kinds {
            if let Some(other) = plugins.iter().find(|p| p.kind(&kind.name).is_some()) {
                anyhow::bail!(
                    "config steps.plugins ({}): step kind {:?} is already offered by {}; a kind must have one plugin",
                    path.display(),
                    kind.name,
                    other.name
                );
            }
        }
        plugins.push(plugin);
    }
    for plugin in &plugins {
        let how = match plugin.loaded {
            crate::runtime::Loaded::Compiled => "compiled",
            crate::runtime::Loaded::FromCache => "loaded from the compile cache",
            crate::runtime::Loaded::Baseline => {
                "compiled by the baseline compiler (Cranelift optimizes it in the background)"
            }
        };
        let kinds: Vec<&str> = plugin.kinds.iter().map(|k| k.name.as_str()).collect();
        let what = if crate::runtime::BUILTIN_PLUGINS
            .iter()
            .any(|(n, _)| *n == plugin.name)
        {
            "built-in plugin"
        } else {
            "plugin"
        };
        tracing::info!(plugin = %plugin.name, digest = %plugin.digest, kinds = %kinds.join(","), "{what} {how}");
    }
    tracing::info!(ms = started.elapsed().as_millis() as u64, "plugins ready");
    // Loading read each plugin's code into memory and freed it.
    crate::alloc::give_back();
    Ok((runtime, plugins))
}

/// Reads the `--apply` manifests and checks them against the store (all but their step kinds,
/// which need the plugins).
async fn check_at_start(
    store: &Store,
    paths: &[PathBuf],
) -> anyhow::Result<Vec<crate::admission::Source>> {
    use crate::admission::{self, Source};
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let sources = Source::read_all(paths).map_err(anyhow::Error::msg)?;
    let (store, checked) = (store.clone(), sources.clone());
    tokio::task::spawn_blocking(move || admission::apply(&store, &checked, None, true, None))
        .await?
        .map_err(invalid_at_start)?;
    Ok(sources)
}

/// Applies the `--apply` manifests in one transaction; any problem stops the start.
async fn apply_at_start(
    store: &Store,
    engine: &crate::engine::Engine,
    sources: Vec<crate::admission::Source>,
) -> anyhow::Result<()> {
    use crate::admission;
    if sources.is_empty() {
        return Ok(());
    }
    let (store, engine) = (store.clone(), engine.clone());
    let outcomes = tokio::task::spawn_blocking(move || {
        let kinds: &dyn admission::StepKinds = &engine;
        admission::apply(&store, &sources, None, false, Some(kinds))
    })
    .await?
    .map_err(invalid_at_start)?;
    for o in outcomes {
        tracing::info!(kind = %o.kind, project = %o.project, name = %o.name, action = ?o.action, "applied at start");
    }
    Ok(())
}

fn invalid_at_start(error: crate::admission::ApplyError) -> anyhow::Error {
    match error {
        crate::admission::ApplyError::Invalid(problems) => {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::anyhow!(
                "the manifests given with --apply are invalid; nothing was applied:\n{}",
                lines.join("\n")
            )
        }
        e => e.into(),
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a SIGTERM that arrives right after READY=1 (before the server polls
/// its shutdown future) must stop the daemon cleanly, not kill it.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (term, int) => {
                let error = term
                    .err()
                    .or(int.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                tracing::warn!(%error, "cannot listen for SIGTERM or SIGINT; only Ctrl-C stops the daemon");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_the_file_and_the_file_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndata-dir = \"/srv/dray\"\n",
        )
        .expect("write");
        let config = Config::load(Some(&file), |_| None).expect("load");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.data_dir, PathBuf::from("/srv/dray"));
        let config = Config::load(Some(&file), |k| {
            (k == "DRAY_LISTEN").then(|| "127.0.0.1:9100".into())
        })
        .expect("load");
        assert_eq!(config.listen.port(), 9100);
        std::fs::write(&file, "listen = \"nowhere\"\n").expect("write");
        assert!(
            Config::load(Some(&file), |_| None)
                .unwrap_err()
                .to_string()
                .contains("config.toml")
        );
        std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").expect("write");
        assert!(
            Config::load(Some(&file), |_| None)
                .unwrap_err()
                .to_string()
                .contains("lisen")
        );
    }

    #[test]
    fn the_discovery_section_sets_the_rate_limit_and_registry_mirrors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "[discovery]\nregistry-requests-per-second = 5\n\n[discovery.registry-mirrors]\n\"docker.io\" = \"mirror.internal:5000\"\n",
        )
        .expect("write");
        let config = Config::load(Some(&file), |_| None).expect("load");
        assert_eq!(config.discovery.registry_requests_per_second, 5);
        assert_eq!(
            config
                .discovery
                .registry_mirrors
                .get("docker.io")
                .map(String::as_str),
            Some("mirror.internal:5000")
        );
        assert_eq!(
            Config::default().discovery.registry_requests_per_second,
            crate::discovery::registry::DEFAULT_RATE
        );
        assert!(config.check().is_ok());
        std::fs::write(&file, "[discovery]\nregistry-requests-per-second = 0\n").expect("write");
        let zero = Config::load(Some(&file), |_| None).expect("load");
        let refused = zero.check().unwrap_err().to_string();
        assert!(refused.contains("at least 1"), "{refused}");
    }

    #[test]
    fn the_token_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, new) = load_or_create_token(dir.path()).expect("create");
        assert!(new && first.len() == 64);
        let (second, new) = load_or_create_token(dir.path()).expect("read");
        assert!(!new);
        assert_eq!(first, second);
        let mode = std::fs::metadata(token_path(dir.path()))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
