//! Dray on Kubernetes, the parts built so far: the CRDs `dray crds` prints (installed in the
//! real `kube-apiserver` + `etcd`, holding Dray's resources with every field, status through
//! its subresource, `kubectl get`'s columns), and leader election with a Lease between
//! replicas: a takeover on release, on expiry, and a leader cut off from the API server that
//! stops leading before another may start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dray::store::kubernetes::lease::{Elector, LeaseConfig, Term};
use dray_tests::kube::{ADMIN_TOKEN, KubeCluster};
use serde_json::json;
use tokio::sync::watch;

#[test]
fn the_shipped_crds_are_what_dray_crds_prints() {
    let out = std::process::Command::new(dray_tests::dray_bin())
        .arg("crds")
        .output()
        .expect("dray crds runs");
    assert!(out.status.success(), "{out:?}");
    let shipped =
        std::fs::read_to_string(dray_tests::repo_root().join("examples/kubernetes/crds.yaml"))
            .expect("examples/kubernetes/crds.yaml");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        shipped,
        "examples/kubernetes/crds.yaml is out of date: run `cargo run -- crds > examples/kubernetes/crds.yaml`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crds_hold_drays_resources_with_every_field() {
    let cluster = KubeCluster::start().await;
    cluster.install_dray_crds().await;
    cluster
        .ok(
            "POST",
            "/apis/kargo.akuity.io/v1alpha1/projects",
            Some(json!({"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": "shop"}})),
        )
        .await;
    cluster.namespace("shop").await;
    let stages = "/apis/kargo.akuity.io/v1alpha1/namespaces/shop/stages";
    let stage = cluster
        .ok(
            "POST",
            stages,
            Some(json!({
                "apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Stage",
                "metadata": {"name": "dev"},
                "spec": {
                    "shard": "east",
                    "requestedFreight": [{"origin": {"kind": "Warehouse", "name": "app"}, "sources": {"direct": true}}],
                    "promotionTemplate": {"spec": {"steps": [{"uses": "compose-output", "config": {"a": 1}}]}},
                },
                "status": {"ignored": "a create does not write the status"},
            })),
        )
        .await;
    assert_eq!(stage["status"], serde_json::Value::Null, "{stage}");

    // The status goes through its subresource, Dray's own fields kept.
    let mut with_status = stage.clone();
    with_status["status"] = json!({
        "health": {"status": "Healthy"},
        "selectedOrigins": [{"kind": "Warehouse", "name": "app"}],
        "healthChecks": [{"uses": "argocd-update", "config": {"apps": [{"name": "web"}]}}],
    });
    let written = cluster
        .ok("PUT", &format!("{stages}/dev/status"), Some(with_status))
        .await;
    assert_eq!(
        written["status"]["selectedOrigins"][0]["name"], "app",
        "{written}"
    );
    assert_ne!(
        written["metadata"]["resourceVersion"], stage["metadata"]["resourceVersion"],
        "a status write is a new version"
    );
    // A write with the old version is refused: compare-and-set holds.
    let mut stale = stage.clone();
    stale["spec"]["shard"] = json!("west");
    let (status, _) = cluster
        .request("PUT", &format!("{stages}/dev"), Some(stale))
        .await;
    assert_eq!(status, 409);

    // Freight are `freights`, with their fields at the top level as Kargo's.
    let freight = cluster
        .ok(
            "POST",
            "/apis/kargo.akuity.io/v1alpha1/namespaces/shop/freights",
            Some(json!({
                "apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Freight",
                "metadata": {"name": "0123456789abcdef0123456789abcdef01234567"},
                "alias": "wonky-wombat",
                "origin": {"kind": "Warehouse", "name": "app"},
                "images": [{"repoURL": "registry.example/web", "tag": "1.0.0", "digest": "sha256:00"}],
            })),
        )
        .await;
    assert_eq!(freight["images"][0]["tag"], "1.0.0", "{freight}");

    // `kubectl get stages` shows Kargo's columns.
    let client = dray::tls::client_builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cluster.ca).expect("the CA"))
                .expect("a PEM"),
        )
        .build()
        .expect("a client");
    let table: serde_json::Value = client
        .get(format!("{}{stages}", cluster.url))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .send()
        .await
        .expect("the table")
        .json()
        .await
        .expect("json");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["Name", "Shard", "Health", "Age"], "{table}");
    assert_eq!(table["rows"][0]["cells"][1], "east");
    assert_eq!(table["rows"][0]["cells"][2], "Healthy");
}

