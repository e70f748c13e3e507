//! The `kube` capability against a real kube-apiserver (with etcd): a plugin reads and changes
//! objects through the host, and every fence holds against it — the project's clusters and
//! namespaces from the daemon config, the kinds and verbs granted to the plugin, namespaced kinds
//! only, the size bound — with the cluster's own RBAC behind them, whose refusal reaches the step
//! with its message. What Dray wrote is checked as the API server stored it.

use std::collections::BTreeMap;
use std::sync::Arc;

use dray::clusters::{ClusterConfig, Clusters};
use dray::host::kube::{KubeAccess, Rule};
use dray::runtime::{Capability, Grants, Limits, Runtime};
use dray_tests::kube::{DRAY_TOKEN, KubeCluster};
use serde_json::{Value, json};

struct Setup {
    cluster: KubeCluster,
    clusters: Arc<Clusters>,
}

/// A cluster with namespaces `shop` (where user `dray` may manage and watch ConfigMaps, and read
/// and patch Applications), `open` (which the daemon config opens to the project, but where RBAC
/// grants `dray` nothing) and `other` (not open to the project).
async fn setup() -> Setup {
    let cluster = KubeCluster::start().await;
    for namespace in ["shop", "open", "other"] {
        cluster.namespace(namespace).await;
    }
    cluster.install_application_crd().await;
    cluster
        .grant_dray(
            "shop",
            "",
            &["configmaps"],
            &[
                "get", "list", "watch", "create", "patch", "update", "delete",
            ],
        )
        .await;
    cluster
        .grant_dray("shop", "argoproj.io", &["applications"], &["get", "patch"])
        .await;
    cluster
        .grant_dray("other", "", &["configmaps"], &["get", "list"])
        .await;
    cluster
        .grant_dray("shop", "", &["pods", "pods/log"], &["get", "list"])
        .await;
    let config = ClusterConfig {
        kubeconfig: Some(cluster.kubeconfig(DRAY_TOKEN)),
        projects: vec!["p".into()],
        namespaces: vec!["shop".into(), "open".into()],
        ..ClusterConfig::default()
    };
    let clusters = Clusters::connect(&BTreeMap::from([("test".to_string(), config)]))
        .await
        .expect("connects");
    Setup {
        cluster,
        clusters: Arc::new(clusters),
    }
}

/// Runs the prober as project `project` with `rules`, making `calls`: each call's answer.
async fn probe(
    clusters: Option<Arc<Clusters>>,
    project: &str,
    rules: &[&str],
    calls: Value,
) -> Vec<Value> {
    probe_logged(clusters, project, rules, calls).await.0
}

/// [`probe`], with the call's log.
async fn probe_logged(
    clusters: Option<Arc<Clusters>>,
    project: &str,
    rules: &[&str],
    calls: Value,
) -> (Vec<Value>, Vec<dray::runtime::log::Line>) {
    let runtime = Runtime::new(None).expect("a runtime");
    let plugin = runtime
        .load(
            "kube-prober",
            dray_tests::fixture("kube_prober"),
            &Grants::of(&[Capability::Kube]),
        )
        .await
        .expect("loads");
    let work = tempfile::tempdir().expect("a dir");
    let limits = Limits {
        kube: KubeAccess {
            clusters,
            project: project.into(),
            rules: rules
                .iter()
                .map(|r| Rule::parse(r).expect("a rule"))
                .collect::<Vec<_>>()
                .into(),
        },
        ..Limits::default()
    };
    let report = plugin
        .run(
            "kube-probe",
            &dray_tests::step_context(),
            &json!({"calls": calls}),
            work.path(),
            &limits,
        )
        .await;
    let finished = report
        .outcome
        .unwrap_or_else(|e| panic!("the prober fails: {e:?}"));
    let answers = finished.outputs["answers"]
        .as_array()
        .expect("answers")
        .clone();
    (answers, report.log)
}

fn error(answer: &Value) -> &str {
    answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("an error, not {answer}"))
}

