//! Promotions end to end: a Stage's Kargo-style template runs against real Git servers
//! (`git daemon`, smart HTTP with basic auth, and sshd with a key) and leaves real commits on the
//! target branch.

use dray_tests::git::{GitDaemon, GitHttp, GitSsh, Repos};
use dray_tests::{Daemon, manifests};
use serde_json::Value;

const KUSTOMIZATION: &str = "resources:\n- deployment.yaml\n";
const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n";

/// A project whose Stage `test` clones `repo` twice, clears the output, writes through a task,
/// commits with a message built by an expression and pushes to `stage/test`.
fn pipeline(repo: &str, commit: &str) -> String {
    format!(
        r#"
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {{name: shop}}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {{name: app, namespace: shop}}
spec:
  subscriptions:
  - git: {{repoURL: "{repo}"}}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: PromotionTask
metadata: {{name: describe, namespace: shop}}
spec:
  vars:
  - name: target
  steps:
  - uses: compose-output
    as: words
    config:
      commitMessage: "render ${{{{ vars.target }}}}"
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {{name: test, namespace: shop}}
spec:
  vars:
  - name: repo
    value: "{repo}"
  requestedFreight:
  - origin: {{kind: Warehouse, name: app}}
    sources: {{direct: true}}
  promotionTemplate:
    spec:
      steps:
      - uses: git-clone
        as: clone
        config:
          repoURL: ${{{{ vars.repo }}}}
          checkout:
          - fromFreight: true
            path: ./src
          - branch: stage/${{{{ ctx.stage }}}}
            create: true
            path: ./out
      - uses: git-clear
        config: {{path: ./out}}
      - task: {{name: describe}}
        as: about
        vars:
        - name: target
          value: ${{{{ ctx.stage }}}}
      - uses: git-commit
        as: commit
        config:
          path: ./out
          message: "${{{{ outputs.about.commitMessage }}}} from ${{{{ commitFrom(vars.repo).ID }}}}"
      - uses: git-push
        as: push
        config: {{path: ./out}}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata: {{name: ignored, namespace: shop}}
alias: first
origin: {{kind: Warehouse, name: app}}
commits:
- repoURL: "{repo}"
  id: {commit}
"#
    )
}