/// A client of the cluster `kubeconfig` names.
async fn client_of(kubeconfig: &std::path::Path) -> dray::store::kubernetes::Client {
    dray::clusters::client(&dray::clusters::ClusterConfig {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        ..Default::default()
    })
    .await
    .expect("a client")
}

/// Short timings, so the tests take seconds: a Lease of 2 s, renewed every 0.2 s, given up
/// after 1 s without a renewal.
fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(1),
        retry_period: Duration::from_millis(200),
        ..LeaseConfig::new("kube-system", "dray-shard-default", identity)
    }
}

/// A replica's election running in the background: what it says about its leadership, and how
/// to stop it (gracefully, releasing the Lease) or kill it (as a crash: nothing released).
struct Replica {
    leading: watch::Receiver<Option<Term>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Replica {
    async fn start(kubeconfig: &std::path::Path, identity: &str) -> Replica {
        let client = client_of(kubeconfig).await;
        let elector = Elector::new(client, config(identity)).expect("an elector");
        let (leading_tx, leading) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(elector.run(leading_tx, stop_rx));
        Replica {
            leading,
            stop,
            task,
        }
    }

    /// Waits until it leads (or not, with `None`), at most `limit`; the term and when.
    async fn until(&mut self, leading: bool, limit: Duration) -> (Option<Term>, Instant) {
        let deadline = Instant::now() + limit;
        loop {
            let now = *self.leading.borrow_and_update();
            if now.is_some() == leading {
                return (now, Instant::now());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "not {} after {limit:?}",
                if leading { "leading" } else { "following" }
            );
            let _ = tokio::time::timeout(left, self.leading.changed()).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_another_takes_over_on_release_and_on_expiry() {
    dray::tls::install_provider();
    let cluster = KubeCluster::start().await;
    let kubeconfig = cluster.kubeconfig(ADMIN_TOKEN);

    // The first replica creates the Lease and leads; the second follows.
    let mut a = Replica::start(&kubeconfig, "replica-a").await;
    let (term_a, _) = a.until(true, Duration::from_secs(10)).await;
    let mut b = Replica::start(&kubeconfig, "replica-b").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(*b.leading.borrow(), None, "two leaders at once");
    let lease = cluster
        .ok(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/dray-shard-default",
            None,
        )
        .await;
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a", "{lease}");

    // A stops and gives the Lease up: B takes it at once (well within the 2 s expiry), in
    // the next term.
    let released = Instant::now();
    a.stop.send_replace(true);
    a.task.await.expect("a ends");
    let (term_b, at) = b.until(true, Duration::from_secs(10)).await;
    assert!(term_b > term_a, "{term_b:?} after {term_a:?}");
    assert!(
        at - released < Duration::from_millis(1500),
        "taken over {:?} after the release",
        at - released
    );

    // B crashes (nothing released): C takes over once the Lease has gone unrenewed for its
    // duration, as C saw it.
    let mut c = Replica::start(&kubeconfig, "replica-c").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*c.leading.borrow(), None);
    let crashed = Instant::now();
    b.task.abort();
    let (term_c, at) = c.until(true, Duration::from_secs(10)).await;
    assert!(term_c > term_b, "{term_c:?} after {term_b:?}");
    assert!(
        at - crashed >= Duration::from_millis(1500),
        "C took over {:?} after the crash, before the Lease expired",
        at - crashed
    );
    c.stop.send_replace(true);
    c.task.await.expect("c ends");
}

/// Forwards TCP connections to `to` until cut: then every connection is closed and new ones
/// are refused (as a network partition between a replica and the API server).
async fn cuttable_proxy(to: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let at = listener.local_addr().expect("addr");
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if flag.load(Ordering::SeqCst) {
                continue;
            }
            let flag = flag.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                let watch_cut = async {
                    while !flag.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tokio::select! { _ = copy => {}, _ = watch_cut => {} }
            });
        }
    });
    (at, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_before_another_starts() {
    dray::tls::install_provider();
    let cluster = KubeCluster::start().await;
    let direct = cluster.kubeconfig(ADMIN_TOKEN);
    let port: u16 = cluster
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the API server's port");
    let (proxy, cut) = cuttable_proxy(([127, 0, 0, 1], port).into()).await;
    // The same kubeconfig, through the proxy.
    let through = direct.with_file_name("through-proxy.kubeconfig");
    std::fs::write(
        &through,
        std::fs::read_to_string(&direct)
            .expect("the kubeconfig")
            .replace(&cluster.url, &format!("https://{proxy}")),
    )
    .expect("write");

    let mut a = Replica::start(&through, "replica-a").await;
    a.until(true, Duration::from_secs(10)).await;
    let mut b = Replica::start(&direct, "replica-b").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*b.leading.borrow(), None);

    cut.store(true, Ordering::SeqCst);
    let cut_at = Instant::now();
    let (_, a_stopped) = a.until(false, Duration::from_secs(10)).await;
    let (_, b_started) = b.until(true, Duration::from_secs(10)).await;
    assert!(
        a_stopped < b_started,
        "B led {:?} after the cut, A stopped {:?} after it",
        b_started - cut_at,
        a_stopped - cut_at
    );
    // A stops within its renew deadline (and a retry), B starts once the Lease expired.
    assert!(
        a_stopped - cut_at <= Duration::from_millis(1500),
        "{:?}",
        a_stopped - cut_at
    );
    assert!(
        b_started - cut_at >= Duration::from_millis(1000),
        "{:?}",
        b_started - cut_at
    );
    b.stop.send_replace(true);
    b.task.await.expect("b ends");
    a.task.abort();
}

