//! `argocd-update` end to end: the seed's promotion (clone, render, commit, push, then
//! `argocd-update` with `desiredCommitFromStep: commit`) and its Job verification against a real
//! kube-apiserver with Argo CD's `Application` CRD, through a daemon whose config names the
//! cluster; the Stage's health from a watch.
//!
//! No Argo CD controller can run here, so `dray_tests::standins::ArgoCd` plays exactly its
//! documented part (the revision resolved in the real Git repository). Everything Dray wrote is
//! checked as the API server stored it.

use std::sync::Arc;
use std::time::Duration;

use dray::clusters::ClusterConfig;
use dray_tests::Daemon;
use dray_tests::git::{GitDaemon, Repos};
use dray_tests::kube::{DRAY_TOKEN, FakeKubelet, KubeCluster};
use dray_tests::standins::{ArgoCd, JobController, Outcome};
use serde_json::{Value, json};

const APP: &str = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/shop-test";

/// The stand-in for Argo CD on `shop-test`, resolving revisions in the GitOps repository.
fn argocd(s: &Setup, outcome: Outcome) -> ArgoCd {
    let repos = s.repos.clone();
    ArgoCd::start(
        s.cluster.clone(),
        APP,
        move |source| resolve(&repos, source),
        outcome,
    )
}

/// A source's revision as Argo CD resolves it: a chart's version as written, a Git branch's
/// commit in the GitOps repository.
fn resolve(repos: &Repos, source: &Value) -> String {
    let target = source["targetRevision"].as_str().unwrap_or("HEAD");
    if source["chart"].is_string() {
        return target.to_string();
    }
    dray_tests::git::git(&repos.root.join("app.git"), &["rev-parse", target])
}

struct Setup {
    cluster: Arc<KubeCluster>,
    repos: Arc<Repos>,
    _git: GitDaemon,
    daemon: Daemon,
    repo_url: String,
    kubelet: Option<Arc<FakeKubelet>>,
}

/// A cluster with namespace `argocd` where user `dray` may get, list, watch and patch
/// Applications, the
/// Application `shop-test` (annotated with `annotation` if given) tracking `stage/test` of the
/// GitOps repository, and a daemon whose config lets project `shop` use the cluster there;
/// the seed's pipeline applied, its `argocd-update` step with `retry`.
async fn setup(annotation: Option<&str>, retry: &str) -> Setup {
    setup_with(annotation, retry, &["get", "list", "watch", "patch"], false).await
}

