//! The foundation end to end: a real daemon, the real CLI, the example manifests.

use dray_tests::{Daemon, repo_root};
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn example() -> String {
    repo_root()
        .join("examples/kargo-demo")
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_the_kargo_quickstart_unchanged_and_keeps_it_across_a_restart() {
    let mut daemon = Daemon::start().await;
    let applied = daemon.cli(&["apply", "-f", &example()]);
    assert_eq!(applied.code, 0, "{applied:?}");
    for line in [
        "Project kargo-demo created",
        "ProjectConfig kargo-demo/kargo-demo created",
        "Warehouse kargo-demo/kargo-demo created",
        "Stage kargo-demo/test created",
        "Stage kargo-demo/uat created",
        "Stage kargo-demo/prod created",
        "AnalysisTemplate kargo-demo/kargo-demo created",
    ] {
        assert!(
            applied.stdout.contains(line),
            "missing {line:?} in\n{}",
            applied.stdout
        );
    }

    daemon.restart().await;

    let stages = daemon.cli(&["get", "stages", "-p", "kargo-demo"]);
    assert_eq!(stages.code, 0, "{stages:?}");
    let lines: Vec<&str> = stages.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("SOURCES") && lines[0].contains("AGE"),
        "{}",
        stages.stdout
    );
    let names: Vec<&str> = lines[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["prod", "test", "uat"]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("uat") && l.contains(" test ")),
        "uat takes Freight from test:\n{}",
        stages.stdout
    );

    let again = daemon.cli(&["apply", "-f", &example()]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.lines().all(|l| l.ends_with("unchanged")),
        "a second apply changes nothing:\n{}",
        again.stdout
    );

    let yaml = daemon.cli(&["get", "stage", "test", "-p", "kargo-demo", "-o", "yaml"]);
    assert_eq!(yaml.code, 0, "{yaml:?}");
    assert!(
        yaml.stdout.contains("uses: kustomize-set-image")
            && yaml.stdout.contains("resourceVersion:"),
        "{}",
        yaml.stdout
    );
}

const FIVE_DOCUMENTS_ONE_BROKEN: &str = "\
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: shop
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: images
  namespace: shop