/// A store that mirrors `cluster` (as the admin), following every mirrored kind.
async fn mirror_of(
    cluster: &KubeCluster,
) -> (dray::store::Store, Vec<tokio::task::JoinHandle<()>>) {
    use dray::store::kubernetes::{mirror, remote::Remote};
    let client = client_of(&cluster.kubeconfig(ADMIN_TOKEN)).await;
    let store = dray::store::Store::open_mirror(Remote::new(client.clone())).expect("a mirror");
    let tasks = mirror::follow(&store, &client, &mirror::MIRRORED)
        .await
        .expect("the mirror follows the cluster");
    (store, tasks)
}

/// Waits until `f` over `store` gives `Some`, at most 10 s.
async fn eventually<T: Send + 'static>(
    store: &dray::store::Store,
    what: &str,
    f: impl Fn(&dray::store::ReadTx) -> Result<Option<T>, dray::store::StoreError>
    + Send
    + Sync
    + Clone
    + 'static,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let g = f.clone();
        if let Some(found) = store.read_async(move |r| g(r)).await.expect("a read") {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not after 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_clusters_objects_through_their_mirrors() {
    use dray::resource::Kind;
    use dray::store::{Reader, StatusMode, StoreError};
    use dray_tests::manifests::object;
    dray::tls::install_provider();
    let cluster = KubeCluster::start().await;
    cluster.install_dray_crds().await;
    let (a, _a_tasks) = mirror_of(&cluster).await;
    let (b, _b_tasks) = mirror_of(&cluster).await;

    // A writes a project, a Stage and a Freight in one write: each goes to the API server (the
    // project's namespace made with it), and A reads its own writes at once.
    let stage_spec = json!({"spec": {"requestedFreight": [{"origin": {"kind": "Warehouse", "name": "app"}, "sources": {"direct": true}}]}});
    let written = a
        .write_async(move |tx| {
            tx.put(object(Kind::Project, "", "shop", json!({})), None, StatusMode::Keep)?;
            let (stage, _) = tx.put(
                object(Kind::Stage, "shop", "dev", stage_spec),
                None,
                StatusMode::Keep,
            )?;
            tx.put(
                object(
                    Kind::Freight,
                    "shop",
                    "f1",
                    json!({"origin": {"kind": "Warehouse", "name": "app"}, "images": [{"repoURL": "registry.example/web", "tag": "1.0.0"}]}),
                ),
                None,
                StatusMode::Keep,
            )?;
            Ok::<_, StoreError>(stage)
        })
        .await
        .expect("written");
    let version = written
        .metadata
        .resource_version
        .clone()
        .expect("a version");
    let in_cluster = cluster
        .ok(
            "GET",
            "/apis/kargo.akuity.io/v1alpha1/namespaces/shop/stages/dev",
            None,
        )
        .await;
    assert_eq!(
        in_cluster["metadata"]["resourceVersion"], version,
        "the store's version is the cluster's"
    );
    let mine = a
        .read_async(|r| r.get(Kind::Stage, "shop", "dev"))
        .await
        .expect("a read")
        .expect("A reads its own write");
    assert_eq!(
        mine.metadata.resource_version.as_deref(),
        Some(version.as_str())
    );

    // B sees all three through its watches, the Freight in its index by origin.
    eventually(&b, "the Stage in B's mirror", |r| {
        r.get(Kind::Stage, "shop", "dev")
    })
    .await;
    let newest = eventually(&b, "the Freight in B's index", |r| {
        let found = r.freight_newest_first("shop", "Warehouse/app", 0, 5)?;
        Ok((!found.is_empty()).then_some(found))
    })
    .await;
    assert_eq!(newest[0].name(), "f1");

    // The status goes through its subresource; B gets it too.
    let mut with_status = mine.clone();
    with_status
        .body
        .insert("status".into(), json!({"health": {"status": "Healthy"}}));
    let (after_status, _) = a
        .write_async(move |tx| tx.put(with_status, None, StatusMode::Replace))
        .await
        .expect("the status is written");
    assert_eq!(after_status.status()["health"]["status"], "Healthy");
    let seen = eventually(&b, "the status in B's mirror", |r| {
        Ok(r.get(Kind::Stage, "shop", "dev")?
            .filter(|s| !s.status().is_null()))
    })
    .await;
    assert_eq!(seen.status()["health"]["status"], "Healthy");

    // Compare-and-set: a write on the version before is refused, and changes nothing.
    let stale_version = version.clone();
    let mut stale = mine.clone();
    stale.body.insert("spec".into(), json!({"shard": "west"}));
    let refused = b
        .write_async(move |tx| tx.put(stale, Some(&stale_version), StatusMode::Keep))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );

    // A change made in the cluster by someone else (kubectl) reaches both mirrors.
    cluster
        .ok(
            "PATCH",
            "/apis/kargo.akuity.io/v1alpha1/namespaces/shop/stages/dev",
            Some(json!({"metadata": {"labels": {"team": "shop"}}})),
        )
        .await;
    for store in [&a, &b] {
        eventually(store, "the label made with kubectl", |r| {
            Ok(r.get(Kind::Stage, "shop", "dev")?
                .filter(|s| s.metadata.labels.get("team").map(String::as_str) == Some("shop")))
        })
        .await;
    }

    // The event log carries the cluster's versions: in the writer's, the Stage's creation is
    // at its version; in the other's at it or after (each kind's watch delivers in its own
    // order), never before, so a watch from a version misses nothing after it.
    let version_number: u64 = version.parse().expect("a number");
    for (store, exact) in [(&a, true), (&b, false)] {
        let events = store
            .read_async(|r| match r.events_after(0, 1000) {
                Err(StoreError::Gone { oldest }) => r.events_after(oldest - 1, 1000),
                other => other,
            })
            .await
            .expect("the events");
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let created = events
            .iter()
            .find(|e| e.object.kind == Kind::Stage)
            .expect("the Stage's creation");
        if exact {
            assert_eq!(created.seq, version_number, "{seqs:?}");
        } else {
            assert!(created.seq >= version_number, "{seqs:?}");
        }
    }

    // A delete goes to the cluster and out of both mirrors.
    a.write_async(|tx| tx.delete(Kind::Stage, "shop", "dev"))
        .await
        .expect("deleted");
    let (status, _) = cluster
        .request(
            "GET",
            "/apis/kargo.akuity.io/v1alpha1/namespaces/shop/stages/dev",
            None,
        )
        .await;
    assert_eq!(status, 404);
    eventually(&b, "the Stage gone from B's mirror", |r| {
        Ok(r.get(Kind::Stage, "shop", "dev")?.is_none().then_some(()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_of_a_cluster_without_the_crds_says_how_to_install_them() {
    use dray::store::kubernetes::{mirror, remote::Remote};
    dray::tls::install_provider();
    let cluster = KubeCluster::start().await;
    let client = client_of(&cluster.kubeconfig(ADMIN_TOKEN)).await;
    let store = dray::store::Store::open_mirror(Remote::new(client.clone())).expect("a mirror");
    let failed = mirror::follow(&store, &client, &mirror::MIRRORED)
        .await
        .expect_err("no CRDs, no mirror");
    assert!(
        failed.contains("dray crds | kubectl apply -f -"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_the_kubernetes_store_promotes_and_keeps_it_all_in_the_cluster() {
    dray::tls::install_provider();
    let cluster = KubeCluster::start().await;
    cluster.install_dray_crds().await;
    let daemon = dray_tests::Daemon::start_with_config(dray::Config {
        store: dray::service::StoreKind::Kubernetes,
        kubernetes: Some(dray::service::KubernetesStore {
            kubeconfig: Some(cluster.kubeconfig(ADMIN_TOKEN)),
            ..Default::default()
        }),
        ..dray::Config::default()
    })
    .await
    .expect("the daemon starts on the cluster");
    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
    daemon
        .apply_ok(
            &(dray_tests::manifests::project("shop", &["image: {repoURL: registry.example/web}"])
                + &dray_tests::manifests::stage(
                    "shop",
                    "dev",
                    "- uses: compose-output\n  as: note\n  config: {done: true}",
                )
                + &dray_tests::manifests::freight(
                    "shop",
                    "first",
                    &format!("images: [{{repoURL: registry.example/web, tag: 1.0.0, digest: \"{DIGEST}\"}}]"),
                )),
        )
        .await;

    // What was applied is in the cluster, as `kubectl get` shows it.
    let stage = cluster
        .ok(
            "GET",
            "/apis/kargo.akuity.io/v1alpha1/namespaces/shop/stages/dev",
            None,
        )
        .await;
    assert_eq!(
        stage["spec"]["promotionTemplate"]["spec"]["steps"][0]["as"],
        "note"
    );

    // A promotion runs to its end; the Promotion and the Stage's status are the cluster's.
    let out = daemon.cli(&[
        "promote",
        "-p",
        "shop",
        "--stage",
        "dev",
        "--freight",
        "first",
        "--wait",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let promotions = cluster
        .ok(
            "GET",
            "/apis/kargo.akuity.io/v1alpha1/namespaces/shop/promotions",
            None,
        )
        .await;
    let items = promotions["items"].as_array().expect("promotions");
    assert_eq!(items.len(), 1, "{promotions}");
    assert_eq!(items[0]["status"]["phase"], "Succeeded", "{}", items[0]);
    let stage = cluster
        .ok(
            "GET",
            "/apis/kargo.akuity.io/v1alpha1/namespaces/shop/stages/dev",
            None,
        )
        .await;
    assert!(
        stage["status"]["freightHistory"][0].is_object(),
        "the Stage holds the Freight: {stage}"
    );
    // Its events are the cluster's Events, with their actor.
    let events = cluster
        .ok("GET", "/api/v1/namespaces/shop/events", None)
        .await;
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"PromotionCreated"), "{reasons:?}");
    let out = daemon.cli(&["get", "events", "-p", "shop"]);
    assert!(out.stdout.contains("PromotionSucceeded"), "{out:?}");
}

/// The config of a replica on `cluster`'s store, with the short Lease timings of [`config`].
fn replica_config(cluster: &KubeCluster) -> dray::Config {
    dray::Config {
        store: dray::service::StoreKind::Kubernetes,
        kubernetes: Some(dray::service::KubernetesStore {
            kubeconfig: Some(cluster.kubeconfig(ADMIN_TOKEN)),
            lease_duration_seconds: Some(2.0),
            renew_deadline_seconds: Some(1.0),
            retry_period_seconds: Some(0.2),
            ..Default::default()
        }),
        ..dray::Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_holding_the_lease_runs_the_promotions_and_hands_over_when_it_stops() {
    dray::tls::install_provider();
    let cluster = KubeCluster::start().await;
    cluster.install_dray_crds().await;
    let mut a = dray_tests::Daemon::start_with_config(replica_config(&cluster))
        .await
        .expect("replica A starts");
    let lease_path =
        "/apis/coordination.k8s.io/v1/namespaces/kargo-system-resources/leases/dray-leader";
    let deadline = Instant::now() + Duration::from_secs(10);
    let holder_a = loop {
        let (status, lease) = cluster.request("GET", lease_path, None).await;
        if status == 200 && lease["spec"]["holderIdentity"].is_string() {
            break lease["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        assert!(Instant::now() < deadline, "no Lease after 10 s: {lease}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let b = dray_tests::Daemon::start_with_config(replica_config(&cluster))
        .await
        .expect("replica B starts");
    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
    b.apply_ok(
        &(dray_tests::manifests::project("shop", &["image: {repoURL: registry.example/web}"])
            + &dray_tests::manifests::stage(
                "shop",
                "dev",
                "- uses: compose-output\n  as: note\n  config: {by: \"${{ ctx.promotion }}\"}",
            )
            + &dray_tests::manifests::freight(
                "shop",
                "first",
                &format!(
                    "images: [{{repoURL: registry.example/web, tag: 1.0.0, digest: \"{DIGEST}\"}}]"
                ),
            )
            + &dray_tests::manifests::freight(
                "shop",
                "second",
                &format!(
                    "images: [{{repoURL: registry.example/web, tag: 1.1.0, digest: \"{DIGEST}\"}}]"
                ),
            )),
    )
    .await;

    // A promotion asked of B (a follower, serving the API) is run by A, the leader.
    let out = b.cli(&[
        "promote",
        "-p",
        "shop",
        "--stage",
        "dev",
        "--freight",
        "first",
        "--wait",
    ]);
    if out.code != 0 {
        let all = cluster
            .ok(
                "GET",
                "/apis/kargo.akuity.io/v1alpha1/namespaces/shop/promotions",
                None,
            )
            .await;
        let events = cluster
            .ok("GET", "/api/v1/namespaces/shop/events", None)
            .await;
        eprintln!("PROMOTIONS {all:#}\nEVENTS {events:#}");
    }
    assert_eq!(out.code, 0, "{out:?}");
    let lease = cluster.ok("GET", lease_path, None).await;
    assert_eq!(
        lease["spec"]["holderIdentity"],
        holder_a.as_str(),
        "{lease}"
    );

    // A stops (a rolling update): it gives the Lease up, B takes it and runs the next one.
    let stopped = Instant::now();
    a.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let holder_b = loop {
        let lease = cluster.ok("GET", lease_path, None).await;
        let holder = lease["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !holder.is_empty() && holder != holder_a {
            break holder;
        }
        assert!(
            Instant::now() < deadline,
            "B did not take the Lease: {lease}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "taken over {:?} after A stopped",
        stopped.elapsed()
    );
    assert_ne!(holder_b, holder_a);
    let out = b.cli(&[
        "promote",
        "-p",
        "shop",
        "--stage",
        "dev",
        "--freight",
        "second",
        "--wait",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let stage = cluster
        .ok(
            "GET",
            "/apis/kargo.akuity.io/v1alpha1/namespaces/shop/stages/dev",
            None,
        )
        .await;
    assert_eq!(
        stage["status"]["freightHistory"].as_array().map(Vec::len),
        Some(2),
        "both promotions landed: {stage}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_resumes_at_its_step_on_another_replica_when_the_leader_is_killed() {
    // Short Lease timings (2 s, 1 s, 0.2 s); the benchmark `kube_failover` runs the same with
    // Dray's defaults.
    let failover = dray_tests::failover::kill_the_leader_mid_step(Some((2.0, 1.0, 0.2))).await;
    println!(
        "killed → resumed on the other replica: {:?}",
        failover.resumed_after
    );
    assert!(
        failover.resumed_after >= Duration::from_millis(1500),
        "resumed {:?} after the kill, before the Lease expired",
        failover.resumed_after
    );
    assert!(
        failover.resumed_after < Duration::from_secs(15),
        "{failover:?}"
    );
    assert_eq!(
        failover.first_step_finished_before, failover.first_step_finished_after,
        "the first step was not run again"
    );
    assert!(failover.taken_over_by_the_survivor, "{failover:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_manifests_cluster_role_is_all_a_replica_needs() {
    use dray_tests::kube::{DRAY_TOKEN, READER_TOKEN};
    dray::tls::install_provider();
    let cluster = KubeCluster::start().await;
    cluster.install_dray_crds().await;
    let config = |token: &str| dray::Config {
        store: dray::service::StoreKind::Kubernetes,
        kubernetes: Some(dray::service::KubernetesStore {
            kubeconfig: Some(cluster.kubeconfig(token)),
            ..Default::default()
        }),
        ..dray::Config::default()
    };

    // A user with no rights: the daemon does not start, and says what it lacks.
    let refused = dray_tests::Daemon::start_with_config(config(READER_TOKEN))
        .await
        .err()
        .expect("no rights, no daemon");
    assert!(
        format!("{refused:#}").contains("does not let Dray list"),
        "{refused:#}"
    );

    // The ClusterRole of examples/kubernetes/dray.yaml, bound to the harness's user `dray`.
    let text =
        std::fs::read_to_string(dray_tests::repo_root().join("examples/kubernetes/dray.yaml"))
            .expect("the install manifests");
    let role = dray::manifest::parse(&text)
        .expect("YAML")
        .into_iter()
        .map(|d| d.value)
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    cluster
        .ok(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            Some(role),
        )
        .await;
    cluster
        .ok(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            Some(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "dray"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "dray"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dray"}],
            })),
        )
        .await;
    let daemon = dray_tests::Daemon::start_with_config(config(DRAY_TOKEN))
        .await
        .expect("the daemon starts with the ClusterRole's rights");
    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
    daemon
        .apply_ok(
            &(dray_tests::manifests::project("shop", &["image: {repoURL: registry.example/web}"])
                + &dray_tests::manifests::stage(
                    "shop",
                    "dev",
                    "- uses: compose-output\n  config: {done: true}",
                )
                + &dray_tests::manifests::freight(
                    "shop",
                    "first",
                    &format!("images: [{{repoURL: registry.example/web, tag: 1.0.0, digest: \"{DIGEST}\"}}]"),
                )
                + "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: shop\n  labels: {kargo.akuity.io/cred-type: generic}\nstringData: {password: s3cret}\n"),
        )
        .await;
    let out = daemon.cli(&[
        "promote",
        "-p",
        "shop",
        "--stage",
        "dev",
        "--freight",
        "first",
        "--wait",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let lease = cluster
        .ok(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/kargo-system-resources/leases/dray-leader",
            None,
        )
        .await;
    assert!(lease["spec"]["holderIdentity"].is_string(), "{lease}");
}