/// [`setup`], with user `dray` granted only `verbs` on Applications; with `verify`, Stage `test`
/// is verified by the seed's AnalysisTemplate (a Job in namespace `shop`, which the config then
/// opens to the project, where `dray` may run Jobs and read pods and their logs, on a node with
/// a stand-in kubelet).
async fn setup_with(annotation: Option<&str>, retry: &str, verbs: &[&str], verify: bool) -> Setup {
    let cluster = Arc::new(KubeCluster::start().await);
    cluster.namespace("argocd").await;
    cluster.install_application_crd().await;
    cluster
        .grant_dray("argocd", "argoproj.io", &["applications"], verbs)
        .await;
    let repos = Arc::new(Repos::new());
    let commit = repos.create(
        "app.git",
        &[
            ("base/kustomization.yaml", "resources: [deployment.yaml]\n"),
            (
                "base/deployment.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers:\n      - {name: web, image: registry.example/web:1.0.0}\n",
            ),
            ("stages/test/kustomization.yaml", "resources: [../../base]\n"),
        ],
    );
    let git = GitDaemon::start(&repos);
    let mut namespaces = vec!["argocd".to_string()];
    let mut kubelet = None;
    if verify {
        cluster.namespace("shop").await;
        cluster
            .grant_dray(
                "shop",
                "batch",
                &["jobs"],
                &["get", "create", "patch", "delete"],
            )
            .await;
        cluster
            .grant_dray("shop", "", &["pods", "pods/log"], &["get", "list"])
            .await;
        kubelet = Some(Arc::new(cluster.fake_node("node-1").await));
        namespaces.push("shop".into());
    }
    let repo_url = format!("{}/app.git", git.url);
    let annotations = annotation
        .map(|a| json!({"kargo.akuity.io/authorized-stage": a}))
        .unwrap_or_else(|| json!({}));
    cluster
        .ok(
            "POST",
            "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications",
            Some(json!({
                "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                "metadata": {"name": "shop-test", "annotations": annotations},
                "spec": {
                    "project": "default",
                    "source": {"repoURL": repo_url, "targetRevision": "stage/test", "path": "."},
                    "destination": {"server": "https://kubernetes.default.svc", "namespace": "shop"},
                    "syncPolicy": {"syncOptions": ["CreateNamespace=true"]},
                },
            })),
        )
        .await;
    let config = dray::Config {
        clusters: [(
            "test".to_string(),
            ClusterConfig {
                kubeconfig: Some(cluster.kubeconfig(DRAY_TOKEN)),
                projects: vec!["shop".into()],
                namespaces,
                ..ClusterConfig::default()
            },
        )]
        .into(),
        ..dray::Config::default()
    };
    let daemon = Daemon::start_with_config(config)
        .await
        .expect("the daemon starts");
    let steps = format!(
        "{}\n- uses: argocd-update\n  retry: {retry}\n  config:\n    apps:\n    - name: shop-test\n      sources:\n      - repoURL: \"{repo_url}\"\n        desiredCommitFromStep: commit\n",
        dray_tests::manifests::canonical_steps(&repo_url)
    );
    let manifests = format!(
        "{}{}{}",
        dray_tests::manifests::project(
            "shop",
            &[
                &format!("git: {{repoURL: \"{repo_url}\"}}"),
                "image: {repoURL: registry.example/web}",
            ]
        ),
        dray_tests::manifests::stage("shop", "test", &steps)
            + &if verify {
                verification()
            } else {
                String::new()
            },
        dray_tests::manifests::freight(
            "shop",
            "first",
            &format!(
                "commits:\n- repoURL: \"{repo_url}\"\n  id: {commit}\nimages:\n- repoURL: registry.example/web\n  tag: 1.1.0\n"
            )
        ),
    );
    daemon.apply_ok(&manifests).await;
    Setup {
        cluster,
        repos,
        _git: git,
        daemon,
        repo_url,
        kubelet,
    }
}

/// The Stage's verification by the seed's AnalysisTemplate (the example's file, in project
/// `shop`).
fn verification() -> String {
    let template = include_str!("../../examples/kargo-demo/05-analysis-template.yaml")
        .replace("namespace: kargo-demo", "namespace: shop");
    format!("  verification:\n    analysisTemplates: [{{name: kargo-demo}}]\n---\n{template}")
}

