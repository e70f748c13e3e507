//! A hundred services per Stage, end to end against a real Git server (`git daemon`): a Stage
//! that selects its Warehouses by label instead of naming each (a new Warehouse with the label
//! feeds it with no edit, a relabelled one stops); many Freight in one Promotion and one commit,
//! by hand (`--all-newest`) and by auto-promotion's batch window.

use std::time::{Duration, Instant};

use dray_tests::Daemon;
use dray_tests::git::{GitDaemon, Repos};
use serde_json::Value;

/// Warehouse `name` of project `shop`, labelled `team`, on repository `repo`.
fn warehouse(name: &str, team: &str, repo: &str) -> String {
    format!(
        "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\n\
         metadata: {{name: {name}, namespace: shop, labels: {{team: {team}}}}}\n\
         spec:\n  subscriptions:\n  - git: {{repoURL: \"{repo}\"}}\n"
    )
}

/// Project `shop` with auto-promotion into `dev`, which takes every Warehouse of team `shop`.
const PIPELINE: &str = "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: shop}\n\
---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: shop, namespace: shop}\n\
spec:\n  promotionPolicies:\n  - stage: dev\n    autoPromotionEnabled: true\n\
---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {name: dev, namespace: shop}\n\
spec:\n  requestedFreight:\n  - originSelector: {matchLabels: {team: shop}}\n    sources: {direct: true}\n\
\x20 promotionTemplate:\n    spec:\n      steps:\n      - uses: compose-output\n        config: {done: true}\n";

/// The Warehouses whose Freight Stage `dev` holds now, sorted.
fn held_origins(stage: &Value) -> Vec<String> {
    let mut origins: Vec<String> = stage["status"]["freightHistory"][0]["items"]
        .as_object()
        .map(|items| items.keys().cloned().collect())
        .unwrap_or_default();
    origins.sort();
    origins
}

