//! Kargo's pull request steps (`git-open-pr`, `git-merge-pr`, `git-wait-for-pr`) against the
//! five hosting services Kargo speaks to. No hosted service is reachable here, so a local server
//! (tests/servers/git_forge_server.py) plays the documented subset of each service's REST API the
//! steps call, over real bare repositories served by `git http-backend`: pushes and merges are
//! real Git, and each service's own authentication header is checked.

use dray_tests::Daemon;
use dray_tests::git::{GitForge, Repos, git};
use serde_json::json;

const TOKEN: &str = "forge-token-4f1c9a";

fn project(forge: &GitForge) -> String {
    format!(
        r#"
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {{name: shop}}
---
apiVersion: v1
kind: Secret
metadata:
  name: forge
  namespace: shop
  labels: {{kargo.akuity.io/cred-type: git}}
stringData:
  repoURL: '^{}/.*$'
  repoURLIsRegex: 'true'
  username: git
  password: {TOKEN}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {{name: app, namespace: shop}}
spec:
  subscriptions:
  - image: {{repoURL: registry.example/app}}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata: {{name: first, namespace: shop}}
alias: v1
origin: {{kind: Warehouse, name: app}}
images:
- {{repoURL: registry.example/app, tag: "1.0.0", digest: "sha256:1"}}
"#,
        forge.url.replace('.', "\\.")
    )
}

