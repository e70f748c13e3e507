//! Warehouse discovery against real Git servers: new commits and tags become Freight, path
//! filters decide which commits count, credentials come from Secrets, and problems are
//! reported on the Warehouse.

use dray_tests::git::{GitDaemon, GitHttp, GitSsh, Repos};
use dray_tests::helm::ChartRepo;
use dray_tests::{Cli, Daemon, manifests};
use serde_json::Value;

fn refresh(daemon: &Daemon, warehouse: &str) -> Cli {
    daemon.refresh("shop", warehouse)
}

fn freight(daemon: &Daemon) -> Vec<Value> {
    daemon.freight("shop")
}

fn warehouse(daemon: &Daemon, name: &str) -> Value {
    let out = daemon.cli(&["get", "warehouse", name, "-p", "shop", "-o", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout).expect("json")
}

/// The commit IDs of every Freight, sorted.
fn freight_commits(daemon: &Daemon) -> Vec<String> {
    let ids = freight(daemon)
        .iter()
        .map(|f| {
            f["commits"][0]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    sorted(ids)
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn wait_for_freight(daemon: &Daemon, count: usize) -> Vec<Value> {
    for _ in 0..200 {
        let all = freight(daemon);
        if all.len() >= count {
            return all;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("expected {count} Freight, have {:#?}", freight(daemon));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_commit_on_an_included_path_makes_freight_and_an_excluded_one_does_not() {
    let repos = Repos::new();
    let first = repos.create(
        "app.git",
        &[("app/main.go", "v1\n"), ("docs/README.md", "docs\n")],
    );
    let server = GitDaemon::start(&repos);
    let repo = format!("{}/app.git", server.url);
    let daemon = Daemon::start().await;
    let sub = format!("git: {{repoURL: \"{repo}\", excludePaths: [docs, \"glob:*.md\"]}}");
    daemon.apply_ok(&manifests::project("shop", &[&sub])).await;

    // A new Warehouse is discovered at once: its newest commit becomes the first Freight.
    let all = wait_for_freight(&daemon, 1).await;
    assert_eq!(all[0]["commits"][0]["id"], first.as_str());
    assert_eq!(all[0]["commits"][0]["branch"], "main");
    assert_eq!(all[0]["commits"][0]["message"], "initial");
    assert!(
        all[0]["alias"].as_str().is_some_and(|a| a.contains('-')),
        "an alias: {:#}",
        all[0]
    );

    // Only excluded paths change: no new Freight.
    repos.commit(
        "app.git",
        "main",
        &[("docs/README.md", "more docs\n"), ("app/NOTES.md", "x\n")],
        "docs",
    );
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(freight_commits(&daemon), vec![first.clone()]);

    // An included path changes: new Freight with that commit.
    let second = repos.commit("app.git", "main", &[("app/main.go", "v2\n")], "feature: v2");
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("feature: v2"), "{}", out.stdout);
    assert_eq!(
        freight_commits(&daemon),
        sorted(vec![second.clone(), first])
    );

    // What was found is on the Warehouse.
    let status = &warehouse(&daemon, "app")["status"];
    let commits = status["discoveredArtifacts"]["git"][0]["commits"]
        .as_array()
        .expect("commits");
    assert_eq!(
        commits.len(),
        2,
        "the docs-only commit is not a candidate: {status:#}"
    );
    assert_eq!(commits[0]["id"], second.as_str());
    let last = status["lastFreightID"].as_str().expect("the last Freight");
    let newest = freight(&daemon)
        .into_iter()
        .find(|f| f["metadata"]["name"] == last)
        .expect("it exists");
    assert_eq!(newest["commits"][0]["id"], second.as_str());

    // Nothing new: a refresh makes no Freight.
    assert_eq!(refresh(&daemon, "app").code, 0);
    assert_eq!(freight(&daemon).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_strategies_pick_the_greatest_version_the_newest_tag_or_the_lexical_last() {
    let repos = Repos::new();
    let base = repos.create("app.git", &[("main.go", "0\n")]);
    let mut ids = std::collections::BTreeMap::new();
    for (i, tag) in [
        "v1.0.0",
        "v1.10.0",
        "v2.0.0-rc.1",
        "v1.2.0",
        "nightly-20261101",
        "1.3",
    ]
    .iter()
    .enumerate()
    {
        // A minute apart, so "newest" is never a tie.
        let at = 1_790_000_000 + 60 * i as i64;
        let content = format!("{}\n", i + 1);
        let id = repos.commit_at("app.git", "main", &[("main.go", &content)], tag, Some(at));
        let annotated = tag.starts_with("v1.2").then_some("release 1.2");
        repos.tag("app.git", tag, &id, annotated);
        ids.insert(*tag, id);
    }
    let _ = base;
    let server = GitDaemon::start(&repos);
    let repo = format!("{}/app.git", server.url);
    let daemon = Daemon::start().await;
    let subs = |strategy: &str, extra: &str| {
        format!("git: {{repoURL: \"{repo}\", commitSelectionStrategy: {strategy}{extra}}}")
    };
    let mut all = String::new();
    for (name, sub) in [
        ("semver", subs("SemVer", ", semverConstraint: \"^1.0.0\"")),
        (
            "newest",
            subs("NewestTag", ", ignoreTagsRegexes: [\"^nightly\"]"),
        ),
        (
            "lexical",
            subs("Lexical", ", allowTagsRegexes: [\"^nightly-\"]"),
        ),
        (
            "loose",
            subs(
                "SemVer",
                ", strictSemvers: false, semverConstraint: \"<1.5\", expressionFilter: \"tag != 'v1.2.0'\"",
            ),
        ),
    ] {
        all.push_str(
            &manifests::project("shop", &[&sub]).replace("name: app,", &format!("name: {name},")),
        );
        all.push_str("\n---\n");
    }
    // One Project, four Warehouses: drop the repeated Project documents after the first.
    let docs: Vec<&str> = all
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .collect();
    let mut manifests = docs[0].to_string();
    for d in &docs[1..] {
        if !d.contains("kind: Project") {
            manifests.push_str("---\n");
            manifests.push_str(d);
        }
    }
    daemon.apply_ok(&manifests).await;
    for (warehouse, tag) in [
        ("semver", "v1.10.0"),
        ("newest", "v1.2.0"),
        ("lexical", "nightly-20261101"),
        ("loose", "1.3"),
    ] {
        let out = refresh(&daemon, warehouse);
        assert_eq!(out.code, 0, "{warehouse}: {out:?}");
        let status = &warehouse_status(&daemon, warehouse);
        let best = &status["discoveredArtifacts"]["git"][0]["commits"][0];
        assert_eq!(best["tag"], tag, "{warehouse}: {status:#}");
        assert_eq!(best["id"], ids[tag].as_str(), "{warehouse}");
    }
    // NewestTag took v1.2.0: an annotated tag's date is its tagger's (today), not its commit's.
    // SemVer lists the candidates best first, without what the constraint excludes.
    let semver = warehouse_status(&daemon, "semver");
    let tags: Vec<&str> = semver["discoveredArtifacts"]["git"][0]["commits"]
        .as_array()
        .expect("commits")
        .iter()
        .filter_map(|c| c["tag"].as_str())
        .collect();
    assert_eq!(tags, ["v1.10.0", "v1.2.0", "v1.0.0"]);
}

fn warehouse_status(daemon: &Daemon, name: &str) -> Value {
    warehouse(daemon, name)["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repository_is_read_with_credentials_and_problems_are_reported() {
    let repos = Repos::new();
    let first = repos.create("app.git", &[("main.go", "v1\n")]);
    let http = GitHttp::start(&repos, "gituser:gitpass");
    let repo = format!("{}/app.git", http.url);
    let daemon = Daemon::start().await;
    let sub = format!("git: {{repoURL: \"{repo}\"}}");
    daemon.apply_ok(&manifests::project("shop", &[&sub])).await;

    // Without credentials: no Freight, and the Warehouse says why.
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("cred-type: git"), "{}", out.stderr);
    assert!(freight(&daemon).is_empty());

    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-git\n  namespace: shop\n  labels: {{kargo.akuity.io/cred-type: git}}\nstringData:\n  repoURL: '{repo}'\n  username: gituser\n  password: gitpass\n"
    );
    daemon.apply_ok(&secret).await;
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(freight_commits(&daemon), vec![first]);
    assert!(
        warehouse_status(&daemon, "app")["message"].is_null(),
        "the problem is cleared"
    );

    // A branch that does not exist is a problem the Warehouse reports.
    let sub = format!("git: {{repoURL: \"{repo}\", branch: release}}");
    daemon.apply_ok(&manifests::project("shop", &[&sub])).await;
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("has no branch release"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_over_ssh_is_read_with_a_key_from_a_host_the_operator_knows() {
    let repos = Repos::new();
    let first = repos.create("app.git", &[("main.go", "v1\n")]);
    let ssh = GitSsh::start(&repos);
    let repo = ssh.repo_url("app.git");
    let known = tempfile::NamedTempFile::new().expect("a known-hosts file");
    std::fs::write(known.path(), format!("{}\n", ssh.known_host)).expect("write");
    let daemon = Daemon::start_with_config(dray::Config {
        ssh_known_hosts: Some(known.path().to_path_buf()),
        ..dray::Config::default()
    })
    .await
    .expect("the daemon starts");
    let sub = format!("git: {{repoURL: \"{repo}\"}}");
    let secret = ssh.secret("shop", &repo);
    daemon
        .apply_ok(&format!("{}{secret}", manifests::project("shop", &[&sub])))
        .await;
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(freight_commits(&daemon), vec![first.clone()]);

    // A new commit arrives over SSH too.
    let second = repos.commit("app.git", "main", &[("main.go", "v2\n")], "v2");
    assert_eq!(refresh(&daemon, "app").code, 0);
    assert_eq!(freight_commits(&daemon), sorted(vec![first, second]));

    // A host key that is not the one listed is refused before anything is read, and so is a
    // host the file does not list at all; each says what to do.
    let other = ssh
        .known_host
        .rsplit_once(' ')
        .expect("a key")
        .0
        .to_string()
        + " AAAAC3NzaC1lZDI1NTE5AAAAIFltRvOGlq+JCQVIhqfJ+A5s6SkbyM5VETdeihE5PmIz";
    std::fs::write(known.path(), format!("{other}\n")).expect("write");
    repos.commit("app.git", "main", &[("main.go", "v3\n")], "v3");
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("is not the one"), "{}", out.stderr);
    std::fs::write(known.path(), "").expect("write");
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("ssh-keyscan -p"), "{}", out.stderr);
    assert_eq!(freight(&daemon).len(), 2);
}

/// A GitHub push webhook, signed as GitHub signs it, with a delivery ID of its own.
async fn github_push(
    daemon: &Daemon,
    path: &str,
    secret: &str,
    event: &str,
    payload: &Value,
) -> reqwest::Response {
    static DELIVERIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = DELIVERIES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    github_delivery(
        daemon,
        path,
        secret,
        event,
        payload,
        &format!("delivery-{n}"),
    )
    .await
}

/// A GitHub webhook with the delivery ID given (`X-GitHub-Delivery`, the same on a redelivery).
async fn github_delivery(
    daemon: &Daemon,
    path: &str,
    secret: &str,
    event: &str,
    payload: &Value,
    delivery: &str,
) -> reqwest::Response {
    use hmac::Mac;
    let body = payload.to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("a key");
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    dray::tls::client()
        .post(format!("{}{path}", daemon.url))
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", signature)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the webhook is delivered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_github_push_refreshes_the_subscribed_warehouse_at_once() {
    let repos = Repos::new();
    repos.create(
        "app.git",
        &[("app/main.go", "v1\n"), ("docs/README.md", "docs\n")],
    );
    let server = GitDaemon::start(&repos);
    let repo = format!("{}/app.git", server.url);
    let daemon = Daemon::start().await;
    // An hour's interval: only the webhook can make the second Freight appear in time.
    let sub = format!("git: {{repoURL: \"{repo}\", excludePaths: [docs]}}");
    let config = "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: shop, namespace: shop}\n\
        spec:\n  webhookReceivers:\n  - name: github\n    github: {secretRef: {name: gh-hook}}\n---\n\
        apiVersion: v1\nkind: Secret\nmetadata:\n  name: gh-hook\n  namespace: shop\n  labels: {kargo.akuity.io/cred-type: generic}\n\
        stringData: {secret: s3cret}\n";
    let manifests = manifests::project("shop", &[&sub]).replace(
        "spec:\n  subscriptions:",
        "spec:\n  interval: 1h\n  subscriptions:",
    ) + config;
    daemon.apply_ok(&manifests).await;
    wait_for_freight(&daemon, 1).await;

    // The receiver's URL, derived from the project, its name and the secret.
    let receivers = daemon.get_json("/v1/projects/shop/webhookreceivers").await;
    let path = receivers["items"][0]["path"]
        .as_str()
        .expect("a path")
        .to_string();
    assert!(
        path.starts_with("/webhooks/github/") && path.len() == "/webhooks/github/".len() + 64,
        "{path}"
    );

    let second = repos.commit("app.git", "main", &[("app/main.go", "v2\n")], "v2");
    let payload = |paths: &[&str]| {
        serde_json::json!({
            "ref": "refs/heads/main",
            "repository": {"clone_url": repo, "ssh_url": ""},
            "commits": [{"id": second, "added": [], "modified": paths, "removed": []}],
        })
    };

    // A wrong signature: 401, and nothing happens.
    let r = github_push(&daemon, &path, "wrong", "push", &payload(&["app/main.go"])).await;
    assert_eq!(r.status(), 401);
    // A URL nobody configured: 404.
    let r = github_push(
        &daemon,
        "/webhooks/github/0000",
        "s3cret",
        "push",
        &payload(&["app/main.go"]),
    )
    .await;
    assert_eq!(r.status(), 404);
    // A ping: fine, nothing to do.
    let r = github_push(
        &daemon,
        &path,
        "s3cret",
        "ping",
        &serde_json::json!({"zen": "hi"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    // A push that only touches excluded paths refreshes nothing.
    let r = github_push(
        &daemon,
        &path,
        "s3cret",
        "push",
        &payload(&["docs/README.md"]),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("json")["refreshed"],
        serde_json::json!([])
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(freight(&daemon).len(), 1);

    // The real push: the Warehouse is refreshed and the new commit becomes Freight.
    let real = payload(&["app/main.go"]);
    let r = github_delivery(&daemon, &path, "s3cret", "push", &real, "d-42").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("json")["refreshed"],
        serde_json::json!(["app"])
    );
    let all = wait_for_freight(&daemon, 2).await;
    assert!(
        all.iter().any(|f| f["commits"][0]["id"] == second.as_str()),
        "{all:#?}"
    );
    // The same delivery replayed verbatim (a captured request, correctly signed) refreshes
    // nothing; a new delivery does.
    let r = github_delivery(&daemon, &path, "s3cret", "push", &real, "d-42").await;
    assert_eq!(r.status(), 200);
    let answer = r.json::<Value>().await.expect("json");
    assert_eq!(answer["refreshed"], serde_json::json!([]), "{answer}");
    assert!(
        answer["note"]
            .as_str()
            .is_some_and(|n| n.contains("d-42 was received before")),
        "{answer}"
    );
    let r = github_delivery(&daemon, &path, "s3cret", "push", &real, "d-43").await;
    assert_eq!(
        r.json::<Value>().await.expect("json")["refreshed"],
        serde_json::json!(["app"])
    );

    // A body that is not JSON, correctly signed: 400.
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").expect("a key");
    mac.update(b"not json");
    let r = dray::tls::client()
        .post(format!("{}{path}", daemon.url))
        .header("X-GitHub-Event", "push")
        .header(
            "X-Hub-Signature-256",
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        )
        .body("not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 400);
    // Too large: 413.
    let r = dray::tls::client()
        .post(format!("{}{path}", daemon.url))
        .header("X-GitHub-Event", "push")
        .body(vec![b' '; 3 << 20])
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_criteria_and_the_manual_policy_hold_freight_back() {
    let repos = Repos::new();
    let first = repos.create("app.git", &[("main.go", "1\n")]);
    repos.tag("app.git", "v1.0.0", &first, None);
    let server = GitDaemon::start(&repos);
    let repo = format!("{}/app.git", server.url);
    let daemon = Daemon::start().await;
    let sub = format!("git: {{repoURL: \"{repo}\", commitSelectionStrategy: SemVer}}");
    let picky = manifests::project("shop", &[&sub]).replace(
        "spec:\n  subscriptions:",
        &format!("spec:\n  freightCreationCriteria:\n    expression: commitFrom(\"{repo}\").Tag matches '^v1[.]0[.]'\n  subscriptions:"),
    );
    let manual = manifests::project("shop", &[&sub])
        .replace("name: app,", "name: manual,")
        .replace(
            "spec:\n  subscriptions:",
            "spec:\n  freightCreationPolicy: Manual\n  subscriptions:",
        );
    let manual = manual.split("---\n").nth(1).expect("the Warehouse");
    daemon.apply_ok(&format!("{picky}---\n{manual}")).await;

    // v1.0.0 meets the criteria: Freight. The manual Warehouse discovers it but makes none.
    assert_eq!(refresh(&daemon, "app").code, 0);
    assert_eq!(refresh(&daemon, "manual").code, 0);
    let all = freight(&daemon);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["origin"]["name"], "app");
    assert_eq!(
        warehouse_status(&daemon, "manual")["discoveredArtifacts"]["git"][0]["commits"][0]["tag"],
        "v1.0.0"
    );

    // v1.1.0 does not: no new Freight, and no error either.
    let second = repos.commit("app.git", "main", &[("main.go", "2\n")], "two");
    repos.tag("app.git", "v1.1.0", &second, None);
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("v1.1.0"), "{}", out.stdout);
    assert_eq!(freight(&daemon).len(), 1);

    // A person makes the manual Warehouse's Freight from what it discovered.
    let out = daemon.cli(&[
        "freight",
        "create",
        "-p",
        "shop",
        "--warehouse",
        "manual",
        "--newest",
        "--alias",
        "picked",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let picked = freight(&daemon)
        .into_iter()
        .find(|f| f["alias"] == "picked")
        .expect("the new Freight");
    assert_eq!(picked["origin"]["name"], "manual");
    assert_eq!(picked["commits"][0]["tag"], "v1.0.0");
    assert_eq!(picked["commits"][0]["id"], first.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_image_tags_in_a_real_registry_become_freight_with_their_digest_and_revision() {
    let registry = dray_tests::registry::Registry::start();
    let repo = format!("{}/shop/web", registry.address);
    registry
        .push(
            "shop/web",
            "1.0.0",
            "one",
            &[("org.opencontainers.image.revision", "abc123")],
        )
        .await;
    registry.push("shop/web", "1.1.0-rc.1", "rc", &[]).await;
    registry.push("shop/web", "latest", "latest-1", &[]).await;
    let daemon = Daemon::start().await;
    let semver = format!("image: {{repoURL: \"{repo}\", constraint: \"^1.0.0\"}}");
    let tracked = format!(
        "image: {{repoURL: \"{repo}\", imageSelectionStrategy: Digest, constraint: latest}}"
    );
    let both = manifests::project("shop", &[&semver]);
    let digest_wh = manifests::project("shop", &[&tracked]).replace("name: app,", "name: latest,");
    let digest_wh = digest_wh.split("---\n").nth(1).expect("the Warehouse");
    daemon.apply_ok(&format!("{both}---\n{digest_wh}")).await;

    // The greatest version the constraint allows (the pre-release is left out), with its digest
    // and the revision annotation that links it to its commit.
    assert_eq!(refresh(&daemon, "app").code, 0);
    let status = warehouse_status(&daemon, "app");
    let best = &status["discoveredArtifacts"]["images"][0]["references"][0];
    assert_eq!(best["tag"], "1.0.0", "{status:#}");
    assert_eq!(
        best["annotations"]["org.opencontainers.image.revision"],
        "abc123"
    );
    let from_app: Vec<Value> = freight(&daemon)
        .into_iter()
        .filter(|f| f["origin"]["name"] == "app")
        .collect();
    assert_eq!(from_app.len(), 1);
    assert_eq!(from_app[0]["images"][0]["tag"], "1.0.0");
    assert!(
        from_app[0]["images"][0]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );

    // A new release: new Freight at the next refresh.
    let digest = registry.push("shop/web", "1.2.0", "two", &[]).await;
    assert_eq!(refresh(&daemon, "app").code, 0);
    let newest: Vec<Value> = freight(&daemon)
        .into_iter()
        .filter(|f| f["images"][0]["tag"] == "1.2.0")
        .collect();
    assert_eq!(newest.len(), 1, "{:#?}", freight(&daemon));
    assert_eq!(newest[0]["images"][0]["digest"], digest.as_str());

    // The Digest strategy follows a mutable tag: a new push of `latest` is new Freight.
    assert_eq!(refresh(&daemon, "latest").code, 0);
    let before = freight(&daemon).len();
    let moved = registry.push("shop/web", "latest", "latest-2", &[]).await;
    assert_eq!(refresh(&daemon, "latest").code, 0);
    assert_eq!(freight(&daemon).len(), before + 1);
    assert!(
        freight(&daemon)
            .iter()
            .any(|f| f["images"][0]["digest"] == moved.as_str())
    );

    // A repository that does not exist is a problem on the Warehouse, not a crash.
    let missing = format!("image: {{repoURL: \"{}/shop/nope\"}}", registry.address);
    daemon
        .apply_ok(&manifests::project("shop", &[&missing]).replace("name: app,", "name: nope,"))
        .await;
    let out = refresh(&daemon, "nope");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("shop/nope"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_webhook_makes_a_new_tag_freight_at_once() {
    let registry = dray_tests::registry::Registry::start();
    let repo = format!("{}/shop/web", registry.address);
    registry.push("shop/web", "1.0.0", "one", &[]).await;
    let daemon = Daemon::start().await;
    let sub = format!("image: {{repoURL: \"{repo}\"}}");
    let config = "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: shop, namespace: shop}\n\
        spec:\n  webhookReceivers:\n  - name: quay\n    quay: {secretRef: {name: hooks}}\n  - name: harbor\n    harbor: {secretRef: {name: hooks}}\n  - name: jfrog\n    artifactory: {secretRef: {name: hooks}}\n  - name: acr\n    azure: {secretRef: {name: hooks}}\n\
        \x20 - name: any\n    generic:\n      secretRef: {name: hooks}\n      actions:\n      - action: Refresh\n\
        \x20       whenExpression: \"request.header('X-Event-Type') == 'push'\"\n        targetSelectionCriteria:\n\
        \x20       - kind: Warehouse\n          indexSelector:\n            matchIndices:\n\
        \x20           - {key: subscribedURLs, operator: Equals, value: \"${{ request.body.registry }}/${{ request.body.name }}\"}\n---\n\
        apiVersion: v1\nkind: Secret\nmetadata:\n  name: hooks\n  namespace: shop\n  labels: {kargo.akuity.io/cred-type: generic}\n\
        stringData: {secret: quay-secret, auth-header: Basic aGFyYm9y, secret-token: jfrog-secret}\n";
    let manifests = manifests::project("shop", &[&sub]).replace(
        "spec:\n  subscriptions:",
        "spec:\n  interval: 1h\n  subscriptions:",
    ) + config;
    daemon.apply_ok(&manifests).await;
    wait_for_freight(&daemon, 1).await;
    let receivers = daemon.get_json("/v1/projects/shop/webhookreceivers").await;
    let path_of = |kind: &str| {
        receivers["items"]
            .as_array()
            .expect("receivers")
            .iter()
            .find(|r| r["type"] == kind)
            .and_then(|r| r["path"].as_str())
            .expect("a receiver")
            .to_string()
    };
    let client = dray::tls::client();

    // Harbor's Authorization header must match the secret.
    let harbor = serde_json::json!({"type": "PUSH_ARTIFACT", "event_data": {"resources": [{"resource_url": format!("{repo}:1.1.0")}]}});
    let r = client
        .post(format!("{}{}", daemon.url, path_of("harbor")))
        .header("Authorization", "Basic wrong")
        .json(&harbor)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 401);

    // A new tag, and Quay's notification (the URL is its proof): Freight at once.
    registry.push("shop/web", "1.1.0", "two", &[]).await;
    let quay = serde_json::json!({"docker_url": repo, "updated_tags": ["1.1.0"], "repository": "shop/web"});
    let r = client
        .post(format!("{}{}", daemon.url, path_of("quay")))
        .json(&quay)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("json")["refreshed"],
        serde_json::json!(["app"])
    );
    let all = wait_for_freight(&daemon, 2).await;
    assert!(
        all.iter().any(|f| f["images"][0]["tag"] == "1.1.0"),
        "{all:#?}"
    );

    // Artifactory signs the body (HMAC-SHA256, hex, in X-Jfrog-Event-Auth) and names the
    // image by its repository key and name.
    use hmac::Mac;
    registry.push("shop/web", "1.2.0", "three", &[]).await;
    let jfrog = serde_json::json!({"event_type": "pushed", "jpd_origin": format!("http://{}", registry.address),
        "data": {"repo_key": "shop", "image_name": "web", "tag": "1.2.0"}})
    .to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"jfrog-secret").expect("a key");
    mac.update(jfrog.as_bytes());
    let r = client
        .post(format!("{}{}", daemon.url, path_of("artifactory")))
        .header(
            "X-Jfrog-Event-Auth",
            hex::encode(mac.finalize().into_bytes()),
        )
        .body(jfrog)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let all = wait_for_freight(&daemon, 3).await;
    assert!(
        all.iter().any(|f| f["images"][0]["tag"] == "1.2.0"),
        "{all:#?}"
    );

    // Azure Container Registry names the registry host and the repository.
    registry.push("shop/web", "1.3.0", "four", &[]).await;
    let acr = serde_json::json!({"action": "push", "target": {"repository": "shop/web", "tag": "1.3.0"},
        "request": {"host": registry.address}});
    let r = client
        .post(format!("{}{}", daemon.url, path_of("azure")))
        .json(&acr)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    wait_for_freight(&daemon, 4).await;

    // The generic receiver acts as its ProjectConfig says: only on a push, on the Warehouses
    // subscribed to the URL its expression builds from the body.
    registry.push("shop/web", "1.4.0", "five", &[]).await;
    let body = serde_json::json!({"registry": registry.address, "name": "shop/web"});
    let send = |event: &'static str| {
        client
            .post(format!("{}{}", daemon.url, path_of("generic")))
            .header("X-Event-Type", event)
            .json(&body)
            .send()
    };
    let ping = send("ping").await.expect("sent");
    assert_eq!(
        ping.json::<Value>().await.expect("json")["refreshed"],
        serde_json::json!([])
    );
    let push = send("push").await.expect("sent");
    assert_eq!(
        push.json::<Value>().await.expect("json")["refreshed"],
        serde_json::json!(["app"])
    );
    let all = wait_for_freight(&daemon, 5).await;
    assert!(
        all.iter().any(|f| f["images"][0]["tag"] == "1.4.0"),
        "{all:#?}"
    );
}

/// Publishes chart `web` at `versions` (and one `other` chart) in `repo`'s index.
fn publish(repo: &ChartRepo, versions: &[&str]) {
    let entries: String = versions
        .iter()
        .map(|v| format!("  - name: web\n    version: {v}\n    urls: [web-{v}.tgz]\n"))
        .collect();
    repo.write_index(&format!(
        "apiVersion: v1\nentries:\n  web:\n{entries}  other:\n  - name: other\n    version: 9.9.9\n"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_are_discovered_from_a_chart_repository_and_an_oci_registry() {
    let charts = ChartRepo::start();
    publish(&charts, &["1.0.0", "1.2.0", "2.0.0", "1.3.0-beta.1"]);
    let registry = dray_tests::registry::Registry::start();
    // OCI charts as `helm push` writes them: Helm's media types, `+` written `_` in the tag.
    for version in ["0.1.0", "0.2.0", "0.2.1+build.7"] {
        registry
            .push_chart("charts/web", version, format!("chart {version}").as_bytes())
            .await;
    }
    let daemon = Daemon::start().await;
    let classic = format!(
        "chart: {{repoURL: \"{}\", name: web, semverConstraint: \"^1.0.0\"}}",
        charts.url
    );
    let oci = format!(
        "chart: {{repoURL: \"oci://{}/charts/web\"}}",
        registry.address
    );
    daemon
        .apply_ok(&manifests::project("shop", &[&classic, &oci]))
        .await;

    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 0, "{out:?}");
    let status = warehouse_status(&daemon, "app");
    assert_eq!(
        status["discoveredArtifacts"]["charts"][0]["versions"],
        serde_json::json!(["1.2.0", "1.0.0"]),
        "the constraint leaves out 2.0.0 and the pre-release: {status:#}"
    );
    let all = freight(&daemon);
    assert_eq!(all.len(), 1, "{all:#?}");
    let mut got: Vec<(String, String)> = all[0]["charts"]
        .as_array()
        .expect("charts")
        .iter()
        .map(|c| {
            (
                c["repoURL"].as_str().unwrap_or("").to_string(),
                c["version"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (charts.url.clone(), "1.2.0".to_string()),
        (
            format!("oci://{}/charts/web", registry.address),
            "0.2.1+build.7".to_string(),
        ),
    ];
    want.sort();
    assert_eq!(got, want);

    // A new release in the repository: new Freight.
    publish(&charts, &["1.0.0", "1.2.0", "1.4.0", "2.0.0"]);
    assert_eq!(refresh(&daemon, "app").code, 0);
    assert_eq!(freight(&daemon).len(), 2);

    // A chart the repository does not have is reported.
    let missing = format!("chart: {{repoURL: \"{}\", name: nope}}", charts.url);
    daemon
        .apply_ok(&manifests::project("shop", &[&missing]).replace("name: app,", "name: nope,"))
        .await;
    let out = refresh(&daemon, "nope");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("has no chart \"nope\""),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_answers_429_is_left_alone_and_the_others_keep_working() {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A registry that is always too busy, counting what it is asked.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_address = busy.local_addr().expect("address").to_string();
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in busy.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let registry = dray_tests::registry::Registry::start();
    registry.push("shop/web", "1.0.0", "one", &[]).await;
    let daemon = Daemon::start().await;
    let good = format!("image: {{repoURL: \"{}/shop/web\"}}", registry.address);
    let slow = format!("image: {{repoURL: \"{busy_address}/shop/web\"}}");
    let busy_wh = manifests::project("shop", &[&slow]).replace("name: app,", "name: busy,");
    let busy_wh = busy_wh
        .split("---\n")
        .nth(1)
        .expect("the Warehouse")
        .to_string();
    daemon
        .apply_ok(&format!(
            "{}---\n{busy_wh}",
            manifests::project("shop", &[&good])
        ))
        .await;

    let out = refresh(&daemon, "busy");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("429"), "{}", out.stderr);
    let asked = hits.load(Ordering::SeqCst);
    assert!(asked >= 1);

    // Asked again at once: the registry is left alone, and the Warehouse says for how long.
    let out = refresh(&daemon, "busy");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("asked to slow down"), "{}", out.stderr);
    assert_eq!(
        hits.load(Ordering::SeqCst),
        asked,
        "no request while backing off"
    );

    // The other registry is not slowed down.
    let out = refresh(&daemon, "app");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        freight(&daemon)
            .iter()
            .any(|f| f["images"][0]["tag"] == "1.0.0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_build_picks_the_most_recently_built_image_whatever_its_tag() {
    let registry = dray_tests::registry::Registry::start();
    let created = "org.opencontainers.image.created";
    registry
        .push(
            "shop/web",
            "zeta",
            "z",
            &[(created, "2026-01-02T10:00:00Z")],
        )
        .await;
    registry
        .push(
            "shop/web",
            "alpha",
            "a",
            &[(created, "2026-03-04T10:00:00Z")],
        )
        .await;
    registry
        .push(
            "shop/web",
            "9.9.9",
            "n",
            &[(created, "2025-12-31T23:59:59Z")],
        )
        .await;
    let daemon = Daemon::start().await;
    let sub = format!(
        "image: {{repoURL: \"{}/shop/web\", imageSelectionStrategy: NewestBuild}}",
        registry.address
    );
    daemon.apply_ok(&manifests::project("shop", &[&sub])).await;
    assert_eq!(refresh(&daemon, "app").code, 0);
    let status = warehouse_status(&daemon, "app");
    let refs = &status["discoveredArtifacts"]["images"][0]["references"];
    let order: Vec<&str> = refs
        .as_array()
        .expect("references")
        .iter()
        .filter_map(|r| r["tag"].as_str())
        .collect();
    assert_eq!(order, ["alpha", "zeta", "9.9.9"], "{status:#}");
    assert_eq!(refs[0]["createdAt"], "2026-03-04T10:00:00Z");

    // A newer build under an older-looking tag wins.
    registry
        .push("shop/web", "aaa", "b", &[(created, "2026-05-01T00:00:00Z")])
        .await;
    assert_eq!(refresh(&daemon, "app").code, 0);
    assert!(
        freight(&daemon)
            .iter()
            .any(|f| f["images"][0]["tag"] == "aaa")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_keeps_only_the_tags_that_run_on_it() {
    let registry = dray_tests::registry::Registry::start();
    registry.push("shop/web", "2.0.0", "amd64 only", &[]).await;
    let multi = registry
        .push_index("shop/web", "1.1.0", &["amd64", "arm64"])
        .await;
    registry.push_index("shop/web", "1.0.0", &["arm64"]).await;
    let daemon = Daemon::start().await;
    let sub = format!(
        "image: {{repoURL: \"{}/shop/web\", platform: linux/arm64}}",
        registry.address
    );
    daemon.apply_ok(&manifests::project("shop", &[&sub])).await;
    assert_eq!(refresh(&daemon, "app").code, 0);
    let status = warehouse_status(&daemon, "app");
    let refs = &status["discoveredArtifacts"]["images"][0]["references"];
    let tags: Vec<&str> = refs
        .as_array()
        .expect("references")
        .iter()
        .filter_map(|r| r["tag"].as_str())
        .collect();
    // 2.0.0 is the greatest version, but only for amd64.
    assert_eq!(tags, ["1.1.0", "1.0.0"], "{status:#}");
    assert_eq!(
        refs[0]["digest"],
        multi.as_str(),
        "the index's digest is recorded"
    );
}
