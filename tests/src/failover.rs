//! The failover of Dray on Kubernetes, as its test and its benchmark both run it: two `dray
//! serve` processes on one cluster (the real `kube-apiserver` + `etcd`), a Promotion waiting in
//! an http step (polling a status this module makes ready), the leader killed with SIGKILL
//! in the middle of that step, and the other replica taking the Lease over and polling again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::kube::{DrayProcess, KubeCluster};

/// What a failover did.
#[derive(Debug)]
pub struct Failover {
    /// From the kill to the other replica's first poll of the status (the step resumed).
    pub resumed_after: Duration,
    /// The first step's `finishedAt` before the kill and once the Promotion succeeded: the same
    /// when it was not run again.
    pub first_step_finished_before: Value,
    pub first_step_finished_after: Value,
    /// Whether the replica that holds the Lease at the end is the one that was not killed.
    pub taken_over_by_the_survivor: bool,
}

const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/kargo-system-resources/leases/dray-leader";

/// Runs the scenario with the Lease timings given (duration, renew deadline, retry period in
/// seconds) or Dray's defaults. Panics, saying what, if the Promotion does not get to its
/// waiting step, is not resumed within 60 s, or does not succeed.
pub async fn kill_the_leader_mid_step(lease: Option<(f64, f64, f64)>) -> Failover {
    dray::tls::install_provider();
    let cluster = KubeCluster::start().await;
    cluster.install_dray_crds().await;
    let ready = Arc::new(AtomicBool::new(false));
    let hits: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let address = {
        let (ready, hits) = (ready.clone(), hits.clone());
        crate::http::json_server(move |_| {
            hits.lock().expect("hits").push(Instant::now());
            if ready.load(Ordering::SeqCst) {
                r#"{"state": "ready"}"#.to_string()
            } else {
                r#"{"state": "waiting"}"#.to_string()
            }
        })
    };
    let (a, b) = tokio::task::block_in_place(|| {
        let a = DrayProcess::start(&cluster, &address, lease);
        let b = DrayProcess::start(&cluster, &address, lease);
        (a, b)
    });
    let steps = format!(
        "- uses: compose-output\n  as: first\n  config: {{a: 1}}\n\
         - uses: http\n  as: wait\n  config:\n    url: http://{address}/status\n    \
         successExpression: 'response.body.state == \"ready\"'\n    pollInterval: 1s\n\
         - uses: compose-output\n  as: last\n  config: {{b: 2}}"
    );
    let manifests = crate::manifests::project("shop", &["image: {repoURL: registry.example/web}"])
        + &crate::manifests::stage("shop", "dev", &steps)
        + &crate::manifests::freight(
            "shop",
            "first",
            "images: [{repoURL: registry.example/web, tag: 1.0.0}]",
        );
    let promotion = tokio::task::block_in_place(|| {
        b.call(
            reqwest::Method::POST,
            "/v1/apply",
            Some(json!({"sources": [{"name": "pipeline.yaml", "content": manifests}]})),
        );
        b.call(
            reqwest::Method::POST,
            "/v1/projects/shop/stages/dev/promote",
            Some(json!({"freight": "first"})),
        )["metadata"]["name"]
            .as_str()
            .expect("a promotion")
            .to_string()
    });
    let path = format!("/apis/kargo.akuity.io/v1alpha1/namespaces/shop/promotions/{promotion}");

    // The leader runs it to the step that waits.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first_step_finished_before = loop {
        let p = cluster.ok("GET", &path, None).await;
        if p["status"]["currentStep"] == 1 && !hits.lock().expect("hits").is_empty() {
            break p["status"]["stepExecutionMetadata"][0]["finishedAt"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "not waiting in step 2 after 60 s: {p}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let leader = cluster.ok("GET", LEASE, None).await["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Identities are `HOST-PID-RANDOM`.
    let leads = |p: &DrayProcess| leader.contains(&format!("-{}-", p.child.id()));
    assert!(leads(&a) || leads(&b), "neither replica holds {leader}");
    let (mut dead, alive) = if leads(&a) { (a, b) } else { (b, a) };

    // SIGKILL: nothing released, nothing finished.
    dead.child.kill().expect("killed");
    let killed = Instant::now();
    dead.child.wait().expect("reaped");
    let deadline = Instant::now() + Duration::from_secs(60);
    let resumed = loop {
        if let Some(at) = hits.lock().expect("hits").iter().find(|t| **t > killed) {
            break *at;
        }
        assert!(
            Instant::now() < deadline,
            "nobody polled again within 60 s of the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    ready.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let p = cluster.ok("GET", &path, None).await;
        if p["status"]["phase"] == "Succeeded" {
            break p;
        }
        assert!(
            !matches!(
                p["status"]["phase"].as_str(),
                Some("Failed" | "Errored" | "Aborted")
            ),
            "{p}"
        );
        assert!(
            Instant::now() < deadline,
            "not Succeeded 60 s after the status was ready: {p}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let holder = cluster.ok("GET", LEASE, None).await["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Failover {
        resumed_after: resumed - killed,
        first_step_finished_before,
        first_step_finished_after: done["status"]["stepExecutionMetadata"][0]["finishedAt"].clone(),
        taken_over_by_the_survivor: holder.contains(&format!("-{}-", alive.child.id())),
    }
}
