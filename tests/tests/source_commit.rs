//! The question the person Dray is for asked about rendering manifests in a Stage: "clone the
//! service repo in the stage, but which commit? The image might be built from a previous commit."
//! The image's `org.opencontainers.image.revision` annotation, which discovery records, names
//! it: a Stage clones that commit, not the branch's head, and pushes what it rendered.

use dray_tests::git::{GitDaemon, Repos};
use dray_tests::registry::Registry;
use dray_tests::{Daemon, manifests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_clones_the_commit_its_image_was_built_from() {
    let repos = Repos::new();
    let built = repos.create("app.git", &[("deploy/app.yaml", "version: one\n")]);
    // The branch has moved on since the image was built.
    repos.commit(
        "app.git",
        "main",
        &[("deploy/app.yaml", "version: two\n")],
        "not built yet",
    );
    repos.create("gitops.git", &[("README.md", "gitops\n")]);
    let git = GitDaemon::start(&repos);
    let registry = Registry::start();
    let image = format!("{}/shop/web", registry.address);
    registry
        .push(
            "shop/web",
            "1.0.0",
            "one",
            &[("org.opencontainers.image.revision", &built)],
        )
        .await;

    let daemon = Daemon::start().await;
    let steps = format!(
        r#"- uses: git-clone
  config:
    repoURL: "{git}/app.git"
    checkout:
    - commit: ${{{{ imageFrom("{image}").Annotations["org.opencontainers.image.revision"] }}}}
      path: ./src
- uses: git-clone
  config:
    repoURL: "{git}/gitops.git"
    checkout:
    - {{branch: stage/test, create: true, path: ./out}}
- uses: git-clear
  config: {{path: ./out}}
- uses: copy
  config: {{inPath: ./src/deploy, outPath: ./out/deploy}}
- uses: git-commit
  config:
    path: ./out
    message: render ${{{{ imageFrom("{image}").Tag }}}} from ${{{{ imageFrom("{image}").Annotations["org.opencontainers.image.revision"] }}}}
- uses: git-push
  config: {{path: ./out}}"#,
        git = git.url
    );
    let subscription = format!("image: {{repoURL: \"{image}\"}}");
    daemon
        .apply_ok(&format!(
            "{}{}",
            manifests::project("shop", &[&subscription]),
            manifests::stage("shop", "test", &steps)
        ))
        .await;
    let out = daemon.refresh("shop", "app");
    assert_eq!(out.code, 0, "{out:?}");
    let freight = daemon.freight("shop");
    assert_eq!(freight.len(), 1, "{freight:#?}");
    let alias = freight[0]["alias"].as_str().expect("an alias").to_string();

    let out = daemon.promote("shop", "test", &alias);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        repos.show("gitops.git", "stage/test", "deploy/app.yaml"),
        "version: one",
        "the manifests come from the commit the image was built from, not the branch's head"
    );
    assert_eq!(
        repos.subjects("gitops.git", "stage/test"),
        vec![format!("render 1.0.0 from {built}")]
    );
}
