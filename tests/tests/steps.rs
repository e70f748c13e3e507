//! The built-in file, data and kustomize steps, run with the real `dray` binary (`dray plugin
//! run builtin:steps`, the same sandbox a promotion uses). `kustomize-build` is checked against
//! `kubectl kustomize` as the oracle: the same bytes for the same kustomization.

use std::path::Path;
use std::process::Command;

use dray_tests::{Cli, dray_bin, repo_root};

fn dray(args: &[&str], cache: &Path) -> Cli {
    let output = dray_tests::finishes(
        Command::new(dray_bin())
            .args(args)
            .env("XDG_CACHE_HOME", cache),
        std::time::Duration::from_secs(120),
    );
    Cli::from(output)
}

fn run_step(kind: &str, config: &serde_json::Value, workdir: &Path, cache: &Path) -> Cli {
    let plugin_ref = "builtin:steps";
    let config = config.to_string();
    let workdir = workdir.display().to_string();
    let mut args = vec![
        "plugin",
        "run",
        plugin_ref,
        "--kind",
        kind,
        "--config",
        &config,
        "--workdir",
        &workdir,
    ];
    // kustomize-build pulls the charts of `helmCharts` through the `helm` capability.
    if kind.starts_with("kustomize") {
        args.push("--allow-helm");
    }
    dray(&args, cache)
}

/// A copy of `tests/data/kustomize` to work in.
fn kustomize_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("work dir");
    let status = Command::new("cp")
        .arg("-r")
        .arg(repo_root().join("tests/data/kustomize/."))
        .arg(dir.path())
        .status()
        .expect("cp runs");
    assert!(status.success());
    dir
}

#[test]
fn kustomize_build_renders_the_same_bytes_as_kubectl_kustomize() {
    let work = kustomize_fixture();
    let cache = tempfile::tempdir().expect("cache");
    // `overlay`: generators merged across levels, prefix, namespace, labels, annotations,
    // images by tag and by digest, replicas, strategic-merge and JSON 6902 patches inline.
    // `prod`: a suffix, selector labels, a replaced generator, an unhashed one, a patch file.
    // `namespaced`: an overlay that owns its Namespace object, renamed to the target namespace.
    for overlay in ["overlay", "prod", "namespaced"] {
        let out = run_step(
            "kustomize-build",
            &serde_json::json!({"path": overlay, "outPath": format!("out/{overlay}.yaml")}),
            work.path(),
            cache.path(),
        );
        assert_eq!(out.code, 0, "{out:?}");
        let ours = std::fs::read_to_string(work.path().join(format!("out/{overlay}.yaml")))
            .expect("output");
        let theirs = dray_tests::kubectl_kustomize(&work.path().join(overlay));
        assert_eq!(
            ours, theirs,
            "{overlay}: kustomize-build and kubectl kustomize differ"
        );
    }
}

#[test]
fn kustomize_build_writes_a_file_per_resource_into_a_directory() {
    let work = kustomize_fixture();
    let cache = tempfile::tempdir().expect("cache");
    let out = run_step(
        "kustomize-build",
        &serde_json::json!({"path": "overlay", "outPath": "manifests"}),
        work.path(),
        cache.path(),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let mut names: Vec<String> = std::fs::read_dir(work.path().join("manifests"))
        .expect("the output directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "namespace-test.yaml",
            "test-configmap-test-web-config-g4g2922mgc.yaml",
            "test-deployment-test-web.yaml",
            "test-role-test-reader.yaml",
            "test-secret-test-web-secret-bf5fk5d75b.yaml",
            "test-service-test-web.yaml",
        ]
    );
    // Each file holds exactly its resource as kubectl renders it.
    let theirs = dray_tests::kubectl_kustomize(&work.path().join("overlay"));
    let service = std::fs::read_to_string(work.path().join("manifests/test-service-test-web.yaml"))
        .expect("file");
    assert!(theirs.split("---\n").any(|doc| doc == service), "{service}");
}

#[test]
fn kustomize_build_refuses_what_it_does_not_render_and_writes_nothing() {
    let work = kustomize_fixture();
    let cache = tempfile::tempdir().expect("cache");
    std::fs::write(
        work.path().join("overlay/kustomization.yaml"),
        "resources:\n- ../base\nopenapi:\n  path: schema.json\n",
    )
    .expect("write");
    let out = run_step(
        "kustomize-build",
        &serde_json::json!({"path": "overlay", "outPath": "out.yaml"}),
        work.path(),
        cache.path(),
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("overlay/kustomization.yaml: openapi is not supported"),
        "{}",
        out.stderr
    );
    assert!(!work.path().join("out.yaml").exists());
}