fn config_map(namespace: &str, name: &str) -> Value {
    json!({"op": "get", "apiVersion": "v1", "kind": "ConfigMap", "namespace": namespace, "name": name})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reads_and_changes_what_it_was_granted_and_the_server_stores_it() {
    let s = setup().await;
    let calls = json!([
        {"op": "apply", "object": {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "shop", "labels": {"app": "web"}},
            "data": {"level": "info"}}},
        config_map("shop", "settings"),
        {"op": "list", "apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "selector": "app=web"},
        {"op": "list", "apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "selector": "app=db"},
        {"op": "merge", "apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "settings",
            "patch": {"data": {"level": "warn"}}},
        {"op": "json", "apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "settings",
            "patch": [{"op": "add", "path": "/data/extra", "value": "1"}]},
        config_map("shop", "absent"),
        {"op": "apply", "object": {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "gone", "namespace": "shop"}}},
        {"op": "delete", "apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "gone"},
        {"op": "delete", "apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "gone"},
    ]);
    let answers = probe(Some(s.clusters.clone()), "p", &["* ConfigMap"], calls).await;
    for (i, answer) in answers.iter().enumerate() {
        assert!(answer.get("ok").is_some(), "call {i}: {answer}");
    }
    assert_eq!(answers[1]["ok"]["data"]["level"], "info");
    assert_eq!(answers[2]["ok"].as_array().map(Vec::len), Some(1));
    assert_eq!(answers[3]["ok"], json!([]));
    assert_eq!(answers[6]["ok"], Value::Null, "a missing object is none");

    let stored = s
        .cluster
        .ok("GET", "/api/v1/namespaces/shop/configmaps/settings", None)
        .await;
    assert_eq!(stored["data"], json!({"level": "warn", "extra": "1"}));
    let managers: Vec<&str> = stored["metadata"]["managedFields"]
        .as_array()
        .expect("managed fields")
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&"dray"),
        "applied by field manager dray: {managers:?}"
    );
    let (status, _) = s
        .cluster
        .request("GET", "/api/v1/namespaces/shop/configmaps/gone", None)
        .await;
    assert_eq!(status, 404, "deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fence_holds_against_a_plugin_reaching_further() {
    let s = setup().await;
    s.cluster
        .ok(
            "POST",
            "/api/v1/namespaces/other/configmaps",
            Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "theirs"}, "data": {"k": "v"}})),
        )
        .await;
    let big = "x".repeat(5 << 20);
    let calls = json!([
        // A namespace the config does not open to the project (RBAC would allow it).
        config_map("other", "theirs"),
        // A kind not granted to the plugin.
        {"op": "get", "apiVersion": "v1", "kind": "Secret", "namespace": "shop", "name": "s"},
        // A verb not granted on a granted kind.
        {"op": "delete", "apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "namespace": "shop", "name": "a"},
        // A cluster-scoped kind, even when granted.
        {"op": "get", "apiVersion": "v1", "kind": "Namespace", "name": "shop"},
        // A cluster that is not configured.
        {"op": "get", "cluster": "prod", "apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "x"},
        // Open to the project, but the cluster's RBAC refuses the daemon's user.
        config_map("open", "x"),
        // Too big to send.
        {"op": "raw-apply", "text": format!("{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\",\"namespace\":\"shop\"}},\"data\":{{\"x\":\"{big}\"}}}}")},
        // Not JSON, and no namespace.
        {"op": "raw-apply", "text": "{not json"},
        {"op": "get", "apiVersion": "v1", "kind": "ConfigMap", "name": "settings"},
        // A kind the cluster does not serve.
        {"op": "get", "apiVersion": "example.com/v1", "kind": "Widget", "namespace": "shop", "name": "w"},
    ]);
    let rules = [
        "* ConfigMap",
        "get,patch Application.argoproj.io",
        "get Namespace",
        "get Widget.example.com",
    ];
    let answers = probe(Some(s.clusters.clone()), "p", &rules, calls).await;
    let expect = [
        "namespace \"other\" of cluster \"test\" is not open to project \"p\"",
        "this plugin may not get Secret: the operator grants it with a kube rule",
        "this plugin may not delete Application.argoproj.io",
        "Namespace is cluster-scoped",
        "there is no cluster \"prod\"; the daemon config names test",
        "lacks this permission: grant it with RBAC",
        "at most 4194304 are taken",
        "the object is not JSON",
        "ConfigMap needs a namespace",
        "does not serve Widget in example.com/v1",
    ];
    for (answer, expected) in answers.iter().zip(expect) {
        assert!(error(answer).contains(expected), "{expected:?} in {answer}");
    }
    assert!(
        !error(&answers[5]).contains(DRAY_TOKEN),
        "no credential in a message"
    );
    let (status, _) = s
        .cluster
        .request("GET", "/api/v1/namespaces/shop/configmaps/big", None)
        .await;
    assert_eq!(status, 404, "nothing too big was written");

    // Another project may not use the cluster at all; with no cluster configured, the call
    // says how to add one.
    let get = json!([config_map("shop", "settings")]);
    let answers = probe(Some(s.clusters.clone()), "q", &["* ConfigMap"], get.clone()).await;
    assert!(
        error(&answers[0]).contains("project \"q\" may use no cluster"),
        "{answers:?}"
    );
    let answers = probe(None, "p", &["* ConfigMap"], get).await;
    assert!(
        error(&answers[0]).contains("add [clusters.NAME]"),
        "{answers:?}"
    );
}

/// `dray plugin run` with the real binary, as a plugin author would try a step against a
/// cluster: `--kubeconfig` and `--kube-namespace`, the built-in plugin's own rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_run_reaches_a_cluster_with_kubeconfig() {
    let cluster = KubeCluster::start().await;
    cluster.namespace("argocd").await;
    cluster.install_application_crd().await;
    cluster
        .grant_dray("argocd", "argoproj.io", &["applications"], &["get", "list"])
        .await;
    cluster
        .ok(
            "POST",
            "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications",
            Some(
                json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                "metadata": {"name": "web"}, "spec": {"project": "default"},
                "status": {"health": {"status": "Progressing"}, "sync": {"status": "Synced"}}}),
            ),
        )
        .await;
    let kubeconfig = cluster.kubeconfig(DRAY_TOKEN);
    let kubeconfig = kubeconfig.to_str().expect("a path").to_string();
    let work = tempfile::tempdir().expect("a dir");
    let cache = tempfile::tempdir().expect("a cache");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "plugin",
            "run",
            "builtin:steps",
            "--kind",
            "argocd-wait",
            "--config",
            r#"{"apps": [{"name": "web", "waitFor": ["sync", "health"]}]}"#,
            "--workdir",
            work.path().to_str().expect("a path"),
        ];
        args.extend_from_slice(extra);
        let output = dray_tests::finishes(
            std::process::Command::new(dray_tests::dray_bin())
                .args(&args)
                .env("XDG_CACHE_HOME", cache.path()),
            std::time::Duration::from_secs(120),
        );
        dray_tests::Cli::from(output)
    };
    let out = tokio::task::block_in_place(|| {
        run(&["--kubeconfig", &kubeconfig, "--kube-namespace", "argocd"])
    });
    assert_eq!(out.code, 0, "{out:?}");
    let result: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(result["status"], "running", "{result}");
    assert!(
        result["message"]
            .as_str()
            .unwrap_or_default()
            .contains("is Progressing and Synced, waiting for health"),
        "{result}"
    );

    // Without the namespace, the fence says which flag opens it; rules without a cluster are
    // refused before anything runs.
    let out = tokio::task::block_in_place(|| run(&["--kubeconfig", &kubeconfig]));
    assert!(
        out.stderr.contains(
            "namespace \"argocd\" of cluster \"local\" is not open to project \"local\": open it with --kube-namespace"
        ),
        "{out:?}"
    );
    let out = tokio::task::block_in_place(|| run(&["--kube", "get Pod"]));
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("need --kubeconfig"), "{out:?}");
}

