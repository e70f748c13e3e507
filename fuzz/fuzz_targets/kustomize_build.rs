//! The `kustomize-build` step on a kustomization a Git repository holds. The input is a txtar
//! archive (Go's `golang.org/x/tools/txtar`: a `-- name --` line starts each file), written into
//! a fresh directory, which is then rendered. Errors are fine; a panic, a hang or an unbounded
//! allocation is a bug.
//!
//! In the sandbox the step sees only its work directory; here it runs on the host, so inputs
//! that name `/proc` or `/sys` (whose files can block a reader) are skipped. Devices and large
//! files are refused by the step itself.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// The most files an input may write, and how deep.
const MAX_FILES: usize = 32;

fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Memory-backed where there is one: every execution writes its files.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("dray-fuzz-kustomize-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

/// A file name the archive may use: relative, plain parts, at most six deep.
fn plain(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() <= 6
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("/proc") || text.contains("/sys") {
        return;
    }
    let mut files: Vec<(&str, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        let marker = line
            .trim_end_matches('\n')
            .strip_prefix("-- ")
            .and_then(|l| l.strip_suffix(" --"));
        match marker {
            Some(name) => {
                if !plain(name) || files.len() == MAX_FILES {
                    return;
                }
                files.push((name, String::new()));
            }
            None => {
                if let Some((_, content)) = files.last_mut() {
                    content.push_str(line);
                }
            }
        }
    }
    let dir = scratch().join("work");
    let _ = std::fs::remove_dir_all(&dir);
    for (name, content) in &files {
        let path = dir.join(name);
        // A name that is also another file's directory: skip the input.
        if std::fs::create_dir_all(path.parent().expect("under dir")).is_err()
            || std::fs::write(&path, content).is_err()
        {
            return;
        }
    }
    let _ = kustomize::render(&dir);
});
