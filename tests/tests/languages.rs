//! Steps written in other languages than Rust, built with their ecosystem's tools against
//! `wit/plugin.wit`, published with `dray plugin push` to a real registry and run by reference in
//! a promotion: `examples/render-step-python` (componentize-py) and
//! `examples/release-notes-step-js` (jco / componentize-js).

use std::path::{Path, PathBuf};
use std::process::Command;

use dray_tests::registry::Registry;
use dray_tests::{Daemon, manifests};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// componentize-py: `DRAY_COMPONENTIZE_PY`, else where tests/run.sh installs it, else `PATH`.
fn componentize_py() -> PathBuf {
    if let Some(path) = std::env::var_os("DRAY_COMPONENTIZE_PY") {
        return path.into();
    }
    let cached = dirs_home().join(".cache/dray-tools/py/bin/componentize-py");
    if cached.exists() {
        return cached;
    }
    PathBuf::from("componentize-py")
}

fn dirs_home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

/// Builds `examples/render-step-python` into `out` as its README says.
fn build_python_step(out: &Path) {
    let tool = componentize_py();
    let status = Command::new(&tool)
        .args(["-d", "../../wit", "-w", "step", "componentize", "app", "-o"])
        .arg(out)
        .current_dir(repo_root().join("examples/render-step-python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}); this test builds a Python step with it: run tests/run.sh, which installs it (python3 -m venv ~/.cache/dray-tools/py && ~/.cache/dray-tools/py/bin/pip install componentize-py)",
                tool.display()
            )
        });
    assert!(status.success(), "componentize-py failed: {status}");
}

/// jco: `DRAY_JCO`, else where tests/run.sh installs it, else `PATH`.
fn jco() -> PathBuf {
    if let Some(path) = std::env::var_os("DRAY_JCO") {
        return path.into();
    }
    let cached = dirs_home().join(".cache/dray-tools/js/node_modules/.bin/jco");
    if cached.exists() {
        return cached;
    }
    PathBuf::from("jco")
}

/// Builds `examples/release-notes-step-js` into `out` as its README says.
fn build_js_step(out: &Path) {
    let tool = jco();
    let status = Command::new(&tool)
        .args([
            "componentize",
            "examples/release-notes-step-js/step.js",
            "--wit",
            "wit",
            "--world-name",
            "step",
            "--disable",
            "all",
            "-o",
        ])
        .arg(out)
        .current_dir(repo_root())
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}); this test builds a JavaScript step with it: run tests/run.sh, which installs it (npm install --prefix ~/.cache/dray-tools/js @bytecodealliance/jco@1.10.2 @bytecodealliance/componentize-js@0.16.0)",
                tool.display()
            )
        });
    assert!(status.success(), "jco componentize failed: {status}");
}

