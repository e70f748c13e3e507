//! The step runtime against real components: the built-in `control` plugin, and hostile guests
//! (tests/fixtures) that must end as failed steps with a message, leaving the runtime usable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dray::runtime::{
    Capability, Compilers, FailureKind, Grants, Limits, LoadError, Loaded, Plugin, Runtime,
    StepContext, StepReport, Tier,
};
use dray_tests::fixture;
use serde_json::{Value, json};

fn context() -> StepContext {
    dray_tests::step_context()
}

/// A work dir inside a parent that also holds a secret the step must not reach.
struct Sandbox {
    _root: tempfile::TempDir,
    workdir: PathBuf,
    secret: PathBuf,
}

fn sandbox() -> Sandbox {
    let root = tempfile::tempdir().expect("tempdir");
    let workdir = root.path().join("work");
    std::fs::create_dir(&workdir).expect("workdir");
    let secret = root.path().join("secret.txt");
    std::fs::write(&secret, "the daemon's secret").expect("secret");
    Sandbox {
        workdir,
        secret,
        _root: root,
    }
}

async fn hostile(runtime: &Runtime) -> Plugin {
    runtime
        .load("hostile", fixture("hostile"), &Grants::default())
        .await
        .expect("the hostile fixture loads")
}

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(5),
        memory_bytes: 64 << 20,
        ..Limits::default()
    }
}

async fn run(plugin: &Plugin, kind: &str, config: Value, workdir: &Path) -> StepReport {
    plugin
        .run(kind, &context(), &config, workdir, &limits())
        .await
}

fn failure(report: &StepReport) -> (FailureKind, String) {
    match &report.outcome {
        Err(f) => (f.kind, f.message.clone()),
        Ok(done) => panic!("expected a failure, got {done:?}"),
    }
}

/// After any hostile call, a normal step in the same plugin still works.
async fn still_works(plugin: &Plugin, workdir: &Path) {
    let report = run(plugin, "ok", json!({}), workdir).await;
    let done = report.outcome.expect("a normal step succeeds afterwards");
    assert_eq!(done.outputs["ok"], true);
    assert!(
        report.log.iter().any(|l| l.message == "all good"),
        "{:?}",
        report.log
    );
}

#[tokio::test]
async fn a_normal_step_writes_only_in_its_work_dir_and_logs() {
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = hostile(&runtime).await;
    let s = sandbox();
    still_works(&plugin, &s.workdir).await;
    assert_eq!(
        std::fs::read_to_string(s.workdir.join("ok.txt")).expect("written in the work dir"),
        "fine"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_endless_loop_is_stopped_at_its_deadline_without_starving_other_tasks() {
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = hostile(&runtime).await;
    let s = sandbox();
    let looping = Arc::new(AtomicBool::new(true));
    let seen_while_looping = Arc::new(AtomicBool::new(false));
    let (l, seen) = (looping.clone(), seen_while_looping.clone());
    // On this single-threaded runtime, this task only runs if the guest yields.
    let observer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen.store(l.load(Ordering::SeqCst), Ordering::SeqCst);
    });
    let limits = Limits {
        timeout: Duration::from_secs(1),
        ..limits()
    };
    let report = plugin
        .run("endless-loop", &context(), &json!({}), &s.workdir, &limits)
        .await;
    looping.store(false, Ordering::SeqCst);
    observer.await.expect("observer");
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::TimedOut);
    assert!(message.contains("did not finish within 1s"), "{message}");
    assert!(
        seen_while_looping.load(Ordering::SeqCst),
        "another task ran while the guest looped"
    );
    still_works(&plugin, &s.workdir).await;
}

#[tokio::test]
async fn a_memory_bomb_fails_as_out_of_memory() {
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = hostile(&runtime).await;
    let s = sandbox();
    let (kind, message) = failure(&run(&plugin, "memory-bomb", json!({}), &s.workdir).await);
    assert_eq!(kind, FailureKind::OutOfMemory, "{message}");
    assert!(message.contains("the limit is 64 MiB"), "{message}");
    still_works(&plugin, &s.workdir).await;
}

