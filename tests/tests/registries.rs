//! Image and OCI chart discovery against real registries that ask who is pulling (htpasswd basic
//! auth, the bearer-token flow), images pushed by skopeo in Docker's and OCI's formats, and what
//! discovery costs a registry: a cycle that finds nothing new is one tag-list request, with no
//! manifest read and no new token, even over 2,500 tags. A mirror stands in for Docker Hub, so its
//! webhook can be tried end to end.

use dray_tests::registry::{Auth, PASSWORD, Registry, USER, oci_layout};
use dray_tests::{Cli, Daemon, manifests};
use serde_json::Value;

fn refresh(daemon: &Daemon, warehouse: &str) -> Cli {
    daemon.refresh("shop", warehouse)
}

fn freight(daemon: &Daemon) -> Vec<Value> {
    daemon.freight("shop")
}

/// Project `shop` and its Warehouse `app` with one subscription, discovered hourly (so only
/// the test's refreshes and webhooks discover it).
fn hourly(subscription: &str) -> String {
    manifests::project("shop", &[subscription]).replace(
        "spec:\n  subscriptions:",
        "spec:\n  interval: 1h\n  subscriptions:",
    )
}

fn image_secret(registry: &Registry, password: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: registry\n  namespace: shop\n  labels: {{kargo.akuity.io/cred-type: image}}\n\
         stringData: {{repoURL: \"{}/shop/web\", username: {USER}, password: {password}}}\n",
        registry.address
    )
}

/// The requests `registry` answered after the first `before`.
fn since(registry: &Registry, before: usize) -> Vec<String> {
    registry.requests()[before..].to_vec()
}

async fn private_registry_is_read_with_its_credentials(auth: Auth) {
    let registry = Registry::start_with(auth);
    let digest = registry.push("shop/web", "1.0.0", "one", &[]).await;
    let daemon = Daemon::start().await;
    let sub = format!("image: {{repoURL: \"{}/shop/web\"}}", registry.address);
    let project = hourly(&sub);
    daemon.apply_ok(&project).await;

    // No Secret: the registry refuses, and the Warehouse says what to add.
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 1, "{auth:?}: {out:?}");
    assert!(
        out.stderr.contains("cred-type: image"),
        "{auth:?}: {}",
        out.stderr
    );
    assert!(freight(&daemon).is_empty());

    // A wrong password is refused, and said to be wrong.
    daemon
        .apply_ok(&format!(
            "{project}{}",
            image_secret(&registry, "not-the-password")
        ))
        .await;
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 1, "{auth:?}: {out:?}");
    assert!(
        out.stderr.contains("check the username and password"),
        "{auth:?}: {}",
        out.stderr
    );

    // The right one: Freight with the image's digest.
    daemon
        .apply_ok(&format!("{project}{}", image_secret(&registry, PASSWORD)))
        .await;
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 0, "{auth:?}: {out:?}");
    let all = freight(&daemon);
    assert_eq!(all.len(), 1, "{auth:?}: {all:#?}");
    assert_eq!(all[0]["images"][0]["digest"], digest.as_str());

    // A cycle with nothing new: one tag-list request, answered at once with the grant kept from
    // the last cycle (no challenge, no new token, no manifest).
    let (before, tokens) = (registry.requests().len(), registry.tokens_issued());
    assert_eq!(refresh(&daemon, "app").code, 0);
    assert_eq!(
        since(&registry, before),
        vec!["GET /v2/shop/web/tags/list?n=1000 200".to_string()],
        "{auth:?}"
    );
    assert_eq!(registry.tokens_issued(), tokens, "{auth:?}");

    // A new tag is found with the same credentials.
    registry.push("shop/web", "1.1.0", "two", &[]).await;
    assert_eq!(refresh(&daemon, "app").code, 0);
    assert!(
        freight(&daemon)
            .iter()
            .any(|f| f["images"][0]["tag"] == "1.1.0"),
        "{auth:?}"
    );

    // An OCI chart on the same registry, read with a cred-type: helm Secret.
    registry.push_chart("charts/web", "0.3.0", b"chart").await;
    let url = format!("oci://{}/charts/web", registry.address);
    let chart =
        hourly(&format!("chart: {{repoURL: \"{url}\"}}")).replace("name: app,", "name: chart,");
    let helm = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: charts\n  namespace: shop\n  labels: {{kargo.akuity.io/cred-type: helm}}\n\
         stringData: {{repoURL: \"{url}\", username: {USER}, password: {PASSWORD}}}\n"
    );
    daemon.apply_ok(&format!("{chart}{helm}")).await;
    let out = refresh(&daemon, "chart");
    assert_eq!(out.code, 0, "{auth:?}: {out:?}");
    assert!(
        freight(&daemon)
            .iter()
            .any(|f| f["charts"][0]["version"] == "0.3.0"),
        "{auth:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_basic_auth_is_read_with_the_image_and_helm_secrets() {
    private_registry_is_read_with_its_credentials(Auth::Basic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_token_auth_is_read_with_the_image_and_helm_secrets() {
    private_registry_is_read_with_its_credentials(Auth::Token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_cycle_over_thousands_of_tags_is_one_tag_list_request() {
    let registry = Registry::start();
    let tags: Vec<String> = (0..2500)
        .map(|i| format!("1.{}.{}", i / 100, i % 100))
        .collect();
    registry.push_tags("shop/web", &tags).await;
    let daemon = Daemon::start().await;
    let sub = format!(
        "image: {{repoURL: \"{}/shop/web\", constraint: \"^1.0.0\", discoveryLimit: 5}}",
        registry.address
    );
    let project = hourly(&sub);
    daemon.apply_ok(&project).await;
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 0, "{out:?}");
    let all = freight(&daemon);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["images"][0]["tag"], "1.24.99");

    // Discovery (on creation, then on refresh) read the manifests of the best
    // `discoveryLimit` tags only, once: this registry sends every tag in one answer.
    let first = registry.requests();
    let manifests: Vec<&String> = first
        .iter()
        .filter(|r| r.starts_with("GET /v2/shop/web/manifests/"))
        .collect();
    assert_eq!(manifests.len(), 5, "{first:#?}");
    assert!(
        !first.iter().any(|r| r.starts_with("GET /v2/ ")),
        "no `/v2/` probe before a request to a registry that needs no token: {first:#?}"
    );
    assert!(
        first
            .iter()
            .filter(|r| r.contains("/tags/list"))
            .all(|r| r == "GET /v2/shop/web/tags/list?n=1000 200"),
        "{first:#?}"
    );

    let before = registry.requests().len();
    assert_eq!(refresh(&daemon, "app").code, 0);
    assert_eq!(
        since(&registry, before),
        vec!["GET /v2/shop/web/tags/list?n=1000 200".to_string()]
    );
    assert_eq!(freight(&daemon).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_hub_push_webhook_makes_freight_from_the_mirror_at_once() {
    // Docker Hub cannot be reached from here; the daemon reads docker.io through a mirror, as an
    // air-gapped site or a pull-through cache would, and Freight still names `acme/web`.
    let registry = Registry::start();
    registry.push("acme/web", "1.0.0", "one", &[]).await;
    let mut config = dray::Config::default();
    config
        .discovery
        .registry_mirrors
        .insert("docker.io".into(), registry.address.clone());
    let daemon = Daemon::start_with_config(config)
        .await
        .expect("the daemon starts");
    let receivers = "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: shop, namespace: shop}\n\
        spec:\n  webhookReceivers:\n  - name: hub\n    dockerhub: {secretRef: {name: hooks}}\n---\n\
        apiVersion: v1\nkind: Secret\nmetadata:\n  name: hooks\n  namespace: shop\n  labels: {kargo.akuity.io/cred-type: generic}\n\
        stringData: {secret: hub-secret}\n";
    let project = hourly("image: {repoURL: acme/web}") + receivers;
    daemon.apply_ok(&project).await;
    assert_eq!(refresh(&daemon, "app").code, 0);
    let all = freight(&daemon);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["images"][0]["repoURL"], "acme/web");
    assert_eq!(all[0]["images"][0]["tag"], "1.0.0");

    // A new semver tag and Docker Hub's push notification: Freight with its tag and digest
    // without waiting for the hour-long interval.
    let digest = registry.push("acme/web", "1.1.0", "two", &[]).await;
    let receivers = daemon.get_json("/v1/projects/shop/webhookreceivers").await;
    let path = receivers["items"][0]["path"].as_str().expect("a path");
    let hub = serde_json::json!({
        "callback_url": "https://registry.hub.docker.com/u/acme/web/hook/2141b5bi5i5b02bec211i4eeih0242eg11000a/",
        "push_data": {"pushed_at": 1417566161, "pusher": "trustedbuilder", "tag": "1.1.0"},
        "repository": {"name": "web", "namespace": "acme", "repo_name": "acme/web",
            "repo_url": "https://registry.hub.docker.com/u/acme/web/", "status": "Active"}
    });
    let r = dray::tls::client()
        .post(format!("{}{path}", daemon.url))
        .json(&hub)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("json")["refreshed"],
        serde_json::json!(["app"])
    );
    for _ in 0..200 {
        let all = freight(&daemon);
        if let Some(new) = all.iter().find(|f| f["images"][0]["tag"] == "1.1.0") {
            assert_eq!(new["images"][0]["digest"], digest.as_str());
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no Freight for 1.1.0: {:#?}", freight(&daemon));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_pushed_by_skopeo_as_docker_and_oci_manifests_are_found_with_their_digests() {
    let registry = Registry::start_with(Auth::Basic);
    let layouts = tempfile::tempdir().expect("layouts");
    let (one, two) = (layouts.path().join("one"), layouts.path().join("two"));
    oci_layout(&one, "1.0.0", "one");
    oci_layout(&two, "2.0.0", "two");
    let oci = registry.skopeo_copy(&one, "1.0.0", "shop/web", false).await;
    let docker = registry.skopeo_copy(&two, "2.0.0", "shop/web", true).await;
    let daemon = Daemon::start().await;
    let sub = format!("image: {{repoURL: \"{}/shop/web\"}}", registry.address);
    daemon
        .apply_ok(&format!(
            "{}{}",
            hourly(&sub),
            image_secret(&registry, PASSWORD)
        ))
        .await;
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 0, "{out:?}");
    let warehouse: Value = serde_json::from_str(
        &daemon
            .cli(&["get", "warehouse", "app", "-p", "shop", "-o", "json"])
            .stdout,
    )
    .expect("json");
    let found: Vec<(String, String)> =
        warehouse["status"]["discoveredArtifacts"]["images"][0]["references"]
            .as_array()
            .expect("references")
            .iter()
            .map(|r| {
                (
                    r["tag"].as_str().unwrap_or("").to_string(),
                    r["digest"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
    assert_eq!(
        found,
        vec![
            ("2.0.0".to_string(), docker.clone()),
            ("1.0.0".to_string(), oci)
        ]
    );
    assert_eq!(freight(&daemon)[0]["images"][0]["digest"], docker.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_webhook_a_new_tag_is_found_on_the_next_interval() {
    let registry = Registry::start();
    registry.push("shop/web", "1.0.0", "one", &[]).await;
    let daemon = Daemon::start().await;
    let sub = format!("image: {{repoURL: \"{}/shop/web\"}}", registry.address);
    daemon
        .apply_ok(&hourly(&sub).replace("interval: 1h", "interval: 1s"))
        .await;
    for _ in 0..200 {
        if !freight(&daemon).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(freight(&daemon).len(), 1, "the first discovery made 1.0.0");
    let digest = registry.push("shop/web", "1.1.0", "two", &[]).await;
    // Nobody asks: the Warehouse's own interval finds it.
    for _ in 0..200 {
        if let Some(f) = freight(&daemon)
            .iter()
            .find(|f| f["images"][0]["tag"] == "1.1.0")
        {
            assert_eq!(f["images"][0]["digest"], digest.as_str());
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("1.1.0 was not discovered: {:#?}", freight(&daemon));
}
