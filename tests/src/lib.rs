//! Harness for Dray's end-to-end tests: a real daemon on a free port with its own data dir, and
//! the real `dray` binary as the CLI.
//!
//! The daemon runs in-process through [`dray::run`] (so a test can stop and restart it on the
//! same data dir); the CLI runs as a child process, exactly as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tokio::sync::oneshot;

pub mod browser;
pub mod failover;
pub mod git;
pub mod helm;
pub mod helm_tool;
pub mod http;
pub mod kube;
pub mod manifests;
pub mod oidc;
pub mod prometheus;
pub mod registry;
pub mod standins;

/// Points the data dir's compile cache at one every test daemon shares, as `dray demo` does:
/// the first start of a run compiles the built-in plugins (Winch, then Cranelift in the
/// background), the others read Cranelift's code. Entries not written for a day go (each
/// rebuild of the plugins makes new ones). A data dir that has a cache keeps it.
pub fn share_compile_cache(data_dir: &Path) -> std::io::Result<()> {
    static PRUNED: std::sync::Once = std::sync::Once::new();
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    let shared = home.join(".cache/dray/test-plugins");
    std::fs::create_dir_all(&shared)?;
    // Private, as a daemon's own is (inside its 0700 data dir).
    std::fs::set_permissions(
        &shared,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
    )?;
    PRUNED.call_once(|| {
        let day = std::time::Duration::from_secs(24 * 3600);
        for entry in std::fs::read_dir(&shared).into_iter().flatten().flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > day));
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    });
    let link = data_dir.join("cache").join("plugins");
    if link.symlink_metadata().is_err() {
        std::fs::create_dir_all(data_dir.join("cache"))?;
        std::os::unix::fs::symlink(&shared, &link)?;
    }
    Ok(())
}

/// A daemon serving on `127.0.0.1:<free port>`; stopped when dropped.
pub struct Daemon {
    pub url: String,
    pub data_dir: PathBuf,
    pub token: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The operator settings it was started with (its `data_dir` and `listen` are set at each
    /// start), used again by [`Daemon::restart`].
    pub config: dray::Config,
    /// Keeps the data dir alive for the daemon's (and its restarts') lifetime.
    _dir: Option<tempfile::TempDir>,
    /// With `DRAY_TEST_STORE=kubernetes`: the cluster its store is (kept across restarts).
    cluster: Option<std::sync::Arc<kube::KubeCluster>>,
}

/// The store the tests' daemons use: `DRAY_TEST_STORE=kubernetes` runs each on a cluster of its
/// own (the real `kube-apiserver` + `etcd`, Dray's CRDs installed) instead of a file.
fn store_under_test() -> dray::service::StoreKind {
    match std::env::var("DRAY_TEST_STORE").as_deref() {
        Ok("kubernetes") => dray::service::StoreKind::Kubernetes,
        _ => dray::service::StoreKind::Embedded,
    }
}

impl Daemon {
    /// Starts a daemon on a fresh data dir.
    pub async fn start() -> Daemon {
        let dir = tempfile::tempdir().expect("a temporary data dir");
        let mut daemon = Daemon::start_in(dir.path())
            .await
            .expect("the daemon starts");
        daemon._dir = Some(dir);
        daemon
    }

    /// Starts a daemon on a fresh data dir with the operator's step policy `steps`.
    pub async fn start_with(steps: dray::service::StepPolicy) -> anyhow::Result<Daemon> {
        Daemon::start_with_gc(steps, dray::service::GcConfig::default()).await
    }

    /// Starts a daemon on a fresh data dir with a step policy and garbage-collection settings.
    pub async fn start_with_gc(
        steps: dray::service::StepPolicy,
        gc: dray::service::GcConfig,
    ) -> anyhow::Result<Daemon> {
        Daemon::start_with_config(dray::Config {
            steps,
            gc,
            ..dray::Config::default()
        })
        .await
    }

    /// Starts a daemon on a fresh data dir with the operator's `config` (its `data_dir` and
    /// `listen` are replaced).
    pub async fn start_with_config(config: dray::Config) -> anyhow::Result<Daemon> {
        let dir = tempfile::tempdir()?;
        let mut daemon = Daemon::start_configured(dir.path(), config).await?;
        daemon._dir = Some(dir);
        Ok(daemon)
    }

