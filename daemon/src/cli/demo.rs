//! `dray demo`: the whole pipeline on this machine, with nothing but the binary.
//!
//! Under a temporary directory it makes a source repository (`app.git`) and a GitOps repository
//! (`gitops.git`, a kustomize base and one overlay per Stage), serves a tiny health endpoint,
//! starts a daemon in this process, and applies a pipeline: `dev` → `staging` → `prod`, where
//! dev and staging promote themselves, both are verified by a `web` metric against the health
//! endpoint, staging wants Freight that soaked 5 s in dev, and prod waits for a person. Then it
//! narrates what the daemon does, as the API shows it: the first commit flows to the gate
//! before prod; a second commit (made by the demo, announced as a webhook would) follows it.
//! The daemon keeps running until Ctrl-C, so the printed commands can be tried; `--once` stops
//! when the second Freight waits for prod (what the tests use).

use crate::resource::status::{AnalysisPhase, AnalysisRunStatus, PromotionPhase, PromotionStatus};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::client::{CliError, Client, exit};
use crate::service::{self, Config, StepPolicy};

/// How long `--once` may take before it gives up.
const ONCE_LIMIT: Duration = Duration::from_secs(300);

pub struct Options {
    pub dir: Option<PathBuf>,
    pub listen: String,
    pub once: bool,
}

fn fail(what: &str) -> impl Fn(String) -> CliError + '_ {
    move |e| CliError::new(exit::FAILED, format!("demo: {what}: {e}"))
}

/// Writes `files` on top of `base` as a tree (paths with `/` become subtrees).
fn write_tree(
    repo: &git2::Repository,
    base: Option<&git2::Tree>,
    files: &[(&str, &str)],
) -> Result<git2::Oid, git2::Error> {
    let mut builder = repo.treebuilder(base)?;
    let mut dirs: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (path, content) in files {
        match path.split_once('/') {
            None => {
                let blob = repo.blob(content.as_bytes())?;
                builder.insert(path, blob, 0o100644)?;
            }
            Some((dir, rest)) => dirs.entry(dir).or_default().push((rest, content)),
        }
    }
    for (dir, entries) in dirs {
        let sub = base
            .and_then(|t| t.get_name(dir))
            .and_then(|e| e.to_object(repo).ok())
            .and_then(|o| o.into_tree().ok());
        let oid = write_tree(repo, sub.as_ref(), &entries)?;
        builder.insert(dir, oid, 0o040000)?;
    }
    builder.write()
}

/// Commits `files` to `main` of the bare repository at `path` (made if missing).
fn commit(path: &Path, files: &[(&str, &str)], message: &str) -> Result<String, git2::Error> {
    let repo = match git2::Repository::open_bare(path) {
        Ok(r) => r,
        Err(_) => git2::Repository::init_opts(
            path,
            git2::RepositoryInitOptions::new()
                .bare(true)
                .initial_head("main"),
        )?,
    };
    let parent = repo
        .find_reference("refs/heads/main")
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    let base = parent.as_ref().map(git2::Commit::tree).transpose()?;
    let tree = repo.find_tree(write_tree(&repo, base.as_ref(), files)?)?;
    let who = git2::Signature::now("Dray demo", "demo@dray.invalid")?;
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let oid = repo.commit(
        Some("refs/heads/main"),
        &who,
        &who,
        message,
        &tree,
        &parents,
    )?;
    Ok(oid.to_string())
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 1
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
    spec:
      containers:
      - name: app
        image: app:latest
";

fn overlay(stage: &str, replicas: u32) -> String {
    format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {stage}\n\
         resources:\n- ../../base\ncommonAnnotations:\n  app-revision: none\nreplicas:\n- name: app\n  count: {replicas}\n"
    )
}

