//! `dray demo`, as the README's first command runs it: with nothing but the binary it builds the
//! repositories, runs the pipeline and stops (`--once`) when two Freight wait at prod's gate.

use std::process::Command;
use std::time::Duration;

use dray_tests::{dray_bin, finishes};

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_demo_runs_two_commits_to_prods_gate_and_pushes_each_stages_render() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = finishes(
        Command::new(dray_bin())
            .args(["demo", "--once", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir.path()),
        Duration::from_secs(400),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "+ new Freight",
        "→ promoting",
        "(auto-promotion)",
        "verified in dev (2 measurements)",
        "verified in staging (2 measurements)",
        "a developer pushes app 1.1.0",
        "prod waits for a person to promote it",
        "promote -p demo --stage prod --freight",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} is missing from:\n{stdout}"
        );
    }
    assert_eq!(
        stdout.matches("prod waits for a person").count(),
        2,
        "{stdout}"
    );
    assert!(!stdout.contains('✗'), "{stdout}");

    // Each auto-promoted Stage has its render of the second commit on its branch; prod none.
    let gitops = dir.path().join("gitops.git");
    let app = dir.path().join("app.git");
    let newest = git(&app, &["rev-parse", "main"]);
    for stage in ["dev", "staging"] {
        let manifests = git(&gitops, &["show", &format!("stage/{stage}:manifests.yaml")]);
        assert!(
            manifests.contains(&format!("app-revision: {}", newest.trim()))
                && manifests.contains(&format!("namespace: {stage}")),
            "{stage}:\n{manifests}"
        );
    }
    let branches = git(&gitops, &["branch", "--list"]);
    assert!(!branches.contains("stage/prod"), "{branches}");
}