#[test]
fn file_steps_archive_and_extract_a_tree_and_refuse_an_archive_that_escapes() {
    let work = tempfile::tempdir().expect("work dir");
    let cache = tempfile::tempdir().expect("cache");
    std::fs::create_dir_all(work.path().join("src/app")).expect("mkdir");
    std::fs::write(work.path().join("src/app/values.yaml"), "replicas: 1\n").expect("write");
    std::fs::write(work.path().join("src/app/debug.log"), "noise").expect("write");
    let ok = |out: Cli| assert_eq!(out.code, 0, "{out:?}");
    ok(run_step(
        "tar",
        &serde_json::json!({"inPath": "src", "outPath": "bundle.tgz", "gzip": true, "ignore": "*.log"}),
        work.path(),
        cache.path(),
    ));
    ok(run_step(
        "untar",
        &serde_json::json!({"inPath": "bundle.tgz", "outPath": "copy"}),
        work.path(),
        cache.path(),
    ));
    assert_eq!(
        std::fs::read_to_string(work.path().join("copy/app/values.yaml")).expect("extracted"),
        "replicas: 1\n"
    );
    assert!(
        !work.path().join("copy/app/debug.log").exists(),
        "ignored files stay out"
    );

    // An archive whose entry climbs out with `..` is refused, whatever the sandbox would do.
    let evil = work.path().join("evil.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&evil).expect("create"));
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    // `set_path` refuses `..`; write the name bytes directly, as a hostile archive would.
    header.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"../escape.txt");
    header.set_cksum();
    builder.append(&header, &b"evil"[..]).expect("append");
    builder.finish().expect("finish");
    let out = run_step(
        "untar",
        &serde_json::json!({"inPath": "evil.tar", "outPath": "x"}),
        work.path(),
        cache.path(),
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("../escape.txt leaves the output directory"),
        "{}",
        out.stderr
    );
    assert!(!work.path().join("escape.txt").exists());
}

#[test]
fn yaml_update_changes_one_value_and_keeps_the_comments() {
    let work = tempfile::tempdir().expect("work dir");
    let cache = tempfile::tempdir().expect("cache");
    let values = "# Helm values for web\nimage:\n  repository: ghcr.io/example/web # pinned by Dray\n  tag: \"1.0.0\"\n";
    std::fs::write(work.path().join("values.yaml"), values).expect("write");
    let out = run_step(
        "yaml-update",
        &serde_json::json!({"path": "values.yaml", "updates": [{"key": "image.tag", "value": "1.2.0"}]}),
        work.path(),
        cache.path(),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        std::fs::read_to_string(work.path().join("values.yaml")).expect("read"),
        values.replace("\"1.0.0\"", "1.2.0")
    );
    assert!(out.stdout.contains("Updated values.yaml"), "{}", out.stdout);
}

/// Without `--allow-helm`, `dray plugin run builtin:steps` still builds; only a chart it
/// would have to pull fails, saying how to allow it.
#[test]
fn kustomize_runs_without_the_helm_grant_until_it_must_pull() {
    let work = kustomize_fixture();
    let cache = tempfile::tempdir().expect("cache");
    let workdir = work.path().display().to_string();
    let run = |path: &str| {
        dray(
            &[
                "plugin",
                "run",
                "builtin:steps",
                "--kind",
                "kustomize-build",
                "--config",
                &serde_json::json!({"path": path, "outPath": format!("{path}.yaml")}).to_string(),
                "--workdir",
                &workdir,
            ],
            cache.path(),
        )
    };
    let out = run("overlay");
    assert_eq!(out.code, 0, "{out:?}");
    std::fs::create_dir_all(work.path().join("pulls")).expect("mkdir");
    std::fs::write(
        work.path().join("pulls/kustomization.yaml"),
        "helmCharts:\n- name: redis\n  repo: https://charts.example.org\n  version: 1.0.0\n",
    )
    .expect("write");
    let out = run("pulls");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("--allow-helm"), "{}", out.stderr);
}

/// The built-in steps are one component importing every capability, yet a Git step run on its
/// own still needs `--allow-git`, as a Git plugin of its own would; a file step does not.
#[test]
fn a_git_step_of_the_built_in_component_needs_the_git_grant() {
    let cache = tempfile::tempdir().expect("cache");
    let work = tempfile::tempdir().expect("work");
    let workdir = work.path().display().to_string();
    let run = |kind: &str, config: &str, extra: &[&str]| {
        let mut args = vec![
            "plugin",
            "run",
            "builtin:steps",
            "--kind",
            kind,
            "--config",
            config,
            "--workdir",
            &workdir,
        ];
        args.extend_from_slice(extra);
        dray(&args, cache.path())
    };
    let clone = r#"{"repoURL": "https://git.invalid/app.git", "checkout": [{"branch": "main", "path": "src"}]}"#;
    let out = run("git-clone", clone, &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--allow-git"), "{}", out.stderr);
    // Granted, it runs (and fails at the unreachable remote).
    let out = run("git-clone", clone, &["--allow-git"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!out.stderr.contains("--allow-git"), "{}", out.stderr);
    let out = run("file-write", r#"{"path": "a.txt", "contents": "hi"}"#, &[]);
    assert_eq!(out.code, 0, "{out:?}");
}
