//! The step runtime: WebAssembly components (WIT world `dray:plugin/step`) run in a sandbox.
//!
//! One [`Runtime`] per process holds the wasmtime engine (epoch interruption, driven by a ticker
//! thread) and the compile cache. [`Runtime::load`] turns component bytes into a [`Plugin`]:
//! compiled once per digest, its imports checked against what the operator granted (an ungranted
//! capability fails here, before any promotion), instantiation prepared, and its step kinds read
//! from `describe`. A daemon's runtime is [tiered](Compilers::Tiered): a component not in the
//! compile cache is first compiled by Winch, Wasmtime's baseline compiler, and optimized by
//! Cranelift in the background, so no start and no first use of a plugin waits for Cranelift.
//! [`Plugin::run`] calls one step in a fresh sandbox ([`sandbox`]) and always returns a
//! [`StepReport`]: whatever the guest does, it ends as a result or a failure with a
//! message, never as a crash of the daemon.

pub mod cache;
pub mod disk;
pub mod log;
pub mod sandbox;
pub mod slots;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use wasmtime::component::Linker;
use wasmtime::{Config, Engine};

pub use cache::Loaded;
pub use sandbox::Limits;
use sandbox::StepState;

/// Host bindings of `wit/plugin.wit`; the generated types are re-exported below.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "full-step",
        path: "../wit",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// Host bindings of the `verifier` world, sharing the step world's types and `log`.
pub(crate) mod verifier_bindings {
    wasmtime::component::bindgen!({
        world: "verifier",
        path: "../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "dray:plugin/types": super::bindings::dray::plugin::types,
            "dray:plugin/log": super::bindings::dray::plugin::log,
        },
    });
}

pub use bindings::dray::plugin::types::{
    Capability as DeclaredCapability, Chart, Commit, Freight, Image, MeasurementPhase, Status,
    StepContext, StepError,
};

/// The built-in plugins, compiled from `plugins/*` by the build script: (name, bytes).
mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
}
pub use builtin::BUILTIN_PLUGINS;

/// How often the epoch advances; a running guest yields to tokio at least this often.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a component of the step world (or not WebAssembly at all).
    #[error(
        "{plugin}: not a Dray step component: {reason} (build plugins for wasm32-wasip2 with dray-sdk; see examples/hello-step)"
    )]
    Invalid { plugin: String, reason: String },
    /// The component imports a capability the operator did not grant.
    #[error(
        "{plugin}: needs the {capability} capability (it imports {import}), which is not granted to it; {how}"
    )]
    NotGranted {
        plugin: String,
        capability: String,
        import: String,
        how: String,
    },
    /// The component imports something Dray does not offer at all.
    #[error(
        "{plugin}: imports {import}, which Dray does not provide (a step may use WASI preview 2 and dray:plugin@0.1.0)"
    )]
    UnknownImport { plugin: String, import: String },
    /// `describe` failed or returned something unusable.
    #[error(
        "{plugin}: describe() failed: {reason} (describe must return each step kind once, with a JSON Schema; check it with `dray plugin inspect`)"
    )]
    Describe { plugin: String, reason: String },
}

/// Which compilers turn a component into native code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compilers {
    /// Cranelift only: a load compiles (or reads the compile cache) before it returns. For
    /// tools that run a plugin once and for tests that need one kind of code.
    Optimizing,
    /// A component missing from the compile cache is compiled by Winch, Wasmtime's baseline
    /// compiler (several times faster; its code runs slower) and used at once; Cranelift
    /// compiles it again on one low-priority background thread, writes the compile cache, and
    /// the calls that start after that run the optimized code. The daemon's choice: a first
    /// start, or a new plugin from a registry, waits for no optimizing compiler.
    Tiered,
    /// Winch only (Cranelift for what Winch cannot compile): the baseline code a tiered
    /// runtime starts with, kept. For tests of that code.
    Baseline,
}

/// Which code a plugin's calls run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Winch's code, until Cranelift's is ready.
    Baseline,
    /// Cranelift's code.
    Optimized,
}

/// One process-wide engine, its compile cache and its epoch ticker.
#[derive(Clone)]
pub struct Runtime {
    /// Cranelift's engine: the compile cache holds its code.
    engine: Engine,
    /// Winch's engine, for a tiered runtime.
    baseline: Option<Engine>,
    /// The background thread that optimizes what Winch compiled (tiered runtimes).
    optimizer: Option<std::sync::mpsc::Sender<Optimize>>,
    cache: Arc<cache::CompileCache>,
    /// The instance pool's slots, shared by every plugin this runtime loads.
    slots: Arc<slots::Slots>,
    /// Stops the ticker thread when the last clone is dropped.
    _ticker: Arc<Ticker>,
}

struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A host capability a plugin may be granted. The WIT's `capability` enum names the first four
/// (a step kind declares them in `describe`); `oci`, `helm` and `kube` came after that enum was
/// published and are known by their imports (`dray:plugin/oci`, …), so components built against
/// the first contract keep loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capability {
    Git,
    Credentials,
    Http,
    Metadata,
    Oci,
    Helm,
    Kube,
}

