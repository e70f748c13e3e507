//! A hundred services in one GitOps monorepo: 100 Warehouses (one image each, on a real
//! registry) selected by label by Stage `dev`, which renders every service's values file with a
//! looping PromotionTask and pushes to a real Git server (`git daemon`). All 100 images get a
//! new tag at once and 100 webhooks (Quay's format) say so; the figures are the time from the
//! first webhook until `dev` holds all 100 new Freight, the Promotions and commits that took,
//! and the process's peak RSS. Run twice: with auto-promotion's `batchWindow` (one Promotion
//! for what arrives together) and without it (one Promotion per Freight, as Kargo does; each
//! renders only its own service).
//!
//!     cargo build --release -p dray && cargo bench -p dray-tests --bench many_services

use std::time::{Duration, Instant};

use dray_tests::Daemon;
use dray_tests::git::{GitDaemon, Repos};
use dray_tests::registry::Registry;
use serde_json::Value;

const SERVICES: usize = 100;

fn pipeline(registry: &str, repo: &str, batch_window: Option<&str>) -> String {
    let window = batch_window
        .map(|w| format!("    batchWindow: {w}\n"))
        .unwrap_or_default();
    // Batched, a Promotion renders what it carries; one per Freight, only its own service
    // (the collection's first item).
    let items = if batch_window.is_some() {
        "${{ ctx.freight }}"
    } else {
        "${{ ctx.freight[0:1] }}"
    };
    let mut all = format!(
        "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {{name: shop}}\n\
         ---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {{name: shop, namespace: shop}}\n\
         spec:\n  promotionPolicies:\n  - stage: dev\n    autoPromotionEnabled: true\n{window}\
         \x20 webhookReceivers:\n  - name: quay\n    quay: {{secretRef: {{name: hooks}}}}\n\
         ---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: hooks\n  namespace: shop\n  labels: {{kargo.akuity.io/cred-type: generic}}\n\
         stringData: {{secret: quay-secret}}\n\
         ---\napiVersion: kargo.akuity.io/v1alpha1\nkind: PromotionTask\nmetadata: {{name: render, namespace: shop}}\n\
         spec:\n  steps:\n  - uses: yaml-update\n    as: set\n    config:\n\
         \x20     path: ./out/dev/${{{{ item.origin.name }}}}/values.yaml\n\
         \x20     updates: [{{key: image.tag, value: \"${{{{ item.images[0].tag }}}}\"}}]\n\
         ---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {{name: dev, namespace: shop}}\n\
         spec:\n  requestedFreight:\n  - originSelector: {{matchLabels: {{team: shop}}}}\n    sources: {{direct: true}}\n\
         \x20 promotionTemplate:\n    spec:\n      steps:\n\
         \x20     - uses: git-clone\n        config: {{repoURL: \"{repo}\", checkout: [{{branch: main, path: ./out}}]}}\n\
         \x20     - task: {{name: render}}\n        as: render\n        forEach: \"{items}\"\n\
         \x20     - uses: git-commit\n        config: {{path: ./out, message: \"dev: ${{{{ len(ctx.freight) }}}} services\"}}\n\
         \x20     - uses: git-push\n        config: {{path: ./out, targetBranch: main}}\n"
    );
    for n in 0..SERVICES {
        all.push_str(&format!(
            "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\n\
             metadata: {{name: svc-{n:02}, namespace: shop, labels: {{team: shop}}}}\n\
             spec:\n  interval: 1h\n  subscriptions:\n  - image: {{repoURL: \"{registry}/shop/svc-{n:02}\"}}\n"
        ));
    }
    all
}