spec:
  subscriptions:
  - image:
      repoURL: registry.example/shop/web
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: test
  namespace: shop
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: images}
    sources:
      direct: true
      requiredSoakTime: soon
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: uat
  namespace: shop
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: images}
    sources: {stages: [test]}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: prod
  namespace: shop
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: images}
    sources: {stages: [uat]}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broken_document_among_five_applies_nothing_and_says_where() {
    let daemon = Daemon::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("shop.yaml");
    std::fs::write(&file, FIVE_DOCUMENTS_ONE_BROKEN).expect("write");
    let out = daemon.cli(&["apply", "-f", &file.display().to_string()]);
    assert_eq!(out.code, 1, "{out:?}");
    let expected = format!(
        "{}:26:7: document 3 (Stage \"test\"): spec.requestedFreight[0].sources.requiredSoakTime: \"soon\" is not a duration",
        file.display()
    );
    assert!(
        out.stderr.contains(&expected),
        "expected {expected:?} in\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was applied"), "{}", out.stderr);
    let projects = daemon.cli(&["get", "projects"]);
    assert!(
        !projects.stdout.contains("shop"),
        "the Project of the same apply must not exist: {projects:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_and_bad_syntax_are_located() {
    let daemon = Daemon::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata:\n  name: p\n  lables: {a: b}\n").expect("write");
    let out = daemon.cli(&["apply", "-f", &typo.display().to_string()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "typo.yaml:5:3: document 1 (Project \"p\"): metadata.lables: unknown field `lables`"
        ),
        "{}",
        out.stderr
    );

    let syntax = dir.path().join("syntax.yaml");
    std::fs::write(&syntax, "kind: Project\n---\nmetadata: [unclosed\n").expect("write");
    let out = daemon.cli(&["apply", "-f", &syntax.display().to_string()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("syntax.yaml:")
            && out.stderr.contains("document 2")
            && out.stderr.contains("not valid YAML"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_cycle_is_refused_naming_the_stages_in_it() {
    let daemon = Daemon::start().await;
    assert_eq!(daemon.cli(&["apply", "-f", &example()]).code, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cycle.yaml");
    std::fs::write(
        &file,
        "apiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata:\n  name: test\n  namespace: kargo-demo\nspec:\n  requestedFreight:\n  - origin: {kind: Warehouse, name: kargo-demo}\n    sources: {stages: [prod]}\n",
    )
    .expect("write");
    let out = daemon.cli(&["apply", "-f", &file.display().to_string()]);
    assert_eq!(out.code, 1, "{out:?}");
    let message = out
        .stderr
        .lines()
        .find(|l| l.contains("cycle"))
        .unwrap_or_else(|| panic!("no cycle error in {}", out.stderr));
    for stage in ["test", "uat", "prod"] {
        assert!(message.contains(stage), "{message}");
    }
    let test = daemon.cli(&["get", "stage", "test", "-p", "kargo-demo", "-o", "json"]);
    let stored: Value = serde_json::from_str(&test.stdout).expect("json");
    assert_eq!(
        stored["spec"]["requestedFreight"][0]["sources"]["direct"], true,
        "the old Stage is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_requires_the_token_but_health_checks_do_not() {
    let daemon = Daemon::start().await;
    let client = dray::tls::client();
    let anonymous = client
        .get(format!("{}/v1/projects", daemon.url))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let body: Value = anonymous.json().await.expect("json error");
    assert_eq!(body["code"], "unauthorized");
    let wrong = client
        .get(format!("{}/v1/projects", daemon.url))
        .bearer_auth("not-the-token")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    for path in ["/healthz", "/readyz"] {
        let r = client
            .get(format!("{}{path}", daemon.url))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let with_token = daemon
        .api(Method::GET, "/v1/projects")
        .send()
        .await
        .expect("request");
    assert_eq!(with_token.status(), StatusCode::OK);

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dray::service::token_path(&daemon.data_dir))
        .expect("token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");

    let out = daemon.cli(&["get", "projects", "--token", "wrong"]);
    assert_eq!(out.code, 3, "a wrong token is exit code 3: {out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_tell_scripts_what_happened() {
    let daemon = Daemon::start().await;
    assert_eq!(daemon.cli(&["apply", "-f", &example()]).code, 0);
    let missing = daemon.cli(&["get", "stage", "nope", "-p", "kargo-demo"]);
    assert_eq!(missing.code, 4, "{missing:?}");
    assert!(
        missing.stderr.contains("dray get stages -p kargo-demo"),
        "{}",
        missing.stderr
    );
    assert_eq!(daemon.cli(&["get", "stagez"]).code, 2);
    let gone = daemon.cli(&["get", "stages", "--server", "http://127.0.0.1:9"]);
    assert_eq!(gone.code, 3, "{gone:?}");
    assert!(gone.stderr.contains("dray serve"), "{}", gone.stderr);
    let deleted = daemon.cli(&["delete", "stage", "prod", "-p", "kargo-demo"]);
    assert_eq!(deleted.code, 0, "{deleted:?}");
    assert_eq!(deleted.stdout.trim(), "Stage kargo-demo/prod deleted");
    assert_eq!(
        daemon
            .cli(&["delete", "stage", "prod", "-p", "kargo-demo"])
            .code,
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_project_deletes_everything_in_it_and_nothing_else() {
    let daemon = Daemon::start().await;
    assert_eq!(daemon.cli(&["apply", "-f", &example()]).code, 0);
    let other = "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: other}\n---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata: {name: w, namespace: other}\nspec:\n  subscriptions:\n  - git: {repoURL: https://git.example/app.git}\n";
    assert_eq!(daemon.apply(other).await.status(), StatusCode::OK);
    let deleted = daemon.cli(&["delete", "project", "kargo-demo"]);
    assert_eq!(deleted.code, 0, "{deleted:?}");
    assert_eq!(
        deleted.stdout.lines().count(),
        8,
        "seven resources and the project:\n{}",
        deleted.stdout
    );
    assert!(
        deleted.stdout.ends_with("Project kargo-demo deleted\n"),
        "{}",
        deleted.stdout
    );
    let stages: Value = daemon.get_json("/v1/stages").await;
    assert_eq!(stages["items"].as_array().map(Vec::len), Some(0));
    let warehouses: Value = daemon.get_json("/v1/warehouses").await;
    assert_eq!(
        warehouses["items"][0]["metadata"]["namespace"], "other",
        "the other project is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freight_is_named_by_kargos_fingerprint_and_aliases_are_unique() {
    let daemon = Daemon::start().await;
    assert_eq!(daemon.cli(&["apply", "-f", &example()]).code, 0);
    let freight = |alias: &str, tag: &str| {
        format!(
            "apiVersion: kargo.akuity.io/v1alpha1\nkind: Freight\nmetadata:\n  name: ignored\n  namespace: kargo-demo\n{alias}origin: {{kind: Warehouse, name: my-warehouse}}\nimages:\n- repoURL: public.ecr.aws/nginx/nginx\n  tag: {tag}\n  digest: sha256:abc\n"
        )
    };
    // The origin Warehouse must exist.
    let r = daemon.apply(&freight("", "1.27.0")).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let warehouse = "apiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata: {name: my-warehouse, namespace: kargo-demo}\nspec:\n  subscriptions:\n  - image: {repoURL: public.ecr.aws/nginx/nginx}\n";
    let r = daemon.apply(warehouse).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = daemon.apply(&freight("alias: first\n", "1.27.0")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    // sha1("Warehouse/my-warehouse:public.ecr.aws/nginx/nginx:1.27.0@sha256:abc"), computed by Python's hashlib
    assert_eq!(
        body["items"][0]["name"],
        "9cb63e7cb3ac2465cb4958883fda69a3de9aa09b"
    );

    let by_alias: Value = daemon
        .get_json("/v1/projects/kargo-demo/freight/first")
        .await;
    assert_eq!(
        by_alias["metadata"]["name"],
        "9cb63e7cb3ac2465cb4958883fda69a3de9aa09b"
    );

    let r = daemon.apply(&freight("alias: first\n", "1.27.1")).await;
    assert_eq!(
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "an alias is unique per project"
    );
    let r = daemon.apply(&freight("", "1.27.1")).await;
    let body: Value = r.json().await.expect("json");
    let generated = daemon.api(
        Method::GET,
        &format!(
            "/v1/projects/kargo-demo/freight/{}",
            body["items"][0]["name"].as_str().expect("name")
        ),
    );
    let generated: Value = generated
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let alias = generated["alias"].as_str().expect("a generated alias");
    assert!(alias.split('-').count() == 2 && alias != "first", "{alias}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_changes_after_a_listed_sequence() {
    use futures_util::StreamExt;
    let daemon = Daemon::start().await;
    let list: Value = daemon.get_json("/v1/projects").await;
    let since = list["sequence"].as_u64().expect("sequence");
    let response = daemon
        .api(Method::GET, &format!("/v1/watch?since={since}&kind=stages"))
        .send()
        .await
        .expect("watch");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(daemon.cli(&["apply", "-f", &example()]).code, 0);
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while text.matches("event: ADDED").count() < 3 {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("three events within 10 s");
        text.push_str(&String::from_utf8_lossy(
            &chunk.expect("stream open").expect("bytes"),
        ));
    }
    assert!(
        !text.contains("\"kind\":\"Warehouse\",\"metadata\""),
        "filtered to Stages:\n{text}"
    );
    for stage in ["\"name\":\"test\"", "\"name\":\"uat\"", "\"name\":\"prod\""] {
        assert!(text.contains(stage), "{stage} in\n{text}");
    }
    assert!(
        text.contains("id: "),
        "events carry their sequence as the SSE id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_a_second_daemon_on_the_same_data_dir_are_refused() {
    let daemon = Daemon::start().await;
    let huge = "#".repeat(dray::api::MAX_BODY_BYTES + 1);
    let r = daemon.apply(&huge).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let err = Daemon::start_in(&daemon.data_dir)
        .await
        .err()
        .expect("the data dir is in use");
    assert!(format!("{err:#}").contains("another"), "{err:#}");
    assert_eq!(
        daemon
            .api(Method::GET, "/readyz")
            .send()
            .await
            .expect("ready")
            .status(),
        StatusCode::OK,
        "the first daemon is unharmed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_values_never_leave_the_daemon() {
    let daemon = Daemon::start().await;
    assert_eq!(daemon.cli(&["apply", "-f", &example()]).code, 0);
    let secret = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: repo\n  namespace: kargo-demo\n  labels: {kargo.akuity.io/cred-type: git}\nstringData:\n  repoURL: https://git.example/demo.git\n  password: hunter2\n";
    let r = daemon.apply(secret).await;
    assert_eq!(r.status(), StatusCode::OK);
    for path in [
        "/v1/projects/kargo-demo/secrets/repo",
        "/v1/projects/kargo-demo/secrets",
        "/v1/secrets",
    ] {
        let text = daemon
            .api(Method::GET, path)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
        assert!(
            text.contains("REDACTED") && !text.contains("aHVudGVyMg") && !text.contains("hunter2"),
            "{path}: {text}"
        );
    }
}