    /// [`Daemon::start_with_config`] with a compile cache of its own, empty, instead of the one
    /// test daemons share: for benchmarks of a first start or a first use.
    pub async fn start_with_own_cache(config: dray::Config) -> anyhow::Result<Daemon> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("cache").join("plugins"))?;
        let mut daemon = Daemon::start_configured(dir.path(), config).await?;
        daemon._dir = Some(dir);
        Ok(daemon)
    }

    /// Starts a daemon on `data_dir`; fails as `dray serve` would (e.g. the data dir is in use).
    pub async fn start_in(data_dir: &Path) -> anyhow::Result<Daemon> {
        Daemon::start_configured(data_dir, dray::Config::default()).await
    }

    async fn start_configured(data_dir: &Path, config: dray::Config) -> anyhow::Result<Daemon> {
        let cluster = match store_under_test() {
            dray::service::StoreKind::Kubernetes => {
                let cluster = kube::KubeCluster::start().await;
                cluster.install_dray_crds().await;
                Some(std::sync::Arc::new(cluster))
            }
            dray::service::StoreKind::Embedded => None,
        };
        Daemon::start_on(data_dir, config, cluster).await
    }

    async fn start_on(
        data_dir: &Path,
        mut config: dray::Config,
        cluster: Option<std::sync::Arc<kube::KubeCluster>>,
    ) -> anyhow::Result<Daemon> {
        if let Some(cluster) = &cluster {
            config.store = dray::service::StoreKind::Kubernetes;
            config.kubernetes = Some(dray::service::KubernetesStore {
                kubeconfig: Some(cluster.kubeconfig(kube::ADMIN_TOKEN)),
                ..Default::default()
            });
        }
        share_compile_cache(data_dir)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let config = dray::Config {
            data_dir: data_dir.to_path_buf(),
            listen: listener.local_addr()?,
            ..config
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(dray::run(config.clone(), listener, async move {
            let _ = stopped.await;
        }));
        // Ready once /readyz answers, or failed if the task ended. The wait is long because a
        // first start compiles the built-in plugins, and on 2 cores tests run side by side.
        let client = dray::tls::client();
        for _ in 0..1200 {
            if task.is_finished() {
                return Err(task
                    .await?
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("the daemon stopped at once")));
            }
            if client
                .get(format!("{url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                let token = std::fs::read_to_string(dray::service::token_path(data_dir))?
                    .trim()
                    .to_string();
                return Ok(Daemon {
                    url,
                    data_dir: data_dir.to_path_buf(),
                    token,
                    stop: Some(stop),
                    task: Some(task),
                    config,
                    _dir: None,
                    cluster,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        anyhow::bail!("the daemon did not become ready within 30 s")
    }

    /// Stops the daemon (gracefully) and starts a new one on the same data dir.
    pub async fn restart(&mut self) {
        self.shutdown().await;
        let dir = self._dir.take();
        let mut next = Daemon::start_on(&self.data_dir, self.config.clone(), self.cluster.clone())
            .await
            .expect("the daemon restarts");
        next._dir = dir;
        *self = next;
    }

    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the daemon task")
                .expect("the daemon stops cleanly");
        }
    }

    /// The `dray` CLI pointed at this daemon (token found through the data dir, as for a user).
    pub fn cli(&self, args: &[&str]) -> Cli {
        let output = self.command(args).output().expect("the dray binary runs");
        Cli::from(output)
    }

    /// The command [`Daemon::cli`] runs, to run elsewhere (on another thread, say).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(dray_bin());
        command
            .args(args)
            .env("DRAY_SERVER", &self.url)
            .env("DRAY_DATA_DIR", &self.data_dir)
            .env_remove("DRAY_TOKEN")
            .env_remove("DRAY_PROJECT");
        command
    }

    /// [`Daemon::cli`] with more environment variables (credentials for `dray plugin push`).
    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Cli {
        let output = Command::new(dray_bin())
            .args(args)
            .env("DRAY_SERVER", &self.url)
            .env("DRAY_DATA_DIR", &self.data_dir)
            .env_remove("DRAY_TOKEN")
            .env_remove("DRAY_PROJECT")
            .envs(env.iter().copied())
            .output()
            .expect("the dray binary runs");
        Cli::from(output)
    }

    /// `dray refresh warehouse WAREHOUSE -p PROJECT --wait`.
    pub fn refresh(&self, project: &str, warehouse: &str) -> Cli {
        self.cli(&["refresh", "warehouse", warehouse, "-p", project, "--wait"])
    }

    /// `dray promote -p PROJECT --stage STAGE --freight FREIGHT --wait`.
    pub fn promote(&self, project: &str, stage: &str, freight: &str) -> Cli {
        self.cli(&[
            "promote",
            "-p",
            project,
            "--stage",
            stage,
            "--freight",
            freight,
            "--wait",
        ])
    }

    /// Every Freight of `project`, as `dray get freight -o json` lists them.
    pub fn freight(&self, project: &str) -> Vec<serde_json::Value> {
        let out = self.cli(&["get", "freight", "-p", project, "-o", "json"]);
        assert_eq!(out.code, 0, "{out:?}");
        let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Applies `manifests` and fails the test with the daemon's answer unless it succeeds.
    pub async fn apply_ok(&self, manifests: &str) {
        let r = self.apply(manifests).await;
        let status = r.status();
        assert!(
            status.is_success(),
            "apply failed: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// `POST /v1/apply` of a manifest stream, with the token.
    pub async fn apply(&self, manifests: &str) -> reqwest::Response {
        self.api(reqwest::Method::POST, "/v1/apply")
            .body(manifests.to_string())
            .send()
            .await
            .expect("the apply request is answered")
    }

    /// `GET` of an API path, with the token, as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self
            .api(reqwest::Method::GET, path)
            .send()
            .await
            .expect("the request is answered");
        response.json().await.expect("a JSON answer")
    }

    /// An API client request with the token.
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        dray::tls::client()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What a CLI run printed and how it exited.
#[derive(Debug)]
pub struct Cli {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Cli {
    fn from(o: Output) -> Self {
        Cli {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs a command that should exit by itself; kills it and fails the test after `limit`, so a
/// regression that hangs cannot stall the suite.
pub fn finishes(command: &mut Command, limit: std::time::Duration) -> Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the command starts");
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} did not exit within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// A blocking HTTP client with reqwest's defaults, on Dray's TLS provider (`dray::tls`).
#[allow(clippy::disallowed_methods)]
pub fn blocking_client() -> reqwest::blocking::Client {
    dray::tls::install_provider();
    reqwest::blocking::Client::new()
}

/// The `dray` binary built beside these tests (`target/<profile>/dray`), or `$DRAY_BIN`.
pub fn dray_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("DRAY_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("dray");
    assert!(
        bin.exists(),
        "{} is missing: build the CLI first with `cargo build -p dray` (tests/run.sh does), or set DRAY_BIN",
        bin.display()
    );
    bin
}

/// The repository's root, for examples.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The bytes of guest fixture `name` (a crate of `tests/fixtures`, built to WebAssembly by the
/// build script; `-` becomes `_`, as in `git_attacker`).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("DRAY_FIXTURES_DIR")).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A step context for calling a plugin directly: project `p`, Stage `test`, no Freight.
pub fn step_context() -> dray::runtime::StepContext {
    dray::runtime::StepContext {
        project: "p".into(),
        stage: "test".into(),
        promotion: "test.01.abc".into(),
        step_alias: "step-1".into(),
        freight: Vec::new(),
        vars: "{}".into(),
        outputs: "{}".into(),
    }
}

/// `kubectl kustomize DIR`, the reference renderer of the kustomize tests: its output, or its
/// error. Fails with how to get kubectl if it is missing, never skips.
pub fn try_kubectl_kustomize(dir: &Path) -> Result<String, String> {
    // `helmCharts` are inflated with the helm oracle (v3.6.2) that tests/run.sh installs.
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg("--enable-helm")
        .arg("--helm-command")
        .arg(crate::helm_tool::helm())
        .arg(dir)
        .env_remove("DRAY_CORPUS_SURELY_UNSET")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubectl is missing ({e}); the kustomize-build tests compare with `kubectl kustomize`: install kubectl \
                 1.27 or later (it embeds kustomize v5) and run the tests again"
            )
        });
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// [`try_kubectl_kustomize`], which must succeed.
pub fn kubectl_kustomize(dir: &Path) -> String {
    try_kubectl_kustomize(dir)
        .unwrap_or_else(|e| panic!("kubectl kustomize {} failed: {e}", dir.display()))
}

/// Prints a benchmark's table row (`| what | runs | median | p99 |`); the median in ms.
pub fn report(what: &str, mut times: Vec<std::time::Duration>) -> f64 {
    times.sort();
    let at =
        |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "| {what} | {} | {:.1} ms | {:.1} ms |",
        times.len(),
        at(0.5),
        at(0.99)
    );
    at(0.5)
}

/// Starts `command` (a test server that prints `listening on HOST:PORT` first) and returns it
/// with the address it listens on; `what` names it in failures.
pub fn spawn_listening(command: &mut Command, what: &str) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what} says nothing: {e}"));
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from {what}: {line:?}"))
        .to_string();
    (child, address)
}