impl From<DeclaredCapability> for Capability {
    fn from(declared: DeclaredCapability) -> Self {
        match declared {
            DeclaredCapability::Git => Capability::Git,
            DeclaredCapability::Credentials => Capability::Credentials,
            DeclaredCapability::Http => Capability::Http,
            DeclaredCapability::Metadata => Capability::Metadata,
        }
    }
}

/// Every capability, in the WIT's order.
pub const CAPABILITIES: [Capability; 7] = [
    Capability::Git,
    Capability::Credentials,
    Capability::Http,
    Capability::Metadata,
    Capability::Oci,
    Capability::Helm,
    Capability::Kube,
];

/// What a plugin may use besides WASI's sandboxed basics: the WIT's capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    capabilities: Vec<Capability>,
}

impl Grants {
    pub fn of(capabilities: &[Capability]) -> Grants {
        let mut grants = Grants::default();
        for c in capabilities {
            if !grants.allows(*c) {
                grants.capabilities.push(*c);
            }
        }
        grants
    }

    /// Every capability (built-in plugins, `dray plugin inspect`).
    pub fn all() -> Grants {
        Grants::of(&CAPABILITIES)
    }

    /// Grants by name, as the daemon config writes them (`grants = ["git", "http"]`).
    pub fn parse(names: &[String]) -> Result<Grants, String> {
        let mut found = Vec::new();
        for name in names {
            let capability = capability_named(name).ok_or_else(|| {
                format!(
                    "{name:?} is not a capability; grant {}",
                    CAPABILITIES.map(capability_name).join(", ")
                )
            })?;
            found.push(capability);
        }
        Ok(Grants::of(&found))
    }

    pub fn allows(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// The capability spelled `name` in the daemon config and the WIT.
pub fn capability_named(name: &str) -> Option<Capability> {
    CAPABILITIES
        .into_iter()
        .find(|c| capability_name(*c) == name)
}

/// One step kind of a loaded plugin.
pub struct KindInfo {
    pub name: String,
    pub description: String,
    pub schema: Value,
    pub capabilities: Vec<Capability>,
    validator: jsonschema::Validator,
}

/// Which WIT world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `step`/`full-step`: exports `run`.
    Step,
    /// `verifier`: exports `verify`.
    Verifier,
}

/// A component prepared for instantiation, in its world.
enum Pre {
    Step(bindings::FullStepPre<StepState>),
    Verifier(verifier_bindings::VerifierPre<StepState>),
}

/// A plugin's native code in one engine, prepared for instantiation.
struct Code {
    engine: Engine,
    pre: Pre,
    tier: Tier,
}

/// Where a plugin's code lives: replaced once when the optimized code is ready. A call takes
/// the current code when it starts and keeps it to its end.
type CodeSlot = std::sync::RwLock<Arc<Code>>;

/// Work for the optimizer thread: compile `bytes` with Cranelift and put the code in `slot`
/// (unless the plugin is gone by then).
struct Optimize {
    name: String,
    digest: String,
    bytes: Arc<[u8]>,
    grants: Grants,
    slot: std::sync::Weak<CodeSlot>,
}

/// A loaded plugin, ready to run steps (or take measurements).
pub struct Plugin {
    pub name: String,
    /// `sha256:` digest of the component's bytes.
    pub digest: String,
    pub loaded: Loaded,
    pub kinds: Vec<KindInfo>,
    /// What the component imports (interface names), for `dray plugin inspect`.
    pub imports: Vec<String>,
    /// Whether it offers steps or verifiers.
    pub role: Role,
    code: Arc<CodeSlot>,
    /// The runtime's pool slots: every call holds one while its instance lives.
    slots: Arc<slots::Slots>,
    /// Keeps the epoch ticking while the plugin exists, even if its `Runtime` is gone: without
    /// ticks a busy guest never yields and its deadline could never fire.
    _ticker: Arc<Ticker>,
}

/// How a step call ended successfully.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub status: Status,
    pub outputs: Map<String, Value>,
    pub message: Option<String>,
    pub retry_after: Option<Duration>,
}

/// Why a step call failed; the engine decides retries from the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The config does not fit the step's schema, or the step said so.
    InvalidConfig,
    /// The step asked to be retried.
    Retryable,
    /// The step failed for good.
    Terminal,
    /// The plugin trapped (a panic, an abort, a bug).
    Crashed,
    /// The call ran past its deadline.
    TimedOut,
    /// The plugin wanted more memory than allowed.
    OutOfMemory,
    /// The plugin returned something that is not a valid result.
    BadResult,
    /// No such step kind in this plugin.
    UnknownKind,
    /// The work directory passed its quota (bytes or files).
    DiskQuota,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// A measurement a verifier took.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub phase: MeasurementPhase,
    pub value: Value,
    pub message: Option<String>,
}

/// Everything about one verifier call.
#[derive(Debug, Clone)]
pub struct MeasureReport {
    pub outcome: Result<Measured, Failure>,
    pub log: Vec<log::Line>,
    pub duration: Duration,
}

/// Everything about one step call.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub outcome: Result<Finished, Failure>,
    pub log: Vec<log::Line>,
    pub duration: Duration,
}

