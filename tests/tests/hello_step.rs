//! `examples/hello-step`, built as its README says, inspected and run with the real `dray`
//! binary, as a plugin author would.

use std::path::PathBuf;
use std::process::Command;

use dray_tests::{Cli, dray_bin};

fn hello_step() -> String {
    PathBuf::from(env!("DRAY_FIXTURES_DIR"))
        .join("hello_step.wasm")
        .display()
        .to_string()
}

fn dray(args: &[&str], cache: &std::path::Path) -> Cli {
    let output = dray_tests::finishes(
        Command::new(dray_bin())
            .args(args)
            .env("XDG_CACHE_HOME", cache),
        std::time::Duration::from_secs(120),
    );
    Cli::from(output)
}

#[test]
fn inspect_shows_the_step_kind_its_schema_and_capabilities() {
    let cache = tempfile::tempdir().expect("cache");
    let out = dray(&["plugin", "inspect", &hello_step()], cache.path());
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("step kind     hello"), "{}", out.stdout);
    assert!(out.stdout.contains("capabilities  none"), "{}", out.stdout);
    assert!(
        out.stdout.contains("\"required\": ["),
        "the schema is shown:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("digest   sha256:"), "{}", out.stdout);
}

#[test]
fn run_writes_in_the_work_dir_and_prints_log_and_result() {
    let cache = tempfile::tempdir().expect("cache");
    let work = tempfile::tempdir().expect("workdir");
    let workdir = work.path().display().to_string();
    let out = dray(
        &[
            "plugin",
            "run",
            &hello_step(),
            "--kind",
            "hello",
            "--config",
            r#"{"name": "world", "path": "out/hi.txt"}"#,
            "--workdir",
            &workdir,
        ],
        cache.path(),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let result: serde_json::Value =
        serde_json::from_str(&out.stdout).expect("the result is JSON on stdout");
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["outputs"]["path"], "out/hi.txt");
    assert!(
        out.stderr.contains("wrote out/hi.txt for world"),
        "the log is on stderr:\n{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("printed lines land in the step's log too"),
        "{}",
        out.stderr
    );
    let written =
        std::fs::read_to_string(work.path().join("out/hi.txt")).expect("written in the work dir");
    assert_eq!(
        written,
        "Hello, world! Stage local of project local says hi.\n"
    );
}

#[test]
fn run_refuses_a_config_that_does_not_fit_the_schema() {
    let cache = tempfile::tempdir().expect("cache");
    let work = tempfile::tempdir().expect("workdir");
    let out = dray(
        &[
            "plugin",
            "run",
            &hello_step(),
            "--kind",
            "hello",
            "--config",
            r#"{"nmae": "typo"}"#,
            "--workdir",
            &work.path().display().to_string(),
        ],
        cache.path(),
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("invalid-config")
            && out.stderr.contains("\"name\" is a required property"),
        "{}",
        out.stderr
    );
    assert!(
        std::fs::read_dir(work.path())
            .expect("workdir")
            .next()
            .is_none(),
        "the step did not run"
    );
}

#[test]
fn a_missing_plugin_or_kind_says_what_exists() {
    let cache = tempfile::tempdir().expect("cache");
    let work = tempfile::tempdir().expect("workdir");
    let workdir = work.path().display().to_string();
    let out = dray(
        &[
            "plugin",
            "run",
            &hello_step(),
            "--kind",
            "bye",
            "--workdir",
            &workdir,
        ],
        cache.path(),
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("it offers hello"), "{}", out.stderr);
    let out = dray(&["plugin", "inspect", "builtin:nope"], cache.path());
    assert_eq!(out.code, 4);
    assert!(out.stderr.contains("builtin:steps"), "{}", out.stderr);
    let out = dray(&["plugin", "inspect", "/nonexistent.wasm"], cache.path());
    assert_eq!(out.code, 4);
}

#[test]
fn run_stops_an_endless_step_at_its_timeout() {
    let cache = tempfile::tempdir().expect("cache");
    let work = tempfile::tempdir().expect("workdir");
    let hostile = PathBuf::from(env!("DRAY_FIXTURES_DIR"))
        .join("hostile.wasm")
        .display()
        .to_string();
    let out = dray(
        &[
            "plugin",
            "run",
            &hostile,
            "--kind",
            "endless-loop",
            "--timeout",
            "1",
            "--workdir",
            &work.path().display().to_string(),
        ],
        cache.path(),
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("timed-out") && out.stderr.contains("did not finish within 1s"),
        "{}",
        out.stderr
    );
}

#[test]
fn run_grants_a_secret_from_a_file_and_nothing_else() {
    let cache = tempfile::tempdir().expect("cache");
    let work = tempfile::tempdir().expect("workdir");
    let plugin = PathBuf::from(env!("DRAY_FIXTURES_DIR"))
        .join("reads_secret.wasm")
        .display()
        .to_string();
    let secret = work.path().join("db.json");
    std::fs::write(&secret, r#"{"username": "app", "password": "hunter2"}"#).expect("secret file");
    let workdir = work.path().display().to_string();
    let granted = format!("db={}", secret.display());
    let out = dray(
        &[
            "plugin",
            "run",
            &plugin,
            "--kind",
            "show-keys",
            "--config",
            r#"{"name": "db"}"#,
            "--workdir",
            &workdir,
            "--secret",
            &granted,
        ],
        cache.path(),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("\"password\"") && !out.stdout.contains("hunter2"),
        "{}",
        out.stdout
    );
    let out = dray(
        &[
            "plugin",
            "run",
            &plugin,
            "--kind",
            "show-keys",
            "--config",
            r#"{"name": "db"}"#,
            "--workdir",
            &workdir,
        ],
        cache.path(),
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("credentials capability") && out.stderr.contains("--secret NAME=FILE"),
        "{}",
        out.stderr
    );
}
