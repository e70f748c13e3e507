//! The work-directory quota: a promotion's work directory (and the Git repositories the host
//! keeps beside it) may hold at most so many bytes and files. A step that grows it past the
//! quota is stopped and fails with a message that says so, whoever wrote the bytes (the guest
//! through WASI, or the host on its behalf, as in a `git clone`).
//!
//! The directories are measured while a call runs, on the blocking pool: every 250 ms, or
//! less often when measuring takes long (at most a twentieth of the time goes to it), so a fast
//! writer overshoots by what it writes in about that time. When the quota is passed, the flag
//! that the sandbox's epoch callback reads stops the guest at its next tick. After each call,
//! the engine measures once more ([`check`]), so a short call that wrote much, or the host on
//! a call's behalf, is caught too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How much a work directory may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub bytes: u64,
    pub files: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            bytes: 2 << 30,
            files: 200_000,
        }
    }
}

/// What directories hold: bytes (apparent sizes, so a sparse file counts whole) and entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub files: u64,
}

impl Usage {
    /// Measures `dirs` (missing ones hold nothing). Links are counted, never followed.
    pub fn of(dirs: &[PathBuf]) -> Usage {
        let mut usage = Usage::default();
        let mut pending: Vec<PathBuf> = dirs.to_vec();
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                usage.files += 1;
                if meta.is_dir() {
                    pending.push(entry.path());
                } else {
                    usage.bytes += meta.len();
                }
            }
        }
        usage
    }

    /// Why `self` is past `quota`, if it is.
    pub fn over(&self, quota: &Quota) -> Option<String> {
        if self.bytes > quota.bytes {
            Some(format!(
                "the work directory holds {} MiB, past its quota of {} MiB",
                self.bytes >> 20,
                quota.bytes >> 20
            ))
        } else if self.files > quota.files {
            Some(format!(
                "the work directory holds {} files and directories, past its quota of {}",
                self.files, quota.files
            ))
        } else {
            None
        }
    }
}

/// The shortest pause between two measurements.
const EVERY: Duration = Duration::from_millis(250);

/// Watches `dirs` while a call runs (race it with the call): measures them every 250 ms
/// (`EVERY`) or less often (at most a twentieth of the time goes to measuring), and once they
/// pass `quota`, leaves the reason in `reason`, sets `exceeded` (the sandbox's epoch callback
/// then stops the guest) and waits forever. A call shorter than 250 ms costs no measurement at
/// all: after a call, the caller checks the directories once ([`check`]).
pub async fn watch(
    dirs: Vec<PathBuf>,
    quota: Quota,
    exceeded: Arc<AtomicBool>,
    reason: Arc<std::sync::Mutex<Option<String>>>,
) -> std::convert::Infallible {
    let mut pause = EVERY;
    loop {
        tokio::time::sleep(pause).await;
        let dirs = dirs.clone();
        let started = Instant::now();
        let usage = tokio::task::spawn_blocking(move || Usage::of(&dirs))
            .await
            .unwrap_or_default();
        if let Some(over) = usage.over(&quota) {
            *reason
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(over);
            exceeded.store(true, Ordering::SeqCst);
            return std::future::pending().await;
        }
        pause = EVERY.max(started.elapsed() * 20);
    }
}

/// Measures `workdir` (with its repositories) once, off the async threads: why it is past
/// `quota`, if it is. Callers run it after each call, whoever wrote in between.
pub async fn check(workdir: &Path, quota: Quota) -> Option<String> {
    let dirs = dirs_of(workdir);
    tokio::task::spawn_blocking(move || Usage::of(&dirs).over(&quota))
        .await
        .ok()
        .flatten()
}

/// The directories a call in `workdir` may fill: the work directory and the host's
/// repositories beside it.
pub fn dirs_of(workdir: &Path) -> Vec<PathBuf> {
    vec![
        workdir.to_path_buf(),
        crate::host::git::repositories_dir(workdir),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_and_entries_and_never_follows_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/a"), vec![0u8; 1000]).expect("write");
        std::fs::write(dir.path().join("b"), vec![0u8; 24]).expect("write");
        std::os::unix::fs::symlink("/usr", dir.path().join("link")).expect("link");
        let usage = Usage::of(&[dir.path().to_path_buf(), dir.path().join("missing")]);
        assert_eq!(usage.files, 4);
        assert!(
            usage.bytes >= 1024 && usage.bytes < 1024 + 4096,
            "{usage:?}"
        );
        let quota = Quota {
            bytes: 1000,
            files: 10,
        };
        assert!(
            usage
                .over(&quota)
                .is_some_and(|m| m.contains("quota of 0 MiB"))
        );
        let quota = Quota {
            bytes: 1 << 20,
            files: 3,
        };
        assert!(usage.over(&quota).is_some_and(|m| m.contains("4 files")));
    }
}
