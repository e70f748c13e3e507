//! `helm-template` in real promotions: a chart in a real Git repository (served by `git daemon`)
//! rendered in the sandbox with a values file and a `setValues` taken from the Freight, pushed to
//! the Stage's branch, and compared, document by document, with what the real `helm template`
//! (v3.6.2, installed by tests/run.sh) renders from the same chart and values; and an umbrella
//! chart whose dependencies come from the Freight, fetched from a real chart repository (behind
//! basic auth) and a real OCI registry as `helm dependency update` fetches them.

use std::path::Path;

use dray_tests::git::{GitDaemon, Repos};
use dray_tests::helm::run as run_helm;
use dray_tests::{Daemon, manifests};

/// Every file under `dir`, as (path relative to `dir`, text).
fn files(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("a dir") {
        let path = entry.expect("an entry").path();
        let name = format!(
            "{prefix}{}",
            path.file_name().expect("a name").to_string_lossy()
        );
        if path.is_dir() {
            files(&path, &format!("{name}/"), out);
        } else {
            out.push((name, std::fs::read_to_string(&path).expect("text")));
        }
    }
}

const VALUES: &str = "replicaCount: 3\nservice: {type: NodePort}\ningress:\n  enabled: true\n  hosts:\n  - host: shop.example.com\n    paths: [{path: /, pathType: Prefix}]\n";

fn steps(repo: &str, chart: &str) -> String {
    format!(
        r#"- uses: git-clone
  config:
    repoURL: "{repo}"
    checkout:
    - branch: main
      path: ./src
    - branch: stage/prod
      create: true
      path: ./out
- uses: git-clear
  config: {{path: ./out}}
- uses: helm-template
  as: render
  config:
    path: ./src/charts/{chart}
    outPath: ./out/{chart}.yaml
    releaseName: shop
    namespace: prod
    valuesFiles: [./src/values/prod.yaml, ./src/values/not-there.yaml]
    ignoreMissingValueFiles: true
    setValues:
    - key: image.tag
      value: "${{{{ imageFrom('registry.example/web').Tag }}}}"
- uses: git-commit
  config: {{path: ./out, message: "render {chart}"}}
- uses: git-push
  config: {{path: ./out}}"#
    )
}

