//! Garbage collection with Kargo's rules: Freight in use and anything newer stays, older
//! Freight beyond the retained count goes, and so do old Promotions with their logs.

use std::time::{Duration, Instant};

use dray_tests::{Daemon, manifests};
use serde_json::Value;

fn aliases(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["alias"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collects_old_freight_and_promotions_but_never_what_a_stage_uses() {
    let mut daemon = Daemon::start().await;
    let step = "- uses: compose-output\n  config: {done: true}";
    daemon
        .apply_ok(
            &(manifests::project("shop", &["image: {repoURL: registry.example/web}"])
                + &manifests::stage("shop", "test", step)),
        )
        .await;
    for n in 1..=5 {
        daemon
            .apply_ok(&manifests::freight(
                "shop",
                &format!("web-{n}"),
                &format!("images:\n- {{repoURL: registry.example/web, tag: \"{n}.0.0\", digest: \"sha256:{n}\"}}"),
            ))
            .await;
    }
    for _ in 0..2 {
        let out = daemon.promote("shop", "test", "web-3");
        assert_eq!(out.code, 0, "{out:?}");
    }
    let promotions = daemon.get_json("/v1/projects/shop/promotions").await;
    let older = promotions["items"][0]["metadata"]["name"]
        .as_str()
        .expect("a promotion")
        .to_string();
    let log = dray::engine::logs::path(&daemon.data_dir, "shop", &older);
    assert!(log.exists(), "{}", log.display());

    // Nothing is old enough under Kargo's defaults (336h): everything is still there.
    assert_eq!(
        aliases(&daemon.get_json("/v1/projects/shop/freight").await).len(),
        5
    );

    // Keep one Freight beyond what is in use and one Promotion per Stage, at any age.
    daemon.config.gc = dray::service::GcConfig {
        max_retained_freight: 1,
        min_freight_deletion_age: "0s".into(),
        max_retained_promotions: 1,
        min_promotion_deletion_age: "0s".into(),
        interval: "1s".into(),
    };
    daemon.restart().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let freight = aliases(&daemon.get_json("/v1/projects/shop/freight").await);
        if freight.len() == 4 {
            // web-3 is in the Stage, web-4 and web-5 are newer, web-2 is the one retained.
            assert_eq!(freight, ["web-2", "web-3", "web-4", "web-5"]);
            break;
        }
        assert!(Instant::now() < deadline, "still {freight:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promotions = daemon.get_json("/v1/projects/shop/promotions").await;
    let left: Vec<&str> = promotions["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_ne!(left[0], older);
    assert!(!log.exists(), "the collected Promotion's log is gone too");
    let stage = daemon.get_json("/v1/projects/shop/stages/test").await;
    assert_eq!(
        stage["status"]["freightHistory"][0]["items"]["Warehouse/app"]["alias"],
        "web-3"
    );
}
