//! Dray on the Kubernetes store at the size: 1,000 Stages (100 Warehouses, each feeding
//! a chain of 10) and 10,000 Freight, written into the real `kube-apiserver` + `etcd` as custom
//! resources. Measured with the release `dray serve --store kubernetes`: the start to ready (the
//! mirror lists every kind), listing 1,000 Stages through Dray's API, and the requests the
//! replica sends the API server in a minute of idling (from the API server's own
//! `apiserver_request_total`), by verb and resource.
//!
//!     cargo build --release -p dray && cargo bench -p dray-tests --bench kube_scale

use std::time::{Duration, Instant};

use dray_tests::kube::{DrayProcess, KubeCluster};
use futures_util::StreamExt;
use serde_json::{Value, json};

const WAREHOUSES: usize = 100;
const CHAIN: usize = 10;
const FREIGHT: usize = 10_000;
const STARTS: usize = 3;
const LISTS: usize = 20;
const IDLE: Duration = Duration::from_secs(60);

fn kargo(kind: &str, name: &str, body: Value) -> Value {
    let mut object = json!({
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "big"},
    });
    if let (Some(o), Some(b)) = (object.as_object_mut(), body.as_object()) {
        o.extend(b.clone());
    }
    object
}

/// Writes the project through the API server, 16 requests at a time.
async fn populate(cluster: &KubeCluster) {
    cluster
        .ok(
            "POST",
            "/apis/kargo.akuity.io/v1alpha1/projects",
            Some(json!({"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": "big"}})),
        )
        .await;
    cluster.namespace("big").await;
    let mut objects: Vec<(&str, Value)> = Vec::new();
    for w in 0..WAREHOUSES {
        objects.push((
            "warehouses",
            kargo(
                "Warehouse",
                &format!("w{w}"),
                json!({"spec": {"subscriptions": [{"image": {"repoURL": format!("registry.example/app{w}")}}]}}),
            ),
        ));
        for s in 0..CHAIN {
            let sources = if s == 0 {
                json!({"direct": true})
            } else {
                json!({"stages": [format!("w{w}-s{}", s - 1)]})
            };
            objects.push((
                "stages",
                kargo(
                    "Stage",
                    &format!("w{w}-s{s}"),
                    json!({"spec": {
                        "requestedFreight": [{"origin": {"kind": "Warehouse", "name": format!("w{w}")}, "sources": sources}],
                        "promotionTemplate": {"spec": {"steps": [{"uses": "compose-output", "config": {"a": 1}}]}},
                    }}),
                ),
            ));
        }
    }
    for f in 0..FREIGHT {
        objects.push((
            "freights",
            kargo(
                "Freight",
                &format!("{:040x}", f as u128 * 2654435761),
                json!({
                    "origin": {"kind": "Warehouse", "name": format!("w{}", f % WAREHOUSES)},
                    "images": [{"repoURL": format!("registry.example/app{}", f % WAREHOUSES), "tag": format!("1.{f}.0")}],
                }),
            ),
        ));
    }
    let started = Instant::now();
    let count = objects.len();
    futures_util::stream::iter(objects)
        .for_each_concurrent(16, |(plural, object)| async move {
            cluster
                .ok(
                    "POST",
                    &format!("/apis/kargo.akuity.io/v1alpha1/namespaces/big/{plural}"),
                    Some(object),
                )
                .await;
        })
        .await;
    println!(
        "wrote {count} objects into the API server in {:?}",
        started.elapsed()
    );
}

/// The API server's request counts (not watches), by `VERB resource`.
async fn requests(cluster: &KubeCluster) -> std::collections::BTreeMap<String, f64> {
    let (_, text) = cluster.request("GET", "/metrics", None).await;
    let text = text.as_str().unwrap_or_default().to_string();
    let mut counts = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        let verb = label("verb");
        if verb == "WATCH" || label("resource").is_empty() {
            continue;
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *counts
            .entry(format!("{verb} {}", label("resource")))
            .or_default() += value;
    }
    counts
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    dray::tls::install_provider();
    let cluster = KubeCluster::start().await;
    cluster.install_dray_crds().await;
    populate(&cluster).await;

    // Start to ready, a fresh replica each time (the mirror is in memory).
    let mut starts = Vec::new();
    for _ in 0..STARTS {
        let started = Instant::now();
        let replica =
            tokio::task::block_in_place(|| DrayProcess::start(&cluster, "127.0.0.1:1", None));
        starts.push(started.elapsed());
        drop(replica);
    }
    dray_tests::report(
        "start to ready (1,000 Stages, 10,000 Freight in the cluster)",
        starts,
    );

    let replica = tokio::task::block_in_place(|| DrayProcess::start(&cluster, "127.0.0.1:1", None));
    let mut lists = Vec::new();
    for _ in 0..LISTS {
        let started = Instant::now();
        let answer = tokio::task::block_in_place(|| {
            replica.call(reqwest::Method::GET, "/v1/projects/big/stages", None)
        });
        lists.push(started.elapsed());
        assert_eq!(
            answer["items"].as_array().map(Vec::len),
            Some(WAREHOUSES * CHAIN)
        );
    }
    dray_tests::report("GET /v1/projects/big/stages (1,000)", lists);

    // Idle: a minute after the replica settled (its first passes over the project done), then
    // a minute with no replica at all: what the API server's own controllers ask of it.
    tokio::time::sleep(Duration::from_secs(20)).await;
    idle(&cluster, "with one replica").await;
    drop(replica);
    tokio::time::sleep(Duration::from_secs(20)).await;
    idle(&cluster, "with no replica").await;
}

/// Prints the requests the API server served in [`IDLE`] (watches not counted; the two
/// /metrics reads of this benchmark have no resource and are not counted either).
async fn idle(cluster: &KubeCluster, what: &str) {
    let before = requests(cluster).await;
    tokio::time::sleep(IDLE).await;
    let after = requests(cluster).await;
    let mut total = 0.0;
    for (request, n) in &after {
        let delta = n - before.get(request).copied().unwrap_or(0.0);
        if delta > 0.0 {
            println!("idle {what}, {IDLE:?}: {delta} × {request}");
            total += delta;
        }
    }
    println!("idle {what}: {total} requests in {IDLE:?}");
}
