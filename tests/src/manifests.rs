//! Manifests the end-to-end tests and benchmarks share: a project with one Warehouse, a Stage
//! that takes its Freight directly, hand-made Freight, and the canonical promotion's steps.

/// Project `project` and its Warehouse `app`, subscribed to `subscriptions` (YAML flow
/// mappings such as `image: {repoURL: registry.example/web}`).
pub fn project(project: &str, subscriptions: &[&str]) -> String {
    let subscriptions: String = subscriptions.iter().map(|s| format!("  - {s}\n")).collect();
    format!(
        "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {{name: {project}}}\n---\n\
         apiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata: {{name: app, namespace: {project}}}\n\
         spec:\n  subscriptions:\n{subscriptions}"
    )
}

/// Stage `stage` of `project`, taking Freight directly from Warehouse `app`, promoting with
/// `steps` (YAML list items, written at column 0; they are indented here).
pub fn stage(project: &str, stage: &str, steps: &str) -> String {
    let steps: String = steps.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {{name: {stage}, namespace: {project}}}\n\
         spec:\n  requestedFreight:\n  - origin: {{kind: Warehouse, name: app}}\n    sources: {{direct: true}}\n\
         \x20 promotionTemplate:\n    spec:\n      steps:\n{steps}"
    )
}

/// A Freight of Warehouse `app` with `alias`, carrying `artifacts` (YAML: `images:` and/or
/// `commits:` lists, written at column 0).
pub fn freight(project: &str, alias: &str, artifacts: &str) -> String {
    format!(
        "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Freight\nmetadata: {{name: ignored, namespace: {project}}}\n\
         alias: {alias}\norigin: {{kind: Warehouse, name: app}}\n{artifacts}\n"
    )
}

/// The canonical promotion of the notes Dray is built for, on GitOps repository `repo`: clone
/// it twice (the Freight's commit into ./src, `stage/test` into ./out), clear ./out, set the
/// Freight's `registry.example/web` image in ./src/base, render ./src/stages/test into ./out,
/// commit with the set-image message, push to `stage/test`.
pub fn canonical_steps(repo: &str) -> String {
    canonical_steps_cloning(repo, "", "")
}

/// [`canonical_steps`] with shallow clones (`depth: 1`) and ./src checked out sparse (only
/// `base` and `stages/test`, what the render reads).
pub fn canonical_steps_scoped(repo: &str) -> String {
    canonical_steps_cloning(repo, "\n    depth: 1", ", sparse: [base, stages/test]")
}

fn canonical_steps_cloning(repo: &str, clone: &str, src: &str) -> String {
    format!(
        r#"- uses: git-clone
  config:
    repoURL: "{repo}"{clone}
    checkout:
    - {{fromFreight: true, path: ./src{src}}}
    - {{branch: stage/test, create: true, path: ./out}}
- uses: git-clear
  config: {{path: ./out}}
- uses: kustomize-set-image
  as: update-image
  config:
    path: ./src/base
    images: [{{image: registry.example/web}}]
- uses: kustomize-build
  config: {{path: ./src/stages/test, outPath: ./out}}
- uses: git-commit
  as: commit
  config: {{path: ./out, messageFromSteps: [update-image]}}
- uses: git-push
  config: {{path: ./out, targetBranch: stage/test}}"#
    )
}

/// A resource of `kind` named `name` in `project` with `body` (its `spec`, `status`…), made
/// in memory for writing straight into a store (the benchmarks fill stores this way).
pub fn object(
    kind: dray::resource::Kind,
    project: &str,
    name: &str,
    body: serde_json::Value,
) -> dray::resource::Object {
    use dray::resource::Kind;
    dray::resource::Object {
        api_version: kind.api_versions()[0].into(),
        kind,
        metadata: dray::resource::ObjectMeta {
            name: name.into(),
            namespace: (kind != Kind::Project).then(|| project.to_string()),
            ..Default::default()
        },
        body: body.as_object().cloned().unwrap_or_default(),
    }
}