/// The Promotion of Stage `test` (there is one).
fn promotion(daemon: &Daemon) -> Value {
    let out = daemon.cli(&["get", "promotions", "-p", "shop", "-o", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let list: Value = serde_json::from_str(&out.stdout).expect("json");
    list["items"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_pipeline_syncs_the_application_and_verifies_it_with_a_job() {
    let s = setup_with(
        Some("shop:test"),
        "{timeout: 2m}",
        &["get", "list", "watch", "patch"],
        true,
    )
    .await;
    let argocd = argocd(&s, Outcome::Healthy);
    let _jobs = JobController::start(
        s.cluster.clone(),
        s.kubelet.clone().expect("a node"),
        "shop",
        true,
    );

    let out = s.daemon.promote("shop", "test", "first");
    assert_eq!(out.code, 0, "{out:?}");
    let promotion = promotion(&s.daemon);
    let status = &promotion["status"];
    assert_eq!(status["phase"], "Succeeded", "{promotion}");

    // Dray asked for exactly one sync, as Kargo does: marked with the Promotion, with the
    // Application's sync options.
    let name = promotion["metadata"]["name"].as_str().expect("a name");
    let operations = argocd.operations();
    assert_eq!(operations.len(), 1, "{operations:?}");
    let operation = &operations[0];
    assert!(
        operation["info"]
            .as_array()
            .expect("info")
            .contains(&json!({"name": "kargo.akuity.io/promotion", "value": name})),
        "{operation}"
    );
    assert_eq!(
        operation["sync"]["syncOptions"],
        json!(["CreateNamespace=true"])
    );

    // As the API server stored it: the hard refresh asked for, the source unchanged (nothing
    // asked to move it), synced to the commit git-push left on stage/test.
    let app = s.cluster.ok("GET", APP, None).await;
    assert_eq!(
        app["metadata"]["annotations"]["argocd.argoproj.io/refresh"],
        "hard"
    );
    assert_eq!(app["spec"]["source"]["repoURL"], s.repo_url.as_str());
    assert_eq!(app["spec"]["source"]["targetRevision"], "stage/test");
    let pushed = status["state"]["commit"]["commit"]
        .as_str()
        .expect("git-commit's output");
    assert_eq!(app["status"]["sync"]["revision"], pushed);
    let step = status["state"]["step-7"]["apps"][0].clone();
    assert_eq!(step["name"], "shop-test");
    assert_eq!(step["namespace"], "argocd");
    assert_eq!(step["desiredRevisions"], json!([pushed]));

    // The step's log says what it did to the cluster.
    let logs = s.daemon.cli(&["logs", "promotion", name, "-p", "shop"]);
    assert!(
        logs.stdout
            .contains("kube patch Application argocd/shop-test"),
        "{}",
        logs.stdout
    );

    // The Stage's health follows the app from a watch: Healthy now, shown by `dray get
    // stages`, and Unhealthy, with Argo CD's message, within seconds of the app degrading.
    let health = stage_health(&s.daemon, "Healthy").await;
    assert_eq!(
        health["output"]["applicationStatuses"][0]["sync"]["revision"],
        pushed
    );
    let table = s.daemon.cli(&["get", "stages", "-p", "shop"]);
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert!(
        rows.len() == 2 && rows[0].contains("HEALTH") && rows[1].contains(" Healthy "),
        "{}",
        table.stdout
    );
    // The seed's Job verified the Stage, and its tests' output is in the verification log.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stage = s.daemon.get_json("/v1/projects/shop/stages/test").await;
        let phase = stage["status"]["freightHistory"][0]["verificationHistory"][0]["phase"].clone();
        if phase == "Successful" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && phase != "Failed" && phase != "Error",
            "the verification: {stage}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs = s
        .daemon
        .cli(&["logs", "verification", "test", "-p", "shop"]);
    assert!(
        logs.stdout.contains("PASS test_checkout")
            && logs.stdout.contains("measurement: successful"),
        "{}",
        logs.stdout
    );

    drop(argocd);
    s.cluster
        .ok(
            "PATCH",
            APP,
            Some(json!({"status": {"health": {"status": "Degraded", "message": "Back-off pulling image"}}})),
        )
        .await;
    let health = stage_health(&s.daemon, "Unhealthy").await;
    let issue = health["issues"][0].as_str().unwrap_or_default();
    assert!(
        issue.contains("has health state \"Degraded\": Back-off pulling image"),
        "{health}"
    );
}

/// Waits (at most 20 s) until Stage `test` has health `state`: its `status.health`.
async fn stage_health(daemon: &Daemon, state: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stage = daemon.get_json("/v1/projects/shop/stages/test").await;
        let health = stage["status"]["health"].clone();
        if health["status"] == state {
            return health;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Stage's health is not {state} after 20 s: {health}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_did_not_consent_is_left_alone_and_the_message_says_how() {
    let s = setup(None, "{timeout: 2m}").await;
    let _argocd = argocd(&s, Outcome::Healthy);
    let out = s.daemon.promote("shop", "test", "first");
    let promotion = promotion(&s.daemon);
    assert_eq!(promotion["status"]["phase"], "Failed", "{out:?}");
    let message = promotion["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(
            "does not permit changes by Stage \"test\" of project \"shop\": add the annotation `kargo.akuity.io/authorized-stage: shop:test`"
        ),
        "{message}"
    );
    let app = s.cluster.ok("GET", APP, None).await;
    assert!(app.get("operation").is_none(), "no sync was asked: {app}");
    assert!(
        app["metadata"]["annotations"]
            .get("argocd.argoproj.io/refresh")
            .is_none(),
        "{app}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_application_fails_the_step_at_its_timeout_with_the_apps_health() {
    let s = setup(Some("shop:test"), "{timeout: 4s}").await;
    let _argocd = argocd(&s, Outcome::Degraded);
    let _ = s.daemon.promote("shop", "test", "first");
    let promotion = promotion(&s.daemon);
    assert_eq!(promotion["status"]["phase"], "Failed", "{promotion}");
    let message = promotion["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("still running after its retry.timeout of 4s")
            && message.contains("is synced but Degraded")
            && message.contains("exceeded its progress deadline"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nobody_syncing_the_step_times_out_saying_it_waited_for_the_sync() {
    let s = setup(Some("shop:test"), "{timeout: 3s}").await;
    let _ = s.daemon.promote("shop", "test", "first");
    let promotion = promotion(&s.daemon);
    assert_eq!(promotion["status"]["phase"], "Failed", "{promotion}");
    let message = promotion["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("still running after its retry.timeout of 3s")
            && message
                .contains("Argo CD Application \"shop-test\" in namespace \"argocd\" is syncing"),
        "{message}"
    );
    // The sync was requested and is still there for Argo CD to pick up.
    let app = s.cluster.ok("GET", APP, None).await;
    assert!(app["operation"]["sync"].is_object(), "{app}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_watch_on_applications_the_stage_health_says_which_permission_is_missing() {
    let s = setup_with(
        Some("shop:test"),
        "{timeout: 2m}",
        &["get", "list", "patch"],
        false,
    )
    .await;
    let _argocd = argocd(&s, Outcome::Healthy);
    let out = s.daemon.promote("shop", "test", "first");
    assert_eq!(out.code, 0, "the step needs no watch: {out:?}");
    let health = stage_health(&s.daemon, "Unknown").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut health = health;
    while !health["issues"].to_string().contains("cannot be watched") {
        assert!(std::time::Instant::now() < deadline, "{health}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        health = stage_health(&s.daemon, "Unknown").await;
    }
    let issue = health["issues"][0].as_str().unwrap_or_default();
    assert!(
        issue.contains("the Applications of namespace \"argocd\" cannot be watched")
            && issue.contains("lacks this permission: grant it with RBAC"),
        "{health}"
    );
    assert!(
        !issue.contains("dray-token"),
        "no credential in an issue: {issue}"
    );
    // As Kargo, a Stage that is not Healthy does not verify what it holds: the Freight is in
    // the Stage, not verified there, so no Stage downstream may take it.
    let stage = s.daemon.get_json("/v1/projects/shop/stages/test").await;
    assert_eq!(
        stage["status"]["freightHistory"][0]["awaitingHealth"], true,
        "{stage}"
    );
    let freight = &s.daemon.freight("shop")[0];
    assert!(
        freight["status"]["currentlyIn"]["test"].is_object(),
        "{freight}"
    );
    assert!(
        freight["status"]["verifiedIn"].get("test").is_none(),
        "{freight}"
    );
}

/// Kargo's other ways to point an app: a chart source moved to a version
/// (`updateTargetRevision`), Helm parameters and Kustomize images from the Freight, on an
/// Application with several sources; everything else of the app kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_source_app_gets_its_chart_version_helm_parameters_and_kustomize_images() {
    let s = setup(Some("shop:test"), "{timeout: 2m}").await;
    const LIVE: &str = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/shop-live";
    s.cluster
        .ok(
            "POST",
            "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications",
            Some(json!({
                "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                "metadata": {"name": "shop-live", "annotations": {"kargo.akuity.io/authorized-stage": "shop:live"}},
                "spec": {"project": "default", "sources": [
                    {"repoURL": "https://charts.example/stable", "chart": "web", "targetRevision": "1.0.0",
                     "helm": {"parameters": [{"name": "image.tag", "value": "1.0.0"}, {"name": "replicas", "value": "3"}]}},
                    {"repoURL": s.repo_url, "targetRevision": "main", "path": "stages/test"},
                ]},
            })),
        )
        .await;
    let repos = s.repos.clone();
    let _live = ArgoCd::start(
        s.cluster.clone(),
        LIVE,
        move |source| resolve(&repos, source),
        Outcome::Healthy,
    );
    let tag = "${{ imageFrom('registry.example/web').Tag }}";
    let steps = format!(
        "- uses: argocd-update\n  config:\n    apps:\n    - name: shop-live\n      sources:\n      - repoURL: https://charts.example/stable\n        chart: web\n        desiredRevision: \"1.2.0\"\n        updateTargetRevision: true\n        helm:\n          images:\n          - key: image.tag\n            value: \"{tag}\"\n      - repoURL: \"{}\"\n        kustomize:\n          images:\n          - repoURL: registry.example/web\n            tag: \"{tag}\"\n",
        s.repo_url
    );
    s.daemon
        .apply_ok(&dray_tests::manifests::stage("shop", "live", &steps))
        .await;
    let out = s.daemon.promote("shop", "live", "first");
    assert_eq!(out.code, 0, "{out:?}");

    let app = s.cluster.ok("GET", LIVE, None).await;
    let sources = &app["spec"]["sources"];
    assert_eq!(sources[0]["targetRevision"], "1.2.0", "{app}");
    assert_eq!(
        sources[0]["helm"]["parameters"],
        json!([{"name": "image.tag", "value": "1.1.0"}, {"name": "replicas", "value": "3"}])
    );
    assert_eq!(sources[1]["targetRevision"], "main");
    assert_eq!(sources[1]["path"], "stages/test");
    assert_eq!(
        sources[1]["kustomize"]["images"],
        json!(["registry.example/web:1.1.0"])
    );
    let main = dray_tests::git::git(&s.repos.root.join("app.git"), &["rev-parse", "main"]);
    assert_eq!(
        app["status"]["operationState"]["syncResult"]["revisions"],
        json!(["1.2.0", main])
    );
    let stage = s.daemon.get_json("/v1/projects/shop/stages/live").await;
    assert_eq!(
        stage["status"]["healthChecks"][0]["input"]["apps"][0]["desiredRevisions"],
        json!(["1.2.0", ""]),
        "{stage}"
    );
}

/// Kargo's quickstart, as a Kargo user writes it (its structure and steps; local servers and
/// names instead of GitHub and a public registry): a Secret with the GitOps repository's
/// credentials, an image Warehouse, a PromotionTask that clones, clears, sets the image,
/// renders, commits and pushes, and points the Stage's Argo CD Application at the commit (read
/// through `task.outputs`), and three Stages test → uat → prod using it. Each promotion runs
/// and each Application is synced to the commit its Stage's branch got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kargos_quickstart_applies_and_promotes_through_three_stages() {
    let cluster = Arc::new(KubeCluster::start().await);
    cluster.namespace("argocd").await;
    cluster.install_application_crd().await;
    cluster
        .grant_dray(
            "argocd",
            "argoproj.io",
            &["applications"],
            &["get", "list", "watch", "patch"],
        )
        .await;
    let repos = Arc::new(Repos::new());
    repos.create(
        "kargo-demo-gitops.git",
        &[
            ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
            (
                "base/deploy.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: nginx}\nspec:\n  template:\n    spec:\n      containers:\n      - {name: nginx, image: registry.example/nginx/nginx:1.28.0}\n",
            ),
            ("stages/test/kustomization.yaml", "resources: [../../base]\nnamespace: kargo-demo-test\n"),
            ("stages/uat/kustomization.yaml", "resources: [../../base]\nnamespace: kargo-demo-uat\n"),
            ("stages/prod/kustomization.yaml", "resources: [../../base]\nnamespace: kargo-demo-prod\n"),
        ],
    );
    let git = dray_tests::git::GitHttp::start(&repos, "octocat:ghp_quickstart");
    let gitops = format!("{}/kargo-demo-gitops.git", git.url);
    let mut controllers = Vec::new();
    for stage in ["test", "uat", "prod"] {
        cluster
            .ok(
                "POST",
                "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications",
                Some(json!({
                    "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                    "metadata": {"name": format!("kargo-demo-{stage}"),
                        "annotations": {"kargo.akuity.io/authorized-stage": format!("kargo-demo:{stage}")}},
                    "spec": {
                        "project": "default",
                        "source": {"repoURL": gitops, "targetRevision": format!("stage/{stage}"), "path": "."},
                        "destination": {"server": "https://kubernetes.default.svc", "namespace": format!("kargo-demo-{stage}")},
                        "syncPolicy": {"syncOptions": ["CreateNamespace=true"]},
                    },
                })),
            )
            .await;
        let repos = repos.clone();
        controllers.push(ArgoCd::start(
            cluster.clone(),
            &format!(
                "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/kargo-demo-{stage}"
            ),
            move |source| {
                let target = source["targetRevision"].as_str().unwrap_or("HEAD");
                dray_tests::git::git(
                    &repos.root.join("kargo-demo-gitops.git"),
                    &["rev-parse", target],
                )
            },
            Outcome::Healthy,
        ));
    }
    let config = dray::Config {
        clusters: [(
            "default".to_string(),
            ClusterConfig {
                kubeconfig: Some(cluster.kubeconfig(DRAY_TOKEN)),
                projects: vec!["kargo-demo".into()],
                namespaces: vec!["argocd".into()],
                ..ClusterConfig::default()
            },
        )]
        .into(),
        ..dray::Config::default()
    };
    let daemon = Daemon::start_with_config(config)
        .await
        .expect("the daemon starts");

    let stage = |name: &str, sources: &str| {
        format!(
            "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata:\n  name: {name}\n  namespace: kargo-demo\n\
             spec:\n  requestedFreight:\n  - origin:\n      kind: Warehouse\n      name: kargo-demo\n    sources:\n{sources}\n\
             \x20 promotionTemplate:\n    spec:\n      steps:\n      - task:\n          name: demo-promo-process\n        as: promo-process\n"
        )
    };
    let manifests = format!(
        r#"apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: kargo-demo
---
apiVersion: v1
kind: Secret
type: Opaque
metadata:
  name: kargo-demo-repo
  namespace: kargo-demo
  labels:
    kargo.akuity.io/cred-type: git
stringData:
  repoURL: {gitops}
  username: octocat
  password: ghp_quickstart
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: kargo-demo
  namespace: kargo-demo
spec:
  freightCreationPolicy: Manual
  subscriptions:
  - image:
      repoURL: registry.example/nginx/nginx
      constraint: ^1.29.0
      discoveryLimit: 5
---
apiVersion: kargo.akuity.io/v1alpha1
kind: PromotionTask
metadata:
  name: demo-promo-process
  namespace: kargo-demo
spec:
  vars:
  - name: gitopsRepo
    value: {gitops}
  - name: imageRepo
    value: registry.example/nginx/nginx
  steps:
  - uses: git-clone
    config:
      repoURL: ${{{{ vars.gitopsRepo }}}}
      checkout:
      - branch: main
        path: ./src
      - branch: stage/${{{{ ctx.stage }}}}
        create: true
        path: ./out
  - uses: git-clear
    config:
      path: ./out
  - uses: kustomize-set-image
    as: update
    config:
      path: ./src/base
      images:
      - image: ${{{{ vars.imageRepo }}}}
        tag: ${{{{ imageFrom(vars.imageRepo).Tag }}}}
  - uses: kustomize-build
    config:
      path: ./src/stages/${{{{ ctx.stage }}}}
      outPath: ./out
  - uses: git-commit
    as: commit
    config:
      path: ./out
      message: ${{{{ task.outputs.update.commitMessage }}}}
  - uses: git-push
    config:
      path: ./out
  - uses: argocd-update
    config:
      apps:
      - name: kargo-demo-${{{{ ctx.stage }}}}
        sources:
        - repoURL: ${{{{ vars.gitopsRepo }}}}
          desiredRevision: ${{{{ task.outputs.commit.commit }}}}
{}{}{}---
apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata:
  name: ignored
  namespace: kargo-demo
alias: nginx-1-29-1
origin: {{kind: Warehouse, name: kargo-demo}}
images:
- {{repoURL: registry.example/nginx/nginx, tag: 1.29.1, digest: "sha256:1291"}}
"#,
        stage("test", "      direct: true"),
        stage("uat", "      stages:\n      - test"),
        stage("prod", "      stages:\n      - uat"),
    );
    daemon.apply_ok(&manifests).await;

    for (i, stage) in ["test", "uat", "prod"].iter().enumerate() {
        let out = daemon.promote("kargo-demo", stage, "nginx-1-29-1");
        assert_eq!(out.code, 0, "{stage}: {out:?}");
        let rendered = repos.show(
            "kargo-demo-gitops.git",
            &format!("stage/{stage}"),
            // Kargo's file names: [namespace-]kind-name.yaml.
            &format!("kargo-demo-{stage}-deployment-nginx.yaml"),
        );
        assert!(
            rendered.contains("image: registry.example/nginx/nginx:1.29.1")
                && rendered.contains(&format!("namespace: kargo-demo-{stage}")),
            "{stage}: {rendered}"
        );
        let head = dray_tests::git::git(
            &repos.root.join("kargo-demo-gitops.git"),
            &["rev-parse", &format!("stage/{stage}")],
        );
        assert_eq!(controllers[i].operations().len(), 1, "{stage}: one sync");
        let app = cluster
            .ok(
                "GET",
                &format!(
                    "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/kargo-demo-{stage}"
                ),
                None,
            )
            .await;
        assert_eq!(app["status"]["sync"]["revision"], head, "{stage}: {app:#}");
        // With no verification of its own, the Freight counts as verified in the Stage once
        // the Stage is healthy (its Application, watched), as in Kargo; the next Stage waits
        // for that.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let freight = daemon.freight("kargo-demo");
            if freight[0]["status"]["verifiedIn"].get(stage).is_some() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never verified in {stage}: {freight:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
