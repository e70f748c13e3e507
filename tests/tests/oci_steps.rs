//! Kargo's `oci-push` and `oci-download` in real promotions, against a real registry (Debian's
//! `docker-registry`, with htpasswd auth): the project's `cred-type: image` Secret authenticates
//! on the host side, an image and a multi-platform index are copied with their blobs, a layer
//! lands in the work directory checked against its digest, and paths out of the work directory
//! are refused.

use dray_tests::registry::{Auth, PASSWORD, Registry, USER};
use dray_tests::{Daemon, manifests};
use serde_json::Value;

fn secret(registry: &Registry) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: registry\n  namespace: shop\n  labels: {{kargo.akuity.io/cred-type: image}}\n\
         stringData: {{repoURL: \"^{}/.*$\", repoURLIsRegex: \"true\", username: {USER}, password: {PASSWORD}}}\n",
        registry.address.replace('.', "\\\\.")
    )
}

fn pipeline(steps: &str) -> String {
    manifests::project("shop", &["image: {repoURL: registry.example/web}"])
        + &manifests::stage("shop", "dev", steps)
        + &manifests::freight(
            "shop",
            "f1",
            "images: [{repoURL: registry.example/web, tag: 1.0.0}]",
        )
}

/// The status of the newest Promotion.
async fn last_promotion(daemon: &Daemon) -> Value {
    // Promotion names sort by the time they were made.
    let list = daemon.get_json("/v1/projects/shop/promotions").await;
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|p| {
        p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    items.last().expect("a promotion")["status"].clone()
}

/// Manifest `reference` of `repo` as JSON, read with the registry's credentials.
async fn manifest(registry: &Registry, repo: &str, reference: &str) -> Value {
    let response = dray::tls::client()
        .get(format!(
            "http://{}/v2/{repo}/manifests/{reference}",
            registry.address
        ))
        .basic_auth(USER, Some(PASSWORD))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .await
        .expect("read a manifest");
    assert!(
        response.status().is_success(),
        "{repo}:{reference}: {response:?}"
    );
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_push_copies_images_and_indexes_and_oci_download_writes_a_layer() {
    let registry = Registry::start_with(Auth::Basic);
    let address = registry.address.clone();
    let image = registry
        .push(
            "team/app",
            "1.0",
            "the layer",
            &[("org.opencontainers.image.revision", "abc")],
        )
        .await;
    let index = registry
        .push_index("team/multi", "2.0", &["amd64", "arm64"])
        .await;
    let values = "name: demo\nversion: 0.4.2\n";
    registry
        .push_artifact(
            "team/values",
            &["1"],
            ("application/vnd.oci.empty.v1+json", b"{}"),
            ("application/vnd.acme.values.v1+yaml", values.as_bytes()),
            &[],
        )
        .await;
    // A second registry (anonymous): blobs are streamed there, not mounted.
    let mirror = Registry::start();
    let elsewhere = mirror.address.clone();
    let daemon = Daemon::start().await;

    let steps = format!(
        r#"- uses: oci-push
  as: image
  config:
    imageRef: {address}/team/app:1.0
    destRef: {address}/prod/app:1.0
    annotations: {{dray.dev/promoted-to: prod}}
- uses: oci-push
  as: index
  config:
    imageRef: {address}/team/multi:2.0
    destRef: {address}/prod/multi:2.0
- uses: oci-push
  as: elsewhere
  config:
    imageRef: {address}/team/app:1.0
    destRef: {elsewhere}/mirror/app:1.0
- uses: oci-push
  as: retag
  config:
    imageRef: {address}/team/app@{image}
    destRef: {address}/team/app:stable
- uses: oci-download
  as: values
  config:
    imageRef: {address}/team/values:1
    outPath: conf/values.yaml
    mediaType: application/vnd.acme.values.v1+yaml
- uses: yaml-parse
  as: parsed
  config:
    path: conf/values.yaml
    outputs:
    - name: version
      fromExpression: version"#
    );
    daemon.apply_ok(&pipeline(&steps)).await;

    // Without the project's Secret the registry refuses the host, and the step says so.
    let refused = daemon.promote("shop", "dev", "f1");
    assert_ne!(refused.code, 0, "{refused:?}");
    let status = last_promotion(&daemon).await;
    let message = status["stepExecutionMetadata"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("cred-type: image"), "{status:#}");
    assert!(!message.contains(PASSWORD), "{message}");

    daemon.apply_ok(&secret(&registry)).await;
    let promoted = daemon.promote("shop", "dev", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");
    let status = last_promotion(&daemon).await;
    assert_eq!(status["phase"], "Succeeded", "{status:#}");

    // The image: its blobs are there, its manifest carries the new annotation beside its own.
    let copied = manifest(&registry, "prod/app", "1.0").await;
    assert_eq!(
        copied["annotations"],
        serde_json::json!({"org.opencontainers.image.revision": "abc", "dray.dev/promoted-to": "prod"})
    );
    let state = &status["state"];
    assert_eq!(state["image"]["image"], format!("{address}/prod/app:1.0"));
    assert_eq!(state["image"]["tag"], "1.0");
    assert_ne!(
        state["image"]["digest"], image,
        "annotations make a new manifest"
    );
    let original = manifest(&registry, "team/app", "1.0").await;
    assert_eq!(copied["layers"], original["layers"]);
    let layer = copied["layers"][0]["digest"].as_str().expect("a layer");
    let blob = dray::tls::client()
        .get(format!("http://{address}/v2/prod/app/blobs/{layer}"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("read the blob");
    assert_eq!(blob.text().await.expect("text"), "the layer");

    // Streamed to the other registry: the same manifest, its blob there byte for byte.
    assert_eq!(state["elsewhere"]["digest"], image);
    let blob = dray::tls::client()
        .get(format!("http://{elsewhere}/v2/mirror/app/blobs/{layer}"))
        .send()
        .await
        .expect("read the blob");
    assert_eq!(blob.text().await.expect("text"), "the layer");

    // The index, unchanged, with both platform images.
    assert_eq!(
        state["index"]["digest"], index,
        "an unannotated copy keeps its digest"
    );
    let copied_index = manifest(&registry, "prod/multi", "2.0").await;
    for entry in copied_index["manifests"].as_array().expect("manifests") {
        let digest = entry["digest"].as_str().expect("a digest");
        manifest(&registry, "prod/multi", digest).await;
    }

    // A retag in the same repository keeps the digest.
    assert_eq!(state["retag"]["digest"], image);
    assert_eq!(state["retag"]["tag"], "stable");

    // The downloaded layer, read back by a later step.
    assert_eq!(state["values"]["size"], values.len());
    assert_eq!(state["parsed"]["version"], "0.4.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_download_stays_in_the_work_directory_and_keeps_what_is_there() {
    let registry = Registry::start();
    let address = registry.address.clone();
    registry.push("team/values", "1", "v: 1\n", &[]).await;
    let daemon = Daemon::start().await;
    for (out_path, expected) in [
        ("../escape.yaml", "use a path inside the work directory"),
        ("/", "work directory itself"),
    ] {
        let steps = format!(
            "- uses: oci-download\n  config: {{imageRef: \"{address}/team/values:1\", outPath: \"{out_path}\"}}"
        );
        daemon.apply_ok(&pipeline(&steps)).await;
        assert_ne!(daemon.promote("shop", "dev", "f1").code, 0, "{out_path}");
        let status = last_promotion(&daemon).await;
        let message = status["stepExecutionMetadata"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(expected), "{out_path}: {message}");
    }
    // A file already there is kept unless allowOverwrite says otherwise.
    let steps = format!(
        r#"- uses: file-write
  config: {{path: v.yaml, contents: "mine"}}
- uses: oci-download
  config: {{imageRef: "{address}/team/values:1", outPath: v.yaml}}"#
    );
    daemon.apply_ok(&pipeline(&steps)).await;
    assert_ne!(daemon.promote("shop", "dev", "f1").code, 0);
    let status = last_promotion(&daemon).await;
    let message = status["stepExecutionMetadata"][1]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("allowOverwrite"), "{message}");
    let steps = steps.replace("outPath: v.yaml}", "outPath: v.yaml, allowOverwrite: true}");
    daemon.apply_ok(&pipeline(&steps)).await;
    let promoted = daemon.promote("shop", "dev", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");
}