/// The capability an import needs: none for the basics (`log`, `types`, WASI but HTTP),
/// `Err` for an import Dray does not offer at all.
fn capability_of(import: &str) -> Option<Result<Capability, ()>> {
    let name = import.split('@').next().unwrap_or(import);
    match name {
        "dray:plugin/log" | "dray:plugin/types" => None,
        "dray:plugin/git" => Some(Ok(Capability::Git)),
        "dray:plugin/credentials" => Some(Ok(Capability::Credentials)),
        "dray:plugin/metadata" => Some(Ok(Capability::Metadata)),
        "dray:plugin/oci" => Some(Ok(Capability::Oci)),
        "dray:plugin/helm" => Some(Ok(Capability::Helm)),
        "dray:plugin/kube" => Some(Ok(Capability::Kube)),
        n if n.starts_with("wasi:http/") => Some(Ok(Capability::Http)),
        n if n.starts_with("wasi:") => None,
        _ => Some(Err(())),
    }
}

/// Adds the host side of `capability` to a plugin's linker: one line per capability, each
/// capability's module owning its `add_to_linker`.
fn link(linker: &mut Linker<StepState>, capability: Capability) -> wasmtime::Result<()> {
    match capability {
        Capability::Git => crate::host::git::add_to_linker(linker, |s| &mut s.git),
        Capability::Credentials => {
            crate::host::credentials::add_to_linker(linker, |s| &mut s.credentials)
        }
        Capability::Metadata => crate::host::metadata::add_to_linker(linker, |s| &mut s.metadata),
        Capability::Oci => crate::host::oci::add_to_linker(linker, |s| &mut s.oci),
        Capability::Helm => crate::host::helm::add_to_linker(linker, |s| &mut s.helm),
        Capability::Kube => crate::host::kube::add_to_linker(linker, |s| &mut s.kube),
        Capability::Http => wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker),
    }
}

/// Most step calls that may run at once in one process; a call beyond it waits for a slot
/// ([`slots`]).
pub const MAX_CONCURRENT_CALLS: u32 = 256;
/// The most calls one project may run at once: a quarter of the pool, so a project with
/// hundreds of slow steps leaves room for the others.
pub const CALLS_PER_PROJECT: usize = MAX_CONCURRENT_CALLS as usize / 4;
/// How much of a reused pool slot's memory is reset with `memset` instead of `madvise`: the
/// system call and its TLB flushes were most of a small step call's cost (BENCHMARKS.md).
const KEEP_RESIDENT: usize = 1 << 20;
/// The longest `message` or error text of a step or measurement that is kept; the rest is cut
/// (a guest's 50 MB message would otherwise be stored in the Promotion, its log and events).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// The largest memory the instance pool allows a step.
pub const MAX_MEMORY_BYTES: usize = 1 << 30;

/// An engine with the pooling allocator: instance slots reserved up front and reused, which
/// makes instantiation several times cheaper than allocating per call (see BENCHMARKS.md).
/// `parallel`: compile the functions of a component on all cores (else on the calling thread).
fn pooled_engine(calls: u32, parallel: bool) -> wasmtime::Result<Engine> {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(calls)
        .total_core_instances(calls * 4)
        .total_memories(calls * 2)
        .total_tables(calls * 4)
        .max_memory_size(MAX_MEMORY_BYTES)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT / 4)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .memory_init_cow(true)
        .parallel_compilation(parallel)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Winch's engine. Instances are allocated per call: it runs a plugin only until Cranelift's
/// code is ready, and a second pool would reserve its address space for good.
fn baseline_engine() -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config
        .strategy(wasmtime::Strategy::Winch)
        .epoch_interruption(true)
        .memory_init_cow(true);
    Engine::new(&config)
}

/// How to grant `capability`, for [`LoadError::NotGranted`].
fn not_granted_how(capability: Capability) -> String {
    match capability {
        Capability::Http => "grant it with the hosts it may reach (`dray plugin run --allow-host HOST`)".into(),
        Capability::Credentials => "grant it with the secrets it may read (`dray plugin run --secret NAME=FILE`)".into(),
        Capability::Metadata => "grant it `metadata` (`grants = [\"metadata\"]` for the plugin in the daemon config; `dray plugin run` grants it and prints what it would set)".into(),
        Capability::Oci => "grant it `oci` (`grants = [\"oci\"]` for the plugin in the daemon config, or `dray plugin run --allow-oci`)".into(),
        Capability::Helm => "grant it `helm` (`grants = [\"helm\"]` for the plugin in the daemon config, or `dray plugin run --allow-helm`)".into(),
        Capability::Kube => "grant it `kube` with the kinds it may reach (`grants = [\"kube\"]` and `kube = [\"get,patch KIND.GROUP\"]` for the plugin in the daemon config)".into(),
        Capability::Git => "grant it to the plugin (`dray plugin run --allow-git`, or `grants = [\"git\"]` for the plugin in the daemon config)".into(),
    }
}

