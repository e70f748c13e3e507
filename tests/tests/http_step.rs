//! The `http` step in a real promotion: it polls a real HTTP endpoint until the success
//! expression holds, its outputs reach the Promotion, and a Promotion stuck polling can be
//! aborted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dray_tests::{Daemon, manifests};
use serde_json::Value;

/// An HTTP endpoint that answers `{"state": "pending"}` to its first `pending` GETs and
/// `{"state": "ready", "version": "1.4.2"}` after; returns its address and a hit counter.
fn status_server(pending: usize) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let address = dray_tests::http::json_server(move |n| {
        counter.store(n, Ordering::SeqCst);
        if n > pending {
            r#"{"state": "ready", "version": "1.4.2"}"#.to_string()
        } else {
            r#"{"state": "pending"}"#.to_string()
        }
    });
    (address, hits)
}

fn manifests(address: &str, success: &str) -> String {
    let steps = format!(
        r#"- uses: http
  as: wait
  config:
    url: http://{address}/status
    successExpression: '{success}'
    failureExpression: 'response.status >= 500'
    pollInterval: 1s
    outputs:
    - name: version
      fromExpression: response.body.version
    # A map literal with computed values (expr-lang alone would crash the plugin on it).
    - name: summary
      fromExpression: "{{'version': response.body.version, 'ok': response.status < 300}}"
- uses: compose-output
  as: report
  config:
    deployed: ${{{{ outputs.wait.version }}}}"#
    );
    manifests::project("shop", &["image: {repoURL: registry.example/web}"])
        + &manifests::stage("shop", "test", &steps)
        + &manifests::freight(
            "shop",
            "web-1",
            "images:\n- {repoURL: registry.example/web, tag: \"1.4.2\"}",
        )
}

async fn start(address: &str) -> Daemon {
    Daemon::start_with(dray::service::StepPolicy {
        allow_hosts: vec![address.to_string()],
        ..Default::default()
    })
    .await
    .expect("the daemon starts")
}