#[tokio::test]
async fn reads_and_writes_outside_the_work_dir_are_refused() {
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = hostile(&runtime).await;
    let s = sandbox();
    let absolute = s.secret.display().to_string();
    for path in [
        "../secret.txt",
        "/../secret.txt",
        "../../../../etc/passwd",
        absolute.as_str(),
        "/etc/passwd",
    ] {
        let (kind, message) =
            failure(&run(&plugin, "read-outside", json!({ "path": path }), &s.workdir).await);
        assert_eq!(kind, FailureKind::Terminal, "{path}: {message}");
        assert!(
            message.starts_with(&format!("cannot read {path}")),
            "{message}"
        );
    }
    for path in ["../pwned.txt", "/../pwned.txt"] {
        let (kind, message) = failure(
            &run(
                &plugin,
                "write-outside",
                json!({ "path": path }),
                &s.workdir,
            )
            .await,
        );
        assert_eq!(kind, FailureKind::Terminal, "{path}: {message}");
    }
    assert!(
        !s.workdir
            .parent()
            .expect("parent")
            .join("pwned.txt")
            .exists(),
        "nothing was written outside"
    );
    // An absolute path is inside the work dir: the guest's / is the work dir.
    let report = run(
        &plugin,
        "write-outside",
        json!({ "path": "/inside.txt" }),
        &s.workdir,
    )
    .await;
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
    assert!(s.workdir.join("inside.txt").exists());
    still_works(&plugin, &s.workdir).await;
}

#[tokio::test]
async fn symlinks_planted_in_the_work_dir_cannot_lead_out() {
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = hostile(&runtime).await;
    let s = sandbox();
    std::os::unix::fs::symlink(&s.secret, s.workdir.join("absolute-link")).expect("symlink");
    std::os::unix::fs::symlink("../secret.txt", s.workdir.join("relative-link")).expect("symlink");
    std::fs::create_dir(s.workdir.join("sub")).expect("dir");
    std::os::unix::fs::symlink("../../secret.txt", s.workdir.join("sub/deep-link"))
        .expect("symlink");
    for link in ["absolute-link", "relative-link", "sub/deep-link"] {
        let report = run(
            &plugin,
            "follow-symlink",
            json!({ "path": link }),
            &s.workdir,
        )
        .await;
        let (kind, message) = failure(&report);
        assert_eq!(kind, FailureKind::Terminal, "{link}: {message}");
        assert!(!message.contains("the daemon's secret"));
    }
    still_works(&plugin, &s.workdir).await;
}

/// Runs a flooding kind with a generous deadline (this is about the cap, not speed) and checks
/// it finished with a closing note about what was dropped.
async fn flood(plugin: &Plugin, kind: &str, workdir: &Path) -> StepReport {
    let patient = Limits {
        timeout: Duration::from_secs(300),
        ..limits()
    };
    let report = plugin
        .run(kind, &context(), &json!({}), workdir, &patient)
        .await;
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
    let note = report.log.last().expect("a closing note");
    assert!(
        note.message.contains("more bytes of output were dropped"),
        "{}",
        note.message
    );
    report
}

#[tokio::test]
async fn a_flood_of_output_is_cut_and_the_step_still_finishes() {
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = hostile(&runtime).await;
    let s = sandbox();
    // 100 MiB through the pipe.
    let report = flood(&plugin, "flood-stdout", &s.workdir).await;
    let kept: usize = report.log.iter().map(|l| l.message.len()).sum();
    assert!(
        kept <= limits().log_bytes + 1024,
        "kept {kept} bytes of a 100 MiB flood"
    );
    still_works(&plugin, &s.workdir).await;
}

#[tokio::test]
async fn a_flood_of_empty_lines_is_bounded_like_any_output() {
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = hostile(&runtime).await;
    let s = sandbox();
    let report = flood(&plugin, "flood-empty-lines", &s.workdir).await;
    // Each kept line costs the log at least 64 bytes, however short.
    assert!(
        report.log.len() <= limits().log_bytes / 64 + 1,
        "kept {} lines of 64 Mi empty ones",
        report.log.len()
    );
    still_works(&plugin, &s.workdir).await;
}

