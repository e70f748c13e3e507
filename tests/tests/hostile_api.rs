//! The daemon against hostile input from outside: a YAML alias bomb, secret values that a
//! failing step would echo, a plugin that cannot describe itself, and what it leaves readable
//! to other users of the machine. After each, the daemon is healthy and works normally.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use dray_tests::{Daemon, manifests};
use serde_json::Value;

/// Project `project` with Warehouse `app`, Stage `stage` promoting with `steps`, and Freight
/// `freight` made by hand.
fn one_stage(project: &str, stage: &str, steps: &str, freight: &str) -> String {
    format!(
        "{}{}{}",
        manifests::project(project, &["image: {repoURL: registry.example/web}"]),
        manifests::stage(project, stage, steps),
        manifests::freight(
            project,
            freight,
            "images: [{repoURL: registry.example/web, tag: 1.0.0, digest: \"sha256:0000000000000000000000000000000000000000000000000000000000000001\"}]",
        ),
    )
}

/// The daemon answers `/readyz`, takes a normal apply and runs a normal promotion.
async fn still_works(daemon: &Daemon) {
    let ready = dray::tls::client()
        .get(format!("{}/readyz", daemon.url))
        .send()
        .await
        .expect("readyz answers");
    assert!(ready.status().is_success());
    let manifests = one_stage(
        "fine",
        "dev",
        "- uses: compose-output\n  config: {fine: true}",
        "ok",
    );
    daemon.apply_ok(&manifests).await;
    let out = daemon.promote("fine", "dev", "ok");
    assert_eq!(
        out.code, 0,
        "a normal promotion succeeds afterwards: {out:?}"
    );
    assert!(out.stdout.contains("Succeeded"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_alias_bomb_is_refused_and_changes_nothing() {
    let daemon = Daemon::start().await;
    // 429 bytes that expand to a thousand million strings.
    let mut bomb = String::from(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: p}\nstringData:\n  a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        bomb.push_str(&format!(
            "  {}: &{} [{}]\n",
            pair[1],
            pair[1],
            vec![format!("*{}", pair[0]); 9].join(",")
        ));
    }
    let r = daemon.apply(&bomb).await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.expect("json");
    assert!(
        body.to_string().contains("expands to more than"),
        "{body:#}"
    );
    still_works(&daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_never_appear_in_step_errors_logs_or_events() {
    let daemon = Daemon::start().await;
    let token = "tok-hunter2-do-not-show";
    let manifests = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: api\n  namespace: shop\n  labels: {{kargo.akuity.io/cred-type: generic}}\nstringData: {{token: \"not a URL {token}\"}}\n",
        one_stage(
            "shop",
            "test",
            "- uses: http\n  config:\n    url: \"${{ secret('api').token }}\"\n    method: GET",
            "v1",
        ),
    );
    daemon.apply_ok(&manifests).await;
    let out = daemon.promote("shop", "test", "v1");
    assert_ne!(out.code, 0, "the step fails: {out:?}");
    assert!(!out.stdout.contains("hunter2"), "{}", out.stdout);
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);

    let promotions = daemon.get_json("/v1/projects/shop/promotions").await;
    let text = promotions.to_string();
    assert!(
        text.contains("Errored") || text.contains("Failed"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "the Promotion: {text}");
    let name = promotions["items"][0]["metadata"]["name"]
        .as_str()
        .expect("a promotion")
        .to_string();
    let logs = daemon.cli(&["logs", "promotion", &name, "-p", "shop"]);
    assert!(
        logs.stdout.contains("***"),
        "the log says where the value was: {logs:?}"
    );
    assert!(!logs.stdout.contains("hunter2"), "the log: {}", logs.stdout);
    let events = daemon.cli(&["get", "events", "-p", "shop", "-o", "json"]);
    assert_eq!(events.code, 0, "{events:?}");
    assert!(
        !events.stdout.contains("hunter2"),
        "events: {}",
        events.stdout
    );
    still_works(&daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_cannot_describe_itself_is_skipped_and_the_rest_starts() {
    let fixture = Path::new(env!("DRAY_FIXTURES_DIR")).join("bad_describe.wasm");
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        plugins: vec![dray::service::PluginEntry {
            file: fixture,
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .expect("the daemon starts without the broken plugin");
    still_works(&daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_and_database_are_private_whatever_the_umask() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // An older daemon's database, readable by everyone.
    {
        let mut daemon = Daemon::start_in(&data).await.expect("starts");
        daemon.shutdown().await;
    }
    let db = data.join("dray.redb");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let mut daemon = Daemon::start_in(&data).await.expect("starts again");
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data dir");
    assert_eq!(mode(&db), 0o600, "the database, which holds Secrets");
    assert_eq!(mode(&dray::service::token_path(&data)), 0o600, "the token");
    for sub in ["cache", "cache/plugins"] {
        let dir = data.join(sub);
        if dir.exists() {
            assert_eq!(mode(&dir) & 0o077, 0, "{sub} is not open to others");
        }
    }
    still_works(&daemon).await;
    daemon.shutdown().await;
}

/// A tmpfs of `size` mounted at `dir` for one test, unmounted when dropped: a disk that fills.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("mkdir");
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill a disk, which needs root (tests/run.sh runs as root in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_survives_its_disk_filling_and_resumes_when_there_is_room() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    // The store has it all: the test harness points the data dir's compile cache at the one
    // test daemons share, outside.
    let disk = SmallDisk::mount(&data, "64m");
    let mut daemon = Daemon::start_in(&data).await.expect("starts");
    daemon
        .apply_ok(&manifests::project(
            "shop",
            &["image: {repoURL: registry.example/web}"],
        ))
        .await;

    // Something else fills the disk.
    let filler = data.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).expect("create");
        let chunk = vec![1u8; 1 << 20];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }
    // Applies that need the file to grow fail with 503 and a message that says why; the
    // daemon reports itself unready. Each apply carries ~1 MiB, so the file must grow.
    let big = |n: usize| {
        let mut m = String::new();
        for i in 0..200 {
            m.push_str(&format!(
                "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata: {{name: w{n}-{i}, namespace: shop}}\nspec:\n  subscriptions:\n  - image: {{repoURL: registry.example/{}}}\n",
                "x".repeat(4000)
            ));
        }
        m
    };
    let mut refused = None;
    for n in 0..20 {
        let r = daemon.apply(&big(n)).await;
        if !r.status().is_success() {
            refused = Some((r.status(), r.text().await.unwrap_or_default()));
            break;
        }
    }
    let (status, body) = refused.expect("an apply is refused once the disk is full");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("disk full"), "{body}");
    let ready = dray::tls::client()
        .get(format!("{}/readyz", daemon.url))
        .send()
        .await
        .expect("readyz answers");
    assert_eq!(ready.status(), 503, "unready while the disk is full");

    // Room again: the store reopens by itself, and everything committed before is there.
    std::fs::remove_file(&filler).expect("rm");
    let mut ready = false;
    for _ in 0..100 {
        let r = dray::tls::client()
            .get(format!("{}/readyz", daemon.url))
            .send()
            .await
            .expect("readyz answers");
        if r.status().is_success() {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "ready again once there is room");
    let stages = daemon.get_json("/v1/projects/shop/warehouses/app").await;
    assert_eq!(stages["metadata"]["name"], "app", "{stages:#}");
    daemon.apply_ok(&big(99)).await;
    still_works(&daemon).await;
    daemon.shutdown().await;
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_that_fills_its_work_dir_past_the_quota_fails_and_says_so() {
    use dray_tests::git::{GitDaemon, Repos};
    let repos = Repos::new();
    // 3 MiB that compresses to almost nothing on the wire: only the checkout is large.
    let big = "x".repeat(3 << 20);
    repos.create("big.git", &[("big.txt", big.as_str())]);
    let server = GitDaemon::start(&repos);
    let daemon = Daemon::start_with(dray::service::StepPolicy {
        work_dir_max_mib: Some(1),
        ..Default::default()
    })
    .await
    .expect("starts");
    let steps = format!(
        "- uses: git-clone\n  config:\n    repoURL: {}/big.git\n    checkout: [{{branch: main, path: ./src}}]",
        server.url
    );
    let manifests = one_stage("shop", "test", &steps, "v1");
    daemon.apply_ok(&manifests).await;
    let out = daemon.promote("shop", "test", "v1");
    assert_ne!(out.code, 0, "{out:?}");
    let promotions = daemon.get_json("/v1/projects/shop/promotions").await;
    let text = promotions.to_string();
    assert!(
        text.contains("past its quota of 1 MiB") && text.contains("work-dir-max-mib"),
        "{text}"
    );
    still_works(&daemon).await;
}
