//! How the daemon asks glibc's allocator to hold less memory. The daemon works in bursts (a
//! pass over a project's Stages, a garbage-collection pass over its Freight, a dozen Promotions
//! at once) on tokio's threads, and glibc keeps what a burst freed: in an arena per contending
//! thread (up to eight per core), and in the middle of each heap. Both calls here are the
//! reviewed `unsafe` of this file; elsewhere (not glibc) they do nothing.

/// Limits glibc to two arenas, unless `MALLOC_ARENA_MAX` is set (then glibc reads that). Call
/// first thing in `main`, before any thread starts: the scale benchmark's daemon ended at
/// 275 MiB instead of 453 MiB with it, no slower (BENCHMARKS.md, "Pipelines at scale").
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter, before any other thread exists; a
        // refusal (0) leaves glibc's default in place.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Gives the free memory of glibc's heaps back to the system (`malloc_trim(0)`), after a burst
/// of work: a few milliseconds of walking the free lists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn give_back() {
    // SAFETY: malloc_trim takes glibc's own locks and only releases pages of free chunks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// [`give_back`] when the daemon goes idle (its last running Promotion ended), at most once a
/// second: a pipeline that promotes one Stage after another goes idle between them.
pub fn give_back_when_idle() {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    // Milliseconds since START (+1000, so the first call trims) of the last trim.
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = START.elapsed().as_millis() as u64 + 1000;
    let last = LAST.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 1000
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        give_back();
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn give_back() {}