/// `watch`: the current objects first, then the next change as it happens (made here by the
/// admin while the plugin waits), nothing at a quiet timeout, and only with the verb granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_watches_an_object_change_as_it_happens() {
    let s = setup().await;
    s.cluster
        .ok(
            "POST",
            "/api/v1/namespaces/shop/configmaps",
            Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "flag"}, "data": {"on": "no"}})),
        )
        .await;
    let cluster = Arc::new(s.cluster);
    let admin = cluster.clone();
    let change = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        admin
            .ok(
                "PATCH",
                "/api/v1/namespaces/shop/configmaps/flag",
                Some(json!({"data": {"on": "yes"}})),
            )
            .await;
    });
    let target =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "flag"});
    let with = |extra: Value| {
        let mut call = target.clone();
        call.as_object_mut()
            .expect("an object")
            .extend(extra.as_object().expect("an object").clone());
        call
    };
    let calls = json!([
        with(json!({"op": "watch", "resourceVersion": ""})),
        with(json!({"op": "watch", "resourceVersion": "@previous", "timeout": 20})),
        with(json!({"op": "watch", "resourceVersion": "@previous", "timeout": 1})),
    ]);
    let answers = probe(
        Some(s.clusters.clone()),
        "p",
        &["get,watch ConfigMap"],
        calls,
    )
    .await;
    change.await.expect("the admin's change");
    let now = &answers[0]["ok"];
    assert_eq!(now["events"][0]["change"], "added", "{answers:?}");
    assert_eq!(now["events"][0]["object"]["data"]["on"], "no");
    let next = &answers[1]["ok"];
    assert_eq!(
        next["events"].as_array().map(Vec::len),
        Some(1),
        "{answers:?}"
    );
    assert_eq!(next["events"][0]["change"], "modified");
    assert_eq!(next["events"][0]["object"]["data"]["on"], "yes");
    assert_eq!(answers[2]["ok"]["events"], json!([]), "quiet: {answers:?}");

    let answers = probe(
        Some(s.clusters.clone()),
        "p",
        &["get ConfigMap"],
        json!([with(json!({"op": "watch", "resourceVersion": ""}))]),
    )
    .await;
    assert!(
        error(&answers[0]).contains("this plugin may not watch ConfigMap"),
        "{answers:?}"
    );
}

