//! `kustomize-build` against `kubectl kustomize` on a corpus of layouts
//! (`tests/data/kustomize-corpus`, one directory each, built at its root): every layout renders
//! byte for byte as kubectl renders it, or, where kubectl refuses it, Dray refuses it too. Each
//! layout is run through the real `dray plugin run builtin:steps`, the sandbox a promotion
//! uses; every difference is reported, not only the first.

use std::path::Path;
use std::process::Command;

use dray_tests::{dray_bin, repo_root};

/// Builds `layout` (a directory under `work`) with Dray; its output or its error.
fn dray_build(work: &Path, layout: &str, cache: &Path) -> Result<String, String> {
    let out_file = format!("out/{layout}.yaml");
    let config = serde_json::json!({"path": layout, "outPath": out_file});
    let output = dray_tests::finishes(
        Command::new(dray_bin())
            .args([
                "plugin",
                "run",
                "builtin:steps",
                "--kind",
                "kustomize-build",
                // `helmCharts` pull missing charts through the `helm` capability.
                "--allow-helm",
            ])
            .arg("--config")
            .arg(config.to_string())
            .arg("--workdir")
            .arg(work)
            .env("XDG_CACHE_HOME", cache),
        std::time::Duration::from_secs(120),
    );
    if output.status.success() {
        std::fs::read_to_string(work.join(&out_file)).map_err(|e| e.to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn every_layout_renders_as_kubectl_kustomize_renders_it() {
    let corpus = repo_root().join("tests/data/kustomize-corpus");
    let work = tempfile::tempdir().expect("a work dir");
    let cache = tempfile::tempdir().expect("a cache");
    let status = Command::new("cp")
        .arg("-r")
        .arg(corpus.join("."))
        .arg(work.path())
        .status()
        .expect("cp runs");
    assert!(status.success());
    let mut layouts: Vec<String> = std::fs::read_dir(&corpus)
        .expect("the corpus")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    layouts.sort();
    let mut problems = Vec::new();
    for layout in &layouts {
        let theirs = dray_tests::try_kubectl_kustomize(&work.path().join(layout));
        let ours = dray_build(work.path(), layout, cache.path());
        match (theirs, ours) {
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(a), Ok(b)) => problems.push(format!(
                "{layout}: the output differs\n--- kubectl\n{a}--- dray\n{b}"
            )),
            (Ok(_), Err(e)) => problems.push(format!("{layout}: Dray failed: {e}")),
            (Err(e), Ok(_)) => problems.push(format!(
                "{layout}: kubectl refused it ({}) but Dray rendered it",
                e.trim()
            )),
            (Err(_), Err(_)) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} layouts differ:\n\n{}",
        problems.len(),
        layouts.len(),
        problems.join("\n\n")
    );
    assert!(
        layouts.len() >= 60,
        "the corpus has {} layouts",
        layouts.len()
    );
}