/// The tags of the images Stage `dev` holds, one per service.
async fn dev_tags(daemon: &Daemon) -> Vec<String> {
    let stage = daemon.get_json("/v1/projects/shop/stages/dev").await;
    stage["status"]["freightHistory"][0]["items"]
        .as_object()
        .map(|items| {
            items
                .values()
                .filter_map(|i| i["images"][0]["tag"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn until_dev_holds(daemon: &Daemon, tag: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let tags = dev_tags(daemon).await;
        if tags.len() == SERVICES && tags.iter().all(|t| t == tag) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dev holds {} services at {tag} after {limit:?}",
            tags.iter().filter(|t| *t == tag).count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn promotions(daemon: &Daemon) -> usize {
    let out = daemon.cli(&["get", "promotions", "-p", "shop", "-o", "json"]);
    let list: Value = serde_json::from_str(&out.stdout).expect("json");
    list["items"].as_array().map_or(0, Vec::len)
}

/// The process's peak resident set (VmHWM), in MiB: the daemon runs in this process.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn run(batch_window: Option<&str>) {
    let registry = Registry::start();
    for n in 0..SERVICES {
        registry
            .push(
                &format!("shop/svc-{n:02}"),
                "1.0.0",
                &format!("{n} one"),
                &[],
            )
            .await;
    }
    let repos = Repos::new();
    repos.create_many("gitops.git", SERVICES, |n| {
        (
            format!("dev/svc-{n:02}/values.yaml"),
            "image:\n  tag: none\n".to_string(),
        )
    });
    let server = GitDaemon::start(&repos);
    let repo = format!("{}/gitops.git", server.url);
    let daemon = Daemon::start().await;
    daemon
        .apply_ok(&pipeline(&registry.address, &repo, batch_window))
        .await;
    // The first discovery: every service at 1.0.0 in dev.
    until_dev_holds(&daemon, "1.0.0", Duration::from_secs(600)).await;
    let (promotions_before, commits_before) = (
        promotions(&daemon),
        repos.subjects("gitops.git", "main").len(),
    );

    // All images get 2.0.0 at once, and a webhook each.
    for n in 0..SERVICES {
        registry
            .push(
                &format!("shop/svc-{n:02}"),
                "2.0.0",
                &format!("{n} two"),
                &[],
            )
            .await;
    }
    let receivers = daemon.get_json("/v1/projects/shop/webhookreceivers").await;
    let path = receivers["items"][0]["path"]
        .as_str()
        .expect("a receiver")
        .to_string();
    let client = dray::tls::client();
    let started = Instant::now();
    let hooks: Vec<_> = (0..SERVICES)
        .map(|n| {
            let body = serde_json::json!({
                "docker_url": format!("{}/shop/svc-{n:02}", registry.address),
                "updated_tags": ["2.0.0"],
            });
            client
                .post(format!("{}{path}", daemon.url))
                .json(&body)
                .send()
        })
        .collect();
    for hook in futures_util::future::join_all(hooks).await {
        assert!(hook.expect("webhook").status().is_success());
    }
    let acknowledged = started.elapsed();
    // Discovery's part: until the 100 new Freight exist.
    loop {
        let freight = daemon.get_json("/v1/projects/shop/freight").await;
        if freight["items"].as_array().map_or(0, Vec::len) >= 2 * SERVICES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let discovered = started.elapsed();
    until_dev_holds(&daemon, "2.0.0", Duration::from_secs(900)).await;
    let took = started.elapsed();
    let made = promotions(&daemon) - promotions_before;
    let commits = repos.subjects("gitops.git", "main").len() - commits_before;
    println!(
        "{:<26} 100 webhooks answered in {:>4.0} ms; 100 Freight after {:>6.2} s; all in dev after {:>6.2} s; {made:>3} promotions, {commits:>3} commits; peak RSS {:.0} MiB",
        match batch_window {
            Some(w) => format!("batchWindow {w}"),
            None => "one Promotion per Freight".to_string(),
        },
        acknowledged.as_secs_f64() * 1000.0,
        discovered.as_secs_f64(),
        took.as_secs_f64(),
        peak_rss_mib()
    );
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // Each in its own process, for its own peak RSS (`batched`, `batched-0s` or `single`).
    match which.as_str() {
        "single" => runtime.block_on(run(None)),
        "batched" => runtime.block_on(run(Some("5s"))),
        "batched-0s" => runtime.block_on(run(Some("0s"))),
        _ => {
            let exe = std::env::current_exe().expect("this benchmark");
            for mode in ["batched", "batched-0s", "single"] {
                let status = std::process::Command::new(&exe)
                    .arg(mode)
                    .status()
                    .expect("runs");
                assert!(status.success(), "{mode} failed");
            }
        }
    }
}