/// Links WASI, `log` and the granted capabilities for `component` in `engine`, and prepares its
/// instantiation in the world it implements.
fn prepare_instances(
    engine: &Engine,
    component: &wasmtime::component::Component,
    grants: &Grants,
) -> Result<(Role, Pre), String> {
    let mut linker: Linker<StepState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| e.to_string())?;
    crate::host::log::add_to_linker(&mut linker, |s| &mut s.log).map_err(|e| e.to_string())?;
    for capability in &grants.capabilities {
        link(&mut linker, *capability).map_err(|e| e.to_string())?;
    }
    let exports_verify = component
        .component_type()
        .exports(engine)
        .any(|(n, _)| n == "verify");
    let instance_pre = linker
        .instantiate_pre(component)
        .map_err(|e| format!("{e:#}"))?;
    if exports_verify {
        let pre =
            verifier_bindings::VerifierPre::new(instance_pre).map_err(|e| format!("{e:#}"))?;
        Ok((Role::Verifier, Pre::Verifier(pre)))
    } else {
        let pre = bindings::FullStepPre::new(instance_pre).map_err(|e| format!("{e:#}"))?;
        Ok((Role::Step, Pre::Step(pre)))
    }
}

/// Starts the thread that compiles with Cranelift what Winch compiled, one plugin at a time, at
/// the lowest CPU priority: calls running meanwhile keep the cores. It ends when the last
/// clone of its runtime is dropped.
fn spawn_optimizer(
    engine: Engine,
    cache: Arc<cache::CompileCache>,
) -> std::io::Result<std::sync::mpsc::Sender<Optimize>> {
    let (send, receive) = std::sync::mpsc::channel::<Optimize>();
    std::thread::Builder::new()
        .name("dray-optimize".into())
        .spawn(move || {
            // On Linux the nice value of one thread (the call names the calling thread).
            if let Err(e) = rustix::process::setpriority_process(None, 19) {
                tracing::debug!(error = %e, "cannot lower the optimizer's priority");
            }
            for job in receive {
                if job.slot.strong_count() == 0 {
                    continue;
                }
                let started = Instant::now();
                let optimized = cache
                    .load(&engine, &job.bytes, &job.digest)
                    .map_err(|e| format!("{e:#}"))
                    .and_then(|(component, _)| {
                        prepare_instances(&engine, &component, &job.grants)
                    });
                match (optimized, job.slot.upgrade()) {
                    (Ok((_, pre)), Some(slot)) => {
                        let code = Arc::new(Code {
                            engine: engine.clone(),
                            pre,
                            tier: Tier::Optimized,
                        });
                        *slot.write().unwrap_or_else(|e| e.into_inner()) = code;
                        tracing::info!(plugin = %job.name, ms = started.elapsed().as_millis() as u64, "plugin optimized; new calls run Cranelift's code");
                    }
                    (Ok(_), None) => {}
                    (Err(e), _) => {
                        tracing::warn!(plugin = %job.name, error = %e, "cannot optimize the plugin; it keeps its baseline code")
                    }
                }
                // Cranelift frees what it allocated, tens of MiB a plugin, in pieces glibc
                // keeps unless asked.
                crate::alloc::give_back();
            }
        })?;
    Ok(send)
}

impl Runtime {
    /// An optimizing runtime whose compile cache lives in `cache_dir` (none: compile on every
    /// load).
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Runtime> {
        Runtime::with_capacity(cache_dir, MAX_CONCURRENT_CALLS, CALLS_PER_PROJECT)
    }

    /// A tiered runtime (the daemon's): see [`Compilers::Tiered`].
    pub fn tiered(cache_dir: Option<PathBuf>) -> anyhow::Result<Runtime> {
        Runtime::with(
            cache_dir,
            MAX_CONCURRENT_CALLS,
            CALLS_PER_PROJECT,
            Compilers::Tiered,
        )
    }

    /// An optimizing runtime whose pool runs `calls` calls at once, at most `per_project` of
    /// one project.
    pub fn with_capacity(
        cache_dir: Option<PathBuf>,
        calls: u32,
        per_project: usize,
    ) -> anyhow::Result<Runtime> {
        Runtime::with(cache_dir, calls, per_project, Compilers::Optimizing)
    }

