//! Steps written in other languages than Rust, built with their ecosystem's tools against
//! `wit/plugin.wit`, published with `dray plugin push` to a real registry and run by reference in
//! a promotion: `examples/render-step-python` (componentize-py).

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_step_renders_a_manifest_with_the_stage_values_the_image_and_its_commit() {
    let dir = tempfile::tempdir().expect("a dir");
    let wasm = dir.path().join("render.wasm");
    build_python_step(&wasm);

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
    let reference = format!("oci://{}/steps/render:1.0.0", registry.address);
    let pushed = daemon.cli(&["plugin", "push", &reference, &wasm.display().to_string()]);
    assert_eq!(pushed.code, 0, "{pushed:?}");

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
    let step = &promotion["status"]["stepExecutionMetadata"][0];
    assert!(
        step["plugin"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&reference),
        "{step:#}"
    );
}
