//! The seed's AnalysisTemplate with the `job` provider, unchanged, verifying a Stage against a
//! real kube-apiserver: Dray creates the Job, follows its pod's log into the verification log
//! while it runs, judges the Job as Argo Rollouts does, and deletes it; the log stays readable
//! with `dray logs verification` after the pod is gone.
//!
//! No Job controller, scheduler or kubelet can run here, so `dray_tests::standins::JobController`
//! plays exactly their documented parts (the pod, its output through a stand-in kubelet, the
//! pod's and the Job's status).

use std::sync::Arc;
use std::time::Duration;

use dray::clusters::ClusterConfig;
use dray_tests::Daemon;
use dray_tests::kube::{DRAY_TOKEN, FakeKubelet, KubeCluster};
use dray_tests::standins::JobController;
use serde_json::Value;

const JOBS: &str = "/apis/batch/v1/namespaces/kargo-demo/jobs";

/// The seed's template, unchanged (the example's file).
const TEMPLATE: &str = include_str!("../../examples/kargo-demo/05-analysis-template.yaml");

struct Setup {
    cluster: Arc<KubeCluster>,
    kubelet: Arc<FakeKubelet>,
    daemon: Daemon,
}

/// A cluster whose namespace `kargo-demo` is open to project `kargo-demo`, where user `dray` may
/// run Jobs and read pods and their logs; a daemon with Stage `test` verified by the seed's
/// template, and Freight to promote into it.
async fn setup() -> Setup {
    let cluster = Arc::new(KubeCluster::start().await);
    cluster.namespace("kargo-demo").await;
    cluster
        .grant_dray(
            "kargo-demo",
            "batch",
            &["jobs"],
            &["get", "create", "patch", "delete"],
        )
        .await;
    cluster
        .grant_dray("kargo-demo", "", &["pods", "pods/log"], &["get", "list"])
        .await;
    let kubelet = Arc::new(cluster.fake_node("node-1").await);
    let config = dray::Config {
        clusters: [(
            "test".to_string(),
            ClusterConfig {
                kubeconfig: Some(cluster.kubeconfig(DRAY_TOKEN)),
                projects: vec!["kargo-demo".into()],
                namespaces: vec!["kargo-demo".into()],
                ..ClusterConfig::default()
            },
        )]
        .into(),
        ..dray::Config::default()
    };
    let daemon = Daemon::start_with_config(config)
        .await
        .expect("the daemon starts");
    let stage = dray_tests::manifests::stage(
        "kargo-demo",
        "test",
        "- uses: compose-output\n  config: {deployed: \"yes\"}",
    ) + "  verification:\n    analysisTemplates: [{name: kargo-demo}]\n";
    let manifests = format!(
        "{}---\n{TEMPLATE}{stage}{}",
        dray_tests::manifests::project("kargo-demo", &["image: {repoURL: registry.example/web}"]),
        dray_tests::manifests::freight(
            "kargo-demo",
            "first",
            "images:\n- {repoURL: registry.example/web, tag: \"1.0.0\"}"
        ),
    );
    daemon.apply_ok(&manifests).await;
    Setup {
        cluster,
        kubelet,
        daemon,
    }
}

/// Waits (at most 60 s) until Stage `test`'s verification has ended: the verification.
async fn verified(daemon: &Daemon) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stage = daemon.get_json("/v1/projects/kargo-demo/stages/test").await;
        let verification = stage["status"]["freightHistory"][0]["verificationHistory"][0].clone();
        if matches!(
            verification["phase"].as_str(),
            Some("Successful" | "Failed" | "Error")
        ) {
            return verification;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the verification did not end in 60 s: {verification}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_job_verifies_the_stage_and_its_log_stays_readable() {
    let s = setup().await;
    let _controller =
        JobController::start(s.cluster.clone(), s.kubelet.clone(), "kargo-demo", true);
    let out = s.daemon.promote("kargo-demo", "test", "first");
    assert_eq!(out.code, 0, "{out:?}");
    let verification = verified(&s.daemon).await;
    assert_eq!(verification["phase"], "Successful", "{verification}");

    // The Job ran its tests and is gone; their output is in the verification log.
    let jobs = s.cluster.ok("GET", JOBS, None).await;
    let left: Vec<&Value> = jobs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["metadata"]["deletionTimestamp"].is_null())
        .collect();
    assert!(left.is_empty(), "the Job is deleted: {jobs}");
    let logs = s
        .daemon
        .cli(&["logs", "verification", "test", "-p", "kargo-demo"]);
    assert_eq!(logs.code, 0, "{logs:?}");
    for line in [
        "running 3 integration tests",
        "PASS test_login",
        "PASS test_checkout",
        "PASS test_search",
        "measurement: successful",
    ] {
        assert!(logs.stdout.contains(line), "{line:?} in:\n{}", logs.stdout);
    }
    // Polling leaves no trace in the log: a long Job's output is not drowned by it.
    assert!(
        !logs.stdout.contains("kube get") && !logs.stdout.contains("kube list"),
        "{}",
        logs.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_fails_the_verification_and_its_log_says_which_test() {
    let s = setup().await;
    let _controller =
        JobController::start(s.cluster.clone(), s.kubelet.clone(), "kargo-demo", false);
    let out = s.daemon.promote("kargo-demo", "test", "first");
    assert_eq!(out.code, 0, "{out:?}");
    let verification = verified(&s.daemon).await;
    assert_eq!(verification["phase"], "Failed", "{verification}");
    let logs = s
        .daemon
        .cli(&["logs", "verification", "test", "-p", "kargo-demo"]);
    assert!(
        logs.stdout.contains("FAIL test_checkout")
            && logs
                .stdout
                .contains("Job has reached the specified backoff limit"),
        "{}",
        logs.stdout
    );
}
