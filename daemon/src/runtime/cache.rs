//! The compile cache: each component is compiled once per content digest, and the native code
//! is kept on disk so a restart loads it in a fraction of a millisecond instead of compiling.
//!
//! A file is named `<sha256 of the .wasm>-<engine compatibility hash>.cwasm`; the hash changes
//! with the wasmtime version and every engine setting that matters, so a stale file is simply
//! never asked for.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// How a component was obtained, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// Native code read from the cache.
    FromCache,
    /// Compiled now (and written to the cache).
    Compiled,
    /// Compiled now by the baseline compiler, and being optimized in the background
    /// ([`super::Compilers::Tiered`]).
    Baseline,
}

pub struct CompileCache {
    /// `None`: compile every time (no data dir, e.g. `dray plugin inspect`).
    dir: Option<PathBuf>,
    compatibility: String,
}

/// The content digest of a component, `sha256:<hex>`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl CompileCache {
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> std::io::Result<CompileCache> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
            prune(dir);
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CompileCache {
            dir,
            compatibility: format!("{:016x}", hasher.finish()),
        })
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{hex}-{}.cwasm", self.compatibility)))
    }

    /// Whether the cache holds native code for the component with `digest`.
    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_some_and(|p| p.exists())
    }

    /// The component for `bytes` (whose digest is `digest`), from the cache or compiled now.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> wasmtime::Result<(Component, Loaded)> {
        if let Some(path) = self.path(digest).filter(|p| p.exists()) {
            match load_native(engine, &path) {
                Ok(component) => {
                    // Used now: [`prune`] keeps it.
                    let touched = std::fs::File::options()
                        .append(true)
                        .open(&path)
                        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                    if let Err(e) = touched {
                        tracing::debug!(path = %path.display(), error = %e, "cannot mark the cache entry as used");
                    }
                    return Ok((component, Loaded::FromCache));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unusable cache entry; compiling again")
                }
            }
        }
        let started = Instant::now();
        let native = engine.precompile_component(bytes)?;
        tracing::info!(%digest, ms = started.elapsed().as_millis() as u64, "compiled plugin");
        if let Some(path) = self.path(digest) {
            // Written aside and renamed, so a crash never leaves a half file under the real name;
            // the aside name is this writer's own, as two processes may share the cache (the
            // demo's, the tests') and compile the same component at once.
            let partial = path.with_extension(format!(
                "{}.{}.partial",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ));
            let written =
                std::fs::write(&partial, &native).and_then(|()| std::fs::rename(&partial, &path));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache");
            }
        }
        Ok((load_native_bytes(engine, &native)?, Loaded::Compiled))
    }
}

/// How long an entry nobody loaded stays: each new build of a plugin, and each new Dray (its
/// compatibility hash), names its code anew, and the old files would pile up.
const UNUSED_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Removes the entries of `dir` not loaded or written for [`UNUSED_FOR`], and the aside files of
/// writers that died an hour ago or more.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let limit = if name.ends_with(".cwasm") {
            UNUSED_FOR
        } else if name.ends_with(".partial") {
            Duration::from_secs(3600)
        } else {
            continue;
        };
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.is_some_and(|age| age > limit)
            && let Err(e) = std::fs::remove_file(&path)
        {
            tracing::debug!(path = %path.display(), error = %e, "cannot prune the compile cache");
        }
    }
}

/// Reads native code that this cache wrote. The file is read into memory rather than mapped:
/// a mapped file truncated by someone else (say, a cache clean-up) would crash the daemon with
/// SIGBUS, while a copy costs well under a millisecond.
fn load_native(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    let native = std::fs::read(path)?;
    load_native_bytes(engine, &native)
}

/// Turns native code back into a component: the one `unsafe` call in the daemon.
#[allow(unsafe_code)]
fn load_native_bytes(engine: &Engine, native: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires bytes produced by `Engine::precompile_component` of a
    // compatible engine, not tampered with. They come either straight from that call in this
    // process, or from a cache file that only `CompileCache::load` writes (atomically, named
    // by the component's digest and this engine's compatibility hash) inside the daemon's own
    // data or cache directory; a file that fails wasmtime's header checks is recompiled.
    unsafe { Component::deserialize(engine, native) }
}
