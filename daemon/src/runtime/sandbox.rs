//! The sandbox of one step call, built in this one place so one reading answers "what can a
//! plugin touch?":
//!
//! - the file system is the promotion's work directory and nothing else (it is the guest's `/`);
//! - the environment is empty, there are no arguments, and stdin is empty;
//! - stdout and stderr go into the step's bounded log;
//! - TCP, UDP and name lookups are off; HTTP goes only to the step's allowed hosts, and only
//!   for plugins granted `http`;
//! - memory is limited (a denied growth is remembered, so the failure can say so);
//! - the host interfaces are only those the plugin was granted (see [`super::Runtime::load`]);
//! - CPU time is sliced by epochs and the call has a wall-clock deadline (see [`super::Plugin::run`]);
//! - the work directory (with the host's clones beside it) has a quota: passing it stops the
//!   guest at its next epoch tick ([`super::disk`]);
//! - messages and errors it returns are cut at [`super::MAX_MESSAGE_BYTES`], outputs refused
//!   past [`Limits::output_bytes`];
//! - one call holds one pool slot, and one project at most its share ([`super::slots`]).

use std::path::Path;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::log::{Source, StepLog};
use crate::host::credentials::Secrets;
use crate::host::git::GitAccess;
use crate::host::http::{AllowList, Egress};

/// Limits of one call.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The project the call works for: one project holds at most its share of the instance
    /// pool (see [`super::slots`]). Empty: no project (the pool's limit only).
    pub project: String,
    /// Linear memory, all memories together.
    pub memory_bytes: usize,
    /// Wall-clock time for one call.
    pub timeout: std::time::Duration,
    /// Log bytes kept per call.
    pub log_bytes: usize,
    /// Largest `outputs` JSON accepted.
    pub output_bytes: usize,
    /// Where outbound HTTP may go (for plugins granted `http`); empty: nowhere.
    pub allow_hosts: AllowList,
    /// The secrets the step may read (for plugins granted `credentials`); none by default.
    pub secrets: Secrets,
    /// Git credentials and rules (for plugins granted `git`).
    pub git: GitAccess,
    /// Where `set-metadata` writes (for plugins granted `metadata`); nowhere by default.
    pub metadata: crate::host::metadata::Metadata,
    /// What the work directory may hold (see [`super::disk`]).
    pub disk: super::disk::Quota,
    /// Registries and their credentials (for plugins granted `oci`); none by default.
    pub oci: crate::host::oci::OciAccess,
    /// Clusters, the project's place in them and the plugin's rules (for plugins granted
    /// `kube`); none by default.
    pub kube: crate::host::kube::KubeAccess,
    /// The log the call writes, when the caller follows it while the call runs (it must hold
    /// `log_bytes`); none: a new one.
    pub log: Option<StepLog>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            project: String::new(),
            memory_bytes: 256 << 20,
            timeout: std::time::Duration::from_secs(300),
            log_bytes: 1 << 20,
            output_bytes: 1 << 20,
            allow_hosts: AllowList::default(),
            secrets: Secrets::default(),
            metadata: Default::default(),
            git: GitAccess::default(),
            disk: Default::default(),
            oci: Default::default(),
            kube: Default::default(),
            log: None,
        }
    }
}

/// Counts memory and refuses growth past the limit, remembering that it did.
pub struct MemoryLimiter {
    limit: usize,
    /// The size a growth asked for when it was refused.
    pub denied: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.denied = Some(desired);
            // Trap at once: a guest that ignores a failed grow would only spin.
            wasmtime::bail!(
                "memory limit of {} MiB reached (the plugin asked for {} MiB)",
                self.limit >> 20,
                desired >> 20
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// What the host keeps for one call (the `T` of `Store<T>`).
pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub log: StepLog,
    http: wasmtime_wasi_http::WasiHttpCtx,
    egress: Egress,
    /// Each host capability's own state; only the granted ones are linked, so a plugin reaches
    /// no other.
    pub credentials: crate::host::credentials::CredentialsState,
    pub metadata: crate::host::metadata::MetadataState,
    pub git: crate::host::git::GitState,
    pub oci: crate::host::oci::OciState,
    pub helm: crate::host::helm::HelmState,
    pub kube: crate::host::kube::KubeState,
    /// Set from outside the call (the work-directory quota's watch) to stop the guest at its
    /// next epoch tick.
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl wasmtime_wasi_http::WasiHttpView for StepState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A fresh store for one call in `workdir`.
pub fn store(
    engine: &wasmtime::Engine,
    workdir: &Path,
    limits: &Limits,
) -> wasmtime::Result<Store<StepState>> {
    let log = limits
        .log
        .clone()
        .unwrap_or_else(|| StepLog::new(limits.log_bytes));
    let mut wasi = WasiCtxBuilder::new();
    // File operations run on the calling thread instead of a hop to tokio's blocking pool and
    // back for each one (a chart of 40 templates makes hundreds): the work directory is local,
    // and each operation is one bounded read or write. Set before the preopen, which takes the
    // setting when it is made.
    wasi.allow_blocking_current_thread(true)
        .preopened_dir(workdir, "/", FsPerms::ReadWrite)?
        .stdout(log.pipe(Source::Stdout))
        .stderr(log.pipe(Source::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    let mut table = ResourceTable::new();
    table.set_max_capacity(10_000);
    let state = StepState {
        wasi: wasi.build(),
        table,
        limiter: MemoryLimiter {
            // The instance pool cannot hold more; past it a growth would fail as a crash.
            limit: limits.memory_bytes.min(super::MAX_MEMORY_BYTES),
            denied: None,
        },
        credentials: crate::host::credentials::CredentialsState {
            secrets: limits.secrets.clone(),
            log: log.clone(),
        },
        metadata: crate::host::metadata::MetadataState {
            sink: limits.metadata.clone(),
            calls: 0,
            log: log.clone(),
        },
        git: crate::host::git::GitState {
            access: limits.git.clone(),
            workdir: workdir.to_path_buf(),
            log: log.clone(),
        },
        helm: crate::host::helm::HelmState::new(limits.oci.clone(), workdir, log.clone()),
        kube: crate::host::kube::KubeState::new(limits.kube.clone(), log.clone()),
        oci: crate::host::oci::OciState {
            access: limits.oci.clone(),
            workdir: workdir.to_path_buf(),
            log: log.clone(),
            calls: 0,
        },
        stop: Default::default(),
        http: wasmtime_wasi_http::WasiHttpCtx::new(),
        egress: Egress {
            allow: limits.allow_hosts.clone(),
            log: log.clone(),
        },
        log,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // Yield to tokio at every epoch tick, so a busy guest never starves the daemon, and stop
    // there when asked to (the work directory passed its quota).
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        if ctx.data().stop.load(std::sync::atomic::Ordering::SeqCst) {
            wasmtime::bail!("stopped: the work directory passed its quota");
        }
        Ok(wasmtime::UpdateDeadline::Yield(1))
    });
    Ok(store)
}