/// `follow-logs`: a Pod's log copied into the step's log as the container writes it, until it
/// ends; the Pod's log comes from the API server, which asks the node's kubelet (a stand-in that
/// serves exactly that endpoint: no kubelet can run here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_follows_a_pods_log_until_the_container_ends() {
    let s = setup().await;
    let kubelet = s.cluster.fake_node("node-1").await;
    s.cluster
        .ok(
            "POST",
            "/api/v1/namespaces/shop/pods",
            Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tests"},
                "spec": {"nodeName": "node-1", "containers": [{"name": "run", "image": "registry.example/tests:1"}]}})),
        )
        .await;
    kubelet.log("shop", "tests", "run", "starting 3 tests\n");
    let kubelet = Arc::new(kubelet);
    let writer = kubelet.clone();
    let container = tokio::spawn(async move {
        for i in 1..=3 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            writer.log("shop", "tests", "run", &format!("test {i} passed\n"));
        }
        writer.end("shop", "tests", "run");
    });
    let pod = json!({"op": "logs", "apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "tests"});
    let (answers, log) = probe_logged(
        Some(s.clusters.clone()),
        "p",
        &["logs Pod", "get ConfigMap"],
        json!([
            pod,
            {"op": "logs", "apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "x"},
        ]),
    )
    .await;
    container.await.expect("the container's writer");
    let printed: Vec<&str> = log
        .iter()
        .filter(|l| l.source == dray::runtime::log::Source::Stdout)
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(
        printed,
        [
            "starting 3 tests",
            "test 1 passed",
            "test 2 passed",
            "test 3 passed"
        ],
        "{answers:?}"
    );
    assert_eq!(answers[0]["ok"], json!(17 + 3 * 14), "bytes copied");
    assert!(
        error(&answers[1]).contains("logs are a Pod's"),
        "{answers:?}"
    );

    let answers = probe(Some(s.clusters.clone()), "p", &["get Pod"], json!([pod])).await;
    assert!(
        error(&answers[0]).contains("this plugin may not read the logs of Pod"),
        "{answers:?}"
    );
}
