//! `/metrics` scraped by a real Prometheus (Debian's `prometheus`, installed by tests/run.sh):
//! a promotion, its step call and a stray webhook show up as series Prometheus can query, and a
//! token that may not read every project is refused (the target is down with 403).

use std::time::{Duration, Instant};

use dray_tests::prometheus::Prometheus;
use dray_tests::{Daemon, manifests};
use serde_json::Value;

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

/// Asks Prometheus `query` until `check` accepts the answer's result, or fails after 30 s.
async fn query_until(prometheus: &Prometheus, query: &str, check: impl Fn(&[Value]) -> bool) {
    let client = dray::tls::client();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Ok(answer) = client
            .get(format!("{}/api/v1/query", prometheus.url))
            .query(&[("query", query)])
            .send()
            .await
            && let Ok(json) = answer.json::<Value>().await
        {
            if json["data"]["result"]
                .as_array()
                .is_some_and(|r| check(r.as_slice()))
            {
                return;
            }
            last = json;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("Prometheus never answered {query} as expected; last answer: {last}");
}

fn value(series: &Value) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_promotions_steps_and_webhooks() {
    let daemon = Daemon::start().await;
    let pipeline = format!(
        "{}{}{}",
        manifests::project("shop", &["image: {repoURL: registry.example/web}"]),
        manifests::stage(
            "shop",
            "dev",
            "- uses: compose-output\n  config: {done: true}"
        ),
        manifests::freight(
            "shop",
            "first",
            &format!(
                "images: [{{repoURL: registry.example/web, tag: 1.0.0, digest: \"{DIGEST}\"}}]"
            ),
        ),
    );
    daemon.apply_ok(&pipeline).await;
    let out = daemon.promote("shop", "dev", "first");
    assert_eq!(out.code, 0, "{out:?}");
    let webhook = dray::tls::client()
        .post(format!("{}/webhooks/made-up/nothing", daemon.url))
        .body("{}")
        .send()
        .await
        .expect("an answer");
    assert_eq!(webhook.status(), 404);

    let make = |args: &[&str]| {
        let out = daemon.cli(args);
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout.trim().to_string()
    };
    let monitoring = make(&[
        "token",
        "create",
        "prometheus",
        "--role",
        "viewer",
        "--all-projects",
    ]);
    let shop_only = make(&[
        "token",
        "create",
        "shop-viewer",
        "--role",
        "viewer",
        "-p",
        "shop",
    ]);
    let target = daemon.url.trim_start_matches("http://");
    let prometheus = Prometheus::scraping(&[
        ("dray", target, &monitoring),
        ("narrow", target, &shop_only),
    ]);

    query_until(
        &prometheus,
        r#"dray_promotions_total{job="dray",project="shop",stage="dev",phase="Succeeded"}"#,
        |r| r.len() == 1 && value(&r[0]) == 1.0,
    )
    .await;
    query_until(
        &prometheus,
        r#"dray_step_calls_total{job="dray",kind="compose-output",result="succeeded"}"#,
        |r| r.len() == 1 && value(&r[0]) >= 1.0,
    )
    .await;
    query_until(
        &prometheus,
        r#"dray_promotion_duration_seconds_count{job="dray",project="shop",stage="dev"}"#,
        |r| r.len() == 1 && value(&r[0]) == 1.0,
    )
    .await;
    query_until(
        &prometheus,
        r#"dray_webhook_requests_total{job="dray",receiver="unknown",result="not_found"}"#,
        |r| r.len() == 1 && value(&r[0]) == 1.0,
    )
    .await;
    query_until(&prometheus, r#"dray_store_size_bytes{job="dray"}"#, |r| {
        r.len() == 1 && value(&r[0]) > 0.0
    })
    .await;
    // The token of one project cannot read metrics that name every project.
    query_until(&prometheus, r#"up{job="narrow"}"#, |r| {
        r.len() == 1 && value(&r[0]) == 0.0
    })
    .await;
    query_until(&prometheus, r#"up{job="dray"}"#, |r| {
        r.len() == 1 && value(&r[0]) == 1.0
    })
    .await;
}
