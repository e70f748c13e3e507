//! Plugins from an OCI registry, end to end against a real registry (Debian's
//! `docker-registry`): `dray plugin push` publishes a component, a Stage uses it as
//! `oci://HOST/REPO:TAG`, the daemon pins the digest it resolved first and keeps running it
//! after the tag moves until `dray plugin update`, and refuses a tampered blob, a registry the
//! config does not allow, and a component that imports more than its rule grants.

use std::path::PathBuf;

use dray_tests::registry::{Auth, PASSWORD, Registry, USER};
use dray_tests::{Daemon, fixture, manifests};
use serde_json::Value;

fn hello_step() -> PathBuf {
    PathBuf::from(env!("DRAY_FIXTURES_DIR")).join("hello_step.wasm")
}

/// A project with one Stage whose only step is `uses`, and one Freight `f1`.
fn pipeline(uses: &str) -> String {
    format!(
        "{}{}{}",
        manifests::project("shop", &["image: {repoURL: registry.example/web}"]),
        manifests::stage(
            "shop",
            "dev",
            &format!("- uses: {uses}\n  config: {{name: world, path: out/hi.txt}}"),
        ),
        manifests::freight(
            "shop",
            "f1",
            "images: [{repoURL: registry.example/web, tag: 1.0.0, digest: \"sha256:0000000000000000000000000000000000000000000000000000000000000001\"}]",
        ),
    )
}

/// Built-in plugin `name` written to a file in `dir`, to push like any component.
fn builtin_file(dir: &std::path::Path, name: &str) -> PathBuf {
    let bytes = dray::runtime::BUILTIN_PLUGINS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no built-in plugin {name}"))
        .1;
    let file = dir.join(format!("{name}.wasm"));
    std::fs::write(&file, bytes).expect("write");
    file
}

/// The built-in Git steps as a component of their own (fixture `git-steps`), which imports
/// `git` and none of the other capabilities the built-in steps use.
fn git_steps_file(dir: &std::path::Path) -> PathBuf {
    let file = dir.join("git.wasm");
    std::fs::write(&file, fixture("git_steps")).expect("write");
    file
}

fn rule(pattern: &str, grants: &[&str]) -> dray::oci::plugins::OciRule {
    dray::oci::plugins::OciRule {
        pattern: pattern.into(),
        grants: grants.iter().map(|g| g.to_string()).collect(),
        ..Default::default()
    }
}

/// The digest line `dray plugin push` prints.
fn pushed_digest(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("digest    "))
        .unwrap_or_else(|| panic!("no digest in {stdout}"))
        .trim()
        .to_string()
}

