//! A hundred services per Stage: a Stage that selects its Warehouses by label instead of naming
//! each, end to end against a real Git server (`git daemon`): a new Warehouse with the label
//! feeds the Stage with no edit of it, a relabelled one stops feeding it.

use std::time::{Duration, Instant};

use dray_tests::Daemon;
use dray_tests::git::{GitDaemon, Repos};
use serde_json::Value;

/// Warehouse `name` of project `shop`, labelled `team`, on repository `repo`.
fn warehouse(name: &str, team: &str, repo: &str) -> String {
    format!(
        "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\n\
         metadata: {{name: {name}, namespace: shop, labels: {{team: {team}}}}}\n\
         spec:\n  subscriptions:\n  - git: {{repoURL: \"{repo}\"}}\n"
    )
}

/// Project `shop` with auto-promotion into `dev`, which takes every Warehouse of team `shop`.
const PIPELINE: &str = "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: shop}\n\
---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: shop, namespace: shop}\n\
spec:\n  promotionPolicies:\n  - stage: dev\n    autoPromotionEnabled: true\n\
---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {name: dev, namespace: shop}\n\
spec:\n  requestedFreight:\n  - originSelector: {matchLabels: {team: shop}}\n    sources: {direct: true}\n\
\x20 promotionTemplate:\n    spec:\n      steps:\n      - uses: compose-output\n        config: {done: true}\n";

/// The Warehouses whose Freight Stage `dev` holds now, sorted.
fn held_origins(stage: &Value) -> Vec<String> {
    let mut origins: Vec<String> = stage["status"]["freightHistory"][0]["items"]
        .as_object()
        .map(|items| items.keys().cloned().collect())
        .unwrap_or_default();
    origins.sort();
    origins
}

fn selected(stage: &Value) -> Vec<String> {
    stage["status"]["selectedOrigins"]
        .as_array()
        .map(|o| {
            o.iter()
                .filter_map(|o| o["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls Stage `dev` until `ready` holds (at most 60 s).
async fn dev_when(daemon: &Daemon, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stage = daemon.get_json("/v1/projects/shop/stages/dev").await;
        if ready(&stage) {
            return stage;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}: {stage:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_selecting_warehouses_by_label_takes_a_new_ones_freight_without_an_edit() {
    let repos = Repos::new();
    for service in ["web", "cart", "ledger", "search"] {
        repos.create(
            &format!("{service}.git"),
            &[("main.go", &format!("{service}\n"))],
        );
    }
    let server = GitDaemon::start(&repos);
    let repo = |service: &str| format!("{}/{service}.git", server.url);
    let daemon = Daemon::start().await;
    daemon
        .apply_ok(
            &(PIPELINE.to_string()
                + &warehouse("web", "shop", &repo("web"))
                + &warehouse("cart", "shop", &repo("cart"))
                + &warehouse("ledger", "bank", &repo("ledger"))),
        )
        .await;

    // The two Warehouses of team shop are discovered and their Freight promoted into dev; the
    // bank's is not.
    let stage = dev_when(&daemon, "web and cart in dev", |s| {
        held_origins(s) == ["Warehouse/cart", "Warehouse/web"]
    })
    .await;
    assert_eq!(selected(&stage), ["cart", "web"]);
    let out = daemon.cli(&["get", "stages", "-p", "shop"]);
    assert!(out.stdout.contains("warehouses{team=shop}"), "{out:?}");

    // A new Warehouse with the label: its Freight reaches dev, the Stage untouched.
    let generation = stage["metadata"]["generation"].clone();
    daemon
        .apply_ok(&warehouse("search", "shop", &repo("search")))
        .await;
    let stage = dev_when(&daemon, "search in dev", |s| {
        held_origins(s).contains(&"Warehouse/search".to_string())
    })
    .await;
    assert_eq!(selected(&stage), ["cart", "search", "web"]);
    assert_eq!(stage["metadata"]["generation"], generation);

    // Relabelled to another team, cart is no longer an origin of dev: its Freight may not be
    // promoted there, and the reason says so.
    daemon
        .apply_ok(&warehouse("cart", "bank", &repo("cart")))
        .await;
    dev_when(&daemon, "cart deselected", |s| {
        selected(s) == ["search", "web"]
    })
    .await;
    let cart = daemon
        .freight("shop")
        .into_iter()
        .find(|f| f["origin"]["name"] == "cart")
        .expect("cart's Freight");
    let name = cart["metadata"]["name"].as_str().expect("a name");
    let out = daemon.cli(&["explain", "freight", name, "--stage", "dev", "-p", "shop"]);
    assert!(
        out.stdout
            .contains("does not request Freight from Warehouse/cart (it requests Warehouse/search, Warehouse/web)"),
        "{out:?}"
    );
    let out = daemon.promote("shop", "dev", name);
    assert_eq!(out.code, 1, "{out:?}");
}