    /// A runtime with every choice made: see [`Runtime::new`], [`Runtime::with_capacity`] and
    /// [`Compilers`].
    pub fn with(
        cache_dir: Option<PathBuf>,
        calls: u32,
        per_project: usize,
        compilers: Compilers,
    ) -> anyhow::Result<Runtime> {
        // A tiered runtime optimizes on one background thread; Cranelift's own threads would
        // take every core from the calls running meanwhile.
        let parallel = compilers != Compilers::Tiered;
        let engine = pooled_engine(calls, parallel).or_else(|e| {
            tracing::warn!(error = %e, "cannot reserve the instance pool; instantiating on demand (slower)");
            Engine::new(
                Config::new()
                    .epoch_interruption(true)
                    .parallel_compilation(parallel),
            )
        });
        let engine = engine.map_err(|e| anyhow::anyhow!("cannot start wasmtime: {e}"))?;
        let baseline = match compilers {
            Compilers::Optimizing => None,
            Compilers::Tiered | Compilers::Baseline => match baseline_engine() {
                Ok(engine) => Some(engine),
                Err(e) => {
                    tracing::warn!(error = %e, "no baseline compiler; plugins missing from the compile cache are compiled by Cranelift before they run");
                    None
                }
            },
        };
        let cache = Arc::new(cache::CompileCache::new(&engine, cache_dir)?);
        let stop = Arc::new(AtomicBool::new(false));
        let ticked: Vec<Engine> = std::iter::once(engine.clone())
            .chain(baseline.clone())
            .collect();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("dray-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for engine in &ticked {
                        engine.increment_epoch();
                    }
                }
            })?;
        let optimizer = match (&baseline, compilers) {
            (Some(_), Compilers::Tiered) => Some(spawn_optimizer(engine.clone(), cache.clone())?),
            _ => None,
        };
        Ok(Runtime {
            engine,
            baseline,
            optimizer,
            cache,
            slots: Arc::new(slots::Slots::new(calls as usize, per_project)),
            _ticker: Arc::new(Ticker(stop)),
        })
    }

    /// The engine and compile cache, for benchmarks and tools that load components directly.
    pub fn compiler(&self) -> (&Engine, &cache::CompileCache) {
        (&self.engine, &self.cache)
    }

    /// Loads a component: compiles (or reads from the cache), checks its imports against
    /// `grants`, prepares instantiation and reads its step kinds.
    pub async fn load(
        &self,
        name: &str,
        bytes: Vec<u8>,
        grants: &Grants,
    ) -> Result<Plugin, LoadError> {
        let invalid = |reason: String| LoadError::Invalid {
            plugin: name.to_string(),
            reason,
        };
        let digest = cache::digest(&bytes);
        let bytes: Arc<[u8]> = bytes.into();
        let (engine, baseline, cache) = (
            self.engine.clone(),
            self.baseline.clone(),
            self.cache.clone(),
        );
        let (d, b, n) = (digest.clone(), bytes.clone(), name.to_string());
        let (engine, component, loaded) = tokio::task::spawn_blocking(move || {
            if let Some(baseline) = baseline.filter(|_| !cache.contains(&d)) {
                let started = Instant::now();
                match wasmtime::component::Component::new(&baseline, &b) {
                    Ok(component) => {
                        tracing::info!(plugin = %n, ms = started.elapsed().as_millis() as u64, "compiled with the baseline compiler");
                        return Ok((baseline, component, Loaded::Baseline));
                    }
                    // Winch lacks a few proposals Cranelift has (tail calls, GC, exceptions).
                    Err(e) => {
                        tracing::info!(plugin = %n, reason = %format!("{e:#}"), "the baseline compiler cannot compile it; compiling with Cranelift")
                    }
                }
            }
            cache
                .load(&engine, &b, &d)
                .map(|(component, loaded)| (engine, component, loaded))
        })
        .await
        .map_err(|e| invalid(e.to_string()))?
        .map_err(|e| invalid(format!("{e:#}")))?;

        let imports: Vec<String> = component
            .component_type()
            .imports(&engine)
            .map(|(n, _)| n.to_string())
            .collect();
        for import in &imports {
            match capability_of(import) {
                None => {}
                Some(Err(())) => {
                    return Err(LoadError::UnknownImport {
                        plugin: name.into(),
                        import: import.clone(),
                    });
                }
                Some(Ok(capability)) if !grants.allows(capability) => {
                    return Err(LoadError::NotGranted {
                        plugin: name.into(),
                        capability: capability_name(capability).into(),
                        import: import.clone(),
                        how: not_granted_how(capability),
                    });
                }
                Some(Ok(_)) => {}
            }
        }
        let tier = match loaded {
            Loaded::Baseline => Tier::Baseline,
            Loaded::Compiled | Loaded::FromCache => Tier::Optimized,
        };
        let (role, pre) = prepare_instances(&engine, &component, grants).map_err(invalid)?;
        let code = Arc::new(std::sync::RwLock::new(Arc::new(Code { engine, pre, tier })));
        let mut plugin = Plugin {
            name: name.into(),
            digest,
            loaded,
            kinds: Vec::new(),
            imports,
            role,
            code,
            slots: self.slots.clone(),
            _ticker: self._ticker.clone(),
        };
        plugin.kinds = plugin.describe().await?;
        if tier == Tier::Baseline
            && let Some(optimizer) = &self.optimizer
        {
            let job = Optimize {
                name: name.into(),
                digest: plugin.digest.clone(),
                bytes,
                grants: grants.clone(),
                slot: Arc::downgrade(&plugin.code),
            };
            if optimizer.send(job).is_err() {
                tracing::warn!(
                    plugin = name,
                    "the optimizer thread is gone; the plugin keeps its baseline code"
                );
            }
        }
        tracing::debug!(plugin = name, digest = %plugin.digest, loaded = ?loaded, "plugin loaded");
        Ok(plugin)
    }

    /// Loads every built-in plugin. They ship with Dray and may import every capability; what
    /// a call may reach is still decided per call (the HTTP allowlist, the secrets, Git access).
    pub async fn load_builtins(&self) -> Result<Vec<Plugin>, LoadError> {
        let mut plugins = Vec::new();
        let grants = Grants::all();
        for (name, bytes) in BUILTIN_PLUGINS {
            plugins.push(self.load(name, bytes.to_vec(), &grants).await?);
        }
        Ok(plugins)
    }
}