fn pipeline(repo: &str, chart: &str) -> String {
    manifests::project("shop", &["image: {repoURL: registry.example/web}"])
        + &manifests::stage("shop", "prod", &steps(repo, chart))
        + &manifests::freight(
            "shop",
            "f1",
            "images: [{repoURL: registry.example/web, tag: 1.4.0}]",
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_renders_a_chart_as_helm_template_does() {
    let work = tempfile::tempdir().expect("a dir");
    run_helm(&["create", "demo"], work.path());
    let mut repo_files = Vec::new();
    files(&work.path().join("demo"), "charts/demo/", &mut repo_files);
    repo_files.push(("values/prod.yaml".into(), VALUES.into()));
    let repos = Repos::new();
    let refs: Vec<(&str, &str)> = repo_files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    repos.create("gitops.git", &refs);
    let server = GitDaemon::start(&repos);
    let daemon = Daemon::start().await;
    daemon
        .apply_ok(&pipeline(&format!("{}/gitops.git", server.url), "demo"))
        .await;

    let promoted = daemon.promote("shop", "prod", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");
    let ours = repos.show("gitops.git", "stage/prod", "demo.yaml");

    std::fs::write(work.path().join("prod.yaml"), VALUES).expect("write");
    let theirs = run_helm(
        &[
            "template",
            "shop",
            "demo",
            "-f",
            "prod.yaml",
            "--set",
            "image.tag=1.4.0",
            "--namespace",
            "prod",
        ],
        work.path(),
    );
    let (a, b) = (
        chart::read_printed(&theirs, false).unwrap_or_else(|e| panic!("{e}")),
        chart::read_printed(&ours, false).unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(a.len() >= 5, "{theirs}");
    assert_eq!(b, a, "helm:\n{theirs}\ndray:\n{ours}");
    assert!(ours.contains("image: \"nginx:1.4.0\""), "{ours}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_template_says_which_file_line_and_value() {
    let repos = Repos::new();
    repos.create(
        "gitops.git",
        &[
            ("charts/broken/Chart.yaml", "apiVersion: v2\nname: broken\nversion: 0.1.0\n"),
            ("charts/broken/values.yaml", "ingress: {}\n"),
            (
                "charts/broken/templates/ingress.yaml",
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\nspec:\n  rules:\n  - host: {{ required \"ingress.host is required: set it in values/prod.yaml\" .Values.ingress.host }}\n",
            ),
            ("values/prod.yaml", "other: 1\n"),
        ],
    );
    let server = GitDaemon::start(&repos);
    let daemon = Daemon::start().await;
    daemon
        .apply_ok(&pipeline(&format!("{}/gitops.git", server.url), "broken"))
        .await;
    let failed = daemon.promote("shop", "prod", "f1");
    assert_ne!(failed.code, 0, "{failed:?}");
    assert!(
        failed.stdout.contains("broken/templates/ingress.yaml:7:")
            && failed
                .stdout
                .contains("ingress.host is required: set it in values/prod.yaml"),
        "{failed:?}"
    );
    // Nothing was pushed.
    assert!(repos.subjects("gitops.git", "main").len() == 1);
}

/// A chart made by `helm create NAME` at `version` in `dir/NAME`.
fn created(dir: &Path, name: &str, version: &str) -> std::path::PathBuf {
    let chart = dir.join(name);
    if !chart.exists() {
        run_helm(&["create", name], dir);
    }
    let yaml = chart.join("Chart.yaml");
    let text = std::fs::read_to_string(&yaml).expect("Chart.yaml");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("version:") {
                format!("version: {version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&yaml, text).expect("write");
    chart
}

/// A clone of `branch` of bare repository `name` in a new directory.
fn checkout(repos: &Repos, name: &str, branch: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a dir");
    dray_tests::git::git(
        dir.path(),
        &[
            "clone",
            "-q",
            "-b",
            branch,
            &repos.root.join(name).display().to_string(),
            "co",
        ],
    );
    dir
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("a dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_umbrella_chart_takes_its_dependencies_from_the_freight() {
    let work = tempfile::tempdir().expect("a dir");
    // redis 0.1.0 and 0.2.0 in a classic repository behind basic auth, worker 1.0.0 and
    // 1.1.0 in an OCI registry, each packaged by the real helm.
    let charts = dray_tests::helm::ChartRepo::start_with(Some("helmuser:helmpass"));
    for version in ["0.1.0", "0.2.0"] {
        charts.publish(&created(work.path(), "redis", version));
    }
    let registry = dray_tests::registry::Registry::start();
    for version in ["1.0.0", "1.1.0"] {
        let chart = created(work.path(), "worker", version);
        run_helm(&["package", "worker", "-d", "packaged"], work.path());
        let _ = chart;
        let tgz = std::fs::read(work.path().join(format!("packaged/worker-{version}.tgz")))
            .expect("packaged");
        registry.push_chart("charts/worker", version, &tgz).await;
    }
    let oci = format!("oci://{}/charts", registry.address);

    // `web` depends on redis, locked at 0.1.0 by the real `helm dependency update`.
    let helm_home = work.path().join("helm-home");
    let env = [
        ("HELM_CONFIG_HOME", helm_home.join("config")),
        ("HELM_CACHE_HOME", helm_home.join("cache")),
        ("HELM_DATA_HOME", helm_home.join("data")),
    ];
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let helm = |args: &[&str], dir: &Path| {
        dray_tests::helm::try_run(args, dir, &env).unwrap_or_else(|e| panic!("helm {args:?}: {e}"))
    };
    helm(
        &[
            "repo",
            "add",
            "local",
            &charts.url,
            "--username",
            "helmuser",
            "--password",
            "helmpass",
        ],
        work.path(),
    );
    let web = work.path().join("web");
    std::fs::create_dir_all(web.join("templates")).expect("mkdir");
    std::fs::write(
        web.join("Chart.yaml"),
        format!(
            "apiVersion: v2\nname: web\nversion: 1.0.0\ndependencies:\n- name: redis\n  version: \">=0.1.0 <0.2.0\"\n  repository: {}\n",
            charts.url
        ),
    )
    .expect("write");
    std::fs::write(
        web.join("templates/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-web\ndata:\n  redis: {{ .Values.redis.fullnameOverride | default \"none\" | quote }}\n",
    )
    .expect("write");
    helm(&["dependency", "update", "web"], work.path());
    let helm_lock = std::fs::read_to_string(web.join("Chart.lock")).expect("helm wrote a lock");
    let helm_web = helm(
        &["template", "shop", "web", "--namespace", "shop"],
        work.path(),
    );

    // `shop` depends on redis (classic), worker (OCI) and common (a local chart).
    let shop_chart = format!(
        "apiVersion: v2\nname: shop\nversion: 1.0.0\ndependencies:\n# the cache\n- name: redis\n  version: 0.1.0 # set by Dray\n  repository: {}\n- name: worker\n  version: 1.0.0\n  repository: {oci}\n- name: common\n  version: \"~0.1\"\n  repository: file://../common\n",
        charts.url
    );
    let repos = Repos::new();
    repos.create(
        "gitops.git",
        &[
            (
                "charts/web/Chart.yaml",
                &std::fs::read_to_string(web.join("Chart.yaml")).expect("read"),
            ),
            ("charts/web/Chart.lock", &helm_lock),
            (
                "charts/web/templates/config.yaml",
                &std::fs::read_to_string(web.join("templates/config.yaml")).expect("read"),
            ),
            ("charts/shop/Chart.yaml", &shop_chart),
            ("charts/shop/values.yaml", "worker:\n  replicaCount: 2\n"),
            (
                "charts/common/Chart.yaml",
                "apiVersion: v2\nname: common\nversion: 0.1.3\n",
            ),
            (
                "charts/common/templates/cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: common\n",
            ),
        ],
    );
    let server = GitDaemon::start(&repos);
    let repo = format!("{}/gitops.git", server.url);
    let redis = format!("chartFrom('{}', 'redis').Version", charts.url);
    let worker = format!("chartFrom('{oci}/worker').Version");
    let steps = format!(
        r#"- uses: git-clone
  config:
    repoURL: "{repo}"
    checkout: [{{branch: main, path: ./src}}]
- uses: helm-template
  config: {{path: ./src/charts/web, outPath: ./src/rendered/web.yaml, releaseName: shop, buildDependencies: true}}
- uses: helm-update-chart
  as: update
  config:
    path: ./src/charts/shop
    charts:
    - {{repository: "{classic}", name: redis, version: "${{{{ {redis} }}}}"}}
    - {{repository: "{oci}", name: worker, version: "${{{{ {worker} }}}}"}}
- uses: helm-update-chart
  config:
    path: ./src/charts/web
    charts: [{{repository: "{classic}", name: redis, version: "${{{{ {redis} }}}}"}}]
- uses: helm-template
  config: {{path: ./src/charts/shop, outPath: ./src/rendered/shop.yaml, releaseName: shop}}
- uses: git-commit
  config: {{path: ./src, message: "${{{{ outputs.update.commitMessage }}}}"}}
- uses: git-push
  config: {{path: ./src}}"#,
        classic = charts.url
    );
    let secret = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: charts\n  namespace: shop\n  labels: {{kargo.akuity.io/cred-type: helm}}\nstringData:\n  repoURL: '{}'\n  username: helmuser\n  password: helmpass\n",
        charts.url
    );
    let daemon = Daemon::start().await;
    daemon
        .apply_ok(
            &(manifests::project("shop", &[&format!("chart: {{repoURL: \"{}\", name: redis}}", charts.url)])
                + &secret
                + &manifests::stage("shop", "prod", &steps)
                + &manifests::freight(
                    "shop",
                    "f1",
                    &format!(
                        "charts:\n- {{repoURL: \"{}\", name: redis, version: 0.2.0}}\n- {{repoURL: \"{oci}/worker\", version: 1.1.0}}",
                        charts.url
                    ),
                )),
        )
        .await;
    let promoted = daemon.promote("shop", "prod", "f1");
    assert_eq!(promoted.code, 0, "{promoted:?}");

    let co = checkout(&repos, "gitops.git", "main");
    let co = co.path().join("co");
    let subject = dray_tests::git::git(&co, &["log", "-1", "--format=%B"]);
    assert!(
        subject.starts_with("Updated chart dependencies for ./src/charts/shop")
            && subject.contains("- redis: 0.2.0")
            && subject.contains("- worker: 1.1.0")
            && subject.contains("- common: 0.1.3"),
        "{subject}"
    );
    // Chart.yaml: the versions set in place, the comments kept.
    let chart_yaml = std::fs::read_to_string(co.join("charts/shop/Chart.yaml")).expect("read");
    assert!(
        chart_yaml.contains("# the cache\n- name: redis\n  version: 0.2.0 # set by Dray\n")
            && chart_yaml.contains("- name: worker\n  version: 1.1.0\n"),
        "{chart_yaml}"
    );
    assert_eq!(
        names(&co.join("charts/shop/charts")),
        ["common-0.1.3.tgz", "redis-0.2.0.tgz", "worker-1.1.0.tgz"]
    );
    // web: built from helm's lock (redis 0.1.0), rendered as helm renders it, then updated:
    // the old archive removed.
    let ours = std::fs::read_to_string(co.join("rendered/web.yaml")).expect("rendered");
    assert_eq!(
        chart::read_printed(&ours, false).unwrap_or_else(|e| panic!("{e}")),
        chart::read_printed(&helm_web, false).unwrap_or_else(|e| panic!("{e}")),
        "helm:\n{helm_web}\ndray:\n{ours}"
    );
    assert_eq!(names(&co.join("charts/web/charts")), ["redis-0.2.0.tgz"]);
    // The real helm takes Dray's lock as its own: `helm dependency build` checks the digest.
    let lock = std::fs::read_to_string(co.join("charts/web/Chart.lock")).expect("a lock");
    assert!(lock.contains("version: 0.2.0"), "{lock}");
    std::fs::remove_dir_all(co.join("charts/web/charts")).expect("rm");
    helm(&["dependency", "build", "charts/web"], &co);
    assert_eq!(names(&co.join("charts/web/charts")), ["redis-0.2.0.tgz"]);
    // shop rendered with all three dependencies as helm renders the pushed chart.
    let ours = std::fs::read_to_string(co.join("rendered/shop.yaml")).expect("rendered");
    let theirs = helm(
        &["template", "shop", "charts/shop", "--namespace", "shop"],
        &co,
    );
    let (a, b) = (
        chart::read_printed(&theirs, false).unwrap_or_else(|e| panic!("{e}")),
        chart::read_printed(&ours, false).unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(
        a.iter().any(|(s, _)| s.starts_with("shop/charts/worker/"))
            && a.iter().any(|(s, _)| s.starts_with("shop/charts/common/")),
        "{theirs}"
    );
    assert_eq!(b, a, "helm:\n{theirs}\ndray:\n{ours}");
}

/// `dray plugin run builtin:steps --allow-helm` in `workdir`, with `user:password` for every
/// repository: (exit code, stdout and stderr).
fn plugin_run(kind: &str, config: &str, workdir: &Path) -> (i32, String) {
    let cache = tempfile::tempdir().expect("cache");
    let plugin = "builtin:steps".to_string();
    let out = std::process::Command::new(dray_tests::dray_bin())
        .args([
            "plugin",
            "run",
            plugin.as_str(),
            "--kind",
            kind,
            "--config",
            config,
        ])
        .arg("--workdir")
        .arg(workdir)
        .arg("--allow-helm")
        .env("DRAY_DATA_DIR", cache.path())
        .env("DRAY_REGISTRY_USERNAME", "helmuser")
        .env("DRAY_REGISTRY_PASSWORD", "helmpass")
        .output()
        .expect("dray runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A chart `app` in `workdir` depending on `dependency` (YAML flow mapping).
fn app_chart(workdir: &Path, dependency: &str) {
    std::fs::create_dir_all(workdir.join("app/charts")).expect("mkdir");
    std::fs::write(
        workdir.join("app/Chart.yaml"),
        format!("apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- {dependency}\n"),
    )
    .expect("write");
}

/// Chart repositories that lie, link elsewhere, or grow without bound are refused, the step
/// says what was wrong, and `charts/` keeps what it had; credentials go to the repository's
/// own host only.
#[test]
fn hostile_chart_repositories_are_refused() {
    let work = tempfile::tempdir().expect("a dir");
    let charts = dray_tests::helm::ChartRepo::start_with(Some("helmuser:helmpass"));
    charts.publish(&created(work.path(), "redis", "0.1.0"));
    let elsewhere = dray_tests::helm::ChartRepo::start();
    let index = std::fs::read_to_string(charts.dir().join("index.yaml")).expect("index");
    let update = r#"{"path": "app"}"#;

    // A digest that is not the archive's.
    let lying = index.replace("digest: ", "digest: 0000");
    charts.write_index(&lying);
    let dir = tempfile::tempdir().expect("workdir");
    app_chart(
        dir.path(),
        &format!(
            "{{name: redis, version: 0.1.0, repository: \"{}\"}}",
            charts.url
        ),
    );
    std::fs::write(dir.path().join("app/charts/keep.txt"), "kept").expect("write");
    let (code, out) = plugin_run("helm-update-chart", update, dir.path());
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("is not the archive") && out.contains("index.yaml lists for redis 0.1.0"),
        "{out}"
    );
    assert_eq!(names(&dir.path().join("app/charts")), ["keep.txt"]);
    assert!(!dir.path().join("app/Chart.lock").exists());

    // An archive URL that is not HTTP.
    charts.write_index(&index.replace("- redis-0.1.0.tgz", "- file:///etc/passwd"));
    let (code, out) = plugin_run("helm-update-chart", update, dir.path());
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("which is not HTTP"), "{out}");

    // An archive on another host: fetched without the repository's credential.
    std::fs::copy(
        charts.dir().join("redis-0.1.0.tgz"),
        elsewhere.dir().join("redis-0.1.0.tgz"),
    )
    .expect("copy");
    charts.write_index(&index.replace(
        "- redis-0.1.0.tgz",
        &format!("- {}/redis-0.1.0.tgz", elsewhere.url),
    ));
    let (code, out) = plugin_run("helm-update-chart", update, dir.path());
    assert_eq!(code, 0, "{out}");
    let asked = elsewhere.requests();
    assert_eq!(
        asked,
        ["/charts/redis-0.1.0.tgz -"],
        "no credential leaves for another host"
    );
    assert!(
        charts
            .requests()
            .iter()
            .any(|r| r.starts_with("/charts/index.yaml Basic ")),
        "{:?}",
        charts.requests()
    );
    assert_eq!(
        names(&dir.path().join("app/charts")),
        ["keep.txt", "redis-0.1.0.tgz"]
    );

    // Something that is not a chart, with the right digest.
    std::fs::write(charts.dir().join("redis-0.1.0.tgz"), b"not a chart").expect("write");
    let digest = {
        use sha2::Digest as _;
        format!("{:x}", sha2::Sha256::digest(b"not a chart"))
    };
    let listed: String = index
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("digest:") {
                format!("    digest: {digest}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    charts.write_index(&listed);
    let dir = tempfile::tempdir().expect("workdir");
    app_chart(
        dir.path(),
        &format!(
            "{{name: redis, version: 0.1.0, repository: \"{}\"}}",
            charts.url
        ),
    );
    let (code, out) = plugin_run("helm-update-chart", update, dir.path());
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("redis-0.1.0.tgz is not a chart"), "{out}");
    assert_eq!(names(&dir.path().join("app/charts")), Vec::<String>::new());

    // An index larger than any chart repository's.
    let huge = format!("apiVersion: v1\nentries: {{}}\n#{}\n", "x".repeat(33 << 20));
    charts.write_index(&huge);
    let (code, out) = plugin_run("helm-update-chart", update, dir.path());
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("larger than 32 MiB"), "{out}");

    // A repository name from Helm's own configuration, and a missing version.
    app_chart(
        dir.path(),
        "{name: redis, version: 0.1.0, repository: \"@stable\"}",
    );
    let (code, out) = plugin_run("helm-update-chart", update, dir.path());
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("write the repository's URL instead"), "{out}");
    charts.write_index(&index);
    app_chart(
        dir.path(),
        &format!(
            "{{name: redis, version: \"^9\", repository: \"{}\"}}",
            charts.url
        ),
    );
    let (code, out) = plugin_run("helm-update-chart", update, dir.path());
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("can't get a valid version for 1 subchart(s): \"redis\""),
        "{out}"
    );

    // A dependency the update names that Chart.yaml does not have.
    let (code, out) = plugin_run(
        "helm-update-chart",
        r#"{"path": "app", "charts": [{"repository": "https://elsewhere.example", "name": "redis", "version": "1.0.0"}]}"#,
        dir.path(),
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("no dependency in app/Chart.yaml matches"),
        "{out}"
    );
}

/// `helmCharts` with a `repo`: kustomize-build pulls the chart through the `helm` capability
/// and renders what `kubectl kustomize --enable-helm` renders after helm 3.6.2 pulled the same
/// chart (kustomize's `helm pull --repo` sends no credentials, so this repository has none).
#[test]
fn kustomize_inflates_a_chart_pulled_from_a_repository_as_kubectl_does() {
    let work = tempfile::tempdir().expect("a dir");
    let charts = dray_tests::helm::ChartRepo::start();
    charts.publish(&created(work.path(), "redis", "0.2.0"));
    let kustomization = format!(
        "namespace: cache\nhelmCharts:\n- name: redis\n  repo: {}\n  version: 0.2.0\n  releaseName: sessions\n  valuesInline: {{replicaCount: 2}}\n",
        charts.url
    );
    for side in ["ours", "theirs"] {
        std::fs::create_dir_all(work.path().join(side)).expect("mkdir");
        std::fs::write(
            work.path().join(side).join("kustomization.yaml"),
            &kustomization,
        )
        .expect("write");
    }
    let (code, out) = plugin_run(
        "kustomize-build",
        r#"{"path": "ours", "outPath": "ours.yaml"}"#,
        work.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        work.path()
            .join("ours/charts/redis-0.2.0/redis.tgz")
            .is_file(),
        "the pulled chart is kept in the chart home"
    );
    let theirs = dray_tests::kubectl_kustomize(&work.path().join("theirs"));
    let ours = std::fs::read_to_string(work.path().join("ours.yaml")).expect("rendered");
    assert_eq!(ours, theirs);
    assert!(
        ours.contains("name: sessions-redis") && ours.contains("replicas: 2"),
        "{ours}"
    );
}

/// A chart's `values.schema.json` is hostile input to the step: a `$ref` to a file of the
/// machine or to a URL is refused (nothing is read), a schema nested as deep as JSON allows is
/// checked on the step's own stack rather than crashing it, and a pattern that would make a
/// backtracking engine run for ages is matched in linear time.
#[test]
fn a_hostile_values_schema_is_refused_or_checked_inside_the_sandbox() {
    let work = tempfile::tempdir().expect("a dir");
    let chart = |schema: &str| {
        let dir = work.path().join("chart");
        std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
        std::fs::write(
            dir.join("Chart.yaml"),
            "apiVersion: v2\nname: hostile\nversion: 1.0.0\n",
        )
        .expect("write");
        std::fs::write(dir.join("values.yaml"), "name: x\n").expect("write");
        std::fs::write(
            dir.join("templates/cm.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Values.name | quote }}}\n",
        )
        .expect("write");
        std::fs::write(dir.join("values.schema.json"), schema).expect("write");
    };
    let config = r#"{"path": "./chart", "outPath": "./out.yaml"}"#;

    chart(r#"{"properties": {"name": {"$ref": "file:///etc/passwd"}}}"#);
    let (code, out) = plugin_run("helm-template", config, work.path());
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("file:///etc/passwd is outside the chart"),
        "{out}"
    );
    assert!(!out.contains("root:"), "{out}");

    // 120 `not`s (124 levels of JSON): the name must be an integer.
    let nested = format!(
        "{{\"properties\": {{\"name\": {}{{\"type\": \"integer\"}}{}}}}}",
        "{\"not\": {\"not\": ".repeat(60),
        "}}".repeat(60)
    );
    chart(&nested);
    let (code, out) = plugin_run("helm-template", config, work.path());
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("values don't meet the specifications") && out.contains("- name: "),
        "{out}"
    );

    chart(r#"{"properties": {"name": {"pattern": "^(a+)+$"}}}"#);
    std::fs::write(
        work.path().join("chart/values.yaml"),
        format!("name: {}!\n", "a".repeat(100_000)),
    )
    .expect("write");
    let (code, out) = plugin_run("helm-template", config, work.path());
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("does not match pattern"), "{out}");

    // And a chart whose values meet its schema renders.
    std::fs::write(work.path().join("chart/values.yaml"), "name: aaa\n").expect("write");
    let (code, out) = plugin_run("helm-template", config, work.path());
    assert_eq!(code, 0, "{out}");
    let rendered = std::fs::read_to_string(work.path().join("out.yaml")).expect("rendered");
    assert!(rendered.contains("name: \"aaa\""), "{rendered}");
}
