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