/// The step metadata of the newest Promotion of Stage `dev`.
async fn last_step(daemon: &Daemon) -> Value {
    let list = daemon.get_json("/v1/projects/shop/promotions").await;
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|p| {
        p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    items.last().expect("a promotion")["status"]["stepExecutionMetadata"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_step_runs_by_reference_pinned_until_updated() {
    let registry = Registry::start();
    let reference = format!("oci://{}/steps/hello:1.0.0", registry.address);
    let mut daemon = Daemon::start_with(dray::service::StepPolicy {
        oci: vec![rule(&format!("{}/steps/*", registry.address), &[])],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");

    let pushed = daemon.cli(&[
        "plugin",
        "push",
        &reference,
        &hello_step().display().to_string(),
        "--annotation",
        "org.opencontainers.image.source=https://example.invalid/hello",
    ]);
    assert_eq!(pushed.code, 0, "{pushed:?}");
    let first = pushed_digest(&pushed.stdout);

    // What a user sees of it before using it.
    let inspected = daemon.cli(&["plugin", "inspect", &reference]);
    assert_eq!(inspected.code, 0, "{inspected:?}");
    assert!(
        inspected.stdout.contains("step kind     hello"),
        "{inspected:?}"
    );
    assert!(inspected.stderr.contains(&first), "{inspected:?}");
    assert!(
        inspected
            .stderr
            .contains("org.opencontainers.image.source: https://example.invalid/hello")
            && inspected.stderr.contains("signature: none"),
        "{inspected:?}"
    );

    daemon.apply_ok(&pipeline(&reference)).await;
    let promoted = daemon.promote("shop", "dev", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");
    let step = last_step(&daemon).await;
    assert_eq!(step["status"], "Succeeded", "{step:#}");
    assert_eq!(step["plugin"], format!("{reference}@{first}"), "{step:#}");
    let stage = daemon.cli(&["get", "stage", "dev", "-p", "shop", "-o", "yaml"]);
    assert!(
        stage.stdout.contains(&reference) && stage.stdout.contains(&first),
        "the Stage shows the digest it ran: {stage:?}"
    );

    // The tag moves to another build: the pin holds.
    let again = daemon.cli(&[
        "plugin",
        "push",
        &reference,
        &hello_step().display().to_string(),
    ]);
    assert_eq!(again.code, 0, "{again:?}");
    let second = pushed_digest(&again.stdout);
    assert_ne!(first, second, "a new push is a new manifest");
    let blobs_before = registry
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET") && r.contains("/blobs/"))
        .count();
    let promoted = daemon.promote("shop", "dev", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");
    assert_eq!(
        last_step(&daemon).await["plugin"],
        format!("{reference}@{first}")
    );
    let blobs_after = registry
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET") && r.contains("/blobs/"))
        .count();
    assert_eq!(
        blobs_before, blobs_after,
        "a pinned, loaded plugin is not downloaded again"
    );

    // Nor after a restart: the pin and the content-named copies are on disk.
    let registry_requests = || {
        registry
            .requests()
            .iter()
            .filter(|r| r.contains("/manifests/") || r.contains("/blobs/"))
            .count()
    };
    daemon.restart().await;
    let before = registry_requests();
    let promoted = daemon.promote("shop", "dev", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");
    assert_eq!(
        last_step(&daemon).await["plugin"],
        format!("{reference}@{first}")
    );
    assert_eq!(
        registry_requests(),
        before,
        "a restarted daemon asks the registry nothing"
    );

    let listed = daemon.cli(&["plugin", "ls"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(listed.stdout.contains(&first), "{listed:?}");

    // Re-resolving goes through the same policy: nothing outside the rules is asked.
    let elsewhere = daemon.cli(&["plugin", "update", "oci://127.0.0.1:1/other/x:1.0.0"]);
    assert_ne!(elsewhere.code, 0, "{elsewhere:?}");
    assert!(
        elsewhere.stderr.contains("plugins may not come from"),
        "{elsewhere:?}"
    );

    // Re-resolving is explicit.
    let updated = daemon.cli(&["plugin", "update", &reference]);
    assert_eq!(updated.code, 0, "{updated:?}");
    assert!(
        updated.stdout.contains(&format!("{first} -> {second}")),
        "{updated:?}"
    );
    let promoted = daemon.promote("shop", "dev", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");
    assert_eq!(
        last_step(&daemon).await["plugin"],
        format!("{reference}@{second}")
    );

    // `dray plugin pull` gets the same bytes that were pushed.
    let out = tempfile::tempdir().expect("a dir");
    let file = out.path().join("hello.wasm");
    let pulled = daemon.cli(&[
        "plugin",
        "pull",
        &format!("oci://{}/steps/hello@{second}", registry.address),
        "-o",
        &file.display().to_string(),
    ]);
    assert_eq!(pulled.code, 0, "{pulled:?}");
    assert_eq!(
        std::fs::read(&file).expect("pulled"),
        std::fs::read(hello_step()).expect("pushed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_blob_an_unlisted_registry_and_an_ungranted_import_are_refused() {
    let registry = Registry::start();
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        oci: vec![rule(&format!("{}/steps/*", registry.address), &[])],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");
    let hello = hello_step().display().to_string();

    // A blob changed in the registry's storage after the push.
    let tampered = format!("oci://{}/steps/tampered:1.0.0", registry.address);
    let pushed = daemon.cli(&["plugin", "push", &tampered, &hello]);
    assert_eq!(pushed.code, 0, "{pushed:?}");
    let layer = pushed
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("component "))
        .and_then(|l| l.split_whitespace().next())
        .expect("the component digest")
        .to_string();
    let file = registry.blob_file(&layer);
    let mut bytes = std::fs::read(&file).expect("the blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).expect("tamper");
    daemon.apply_ok(&pipeline(&tampered)).await;
    let promoted = daemon.promote("shop", "dev", "f1");
    assert_ne!(promoted.code, 0, "{promoted:?}");
    let step = last_step(&daemon).await;
    assert_eq!(step["status"], "Errored", "{step:#}");
    assert!(
        step["message"]
            .as_str()
            .unwrap_or_default()
            .contains("digest"),
        "{step:#}"
    );

    // A registry (or repository) no rule allows.
    let elsewhere = format!("oci://{}/other/hello:1.0.0", registry.address);
    let pushed = daemon.cli(&["plugin", "push", &elsewhere, &hello]);
    assert_eq!(pushed.code, 0, "{pushed:?}");
    daemon.apply_ok(&pipeline(&elsewhere)).await;
    assert_ne!(daemon.promote("shop", "dev", "f1").code, 0);
    let message = last_step(&daemon).await["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("plugins may not come from") && message.contains("[[steps.oci]]"),
        "{message}"
    );

    // A component that imports `git` under a rule that grants nothing.
    let git = tempfile::tempdir().expect("a dir");
    let git_file = git_steps_file(git.path());
    let greedy = format!("oci://{}/steps/git:1.0.0", registry.address);
    let pushed = daemon.cli(&["plugin", "push", &greedy, &git_file.display().to_string()]);
    assert_eq!(pushed.code, 0, "{pushed:?}");
    daemon
        .apply_ok(&pipeline(&format!("{greedy}#git-clone")))
        .await;
    assert_ne!(daemon.promote("shop", "dev", "f1").code, 0);
    let message = last_step(&daemon).await["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("git") && message.contains("grants") && message.contains("[[steps.oci]]"),
        "{message}"
    );
}

/// `wkg` (wasm-pkg-tools): `DRAY_WKG`, else where tests/run.sh installs it, else `PATH`.
fn wkg() -> PathBuf {
    if let Some(path) = std::env::var_os("DRAY_WKG") {
        return path.into();
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let cached = home.join(".cache/dray-tools/bin/wkg");
    if cached.exists() {
        return cached;
    }
    PathBuf::from("wkg")
}

fn run_wkg(args: &[&str]) -> std::process::Output {
    let tool = wkg();
    let output = std::process::Command::new(&tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}); these tests check interoperability with it: run tests/run.sh, which installs it (cargo install wkg --version 0.16.1 --locked --root ~/.cache/dray-tools)",
                tool.display()
            )
        });
    assert!(
        output.status.success(),
        "wkg {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_move_between_dray_and_wkg_unchanged() {
    let registry = Registry::start();
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        oci: vec![rule(&format!("{}/steps/*", registry.address), &[])],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");
    let hello = hello_step().display().to_string();
    let dir = tempfile::tempdir().expect("a dir");

    // Pushed by Dray, pulled by wkg: the same bytes.
    let by_dray = format!("{}/steps/by-dray:1.0.0", registry.address);
    let pushed = daemon.cli(&["plugin", "push", &format!("oci://{by_dray}"), &hello]);
    assert_eq!(pushed.code, 0, "{pushed:?}");
    let pulled = dir.path().join("pulled.wasm");
    run_wkg(&[
        "oci",
        "pull",
        "--insecure",
        &registry.address,
        &by_dray,
        "-o",
        &pulled.display().to_string(),
    ]);
    assert_eq!(
        std::fs::read(&pulled).expect("wkg wrote it"),
        std::fs::read(hello_step()).expect("the component"),
        "wkg pulls what Dray pushed, byte for byte"
    );

    // Pushed by wkg, run by Dray in a promotion.
    let by_wkg = format!("{}/steps/by-wkg:1.0.0", registry.address);
    run_wkg(&[
        "oci",
        "push",
        "--insecure",
        &registry.address,
        &by_wkg,
        &hello,
    ]);
    let reference = format!("oci://{by_wkg}");
    daemon.apply_ok(&pipeline(&reference)).await;
    let promoted = daemon.promote("shop", "dev", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");
    let step = last_step(&daemon).await;
    assert_eq!(step["status"], "Succeeded", "{step:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_is_published_for_wkg_get_in_any_language() {
    let registry = Registry::start();
    let daemon = Daemon::start().await;
    let pushed = daemon.cli(&[
        "plugin",
        "push-wit",
        &format!("oci://{}/wit/dray/plugin", registry.address),
    ]);
    assert_eq!(pushed.code, 0, "{pushed:?}");
    assert!(pushed.stdout.contains(":0.1.0"), "{pushed:?}");

    // A plugin author's wkg, told where the `dray` namespace lives, fetches the WIT by name.
    let dir = tempfile::tempdir().expect("a dir");
    let config = dir.path().join("wkg.toml");
    std::fs::write(
        &config,
        format!(
            r#"default_registry = "acme"
[namespace_registries]
dray = {{ registry = "acme", metadata = {{ preferredProtocol = "oci", oci = {{ registry = "{address}", namespacePrefix = "wit/" }} }} }}
[registry."acme"]
type = "oci"
[registry."acme".oci]
protocol = "http"
"#,
            address = registry.address
        ),
    )
    .expect("write the config");
    let out = dir.path().join("dray-plugin.wit");
    run_wkg(&[
        "get",
        "--config",
        &config.display().to_string(),
        "--cache",
        &dir.path().join("cache").display().to_string(),
        "--format",
        "wit",
        "--output",
        &out.display().to_string(),
        "dray:plugin@0.1.0",
    ]);
    let wit = std::fs::read_to_string(&out).expect("wkg wrote the WIT");
    for expected in [
        "package dray:plugin@0.1.0;",
        "interface oci",
        "world full-step",
        "export run: func(kind: string, context: step-context, config: string)",
    ] {
        assert!(wit.contains(expected), "{expected:?} in\n{wit}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_registries_are_read_with_the_projects_image_credentials() {
    for auth in [Auth::Basic, Auth::Token] {
        let registry = Registry::start_with(auth);
        let daemon = Daemon::start_with(dray::service::StepPolicy {
            oci: vec![rule(&format!("{}/steps/*", registry.address), &[])],
            ..Default::default()
        })
        .await
        .expect("the daemon starts");
        let reference = format!("oci://{}/steps/hello:1.0.0", registry.address);
        let hello = hello_step().display().to_string();

        let anonymous = daemon.cli(&["plugin", "push", &reference, &hello]);
        assert_ne!(anonymous.code, 0, "{auth:?}: {anonymous:?}");
        let pushed = daemon.cli_with_env(
            &["plugin", "push", &reference, &hello],
            &[
                ("DRAY_REGISTRY_USERNAME", USER),
                ("DRAY_REGISTRY_PASSWORD", PASSWORD),
            ],
        );
        assert_eq!(pushed.code, 0, "{auth:?}: {pushed:?}");

        // Without a Secret the daemon is refused, and says which Secret would do.
        daemon.apply_ok(&pipeline(&reference)).await;
        assert_ne!(daemon.promote("shop", "dev", "f1").code, 0, "{auth:?}");
        let message = last_step(&daemon).await["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains("cred-type: image"), "{auth:?}: {message}");
        assert!(!message.contains(PASSWORD), "{message}");

        let secret = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: registry\n  namespace: shop\n  labels: {{kargo.akuity.io/cred-type: image}}\n\
             stringData: {{repoURL: \"{}/steps/hello\", username: {USER}, password: {PASSWORD}}}\n",
            registry.address
        );
        daemon.apply_ok(&secret).await;
        let promoted = daemon.promote("shop", "dev", "f1");
        assert_eq!(promoted.code, 0, "{auth:?}: {promoted:?}");
        assert_eq!(last_step(&daemon).await["status"], "Succeeded", "{auth:?}");
    }
}

/// A registry that lies, playing the part of the distribution API a puller uses (`GET` of
/// manifests and blobs) and no more: `steps/big` declares a 16-byte component and then sends
/// blob bytes without end; `steps/image` is a container image, not a component; `steps/index`
/// is an image index. Returns its `host:port`.
async fn lying_registry() -> String {
    use axum::body::Body;
    use axum::extract::Path;
    use axum::routing::get;
    use sha2::{Digest, Sha256};

    let sha = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
    let declared = sha(b"sixteen bytes!!!");
    let manifest = |config: &str, layer: &str, digest: &str| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": config, "digest": sha(b"{}"), "size": 2},
            "layers": [{"mediaType": layer, "digest": digest, "size": 16}],
        })
        .to_string()
    };
    let big = manifest(
        "application/vnd.wasm.config.v0+json",
        "application/wasm",
        &declared,
    );
    let image = manifest(
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &declared,
    );
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [],
    })
    .to_string();
    let app = axum::Router::new()
        .route("/v2/", get(|| async { "{}" }))
        .route(
            "/v2/steps/{name}/manifests/{reference}",
            get(move |Path((name, _)): Path<(String, String)>| {
                let body = match name.as_str() {
                    "big" => big.clone(),
                    "image" => image.clone(),
                    _ => index.clone(),
                };
                async move { body }
            }),
        )
        .route(
            "/v2/steps/{name}/blobs/{digest}",
            get(|| async {
                // 64 MiB, made as it is sent: the puller must stop at what was declared.
                let chunks = futures_util::stream::iter(
                    (0..1024).map(|_| Ok::<_, std::io::Error>(vec![0u8; 64 << 10])),
                );
                Body::from_stream(chunks)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_registry_cannot_make_the_daemon_read_more_or_run_what_is_not_a_component() {
    let address = lying_registry().await;
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        oci: vec![rule(&format!("{address}/steps/*"), &[])],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");
    for (name, expected) in [
        ("big", "larger than 16 bytes; refused"),
        ("image", "not a Wasm component"),
        ("index", "not an OCI image manifest"),
    ] {
        daemon
            .apply_ok(&pipeline(&format!("oci://{address}/steps/{name}:1.0.0")))
            .await;
        assert_ne!(daemon.promote("shop", "dev", "f1").code, 0, "{name}");
        let message = last_step(&daemon).await["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(expected), "{name}: {message}");
    }
    // And it still runs what is fine.
    let ready = dray::tls::client()
        .get(format!("{}/readyz", daemon.url))
        .send()
        .await
        .expect("readyz");
    assert!(ready.status().is_success());
}

/// An ECDSA P-256 key pair made with openssl, as the README says: (private PKCS#8 PEM, public).
fn key_pair(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            private.to_str().expect("utf-8"),
        ],
        vec![
            "pkey",
            "-in",
            private.to_str().expect("utf-8"),
            "-pubout",
            "-out",
            public.to_str().expect("utf-8"),
        ],
    ] {
        let status = std::process::Command::new("openssl")
            .args(&args)
            .status()
            .expect("openssl runs (apt-get install openssl)");
        assert!(status.success(), "openssl {args:?}");
    }
    (private, public)
}

/// The bytes and digest of manifest `reference` of `repo`, as the registry serves them.
async fn reqwest_manifest(registry: &Registry, repo: &str, reference: &str) -> (Vec<u8>, String) {
    let response = dray::tls::client()
        .get(format!(
            "http://{}/v2/{repo}/manifests/{reference}",
            registry.address
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("read a manifest");
    assert!(response.status().is_success(), "{response:?}");
    let bytes = response.bytes().await.expect("a body").to_vec();
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    (bytes, digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_with_keys_runs_only_what_one_of_them_signed() {
    let keys = tempfile::tempdir().expect("a dir");
    let (trusted, trusted_pub) = key_pair(keys.path(), "trusted");
    let (stranger, _) = key_pair(keys.path(), "stranger");
    // A key as cosign makes it (encrypted; its password in COSIGN_PASSWORD), made by
    // `dray plugin generate-key`.
    let made = std::process::Command::new(dray_tests::dray_bin())
        .args(["plugin", "generate-key", "--output-prefix"])
        .arg(keys.path().join("team"))
        .env("COSIGN_PASSWORD", "correct horse")
        .output()
        .expect("dray runs");
    assert!(made.status.success(), "{made:?}");
    let registry = Registry::start();
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        oci: vec![dray::oci::plugins::OciRule {
            pattern: format!("{}/steps/*", registry.address),
            keys: vec![trusted_pub.clone(), keys.path().join("team.pub")],
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");
    let hello = hello_step().display().to_string();
    let push = |name: &str, key: Option<&PathBuf>| {
        let reference = format!("oci://{}/steps/{name}:1.0.0", registry.address);
        let mut args = vec!["plugin", "push", &reference, &hello];
        let key_text;
        if let Some(key) = key {
            key_text = key.display().to_string();
            args.extend(["--sign-key", &key_text]);
        }
        let out = daemon.cli(&args);
        assert_eq!(out.code, 0, "{out:?}");
        reference
    };

    let signed = push("signed", Some(&trusted));
    daemon.apply_ok(&pipeline(&signed)).await;
    let promoted = daemon.promote("shop", "dev", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");

    // The encrypted key signs when given its password, and only then.
    let team_key = keys.path().join("team.key").display().to_string();
    let reference = format!("oci://{}/steps/team:1.0.0", registry.address);
    let wrong = daemon.cli_with_env(
        &[
            "plugin",
            "push",
            &reference,
            &hello,
            "--sign-key",
            &team_key,
        ],
        &[("COSIGN_PASSWORD", "wrong")],
    );
    assert_ne!(wrong.code, 0, "{wrong:?}");
    assert!(
        wrong.stderr.contains("COSIGN_PASSWORD") && !wrong.stderr.contains("correct horse"),
        "{wrong:?}"
    );
    let pushed = daemon.cli_with_env(
        &[
            "plugin",
            "push",
            &reference,
            &hello,
            "--sign-key",
            &team_key,
        ],
        &[("COSIGN_PASSWORD", "correct horse")],
    );
    assert_eq!(pushed.code, 0, "{pushed:?}");
    daemon.apply_ok(&pipeline(&reference)).await;
    let promoted = daemon.promote("shop", "dev", "f1");
    assert_eq!(promoted.code, 0, "signed with cosign.key: {promoted:?}");

    // A signature stored the OCI 1.1 way, as `cosign sign --registry-referrers-mode=oci-1-1`
    // does: a manifest whose subject is the plugin, listed (this registry has no referrers API)
    // in the index at the fallback tag `sha256-HEX`.
    let reference = push("referred", None);
    let repo = "steps/referred";
    let (manifest, digest) = reqwest_manifest(&registry, repo, "1.0.0").await;
    let payload = dray::oci::signature::payload(&format!("{}/{repo}", registry.address), &digest);
    let private = std::fs::read_to_string(&trusted).expect("the key");
    let signed = dray::oci::signature::SigningKey::from_pem(&private, None)
        .expect("a key")
        .sign(&payload)
        .expect("signed");
    let payload_digest = registry.put_blob(repo, &payload).await;
    let empty = registry.put_blob(repo, b"{}").await;
    let signature = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": dray::oci::signature::ARTIFACT_TYPE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{
            "mediaType": dray::oci::signature::MEDIA_TYPE,
            "digest": payload_digest, "size": payload.len(),
            "annotations": {(dray::oci::signature::ANNOTATION): signed},
        }],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": manifest.len()},
    });
    let signature_digest = registry
        .put_manifest(
            repo,
            "signature",
            "application/vnd.oci.image.manifest.v1+json",
            &signature,
        )
        .await;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": dray::oci::signature::ARTIFACT_TYPE,
            "digest": signature_digest, "size": signature.to_string().len(),
        }],
    });
    registry
        .put_manifest(
            repo,
            &dray::oci::signature::referrers_tag(&digest),
            "application/vnd.oci.image.index.v1+json",
            &index,
        )
        .await;
    let inspected = daemon.cli(&["plugin", "inspect", &reference]);
    assert!(
        inspected.stderr.contains("1 signature manifest"),
        "{inspected:?}"
    );
    daemon.apply_ok(&pipeline(&reference)).await;
    let promoted = daemon.promote("shop", "dev", "f1");
    assert_eq!(promoted.code, 0, "signed as a referrer: {promoted:?}");
    // The same referrer listed for another manifest signs nothing there: its subject and payload
    // name the first.
    let other = builtin_file(keys.path(), "verifiers");
    let listed_elsewhere = format!("oci://{}/{repo}:2.0.0", registry.address);
    let out = daemon.cli(&[
        "plugin",
        "push",
        &listed_elsewhere,
        &other.display().to_string(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let (_, other_digest) = reqwest_manifest(&registry, repo, "2.0.0").await;
    registry
        .put_manifest(
            repo,
            &dray::oci::signature::referrers_tag(&other_digest),
            "application/vnd.oci.image.index.v1+json",
            &index,
        )
        .await;

    for (reference, expected) in [
        (push("unsigned", None), "has no signature"),
        (push("strange", Some(&stranger)), "is not signed by any key"),
        (listed_elsewhere, "has no signature"),
    ] {
        daemon.apply_ok(&pipeline(&reference)).await;
        assert_ne!(daemon.promote("shop", "dev", "f1").code, 0, "{reference}");
        let message = last_step(&daemon).await["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains(expected) && message.contains("trusted.pub"),
            "{reference}: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_from_a_registry_measures_a_stage() {
    let health = dray_tests::http::json_server(|_| r#"{"ok": true}"#.to_string());
    let registry = Registry::start();
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        oci: vec![rule(
            &format!("{}/verifiers/*", registry.address),
            &["http", "kube"],
        )],
        allow_hosts: vec![health.clone()],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");
    let dir = tempfile::tempdir().expect("a dir");
    let file = builtin_file(dir.path(), "verifiers");
    let reference = format!("oci://{}/verifiers/metrics:1.0.0", registry.address);
    let pushed = daemon.cli(&["plugin", "push", &reference, &file.display().to_string()]);
    assert_eq!(pushed.code, 0, "{pushed:?}");

    let manifests = pipeline_with_verification(&reference, &health);
    daemon.apply_ok(&manifests).await;
    let promoted = daemon.promote("shop", "dev", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let stage = daemon.get_json("/v1/projects/shop/stages/dev").await;
        let record = &stage["status"]["freightHistory"][0]["verificationHistory"][0];
        match record["phase"].as_str() {
            Some("Successful") => break,
            Some("Pending" | "Running") | None => {}
            Some(other) => panic!("verification {other}: {record:#}"),
        }
        assert!(std::time::Instant::now() < deadline, "{stage:#}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// One Stage `dev` (a `compose-output` step) verified by an AnalysisTemplate whose metric's
/// provider is the verifier `reference#web`, asking `health`.
fn pipeline_with_verification(reference: &str, health: &str) -> String {
    let template_and_stage = format!(
        "---\napiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {{name: health, namespace: shop}}\n\
             spec:\n  metrics:\n  - name: healthy\n    successCondition: result == true\n    provider:\n      plugin:\n        \"{reference}#web\": {{url: \"http://{health}/health\", jsonPath: \"{{$.ok}}\"}}\n\
             ---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {{name: dev, namespace: shop}}\n\
             spec:\n  requestedFreight:\n  - origin: {{kind: Warehouse, name: app}}\n    sources: {{direct: true}}\n\
             \x20 promotionTemplate:\n    spec:\n      steps:\n      - uses: compose-output\n        config: {{done: true}}\n\
             \x20 verification:\n    analysisTemplates: [{{name: health}}]\n"
    );
    format!(
        "{}{template_and_stage}{}",
        manifests::project("shop", &["image: {repoURL: registry.example/web}"]),
        manifests::freight(
            "shop",
            "f1",
            "images: [{repoURL: registry.example/web, tag: 1.0.0, digest: \"sha256:0000000000000000000000000000000000000000000000000000000000000001\"}]",
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_component_under_two_rules_gets_each_rules_grants() {
    let registry = Registry::start();
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        oci: vec![
            rule(&format!("{}/trusted/*", registry.address), &["git"]),
            rule(&format!("{}/untrusted/*", registry.address), &[]),
        ],
        ..Default::default()
    })
    .await
    .expect("the daemon starts");
    let dir = tempfile::tempdir().expect("a dir");
    let file = git_steps_file(dir.path());
    let trusted = format!("{}/trusted/git:1.0.0", registry.address);
    let pushed = daemon.cli(&[
        "plugin",
        "push",
        &format!("oci://{trusted}"),
        &file.display().to_string(),
    ]);
    assert_eq!(pushed.code, 0, "{pushed:?}");
    let digest = pushed_digest(&pushed.stdout);
    // The very same manifest (same digest) in a repository the second rule covers.
    let untrusted = format!("{}/untrusted/git:1.0.0", registry.address);
    let copied = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{trusted}"))
        .arg(format!("docker://{untrusted}"))
        .output()
        .expect("skopeo runs (tests/run.sh installs it)");
    assert!(copied.status.success(), "{copied:?}");

    let stage = |uses: &str| {
        format!(
            "{}{}{}",
            manifests::project("shop", &["image: {repoURL: registry.example/web}"]),
            manifests::stage(
                "shop",
                "dev",
                &format!("- uses: {uses}#git-clear\n  config: {{path: .}}")
            ),
            manifests::freight(
                "shop",
                "f1",
                "images: [{repoURL: registry.example/web, tag: 1.0.0, digest: \"sha256:0000000000000000000000000000000000000000000000000000000000000001\"}]",
            ),
        )
    };
    daemon.apply_ok(&stage(&format!("oci://{trusted}"))).await;
    let promoted = daemon.promote("shop", "dev", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");
    assert_eq!(
        last_step(&daemon).await["plugin"],
        format!("oci://{trusted}@{digest}")
    );

    daemon.apply_ok(&stage(&format!("oci://{untrusted}"))).await;
    assert_ne!(daemon.promote("shop", "dev", "f1").code, 0);
    let step = last_step(&daemon).await;
    let message = step["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("git") && message.contains("untrusted"),
        "the loaded copy is not reused under the rule that grants nothing: {step:#}"
    );
}