impl Plugin {
    /// The code calls run now.
    fn code(&self) -> Arc<Code> {
        self.code.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Which compiler's code the calls that start now run.
    pub fn tier(&self) -> Tier {
        self.code().tier
    }

    async fn describe(&self) -> Result<Vec<KindInfo>, LoadError> {
        let fail = |reason: String| LoadError::Describe {
            plugin: self.name.clone(),
            reason,
        };
        // Capabilities known by import only: every kind of the component may use them.
        let by_import: Vec<Capability> = [Capability::Oci, Capability::Helm, Capability::Kube]
            .into_iter()
            .filter(|c| {
                self.imports
                    .iter()
                    .any(|i| capability_of(i) == Some(Ok(*c)))
            })
            .collect();
        // `describe` runs outside any promotion: a scratch work dir, removed afterwards.
        let scratch = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
        let limits = Limits {
            timeout: Duration::from_secs(10),
            ..Limits::default()
        };
        let _slot = self.slots.acquire("").await;
        let code = self.code();
        let mut store = sandbox::store(&code.engine, scratch.path(), &limits)
            .map_err(|e| fail(e.to_string()))?;
        let call = async {
            match &code.pre {
                Pre::Step(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    instance.call_describe(&mut store).await
                }
                Pre::Verifier(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    instance.call_describe(&mut store).await
                }
            }
        };
        let kinds = match tokio::time::timeout(limits.timeout, call).await {
            Ok(Ok(kinds)) => kinds,
            Ok(Err(e)) => return Err(fail(format!("{e:#}"))),
            Err(_) => return Err(fail("it did not answer within 10 s".into())),
        };
        let mut infos = Vec::new();
        let mut seen = BTreeSet::new();
        for kind in kinds {
            if !seen.insert(kind.name.clone()) {
                return Err(fail(format!(
                    "step kind {:?} is described twice",
                    kind.name
                )));
            }
            let schema: Value = serde_json::from_str(&kind.config_schema).map_err(|e| {
                fail(format!(
                    "the config schema of {:?} is not JSON: {e}",
                    kind.name
                ))
            })?;
            let validator = jsonschema::validator_for(&schema).map_err(|e| {
                fail(format!(
                    "the config schema of {:?} is not a valid JSON Schema: {e}",
                    kind.name
                ))
            })?;
            infos.push(KindInfo {
                name: kind.name,
                description: kind.description,
                schema,
                capabilities: kind
                    .capabilities
                    .into_iter()
                    .map(Capability::from)
                    .chain(by_import.iter().copied())
                    .collect(),
                validator,
            });
        }
        Ok(infos)
    }

    pub fn kind(&self, name: &str) -> Option<&KindInfo> {
        self.kinds.iter().find(|k| k.name == name)
    }

    /// Runs step `kind` with `config` in `workdir`. Never fails: every way a call can go wrong
    /// ends in the report's `outcome`.
    pub async fn run(
        &self,
        kind: &str,
        context: &StepContext,
        config: &Value,
        workdir: &Path,
        limits: &Limits,
    ) -> StepReport {
        // Waiting for a slot is queueing, not work: the call's deadline starts once it has one.
        let _slot = self.slots.acquire(&limits.project).await;
        let started = Instant::now();
        let code = self.code();
        let store = match self.prepare(&code, kind, config, Role::Step, workdir, limits) {
            Ok(store) => store,
            Err(failure) => {
                return StepReport {
                    outcome: Err(failure),
                    log: Vec::new(),
                    duration: started.elapsed(),
                };
            }
        };
        let Pre::Step(pre) = &code.pre else {
            unreachable!("prepare refuses a step call of a verifier");
        };
        let config_text = config.to_string();
        let (answer, log) = guarded(store, workdir, limits, "step", async |store| {
            let instance = pre.instantiate_async(&mut *store).await?;
            instance
                .call_run(&mut *store, kind, context, &config_text)
                .await
        })
        .await;
        let outcome = match answer {
            Err(failure) => Err(failure),
            Ok(Err(error)) => Err(match error {
                StepError::InvalidConfig(m) => Failure {
                    kind: FailureKind::InvalidConfig,
                    message: log::cut(m, MAX_MESSAGE_BYTES),
                },
                StepError::Retryable(m) => Failure {
                    kind: FailureKind::Retryable,
                    message: log::cut(m, MAX_MESSAGE_BYTES),
                },
                StepError::Terminal(m) => Failure {
                    kind: FailureKind::Terminal,
                    message: log::cut(m, MAX_MESSAGE_BYTES),
                },
            }),
            Ok(Ok(result)) => finished(result, limits),
        };
        StepReport {
            outcome,
            log,
            duration: started.elapsed(),
        }
    }

    /// Takes one measurement with verifier `kind` (config: the metric provider's resolved
    /// config). Never fails: every way a call can go wrong ends in the report's `outcome`.
    pub async fn verify(
        &self,
        kind: &str,
        context: &StepContext,
        config: &Value,
        workdir: &Path,
        limits: &Limits,
    ) -> MeasureReport {
        let _slot = self.slots.acquire(&limits.project).await;
        let started = Instant::now();
        let code = self.code();
        let store = match self.prepare(&code, kind, config, Role::Verifier, workdir, limits) {
            Ok(store) => store,
            Err(failure) => {
                return MeasureReport {
                    outcome: Err(failure),
                    log: Vec::new(),
                    duration: started.elapsed(),
                };
            }
        };
        let Pre::Verifier(pre) = &code.pre else {
            unreachable!("prepare refuses a verifier call of a step");
        };
        let config_text = config.to_string();
        let (answer, log) = guarded(store, workdir, limits, "measurement", async |store| {
            let instance = pre.instantiate_async(&mut *store).await?;
            instance
                .call_verify(&mut *store, kind, context, &config_text)
                .await
        })
        .await;
        let outcome = match answer {
            Err(failure) => Err(failure),
            Ok(Err(message)) => Err(Failure {
                kind: FailureKind::Retryable,
                message: log::cut(message, MAX_MESSAGE_BYTES),
            }),
            Ok(Ok(m)) if m.value.len() > limits.output_bytes => Err(Failure {
                kind: FailureKind::BadResult,
                message: format!(
                    "the measured value is {} bytes; the limit is {} bytes",
                    m.value.len(),
                    limits.output_bytes
                ),
            }),
            Ok(Ok(m)) => match serde_json::from_str::<Value>(&m.value) {
                Ok(value) => Ok(Measured {
                    phase: m.phase,
                    value,
                    message: m.message.map(|m| log::cut(m, MAX_MESSAGE_BYTES)),
                }),
                Err(e) => Err(Failure {
                    kind: FailureKind::BadResult,
                    message: format!("the measured value is not valid JSON: {e}"),
                }),
            },
        };
        MeasureReport {
            outcome,
            log,
            duration: started.elapsed(),
        }
    }

    /// What every call does first: the checks of [`Plugin::check_call`], then a fresh store
    /// (the sandbox) in `workdir`.
    fn prepare(
        &self,
        code: &Code,
        kind: &str,
        config: &Value,
        role: Role,
        workdir: &Path,
        limits: &Limits,
    ) -> Result<wasmtime::Store<StepState>, Failure> {
        self.check_call(kind, config, role)?;
        sandbox::store(&code.engine, workdir, limits).map_err(|e| Failure {
            kind: FailureKind::Crashed,
            message: format!("cannot prepare the sandbox in {}: {e:#}", workdir.display()),
        })
    }

    /// `None`: this plugin has no step kind `kind`; else the problems of `config` against its
    /// schema.
    pub fn config_problems(
        &self,
        kind: &str,
        config: &Value,
    ) -> Option<Vec<crate::admission::ConfigProblem>> {
        let info = self.kind(kind).filter(|_| self.role == Role::Step)?;
        Some(
            info.validator
                .iter_errors(config)
                .map(|e| crate::admission::ConfigProblem::of(&e))
                .collect(),
        )
    }

    /// The checks before any call: the kind exists in this role and the config fits its schema.
    fn check_call(&self, kind: &str, config: &Value, role: Role) -> Result<(), Failure> {
        let what = match role {
            Role::Step => "step kind",
            Role::Verifier => "verifier",
        };
        let info = self
            .kind(kind)
            .filter(|_| self.role == role)
            .ok_or_else(|| {
                let known: Vec<&str> = self.kinds.iter().map(|k| k.name.as_str()).collect();
                Failure {
                    kind: FailureKind::UnknownKind,
                    message: if self.role == role {
                        format!(
                            "{} has no {what} {kind:?}; it offers {}",
                            self.name,
                            known.join(", ")
                        )
                    } else {
                        format!(
                            "{} offers no {what}s (it is a {:?} plugin)",
                            self.name, self.role
                        )
                    },
                }
            })?;
        let problems: Vec<String> = info
            .validator
            .iter_errors(config)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if !problems.is_empty() {
            return Err(Failure {
                kind: FailureKind::InvalidConfig,
                message: format!(
                    "config does not fit the schema of {kind}: {}",
                    problems.join("; ")
                ),
            });
        }
        Ok(())
    }
}

/// Makes `call` in `store` with the call's deadline, raced with the work-directory quota's
/// watch, and settles it: the answer, or the failure that stopped it, with what it logged.
async fn guarded<T>(
    mut store: wasmtime::Store<StepState>,
    workdir: &Path,
    limits: &Limits,
    what: &str,
    call: impl AsyncFnOnce(&mut wasmtime::Store<StepState>) -> wasmtime::Result<T>,
) -> (Result<T, Failure>, Vec<log::Line>) {
    let over = Arc::new(std::sync::Mutex::new(None));
    let watch = disk::watch(
        disk::dirs_of(workdir),
        limits.disk,
        store.data().stop.clone(),
        over.clone(),
    );
    let result = tokio::select! {
        result = tokio::time::timeout(limits.timeout, call(&mut store)) => result,
        never = watch => match never {},
    };
    let (answer, log) = settle(&store, result, what, limits);
    let over = over
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    match over {
        Some(reason) => (Err(over_quota(reason)), log),
        None => (answer, log),
    }
}

/// How a guest call (`what`: "step", "measurement") ended: its answer, or the failure that
/// stopped it (the time limit, the memory limit, a trap), with what it logged.
fn settle<T>(
    store: &wasmtime::Store<StepState>,
    result: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    what: &str,
    limits: &Limits,
) -> (Result<T, Failure>, Vec<log::Line>) {
    let log = store.data().log.finish();
    let answer = match result {
        Err(_) => Err(timed_out(what, limits)),
        Ok(Err(trap)) => Err(trapped(&trap, store.data().limiter.denied, limits, &log)),
        Ok(Ok(answer)) => Ok(answer),
    };
    (answer, log)
}

/// The failure of a call whose work directory passed its quota (`reason` says how).
pub fn over_quota(reason: String) -> Failure {
    Failure {
        kind: FailureKind::DiskQuota,
        message: format!(
            "{reason}: the call was stopped; write less (a shallower clone, fewer files), or raise the quota (work-dir-max-mib and work-dir-max-files under [steps] in the daemon config)"
        ),
    }
}

fn timed_out(what: &str, limits: &Limits) -> Failure {
    Failure {
        kind: FailureKind::TimedOut,
        message: format!(
            "the {what} did not finish within {}s and was stopped",
            limits.timeout.as_secs_f64()
        ),
    }
}

/// A trap: out of memory when the limiter refused a growth, otherwise a crash.
fn trapped(
    trap: &wasmtime::Error,
    denied: Option<usize>,
    limits: &Limits,
    log: &[log::Line],
) -> Failure {
    match denied {
        Some(wanted) => Failure {
            kind: FailureKind::OutOfMemory,
            message: format!(
                "the plugin wanted {} MiB of memory; the limit is {} MiB ({trap})",
                wanted >> 20,
                limits.memory_bytes >> 20
            ),
        },
        None => Failure {
            kind: FailureKind::Crashed,
            message: crash_message(trap, log),
        },
    }
}

/// `git`, `credentials`, `http`, `metadata`, `oci` or `helm`, as the WIT and the daemon config spell it.
pub fn capability_name(capability: Capability) -> &'static str {
    match capability {
        Capability::Git => "git",
        Capability::Credentials => "credentials",
        Capability::Http => "http",
        Capability::Metadata => "metadata",
        Capability::Oci => "oci",
        Capability::Helm => "helm",
        Capability::Kube => "kube",
    }
}