/// Answers `GET /health` with `{"healthy": true}`; returns its address.
fn serve_health() -> std::io::Result<String> {
    let listener = StdListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?.to_string();
    std::thread::Builder::new()
        .name("demo-health".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let mut reader = BufReader::new(clone);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let body = r#"{"healthy": true}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok(address)
}

fn manifests(app: &str, gitops: &str, health: &str) -> String {
    let stage = |name: &str, sources: &str, verify: bool| {
        let verification = if verify {
            "  verification:\n    analysisTemplates: [{name: smoke-test}]\n    args: [{name: stage, value: \"${{ ctx.stage }}\"}]\n"
        } else {
            ""
        };
        format!(
            "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n\
             \x20 requestedFreight:\n  - origin: {{kind: Warehouse, name: app}}\n    sources: {sources}\n\
             \x20 promotionTemplate:\n    spec:\n      steps:\n      - task: {{name: render-and-push}}\n        vars: [{{name: stage, value: {name}}}]\n{verification}"
        )
    };
    format!(
        r#"apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {{name: demo}}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata: {{name: demo, namespace: demo}}
spec:
  promotionPolicies:
  - stageSelector: {{name: "regex:^(dev|staging)$"}}
    autoPromotionEnabled: true
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {{name: app, namespace: demo}}
spec:
  interval: 1m
  subscriptions:
  - git: {{repoURL: "{app}", branch: main}}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {{name: smoke-test, namespace: demo}}
spec:
  args: [{{name: stage}}]
  metrics:
  - name: healthy
    count: 2
    interval: 1s
    successCondition: result == true
    provider:
      web:
        url: "http://{health}/health?stage={{{{args.stage}}}}"
        jsonPath: "{{$.healthy}}"
---
apiVersion: kargo.akuity.io/v1alpha1
kind: PromotionTask
metadata: {{name: render-and-push, namespace: demo}}
spec:
  vars: [{{name: stage}}]
  steps:
  - uses: git-clone
    config:
      repoURL: "{gitops}"
      checkout:
      - {{branch: main, path: ./src}}
      - {{branch: "stage/${{{{ vars.stage }}}}", create: true, path: ./out}}
  - uses: git-clear
    config: {{path: ./out}}
  - uses: yaml-update
    as: set-revision
    config:
      path: "./src/stages/${{{{ vars.stage }}}}/kustomization.yaml"
      updates:
      - key: commonAnnotations.app-revision
        value: '${{{{ commitFrom("{app}").ID }}}}'
  - uses: kustomize-build
    config: {{path: "./src/stages/${{{{ vars.stage }}}}", outPath: ./out/manifests.yaml}}
  - uses: git-commit
    as: commit
    config:
      path: ./out
      message: '${{{{ vars.stage }}}}: app at ${{{{ commitFrom("{app}").ID }}}}'
  - uses: git-push
    as: push
    config: {{path: ./out, targetBranch: "stage/${{{{ vars.stage }}}}"}}
"#
    ) + &stage("dev", "{direct: true}", true)
        + &stage("staging", "{stages: [dev], requiredSoakTime: 5s}", true)
        + &stage("prod", "{stages: [staging]}", false)
}

/// What the narrator has said, so each thing is said once.
struct Narrator {
    said: HashSet<String>,
    started: Instant,
}

impl Narrator {
    fn say(&mut self, key: String, line: String) {
        if self.said.insert(key) {
            println!("[{:>5.1}s] {line}", self.started.elapsed().as_secs_f64());
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(7)]
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

/// Looks at the project once and tells what changed; returns the aliases waiting for prod.
async fn look(client: &Client, n: &mut Narrator) -> Result<Vec<String>, CliError> {
    let get = |path: &'static str| client.send(Method::GET, path, None);
    let freight = items(&get("/v1/projects/demo/freight").await?);
    let alias_of = |name: &str| -> String {
        freight
            .iter()
            .find(|f| f["metadata"]["name"] == name)
            .and_then(|f| f["alias"].as_str())
            .unwrap_or(short(name))
            .to_string()
    };
    let mut sorted = freight.clone();
    sorted.sort_by_key(|f| f["discoveredAt"].as_str().unwrap_or_default().to_string());
    for f in &sorted {
        let commit = &f["commits"][0];
        n.say(
            format!("freight/{}", f["metadata"]["name"]),
            format!(
                "+ new Freight {}: app.git commit {} \"{}\"",
                f["alias"].as_str().unwrap_or_default(),
                short(commit["id"].as_str().unwrap_or_default()),
                commit["message"].as_str().unwrap_or_default()
            ),
        );
    }
    for p in items(&get("/v1/projects/demo/promotions").await?) {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        let stage = p["spec"]["stage"].as_str().unwrap_or_default();
        let alias = alias_of(p["spec"]["freight"].as_str().unwrap_or_default());
        let actor = p["metadata"]["annotations"]["kargo.akuity.io/create-actor"]
            .as_str()
            .unwrap_or_default();
        let by = if actor == crate::engine::decisions::auto::ACTOR {
            "auto-promotion"
        } else {
            "by hand"
        };
        n.say(
            format!("promotion/{name}"),
            format!("→ promoting {alias} to {stage} ({by})"),
        );
        let status: PromotionStatus = super::promote::status_of(&p, "Promotion")?;
        match status.phase() {
            PromotionPhase::Succeeded => {
                // The task's steps are aliased `<task>::<step>`.
                let pushed = status
                    .state
                    .iter()
                    .find(|(alias, _)| alias.ends_with("::push"))
                    .and_then(|(_, out)| out["commit"].as_str())
                    .unwrap_or_default();
                n.say(
                    format!("promotion/{name}/end"),
                    format!(
                        "✓ {alias} is in {stage}: rendered and pushed to gitops.git stage/{stage} ({})",
                        short(pushed)
                    ),
                );
            }
            PromotionPhase::Pending | PromotionPhase::Running => {}
            phase => n.say(
                format!("promotion/{name}/end"),
                format!(
                    "✗ promotion of {alias} to {stage} {}: {}",
                    phase.as_str().to_lowercase(),
                    status.message.as_deref().unwrap_or_default()
                ),
            ),
        }
    }
    for r in items(&get("/v1/projects/demo/analysisruns").await?) {
        let name = r["metadata"]["name"].as_str().unwrap_or_default();
        let stage = r["metadata"]["labels"]["kargo.akuity.io/stage"]
            .as_str()
            .unwrap_or_default();
        let alias = alias_of(r["spec"]["freight"].as_str().unwrap_or_default());
        n.say(
            format!("run/{name}"),
            format!("… verifying {alias} in {stage}: smoke-test against the health endpoint"),
        );
        let status: AnalysisRunStatus = super::promote::status_of(&r, "AnalysisRun")?;
        match status.phase() {
            AnalysisPhase::Successful => {
                let count = status.metric_results.first().map_or(0, |m| m.count);
                let soak = if stage == "dev" {
                    "; staging takes it once it has soaked 5s in dev"
                } else {
                    ""
                };
                n.say(
                    format!("run/{name}/end"),
                    format!("✓ {alias} verified in {stage} ({count} measurements){soak}"),
                );
            }
            AnalysisPhase::Pending | AnalysisPhase::Running => {}
            phase => n.say(
                format!("run/{name}/end"),
                format!(
                    "✗ verification in {stage} {}: {}",
                    phase.as_str().to_lowercase(),
                    status.message.as_deref().unwrap_or_default()
                ),
            ),
        }
    }
    let prod = client
        .send(Method::GET, "/v1/projects/demo/stages/prod", None)
        .await?;
    let in_prod = serde_json::from_value::<crate::resource::Object>(prod)
        .map_err(|e| e.to_string())
        .and_then(|o| {
            o.status_of::<crate::resource::status::StageStatus>()
                .map_err(|e| e.to_string())
        })
        .map_err(fail("reading Stage prod"))?
        .current_names();
    let mut waiting = Vec::new();
    for f in items(&get("/v1/projects/demo/stages/prod/freight").await?) {
        let name = f["metadata"]["name"].as_str().unwrap_or_default();
        if in_prod.iter().any(|p| p == name) {
            continue;
        }
        let alias = f["alias"].as_str().unwrap_or_default().to_string();
        n.say(
            format!("ready/{name}"),
            format!("⏸ {alias} is verified in staging; prod waits for a person to promote it"),
        );
        waiting.push(alias);
    }
    Ok(waiting)
}

/// Narrates until `alias_wanted` (or any Freight, when `None`) waits for prod.
async fn until_ready(
    client: &Client,
    n: &mut Narrator,
    wanted: Option<&str>,
    deadline: Option<Instant>,
) -> Result<String, CliError> {
    loop {
        let waiting = look(client, n).await?;
        let found = waiting
            .iter()
            .find(|a| wanted.is_none_or(|w| w == a.as_str()));
        if let Some(alias) = found {
            return Ok(alias.clone());
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Err(CliError::new(
                exit::FAILED,
                "demo: the pipeline did not reach prod's gate in time (see the lines above)",
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The newest Freight's alias (after a refresh).
async fn newest_alias(
    client: &Client,
    commit: &str,
    deadline: Instant,
) -> Result<String, CliError> {
    loop {
        let freight = items(
            &client
                .send(Method::GET, "/v1/projects/demo/freight", None)
                .await?,
        );
        if let Some(f) = freight.iter().find(|f| f["commits"][0]["id"] == commit) {
            return Ok(f["alias"].as_str().unwrap_or_default().to_string());
        }
        if Instant::now() > deadline {
            return Err(CliError::new(
                exit::FAILED,
                "demo: the new commit was not discovered in time",
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the demo.
pub async fn run(options: Options) -> Result<(), CliError> {
    let started = Instant::now();
    let (dir, temp) = match options.dir {
        Some(d) => {
            std::fs::create_dir_all(&d).map_err(|e| fail("making the directory")(e.to_string()))?;
            (d, None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("dray-demo-")
                .tempdir()
                .map_err(|e| fail("making a temporary directory")(e.to_string()))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let dir = dir
        .canonicalize()
        .map_err(|e| fail("reading the directory")(e.to_string()))?;
    println!(
        "Dray demo: a pipeline dev → staging → prod, all under {}",
        dir.display()
    );

    // The repositories.
    let app = dir.join("app.git");
    let gitops = dir.join("gitops.git");
    let app_url = format!("file://{}", app.display());
    let gitops_url = format!("file://{}", gitops.display());
    let git = |e: git2::Error| fail("making the Git repositories")(e.message().to_string());
    if !app.exists() {
        commit(&app, &[("VERSION", "1.0.0\n")], "app 1.0.0").map_err(git)?;
        let (dev, staging, prod) = (overlay("dev", 1), overlay("staging", 2), overlay("prod", 3));
        commit(
            &gitops,
            &[
                (
                    "base/kustomization.yaml",
                    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- deployment.yaml\n",
                ),
                ("base/deployment.yaml", DEPLOYMENT),
                ("stages/dev/kustomization.yaml", &dev),
                ("stages/staging/kustomization.yaml", &staging),
                ("stages/prod/kustomization.yaml", &prod),
            ],
            "base and one overlay per stage",
        )
        .map_err(git)?;
    }
    println!("  app.git     the application's source (the Warehouse watches its main branch)");
    println!(
        "  gitops.git  a kustomize base and an overlay per Stage; each Stage's render lands on branch stage/<name>"
    );
    let health = serve_health().map_err(|e| fail("serving the health endpoint")(e.to_string()))?;
    println!("  http://{health}/health  the endpoint the smoke-test verification asks");

    // The daemon, in this process.
    let data_dir = dir.join("data");
    std::fs::create_dir_all(data_dir.join("cache")).ok();
    // Compiled plugins are kept between demos: the first starts on Winch's code while Cranelift
    // optimizes in the background, later ones start on Cranelift's.
    if let Some(cache) = dirs::cache_dir().map(|c| c.join("dray").join("demo-plugins")) {
        let link = data_dir.join("cache").join("plugins");
        if std::fs::create_dir_all(&cache).is_ok() && !link.exists() {
            let _ = std::os::unix::fs::symlink(&cache, &link);
        }
    }
    let listener = match tokio::net::TcpListener::bind(&options.listen).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| fail("listening")(e.to_string()))?,
    };
    let address = listener
        .local_addr()
        .map_err(|e| fail("listening")(e.to_string()))?;
    let config = Config {
        data_dir: data_dir.clone(),
        listen: address,
        apply: Vec::new(),
        steps: StepPolicy {
            allow_hosts: vec![health.clone()],
            git_local_roots: vec![dir.clone()],
            ..StepPolicy::default()
        },
        ..Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    println!("Starting the daemon on http://{address}…");
    let daemon = tokio::spawn(service::run(config, listener, async move {
        let _ = stopped.await;
    }));
    let server = format!("http://{address}");
    let client = loop {
        if daemon.is_finished() {
            let why = match daemon.await {
                Ok(Err(e)) => format!("{e:#}"),
                other => format!("{other:?}"),
            };
            return Err(CliError::new(
                exit::FAILED,
                format!("demo: the daemon stopped: {why}"),
            ));
        }
        // The token file appears once the daemon has started.
        // Its own token, never a sign-in saved for the same address.
        if let Ok(token) = std::fs::read_to_string(service::token_path(&data_dir))
            && let Ok(c) = Client::new(&server, Some(token.trim().to_string()), None)
            && c.send(Method::GET, "/v1/version", None).await.is_ok()
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut n = Narrator {
        said: HashSet::new(),
        started: Instant::now(),
    };
    println!(
        "Ready after {:.1}s. Applying the pipeline:",
        started.elapsed().as_secs_f64()
    );
    client
        .send(
            Method::POST,
            "/v1/apply",
            Some(json!({"sources": [{"name": "demo pipeline", "content": manifests(&app_url, &gitops_url, &health)}]})),
        )
        .await?;
    println!("  Warehouse app       watches app.git main; each new commit becomes Freight");
    println!(
        "  Stage dev           takes Freight from the Warehouse, promotes itself, verifies with smoke-test"
    );
    println!(
        "  Stage staging       takes Freight verified and soaked 5s in dev, promotes itself, verifies"
    );
    println!("  Stage prod          takes Freight verified in staging, when a person promotes it");
    println!();

    let deadline = options.once.then(|| Instant::now() + ONCE_LIMIT);
    let first = until_ready(&client, &mut n, None, deadline).await?;

    // A developer pushes; the demo tells the daemon at once, as a webhook would.
    let id = commit(
        &app,
        &[("VERSION", "1.1.0\n")],
        "app 1.1.0: faster checkout",
    )
    .map_err(git)?;
    n.say(
        "push".into(),
        format!("a developer pushes app 1.1.0 to app.git ({}); a webhook asks the Warehouse to look now", short(&id)),
    );
    client
        .send(
            Method::POST,
            "/v1/projects/demo/warehouses/app/refresh",
            None,
        )
        .await?;
    let second = newest_alias(&client, &id, Instant::now() + Duration::from_secs(60)).await?;
    until_ready(&client, &mut n, Some(&second), deadline).await?;

    let cli = if server == "http://127.0.0.1:7070" {
        format!("dray --data-dir {}", data_dir.display())
    } else {
        format!("dray --server {server} --data-dir {}", data_dir.display())
    };
    println!();
    println!("Both Freight wait at prod's gate ({first} and {second}). Try, in another terminal:");
    println!("  {cli} get stages -p demo");
    println!("  {cli} get freight -p demo --stage prod");
    println!("  {cli} explain freight {first} --stage prod -p demo");
    println!("  {cli} promote -p demo --stage prod --freight {second} --wait");
    println!("  {cli} logs verification staging -p demo");
    println!("  git -C {} log --oneline stage/dev", gitops.display());
    println!();
    println!(
        "Or open {server}/#/projects/demo in a browser and sign in with the token in {}.",
        service::token_path(&data_dir).display()
    );

    if !options.once {
        println!();
        println!(
            "The daemon keeps running (Ctrl-C stops it{}).",
            if temp.is_some() {
                " and removes the directory"
            } else {
                ""
            }
        );
        let mut stop_signal = Box::pin(service::shutdown_signal());
        loop {
            tokio::select! {
                _ = &mut stop_signal => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    // Keep telling what happens, e.g. a promotion to prod made by hand.
                    if let Err(e) = look(&client, &mut n).await {
                        eprintln!("demo: {}", e.message);
                    }
                }
            }
        }
    }
    let _ = stop.send(());
    match daemon.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("demo: the daemon stopped with: {e:#}"),
        Err(e) => eprintln!("demo: the daemon task failed: {e}"),
    }
    drop(temp);
    Ok(())
}
