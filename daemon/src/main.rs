//! The `dray` binary: all of it lives in the library (see `dray::cli`).

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    dray::cli::main()
}

/// glibc gives each thread that contends for the allocator an arena of its own, up to eight
/// per core, and keeps the memory freed into each: the daemon's bursts of work on tokio's
/// threads left it at 450 MiB where two arenas hold it at 270 MiB, no slower (BENCHMARKS.md,
/// "Pipelines at scale"). `MALLOC_ARENA_MAX` in the environment still decides when set.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it runs first thing in `main`,
        // before any thread is started, and a refusal (0) leaves glibc's default in place.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
