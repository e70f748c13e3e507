//! Backups of a running daemon and their restore into a stopped one, through the CLI: what was
//! changed after the backup is undone, what was in it comes back (resources, Promotions,
//! tokens), and a restore is refused while the daemon runs or when the file is not a backup.

use dray_tests::{Cli, Daemon, manifests};

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

fn pipeline() -> String {
    manifests::project("shop", &["image: {repoURL: registry.example/web}"])
        + &manifests::stage(
            "shop",
            "dev",
            "- uses: compose-output\n  config: {done: true}",
        )
        + &manifests::freight(
            "shop",
            "first",
            &format!(
                "images: [{{repoURL: registry.example/web, tag: 1.0.0, digest: \"{DIGEST}\"}}]"
            ),
        )
}

/// `dray ARGS` against the (stopped or running) daemon of `data_dir`.
fn offline(data_dir: &std::path::Path, args: &[&str]) -> Cli {
    let output = std::process::Command::new(dray_tests::dray_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DRAY_TOKEN")
        .output()
        .expect("the dray binary runs");
    Cli::from(output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_running_daemon_restores_into_a_stopped_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let mut daemon = Daemon::start_in(&data_dir).await.expect("starts");
    daemon.apply_ok(&pipeline()).await;
    let out = daemon.promote("shop", "dev", "first");
    assert_eq!(out.code, 0, "{out:?}");
    let out = daemon.cli(&["token", "create", "ci", "--role", "promoter", "-p", "shop"]);
    assert_eq!(out.code, 0, "{out:?}");
    let ci = out.stdout.trim().to_string();

    let file = dir.path().join("dray-backup.redb");
    let out = daemon.cli(&["backup", &file.display().to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file)
        .expect("the backup")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "a backup holds Secrets: private");
    // A second backup never overwrites a file.
    let again = daemon.cli(&["backup", &file.display().to_string()]);
    assert_eq!(again.code, 2, "{again:?}");

    // After the backup: the project is deleted, the token revoked.
    assert_eq!(daemon.cli(&["delete", "project", "shop"]).code, 0);
    assert_eq!(daemon.cli(&["token", "revoke", "ci"]).code, 0);

    // The running daemon's file is in use: restore refuses and changes nothing.
    let out = offline(&data_dir, &["restore", &file.display().to_string()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("stop it first"), "{out:?}");

    daemon.shutdown().await;
    // Not a backup: refused, nothing changed.
    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, b"not a database").expect("write");
    let out = offline(&data_dir, &["restore", &junk.display().to_string()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("nothing was changed"), "{out:?}");

    let out = offline(&data_dir, &["restore", &file.display().to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("1 project(s)"), "{out:?}");
    let kept = std::fs::read_dir(&data_dir)
        .expect("the data dir")
        .flatten()
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("dray.redb.before-restore-")
        });
    assert!(kept, "the replaced data file is kept");

    let daemon = Daemon::start_in(&data_dir)
        .await
        .expect("starts on the restored file");
    let out = daemon.cli(&["get", "promotions", "-p", "shop", "-o", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("\"Succeeded\""),
        "the Promotion is back: {}",
        out.stdout
    );
    let out = daemon.cli(&["get", "freight", "first", "-p", "shop"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = daemon
        .command(&["whoami"])
        .env("DRAY_TOKEN", &ci)
        .output()
        .expect("runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "token:ci (promoter in shop)",
        "the token made before the backup works again"
    );
}

/// A data file written by Dray at commit 5c33e32 (schema version 1, before API tokens had a
/// table): a project with a Stage, Freight, a Secret and a Promotion that succeeded. Every later
/// Dray must open it, migrating what it must, and keep all of it.
const PREVIOUS_STORE: &str = "store-schema-1-5c33e32.redb";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_file_of_the_previous_version_opens_and_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    std::fs::copy(
        dray_tests::repo_root()
            .join("tests")
            .join("data")
            .join(PREVIOUS_STORE),
        data_dir.join("dray.redb"),
    )
    .expect("copy the old data file");
    let daemon = Daemon::start_in(&data_dir)
        .await
        .expect("starts on the old file");
    let out = daemon.cli(&["get", "promotions", "-p", "shop", "-o", "json"]);
    assert!(out.stdout.contains("\"Succeeded\""), "{out:?}");
    let out = daemon.cli(&["get", "secrets", "-p", "shop"]);
    assert!(out.stdout.contains("registry"), "{out:?}");
    // What the new version adds works on it: a token, and a second promotion.
    let out = daemon.cli(&["token", "create", "ci", "--role", "promoter", "-p", "shop"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = daemon.promote("shop", "dev", "first");
    assert_eq!(out.code, 0, "{out:?}");
    let out = daemon.cli(&["get", "all", "-p", "shop", "-o", "yaml"]);
    assert!(
        out.stdout.contains("kind: Stage")
            && out.stdout.contains("Secrets left out")
            && !out.stdout.contains("kind: Freight"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_project_applies_again_as_it_was() {
    let daemon = Daemon::start().await;
    daemon.apply_ok(&pipeline()).await;
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: shop, labels: {kargo.akuity.io/cred-type: generic}}\nstringData: {token: hunter2}\n";
    daemon.apply_ok(secret).await;
    let out = daemon.cli(&["get", "all", "-p", "shop", "-o", "yaml"]);
    assert_eq!(out.code, 0, "{out:?}");
    let exported = out.stdout;
    for absent in [
        "status:",
        "resourceVersion",
        "uid:",
        "kind: Freight",
        "hunter2",
        "REDACTED",
    ] {
        assert!(!exported.contains(absent), "{absent} in:\n{exported}");
    }
    assert!(
        exported.contains("Secrets left out") && exported.contains("creds"),
        "{exported}"
    );
    // Applied again: nothing changes (every object is unchanged).
    let file = tempfile::NamedTempFile::new().expect("a file");
    std::fs::write(file.path(), &exported).expect("write");
    let out = daemon.cli(&["apply", "-f", &file.path().display().to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.lines().all(|l| l.ends_with("unchanged")),
        "re-applying the export changes nothing:\n{}",
        out.stdout
    );
    // Its values only for a system admin who asks.
    let out = daemon.cli(&[
        "get",
        "all",
        "-p",
        "shop",
        "-o",
        "yaml",
        "--include-secrets",
    ]);
    assert!(out.stdout.contains("kind: Secret"), "{out:?}");
    let viewer = daemon.cli(&["token", "create", "v", "--role", "viewer", "-p", "shop"]);
    let out = daemon
        .command(&["get", "all", "-p", "shop", "--include-secrets"])
        .env("DRAY_TOKEN", viewer.stdout.trim())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("system-admin"));
}