/// A Stage that changes `stage.txt` on a branch of its own, opens a pull request to `main`,
/// merges it once it may, and waits for it to be merged.
fn stage(name: &str, repo: &str, provider: Option<&str>) -> String {
    let provider = provider.map_or(String::new(), |p| format!("provider: {p}"));
    format!(
        r#"
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {{name: {name}, namespace: shop}}
spec:
  requestedFreight:
  - origin: {{kind: Warehouse, name: app}}
    sources: {{direct: true}}
  promotionTemplate:
    spec:
      vars:
      - {{name: repo, value: "{repo}"}}
      steps:
      - uses: git-clone
        config:
          repoURL: ${{{{ vars.repo }}}}
          checkout: [{{branch: main, path: ./src}}]
      - uses: file-write
        config: {{path: ./src/stage.txt, overwrite: true, contents: "{name} runs ${{{{ imageFrom('registry.example/app').Tag }}}}\n"}}
      - uses: git-commit
        config: {{path: ./src, message: "Promote {name} to 1.0.0\n\nRendered by Dray."}}
      - uses: git-push
        as: push
        config: {{path: ./src, targetBranch: "promote/{name}"}}
      - uses: git-open-pr
        as: open
        config:
          repoURL: ${{{{ vars.repo }}}}
          {provider}
          sourceBranch: ${{{{ outputs.push.branch }}}}
          targetBranch: main
          labels: [promotion]
      # No pull request when the branches hold the same files.
      - uses: git-merge-pr
        as: merge
        if: ${{{{ outputs.open.pr != nil }}}}
        config:
          repoURL: ${{{{ vars.repo }}}}
          {provider}
          prNumber: ${{{{ outputs.open.pr.id }}}}
          wait: true
          pollInterval: 1s
      - uses: git-wait-for-pr
        as: wait
        if: ${{{{ outputs.open.pr != nil }}}}
        config:
          repoURL: ${{{{ vars.repo }}}}
          {provider}
          prNumber: ${{{{ outputs.open.pr.id }}}}
          pollInterval: 1s
      - uses: fail
        if: ${{{{ outputs.open.pr != nil && (outputs.wait.commit != outputs.merge.commit || !outputs.wait.pr.merged) }}}}
        config: {{message: "wait and merge disagree"}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_merges_and_waits_for_pull_requests_on_five_services() {
    let repos = Repos::new();
    // Where each service keeps a repository, and the URL a user writes for it.
    let services = [
        ("github", "acme/gh-app.git", "acme/gh-app.git"),
        ("gitlab", "group/sub/gl-app.git", "group/sub/gl-app.git"),
        ("gitea", "acme/gt-app.git", "acme/gt-app.git"),
        ("bitbucket", "ws/bb-app.git", "ws/bb-app.git"),
        ("azure", "org/proj/_git/az-app", "org/proj/_git/az-app"),
    ];
    for (_, dir, _) in &services {
        repos.create(dir, &[("README.md", "app\n")]);
    }
    let forge = GitForge::start(&repos, TOKEN);
    let authority = forge.url.trim_start_matches("http://").to_string();
    // Bitbucket Cloud's API lives on its own host: the operator says where, as for any
    // self-hosted service; the other Stages name their provider in the step.
    let mut config = dray::Config::default();
    config.git_hosts.insert(
        authority.clone(),
        dray::host::forge::HostConfig {
            provider: "bitbucket".into(),
            api_url: Some(format!("{}/2.0", forge.url)),
        },
    );
    let daemon = Daemon::start_with_config(config)
        .await
        .expect("the daemon starts");
    let mut manifests = project(&forge);
    for (provider, _, path) in &services {
        let repo = format!("{}/{path}", forge.url);
        let named = (*provider != "bitbucket").then_some(*provider);
        manifests.push_str(&stage(provider, &repo, named));
    }
    daemon.apply_ok(&manifests).await;

    for (provider, dir, _) in &services {
        let out = daemon.promote("shop", provider, "v1");
        assert_eq!(
            out.code,
            0,
            "{provider}: {out:?}\n{:#?}",
            forge.requests().await
        );
        assert_eq!(
            repos.show(dir, "main", "stage.txt"),
            format!("{provider} runs 1.0.0"),
            "{provider}: the pull request was merged into main"
        );
        let bare = repos.root.join(dir);
        let parents = git(&bare, &["rev-list", "--parents", "-n", "1", "main"]);
        assert_eq!(parents.split(' ').count(), 3, "{provider}: a merge commit");
    }

    // What each service was asked, in its own words.
    let requests = forge.requests().await;
    let created = |path: &str| {
        requests
            .iter()
            .find(|r| r["method"] == "POST" && r["path"] == path)
            .unwrap_or_else(|| panic!("no POST {path} in {requests:#?}"))["body"]
            .clone()
    };
    let gh = created("/api/v3/repos/acme/gh-app/pulls");
    assert_eq!(
        (&gh["title"], &gh["body"], &gh["head"], &gh["base"]),
        (
            &json!("Promote github to 1.0.0"),
            &json!("Rendered by Dray."),
            &json!("promote/github"),
            &json!("main")
        )
    );
    assert_eq!(
        created("/api/v3/repos/acme/gh-app/issues/1/labels")["labels"],
        json!(["promotion"])
    );
    let gl = created("/api/v4/projects/group%2Fsub%2Fgl-app/merge_requests");
    assert_eq!(
        (&gl["source_branch"], &gl["labels"]),
        (&json!("promote/gitlab"), &json!("promotion"))
    );
    // Gitea labels by ID: "promotion" is label 1 of the repository.
    assert_eq!(
        created("/api/v1/repos/acme/gt-app/pulls")["labels"],
        json!([1])
    );
    let bb = created("/2.0/repositories/ws/bb-app/pullrequests");
    assert_eq!(bb["source"]["branch"]["name"], "promote/bitbucket");
    let az = created("/org/proj/_apis/git/repositories/az-app/pullrequests");
    assert_eq!(
        (&az["sourceRefName"], &az["labels"]),
        (
            &json!("refs/heads/promote/azure"),
            &json!([{"name": "promotion"}])
        )
    );

    // A second promotion finds nothing new to propose: main already holds the change.
    let out = daemon.promote("shop", "github", "v1");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("hold the same files: no pull request")
            && out.stdout.contains("git-merge-pr           skipped"),
        "git-open-pr says why it opened nothing:\n{}",
        out.stdout
    );
    let opened = forge
        .requests()
        .await
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/api/v3/repos/acme/gh-app/pulls")
        .count();
    assert_eq!(opened, 1, "no second pull request");
}

/// Opens pull request (`head` → main) on the forge's GitHub API, as a person would.
async fn open_on_github(forge: &GitForge, head: &str, title: &str) -> u64 {
    let answer: serde_json::Value = dray::tls::client()
        .post(format!("{}/api/v3/repos/acme/app/pulls", forge.url))
        .bearer_auth(TOKEN)
        .json(&json!({"title": title, "head": head, "base": "main", "body": ""}))
        .send()
        .await
        .expect("the forge answers")
        .json()
        .await
        .expect("JSON");
    answer["number"].as_u64().expect("a number")
}

/// `dray promote -p shop --stage STAGE --freight v1 --wait` on a thread of its own, so the
/// test can act while it waits.
fn promote_in_background(daemon: &Daemon, stage: &str) -> tokio::task::JoinHandle<dray_tests::Cli> {
    let mut command = daemon.command(&[
        "promote",
        "-p",
        "shop",
        "--stage",
        stage,
        "--freight",
        "v1",
        "--wait",
    ]);
    tokio::task::spawn_blocking(move || {
        dray_tests::Cli::from(command.output().expect("the dray binary runs"))
    })
}

fn one_step_stage(name: &str, namespace: &str, step: &str) -> String {
    format!(
        r#"
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  requestedFreight:
  - origin: {{kind: Warehouse, name: app}}
    sources: {{direct: true}}
  promotionTemplate:
    spec:
      steps:
      - {step}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_while_the_service_says_not_yet_and_fails_clearly_when_it_says_no() {
    let repos = Repos::new();
    repos.create("acme/app.git", &[("README.md", "app\n")]);
    git(
        &repos.root.join("acme/app.git"),
        &["branch", "feature", "main"],
    );
    repos.commit(
        "acme/app.git",
        "feature",
        &[("feature.txt", "new\n")],
        "Add a feature",
    );
    let forge = GitForge::start(&repos, TOKEN);
    let repo = format!("{}/acme/app.git", forge.url);
    let blocked = open_on_github(&forge, "feature", "Blocked by a required review").await;
    let closed = open_on_github(&forge, "feature", "Closed by a reviewer").await;
    forge
        .control("set", "acme/app.git", blocked, json!({"blocked": true}))
        .await;

    let pr = |kind: &str, number: u64, extra: &str| {
        format!(
            "uses: {kind}\n        config: {{repoURL: \"{repo}\", provider: github, prNumber: {number}{extra}}}"
        )
    };
    let wrong_token = "wrong-token-77e0";
    let mut manifests = project(&forge);
    manifests.push_str(&one_step_stage(
        "merge-now",
        "shop",
        &pr("git-merge-pr", blocked, ""),
    ));
    manifests.push_str(&one_step_stage(
        "merge-when-ready",
        "shop",
        &pr("git-merge-pr", blocked, ", wait: true, pollInterval: 1s"),
    ));
    manifests.push_str(&one_step_stage(
        "wait",
        "shop",
        &pr("git-wait-for-pr", closed, ", pollInterval: 1s"),
    ));
    // Another project whose Secret holds a token the service refuses.
    manifests.push_str("\n---");
    manifests.push_str(
        &project(&forge)
            .replace("shop", "other")
            .replace(TOKEN, wrong_token),
    );
    manifests.push_str(&one_step_stage(
        "wait",
        "other",
        &pr("git-wait-for-pr", closed, ""),
    ));
    let daemon = Daemon::start().await;
    daemon.apply_ok(&manifests).await;

    // Not mergeable yet, and the step may not wait: it fails and says why.
    let out = daemon.promote("shop", "merge-now", "v1");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("cannot be merged yet") && out.stdout.contains("wait is not set"),
        "{}",
        out.stdout
    );

    // Closed without merging: git-wait-for-pr fails for good.
    forge
        .control("close", "acme/app.git", closed, json!({}))
        .await;
    let out = daemon.promote("shop", "wait", "v1");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("closed without being merged"),
        "{}",
        out.stdout
    );

    // With wait, git-merge-pr asks again until the review arrives, then merges.
    let promote = promote_in_background(&daemon, "merge-when-ready");
    let path = format!("/api/v3/repos/acme/app/pulls/{blocked}");
    let asked = || async {
        forge
            .requests()
            .await
            .iter()
            .filter(|r| r["method"] == "GET" && r["path"] == path.as_str())
            .count()
    };
    let before = asked().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while asked().await < before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "git-merge-pr did not ask again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    forge
        .control("set", "acme/app.git", blocked, json!({"blocked": false}))
        .await;
    let out = promote.await.expect("the CLI ran");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(repos.show("acme/app.git", "main", "feature.txt"), "new");

    // A refused token: the step says to check it, and the token is nowhere to be read.
    let out = daemon.promote("other", "wait", "v1");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("check the token"), "{}", out.stdout);
    let promotion = out
        .stdout
        .split_whitespace()
        .nth(1)
        .expect("the promotion's name")
        .to_string();
    let logs = daemon.cli(&["logs", "promotion", &promotion, "-p", "other"]);
    for text in [&out.stdout, &out.stderr, &logs.stdout, &logs.stderr] {
        assert!(
            !text.contains(wrong_token) && !text.contains(TOKEN),
            "{text}"
        );
    }
    assert!(logs.stdout.contains("HTTP 401"), "{}", logs.stdout);
}

/// A GitHub webhook delivery, signed with `secret` as GitHub signs it.
async fn github_hook(
    daemon: &Daemon,
    path: &str,
    secret: &str,
    event: &str,
    payload: &serde_json::Value,
) -> serde_json::Value {
    use hmac::Mac;
    let body = payload.to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("a key");
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let response = dray::tls::client()
        .post(format!("{}{path}", daemon.url))
        .header("X-GitHub-Event", event)
        .header(
            "X-GitHub-Delivery",
            format!("pr-{event}-{}", payload["number"]),
        )
        .header("X-Hub-Signature-256", signature)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the webhook is delivered");
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_webhook_wakes_the_promotion_that_waits_on_it() {
    let repos = Repos::new();
    repos.create("acme/app.git", &[("README.md", "app\n")]);
    git(
        &repos.root.join("acme/app.git"),
        &["branch", "feature", "main"],
    );
    repos.commit(
        "acme/app.git",
        "feature",
        &[("feature.txt", "new\n")],
        "Add a feature",
    );
    let forge = GitForge::start(&repos, TOKEN);
    let number = open_on_github(&forge, "feature", "Reviewed by a person").await;
    let repo = format!("{}/acme/app.git", forge.url);
    // An hour between looks: only the webhook can end the wait within the test.
    let step = format!(
        "uses: git-wait-for-pr\n        config: {{repoURL: \"{repo}\", provider: github, prNumber: {number}, pollInterval: 1h}}"
    );
    let mut manifests = project(&forge);
    manifests.push_str(&one_step_stage("prod", "shop", &step));
    manifests.push_str(
        "\n---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: shop, namespace: shop}\n\
         spec:\n  webhookReceivers:\n  - name: github\n    github: {secretRef: {name: gh-hook}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata:\n  name: gh-hook\n  namespace: shop\n  labels: {kargo.akuity.io/cred-type: generic}\n\
         stringData: {secret: hook-s3cret}\n",
    );
    let daemon = Daemon::start().await;
    daemon.apply_ok(&manifests).await;
    let receivers = daemon.get_json("/v1/projects/shop/webhookreceivers").await;
    let hook = receivers["items"][0]["path"]
        .as_str()
        .expect("a path")
        .to_string();

    let promote = promote_in_background(&daemon, "prod");
    // The step looked once and found the pull request open.
    let path = format!("/api/v3/repos/acme/app/pulls/{number}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !forge
        .requests()
        .await
        .iter()
        .any(|r| r["path"] == path.as_str())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "git-wait-for-pr never looked"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A ping is no pull request event: nothing to wake.
    let said = github_hook(
        &daemon,
        &hook,
        "hook-s3cret",
        "ping",
        &json!({"zen": "hi", "number": 0}),
    )
    .await;
    assert!(said.get("woken").is_none(), "{said}");

    forge
        .control("merge", "acme/app.git", number, json!({}))
        .await;
    let payload = json!({"action": "closed", "number": number, "pull_request": {"merged": true}});
    let said = github_hook(&daemon, &hook, "hook-s3cret", "pull_request", &payload).await;
    assert_eq!(said["woken"].as_array().map(Vec::len), Some(1), "{said}");
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), promote)
        .await
        .expect("the webhook ended the wait, not the hour")
        .expect("the CLI ran");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("was merged"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_push_has_github_make_the_commits_and_integrates_a_moved_branch() {
    let repos = Repos::new();
    repos.create("acme/site.git", &[("README.md", "site\n")]);
    let forge = GitForge::start(&repos, TOKEN);
    let repo = format!("{}/acme/site.git", forge.url);
    // Two clones of main; the first pushes, so the second's push finds main moved on and
    // integrates it first.
    let steps = format!(
        r#"- uses: git-clone
  config:
    repoURL: "{repo}"
    author: {{name: Dray Bot, email: bot@dray.example}}
    checkout: [{{branch: main, path: ./a}}]
- uses: git-clone
  config:
    repoURL: "{repo}"
    author: {{name: Dray Bot, email: bot@dray.example}}
    checkout: [{{branch: main, path: ./b}}]
- uses: file-write
  config: {{path: ./a/a.txt, contents: "from a\n"}}
- uses: git-commit
  config: {{path: ./a, message: "Change a"}}
- uses: github-push
  as: first
  config: {{path: ./a, provider: github}}
- uses: file-write
  config: {{path: ./b/b.txt, contents: "from b\n"}}
- uses: git-commit
  config: {{path: ./b, message: "Change b"}}
- uses: github-push
  as: second
  config: {{path: ./b, targetBranch: main}}
- uses: github-push
  as: review
  config: {{path: ./b, generateTargetBranch: true}}"#
    );
    let mut manifests = project(&forge);
    manifests.push_str(
        &dray_tests::manifests::stage("shop", "test", &steps).replace("provider: github", ""),
    );
    // github-push needs the origin on GitHub: the forge's host is named one.
    let authority = forge.url.trim_start_matches("http://").to_string();
    let mut config = dray::Config::default();
    config.git_hosts.insert(
        authority,
        dray::host::forge::HostConfig {
            provider: "github".into(),
            api_url: None,
        },
    );
    let daemon = Daemon::start_with_config(config)
        .await
        .expect("the daemon starts");
    daemon.apply_ok(&manifests).await;
    let out = daemon.promote("shop", "test", "v1");
    assert_eq!(out.code, 0, "{out:?}");

    let bare = repos.root.join("acme/site.git");
    let made: Vec<String> = dray::tls::client()
        .get(format!("{}/_test/verified", forge.url))
        .send()
        .await
        .expect("the forge answers")
        .json()
        .await
        .expect("JSON");
    let head = git(&bare, &["rev-parse", "main"]);
    assert!(
        made.contains(&head),
        "main's head was made by GitHub: {made:?}"
    );
    // Both changes are on main, each a commit GitHub made, with the author kept.
    assert_eq!(repos.show("acme/site.git", "main", "a.txt"), "from a");
    assert_eq!(repos.show("acme/site.git", "main", "b.txt"), "from b");
    let log = git(&bare, &["log", "--format=%s|%cn|%b", "main", "-2"]);
    for subject in ["Change b|GitHub|", "Change a|GitHub|"] {
        assert!(log.contains(subject), "{log}");
    }
    assert!(
        log.contains("Co-authored-by: Dray Bot <bot@dray.example>"),
        "{log}"
    );
    // The review branch was created at the same commit, and no staging ref is left behind.
    let branches = git(
        &bare,
        &["for-each-ref", "--format=%(refname) %(objectname)"],
    );
    assert!(
        branches
            .lines()
            .any(|l| l.starts_with("refs/heads/dray/promotion/") && l.ends_with(&head)),
        "{branches}"
    );
    assert!(!branches.contains("refs/dray/"), "{branches}");
    assert!(
        out.stdout.contains("through GitHub's API"),
        "{}",
        out.stdout
    );
}