async fn promotion(daemon: &Daemon, name: &str) -> Value {
    daemon
        .get_json(&format!("/v1/projects/shop/promotions/{name}"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_until_the_success_expression_holds_and_passes_its_outputs_on() {
    let (address, hits) = status_server(2);
    let daemon = start(&address).await;
    daemon
        .apply_ok(&manifests(&address, r#"response.body.state == "ready""#))
        .await;
    let out = daemon.promote("shop", "test", "web-1");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "two pending answers, then ready"
    );
    let list = daemon.get_json("/v1/projects/shop/promotions").await;
    let name = list["items"][0]["metadata"]["name"]
        .as_str()
        .expect("a promotion")
        .to_string();
    let status = promotion(&daemon, &name).await["status"].clone();
    assert_eq!(status["phase"], "Succeeded", "{status:#}");
    assert_eq!(status["state"]["wait"]["version"], "1.4.2");
    assert_eq!(
        status["state"]["wait"]["summary"],
        serde_json::json!({"version": "1.4.2", "ok": true})
    );
    assert_eq!(status["state"]["report"]["deployed"], "1.4.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_waiting_on_a_poll_can_be_aborted() {
    let (address, hits) = status_server(usize::MAX);
    let daemon = start(&address).await;
    daemon
        .apply_ok(&manifests(&address, r#"response.body.state == "ready""#))
        .await;
    let out = daemon.cli(&[
        "promote",
        "-p",
        "shop",
        "--stage",
        "test",
        "--freight",
        "web-1",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let list = daemon.get_json("/v1/projects/shop/promotions").await;
    let name = list["items"][0]["metadata"]["name"]
        .as_str()
        .expect("a promotion")
        .to_string();
    // Wait until the step has polled at least twice (so it is parked between polls).
    for _ in 0..200 {
        if hits.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(hits.load(Ordering::SeqCst) >= 2, "the step polls");
    let running = promotion(&daemon, &name).await["status"].clone();
    assert_eq!(running["phase"], "Running", "{running:#}");
    assert_eq!(
        running["stepExecutionMetadata"][0]["status"], "Running",
        "{running:#}"
    );

    let out = daemon.cli(&["promote", "-p", "shop", "--abort", &name]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut status = Value::Null;
    for _ in 0..200 {
        status = promotion(&daemon, &name).await["status"].clone();
        if status["phase"] == "Aborted" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status["phase"], "Aborted", "{status:#}");
    let polls = hits.load(Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        polls,
        "an aborted promotion polls no more"
    );
}

/// `http-download` writes a file of the work directory that later steps read; a missing file
/// (404) fails the step and leaves nothing behind; more than 100 MiB is refused mid-stream; an
/// existing file stays unless `allowOverwrite` says otherwise; a path out of the work directory
/// writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_download_writes_a_file_within_its_limits() {
    let address = dray_tests::http::file_server(|path| match path {
        "/chart.tgz" => dray_tests::http::Answer {
            status: 200,
            byte: b'x',
            length: 300_000,
        },
        "/huge" => dray_tests::http::Answer {
            status: 200,
            byte: b'0',
            length: (100 << 20) + 1,
        },
        _ => dray_tests::http::Answer {
            status: 404,
            byte: b'-',
            length: 9,
        },
    });
    let daemon = start(&address).await;
    let stage = |name: &str, steps: &str| manifests::stage("shop", name, steps);
    let manifests = manifests::project("shop", &["image: {repoURL: registry.example/web}"])
        + &stage(
            "ok",
            &format!(
                r#"- uses: http-download
  config: {{url: "http://{address}/chart.tgz", outPath: charts/app.tgz}}
- uses: http-download
  as: again
  continueOnError: true
  config: {{url: "http://{address}/chart.tgz", outPath: charts/app.tgz}}
- uses: http-download
  config: {{url: "http://{address}/chart.tgz", outPath: charts/app.tgz, allowOverwrite: true}}"#
            ),
        )
        + &stage(
            "missing",
            &format!(
                "- uses: http-download\n  config: {{url: \"http://{address}/nothing\", outPath: a.tgz}}\n- uses: compose-output\n  if: ${{{{ always() }}}}\n  config: {{}}"
            ),
        )
        + &stage(
            "huge",
            &format!(
                "- uses: http-download\n  config: {{url: \"http://{address}/huge\", outPath: big.bin}}"
            ),
        )
        + &stage(
            "escape",
            &format!(
                "- uses: http-download\n  config: {{url: \"http://{address}/chart.tgz\", outPath: ../../escaped.bin}}"
            ),
        )
        + &manifests::freight(
            "shop",
            "web-1",
            "images:\n- {repoURL: registry.example/web, tag: \"1.4.2\"}",
        );
    daemon.apply_ok(&manifests).await;

    let out = daemon.promote("shop", "ok", "web-1");
    assert_eq!(out.code, 0, "{out:?}");
    let promotions = daemon.get_json("/v1/projects/shop/promotions").await;
    let ok = promotions["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["spec"]["stage"] == "ok")
        .unwrap()
        .clone();
    let steps = ok["status"]["stepExecutionMetadata"].as_array().unwrap();
    assert_eq!(steps[1]["status"], "Failed", "{steps:?}");
    assert!(
        steps[1]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("exists; set allowOverwrite: true"),
        "{steps:?}"
    );
    assert_eq!(steps[2]["status"], "Succeeded", "{steps:?}");
    let name = ok["metadata"]["name"].as_str().unwrap();
    let logs = daemon.cli(&["logs", "promotion", name, "-p", "shop"]);
    assert!(
        logs.stdout.contains("downloaded 300000 bytes from http://"),
        "{}",
        logs.stdout
    );

    let out = daemon.promote("shop", "missing", "web-1");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("/nothing: HTTP 404"), "{}", out.stdout);

    let out = daemon.promote("shop", "huge", "web-1");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("the download is larger than 100 MiB"),
        "{}",
        out.stdout
    );

    // Hostile: a path out of the work directory is refused by the sandbox; nothing is written
    // beside it.
    let out = daemon.promote("shop", "escape", "web-1");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("\"../../escaped.bin\" leaves the work directory"),
        "{}",
        out.stdout
    );
    for dir in ["work", "work/shop", ""] {
        assert!(
            !daemon.data_dir.join(dir).join("escaped.bin").exists(),
            "written in {dir:?}"
        );
    }
}