/// `succeeded` or `running`.
pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Succeeded => "succeeded",
        Status::Running => "running",
    }
}

/// Checks what the guest returned.
fn finished(
    result: bindings::dray::plugin::types::StepResult,
    limits: &Limits,
) -> Result<Finished, Failure> {
    let bad = |message: String| Failure {
        kind: FailureKind::BadResult,
        message,
    };
    if result.outputs.len() > limits.output_bytes {
        return Err(bad(format!(
            "the step's outputs are {} bytes; the limit is {} bytes",
            result.outputs.len(),
            limits.output_bytes
        )));
    }
    let outputs = match serde_json::from_str::<Value>(&result.outputs) {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            return Err(bad(format!(
                "the step's outputs must be a JSON object, not {}",
                json_type(&other)
            )));
        }
        Err(e) => return Err(bad(format!("the step's outputs are not valid JSON: {e}"))),
    };
    Ok(Finished {
        status: result.status,
        outputs,
        message: result.message.map(|m| log::cut(m, MAX_MESSAGE_BYTES)),
        retry_after: result
            .retry_after_seconds
            .map(|s| Duration::from_secs(s.into())),
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// "The plugin crashed" plus what it said last on stderr (a Rust panic message lands there).
fn crash_message(trap: &wasmtime::Error, log: &[log::Line]) -> String {
    let last_words: Vec<&str> = log
        .iter()
        .filter(|l| l.source == log::Source::Stderr)
        .map(|l| l.message.as_str())
        .filter(|m| !m.trim().is_empty() && !m.starts_with("note:"))
        .collect();
    let root = trap.root_cause().to_string();
    let message = match last_words.last() {
        Some(said) => format!("the plugin crashed: {said} ({root})"),
        None => format!("the plugin crashed: {root}"),
    };
    log::cut(message, MAX_MESSAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_read_by_the_wit_names() {
        let grants = Grants::parse(&["git".into(), "http".into(), "git".into()]).expect("valid");
        assert!(grants.allows(Capability::Git) && grants.allows(Capability::Http));
        assert!(!grants.allows(Capability::Credentials));
        let err = Grants::parse(&["gti".into()]).expect_err("a typo");
        assert!(
            err.contains("\"gti\" is not a capability; grant git, credentials, http, metadata"),
            "{err}"
        );
        for c in CAPABILITIES {
            assert_eq!(capability_named(capability_name(c)), Some(c));
        }
    }

    #[test]
    fn imports_map_to_capabilities() {
        assert_eq!(capability_of("dray:plugin/log@0.1.0"), None);
        assert_eq!(capability_of("wasi:filesystem/types@0.2.6"), None);
        assert_eq!(
            capability_of("dray:plugin/git@0.1.0"),
            Some(Ok(Capability::Git))
        );
        assert_eq!(
            capability_of("wasi:http/outgoing-handler@0.2.6"),
            Some(Ok(Capability::Http))
        );
        assert_eq!(capability_of("acme:evil/raw@1.0.0"), Some(Err(())));
    }
}