fn selected(stage: &Value) -> Vec<String> {
    stage["status"]["selectedOrigins"]
        .as_array()
        .map(|o| {
            o.iter()
                .filter_map(|o| o["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls Stage `dev` until `ready` holds (at most 60 s).
async fn dev_when(daemon: &Daemon, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stage = daemon.get_json("/v1/projects/shop/stages/dev").await;
        if ready(&stage) {
            return stage;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}: {stage:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_selecting_warehouses_by_label_takes_a_new_ones_freight_without_an_edit() {
    let repos = Repos::new();
    for service in ["web", "cart", "ledger", "search"] {
        repos.create(
            &format!("{service}.git"),
            &[("main.go", &format!("{service}\n"))],
        );
    }
    let server = GitDaemon::start(&repos);
    let repo = |service: &str| format!("{}/{service}.git", server.url);
    let daemon = Daemon::start().await;
    daemon
        .apply_ok(
            &(PIPELINE.to_string()
                + &warehouse("web", "shop", &repo("web"))
                + &warehouse("cart", "shop", &repo("cart"))
                + &warehouse("ledger", "bank", &repo("ledger"))),
        )
        .await;

    // The two Warehouses of team shop are discovered and their Freight promoted into dev; the
    // bank's is not.
    let stage = dev_when(&daemon, "web and cart in dev", |s| {
        held_origins(s) == ["Warehouse/cart", "Warehouse/web"]
    })
    .await;
    assert_eq!(selected(&stage), ["cart", "web"]);
    let out = daemon.cli(&["get", "stages", "-p", "shop"]);
    assert!(out.stdout.contains("warehouses{team=shop}"), "{out:?}");

    // A new Warehouse with the label: its Freight reaches dev, the Stage untouched.
    let generation = stage["metadata"]["generation"].clone();
    daemon
        .apply_ok(&warehouse("search", "shop", &repo("search")))
        .await;
    let stage = dev_when(&daemon, "search in dev", |s| {
        held_origins(s).contains(&"Warehouse/search".to_string())
    })
    .await;
    assert_eq!(selected(&stage), ["cart", "search", "web"]);
    assert_eq!(stage["metadata"]["generation"], generation);

    // Relabelled to another team, cart is no longer an origin of dev: its Freight may not be
    // promoted there, and the reason says so.
    daemon
        .apply_ok(&warehouse("cart", "bank", &repo("cart")))
        .await;
    dev_when(&daemon, "cart deselected", |s| {
        selected(s) == ["search", "web"]
    })
    .await;
    let cart = daemon
        .freight("shop")
        .into_iter()
        .find(|f| f["origin"]["name"] == "cart")
        .expect("cart's Freight");
    let name = cart["metadata"]["name"].as_str().expect("a name");
    let out = daemon.cli(&["explain", "freight", name, "--stage", "dev", "-p", "shop"]);
    assert!(
        out.stdout
            .contains("does not request Freight from Warehouse/cart (it requests Warehouse/search, Warehouse/web)"),
        "{out:?}"
    );
    let out = daemon.promote("shop", "dev", name);
    assert_eq!(out.code, 1, "{out:?}");
}

/// Warehouse `svc-NN` of team shop with its image, and a Freight of it at `tag`.
fn service(n: usize, tag: &str) -> String {
    let digest = format!("sha256:{:064x}", n * 1000 + tag.len());
    let alias = format!("svc-{n:02}-{}", tag.replace('.', "-"));
    format!(
        "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\n\
         metadata: {{name: svc-{n:02}, namespace: shop, labels: {{team: shop}}}}\n\
         spec:\n  interval: 24h\n  freightCreationPolicy: Manual\n  subscriptions:\n  - image: {{repoURL: registry.example/svc-{n:02}}}\n\
         ---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Freight\n\
         metadata: {{name: ignored, namespace: shop}}\nalias: {alias}\n\
         origin: {{kind: Warehouse, name: svc-{n:02}}}\n\
         images: [{{repoURL: registry.example/svc-{n:02}, tag: \"{tag}\", digest: \"{digest}\"}}]\n"
    )
}

/// Stage `dev` of every shop Warehouse: sets each Freight's image in `dev/kustomization.yaml`
/// of the GitOps repository (kustomize-set-image with no list sets them all), one commit, push.
fn batch_pipeline(repo: &str, policy: &str) -> String {
    format!(
        "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {{name: shop}}\n\
         ---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {{name: shop, namespace: shop}}\n\
         spec:\n  promotionPolicies:\n  - stage: dev\n{policy}\
         ---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {{name: dev, namespace: shop}}\n\
         spec:\n  requestedFreight:\n  - originSelector: {{matchLabels: {{team: shop}}}}\n    sources: {{direct: true}}\n\
         \x20 promotionTemplate:\n    spec:\n      steps:\n\
         \x20     - uses: git-clone\n        config: {{repoURL: \"{repo}\", checkout: [{{branch: main, path: ./out}}]}}\n\
         \x20     - uses: kustomize-set-image\n        as: images\n        config: {{path: ./out/dev}}\n\
         \x20     - uses: git-commit\n        config: {{path: ./out, messageFromSteps: [images]}}\n\
         \x20     - uses: git-push\n        config: {{path: ./out, targetBranch: main}}\n"
    )
}

fn promotions(daemon: &Daemon) -> Vec<Value> {
    let out = daemon.cli(&["get", "promotions", "-p", "shop", "-o", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let list: Value = serde_json::from_str(&out.stdout).expect("json");
    list["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_services_go_into_a_stage_in_one_promotion_and_one_commit() {
    let repos = Repos::new();
    repos.create(
        "gitops.git",
        &[("dev/kustomization.yaml", "resources: []\n")],
    );
    let server = GitDaemon::start(&repos);
    let repo = format!("{}/gitops.git", server.url);
    let daemon = Daemon::start().await;
    let mut all = batch_pipeline(&repo, "    autoPromotionEnabled: false\n");
    for n in 0..20 {
        all.push_str(&service(n, "1.0.0"));
    }
    daemon.apply_ok(&all).await;

    // By hand: the newest of every origin, one Promotion, one commit with all twenty images.
    let out = daemon.cli(&[
        "promote",
        "-p",
        "shop",
        "--stage",
        "dev",
        "--all-newest",
        "--wait",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("and 19 more (one per origin)"),
        "{out:?}"
    );
    let made = promotions(&daemon);
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["spec"]["batch"].as_array().map(Vec::len), Some(19));
    assert_eq!(repos.subjects("gitops.git", "main").len(), 2, "one commit");
    let kustomization = repos.show("gitops.git", "main", "dev/kustomization.yaml");
    for n in 0..20 {
        assert!(
            kustomization.contains(&format!("registry.example/svc-{n:02}")),
            "{kustomization}"
        );
    }
    let stage = daemon.get_json("/v1/projects/shop/stages/dev").await;
    assert_eq!(held_origins(&stage).len(), 20);

    // Nothing newer: said so, nothing made.
    let out = daemon.cli(&["promote", "-p", "shop", "--stage", "dev", "--all-newest"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("nothing to promote"), "{out:?}");
    // Two Freight of one origin cannot share a Promotion.
    daemon.apply_ok(&service(3, "1.1.0")).await;
    daemon.apply_ok(&service(3, "1.2.0")).await;
    let out = daemon.cli(&[
        "promote",
        "-p",
        "shop",
        "--stage",
        "dev",
        "--freight",
        "svc-03-1-1-0",
        "--freight",
        "svc-03-1-2-0",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("one Freight per origin"), "{out:?}");
    // Nor more than a thousand Freight in one request.
    let mut args = vec!["promote", "-p", "shop", "--stage", "dev"];
    for _ in 0..1001 {
        args.extend(["--freight", "svc-00-1-0-0"]);
    }
    let out = daemon.cli(&args);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("a Promotion takes from 1 to 1000 Freight, not 1001"),
        "{out:?}"
    );
    assert_eq!(promotions(&daemon).len(), 1);

    // Auto-promotion with a batch window: five services pushed together (and svc-03's two
    // waiting) go in one Promotion, one commit, once the window after the first has passed.
    daemon
        .apply_ok(&batch_pipeline(
            &repo,
            "    autoPromotionEnabled: true\n    batchWindow: 3s\n",
        ))
        .await;
    let mut five = String::new();
    for n in 10..15 {
        five.push_str(&service(n, "2.0.0"));
    }
    daemon.apply_ok(&five).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while promotions(&daemon).len() < 2 {
        assert!(Instant::now() < deadline, "no batched auto-promotion");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stage = dev_when(&daemon, "the batch promoted", |s| {
        s["status"]["lastPromotion"]["status"]["phase"] == "Succeeded"
            && s["status"]["freightHistory"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    let made = promotions(&daemon);
    assert_eq!(made.len(), 2, "one batched Promotion: {made:#?}");
    let batch = made
        .iter()
        .find(|p| {
            p["metadata"]["annotations"]["kargo.akuity.io/create-actor"] == "dray:auto-promotion"
        })
        .expect("auto-promotion's");
    assert_eq!(
        batch["spec"]["batch"].as_array().map(Vec::len),
        Some(5),
        "{batch:#}"
    );
    assert_eq!(
        repos.subjects("gitops.git", "main").len(),
        3,
        "one more commit"
    );
    let held: Vec<String> = stage["status"]["freightHistory"][0]["items"]
        .as_object()
        .expect("items")
        .values()
        .filter_map(|i| i["alias"].as_str().map(str::to_string))
        .collect();
    assert_eq!(held.len(), 20);
    for expected in [
        "svc-03-1-2-0",
        "svc-10-2-0-0",
        "svc-14-2-0-0",
        "svc-00-1-0-0",
    ] {
        assert!(held.contains(&expected.to_string()), "{held:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_stages_pushing_to_one_branch_at_once_all_land() {
    let repos = Repos::new();
    repos.create_many("gitops.git", 10, |n| {
        (
            format!("st-{n}/kustomization.yaml"),
            "resources: []\n".to_string(),
        )
    });
    let server = GitDaemon::start(&repos);
    let repo = format!("{}/gitops.git", server.url);
    let mut all = String::from(
        "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: shop}\n\
         ---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: shop, namespace: shop}\n\
         spec:\n  promotionPolicies:\n  - stageSelector: {name: \"glob:st-*\"}\n    autoPromotionEnabled: true\n\
         ---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata: {name: app, namespace: shop}\n\
         spec:\n  interval: 24h\n  freightCreationPolicy: Manual\n  subscriptions:\n  - image: {repoURL: registry.example/web}\n",
    );
    // Every Stage sets the image in its own directory and pushes to main: ten pushes race.
    for n in 0..10 {
        all.push_str(&format!(
            "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {{name: st-{n}, namespace: shop}}\n\
             spec:\n  requestedFreight:\n  - origin: {{kind: Warehouse, name: app}}\n    sources: {{direct: true}}\n\
             \x20 promotionTemplate:\n    spec:\n      steps:\n\
             \x20     - uses: git-clone\n        config: {{repoURL: \"{repo}\", checkout: [{{branch: main, path: ./out}}]}}\n\
             \x20     - uses: kustomize-set-image\n        as: image\n        config: {{path: ./out/st-{n}}}\n\
             \x20     - uses: git-commit\n        config: {{path: ./out, message: \"st-{n}: set the image\"}}\n\
             \x20     - uses: git-push\n        config: {{path: ./out, targetBranch: main}}\n"
        ));
    }
    let daemon = Daemon::start().await;
    daemon.apply_ok(&all).await;
    daemon
        .apply_ok(&dray_tests::manifests::freight(
            "shop",
            "first",
            "images: [{repoURL: registry.example/web, tag: \"1.0.0\", digest: \"sha256:0000000000000000000000000000000000000000000000000000000000000001\"}]",
        ))
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let made = promotions(&daemon);
        let ended: Vec<&Value> = made
            .iter()
            .filter(|p| {
                matches!(
                    p["status"]["phase"].as_str(),
                    Some("Succeeded" | "Failed" | "Errored")
                )
            })
            .collect();
        if made.len() == 10 && ended.len() == 10 {
            for p in &made {
                assert_eq!(p["status"]["phase"], "Succeeded", "{p:#}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "promotions: {made:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No commit lost: ten on top of the first, each Stage's file changed.
    let subjects = repos.subjects("gitops.git", "main");
    assert_eq!(subjects.len(), 11, "{subjects:?}");
    for n in 0..10 {
        assert!(
            subjects.contains(&format!("st-{n}: set the image")),
            "{subjects:?}"
        );
        let file = repos.show("gitops.git", "main", &format!("st-{n}/kustomization.yaml"));
        assert!(file.contains("newTag: 1.0.0"), "st-{n}: {file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_looping_over_the_freight_renders_each_service_with_outputs_per_item() {
    let repos = Repos::new();
    repos.create_many("gitops.git", 5, |n| {
        (
            format!("svc-{n:02}/values.yaml"),
            "# the service's image\nimage:\n  tag: old # pinned by Dray\n".to_string(),
        )
    });
    let server = GitDaemon::start(&repos);
    let repo = format!("{}/gitops.git", server.url);
    let mut all = format!(
        "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {{name: shop}}\n\
         ---\napiVersion: kargo.akuity.io/v1alpha1\nkind: PromotionTask\nmetadata: {{name: render, namespace: shop}}\n\
         spec:\n  steps:\n\
         \x20 - uses: yaml-update\n    as: set\n    config:\n\
         \x20     path: ./out/${{{{ item.origin.name }}}}/values.yaml\n\
         \x20     updates: [{{key: image.tag, value: \"${{{{ item.images[0].tag }}}}\"}}]\n\
         \x20 - uses: compose-output\n    as: tag\n\
         \x20   config: {{service: \"${{{{ item.origin.name }}}}\", tag: \"${{{{ item.images[0].tag }}}}\", index: \"${{{{ index }}}}\"}}\n\
         ---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {{name: dev, namespace: shop}}\n\
         spec:\n  requestedFreight:\n  - originSelector: {{matchLabels: {{team: shop}}}}\n    sources: {{direct: true}}\n\
         \x20 promotionTemplate:\n    spec:\n      steps:\n\
         \x20     - uses: git-clone\n        config: {{repoURL: \"{repo}\", checkout: [{{branch: main, path: ./out}}]}}\n\
         \x20     - task: {{name: render}}\n        as: render\n        forEach: \"${{{{ ctx.freight }}}}\"\n\
         \x20     - uses: compose-output\n        as: summary\n\
         \x20       config: {{count: \"${{{{ len(outputs['render::tag']) }}}}\", third: \"${{{{ outputs['render::tag'][2].service }}}}\"}}\n\
         \x20     - uses: git-commit\n        config: {{path: ./out, message: rendered}}\n\
         \x20     - uses: git-push\n        config: {{path: ./out, targetBranch: main}}\n"
    );
    for n in 0..5 {
        all.push_str(&service(n, &format!("1.{n}.0")));
    }
    let daemon = Daemon::start().await;
    daemon.apply_ok(&all).await;
    let out = daemon.cli(&[
        "promote",
        "-p",
        "shop",
        "--stage",
        "dev",
        "--all-newest",
        "--wait",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    // Each service's file got its own tag, comments kept; one commit.
    for n in 0..5 {
        let values = repos.show("gitops.git", "main", &format!("svc-{n:02}/values.yaml"));
        assert_eq!(
            values.trim_end(),
            format!("# the service's image\nimage:\n  tag: 1.{n}.0 # pinned by Dray"),
            "svc-{n:02}"
        );
    }
    assert_eq!(
        repos.subjects("gitops.git", "main"),
        ["rendered", "initial"]
    );
    // The loop's outputs: a list, one entry per item, in order.
    let made = promotions(&daemon);
    let state = &made[0]["status"]["state"];
    assert_eq!(state["summary"]["count"], 5, "{state:#}");
    assert_eq!(state["summary"]["third"], "svc-02", "{state:#}");
    assert_eq!(state["render::tag"][4]["tag"], "1.4.0", "{state:#}");
    assert_eq!(state["render::tag"][4]["index"], 4, "{state:#}");
    let steps = made[0]["status"]["stepExecutionMetadata"]
        .as_array()
        .expect("steps");
    assert_eq!(steps[1]["message"], "ran for 5 item(s)", "{steps:#?}");

    // A forEach that gives no list, or more than a thousand items, fails the step and says so.
    for (n, (for_each, says)) in [
        (
            "${{ ctx.targetFreight }}",
            "forEach: gave a mapping, not a list",
        ),
        (
            "${{ 1..2000 }}",
            "gave 2000 items; a step loops over at most 1000",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let bad = all.replace(
            "forEach: \"${{ ctx.freight }}\"",
            &format!("forEach: \"{for_each}\""),
        );
        daemon.apply_ok(&bad).await;
        daemon.apply_ok(&service(0, &format!("9.{n}.0"))).await;
        let out = daemon.cli(&[
            "promote",
            "-p",
            "shop",
            "--stage",
            "dev",
            "--all-newest",
            "--wait",
        ]);
        assert_ne!(out.code, 0, "{out:?}");
        let made = promotions(&daemon);
        assert!(
            made.iter().any(|p| p["status"]["phase"] != "Succeeded"
                && p["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(says))),
            "{for_each}: {made:#?}"
        );
    }
}

/// Stages of a monorepo with a long history clone it shallow (`depth: 1`) and sparse (one
/// service's directory). One that only reads leaves the daemon's copy of the repository at one
/// commit of 301; one that pushes (and must integrate a change another clone pushed first)
/// makes the copy whole first, and every other service's file stays on the branch. (Against
/// `git daemon`: libgit2 cannot fetch shallow from a local path.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shallow_sparse_clone_changes_one_service_and_keeps_the_rest() {
    let repos = Repos::new();
    let files: Vec<(String, String)> = (0..20)
        .map(|n| {
            (
                format!("svc-{n:02}/kustomization.yaml"),
                "resources: []\n".to_string(),
            )
        })
        .collect();
    repos.create_with_history("gitops.git", &files, 300);
    let server = GitDaemon::start(&repos);
    let repo = format!("{}/gitops.git", server.url);
    let clone = |path: &str, service: &str| {
        format!(
            "- uses: git-clone\n  config:\n    repoURL: \"{repo}\"\n    depth: 1\n    \
             checkout: [{{branch: main, path: {path}, sparse: [{service}]}}]\n"
        )
    };
    let change = |path: &str, service: &str| {
        format!(
            "- uses: kustomize-set-image\n  config: {{path: {path}/{service}}}\n\
             - uses: git-commit\n  config: {{path: {path}, message: \"{service}: set the image\"}}\n\
             - uses: git-push\n  config: {{path: {path}, targetBranch: main}}\n"
        )
    };
    let read = clone("./out", "svc-01")
        + "- uses: yaml-parse\n  config: {path: ./out/svc-01/kustomization.yaml, outputs: [{name: r, fromExpression: resources}]}\n";
    // `./other` pushes first, so `./out`'s push is rejected and must integrate it.
    let write = clone("./out", "svc-03")
        + &clone("./other", "svc-07")
        + &change("./other", "svc-07")
        + &change("./out", "svc-03");
    let daemon = Daemon::start().await;
    daemon
        .apply_ok(
            &(dray_tests::manifests::project("shop", &["image: {repoURL: registry.example/web}"])
                + &dray_tests::manifests::stage("shop", "read", read.trim_end())
                + &dray_tests::manifests::stage("shop", "dev", write.trim_end())
                + &dray_tests::manifests::freight(
                    "shop",
                    "first",
                    "images: [{repoURL: registry.example/web, tag: \"1.0.0\", digest: \"sha256:0000000000000000000000000000000000000000000000000000000000000001\"}]",
                )),
        )
        .await;
    let copy = || {
        let copies: Vec<_> = std::fs::read_dir(daemon.data_dir.join("git-cache"))
            .expect("the daemon's git cache")
            .flatten()
            .collect();
        assert_eq!(copies.len(), 1, "{copies:?}");
        copies[0].path()
    };
    let commits = |dir: &std::path::Path| {
        dray_tests::git::git(dir, &["rev-list", "--count", "main"])
            .trim()
            .to_string()
    };

    let out = daemon.promote("shop", "read", "first");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(copy().join("shallow").is_file(), "the copy is shallow");
    assert_eq!(commits(&copy()), "1");

    let out = daemon.promote("shop", "dev", "first");
    assert_eq!(out.code, 0, "{out:?}");
    let subjects = repos.subjects("gitops.git", "main");
    assert_eq!(subjects.len(), 302, "{:?}", &subjects[..3]);
    assert_eq!(subjects[0], "svc-03: set the image", "replayed on top");
    assert_eq!(subjects[1], "svc-07: set the image");
    let listed = dray_tests::git::git(
        &repos.root.join("gitops.git"),
        &["ls-tree", "-r", "--name-only", "main"],
    );
    assert_eq!(listed.lines().count(), 21, "no file lost: {listed}");
    for n in 0..20 {
        let file = repos.show(
            "gitops.git",
            "main",
            &format!("svc-{n:02}/kustomization.yaml"),
        );
        assert_eq!(
            file.contains("newTag: 1.0.0"),
            n == 3 || n == 7,
            "svc-{n:02}: {file}"
        );
    }
    assert!(
        !copy().join("shallow").exists(),
        "pushing made the copy whole"
    );
    assert_eq!(commits(&copy()), "300");
}

/// A shallow clone of a commit older than its depth (a rollback to old Freight) takes the
/// history it needs instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shallow_clone_of_an_old_commit_fetches_what_it_needs() {
    let repos = Repos::new();
    repos.create_with_history("gitops.git", &[], 50);
    let old = dray_tests::git::git(&repos.root.join("gitops.git"), &["rev-parse", "main~30"]);
    let server = GitDaemon::start(&repos);
    let repo = format!("{}/gitops.git", server.url);
    let steps = format!(
        "- uses: git-clone\n  config:\n    repoURL: \"{repo}\"\n    depth: 1\n    \
         checkout: [{{commit: \"{}\", path: ./old}}]",
        old.trim()
    );
    let daemon = Daemon::start().await;
    daemon
        .apply_ok(
            &(dray_tests::manifests::project("shop", &["image: {repoURL: registry.example/web}"])
                + &dray_tests::manifests::stage("shop", "old", &steps)
                + &dray_tests::manifests::freight(
                    "shop",
                    "first",
                    "images: [{repoURL: registry.example/web, tag: \"1.0.0\"}]",
                )),
        )
        .await;
    let out = daemon.promote("shop", "old", "first");
    assert_eq!(out.code, 0, "{out:?}");
}
