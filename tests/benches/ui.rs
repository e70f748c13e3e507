//! How fast the web UI shows a big project, in real headless Chromium: projects of 10, 100 and
//! 1,000 Stages (chains of 10 Stages, one per Warehouse), each with 10,000 Freight, every
//! Stage holding one. For each: the time from navigation to the graph drawn (the page's own
//! `dray-graph` performance mark), how long the graph request took and how big it was (the
//! Resource Timing API), how many boxes are in the page (only what is in view is), and the
//! time to draw the view after jumping to the bottom of the graph. The release `dray serve`
//! runs as its own process.
//!
//!     cargo build --release -p dray && cargo bench -p dray-tests --bench ui

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dray::resource::Kind;
use dray::store::{StatusMode, Store};
use dray_tests::browser::Browser;
use dray_tests::manifests::object;
use serde_json::json;

const FREIGHT: usize = 10_000;
const CHAIN: usize = 10;
const RUNS: usize = 5;

fn freight_name(i: usize) -> String {
    format!("{:040x}", i as u128 * 2654435761)
}

/// Project `p{stages}`: `stages / 10` Warehouses, each feeding a chain of 10 Stages; 10,000
/// Freight spread over the Warehouses; each Stage holds its Warehouse's newest.
fn populate(store: &Store, stages: usize) {
    let project = format!("p{stages}");
    let warehouses = stages / CHAIN;
    let start = std::time::SystemTime::now() - Duration::from_secs(FREIGHT as u64);
    store
        .write(|tx| {
            tx.put(object(Kind::Project, "", &project, json!({"spec": {}})), None, StatusMode::Keep)?;
            for i in 0..FREIGHT {
                let w = i % warehouses;
                let at = humantime::format_rfc3339_millis(start + Duration::from_secs(i as u64));
                let mut o = object(Kind::Freight, &project, &freight_name(i), json!({
                    "alias": format!("freight-{i}"),
                    "origin": {"kind": "Warehouse", "name": format!("w{w:03}")},
                    "discoveredAt": at.to_string(),
                    "images": [{"repoURL": format!("registry.invalid/app-{w}"), "tag": format!("1.{i}.0"), "digest": format!("sha256:{i:064x}")}],
                }));
                o.metadata.labels.insert("kargo.akuity.io/alias".into(), format!("freight-{i}"));
                tx.put(o, None, StatusMode::Replace)?;
            }
            for w in 0..warehouses {
                let spec = json!({"spec": {"freightCreationPolicy": "Manual", "interval": "5m",
                    "subscriptions": [{"image": {"repoURL": format!("registry.invalid/app-{w}")}}]}});
                tx.put(object(Kind::Warehouse, &project, &format!("w{w:03}"), spec), None, StatusMode::Keep)?;
                let newest = FREIGHT - warehouses + w;
                let held = json!({"id": "x", "items": {format!("Warehouse/w{w:03}"): {
                    "name": freight_name(newest), "alias": format!("freight-{newest}"),
                    "origin": {"kind": "Warehouse", "name": format!("w{w:03}")},
                    "images": [{"repoURL": format!("registry.invalid/app-{w}"), "tag": format!("1.{newest}.0")}]}}});
                for s in 0..CHAIN {
                    let sources = if s == 0 {
                        json!({"direct": true})
                    } else {
                        json!({"stages": [format!("w{w:03}-s{:02}", s - 1)]})
                    };
                    let stage = json!({
                        "spec": {
                            "requestedFreight": [{"origin": {"kind": "Warehouse", "name": format!("w{w:03}")}, "sources": sources}],
                            "promotionTemplate": {"spec": {"steps": [{"uses": "compose-output", "config": {"x": "1"}}]}}
                        },
                        "status": {"freightHistory": [held.clone()]}
                    });
                    tx.put(object(Kind::Stage, &project, &format!("w{w:03}-s{s:02}"), stage), None, StatusMode::Replace)?;
                }
            }
            Ok::<(), dray::store::StoreError>(())
        })
        .expect("populate");
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("a data dir");
    let sizes = [10usize, 100, 1000];
    {
        let store = Store::open(&dir.path().join("dray.redb")).expect("the store");
        for stages in sizes {
            populate(&store, stages);
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let _daemon = Daemon(
        Command::new(dray_tests::dray_bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path())
            .env("DRAY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dray serve starts"),
    );
    let http = dray_tests::blocking_client();
    let started = Instant::now();
    while !tokio::task::block_in_place(|| {
        http.get(format!("{url}/readyz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    }) {
        assert!(started.elapsed() < Duration::from_secs(120), "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = std::fs::read_to_string(dray::service::token_path(dir.path()))
        .expect("token")
        .trim()
        .to_string();

    let browser = Browser::start().await;
    browser.goto(&format!("{url}/")).await;
    browser
        .run(
            "localStorage.setItem('dray.token', arguments[0])",
            vec![json!(token)],
        )
        .await;
    println!("{RUNS} loads each, {FREIGHT} Freight per project, headless Chromium at 1280×800:");
    for stages in sizes {
        let mut drawn = Vec::new();
        let mut request = Vec::new();
        let mut scrolled = Vec::new();
        let mut listed = Vec::new();
        let mut size = 0.0;
        let mut boxes = 0;
        for run in 0..RUNS {
            // A new document each time (the query makes it one; the UI's files are no-cache).
            browser.goto("about:blank").await;
            browser
                .goto(&format!("{url}/?run={stages}-{run}#/projects/p{stages}"))
                .await;
            let mark = browser
                .until(
                    "the graph drawn",
                    "return performance.getEntriesByName('dray-graph')[0]?.startTime ?? null",
                    Duration::from_secs(60),
                )
                .await;
            drawn.push(mark.as_f64().expect("a time"));
            let timing = browser
                .run(
                    "const r = performance.getEntriesByType('resource').find(e => e.name.includes('/graph')); return [r.responseEnd - r.startTime, r.encodedBodySize]",
                    vec![],
                )
                .await;
            request.push(timing[0].as_f64().unwrap_or_default());
            size = timing[1].as_f64().unwrap_or_default();
            boxes = browser
                .run("return document.querySelectorAll('.node').length", vec![])
                .await
                .as_u64()
                .unwrap_or_default();
            // Jump to the bottom right and time until the boxes there are drawn.
            let took = browser
                .client
                .execute_async(
                    "const done = arguments[arguments.length - 1];
                     const c = document.querySelector('.canvas');
                     const t = performance.now();
                     c.scrollTo(c.scrollWidth, c.scrollHeight);
                     requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t)));",
                    vec![],
                )
                .await
                .expect("scroll");
            scrolled.push(took.as_f64().unwrap_or_default());
            // The same project as a list (every Stage a row), built and then laid out.
            let took = browser
                .client
                .execute_async(
                    "const done = arguments[arguments.length - 1];
                     const t = performance.now();
                     location.hash = location.hash + '?list';
                     const wait = () => document.querySelector('table.stages')
                       ? requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t)))
                       : setTimeout(wait, 1);
                     wait();",
                    vec![],
                )
                .await
                .expect("the list");
            listed.push(took.as_f64().unwrap_or_default());
        }
        println!(
            "  {stages:>5} Stages: graph drawn p50 {:.0} ms (max {:.0}); GET …/graph p50 {:.0} ms, {:.0} KiB; {boxes} boxes in the page; jump to the bottom drawn in p50 {:.0} ms; the list view drawn in p50 {:.0} ms",
            percentile(&mut drawn, 0.5),
            percentile(&mut drawn, 1.0),
            percentile(&mut request, 0.5),
            size / 1024.0,
            percentile(&mut scrolled, 0.5),
            percentile(&mut listed, 0.5),
        );
    }
    browser.close().await;
}
