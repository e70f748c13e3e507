//! Kargo's cluster-wide kinds: a ClusterPromotionTask and a ClusterAnalysisTemplate used by the
//! Stages of two projects, and a ClusterConfig whose webhook receiver refreshes Warehouses in
//! every project. They live outside projects: `dray get` lists them without `-p`, and a
//! namespace on one is refused.

use std::time::{Duration, Instant};

use dray_tests::git::{GitDaemon, Repos};
use dray_tests::{Daemon, manifests};
use serde_json::Value;

const CLUSTER: &str = r#"
---
apiVersion: kargo.akuity.io/v1alpha1
kind: ClusterPromotionTask
metadata: {name: announce}
spec:
  vars:
  - name: channel
  steps:
  - uses: compose-output
    as: said
    config: {text: "${{ ctx.stage }} in ${{ ctx.project }} to ${{ vars.channel }}"}
---
apiVersion: argoproj.io/v1alpha1
kind: ClusterAnalysisTemplate
metadata: {name: health}
spec:
  args: [{name: address}]
  metrics:
  - name: healthy
    successCondition: result == true
    provider:
      web:
        url: "http://{{args.address}}/health"
        jsonPath: "{$.ok}"
"#;

fn stage(project: &str, address: &str) -> String {
    format!(
        r##"
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {{name: test, namespace: {project}}}
spec:
  requestedFreight:
  - origin: {{kind: Warehouse, name: app}}
    sources: {{direct: true}}
  promotionTemplate:
    spec:
      steps:
      - task: {{name: announce, kind: ClusterPromotionTask}}
        as: tell
        vars: [{{name: channel, value: "#{project}"}}]
  verification:
    analysisTemplates: [{{name: health, kind: ClusterAnalysisTemplate}}]
    args: [{{name: address, value: "{address}"}}]
"##
    )
}

