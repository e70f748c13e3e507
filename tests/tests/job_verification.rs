//! The seed's AnalysisTemplate with the `job` provider, unchanged, verifying a Stage against a
//! real kube-apiserver: Dray creates the Job, follows its pod's log into the verification log
//! while it runs, judges the Job as Argo Rollouts does, and deletes it; the log stays readable
//! with `dray logs verification` after the pod is gone.
//!
//! No Job controller, scheduler or kubelet can run here, so [`JobController`] plays exactly
//! their documented parts for these tests: for each new Job it creates the Job's pod (its
//! template, labelled `job-name`, bound to a node), writes the container's output to the node's
//! stand-in kubelet (which the API server asks for the log), ends the container, and writes the
//! pod's and the Job's status (`succeeded` and `Complete`, or `failed` and `Failed`).

use std::sync::Arc;
use std::time::Duration;

use dray::clusters::ClusterConfig;
use dray_tests::Daemon;
use dray_tests::kube::{DRAY_TOKEN, FakeKubelet, KubeCluster};
use serde_json::{Value, json};

const JOBS: &str = "/apis/batch/v1/namespaces/kargo-demo/jobs";

/// The stand-in for the Job controller and the kubelet (see the file's doc).
struct JobController {
    task: tokio::task::JoinHandle<()>,
}

impl JobController {
    fn start(cluster: Arc<KubeCluster>, kubelet: Arc<FakeKubelet>, passes: bool) -> JobController {
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let jobs = cluster.ok("GET", JOBS, None).await;
                for job in jobs["items"].as_array().cloned().unwrap_or_default() {
                    let name = job["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if seen.contains(&name) {
                        continue;
                    }
                    seen.push(name.clone());
                    run(&cluster, &kubelet, &job, &name, passes).await;
                }
            }
        });
        JobController { task }
    }
}

impl Drop for JobController {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs Job `name` as the controller and the kubelet would, its tests passing or not.
async fn run(cluster: &KubeCluster, kubelet: &FakeKubelet, job: &Value, name: &str, passes: bool) {
    let pod = format!("{name}-x7k2p");
    let mut spec = job["spec"]["template"]["spec"].clone();
    spec["nodeName"] = json!(kubelet.node);
    let container = spec["containers"][0]["name"]
        .as_str()
        .unwrap_or("test")
        .to_string();
    cluster
        .ok(
            "POST",
            "/api/v1/namespaces/kargo-demo/pods",
            Some(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "labels": {"job-name": name}},
                "spec": spec})),
        )
        .await;
    let status = |phase: &str| json!({"status": {"phase": phase}});
    let pod_status = format!("/api/v1/namespaces/kargo-demo/pods/{pod}/status");
    cluster
        .ok("PATCH", &pod_status, Some(status("Running")))
        .await;
    kubelet.log(
        "kargo-demo",
        &pod,
        &container,
        "running 3 integration tests\n",
    );
    for test in ["login", "checkout", "search"] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let verdict = if passes || test != "checkout" {
            "PASS"
        } else {
            "FAIL"
        };
        kubelet.log(
            "kargo-demo",
            &pod,
            &container,
            &format!("{verdict} test_{test}\n"),
        );
    }
    kubelet.end("kargo-demo", &pod, &container);
    let job_status = format!("{JOBS}/{name}/status");
    let (phase, counts, condition) = if passes {
        (
            "Succeeded",
            json!({"succeeded": 1}),
            json!({"type": "Complete", "status": "True"}),
        )
    } else {
        (
            "Failed",
            json!({"failed": 2}),
            json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}),
        )
    };
    cluster.ok("PATCH", &pod_status, Some(status(phase))).await;
    let mut body = counts;
    body["conditions"] = json!([condition]);
    cluster
        .ok("PATCH", &job_status, Some(json!({"status": body})))
        .await;
}

/// The seed's template, unchanged.
const TEMPLATE: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: kargo-demo
  namespace: kargo-demo
spec:
  metrics:
  - name: test
    provider:
      job:
        metadata:
        spec:
          backoffLimit: 1
          template:
            spec:
              containers:
              - name: test
                image: alpine:latest
                command:
                - sleep
                - "10"
              restartPolicy: Never
"#;

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
        "{}---{TEMPLATE}{stage}{}",
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
    let _controller = JobController::start(s.cluster.clone(), s.kubelet.clone(), true);
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
    let _controller = JobController::start(s.cluster.clone(), s.kubelet.clone(), false);
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
