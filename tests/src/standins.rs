//! Stand-ins for the parts of a Kubernetes installation that cannot run here (Argo CD's
//! application controller, the Job controller, the scheduler, a kubelet's container), each
//! playing exactly the documented part the tests need, through the real API server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::kube::{FakeKubelet, KubeCluster};

/// How the stand-in for Argo CD ends a sync.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    Healthy,
    Degraded,
}

/// The stand-in for Argo CD's application controller: it watches Application `app` (an API
/// path) for an `operation`, resolves each source's revision with `resolve` (as Argo CD
/// resolves a `targetRevision` in the repository or chart repository), and writes the Application's `status` (`operationState` with
/// the sync result, `sync`, `health`, `reconciledAt`) and clears `operation`, as Argo CD's
/// application controller does after a sync. It keeps the operations it saw, as Dray asked.
pub struct ArgoCd {
    seen: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ArgoCd {
    pub fn start(
        cluster: Arc<KubeCluster>,
        app: &str,
        resolve: impl Fn(&Value) -> String + Send + 'static,
        outcome: Outcome,
    ) -> ArgoCd {
        let app_path = app.to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let (status, app) = cluster.request("GET", &app_path, None).await;
                let Some(operation) = app.get("operation").filter(|o| o.is_object()).cloned()
                else {
                    continue;
                };
                assert_eq!(status, 200);
                log.lock().expect("the log").push(operation.clone());
                // One source: `revision`; several: `revisions`, in order (as Argo CD writes).
                let (key, revision) = match app["spec"]["sources"].as_array() {
                    Some(sources) if !sources.is_empty() => (
                        "revisions",
                        Value::from(sources.iter().map(&resolve).collect::<Vec<_>>()),
                    ),
                    _ => ("revision", Value::from(resolve(&app["spec"]["source"]))),
                };
                let now = now();
                let (health, message) = match outcome {
                    Outcome::Healthy => ("Healthy", None),
                    Outcome::Degraded => (
                        "Degraded",
                        Some("Deployment \"web\" exceeded its progress deadline"),
                    ),
                };
                cluster
                    .ok(
                        "PATCH",
                        &app_path,
                        Some(json!({
                            "operation": null,
                            "status": {
                                "operationState": {
                                    "operation": operation, "phase": "Succeeded",
                                    "message": "successfully synced (all tasks run)",
                                    "syncResult": {key: revision},
                                    "startedAt": now, "finishedAt": now,
                                },
                                "sync": {"status": "Synced", key: revision},
                                "health": {"status": health, "message": message},
                                "reconciledAt": now,
                            },
                        })),
                    )
                    .await;
            }
        });
        ArgoCd { seen, task }
    }

    pub fn operations(&self) -> Vec<Value> {
        self.seen.lock().expect("the log").clone()
    }
}

impl Drop for ArgoCd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Now, RFC 3339 to the second.
fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// The stand-in for the Job controller, the scheduler and the kubelet: for each new Job of
/// `namespace` it creates the Job's pod (its template, labelled `job-name`, bound to the
/// [`FakeKubelet`]'s node), writes the container's output (three tests, all passing or one
/// failing) to the stand-in kubelet, which the API server asks for the log, ends the container,
/// and writes the pod's and the Job's status (`succeeded` and `Complete`, or `failed` and
/// `Failed`), as those parts of Kubernetes do.
pub struct JobController {
    task: tokio::task::JoinHandle<()>,
}

impl JobController {
    pub fn start(
        cluster: Arc<KubeCluster>,
        kubelet: Arc<FakeKubelet>,
        namespace: &str,
        passes: bool,
    ) -> JobController {
        let namespace = namespace.to_string();
        let task = tokio::spawn(async move {
            let jobs_path = format!("/apis/batch/v1/namespaces/{namespace}/jobs");
            let mut seen = Vec::new();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let jobs = cluster.ok("GET", &jobs_path, None).await;
                for job in jobs["items"].as_array().cloned().unwrap_or_default() {
                    let name = job["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if seen.contains(&name) {
                        continue;
                    }
                    seen.push(name.clone());
                    run(&cluster, &kubelet, &namespace, &job, &name, passes).await;
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
async fn run(
    cluster: &KubeCluster,
    kubelet: &FakeKubelet,
    namespace: &str,
    job: &Value,
    name: &str,
    passes: bool,
) {
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
            &format!("/api/v1/namespaces/{namespace}/pods"),
            Some(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "labels": {"job-name": name}},
                "spec": spec})),
        )
        .await;
    let status = |phase: &str| json!({"status": {"phase": phase}});
    let pod_status = format!("/api/v1/namespaces/{namespace}/pods/{pod}/status");
    cluster
        .ok("PATCH", &pod_status, Some(status("Running")))
        .await;
    kubelet.log(namespace, &pod, &container, "running 3 integration tests\n");
    for test in ["login", "checkout", "search"] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let verdict = if passes || test != "checkout" {
            "PASS"
        } else {
            "FAIL"
        };
        kubelet.log(
            namespace,
            &pod,
            &container,
            &format!("{verdict} test_{test}\n"),
        );
    }
    kubelet.end(namespace, &pod, &container);
    let job_status = format!("/apis/batch/v1/namespaces/{namespace}/jobs/{name}/status");
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
