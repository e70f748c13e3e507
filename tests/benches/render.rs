//! Rendering manifests: Dray's `helm-template` step (the component loaded once, as the daemon
//! keeps it) next to `helm template` (v3.6.2) on the same chart, for the `helm create` chart and
//! a chart of 40 templates; and its `kustomize-build` next to `kubectl kustomize` on an overlay
//! of 20 resources.
//!
//!     cargo bench -p dray-tests --bench render

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use dray::runtime::{BUILTIN_PLUGINS, Grants, Limits, Runtime, StepContext};

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
        .find(|(n, _)| *n == "steps")
        .expect("the built-in steps");
    let plugin = runtime
        .load("steps", bytes.to_vec(), &Grants::all())
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
        let a = dray_tests::report(&format!("Dray helm-template, {chart} chart (warm)"), ours);
        let b = dray_tests::report(&format!("helm template 3.6.2, {chart} chart"), theirs);
        println!("| → Dray is {:.1}× faster | | | |", b / a);
    }

    overlay(&work.path().join("kust"));
    let kustomize = &plugin;
    let config = serde_json::json!({"path": "kust/overlay", "outPath": "out/kust.yaml"});
    let mut ours = Vec::new();
    for i in 0..25 {
        let started = Instant::now();
        let report = kustomize
            .run(
                "kustomize-build",
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
        let out = Command::new("kubectl")
            .args(["kustomize", "kust/overlay"])
            .current_dir(work.path())
            .output()
            .expect("kubectl");
        assert!(out.status.success());
        theirs.push(started.elapsed());
    }
    let rendered = std::fs::read_to_string(work.path().join("out/kust.yaml")).expect("output");
    assert_eq!(rendered.matches("\n---\n").count() + 1, 20, "{rendered}");
    let a = dray_tests::report("Dray kustomize-build, 20-resource overlay (warm)", ours);
    let b = dray_tests::report("kubectl kustomize (v1.32), 20-resource overlay", theirs);
    println!("| → Dray is {:.1}× faster | | | |", b / a);
}

/// A base of 6 Deployments and 6 Services, and an overlay adding 4 ConfigMaps from a generator
/// and literals, 2 Secrets, a ServiceAccount and a Namespace: 20 resources, with a namespace,
/// a prefix, labels, annotations, images, replicas, a strategic-merge and a JSON 6902 patch.
fn overlay(dir: &Path) {
    std::fs::create_dir_all(dir.join("base")).expect("mkdir");
    std::fs::create_dir_all(dir.join("overlay")).expect("mkdir");
    let mut base = String::new();
    for i in 0..6 {
        base.push_str(&format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: svc{i}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: svc{i}}}\n  template:\n    metadata:\n      labels: {{app: svc{i}}}\n    spec:\n      containers:\n      - name: app\n        image: shop/svc{i}:1.0.0\n        envFrom:\n        - configMapRef: {{name: settings}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc{i}\nspec:\n  selector: {{app: svc{i}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
        ));
    }
    std::fs::write(dir.join("base/all.yaml"), base).expect("write");
    std::fs::write(
        dir.join("base/kustomization.yaml"),
        "resources: [all.yaml]\nconfigMapGenerator:\n- name: settings\n  literals: [LEVEL=info]\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("overlay/extra.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: runner}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("overlay/kustomization.yaml"),
        "resources: [../base, extra.yaml]\nnamespace: shop-prod\nnamePrefix: prod-\ncommonLabels: {env: prod}\ncommonAnnotations: {team: shop}\nimages:\n- name: shop/svc0\n  newTag: 2.0.0\nreplicas:\n- name: svc1\n  count: 3\nconfigMapGenerator:\n- name: settings\n  behavior: merge\n  literals: [LEVEL=warn]\n- {name: a, literals: [x=1]}\n- {name: b, literals: [y=2]}\n- {name: c, literals: [z=3]}\nsecretGenerator:\n- {name: s1, literals: [p=q]}\n- {name: s2, literals: [r=s]}\npatches:\n- patch: |-\n    apiVersion: apps/v1\n    kind: Deployment\n    metadata: {name: svc2}\n    spec:\n      template:\n        spec:\n          containers:\n          - name: app\n            resources: {limits: {cpu: 500m}}\n- target: {kind: Service, name: svc3}\n  patch: |-\n    - op: replace\n      path: /spec/ports/0/port\n      value: 8080\n",
    )
    .expect("write");
}