fn promotions(daemon: &Daemon) -> Vec<Value> {
    let out = daemon.cli(&["get", "promotions", "-p", "shop", "-o", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let list: Value = serde_json::from_str(&out.stdout).expect("json");
    list["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotes_freight_and_leaves_a_commit_on_the_target_branch() {
    let repos = Repos::new();
    let commit = repos.create(
        "app.git",
        &[
            ("base/kustomization.yaml", KUSTOMIZATION),
            ("base/deployment.yaml", DEPLOYMENT),
        ],
    );
    let server = GitDaemon::start(&repos);
    let daemon = Daemon::start().await;
    daemon
        .apply_ok(&pipeline(&format!("{}/app.git", server.url), &commit))
        .await;

    let out = daemon.promote("shop", "test", "first");
    assert_eq!(out.code, 0, "{out:?}");
    for step in ["clone", "step-2", "about::words", "commit", "push"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with('✓') && l.contains(step)),
            "step {step} is not reported as done:\n{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("Succeeded"), "{}", out.stdout);

    // The commit is on the remote branch, with the message the expressions built.
    let subjects = repos.subjects("app.git", "stage/test");
    assert_eq!(subjects, vec![format!("render test from {commit}")]);
    // git-clear emptied the new branch's tree; nothing else was written there.
    let tree = dray_tests::git::git(
        &repos.root.join("app.git"),
        &["ls-tree", "--name-only", "stage/test"],
    );
    assert_eq!(tree, "");

    // Status: phase, every step's outcome, outputs by alias, and the Stage's history.
    let promotion = &promotions(&daemon)[0];
    let status = &promotion["status"];
    assert_eq!(status["phase"], "Succeeded");
    let pushed = status["state"]["push"]["commit"]
        .as_str()
        .expect("push outputs a commit");
    assert_eq!(status["state"]["commit"]["commit"], pushed);
    assert_eq!(
        status["state"]["clone"]["commits"]["./src"],
        commit.as_str()
    );
    let statuses: Vec<&str> = status["stepExecutionMetadata"]
        .as_array()
        .expect("step metadata")
        .iter()
        .map(|m| m["status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(statuses, ["Succeeded"; 5]);
    let stage = daemon.get_json("/v1/projects/shop/stages/test").await;
    assert_eq!(
        stage["status"]["lastPromotion"]["name"],
        promotion["metadata"]["name"]
    );
    // Kargo's form: items keyed by origin; the Freight now says it is in (and, with no
    // verification configured, verified in) the Stage.
    let items = stage["status"]["freightHistory"][0]["items"]
        .as_object()
        .expect("items by origin");
    assert_eq!(items.len(), 1, "{items:?}");
    let (origin, item) = items.iter().next().expect("one item");
    assert!(origin.starts_with("Warehouse/"), "{origin}");
    assert_eq!(item["alias"], "first");
    let freight = daemon
        .get_json(&format!(
            "/v1/projects/shop/freight/{}",
            item["name"].as_str().expect("a name")
        ))
        .await;
    assert!(
        freight["status"]["currentlyIn"]["test"]["since"].is_string(),
        "{freight}"
    );
    assert!(
        freight["status"]["verifiedIn"]["test"]["verifiedAt"].is_string(),
        "{freight}"
    );

    // The log holds the host's Git lines for each step.
    let name = promotion["metadata"]["name"].as_str().expect("a name");
    let logs = daemon.cli(&["logs", "promotion", name, "-p", "shop"]);
    assert_eq!(logs.code, 0, "{logs:?}");
    assert!(
        logs.stdout.contains("[clone]") && logs.stdout.contains("git clone"),
        "{}",
        logs.stdout
    );
    assert!(
        logs.stdout.contains("[push]") && logs.stdout.contains("git push"),
        "{}",
        logs.stdout
    );

    // A second promotion of the same Freight finds nothing new to commit and still succeeds
    // (git-commit outputs the existing HEAD, git-push has nothing to add).
    let again = daemon.promote("shop", "test", "first");
    assert_eq!(again.code, 0, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_over_http_with_credentials_found_by_url_in_the_shared_namespace() {
    let repos = Repos::new();
    let commit = repos.create("app.git", &[("README.md", "app\n")]);
    let server = GitHttp::start(&repos, "gituser:gitpass");
    let repo = format!("{}/app.git", server.url);
    let daemon = Daemon::start().await;
    daemon.apply_ok(&pipeline(&repo, &commit)).await;

    // No credentials: the clone is refused, the promotion fails and says why.
    let out = daemon.promote("shop", "test", "first");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("Failed"), "{}", out.stdout);
    assert!(
        out.stdout.contains("cred-type: git"),
        "the failure says how to add credentials:\n{}",
        out.stdout
    );

    // Organisation-wide credentials, matched by a regular expression on the URL.
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: org-git\n  namespace: kargo-shared-resources\n  labels: {{kargo.akuity.io/cred-type: git}}\nstringData:\n  repoURL: '^{}/.*$'\n  repoURLIsRegex: 'true'\n  username: gituser\n  password: gitpass\n",
        server.url.replace('.', "\\.")
    );
    daemon.apply_ok(&secret).await;
    let out = daemon.promote("shop", "test", "first");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        repos.subjects("app.git", "stage/test"),
        vec![format!("render test from {commit}")]
    );
    assert_eq!(repos.show("app.git", "main", "README.md"), "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_and_pushes_over_ssh_with_a_key_to_a_host_the_operator_knows() {
    let repos = Repos::new();
    let commit = repos.create("app.git", &[("README.md", "app\n")]);
    let server = GitSsh::start(&repos);
    let repo = server.repo_url("app.git");
    let known = tempfile::NamedTempFile::new().expect("a known-hosts file");
    std::fs::write(known.path(), format!("{}\n", server.known_host)).expect("write");
    let daemon = Daemon::start_with_config(dray::Config {
        ssh_known_hosts: Some(known.path().to_path_buf()),
        ..dray::Config::default()
    })
    .await
    .expect("the daemon starts");
    let secret = server.secret("shop", &repo);
    daemon
        .apply_ok(&format!("{}{secret}", pipeline(&repo, &commit)))
        .await;
    let out = daemon.promote("shop", "test", "first");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        repos.subjects("app.git", "stage/test"),
        vec![format!("render test from {commit}")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_skips_the_rest_except_always_and_bad_expressions_name_their_field() {
    let daemon = Daemon::start().await;
    let manifests = r#"
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: shop}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: app, namespace: shop}
spec:
  subscriptions:
  - image: {repoURL: registry.example/app}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: test, namespace: shop}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: fail
        as: tolerated
        continueOnError: true
        config: {message: "not fatal"}
      - uses: compose-output
        as: tag
        config: {tag: "${{ imageFrom('registry.example/app').Tag }}"}
      - uses: fail
        as: boom
        config: {message: "${{ 'stop at ' + outputs.tag.tag }}"}
      - uses: compose-output
        as: skipped
        config: {}
      - uses: compose-output
        as: cleanup
        if: ${{ always() && status('boom') == 'Failed' }}
        config: {ran: true}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: broken, namespace: shop}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: compose-output
        as: bad
        config:
          nested: [{value: "${{ int('x') }}"}]
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata: {name: ignored, namespace: shop}
alias: v1
origin: {kind: Warehouse, name: app}
images:
- {repoURL: registry.example/app, tag: "1.2.3", digest: "sha256:1"}
"#;
    daemon.apply_ok(manifests).await;

    let out = daemon.promote("shop", "test", "v1");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("step boom failed: stop at 1.2.3"),
        "{}",
        out.stdout
    );
    let promotion = promotions(&daemon)
        .into_iter()
        .find(|p| p["spec"]["stage"] == "test")
        .expect("the test promotion");
    let statuses: Vec<(String, String)> = promotion["status"]["stepExecutionMetadata"]
        .as_array()
        .expect("metadata")
        .iter()
        .map(|m| {
            (
                m["alias"].as_str().unwrap_or("").into(),
                m["status"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let expected = [
        ("tolerated", "Failed"),
        ("tag", "Succeeded"),
        ("boom", "Failed"),
        ("skipped", "Skipped"),
        ("cleanup", "Succeeded"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, s)| (a.to_string(), s.to_string()))
        .collect();
    assert_eq!(statuses, expected);
    assert_eq!(promotion["status"]["phase"], "Failed");
    assert_eq!(promotion["status"]["state"]["cleanup"]["ran"], true);

    let out = daemon.promote("shop", "broken", "v1");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("config.nested[0].value: ${{ int('x') }}"),
        "the error names the field and the expression:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("Errored"), "{}", out.stdout);

    // Promoting what a Stage does not request is refused before anything is created.
    let out = daemon.cli(&[
        "promote",
        "-p",
        "shop",
        "--stage",
        "test",
        "--freight",
        "nope",
    ]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("no Freight named or aliased \"nope\""),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_left_running_by_a_dead_daemon_resumes_at_its_current_step() {
    let repos = Repos::new();
    let commit = repos.create("app.git", &[("README.md", "app\n")]);
    let server = GitDaemon::start(&repos);
    let mut daemon = Daemon::start().await;
    daemon
        .apply_ok(&pipeline(&format!("{}/app.git", server.url), &commit))
        .await;
    daemon.shutdown().await;

    // What a daemon killed during step 3 leaves behind: the Promotion Running at step index 2,
    // steps 1 and 2 done, step 3 marked Running, and the work directory with both clones (their
    // repositories beside it, where the host keeps them).
    let store = dray::store::Store::open(&daemon.data_dir.join("dray.redb")).expect("the store");
    let name = store
        .write(|tx| {
            let mut p = dray::engine::decisions::promotion::create(tx, "shop", "test", "first", "test")
                .map_err(|e| dray::store::StoreError::Database(e.to_string()))?;
            p.body.get_mut("status").expect("status")["phase"] = "Running".into();
            p.body.get_mut("status").expect("status")["currentStep"] = 2.into();
            p.body.get_mut("status").expect("status")["stepExecutionMetadata"] = serde_json::json!([
                {"alias": "clone", "status": "Succeeded", "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"},
                {"alias": "step-2", "status": "Succeeded", "startedAt": "2026-01-01T00:00:01Z", "finishedAt": "2026-01-01T00:00:02Z"},
                {"alias": "about::words", "status": "Running", "startedAt": "2026-01-01T00:00:02Z"}
            ]);
            let name = p.metadata.name.clone();
            tx.put(p, None, dray::store::StatusMode::Replace)?;
            Ok::<String, dray::store::StoreError>(name)
        })
        .expect("a promotion written");
    drop(store);
    let workdir = daemon.data_dir.join("work/shop").join(&name);
    for (path, branch) in [("src", "main"), ("out", "stage/test")] {
        let dir = workdir.join(path);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let url = format!("{}/app.git", server.url);
        let git_dir = dray::host::git::git_dir(&workdir, std::path::Path::new(path));
        std::fs::create_dir_all(&git_dir).expect("mkdir");
        let git_dir = format!("--git-dir={}", git_dir.display());
        let git = |args: &[&str]| {
            let all: Vec<&str> = [git_dir.as_str(), "--work-tree=."]
                .into_iter()
                .chain(args.iter().copied())
                .collect();
            dray_tests::git::git(&dir, &all)
        };
        git(&["init", "-q", "-b", branch]);
        git(&["remote", "add", "origin", &url]);
        if branch == "main" {
            git(&["pull", "-q", "origin", "main"]);
        }
    }

    daemon.restart().await;
    let mut status = Value::Null;
    for _ in 0..200 {
        status = daemon
            .get_json(&format!("/v1/projects/shop/promotions/{name}"))
            .await["status"]
            .clone();
        if !matches!(status["phase"].as_str(), Some("Running" | "Pending")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status["phase"], "Succeeded", "{status:#}");
    // Steps 1 and 2 were not run again (their times are the old ones); 3 to 5 ran now.
    let metas = status["stepExecutionMetadata"]
        .as_array()
        .expect("metadata");
    assert_eq!(metas[0]["finishedAt"], "2026-01-01T00:00:01Z");
    assert!(
        metas[2]["finishedAt"]
            .as_str()
            .is_some_and(|t| t.starts_with("20") && t != "2026-01-01T00:00:02Z")
    );
    assert_eq!(
        repos.subjects("app.git", "stage/test"),
        vec![format!("render test from {commit}")]
    );
    assert!(
        !dray::host::git::repositories_dir(&workdir).exists(),
        "so are its repositories"
    );
    assert!(
        !workdir.exists(),
        "the work directory is removed once the promotion ends"
    );
}

/// A daemon stopped in the middle of a `forEach` loop goes on where the loop stood: over the
/// items it kept (not what `forEach` gives now), without running the items already done again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_cut_off_by_a_dead_daemon_goes_on_from_its_next_item() {
    let mut daemon = Daemon::start().await;
    daemon
        .apply_ok(
            r#"
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: shop}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: app, namespace: shop}
spec:
  freightCreationPolicy: Manual
  subscriptions:
  - image: {repoURL: registry.invalid/app}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: test, namespace: shop}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: compose-output
        as: each
        forEach: "${{ ['x', 'y', 'z'] }}"
        config: {name: "${{ item }}", at: "${{ index }}"}
      - uses: compose-output
        as: summary
        config: {count: "${{ len(outputs.each) }}", first: "${{ outputs.each[0].name }}"}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata: {name: ignored, namespace: shop}
alias: first
origin: {kind: Warehouse, name: app}
images:
- {repoURL: registry.invalid/app, tag: 1.0.0, digest: "sha256:0000000000000000000000000000000000000000000000000000000000000001"}
"#,
        )
        .await;
    daemon.shutdown().await;

    // What a daemon killed during the loop's second item leaves: the step Running, its items
    // as `forEach` gave them then, and the first item's outputs.
    let store = dray::store::Store::open(&daemon.data_dir.join("dray.redb")).expect("the store");
    let name = store
        .write(|tx| {
            let mut p = dray::engine::decisions::promotion::create(tx, "shop", "test", "first", "test")
                .map_err(|e| dray::store::StoreError::Database(e.to_string()))?;
            let status = p.body.get_mut("status").expect("status");
            status["phase"] = "Running".into();
            status["currentStep"] = 0.into();
            status["stepExecutionMetadata"] = serde_json::json!([
                {"alias": "each", "status": "Running", "startedAt": "2026-01-01T00:00:00Z",
                 "loop": {"items": ["a", "b", "c"], "outputs": [{"name": "a, before the stop", "at": 0}]}}
            ]);
            let name = p.metadata.name.clone();
            tx.put(p, None, dray::store::StatusMode::Replace)?;
            Ok::<String, dray::store::StoreError>(name)
        })
        .expect("a promotion written");
    drop(store);

    daemon.restart().await;
    let mut status = Value::Null;
    for _ in 0..200 {
        status = daemon
            .get_json(&format!("/v1/projects/shop/promotions/{name}"))
            .await["status"]
            .clone();
        if !matches!(status["phase"].as_str(), Some("Running" | "Pending")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status["phase"], "Succeeded", "{status:#}");
    assert_eq!(
        status["state"]["each"],
        serde_json::json!([
            {"name": "a, before the stop", "at": 0},
            {"name": "b", "at": 1},
            {"name": "c", "at": 2}
        ]),
        "{status:#}"
    );
    assert_eq!(status["state"]["summary"]["count"], 3, "{status:#}");
    assert_eq!(
        status["state"]["summary"]["first"], "a, before the stop",
        "{status:#}"
    );
    let each = &status["stepExecutionMetadata"][0];
    assert_eq!(each["message"], "ran for 3 item(s)", "{each:#}");
    assert_eq!(each["startedAt"], "2026-01-01T00:00:00Z", "{each:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_plugin_from_the_daemon_config_runs_as_a_stage_step() {
    let hello = std::path::PathBuf::from(env!("DRAY_FIXTURES_DIR")).join("hello_step.wasm");
    let steps = |grants: &[&str]| dray::service::StepPolicy {
        plugins: vec![dray::service::PluginEntry {
            file: hello.clone(),
            grants: grants.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    // A plugin whose step kind clashes with nothing, granted nothing it does not import.
    let daemon = Daemon::start_with(steps(&[]))
        .await
        .expect("the daemon starts");
    let manifests = r#"
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: shop}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: app, namespace: shop}
spec:
  subscriptions:
  - image: {repoURL: registry.example/app}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: test, namespace: shop}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: hello
        as: greet
        config: {name: "${{ imageFrom('registry.example/app').Tag }}"}
      - uses: compose-output
        as: echo
        config: {said: "${{ outputs.greet.greeting }}"}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata: {name: ignored, namespace: shop}
alias: v1
origin: {kind: Warehouse, name: app}
images:
- {repoURL: registry.example/app, tag: "1.2.3"}
"#;
    daemon.apply_ok(manifests).await;
    let out = daemon.promote("shop", "test", "v1");
    assert_eq!(out.code, 0, "{out:?}");
    let promotion = &promotions(&daemon)[0];
    let said = promotion["status"]["state"]["echo"]["said"]
        .as_str()
        .expect("an output");
    assert_eq!(said, "Hello, 1.2.3! Stage test of project shop says hi.");

    // A grant that is not a capability stops the start, and says which.
    let err = Daemon::start_with(steps(&["network"]))
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("\"network\" is not a capability"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_the_freights_image_in_a_kustomization_and_pushes_it() {
    let repos = Repos::new();
    let commit = repos.create(
        "app.git",
        &[
            (
                "base/kustomization.yaml",
                "resources:\n- deployment.yaml\nimages:\n- name: other\n  newTag: '1'\n",
            ),
            ("base/deployment.yaml", DEPLOYMENT),
        ],
    );
    let server = GitDaemon::start(&repos);
    let repo = format!("{}/app.git", server.url);
    let daemon = Daemon::start().await;
    let manifests = format!(
        r#"
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {{name: shop}}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {{name: app, namespace: shop}}
spec:
  subscriptions:
  - image: {{repoURL: registry.example/web}}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {{name: test, namespace: shop}}
spec:
  requestedFreight:
  - origin: {{kind: Warehouse, name: app}}
    sources: {{direct: true}}
  promotionTemplate:
    spec:
      steps:
      - uses: git-clone
        config:
          repoURL: "{repo}"
          checkout: [{{branch: main, path: ./src}}]
      - uses: kustomize-set-image
        as: set
        config: {{path: ./src/base}}
      - uses: git-commit
        config: {{path: ./src, messageFromSteps: [set]}}
      - uses: git-push
        config: {{path: ./src, targetBranch: stage/test}}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata: {{name: ignored, namespace: shop}}
alias: web-123
origin: {{kind: Warehouse, name: app}}
images:
- {{repoURL: registry.example/web, tag: "1.2.3", digest: "sha256:0123"}}
"#
    );
    daemon.apply_ok(&manifests).await;
    let out = daemon.promote("shop", "test", "web-123");
    assert_eq!(out.code, 0, "{out:?}");
    let kustomization = repos.show("app.git", "stage/test", "base/kustomization.yaml");
    // The Freight's image joins the list (sorted by name, as `kustomize edit` does); the other
    // entry and the resources stay.
    assert_eq!(
        kustomization,
        "resources:\n  - deployment.yaml\nimages:\n  - name: other\n    newTag: \"1\"\n  - name: registry.example/web\n    newTag: 1.2.3"
    );
    let subjects = repos.subjects("app.git", "stage/test");
    assert_eq!(subjects[0], "Updated ./src/base to use new image");
    assert_eq!(
        subjects[1], "initial",
        "the branch starts from main's {commit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reads_only_the_generic_secrets_the_operator_granted_it() {
    let reads = std::path::PathBuf::from(env!("DRAY_FIXTURES_DIR")).join("reads_secret.wasm");
    let steps = dray::service::StepPolicy {
        plugins: vec![dray::service::PluginEntry {
            file: reads,
            grants: vec!["credentials".into()],
            secrets: vec!["api-token".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let daemon = Daemon::start_with(steps).await.expect("the daemon starts");
    let manifests = r#"
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: shop}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: app, namespace: shop}
spec:
  subscriptions:
  - image: {repoURL: registry.example/app}
---
apiVersion: v1
kind: Secret
metadata:
  name: api-token
  namespace: shop
  labels: {kargo.akuity.io/cred-type: generic}
stringData: {token: s3cret}
---
apiVersion: v1
kind: Secret
metadata:
  name: other
  namespace: shop
  labels: {kargo.akuity.io/cred-type: generic}
stringData: {token: nope}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: test, namespace: shop}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: show-keys
        as: granted
        config: {name: api-token}
      - uses: show-keys
        as: ungranted
        config: {name: other}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata: {name: ignored, namespace: shop}
alias: v1
origin: {kind: Warehouse, name: app}
images:
- {repoURL: registry.example/app, tag: "1"}
"#;
    daemon.apply_ok(manifests).await;
    let out = daemon.promote("shop", "test", "v1");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(r#"may not read secret \"other\""#),
        "{}",
        out.stdout
    );
    let promotion = &promotions(&daemon)[0];
    assert_eq!(
        promotion["status"]["state"]["granted"]["keys"],
        serde_json::json!(["token"])
    );
    assert_eq!(promotion["status"]["state"]["granted"]["valueBytes"], 6);
}

/// The flow of the notes Dray is built for: clone the GitOps repository twice, clear the output
/// branch, set the Freight's image in the base, render the Stage's overlay into the output
/// branch, commit with the set-image message, push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_a_stage_overlay_with_the_new_image_onto_the_stage_branch() {
    let repos = Repos::new();
    let commit = repos.create(
        "gitops.git",
        &[
            ("base/kustomization.yaml", KUSTOMIZATION),
            (
                "base/deployment.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n      - name: web\n        image: registry.example/web:0.1.0\n",
            ),
            (
                "stages/test/kustomization.yaml",
                "namespace: test\nresources:\n- ../../base\n",
            ),
        ],
    );
    let server = GitDaemon::start(&repos);
    let repo = format!("{}/gitops.git", server.url);
    let daemon = Daemon::start().await;
    let manifests = manifests::project(
        "shop",
        &[
            "image: {repoURL: registry.example/web}",
            &format!("git: {{repoURL: \"{repo}\"}}"),
        ],
    ) + &manifests::stage("shop", "test", &manifests::canonical_steps(&repo))
        + &manifests::freight(
            "shop",
            "web-2",
            &format!(
                "images:\n- {{repoURL: registry.example/web, tag: \"2.0.0\"}}\ncommits:\n- {{repoURL: \"{repo}\", id: {commit}}}"
            ),
        );
    daemon.apply_ok(&manifests).await;
    let out = daemon.promote("shop", "test", "web-2");
    assert_eq!(out.code, 0, "{out:?}");
    let rendered = repos.show("gitops.git", "stage/test", "test-deployment-web.yaml");
    assert_eq!(
        rendered,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: test\nspec:\n  template:\n    spec:\n      containers:\n      - image: registry.example/web:2.0.0\n        name: web"
    );
    assert_eq!(
        repos.subjects("gitops.git", "stage/test")[0],
        "Updated ./src/base to use new image"
    );
    let bare = repos.root.join("gitops.git");
    let author = dray_tests::git::git(&bare, &["log", "-1", "--format=%an <%ae>", "stage/test"]);
    assert_eq!(
        author, "Dray <no-reply@dray.dev>",
        "the default author (Kargo's is Kargo <no-reply@kargo.io>)"
    );
    // The branch holds only the render.
    let tree = dray_tests::git::git(&bare, &["ls-tree", "--name-only", "stage/test"]);
    assert_eq!(tree, "test-deployment-web.yaml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_metadata_records_on_the_stage_and_freight_and_expressions_read_it() {
    let daemon = Daemon::start().await;
    let steps = r#"- uses: set-metadata
  config:
    updates:
    - kind: Stage
      name: ${{ ctx.stage }}
      values: {deployedBy: dray, replicas: 3}
    - kind: Freight
      name: ${{ ctx.targetFreight.name }}
      values: {ticket: OPS-42}
- uses: compose-output
  as: read
  config:
    who: ${{ stageMetadata("test").deployedBy }}
    ticket: ${{ freightMetadata(ctx.targetFreight.name, "ticket") }}"#;
    let manifests = manifests::project("shop", &["image: {repoURL: registry.example/web}"])
        + &manifests::stage("shop", "test", steps)
        + &manifests::freight(
            "shop",
            "web-1",
            "images:\n- {repoURL: registry.example/web, tag: \"1.0.0\"}",
        );
    daemon.apply_ok(&manifests).await;
    let out = daemon.promote("shop", "test", "web-1");
    assert_eq!(out.code, 0, "{out:?}");
    let promotion = &promotions(&daemon)[0];
    assert_eq!(
        promotion["status"]["state"]["read"],
        serde_json::json!({"who": "dray", "ticket": "OPS-42"})
    );
    let stage = daemon.get_json("/v1/projects/shop/stages/test").await;
    assert_eq!(
        stage["status"]["metadata"],
        serde_json::json!({"deployedBy": "dray", "replicas": 3})
    );
    let freight = daemon.cli(&["get", "freight", "-p", "shop", "-o", "json"]);
    assert!(freight.stdout.contains("OPS-42"), "{}", freight.stdout);
}

/// Kargo's functions in a real promotion: ConfigMaps of the project and of the shared
/// namespace, a version's methods, `asYAML`, and `set-freight-alias` whose new alias a later
/// step's `freightStatus()` finds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kargo_functions_and_set_freight_alias_work_in_a_promotion() {
    let daemon = Daemon::start().await;
    let steps = r#"- uses: set-freight-alias
  config:
    name: ${{ ctx.targetFreight.name }}
    alias: web-${{ replace(semverParse(imageFrom("registry.example/web").Tag).IncMinor().String(), ".", "-") }}
- uses: compose-output
  as: read
  config:
    replicas: ${{ configMap("settings").replicas }}
    region: ${{ sharedConfigMap("org").region }}
    missing: ${{ len(configMap("none")) }}
    values: '${% asYAML({"image": {"tag": imageFrom("registry.example/web").Tag}}) %}'
    renamed: ${{ freightStatus("web-1-1-0") != nil }}"#;
    let config_maps = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\ndata: {replicas: \"3\"}\n\
        ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: org, namespace: kargo-shared-resources}\ndata: {region: eu-west}\n";
    let manifests = manifests::project("shop", &["image: {repoURL: registry.example/web}"])
        + &manifests::stage("shop", "test", steps)
        + &manifests::freight(
            "shop",
            "web-1",
            "images:\n- {repoURL: registry.example/web, tag: \"1.0.3\"}",
        )
        + config_maps;
    daemon.apply_ok(&manifests).await;
    let out = daemon.promote("shop", "test", "web-1");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        promotions(&daemon)[0]["status"]["state"]["read"],
        serde_json::json!({"replicas": 3, "region": "eu-west", "missing": 0,
            "values": "image:\n  tag: 1.0.3\n", "renamed": true})
    );
    let freight = daemon.cli(&["get", "freight", "web-1-1-0", "-p", "shop", "-o", "json"]);
    assert_eq!(freight.code, 0, "{freight:?}");
    let configmaps = daemon.cli(&["get", "configmaps", "-p", "shop"]);
    assert!(
        configmaps.stdout.contains("settings"),
        "{}",
        configmaps.stdout
    );
}

/// `dray apply` refuses, before anything is written, what would fail only when a Promotion
/// runs: a step kind the daemon does not have, a config its schema refuses, a function that
/// does not exist; each located in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_steps_that_could_never_run() {
    let daemon = Daemon::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipeline.yaml");
    let apply = |steps: &str| {
        let manifests = manifests::project("shop", &["image: {repoURL: registry.example/web}"])
            + &manifests::stage("shop", "test", steps);
        std::fs::write(&file, &manifests).unwrap();
        let out = daemon.cli(&["apply", "-f", file.to_str().unwrap()]);
        assert_eq!(out.code, 1, "{out:?}");
        out.stderr
    };
    // The gate: an expression calls a function that does not exist.
    let stderr = apply(
        r#"- uses: compose-output
  config: {v: "${{ toYaml(vars.x) }}"}"#,
    );
    assert!(
        stderr.contains(
            "pipeline.yaml:23:18: document 3 (Stage \"test\"): spec.promotionTemplate.spec.steps[0].config.v: ${{ toYaml(vars.x) }}: unknown function toYaml()"
        ),
        "{stderr}"
    );
    // Against the daemon's step kinds: one it does not have, a config its schema refuses;
    // a value an expression decides is left for the run.
    let stderr = apply(
        r#"- uses: argocd-updat
- uses: git-clone
  config: {repoURL: 42, checkout: [{branch: main, path: ./src}]}
- uses: git-clone
  config: {repoURL: "${{ vars.repo }}", checkout: [{branch: main, path: ./src}]}"#,
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("pipeline.yaml:"))
        .collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0]
            .contains("steps[0].uses: there is no step kind \"argocd-updat\"; this daemon runs"),
        "{stderr}"
    );
    assert!(
        lines[1].contains("steps[1].config.repoURL: does not fit the schema of git-clone"),
        "{stderr}"
    );
    let stages = daemon.cli(&["get", "stages", "-p", "shop"]);
    assert!(
        !stages.stdout.contains("test"),
        "nothing was applied: {}",
        stages.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freight_created_by_hand_can_be_promoted_by_its_alias() {
    let daemon = Daemon::start().await;
    let steps = "- uses: compose-output\n  as: image\n  config:\n    tag: ${{ imageFrom(\"localhost:5000/web\").Tag }}";
    let manifests = manifests::project("shop", &["image: {repoURL: \"localhost:5000/web\"}"])
        + &manifests::stage("shop", "test", steps);
    daemon.apply_ok(&manifests).await;
    let out = daemon.cli(&[
        "freight",
        "create",
        "-p",
        "shop",
        "--warehouse",
        "app",
        "--image",
        "localhost:5000/web:1.2.3",
        "--alias",
        "by-hand",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("(by-hand) created"), "{}", out.stdout);
    let out = daemon.promote("shop", "test", "by-hand");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        promotions(&daemon)[0]["status"]["state"]["image"]["tag"],
        "1.2.3"
    );

    // A reference without a tag or digest is refused before anything is sent.
    let out = daemon.cli(&[
        "freight",
        "create",
        "-p",
        "shop",
        "--warehouse",
        "app",
        "--image",
        "localhost:5000/web",
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("write REPOSITORY:TAG"),
        "{}",
        out.stderr
    );
}

/// The ways a Git promotion goes wrong that a user meets first, each with a message that says
/// what happened: a wrong password, a branch that does not exist, and a push that cannot be
/// integrated because the remote changed the same lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_failures_say_what_went_wrong() {
    let repos = Repos::new();
    let commit = repos.create("app.git", &[("README.md", "app\n")]);
    let http = GitHttp::start(&repos, "gituser:gitpass");
    let daemon = Daemon::start().await;
    let promote = |alias: &str| daemon.promote("shop", alias, "first");

    // A wrong password for the repository's URL.
    let private = format!("{}/app.git", http.url);
    let secret = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: app-git\n  namespace: shop\n  labels: {{kargo.akuity.io/cred-type: git}}\nstringData:\n  repoURL: '{private}'\n  username: gituser\n  password: wrong\n"
    );
    let clone = |repo: &str, branch: &str| {
        format!(
            "- uses: git-clone\n  config:\n    repoURL: \"{repo}\"\n    checkout: [{{branch: {branch}, path: ./src}}]"
        )
    };
    let server = GitDaemon::start(&repos);
    let public = format!("{}/app.git", server.url);
    // Two checkouts of main change the same line; the second push must integrate the first.
    let conflict = format!(
        "{}\n- uses: git-clone\n  config:\n    repoURL: \"{public}\"\n    checkout: [{{branch: main, path: ./other}}]\n\
         - uses: file-write\n  config: {{path: ./src/README.md, contents: \"mine\\n\", overwrite: true}}\n\
         - uses: file-write\n  config: {{path: ./other/README.md, contents: \"theirs\\n\", overwrite: true}}\n\
         - uses: git-commit\n  config: {{path: ./other, message: theirs}}\n\
         - uses: git-push\n  config: {{path: ./other, targetBranch: main}}\n\
         - uses: git-commit\n  config: {{path: ./src, message: mine}}\n\
         - uses: git-push\n  config: {{path: ./src, targetBranch: main, maxAttempts: 2}}",
        clone(&public, "main")
    );
    let manifests = manifests::project("shop", &[&format!("git: {{repoURL: \"{public}\"}}")])
        + &manifests::stage("shop", "private", &clone(&private, "main"))
        + &manifests::stage("shop", "missing", &clone(&public, "no-such-branch"))
        + &manifests::stage("shop", "conflict", &conflict)
        + &manifests::freight(
            "shop",
            "first",
            &format!("commits:\n- {{repoURL: \"{public}\", id: {commit}}}"),
        )
        + &secret;
    daemon.apply_ok(&manifests).await;

    let out = promote("private");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("refused the credentials")
            && out
                .stdout
                .contains("Secret shop/app-git (username gituser)"),
        "names the Secret to fix: {}",
        out.stdout
    );

    let out = promote("missing");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("no-such-branch"), "{}", out.stdout);

    let out = promote("conflict");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("conflict"), "{}", out.stdout);
    // The remote keeps the change that got there first.
    assert_eq!(repos.show("app.git", "main", "README.md"), "theirs");
}

/// A long step's log reaches `dray logs` while it runs, not at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_steps_log_is_readable_while_it_runs() {
    let hostile = std::path::PathBuf::from(env!("DRAY_FIXTURES_DIR")).join("hostile.wasm");
    let steps = dray::service::StepPolicy {
        plugins: vec![dray::service::PluginEntry {
            file: hostile,
            ..Default::default()
        }],
        ..Default::default()
    };
    let daemon = Daemon::start_with(steps).await.expect("the daemon starts");
    let manifests = format!(
        "{}{}{}",
        dray_tests::manifests::project("shop", &["image: {repoURL: registry.example/app}"]),
        dray_tests::manifests::stage(
            "shop",
            "test",
            "- uses: sleep\n  as: slow\n  config: {ticks: 20, ms: 250}"
        ),
        dray_tests::manifests::freight(
            "shop",
            "v1",
            "images:\n- {repoURL: registry.example/app, tag: \"1\"}"
        ),
    );
    daemon.apply_ok(&manifests).await;
    let out = daemon.cli(&[
        "promote",
        "-p",
        "shop",
        "--stage",
        "test",
        "--freight",
        "v1",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let name = promotions(&daemon)[0]["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_string();
    // The step takes 5 s; its first ticks are in the log well before that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    loop {
        let logs = daemon.cli(&["logs", "promotion", &name, "-p", "shop"]);
        let phase = promotions(&daemon)[0]["status"]["phase"].clone();
        if logs.stdout.contains("tick 2") {
            assert_eq!(
                phase, "Running",
                "seen while the step runs: {}",
                logs.stdout
            );
            assert!(!logs.stdout.contains("tick 20"), "{}", logs.stdout);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no tick in the log after 4 s ({phase}): {}",
            logs.stdout
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
