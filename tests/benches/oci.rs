//! Plugins from a registry: what the first use of a reference costs (resolve the tag, pull and
//! check the manifest and the component, compile it, run the step), what every later use costs
//! (no registry request, no compilation), and the same step built in; next to `wkg oci pull` of
//! the same component.
//!
//!     cargo build --release -p dray && cargo bench -p dray-tests --bench oci

use std::process::Command;
use std::time::{Duration, Instant};

use dray_tests::registry::Registry;
use dray_tests::{Daemon, manifests};

/// A project whose Stage `dev` runs `uses` (the http plugin's `http`, asking `url`).
fn pipeline(uses: &str, url: &str) -> String {
    format!(
        "{}{}{}",
        manifests::project("shop", &["image: {repoURL: registry.example/web}"]),
        manifests::stage(
            "shop",
            "dev",
            &format!("- uses: {uses}\n  config: {{url: \"{url}\"}}")
        ),
        manifests::freight(
            "shop",
            "f1",
            "images: [{repoURL: registry.example/web, tag: 1.0.0, digest: \"sha256:0000000000000000000000000000000000000000000000000000000000000001\"}]",
        ),
    )
}

/// Promotes f1 into dev through the API and waits until it succeeded (polled every 2 ms).
async fn promote(daemon: &Daemon) -> Duration {
    let started = Instant::now();
    let created: serde_json::Value = daemon
        .api(
            reqwest::Method::POST,
            "/v1/projects/shop/stages/dev/promote",
        )
        .json(&serde_json::json!({"freight": "f1"}))
        .send()
        .await
        .expect("promote")
        .json()
        .await
        .expect("json");
    let name = created["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_string();
    loop {
        let p = daemon
            .get_json(&format!("/v1/projects/shop/promotions/{name}"))
            .await;
        match p["status"]["phase"].as_str() {
            Some("Succeeded") => return started.elapsed(),
            Some("Failed" | "Errored" | "Aborted") => panic!("{p:#}"),
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// `component` with a custom section appended: the same plugin with another content digest, so
/// nothing compiled before (the built-in copy) is reused.
fn distinct(component: &[u8]) -> Vec<u8> {
    let name = b"dray-bench";
    let payload = b"a plugin not built in";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0); // custom section
    out.push(section.len() as u8);
    out.extend_from_slice(&section);
    out
}

/// Manifest and blob requests the registry answered (the step's own `/v2/` asks are not counted).
fn requests(registry: &Registry) -> usize {
    registry
        .requests()
        .iter()
        .filter(|r| r.contains("/manifests/") || r.contains("/blobs/"))
        .count()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let registry = Registry::start();
    let component = dray::runtime::BUILTIN_PLUGINS
        .iter()
        .find(|(n, _)| *n == "steps")
        .expect("the built-in steps")
        .1;
    let dir = tempfile::tempdir().expect("a dir");
    let file = dir.path().join("http.wasm");
    let component = distinct(component);
    std::fs::write(&file, &component).expect("write");
    let plain = format!("{}/steps/http:1.0.0", registry.address);
    let url = format!("http://{}/v2/", registry.address);
    let reference = format!("oci://{plain}");
    println!(
        "component: the built-in steps (a custom section added, so it is not the built-in copy), {:.1} MB; its http step asks the registry's /v2/\n",
        component.len() as f64 / 1e6
    );
    println!("| What | runs | p50 | p99 |\n|---|---|---|---|");
    runtime.block_on(async {
        let policy = || dray::service::StepPolicy {
            oci: vec![dray::oci::plugins::OciRule {
                pattern: format!("{}/steps/*", registry.address),
                // The built-in steps import every capability; the http step uses one.
                grants: ["git", "credentials", "http", "metadata", "oci", "helm", "kube"]
                    .map(String::from)
                    .to_vec(),
                ..Default::default()
            }],
            allow_hosts: vec![registry.address.clone()],
            ..Default::default()
        };
        let mut cold = Vec::new();
        let mut daemon = None;
        for i in 0..3 {
            let d = Daemon::start_with_own_cache(dray::Config {
                steps: policy(),
                ..dray::Config::default()
            })
            .await
            .expect("the daemon");
            if i == 0 {
                let pushed = d.cli(&["plugin", "push", &reference, &file.display().to_string()]);
                assert_eq!(pushed.code, 0, "{pushed:?}");
            }
            d.apply_ok(&pipeline(&format!("{reference}#http"), &url)).await;
            cold.push(promote(&d).await);
            daemon = Some(d);
        }
        dray_tests::report(
            "first use on a new data dir: resolve, pull, verify, compile (Winch), run (promotion request to Succeeded)",
            cold,
        );
        let daemon = daemon.expect("a daemon");
        let before = requests(&registry);
        let mut warm = Vec::new();
        for _ in 0..20 {
            warm.push(promote(&daemon).await);
        }
        assert_eq!(
            requests(&registry),
            before,
            "a pinned, loaded plugin makes no registry request"
        );
        dray_tests::report("every later use (0 registry requests, 0 compilations)", warm);
        daemon.apply_ok(&pipeline("http", &url)).await;
        let mut builtin = Vec::new();
        for _ in 0..20 {
            builtin.push(promote(&daemon).await);
        }
        dray_tests::report("the same step built in", builtin);
    });
    let wkg = std::env::var_os("DRAY_WKG").map_or_else(
        || {
            std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/dray-tools/bin/wkg")
        },
        Into::into,
    );
    let out = dir.path().join("pulled.wasm");
    let pulls: Vec<Duration> = (0..10)
        .map(|_| {
            let started = Instant::now();
            let status = Command::new(&wkg)
                .args(["oci", "pull", "--insecure", &registry.address, &plain, "-o"])
                .arg(&out)
                .output()
                .expect("wkg runs (tests/run.sh installs it)");
            assert!(status.status.success(), "{status:?}");
            started.elapsed()
        })
        .collect();
    dray_tests::report(
        "`wkg oci pull` of the same component (download only)",
        pulls,
    );
}
