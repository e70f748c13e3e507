//! Who may do what, end to end: tokens made and revoked with the CLI against a running daemon,
//! each role's CLI commands allowed or refused, and the actor of each change recorded and shown
//! by `dray get events`. The table of every route × role is a unit test (`api/tests.rs`).

use dray_tests::{Cli, Daemon, manifests};

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

/// Two projects, each with Stage `dev` and a Freight `first`.
fn two_projects() -> String {
    let mut all = String::new();
    for project in ["shop", "bank"] {
        all.push_str(&manifests::project(
            project,
            &["image: {repoURL: registry.example/web}"],
        ));
        all.push_str(&manifests::stage(
            project,
            "dev",
            "- uses: compose-output\n  config: {done: true}",
        ));
        all.push_str(&manifests::freight(
            project,
            "first",
            &format!(
                "images: [{{repoURL: registry.example/web, tag: 1.0.0, digest: \"{DIGEST}\"}}]"
            ),
        ));
        all.push_str("---\n");
    }
    all
}

/// `dray ARGS` with `token` instead of the data dir's bootstrap token.
fn as_token(daemon: &Daemon, token: &str, args: &[&str]) -> Cli {
    let output = daemon
        .command(args)
        .env("DRAY_TOKEN", token)
        .output()
        .expect("the dray binary runs");
    Cli::from(output)
}

/// Makes a token with the bootstrap admin's CLI and returns it.
fn make_token(daemon: &Daemon, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let out = daemon.cli(&all);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("shown this once"), "{out:?}");
    let token = out.stdout.trim().to_string();
    assert!(token.starts_with("dray_"), "{out:?}");
    token
}

fn promotions(daemon: &Daemon, project: &str) -> usize {
    let out = daemon.cli(&["get", "promotions", "-p", project, "-o", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    list["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_what_it_may_and_the_actor_is_recorded() {
    let daemon = Daemon::start().await;
    daemon.apply_ok(&two_projects()).await;
    let ci = make_token(&daemon, &["ci-bot", "--role", "promoter", "-p", "shop"]);
    let viewer = make_token(&daemon, &["dashboard", "--role", "viewer", "-p", "shop"]);
    let out = daemon.cli(&["token", "list"]);
    assert!(
        out.stdout.contains("ci-bot") && out.stdout.contains("promoter in shop"),
        "{out:?}"
    );
    assert!(!out.stdout.contains(&ci), "a listing never shows a token");

    let out = as_token(&daemon, &viewer, &["whoami"]);
    assert_eq!(
        out.stdout.trim(),
        "token:dashboard (viewer in shop)",
        "{out:?}"
    );

    // A viewer reads but does not promote; nothing is created.
    let out = as_token(&daemon, &viewer, &["get", "stages", "-p", "shop"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = as_token(
        &daemon,
        &viewer,
        &[
            "promote",
            "-p",
            "shop",
            "--stage",
            "dev",
            "--freight",
            "first",
        ],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("token:dashboard (viewer in shop) may not POST")
            && out.stderr.contains("role promoter in project \"shop\""),
        "{out:?}"
    );
    assert_eq!(promotions(&daemon, "shop"), 0);

    // The promoter promotes in its project, not in another, and cannot apply.
    let out = as_token(
        &daemon,
        &ci,
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
    assert!(out.stdout.contains("Succeeded"), "{out:?}");
    let out = as_token(
        &daemon,
        &ci,
        &[
            "promote",
            "-p",
            "bank",
            "--stage",
            "dev",
            "--freight",
            "first",
        ],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(promotions(&daemon, "bank"), 0);
    let out = as_token(&daemon, &ci, &["get", "stages", "-p", "bank"]);
    assert_eq!(out.code, 1, "{out:?}");
    let out = as_token(&daemon, &ci, &["get", "projects"]);
    assert!(
        out.stdout.contains("shop") && !out.stdout.contains("bank"),
        "{out:?}"
    );

    // Who did it: the Promotion's create-actor and the project's events.
    let out = daemon.cli(&["get", "promotions", "-p", "shop", "-o", "json"]);
    assert!(
        out.stdout
            .contains("\"kargo.akuity.io/create-actor\": \"token:ci-bot\""),
        "{}",
        out.stdout
    );
    let out = daemon.cli(&["get", "events", "-p", "shop"]);
    assert!(out.stdout.contains("ACTOR"), "{out:?}");
    let created = out
        .stdout
        .lines()
        .find(|l| l.contains("PromotionCreated"))
        .unwrap_or_default();
    assert!(created.contains("token:ci-bot"), "{}", out.stdout);

    // Revoked: refused at once, as a wrong token is (exit 3).
    let out = daemon.cli(&["token", "revoke", "ci-bot"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = as_token(&daemon, &ci, &["get", "stages", "-p", "shop"]);
    assert_eq!(out.code, 3, "{out:?}");
    // Only a system admin manages tokens.
    let out = as_token(
        &daemon,
        &viewer,
        &["token", "create", "mine", "--role", "system-admin"],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("role system-admin"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_a_restart_and_only_their_hash_is_kept() {
    let mut daemon = Daemon::start().await;
    daemon.apply_ok(&two_projects()).await;
    let admin = make_token(&daemon, &["bank-admin", "--role", "admin", "-p", "bank"]);
    daemon.restart().await;
    let out = as_token(&daemon, &admin, &["whoami"]);
    assert_eq!(
        out.stdout.trim(),
        "token:bank-admin (admin in bank)",
        "{out:?}"
    );
    // The admin applies and deletes in its project; the project's events say who did what
    // (re-applying what is already there records nothing).
    let manifest = daemon.data_dir.join("qa.yaml");
    std::fs::write(
        &manifest,
        manifests::stage(
            "bank",
            "qa",
            "- uses: compose-output\n  config: {done: true}",
        ),
    )
    .expect("write");
    let manifest = manifest.display().to_string();
    for _ in 0..2 {
        let out = as_token(&daemon, &admin, &["apply", "-f", &manifest]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let out = as_token(&daemon, &admin, &["delete", "stage", "dev", "-p", "bank"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = as_token(&daemon, &admin, &["delete", "stage", "dev", "-p", "shop"]);
    assert_eq!(out.code, 1, "{out:?}");
    let out = daemon.cli(&["get", "events", "-p", "bank"]);
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("token:bank-admin"))
        .collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("StageCreated") && l.contains("Stage/qa")),
        "{}",
        out.stdout
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("StageDeleted") && l.contains("Stage/dev")),
        "{}",
        out.stdout
    );
    daemon.shutdown().await;
    let file = std::fs::read(daemon.data_dir.join("dray.redb")).expect("the data file");
    let secret = &admin.as_bytes()["dray_".len()..];
    assert!(
        !file.windows(secret.len()).any(|w| w == secret),
        "the data file holds the token itself"
    );
}