async fn eventually(daemon: &Daemon, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let value = daemon.get_json(path).await;
        if ready(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {value:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_tasks_and_templates_serve_every_project() {
    let address = dray_tests::http::json_server(|_| r#"{"ok": true}"#.to_string());
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        allow_hosts: vec![address.clone()],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");

    // A Stage naming a ClusterPromotionTask that does not exist is refused at apply.
    let mut manifests = String::new();
    for project in ["shop", "bank"] {
        manifests.push_str("\n---\n");
        manifests.push_str(&manifests::project(
            project,
            &["image: {repoURL: registry.example/app}"],
        ));
        manifests.push_str(&stage(project, &address));
        manifests.push_str(&manifests::freight(
            project,
            "v1",
            "images:\n- {repoURL: registry.example/app, tag: \"1.0.0\", digest: \"sha256:1\"}",
        ));
    }
    let refused = daemon.apply(&manifests).await;
    assert_eq!(refused.status(), 422);
    let said = refused.text().await.expect("a body");
    assert!(
        said.contains("there is no ClusterPromotionTask \\\"announce\\\"")
            && said.contains("task.name"),
        "{said}"
    );
    // A cluster-wide kind with a namespace is refused too.
    let namespaced = daemon
        .apply(&CLUSTER.replace(
            "metadata: {name: announce}",
            "metadata: {name: announce, namespace: shop}",
        ))
        .await;
    assert_eq!(namespaced.status(), 422);
    let said = namespaced.text().await.expect("a body");
    assert!(
        said.contains("a ClusterPromotionTask is not inside a project"),
        "{said}"
    );

    daemon.apply_ok(&format!("{CLUSTER}{manifests}")).await;
    let listed = daemon.cli(&["get", "clusterpromotiontasks"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(listed.stdout.contains("announce"), "{}", listed.stdout);
    let shown = daemon.cli(&["get", "clusteranalysistemplate", "health", "-o", "json"]);
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(shown.stdout.contains("\"healthy\""), "{}", shown.stdout);

    for project in ["shop", "bank"] {
        let out = daemon.promote(project, "test", "v1");
        assert_eq!(out.code, 0, "{project}: {out:?}");
        assert!(out.stdout.contains("tell::said"), "{}", out.stdout);
        let promotions = daemon
            .get_json(&format!("/v1/projects/{project}/promotions"))
            .await;
        let state = &promotions["items"][0]["status"]["state"];
        assert_eq!(
            state["tell::said"]["text"],
            format!("test in {project} to #{project}"),
            "{state:#}"
        );
        eventually(
            &daemon,
            &format!("/v1/projects/{project}/stages/test"),
            |s| s["status"]["freightHistory"][0]["verificationHistory"][0]["phase"] == "Successful",
        )
        .await;
    }

    // The cluster-wide routes serve only cluster-wide kinds: a project's Stage, Freight or
    // Secret cannot be read or deleted through them.
    for path in ["/v1/stages/test", "/v1/freight/v1", "/v1/secrets/gl-hook"] {
        let answer = daemon
            .api(reqwest::Method::DELETE, path)
            .send()
            .await
            .expect("the daemon answers");
        assert!(
            answer.status().is_client_error(),
            "{path}: {}",
            answer.status()
        );
    }
    let answer = daemon
        .api(reqwest::Method::GET, "/v1/stages/test")
        .send()
        .await
        .expect("the daemon answers");
    assert_eq!(answer.status(), 404);
    let said = answer.text().await.expect("a body");
    assert!(
        said.contains("lives in a project: /v1/projects/{project}/stages/{name}"),
        "{said}"
    );
    for project in ["shop", "bank"] {
        let stage = daemon
            .get_json(&format!("/v1/projects/{project}/stages/test"))
            .await;
        assert_eq!(stage["metadata"]["name"], "test", "{stage}");
    }

    // Deleted by name, without a project.
    let out = daemon.cli(&["delete", "clusterpromotiontask", "announce"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = daemon.cli(&["get", "clusterpromotiontasks", "announce"]);
    assert_ne!(out.code, 0, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_webhook_receiver_refreshes_warehouses_in_every_project() {
    let repos = Repos::new();
    repos.create("app.git", &[("main.go", "v1\n")]);
    let server = GitDaemon::start(&repos);
    let repo = format!("{}/app.git", server.url);
    let daemon = Daemon::start().await;
    let mut manifests = String::new();
    for project in ["shop", "bank"] {
        manifests.push_str("\n---\n");
        manifests.push_str(
            &manifests::project(project, &[&format!("git: {{repoURL: \"{repo}\"}}")]).replace(
                "spec:\n  subscriptions:",
                "spec:\n  interval: 1h\n  subscriptions:",
            ),
        );
    }
    // The receiver's Secret lives in the system namespace, which no project reads.
    manifests.push_str(
        "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ClusterConfig\nmetadata: {name: cluster}\n\
         spec:\n  webhookReceivers:\n  - name: all-repos\n    gitlab: {secretRef: {name: gl-hook}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata:\n  name: gl-hook\n  namespace: kargo-system-resources\n\
         \x20 labels: {kargo.akuity.io/cred-type: generic}\nstringData: {secret-token: t0ken}\n",
    );
    daemon.apply_ok(&manifests).await;
    // One ClusterConfig, named `cluster`.
    let other = daemon
        .apply(
            "apiVersion: kargo.akuity.io/v1alpha1\nkind: ClusterConfig\nmetadata: {name: second}\n",
        )
        .await;
    assert_eq!(other.status(), 422);
    for project in ["shop", "bank"] {
        eventually(&daemon, &format!("/v1/projects/{project}/freight"), |f| {
            f["items"].as_array().is_some_and(|i| i.len() == 1)
        })
        .await;
    }

    let receivers = daemon
        .get_json("/v1/clusterconfigs/cluster/webhookreceivers")
        .await;
    let path = receivers["items"][0]["path"]
        .as_str()
        .expect("a path")
        .to_string();
    assert!(path.starts_with("/webhooks/gitlab/"), "{receivers}");
    repos.commit("app.git", "main", &[("main.go", "v2\n")], "v2");
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "project": {"git_http_url": repo},
        "commits": [],
    });
    let post = |token: &'static str| {
        dray::tls::client()
            .post(format!("{}{path}", daemon.url))
            .header("X-Gitlab-Event", "Push Hook")
            .header("X-Gitlab-Token", token)
            .json(&body)
            .send()
    };
    assert_eq!(post("wrong").await.expect("delivered").status(), 401);
    let answer: Value = post("t0ken")
        .await
        .expect("delivered")
        .json()
        .await
        .expect("JSON");
    let mut refreshed: Vec<&str> = answer["refreshed"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    refreshed.sort();
    assert_eq!(refreshed, ["bank/app", "shop/app"], "{answer}");
    // An hour's interval: only the webhook makes the second Freight appear.
    for project in ["shop", "bank"] {
        eventually(&daemon, &format!("/v1/projects/{project}/freight"), |f| {
            f["items"].as_array().is_some_and(|i| i.len() == 2)
        })
        .await;
    }
}