/// A registry, a daemon that may run plugins from its `steps/` repositories, and `wasm` pushed
/// there as `steps/NAME:1.0.0`; returns them with the reference.
async fn published(wasm: &Path, name: &str) -> (Registry, Daemon, String) {
    let registry = Registry::start();
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        oci: vec![dray::oci::plugins::OciRule {
            pattern: format!("{}/steps/*", registry.address),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");
    let reference = format!("oci://{}/steps/{name}:1.0.0", registry.address);
    let pushed = daemon.cli(&["plugin", "push", &reference, &wasm.display().to_string()]);
    assert_eq!(pushed.code, 0, "{pushed:?}");
    (registry, daemon, reference)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_step_writes_the_release_note_of_the_freight() {
    let dir = tempfile::tempdir().expect("a dir");
    let wasm = dir.path().join("release-notes.wasm");
    build_js_step(&wasm);
    let (_registry, daemon, reference) = published(&wasm, "release-notes").await;
    let digest = "sha256:00000000000000000000000000000000000000000000000000000000000000bb";
    let manifests = format!(
        "{}{}{}",
        manifests::project("shop", &["image: {repoURL: registry.example/web}"]),
        manifests::stage(
            "shop",
            "prod",
            &format!(
                "- uses: {reference}\n  as: notes\n  config: {{title: \"Shop ${{{{ ctx.stage }}}}\"}}"
            ),
        ),
        manifests::freight(
            "shop",
            "f1",
            &format!(
                "images: [{{repoURL: registry.example/web, tag: 2.0.0, digest: \"{digest}\"}}]"
            ),
        ),
    );
    daemon.apply_ok(&manifests).await;
    let promoted = daemon.promote("shop", "prod", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");
    let list = daemon.get_json("/v1/projects/shop/promotions").await;
    let note = list["items"][0]["status"]["state"]["notes"]["note"]
        .as_str()
        .unwrap_or_else(|| panic!("no note: {list:#}"))
        .to_string();
    assert!(note.starts_with("# Shop prod\n"), "{note}");
    assert!(note.contains("## Freight f1 (from app)"), "{note}");
    assert!(
        note.contains(&format!("- image registry.example/web:2.0.0@{digest}")),
        "{note}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_step_renders_a_manifest_with_the_stage_values_the_image_and_its_commit() {
    let dir = tempfile::tempdir().expect("a dir");
    let wasm = dir.path().join("render.wasm");
    build_python_step(&wasm);

    let (_registry, daemon, reference) = published(&wasm, "render").await;

    let digest = "sha256:00000000000000000000000000000000000000000000000000000000000000aa";
    let steps = format!(
        "- uses: {reference}\n  as: render\n  vars: [{{name: replicas, value: \"3\"}}]\n  config:\n    output: deploy.yaml\n    inline: \"replicas: $replicas\\nimage: $image@$digest\\ncommit: $commit\\nstage: $stage\\n\"\n    values: {{replicas: \"${{{{ vars.replicas }}}}\"}}"
    );
    let manifests = format!(
        "{}{}{}",
        manifests::project("shop", &["image: {repoURL: registry.example/web}"]),
        manifests::stage("shop", "uat", &steps),
        manifests::freight(
            "shop",
            "f1",
            &format!(
                "images: [{{repoURL: registry.example/web, tag: 1.4.0, digest: \"{digest}\", annotations: {{org.opencontainers.image.revision: 5f2c9e1}}}}]"
            ),
        ),
    );
    daemon.apply_ok(&manifests).await;
    let promoted = daemon.promote("shop", "uat", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");

    let list = daemon.get_json("/v1/projects/shop/promotions").await;
    let promotion = &list["items"][0];
    let rendered = promotion["status"]["state"]["render"]["rendered"]
        .as_str()
        .unwrap_or_else(|| panic!("no rendered output: {promotion:#}"));
    assert_eq!(
        rendered,
        format!("replicas: 3\nimage: registry.example/web@{digest}\ncommit: 5f2c9e1\nstage: uat\n")
    );
    // The example pipeline that uses it reads as Dray (and Kargo) manifests.
    let example = repo_root().join("examples/render-step-python/pipeline.yaml");
    let checked = daemon.cli(&["apply", "--dry-run", "-f", &example.display().to_string()]);
    assert_eq!(checked.code, 0, "{checked:?}");
    let step = &promotion["status"]["stepExecutionMetadata"][0];
    assert!(
        step["plugin"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&reference),
        "{step:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_pipeline_renders_each_stage_with_its_values_and_pushes_it() {
    use dray_tests::git::{GitHttp, Repos};
    let dir = tempfile::tempdir().expect("a dir");
    let wasm = dir.path().join("render.wasm");
    build_python_step(&wasm);
    let (registry, daemon, _) = published(&wasm, "render").await;
    let host = registry.address.clone();
    let digest = registry
        .push(
            "shop/web",
            "1.0.0",
            "web 1.0.0",
            &[("org.opencontainers.image.revision", "5f2c9e1")],
        )
        .await;

    // The GitOps repository holds the service's template, as the example's README says.
    let example = repo_root().join("examples/render-step-python");
    let template = std::fs::read_to_string(example.join("deploy.yaml.tmpl")).expect("the template");
    let repos = Repos::new();
    repos.create("gitops.git", &[("web/deploy.yaml.tmpl", &template)]);
    let http = GitHttp::start(&repos, "gituser:gitpass");
    let gitops = format!("{}/gitops.git", http.url);

    // The example pipeline, unchanged but for where its registry and repository are.
    let pipeline = std::fs::read_to_string(example.join("pipeline.yaml"))
        .expect("the example")
        .replace("registry.acme.internal", &host)
        .replace("https://git.acme.internal/shop/gitops.git", &gitops);
    let secret = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: gitops\n  namespace: shop\n  labels: {{kargo.akuity.io/cred-type: git}}\nstringData:\n  repoURL: '{gitops}'\n  username: gituser\n  password: gitpass\n"
    );
    daemon.apply_ok(&(pipeline + &secret)).await;
    let refreshed = daemon.refresh("shop", "web");
    assert_eq!(refreshed.code, 0, "{refreshed:?}");
    let freight = daemon.freight("shop");
    let name = freight[0]["metadata"]["name"]
        .as_str()
        .expect("a Freight")
        .to_string();

    for (stage, replicas) in [("test", 1), ("prod", 6)] {
        let promoted = daemon.promote("shop", stage, &name);
        if promoted.code != 0 {
            let promotion = promoted
                .stdout
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let logs = daemon.cli(&["logs", "promotion", &promotion, "-p", "shop"]);
            panic!("{stage}: {promoted:?}\nits log:\n{}", logs.stdout);
        }
        let rendered = repos.show("gitops.git", &format!("stage/{stage}"), "web/deploy.yaml");
        for expected in [
            format!("replicas: {replicas}"),
            format!("image: {host}/shop/web@{digest}"),
            "commit: \"5f2c9e1\"".to_string(),
            format!("stage: {stage}"),
        ] {
            assert!(
                rendered.contains(&expected),
                "{stage}: {expected:?} in\n{rendered}"
            );
        }
        assert_eq!(
            repos.subjects("gitops.git", &format!("stage/{stage}"))[0],
            format!("web 1.0.0 into {stage}")
        );
    }
}
