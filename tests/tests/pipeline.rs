//! A three-Stage pipeline end to end (test → uat → prod): Freight flows to `test` by itself, is
//! verified there by a `web` metric against a real endpoint, reaches `uat` only once verified
//! and soaked, and waits for a person before `prod`. A failing verification blocks `uat`; an
//! approval lets Freight past it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dray_tests::{Daemon, manifests};
use serde_json::Value;

/// An HTTP endpoint answering `{"ok": <flag>}`; returns its address and the flag.
fn health_server() -> (String, Arc<AtomicBool>) {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let address = dray_tests::http::json_server(move |_| {
        format!(r#"{{"ok": {}}}"#, flag.load(Ordering::SeqCst))
    });
    (address, healthy)
}

const STEP: &str = "- uses: compose-output\n  as: note\n  config: {stage: \"${{ ctx.stage }}\"}";

fn pipeline(address: &str) -> String {
    let stage = |name: &str, sources: &str, extra: &str| {
        format!(
            "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec:\n  requestedFreight:\n  - origin: {{kind: Warehouse, name: app}}\n    sources: {sources}\n\
             \x20 promotionTemplate:\n    spec:\n      steps:\n{}{extra}",
            STEP.lines()
                .map(|l| format!("      {l}\n"))
                .collect::<String>()
        )
    };
    manifests::project("shop", &["image: {repoURL: registry.example/web}"])
        + "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: shop, namespace: shop}\n\
           spec:\n  promotionPolicies:\n  - stageSelector: {name: \"regex:^(test|uat)$\"}\n    autoPromotionEnabled: true\n"
        + "---\napiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: health, namespace: shop}\n\
           spec:\n  args: [{name: address}]\n  metrics:\n  - name: healthy\n    successCondition: result == true\n\
           \x20   provider:\n      web:\n        url: \"http://{{args.address}}/health\"\n        jsonPath: \"{$.ok}\"\n"
        + &stage(
            "test",
            "{direct: true}",
            &format!(
                "  verification:\n    analysisTemplates: [{{name: health}}]\n    args: [{{name: address, value: \"{address}\"}}]\n"
            ),
        )
        + &stage("uat", "{stages: [test], requiredSoakTime: 8s}", "")
        + &stage("prod", "{stages: [uat]}", "")
}

fn freight(alias: &str, tag: &str) -> String {
    manifests::freight(
        "shop",
        alias,
        &format!(
            "images:\n- {{repoURL: registry.example/web, tag: \"{tag}\", digest: \"sha256:{tag}\"}}"
        ),
    )
}

/// Polls `path` until `ready` holds (at most 90 s) and returns the last answer.
async fn eventually(
    daemon: &Daemon,
    path: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let value = daemon.get_json(path).await;
        if ready(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}: {value:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The aliases of the Freight a Stage holds now.
fn holds(stage: &Value) -> Vec<String> {
    stage["status"]["freightHistory"][0]["items"]
        .as_object()
        .map(|items| {
            items
                .values()
                .filter_map(|i| i["alias"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn verification(stage: &Value) -> &Value {
    &stage["status"]["freightHistory"][0]["verificationHistory"][0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freight_flows_through_verification_soak_and_approval() {
    let (address, healthy) = health_server();
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        allow_hosts: vec![address.clone()],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");
    daemon.apply_ok(&pipeline(&address)).await;
    daemon.apply_ok(&freight("web-1", "1.0.0")).await;

    // test takes it by itself and verifies it against the endpoint.
    let test = eventually(
        &daemon,
        "/v1/projects/shop/stages/test",
        "web-1 verified in test",
        |s| holds(s) == ["web-1"] && verification(s)["phase"] == "Successful",
    )
    .await;
    assert_eq!(test["status"]["autoPromotionEnabled"], true);
    let run = verification(&test)["id"]
        .as_str()
        .expect("a run")
        .to_string();
    let logs = daemon.cli(&["logs", "verification", "test", "-p", "shop"]);
    assert_eq!(logs.code, 0, "{logs:?}");
    assert!(
        logs.stdout.contains("[healthy]")
            && logs.stdout.contains("measurement: successful (value true)"),
        "{}",
        logs.stdout
    );

    // uat waits for the soak and says so; then takes it by itself.
    let explain = daemon.cli(&[
        "explain", "freight", "web-1", "--stage", "uat", "-p", "shop",
    ]);
    assert_eq!(explain.code, 0, "{explain:?}");
    assert!(
        explain.stdout.contains("is not available to Stage uat")
            && explain.stdout.contains("of the 8s required"),
        "{}",
        explain.stdout
    );
    eventually(
        &daemon,
        "/v1/projects/shop/stages/uat",
        "web-1 in uat after the soak",
        |s| holds(s) == ["web-1"],
    )
    .await;

    // prod does not auto-promote: it lists web-1 as available and a person promotes it.
    let listed = daemon.cli(&["get", "freight", "-p", "shop", "--stage", "prod"]);
    assert!(
        listed.stdout.contains("web-1") && listed.stdout.contains("verified in uat"),
        "{listed:?}"
    );
    let prod = daemon.get_json("/v1/projects/shop/stages/prod").await;
    assert_eq!(prod["status"]["autoPromotionEnabled"], false);
    assert!(holds(&prod).is_empty(), "{prod:#}");
    let promoted = daemon.promote("shop", "prod", "web-1");
    assert_eq!(promoted.code, 0, "{promoted:?}");

    // A failing verification blocks uat.
    healthy.store(false, Ordering::SeqCst);
    daemon.apply_ok(&freight("web-2", "2.0.0")).await;
    let test = eventually(
        &daemon,
        "/v1/projects/shop/stages/test",
        "web-2's verification to fail",
        |s| holds(s) == ["web-2"] && verification(s)["phase"] == "Failed",
    )
    .await;
    assert!(
        verification(&test)["message"]
            .as_str()
            .unwrap_or_default()
            .contains("metric healthy: failed"),
        "{test:#}"
    );
    assert_ne!(verification(&test)["id"], run.as_str());
    let refused = daemon.cli(&[
        "promote",
        "-p",
        "shop",
        "--stage",
        "uat",
        "--freight",
        "web-2",
    ]);
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("not available to Stage \"uat\": not verified in test"),
        "{refused:?}"
    );
    let uat = daemon.get_json("/v1/projects/shop/stages/uat").await;
    assert_eq!(holds(&uat), ["web-1"]);

    // An approval bypasses it: auto-promotion takes web-2 into uat at once, no soak.
    let approved = daemon.cli(&[
        "approve",
        "-p",
        "shop",
        "--freight",
        "web-2",
        "--stage",
        "uat",
    ]);
    assert_eq!(approved.code, 0, "{approved:?}");
    eventually(
        &daemon,
        "/v1/projects/shop/stages/uat",
        "web-2 in uat after approval",
        |s| holds(s) == ["web-2"],
    )
    .await;
    let web1 = daemon.get_json("/v1/projects/shop/freight/web-1").await;
    let web1 = if web1["status"].is_object() {
        web1
    } else {
        panic!("{web1:#}")
    };
    assert!(
        web1["status"]["currentlyIn"]["uat"].is_null(),
        "web-1 left uat: {web1:#}"
    );
    assert!(
        web1["status"]["verifiedIn"]["uat"]["longestSoak"].is_string(),
        "{web1:#}"
    );
    assert!(
        web1["status"]["currentlyIn"]["prod"]["since"].is_string(),
        "{web1:#}"
    );

    // Once the endpoint recovers, a re-verification succeeds and web-2 is verified in test.
    healthy.store(true, Ordering::SeqCst);
    let verified = daemon.cli(&["verify", "stage", "test", "-p", "shop", "--wait"]);
    assert_eq!(verified.code, 0, "{verified:?}");
    let web2 = daemon.get_json("/v1/projects/shop/freight/web-2").await;
    assert!(
        web2["status"]["verifiedIn"]["test"]["verifiedAt"].is_string(),
        "{web2:#}"
    );

    // Every step of the story is in the project's events.
    let events = daemon.cli(&["get", "events", "-p", "shop"]);
    assert_eq!(events.code, 0, "{events:?}");
    for reason in [
        "FreightCreated",
        "PromotionCreated",
        "PromotionSucceeded",
        "FreightVerificationSucceeded",
        "FreightVerificationFailed",
        "FreightApproved",
    ] {
        assert!(
            events.stdout.contains(reason),
            "{reason} missing:\n{}",
            events.stdout
        );
    }
    assert!(
        events
            .stdout
            .contains("Warning   FreightVerificationFailed"),
        "{}",
        events.stdout
    );

    // Every status Dray wrote on the way reads into its type and writes back unchanged.
    use dray::resource::status::*;
    fn round_trips<T: serde::Serialize + serde::de::DeserializeOwned>(kind: &str, o: &Value) {
        let status = &o["status"];
        let typed: T = serde_json::from_value(status.clone())
            .unwrap_or_else(|e| panic!("{kind} status does not read: {e}\n{status:#}"));
        let back = serde_json::to_value(&typed).expect("writes");
        assert_eq!(&back, status, "{kind} {} changed", o["metadata"]["name"]);
    }
    let mut seen = std::collections::BTreeMap::new();
    for kind in [
        "stages",
        "promotions",
        "analysisruns",
        "freight",
        "warehouses",
    ] {
        let list = daemon.get_json(&format!("/v1/projects/shop/{kind}")).await;
        for o in list["items"].as_array().expect("items") {
            match kind {
                "stages" => round_trips::<StageStatus>(kind, o),
                "promotions" => round_trips::<PromotionStatus>(kind, o),
                "analysisruns" => round_trips::<AnalysisRunStatus>(kind, o),
                "freight" => round_trips::<FreightStatus>(kind, o),
                _ => round_trips::<WarehouseStatus>(kind, o),
            }
            *seen.entry(kind).or_insert(0) += 1;
        }
    }
    assert!(seen.values().all(|n| *n > 0) && seen.len() == 5, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_supersede_only_the_newest_waiting_promotion_runs() {
    let (address, healthy) = health_server();
    healthy.store(false, Ordering::SeqCst);
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        allow_hosts: vec![address.clone()],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");
    // The step polls the endpoint until it is healthy, so the first Promotion keeps running
    // while two more queue up behind it.
    let steps = format!(
        "- uses: http\n  config:\n    url: http://{address}/health\n    successExpression: response.body.ok\n    pollInterval: 1s"
    );
    daemon
        .apply_ok(
            &(manifests::project("shop", &["image: {repoURL: registry.example/web}"])
                + "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: shop, namespace: shop}\n\
                   spec:\n  promotionPolicies:\n  - stage: test\n    queuePolicy: Supersede\n"
                + &manifests::stage("shop", "test", &steps)
                + &freight("web-1", "1.0.0")
                + &freight("web-2", "2.0.0")
                + &freight("web-3", "3.0.0")),
        )
        .await;
    for f in ["web-1", "web-2", "web-3"] {
        let out = daemon.cli(&["promote", "-p", "shop", "--stage", "test", "--freight", f]);
        assert_eq!(out.code, 0, "{out:?}");
        if f == "web-1" {
            eventually(
                &daemon,
                "/v1/projects/shop/promotions",
                "web-1 to run",
                |l| l["items"][0]["status"]["phase"] == "Running",
            )
            .await;
        }
    }
    healthy.store(true, Ordering::SeqCst);
    let phases = |list: &Value| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["status"]["freight"]["alias"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    p["status"]["phase"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let list = eventually(
        &daemon,
        "/v1/projects/shop/promotions",
        "the queue to settle",
        |l| {
            phases(l)
                .iter()
                .all(|(_, p)| p != "Pending" && p != "Running")
        },
    )
    .await;
    assert_eq!(
        phases(&list),
        [
            ("web-1".to_string(), "Succeeded".to_string()),
            ("web-2".to_string(), "Discarded".to_string()),
            ("web-3".to_string(), "Succeeded".to_string()),
        ]
    );
    let events = daemon.cli(&["get", "events", "-p", "shop"]);
    assert!(
        events.stdout.contains("PromotionDiscarded"),
        "{}",
        events.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_cut_off_by_a_stop_resumes_where_it_stood() {
    let (address, _healthy) = health_server();
    let mut daemon = Daemon::start_with(dray::service::StepPolicy {
        allow_hosts: vec![address.clone()],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");
    let mut manifests = pipeline(&address);
    // Four measurements a second apart, so the stop lands in the middle, the first after a
    // second's initial delay; the run keeps the last three (Argo's `measurementRetention`, with
    // a regular expression for the metric's name).
    manifests = manifests
        .replace(
            "  - name: healthy\n",
            "  - name: healthy\n    count: 4\n    interval: 1s\n    initialDelay: 1s\n",
        )
        .replace(
            "  args: [{name: address}]\n",
            "  args: [{name: address}]\n  measurementRetention: [{metricName: \"health.*\", limit: 3}]\n",
        );
    assert!(
        manifests.contains("count: 4") && manifests.contains("limit: 3"),
        "{manifests}"
    );
    daemon.apply_ok(&manifests).await;
    daemon.apply_ok(&freight("web-1", "1.0.0")).await;
    let run = |s: &Value| verification(s)["id"].as_str().map(str::to_string);
    let test = eventually(
        &daemon,
        "/v1/projects/shop/stages/test",
        "a measurement",
        |s| run(s).is_some(),
    )
    .await;
    let name = run(&test).expect("a run");
    let path = format!("/v1/projects/shop/analysisruns/{name}");
    eventually(&daemon, &path, "the first measurement", |r| {
        r["status"]["metricResults"][0]["count"].as_i64() >= Some(1)
    })
    .await;

    // The stop cancels the run where it stands, as a crash would; the store keeps what it had.
    daemon.restart().await;
    let before = daemon.get_json(&path).await;
    let taken = before["status"]["metricResults"][0]["count"]
        .as_i64()
        .unwrap_or(0);
    assert!((1..4).contains(&taken), "{before:#}");
    let done = eventually(&daemon, &path, "the run to end", |r| {
        r["status"]["phase"] == "Successful"
    })
    .await;
    let result = &done["status"]["metricResults"][0];
    assert_eq!(result["count"], 4, "{done:#}");
    assert_eq!(
        result["measurements"].as_array().map(Vec::len),
        Some(3),
        "{done:#}"
    );
    // The oldest measurement kept is the second: it cannot start before the initial delay and
    // one interval have passed since the run started (a lower bound, whatever the load).
    let at = |t: &Value| {
        t.as_str()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .unwrap_or_else(|| panic!("a time: {t}"))
    };
    let second = at(&result["measurements"][0]["startedAt"]);
    let run = at(&done["status"]["startedAt"]);
    assert!(
        second
            .duration_since(run)
            .is_ok_and(|d| d >= std::time::Duration::from_secs(2)),
        "{done:#}"
    );
    let web1 = daemon.get_json("/v1/projects/shop/freight/web-1").await;
    assert!(web1["status"]["verifiedIn"]["test"].is_object(), "{web1:#}");
}

/// Stages `test` (direct) → `gate` (control flow, no steps) → `uat`, both test and uat
/// auto-promoting, no verification.
fn held_pipeline() -> String {
    let stage = |name: &str, sources: &str, steps: bool| {
        let template = if steps {
            format!(
                "  promotionTemplate:\n    spec:\n      steps:\n{}",
                STEP.lines()
                    .map(|l| format!("      {l}\n"))
                    .collect::<String>()
            )
        } else {
            String::new()
        };
        format!(
            "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec:\n  requestedFreight:\n  - origin: {{kind: Warehouse, name: app}}\n    sources: {sources}\n{template}"
        )
    };
    manifests::project("shop", &["image: {repoURL: registry.example/web}"])
        + "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: shop, namespace: shop}\n\
           spec:\n  promotionPolicies:\n  - stageSelector: {name: \"glob:*\"}\n    autoPromotionEnabled: true\n"
        + &stage("test", "{direct: true}", true)
        + &stage("gate", "{stages: [test]}", false)
        + &stage("uat", "{stages: [gate]}", true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_promoting_other_freight_holds_auto_promotion_until_the_candidate_is_promoted() {
    let daemon = Daemon::start().await;
    daemon.apply_ok(&held_pipeline()).await;
    daemon.apply_ok(&freight("web-1", "1.0.0")).await;
    // Through the control-flow Stage `gate` into uat, by itself.
    eventually(
        &daemon,
        "/v1/projects/shop/stages/uat",
        "web-1 in uat",
        |s| holds(s) == ["web-1"],
    )
    .await;
    let web1 = daemon.get_json("/v1/projects/shop/freight/web-1").await;
    assert!(web1["status"]["verifiedIn"]["gate"].is_object(), "{web1:#}");
    assert!(
        web1["status"]["currentlyIn"]["gate"].is_null(),
        "a control-flow Stage holds nothing"
    );
    let gate = daemon.cli(&[
        "promote",
        "-p",
        "shop",
        "--stage",
        "gate",
        "--freight",
        "web-1",
    ]);
    assert!(gate.stderr.contains("control-flow Stage"), "{gate:?}");

    daemon.apply_ok(&freight("web-2", "2.0.0")).await;
    eventually(
        &daemon,
        "/v1/projects/shop/stages/uat",
        "web-2 in uat",
        |s| holds(s) == ["web-2"],
    )
    .await;

    // A person rolls uat back to web-1: auto-promotion of that origin holds.
    let back = daemon.promote("shop", "uat", "web-1");
    assert_eq!(back.code, 0, "{back:?}");
    let uat = daemon.get_json("/v1/projects/shop/stages/uat").await;
    assert_eq!(holds(&uat), ["web-1"]);
    let hold = &uat["status"]["autoPromotionHolds"]["Warehouse/app"];
    assert_eq!(hold["freightName"], web1["metadata"]["name"], "{uat:#}");

    // New Freight reaches gate but not uat while the hold stands.
    daemon.apply_ok(&freight("web-3", "3.0.0")).await;
    eventually(
        &daemon,
        "/v1/projects/shop/freight/web-3",
        "web-3 verified in gate",
        |f| f["status"]["verifiedIn"]["gate"].is_object(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let promotions = daemon.get_json("/v1/projects/shop/promotions").await;
    let web3 = daemon.get_json("/v1/projects/shop/freight/web-3").await;
    let into_uat: Vec<&Value> = promotions["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["spec"]["stage"] == "uat" && p["spec"]["freight"] == web3["metadata"]["name"])
        .collect();
    assert!(into_uat.is_empty(), "held, yet promoted: {into_uat:#?}");

    // Promoting the candidate by hand lifts the hold.
    let forward = daemon.promote("shop", "uat", "web-3");
    assert_eq!(forward.code, 0, "{forward:?}");
    let uat = daemon.get_json("/v1/projects/shop/stages/uat").await;
    assert!(uat["status"]["autoPromotionHolds"].is_null(), "{uat:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_verification_blocks_downstream_and_frees_the_queue() {
    let (address, _healthy) = health_server();
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        allow_hosts: vec![address.clone()],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");
    let manifests = pipeline(&address).replace(
        "  - name: healthy\n",
        "  - name: healthy\n    count: 100\n    interval: 1s\n",
    );
    daemon.apply_ok(&manifests).await;
    daemon.apply_ok(&freight("web-1", "1.0.0")).await;
    eventually(
        &daemon,
        "/v1/projects/shop/stages/test",
        "the verification to run",
        |s| verification(s)["phase"] == "Pending" || verification(s)["phase"] == "Running",
    )
    .await;
    let aborted = daemon.cli(&["verify", "stage", "test", "-p", "shop", "--abort"]);
    assert_eq!(aborted.code, 0, "{aborted:?}");
    let test = eventually(&daemon, "/v1/projects/shop/stages/test", "the abort", |s| {
        verification(s)["phase"] == "Aborted"
    })
    .await;
    let run = verification(&test)["id"]
        .as_str()
        .expect("a run")
        .to_string();
    let again = daemon.cli(&["verify", "stage", "test", "-p", "shop", "--abort"]);
    assert!(again.stderr.contains("is not verifying"), "{again:?}");
    let web1 = daemon.get_json("/v1/projects/shop/freight/web-1").await;
    assert!(web1["status"]["verifiedIn"]["test"].is_null(), "{web1:#}");
    let explain = daemon.cli(&[
        "explain", "freight", "web-1", "--stage", "uat", "-p", "shop",
    ]);
    assert!(
        explain.stdout.contains("not verified in test"),
        "{explain:?}"
    );
    // The queue is free again: the next Freight is promoted into test.
    daemon.apply_ok(&freight("web-2", "2.0.0")).await;
    eventually(
        &daemon,
        "/v1/projects/shop/stages/test",
        "web-2 in test",
        |s| holds(s) == ["web-2"],
    )
    .await;
    let events = daemon.cli(&["get", "events", "-p", "shop"]);
    assert!(
        events.stdout.contains("FreightVerificationAborted"),
        "{}",
        events.stdout
    );
    assert!(events.stdout.contains(&run), "{}", events.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_metric_verifies_against_a_real_prometheus() {
    let prometheus = dray_tests::prometheus::Prometheus::start();
    let host = prometheus.url.trim_start_matches("http://").to_string();
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        allow_hosts: vec![host],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");
    // Two metrics: a success rate that passes, and a dry-run one that fails without deciding.
    let template = format!(
        "---\napiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: slo, namespace: shop}}\n\
         spec:\n  args: [{{name: query}}]\n  dryRun: [{{metricName: latency}}]\n  metrics:\n\
         \x20 - name: success-rate\n    successCondition: result[0] >= 0.95\n    provider:\n\
         \x20     prometheus: {{address: \"{url}\", query: \"{{{{args.query}}}}\"}}\n\
         \x20 - name: latency\n    successCondition: result[0] < 0.1\n    provider:\n\
         \x20     prometheus: {{address: \"{url}\", query: \"vector(0.3)\"}}\n",
        url = prometheus.url
    );
    let stage = manifests::stage("shop", "test", STEP)
        + "  verification:\n    analysisTemplates: [{name: slo}]\n    args: [{name: query, value: \"vector(0.99)\"}]\n";
    daemon
        .apply_ok(
            &(manifests::project("shop", &["image: {repoURL: registry.example/web}"])
                + &template
                + &stage
                + &freight("web-1", "1.0.0")),
        )
        .await;
    let promoted = daemon.promote("shop", "test", "web-1");
    assert_eq!(promoted.code, 0, "{promoted:?}");
    let test = eventually(
        &daemon,
        "/v1/projects/shop/stages/test",
        "the verification",
        |s| {
            matches!(
                verification(s)["phase"].as_str(),
                Some("Successful" | "Failed" | "Error")
            )
        },
    )
    .await;
    let run = verification(&test)["id"]
        .as_str()
        .expect("a run")
        .to_string();
    let run = daemon
        .get_json(&format!("/v1/projects/shop/analysisruns/{run}"))
        .await;
    assert_eq!(verification(&test)["phase"], "Successful", "{run:#}");
    let results = run["status"]["metricResults"].as_array().expect("results");
    let rate = results
        .iter()
        .find(|r| r["name"] == "success-rate")
        .expect("success-rate");
    assert_eq!(
        rate["measurements"][0]["value"],
        serde_json::json!([0.99]),
        "{run:#}"
    );
    let latency = results
        .iter()
        .find(|r| r["name"] == "latency")
        .expect("latency");
    assert_eq!(latency["phase"], "Failed", "measured and shown: {run:#}");
    assert_eq!(latency["dryRun"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_upstream_takes_what_the_upstream_stage_holds_not_the_newest() {
    let daemon = Daemon::start().await;
    // test is promoted by hand; uat follows it with MatchUpstream.
    let uat_sources = "{stages: [test], autoPromotionOptions: {selectionPolicy: MatchUpstream}}";
    let manifests = held_pipeline()
        .replace("{stages: [gate]}", uat_sources)
        .replace(
            "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {name: gate, namespace: shop}\n\
             spec:\n  requestedFreight:\n  - origin: {kind: Warehouse, name: app}\n    sources: {stages: [test]}\n",
            "",
        )
        .replace("{name: \"glob:*\"}", "{name: uat}");
    assert!(
        manifests.contains("MatchUpstream")
            && !manifests.contains("name: gate")
            && manifests.contains("{name: uat}"),
        "{manifests}"
    );
    daemon.apply_ok(&manifests).await;
    daemon
        .apply_ok(&(freight("web-1", "1.0.0") + &freight("web-2", "2.0.0")))
        .await;
    let promote = |f: &'static str| daemon.promote("shop", "test", f);
    assert_eq!(promote("web-2").code, 0);
    eventually(
        &daemon,
        "/v1/projects/shop/stages/uat",
        "web-2 in uat",
        |s| holds(s) == ["web-2"],
    )
    .await;
    // test goes back to web-1: the newest Freight verified in test is still web-2, but uat
    // takes what test holds.
    assert_eq!(promote("web-1").code, 0);
    eventually(
        &daemon,
        "/v1/projects/shop/stages/uat",
        "uat at web-1",
        |s| holds(s) == ["web-1"],
    )
    .await;
}

#[test]
fn dray_plugin_run_takes_one_measurement_with_a_verifier() {
    let (address, _healthy) = health_server();
    let workdir = tempfile::tempdir().expect("a work dir");
    let config = format!(r#"{{"url": "http://{address}/health", "jsonPath": "{{$.ok}}"}}"#);
    let out = dray_tests::finishes(
        std::process::Command::new(dray_tests::dray_bin())
            .args([
                "plugin",
                "run",
                "builtin:verifiers",
                "--kind",
                "web",
                "--config",
                &config,
            ])
            .args(["--allow-host", &address, "--workdir"])
            .arg(workdir.path()),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{out:?}");
    let measured: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(measured["phase"], "successful", "{measured}");
    assert_eq!(measured["value"], true);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GET http://"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rollback_puts_back_the_last_verified_freight_once() {
    let (address, healthy) = health_server();
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        allow_hosts: vec![address.clone()],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");
    // test alone, auto-promoting, rolling back when a verification fails; its step says
    // whether it runs for a rollback.
    let manifests = pipeline(&address)
        .replace(
            "autoPromotionEnabled: true\n",
            "autoPromotionEnabled: true\n    autoRollback: {onVerification: [Failed]}\n",
        )
        .replace(
            "config: {stage: \"${{ ctx.stage }}\"}",
            "config: {stage: \"${{ ctx.stage }}\", rollback: \"${{ ctx.meta.promotion.rollback }}\", actor: \"${{ ctx.meta.promotion.actor }}\"}",
        );
    daemon.apply_ok(&manifests).await;
    daemon.apply_ok(&freight("web-1", "1.0.0")).await;
    eventually(
        &daemon,
        "/v1/projects/shop/stages/test",
        "web-1 verified in test",
        |s| holds(s) == ["web-1"] && verification(s)["phase"] == "Successful",
    )
    .await;

    // web-2 fails its verification: test goes back to web-1 by itself.
    healthy.store(false, Ordering::SeqCst);
    daemon.apply_ok(&freight("web-2", "2.0.0")).await;
    let promotions_of_test = |list: &Value| -> Vec<Value> {
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["spec"]["stage"] == "test")
            .cloned()
            .collect()
    };
    let list = eventually(
        &daemon,
        "/v1/projects/shop/promotions",
        "a rollback Promotion that succeeded",
        |l| {
            promotions_of_test(l).iter().any(|p| {
                p["metadata"]["annotations"]["kargo.akuity.io/rollback"] == "true"
                    && p["status"]["phase"] == "Succeeded"
            })
        },
    )
    .await;
    let rollback = promotions_of_test(&list)
        .into_iter()
        .find(|p| p["metadata"]["annotations"]["kargo.akuity.io/rollback"] == "true")
        .expect("the rollback");
    assert_eq!(
        rollback["status"]["state"]["note"]["rollback"], true,
        "{rollback:#}"
    );
    assert!(
        rollback["metadata"]["annotations"]
            .get("kargo.akuity.io/auto-promotion-hold")
            .is_none(),
        "a rollback puts no hold: {rollback:#}"
    );
    assert_eq!(
        rollback["status"]["state"]["note"]["actor"],
        "dray:auto-rollback"
    );
    let test = daemon.get_json("/v1/projects/shop/stages/test").await;
    assert_eq!(holds(&test), ["web-1"], "{test:#}");

    // web-1 fails its new verification too (the endpoint is still down): a rollback's failure
    // rolls nothing back, so there are three Promotions of test and no more.
    eventually(
        &daemon,
        "/v1/projects/shop/stages/test",
        "web-1's second verification to fail",
        |s| holds(s) == ["web-1"] && verification(s)["phase"] == "Failed",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let list = daemon.get_json("/v1/projects/shop/promotions").await;
    assert_eq!(promotions_of_test(&list).len(), 3, "{list:#}");
}
