//! Rendering a chart: Dray's `helm-template` step (the component loaded once, as the daemon keeps
//! it) next to `helm template` (v3.6.2) on the same chart, for the `helm create` chart and a
//! chart of 40 templates.
//!
//!     cargo bench -p dray-tests --bench helm

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dray::runtime::{BUILTIN_PLUGINS, Grants, Limits, Runtime, StepContext};

fn report(what: &str, mut times: Vec<Duration>) -> f64 {
    times.sort();
    let at =
        |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "| {what} | {} | {:.1} ms | {:.1} ms |",
        times.len(),
        at(0.5),
        at(0.99)
    );
    at(0.5)
}

/// A chart of `n` templates, each a Deployment, a Service and a ConfigMap using helpers,
/// `range`, `toYaml | nindent` and `include`.
fn big_chart(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    std::fs::write(
        dir.join("Chart.yaml"),
        "apiVersion: v2\nname: big\nversion: 1.0.0\nappVersion: \"2.0\"\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("values.yaml"),
        "image: {repository: shop/web, tag: \"\"}\nreplicas: 2\nenv: {A: \"1\", B: two, C: three}\nresources: {limits: {cpu: 100m, memory: 128Mi}}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("templates/_helpers.tpl"),
        "{{- define \"big.labels\" -}}\napp.kubernetes.io/name: {{ .Chart.Name }}\napp.kubernetes.io/instance: {{ .Release.Name }}\nhelm.sh/chart: {{ printf \"%s-%s\" .Chart.Name .Chart.Version }}\n{{- end }}\n",
    )
    .expect("write");
    for i in 0..n {
        std::fs::write(
            dir.join(format!("templates/svc{i}.yaml")),
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{{{ .Release.Name }}}}-svc{i}\n  labels:\n    {{{{- include \"big.labels\" . | nindent 4 }}}}\nspec:\n  replicas: {{{{ .Values.replicas }}}}\n  template:\n    spec:\n      containers:\n      - name: svc{i}\n        image: \"{{{{ .Values.image.repository }}}}:{{{{ .Values.image.tag | default .Chart.AppVersion }}}}\"\n        env:\n        {{{{- range $k, $v := .Values.env }}}}\n        - name: {{{{ $k }}}}\n          value: {{{{ $v | quote }}}}\n        {{{{- end }}}}\n        resources:\n          {{{{- toYaml .Values.resources | nindent 10 }}}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {{{{ .Release.Name }}}}-svc{i}\nspec:\n  ports: [{{port: 80}}]\n"
            ),
        )
        .expect("write");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let work = tempfile::tempdir().expect("a dir");
    let status = Command::new(dray_tests::helm::helm())
        .args(["create", "demo"])
        .current_dir(work.path())
        .status()
        .expect("helm runs (tests/run.sh installs it)");
    assert!(status.success());
    big_chart(&work.path().join("big"), 40);

    let runtime = Runtime::new(None).expect("a runtime");
    let (_, bytes) = BUILTIN_PLUGINS
        .iter()
        .find(|(n, _)| *n == "helm")
        .expect("the helm plugin");
    let plugin = runtime
        .load("helm", bytes.to_vec(), &Grants::all())
        .await
        .expect("loads");
    let context = StepContext {
        project: "shop".into(),
        stage: "prod".into(),
        promotion: String::new(),
        step_alias: "render".into(),
        freight: Vec::new(),
        vars: "{}".into(),
        outputs: "{}".into(),
    };
    println!("| What | Runs | Median | p99 |\n|---|---|---|---|");
    for chart in ["demo", "big"] {
        let config = serde_json::json!({"path": chart, "outPath": format!("out/{chart}.yaml"), "releaseName": "shop"});
        let mut ours = Vec::new();
        for i in 0..25 {
            let started = Instant::now();
            let report = plugin
                .run(
                    "helm-template",
                    &context,
                    &config,
                    work.path(),
                    &Limits::default(),
                )
                .await;
            if let Err(e) = &report.outcome {
                panic!("{e:?}");
            }
            if i > 0 {
                ours.push(started.elapsed());
            }
        }
        let mut theirs = Vec::new();
        for _ in 0..25 {
            let started = Instant::now();
            let out = Command::new(dray_tests::helm::helm())
                .args(["template", "shop", chart])
                .current_dir(work.path())
                .output()
                .expect("helm");
            assert!(out.status.success());
            theirs.push(started.elapsed());
        }
        let a = report(&format!("Dray helm-template, {chart} chart (warm)"), ours);
        let b = report(&format!("helm template 3.6.2, {chart} chart"), theirs);
        println!("| → Dray is {:.1}× faster | | | |", b / a);
    }
}
