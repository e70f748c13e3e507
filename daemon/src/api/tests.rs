//! The API driven without a socket: routing, authentication, and who may call what.

use std::collections::BTreeSet;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use tower::ServiceExt;

use super::*;
use crate::auth::tokens::{self, Token};
use crate::auth::{Role, Scope};

/// The whole app on a fresh store, with no plugins: enough for routing and auth.
fn app(dir: &std::path::Path) -> (Router, Store) {
    let store = Store::open(&dir.join("dray.redb")).expect("a store");
    let engine = crate::engine::Engine::new(
        store.clone(),
        dir.to_path_buf(),
        Vec::new(),
        crate::engine::Settings::default(),
    );
    let discovery = crate::discovery::Discovery::new(
        store.clone(),
        dir,
        crate::discovery::Settings {
            local_roots: Vec::new(),
            ssh_known_hosts: None,
            registry_rate: 20,
            registry_mirrors: Default::default(),
            metrics: Default::default(),
        },
    );
    let app = router(AppState {
        store: store.clone(),
        token: "the-token".into(),
        engine,
        discovery,
        deliveries: Default::default(),
        oidc: None,
    });
    (app, store)
}

async fn call(app: Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.oneshot(request).await.expect("an answer");
    let status = response.status();
    // An SSE stream never ends: its status is all these tests need.
    if response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
    {
        return (status, String::new());
    }
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn request(method: Method, path: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if !body.is_empty() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    request
        .body(Body::from(body.to_string()))
        .expect("a request")
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    request(Method::GET, path, token, "")
}

#[tokio::test]
async fn answers_without_a_socket_and_guards_v1_with_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, _) = app(dir.path());
    assert_eq!(
        call(app.clone(), get("/readyz", None)).await.0,
        StatusCode::OK
    );
    let (status, body) = call(app.clone(), get("/v1/projects", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
    let (status, _) = call(app.clone(), get("/v1/projects", Some("wrong"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(app.clone(), get("/v1/projects", Some("the-token"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(app, get("/nowhere", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no such endpoint"), "{body}");
}

const PIPELINES: &str = r#"
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: shop}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: bank}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: app, namespace: shop}
spec:
  subscriptions:
  - image: {repoURL: example.test/shop/app}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: ledger, namespace: bank}
spec:
  subscriptions:
  - image: {repoURL: example.test/bank/ledger}
"#;

/// A token of `role` in `projects` (every project when empty), made in the store.
fn token(store: &Store, name: &str, role: Role, projects: &[&str]) -> String {
    let scope = if projects.is_empty() {
        Scope::AllProjects
    } else {
        Scope::Projects(projects.iter().map(|p| p.to_string()).collect())
    };
    store
        .write(|tx| {
            tokens::create(
                tx,
                Token {
                    name: name.into(),
                    role,
                    scope,
                    created: crate::resource::now(),
                    created_by: "admin".into(),
                },
            )
        })
        .expect("a token")
}

fn pipelines(store: &Store) {
    let sources = [crate::admission::Source {
        name: "pipelines.yaml".into(),
        content: PIPELINES.into(),
    }];
    crate::admission::apply(store, &sources, None, false, None).expect("applied");
}

/// What a route needs, written here apart from `access.rs` so that a wrong entry there fails.
#[derive(Clone, Copy, Debug)]
enum Needs {
    AnyToken,
    InShop(Role),
    Everywhere(Role),
    System,
}

/// Every `/v1` route, called on project `shop` where it names one.
fn routes() -> Vec<(Method, &'static str, &'static str, Needs)> {
    use Needs::*;
    use Role::*;
    let warehouse = r#"{"sources":[{"name":"w.yaml","content":"apiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata: {name: web, namespace: shop}\nspec:\n  subscriptions:\n  - image: {repoURL: example.test/shop/web}\n"}]}"#;
    vec![
        (Method::GET, "/metrics", "", Everywhere(Viewer)),
        (Method::GET, "/v1/version", "", AnyToken),
        (Method::GET, "/v1/whoami", "", AnyToken),
        (Method::GET, "/v1/watch?project=shop", "", AnyToken),
        (Method::GET, "/v1/projects", "", AnyToken),
        (Method::GET, "/v1/plugins", "", AnyToken),
        (Method::GET, "/v1/stages", "", AnyToken),
        (Method::GET, "/v1/clusterpromotiontasks/t", "", AnyToken),
        (
            Method::GET,
            "/v1/clusterconfigs/cluster/webhookreceivers",
            "",
            AnyToken,
        ),
        (Method::GET, "/v1/projects/shop", "", InShop(Viewer)),
        (
            Method::GET,
            "/v1/projects/shop/warehouses",
            "",
            InShop(Viewer),
        ),
        (
            Method::GET,
            "/v1/projects/shop/warehouses/app",
            "",
            InShop(Viewer),
        ),
        (
            Method::GET,
            "/v1/projects/shop/webhookreceivers",
            "",
            InShop(Viewer),
        ),
        (Method::GET, "/v1/projects/shop/graph", "", InShop(Viewer)),
        (
            Method::GET,
            "/v1/projects/shop/timeline?warehouse=app&stage=dev",
            "",
            InShop(Viewer),
        ),
        (Method::GET, "/v1/projects/shop/export", "", InShop(Viewer)),
        (
            Method::GET,
            "/v1/projects/shop/stages/dev/freight",
            "",
            InShop(Viewer),
        ),
        (
            Method::GET,
            "/v1/projects/shop/stages/dev/freight/f",
            "",
            InShop(Viewer),
        ),
        (
            Method::GET,
            "/v1/projects/shop/promotions/p/logs",
            "",
            InShop(Viewer),
        ),
        (
            Method::GET,
            "/v1/projects/shop/analysisruns/r/logs",
            "",
            InShop(Viewer),
        ),
        (
            Method::POST,
            "/v1/projects/shop/stages/dev/promote",
            r#"{"freight":"f"}"#,
            InShop(Promoter),
        ),
        (
            Method::POST,
            "/v1/projects/shop/stages/dev/promote-downstream",
            r#"{"freight":"f"}"#,
            InShop(Promoter),
        ),
        (
            Method::POST,
            "/v1/projects/shop/promotions/p/abort",
            "",
            InShop(Promoter),
        ),
        (
            Method::POST,
            "/v1/projects/shop/warehouses/app/refresh",
            "",
            InShop(Promoter),
        ),
        (
            Method::POST,
            "/v1/projects/shop/freight/f/approve",
            r#"{"stage":"dev"}"#,
            InShop(Promoter),
        ),
        (
            Method::POST,
            "/v1/projects/shop/stages/dev/verification",
            "",
            InShop(Promoter),
        ),
        (
            Method::POST,
            "/v1/projects/shop/stages/dev/verification/abort",
            "",
            InShop(Promoter),
        ),
        (Method::POST, "/v1/apply", warehouse, InShop(Admin)),
        (
            Method::DELETE,
            "/v1/projects/shop/warehouses/nothing",
            "",
            InShop(Admin),
        ),
        (Method::DELETE, "/v1/projects/shop", "", InShop(Admin)),
        (Method::DELETE, "/v1/clusterpromotiontasks/t", "", System),
        (
            Method::POST,
            "/v1/plugins/update",
            r#"{"reference":"oci://example.test/x:1"}"#,
            System,
        ),
        (Method::GET, "/v1/tokens", "", System),
        (Method::GET, "/v1/backup", "", System),
        (
            Method::POST,
            "/v1/tokens",
            r#"{"name":"made","role":"viewer","allProjects":true}"#,
            System,
        ),
        (Method::DELETE, "/v1/tokens/nobody", "", System),
    ]
}

#[tokio::test]
async fn every_route_is_open_to_exactly_the_roles_it_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, store) = app(dir.path());
    // Callers: (token, role, projects); an empty list is every project.
    let callers: Vec<(String, Role, Vec<&str>)> = vec![
        (
            token(&store, "viewer", Role::Viewer, &["shop"]),
            Role::Viewer,
            vec!["shop"],
        ),
        (
            token(&store, "promoter", Role::Promoter, &["shop"]),
            Role::Promoter,
            vec!["shop"],
        ),
        (
            token(&store, "admin", Role::Admin, &["shop"]),
            Role::Admin,
            vec!["shop"],
        ),
        (
            token(&store, "bank-admin", Role::Admin, &["bank"]),
            Role::Admin,
            vec!["bank"],
        ),
        (
            token(&store, "all-viewer", Role::Viewer, &[]),
            Role::Viewer,
            vec![],
        ),
        (
            token(&store, "root", Role::SystemAdmin, &[]),
            Role::SystemAdmin,
            vec![],
        ),
        ("the-token".to_string(), Role::SystemAdmin, vec![]),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, needs) in routes() {
        for (secret, role, projects) in &callers {
            let in_shop = projects.is_empty() || projects.contains(&"shop");
            let allowed = *role == Role::SystemAdmin
                || match needs {
                    Needs::AnyToken => true,
                    Needs::InShop(needed) => in_shop && *role >= needed,
                    Needs::Everywhere(needed) => projects.is_empty() && *role >= needed,
                    Needs::System => false,
                };
            // Again before each call: an earlier caller's DELETE of the project must not change
            // what the next one meets.
            pipelines(&store);
            let (status, text) = call(
                app.clone(),
                request(method.clone(), path, Some(secret), body),
            )
            .await;
            let refused = status == StatusCode::FORBIDDEN;
            if status == StatusCode::UNAUTHORIZED || refused == allowed {
                wrong.push(format!(
                    "{method} {path} as {role} in {projects:?}: {status} {text}"
                ));
            }
        }
        // Without a token, or with a made-up one of the right shape, every route is 401.
        for secret in [
            None,
            Some("dray_0000000000000000000000000000000000000000000000000000000000000000"),
        ] {
            let (status, _) = call(app.clone(), request(method.clone(), path, secret, body)).await;
            if status != StatusCode::UNAUTHORIZED {
                wrong.push(format!("{method} {path} with token {secret:?}: {status}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn webhooks_and_probes_need_no_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, _) = app(dir.path());
    for (method, path) in [
        (Method::GET, "/healthz"),
        (Method::GET, "/readyz"),
        (Method::POST, "/webhooks/github/nothing"),
    ] {
        let (status, body) = call(app.clone(), request(method.clone(), path, None, "{}")).await;
        assert!(
            status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
            "{method} {path}: {status} {body}"
        );
    }
}

/// The names of the items of a list answer.
fn names(body: &str) -> BTreeSet<String> {
    let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
    json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_token_sees_only_its_projects_in_lists_and_watches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, store) = app(dir.path());
    let since = store.last_seq();
    pipelines(&store);
    let viewer = token(&store, "viewer", Role::Viewer, &["shop"]);
    let (_, body) = call(app.clone(), get("/v1/projects", Some(&viewer))).await;
    assert_eq!(names(&body), BTreeSet::from(["shop".to_string()]));
    let (_, body) = call(app.clone(), get("/v1/warehouses", Some(&viewer))).await;
    assert_eq!(names(&body), BTreeSet::from(["app".to_string()]));
    let (status, _) = call(
        app.clone(),
        get("/v1/projects/bank/warehouses", Some(&viewer)),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The watch replays from before the apply: only shop's objects come through.
    let response = app
        .clone()
        .oneshot(get(&format!("/v1/watch?since={since}"), Some(&viewer)))
        .await
        .expect("a stream");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let mut seen = String::new();
    use futures_util::StreamExt;
    while !seen.contains("\"name\":\"app\"") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
            .await
            .expect("the watch sends shop's objects")
            .expect("a chunk")
            .expect("data");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // One more change in each project; the bank one must not appear before shop's.
    store
        .write(|tx| {
            for (project, name) in [("bank", "vault"), ("shop", "cart")] {
                let mut object = tx
                    .get(
                        crate::resource::Kind::Warehouse,
                        project,
                        if project == "bank" { "ledger" } else { "app" },
                    )?
                    .expect("a warehouse");
                object.metadata.name = name.into();
                object.metadata.resource_version = None;
                tx.put(object, None, crate::store::StatusMode::Keep)?;
            }
            Ok::<_, crate::store::StoreError>(())
        })
        .expect("written");
    while !seen.contains("\"name\":\"cart\"") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
            .await
            .expect("the watch sends the new shop Warehouse")
            .expect("a chunk")
            .expect("data");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    for hidden in ["bank", "ledger", "vault"] {
        assert!(!seen.contains(hidden), "the watch showed {hidden}: {seen}");
    }
}

#[tokio::test]
async fn an_apply_outside_the_tokens_projects_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, store) = app(dir.path());
    pipelines(&store);
    let admin = token(&store, "shop-admin", Role::Admin, &["shop"]);
    let both = r#"{"sources":[{"name":"both.yaml","content":"apiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata: {name: web, namespace: shop}\nspec:\n  subscriptions:\n  - image: {repoURL: example.test/shop/web}\n---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata: {name: web, namespace: bank}\nspec:\n  subscriptions:\n  - image: {repoURL: example.test/bank/web}\n"}]}"#;
    let before = store.last_seq();
    let (status, body) = call(
        app.clone(),
        request(Method::POST, "/v1/apply", Some(&admin), both),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("both.yaml") && body.contains("document") && body.contains("\\\"bank\\\""),
        "{body}"
    );
    assert!(body.contains("token:shop-admin (admin in shop)"), "{body}");
    assert_eq!(store.last_seq(), before, "nothing was written");
    let cluster = r#"{"sources":[{"name":"t.yaml","content":"apiVersion: kargo.akuity.io/v1alpha1\nkind: ClusterPromotionTask\nmetadata: {name: t}\nspec:\n  steps:\n  - uses: git-clone\n"}]}"#;
    let (status, body) = call(
        app,
        request(Method::POST, "/v1/apply", Some(&admin), cluster),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("system-admin"), "{body}");
}

#[tokio::test]
async fn a_token_is_shown_once_and_refused_as_soon_as_it_is_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, store) = app(dir.path());
    pipelines(&store);
    let (status, body) = call(
        app.clone(),
        request(
            Method::POST,
            "/v1/tokens",
            Some("the-token"),
            r#"{"name":"ci-bot","role":"promoter","projects":["shop"]}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let secret = answer["token"].as_str().expect("the token").to_string();
    let (_, body) = call(app.clone(), get("/v1/tokens", Some("the-token"))).await;
    assert!(
        body.contains("\"ci-bot\"") && !body.contains(&secret),
        "{body}"
    );
    let (_, body) = call(app.clone(), get("/v1/whoami", Some(&secret))).await;
    assert!(body.contains("token:ci-bot (promoter in shop)"), "{body}");
    let (status, body) = call(
        app.clone(),
        request(
            Method::POST,
            "/v1/projects/shop/warehouses/app/refresh",
            Some(&secret),
            "",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = call(
        app.clone(),
        request(Method::DELETE, "/v1/tokens/ci-bot", Some("the-token"), ""),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(app.clone(), get("/v1/whoami", Some(&secret))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// An object of `kind` named `name` in project `shop`, with `body`'s fields.
fn shop_object(
    kind: crate::resource::Kind,
    name: &str,
    body: serde_json::Value,
) -> crate::resource::Object {
    crate::resource::Object {
        api_version: "kargo.akuity.io/v1alpha1".into(),
        kind,
        metadata: crate::resource::ObjectMeta {
            name: name.into(),
            namespace: Some("shop".into()),
            ..Default::default()
        },
        body: body.as_object().cloned().unwrap_or_default(),
    }
}

/// Writes `n` Freight of Warehouse `app` in project `shop` straight into the store.
fn many_freight(store: &Store, n: usize) {
    store
        .write(|tx| {
            for i in 0..n {
                let f = shop_object(
                    crate::resource::Kind::Freight,
                    &format!("{i:040x}"),
                    serde_json::json!({
                        "origin": {"kind": "Warehouse", "name": "app"},
                        "discoveredAt": format!("2026-01-01T{:02}:{:02}:{:02}Z", i / 3600, i / 60 % 60, i % 60),
                        "images": [{"repoURL": "example.test/app", "tag": format!("1.{i}.0")}],
                    }),
                );
                tx.put(f, None, crate::store::StatusMode::Replace)?;
            }
            Ok::<(), crate::store::StoreError>(())
        })
        .expect("freight written");
}

#[tokio::test]
async fn the_uis_routes_bound_what_they_answer_and_refuse_what_is_not_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, store) = app(dir.path());
    pipelines(&store);
    many_freight(&store, 250);
    let t = Some("the-token");
    let json = |body: &str| -> serde_json::Value { serde_json::from_str(body).expect("json") };

    // A page is at most 200 Freight, newest first, whatever the caller asks.
    let (status, body) = call(
        app.clone(),
        get(
            "/v1/projects/shop/timeline?warehouse=app&limit=100000000",
            t,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let page = json(&body);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(200));
    assert_eq!(page["more"], true);
    assert_eq!(page["items"][0]["artifacts"][0], "example.test/app:1.249.0");
    // Past the end: nothing, and no more.
    let (status, body) = call(
        app.clone(),
        get(
            "/v1/projects/shop/timeline?warehouse=app&skip=18446744073709551615",
            t,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["items"], serde_json::json!([]));
    assert_eq!(json(&body)["more"], false);
    // Numbers that are not numbers, and what does not exist, are refused and say what.
    for (path, want, says) in [
        (
            "/v1/projects/shop/timeline?warehouse=app&skip=-1",
            StatusCode::BAD_REQUEST,
            "skip",
        ),
        (
            "/v1/projects/shop/timeline",
            StatusCode::BAD_REQUEST,
            "warehouse",
        ),
        (
            "/v1/projects/shop/timeline?warehouse=nothing",
            StatusCode::NOT_FOUND,
            "Warehouse \"nothing\" not found",
        ),
        (
            "/v1/projects/shop/timeline?warehouse=app&stage=nowhere",
            StatusCode::NOT_FOUND,
            "Stage \"nowhere\" not found",
        ),
        (
            "/v1/projects/nothing/graph",
            StatusCode::NOT_FOUND,
            "project not found",
        ),
    ] {
        let (status, body) = call(app.clone(), get(path, t)).await;
        assert_eq!(status, want, "{path}: {body}");
        let message = json(&body)["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(says), "{path}: {body}");
    }

    // Stages naming each other (admission refuses the cycle; a store written otherwise) and a
    // Stage naming one that does not exist still make a graph.
    store
        .write(|tx| {
            for (name, sources) in [
                ("a", serde_json::json!({"stages": ["b"]})),
                ("b", serde_json::json!({"stages": ["a"]})),
                ("c", serde_json::json!({"stages": ["ghost"]})),
                ("dev", serde_json::json!({"direct": true})),
            ] {
                let spec = serde_json::json!({"spec": {"requestedFreight": [
                    {"origin": {"kind": "Warehouse", "name": "app"}, "sources": sources}]}});
                tx.put(
                    shop_object(crate::resource::Kind::Stage, name, spec),
                    None,
                    crate::store::StatusMode::Keep,
                )?;
            }
            Ok::<(), crate::store::StoreError>(())
        })
        .expect("stages written");
    let (status, body) = call(app.clone(), get("/v1/projects/shop/graph", t)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let graph = json(&body);
    let names: Vec<&str> = graph["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    for name in ["a", "b", "c", "dev", "app"] {
        assert!(names.contains(&name), "{name}: {names:?}");
    }
    // The newest of 250 Freight waits for the Stage that takes the Warehouse's directly.
    let dev = graph["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == "dev")
        .expect("dev");
    assert_eq!(
        dev["stage"]["waiting"][0]["artifacts"][0], "example.test/app:1.249.0",
        "{dev}"
    );

    // The page itself: no token needed to load it, and it carries its policy.
    let response = app
        .clone()
        .oneshot(get("/", None))
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    for path in ["/ui/../dray.redb", "/ui/%2e%2e%2fdray.redb", "/ui/token"] {
        let (status, _) = call(app.clone(), get(path, None)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn projects_are_listed_with_their_stages_by_state_and_warehouses_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, store) = app(dir.path());
    pipelines(&store);
    use crate::resource::Kind;
    use crate::store::StatusMode;
    store
        .write(|tx| {
            let stage = |name: &str, status: serde_json::Value| {
                shop_object(
                    Kind::Stage,
                    name,
                    serde_json::json!({"spec": {"requestedFreight": [{"origin": {"kind": "Warehouse", "name": "app"}, "sources": {"direct": true}}]}, "status": status}),
                )
            };
            // One whose last Promotion failed, one promoting, one whose watched apps are not
            // healthy, one that never held anything.
            tx.put(
                stage("failing", serde_json::json!({"lastPromotion": {"name": "p1", "status": {"phase": "Failed"}}})),
                None,
                StatusMode::Replace,
            )?;
            tx.put(
                stage("busy", serde_json::json!({"currentPromotion": {"name": "p2"}})),
                None,
                StatusMode::Replace,
            )?;
            tx.put(
                stage("sick", serde_json::json!({"health": {"status": "Unhealthy"}})),
                None,
                StatusMode::Replace,
            )?;
            tx.put(stage("new", serde_json::json!({})), None, StatusMode::Replace)?;
            let warehouse = shop_object(
                Kind::Warehouse,
                "broken",
                serde_json::json!({"spec": {"subscriptions": []}, "status": {"message": "registry said 401"}}),
            );
            tx.put(warehouse, None, StatusMode::Replace)?;
            Ok::<(), crate::store::StoreError>(())
        })
        .expect("written");
    let (status, body) = call(app.clone(), get("/v1/projects", Some("the-token"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("json");
    let shop = list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|p| p["metadata"]["name"] == "shop"))
        .expect("shop is listed");
    let stats = &shop["status"]["stats"];
    let stages = stats["stages"]["count"].as_u64().expect("a count");
    let states = &stats["stages"]["states"];
    assert_eq!(states["failed"], 1, "{stats}");
    assert_eq!(states["promoting"], 1, "{stats}");
    assert_eq!(
        states
            .as_object()
            .map(|s| s.values().filter_map(|n| n.as_u64()).sum::<u64>()),
        Some(stages),
        "each Stage is counted once: {stats}"
    );
    // Neither the failed one nor the one whose apps are unhealthy is healthy.
    assert_eq!(stats["stages"]["health"]["healthy"], stages - 2, "{stats}");
    let warehouses = stats["warehouses"]["count"].as_u64().expect("a count");
    assert_eq!(
        stats["warehouses"]["health"]["healthy"],
        warehouses - 1,
        "{stats}"
    );
}