#[tokio::test]
async fn a_huge_message_or_error_is_cut_to_the_limit() {
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = hostile(&runtime).await;
    let s = sandbox();
    let roomy = Limits {
        memory_bytes: 256 << 20,
        ..limits()
    };
    let report = plugin
        .run("huge-message", &context(), &json!({}), &s.workdir, &roomy)
        .await;
    let message = report
        .outcome
        .expect("the step succeeds")
        .message
        .expect("a message");
    assert!(
        message.len() <= dray::runtime::MAX_MESSAGE_BYTES + 64,
        "{} bytes",
        message.len()
    );
    assert!(
        message.ends_with("more bytes]"),
        "{}",
        &message[message.len() - 40..]
    );
    let report = plugin
        .run("huge-error", &context(), &json!({}), &s.workdir, &roomy)
        .await;
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::Terminal);
    assert!(
        message.len() <= dray::runtime::MAX_MESSAGE_BYTES + 64,
        "{} bytes",
        message.len()
    );
    still_works(&plugin, &s.workdir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_project_waits_for_its_share_and_never_starves_another() {
    // A pool of 4 slots, at most 2 for one project.
    let runtime = Runtime::with_capacity(None, 4, 2).expect("runtime");
    let plugin = Arc::new(hostile(&runtime).await);
    let s = sandbox();
    let for_project = |project: &str| Limits {
        project: project.into(),
        ..limits()
    };
    // Project "busy" starts 6 slow steps at once: more than its share and more than the pool.
    let mut busy = Vec::new();
    for _ in 0..6 {
        let (plugin, workdir, limits) = (plugin.clone(), s.workdir.clone(), for_project("busy"));
        busy.push(tokio::spawn(async move {
            plugin
                .run("sleep", &context(), &json!({"ms": 300}), &workdir, &limits)
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Another project's step gets a slot at once and succeeds.
    let report = plugin
        .run(
            "ok",
            &context(),
            &json!({}),
            &s.workdir,
            &for_project("quiet"),
        )
        .await;
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
    // The busy project's steps all finish: those beyond its share waited, none crashed.
    for call in busy {
        let report = call.await.expect("joined");
        let done = report
            .outcome
            .expect("a waiting step runs once a slot is free");
        assert_eq!(done.outputs["slept"], 300);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_fills_its_work_dir_is_stopped_at_the_quota() {
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = hostile(&runtime).await;
    let s = sandbox();
    let quota = Limits {
        disk: dray::runtime::disk::Quota {
            bytes: 32 << 20,
            files: 1000,
        },
        timeout: Duration::from_secs(60),
        ..limits()
    };
    let report = plugin
        .run("fill-disk", &context(), &json!({}), &s.workdir, &quota)
        .await;
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::DiskQuota, "{message}");
    assert!(message.contains("past its quota of 32 MiB"), "{message}");
    let size = std::fs::metadata(s.workdir.join("fill.bin"))
        .expect("the file")
        .len();
    // Stopped within a fraction of a second of passing the quota (about 42 MiB were written
    // here), not at a full disk.
    assert!(size < 512 << 20, "{size} bytes written");
    // The check the engine makes after every call says so too, until the directory is emptied.
    assert!(
        dray::runtime::disk::check(&s.workdir, quota.disk)
            .await
            .is_some_and(|m| m.contains("past its quota"))
    );
    std::fs::remove_file(s.workdir.join("fill.bin")).expect("rm");
    assert_eq!(
        dray::runtime::disk::check(&s.workdir, quota.disk).await,
        None
    );
    still_works(&plugin, &s.workdir).await;
}

#[tokio::test]
async fn set_metadata_is_bounded_per_call_and_per_step() {
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = runtime
        .load(
            "metadata-flood",
            fixture("metadata_flood"),
            &Grants::of(&[Capability::Metadata]),
        )
        .await
        .expect("loads with a metadata grant");
    let s = sandbox();
    let granted = Limits {
        metadata: dray::host::metadata::Metadata(Some(Arc::new(dray::host::metadata::LogOnly))),
        memory_bytes: 128 << 20,
        ..limits()
    };
    let report = plugin
        .run("huge", &context(), &json!({}), &s.workdir, &granted)
        .await;
    let (_, message) = failure(&report);
    assert!(message.contains("one call may set at most"), "{message}");
    let report = plugin
        .run("many", &context(), &json!({}), &s.workdir, &granted)
        .await;
    let (_, message) = failure(&report);
    assert!(
        message.contains("refused after 100 calls") && message.contains("at most 100 times"),
        "{message}"
    );
}

#[tokio::test]
async fn a_panic_fails_the_step_with_the_panic_message() {
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = hostile(&runtime).await;
    let s = sandbox();
    let (kind, message) = failure(&run(&plugin, "panic", json!({}), &s.workdir).await);
    assert_eq!(kind, FailureKind::Crashed);
    assert!(
        message.contains("the hostile plugin panics on purpose"),
        "{message}"
    );
    still_works(&plugin, &s.workdir).await;
}

#[tokio::test]
async fn a_malformed_result_is_refused() {
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = hostile(&runtime).await;
    let s = sandbox();
    let (kind, message) = failure(&run(&plugin, "malformed-result", json!({}), &s.workdir).await);
    assert_eq!(kind, FailureKind::BadResult);
    assert!(message.contains("not valid JSON"), "{message}");
    still_works(&plugin, &s.workdir).await;
}

#[tokio::test]
async fn the_environment_is_empty() {
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = hostile(&runtime).await;
    let s = sandbox();
    let done = run(&plugin, "read-env", json!({}), &s.workdir)
        .await
        .outcome
        .expect("runs");
    assert_eq!(
        done.outputs["env"],
        json!([]),
        "no host environment variable is visible"
    );
}

#[tokio::test]
async fn an_ungranted_capability_fails_when_the_plugin_is_loaded() {
    let runtime = Runtime::new(None).expect("runtime");
    let err = runtime
        .load("needs-git", fixture("needs_git"), &Grants::default())
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, LoadError::NotGranted { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("git capability") && message.contains("dray:plugin/git"),
        "{message}"
    );
    let s = sandbox();
    still_works(&hostile(&runtime).await, &s.workdir).await;
}

#[tokio::test]
async fn bytes_that_are_not_a_component_are_refused_with_the_plugin_name() {
    let runtime = Runtime::new(None).expect("runtime");
    let err = runtime
        .load("junk", b"not wasm at all".to_vec(), &Grants::default())
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .starts_with("junk: not a Dray step component"),
        "{err}"
    );
}

#[tokio::test]
async fn config_is_checked_against_the_step_schema_before_the_call() {
    let runtime = Runtime::new(None).expect("runtime");
    let plugins = runtime.load_builtins().await.expect("built-ins load");
    let control = plugins
        .iter()
        .find(|p| p.name == "steps")
        .expect("the built-in steps");
    let s = sandbox();
    let report = control
        .run(
            "fail",
            &context(),
            &json!({"mesage": "typo"}),
            &s.workdir,
            &limits(),
        )
        .await;
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::InvalidConfig);
    assert!(message.contains("mesage"), "{message}");
    let report = control
        .run(
            "fail",
            &context(),
            &json!({"message": "stop"}),
            &s.workdir,
            &limits(),
        )
        .await;
    assert_eq!(
        failure(&report),
        (FailureKind::Terminal, "stop".to_string())
    );
    let done = control
        .run(
            "compose-output",
            &context(),
            &json!({"x": [1, 2]}),
            &s.workdir,
            &limits(),
        )
        .await;
    assert_eq!(done.outcome.expect("composes").outputs["x"], json!([1, 2]));
    let report = control
        .run("nope", &context(), &json!({}), &s.workdir, &limits())
        .await;
    assert_eq!(failure(&report).0, FailureKind::UnknownKind);
}

#[tokio::test]
async fn a_second_runtime_loads_compiled_code_from_the_cache() {
    let cache = tempfile::tempdir().expect("cache dir");
    let first = Runtime::new(Some(cache.path().to_path_buf())).expect("runtime");
    let plugin = first
        .load("hostile", fixture("hostile"), &Grants::default())
        .await
        .expect("loads");
    assert_eq!(plugin.loaded, Loaded::Compiled);
    let second = Runtime::new(Some(cache.path().to_path_buf())).expect("runtime");
    let plugin = second
        .load("hostile", fixture("hostile"), &Grants::default())
        .await
        .expect("loads");
    assert_eq!(plugin.loaded, Loaded::FromCache);
    let s = sandbox();
    still_works(&plugin, &s.workdir).await;
    // A corrupt cache entry is recompiled, not trusted, even while another runtime uses it.
    for entry in std::fs::read_dir(cache.path()).expect("cache") {
        std::fs::write(entry.expect("entry").path(), b"garbage").expect("corrupt");
    }
    still_works(&plugin, &s.workdir).await;
    let third = Runtime::new(Some(cache.path().to_path_buf())).expect("runtime");
    let plugin = third
        .load("hostile", fixture("hostile"), &Grants::default())
        .await
        .expect("loads");
    assert_eq!(plugin.loaded, Loaded::Compiled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiered_runtime_runs_baseline_code_at_once_then_cranelift_code_from_then_on() {
    let cache = tempfile::tempdir().expect("cache dir");
    let tiered = Runtime::tiered(Some(cache.path().to_path_buf())).expect("runtime");
    let plugin = tiered
        .load("hostile", fixture("hostile"), &Grants::default())
        .await
        .expect("loads");
    assert_eq!(plugin.loaded, Loaded::Baseline);
    let s = sandbox();
    // Calls work on either code, and while the code is swapped under them.
    let mut calls = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while plugin.tier() == Tier::Baseline {
        assert!(
            std::time::Instant::now() < deadline,
            "not optimized within 120 s"
        );
        still_works(&plugin, &s.workdir).await;
        calls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(calls > 0, "the plugin ran before it was optimized");
    still_works(&plugin, &s.workdir).await;
    // The optimized code went to the cache: the next runtime starts on it.
    let next = Runtime::tiered(Some(cache.path().to_path_buf())).expect("runtime");
    let plugin = next
        .load("hostile", fixture("hostile"), &Grants::default())
        .await
        .expect("loads");
    assert_eq!(plugin.loaded, Loaded::FromCache);
    assert_eq!(plugin.tier(), Tier::Optimized);
    still_works(&plugin, &s.workdir).await;
}

/// Hostile guests on Winch's code end as they do on Cranelift's: the sandbox holds on both.
#[tokio::test(flavor = "current_thread")]
async fn hostile_guests_fail_the_same_way_on_baseline_code() {
    let runtime = Runtime::with(None, 8, 4, Compilers::Baseline).expect("runtime");
    let plugin = hostile(&runtime).await;
    assert_eq!(plugin.loaded, Loaded::Baseline);
    assert_eq!(plugin.tier(), Tier::Baseline);
    let s = sandbox();
    let quick = Limits {
        timeout: Duration::from_secs(1),
        ..limits()
    };
    let report = plugin
        .run("endless-loop", &context(), &json!({}), &s.workdir, &quick)
        .await;
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::TimedOut, "{message}");
    let (kind, message) = failure(&run(&plugin, "memory-bomb", json!({}), &s.workdir).await);
    assert_eq!(kind, FailureKind::OutOfMemory, "{message}");
    let (kind, message) = failure(&run(&plugin, "panic", json!({}), &s.workdir).await);
    assert_eq!(kind, FailureKind::Crashed, "{message}");
    let absolute = s.secret.display().to_string();
    let (kind, message) = failure(
        &run(
            &plugin,
            "read-outside",
            json!({ "path": absolute }),
            &s.workdir,
        )
        .await,
    );
    assert_eq!(kind, FailureKind::Terminal, "{message}");
    assert!(message.starts_with("cannot read"), "{message}");
    flood(&plugin, "flood-stdout", &s.workdir).await;
    still_works(&plugin, &s.workdir).await;
}

/// A one-route HTTP server on loopback that answers `hello` and counts connections.
async fn http_server() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
                // Close gently: shut our side, then drain theirs, so the client never sees a reset.
                let _ = socket.shutdown().await;
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    (port, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_needs_a_grant_and_reaches_only_allowed_hosts() {
    let runtime = Runtime::new(None).expect("runtime");
    let err = runtime
        .load("fetcher", fixture("fetcher"), &Grants::default())
        .await
        .err()
        .expect("no grant");
    assert!(
        err.to_string().contains("http capability") && err.to_string().contains("--allow-host"),
        "{err}"
    );

    let plugin = runtime
        .load(
            "fetcher",
            fixture("fetcher"),
            &Grants::of(&[Capability::Http]),
        )
        .await
        .expect("granted");
    let (allowed, allowed_hits) = http_server().await;
    let (forbidden, forbidden_hits) = http_server().await;
    let limits = Limits {
        allow_hosts: dray::host::http::AllowList::parse(&[format!("127.0.0.1:{allowed}")])
            .expect("pattern"),
        ..limits()
    };
    let s = sandbox();
    let report = plugin
        .run(
            "get",
            &context(),
            &json!({"url": format!("http://127.0.0.1:{allowed}/")}),
            &s.workdir,
            &limits,
        )
        .await;
    let done = match report.outcome {
        Ok(done) => done,
        Err(f) => panic!("the allowed host answers: {f:?}\n{:#?}", report.log),
    };
    assert_eq!(
        (done.outputs["status"].clone(), done.outputs["body"].clone()),
        (json!(200), json!("hello"))
    );
    assert_eq!(allowed_hits.load(Ordering::SeqCst), 1);

    let url = format!("http://127.0.0.1:{forbidden}/");
    let report = plugin
        .run(
            "get",
            &context(),
            &json!({ "url": url }),
            &s.workdir,
            &limits,
        )
        .await;
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::Terminal);
    assert!(message.to_lowercase().contains("denied"), "{message}");
    assert!(
        report.log.iter().any(|l| l.message.contains(&format!(
            "denied an HTTP request to http://127.0.0.1:{forbidden}"
        ))),
        "the log names the denied URL: {:?}",
        report.log
    );
    assert_eq!(
        forbidden_hits.load(Ordering::SeqCst),
        0,
        "the forbidden server was never contacted"
    );

    let nowhere = Limits {
        allow_hosts: Default::default(),
        ..limits
    };
    let report = plugin
        .run(
            "get",
            &context(),
            &json!({ "url": format!("http://127.0.0.1:{allowed}/") }),
            &s.workdir,
            &nowhere,
        )
        .await;
    assert_eq!(
        failure(&report).0,
        FailureKind::Terminal,
        "an empty allowlist denies everything"
    );
    assert_eq!(allowed_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn secrets_need_a_grant_and_only_named_ones_are_readable() {
    use std::collections::BTreeMap;
    let runtime = Runtime::new(None).expect("runtime");
    let err = runtime
        .load("reads-secret", fixture("reads_secret"), &Grants::default())
        .await
        .err()
        .expect("no grant");
    assert!(
        err.to_string().contains("credentials capability") && err.to_string().contains("--secret"),
        "{err}"
    );

    let plugin = runtime
        .load(
            "reads-secret",
            fixture("reads_secret"),
            &Grants::of(&[Capability::Credentials]),
        )
        .await
        .expect("granted");
    let mut store: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    store.insert(
        "db".into(),
        [
            ("username".to_string(), "app".to_string()),
            ("password".to_string(), "hunter2".to_string()),
        ]
        .into(),
    );
    let limits = Limits {
        secrets: dray::host::credentials::Secrets(Some(Arc::new(store))),
        ..limits()
    };
    let s = sandbox();
    let report = plugin
        .run(
            "show-keys",
            &context(),
            &json!({"name": "db"}),
            &s.workdir,
            &limits,
        )
        .await;
    let done = report.outcome.clone().expect("reads its secret");
    assert_eq!(done.outputs["keys"], json!(["password", "username"]));
    assert_eq!(done.outputs["valueBytes"], 10);
    assert!(
        report
            .log
            .iter()
            .any(|l| l.message == "the step read secret \"db\""),
        "{:?}",
        report.log
    );
    assert!(
        !report.log.iter().any(|l| l.message.contains("hunter2")),
        "values are never logged"
    );

    let report = plugin
        .run(
            "show-keys",
            &context(),
            &json!({"name": "other"}),
            &s.workdir,
            &limits,
        )
        .await;
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::Terminal);
    assert!(
        message.contains("NotFound") && message.contains("other"),
        "{message}"
    );

    let report = plugin
        .run(
            "show-keys",
            &context(),
            &json!({"name": "db"}),
            &s.workdir,
            &self::limits(),
        )
        .await;
    assert!(
        failure(&report).1.contains("Denied"),
        "no secrets given to this call: denied"
    );
}
