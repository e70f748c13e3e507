//! `dray serve` as a Unix service: systemd readiness, SIGTERM, and the token printed once.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use dray_tests::{dray_bin, repo_root};

fn finishes(command: &mut Command) -> std::process::Output {
    dray_tests::finishes(command, Duration::from_secs(30))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The next notification from the daemon; if none comes in time, stops the daemon and fails
/// with what it printed, so the cause is in the test output.
fn receive(socket: &UnixDatagram, daemon: &mut std::process::Child) -> String {
    let mut buf = [0u8; 512];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => {
            let _ = daemon.kill();
            let mut stderr = String::new();
            if let Some(mut pipe) = daemon.stderr.take() {
                use std::io::Read;
                let _ = pipe.read_to_string(&mut stderr);
            }
            panic!(
                "no notification from dray serve ({e}); exit {:?}; it printed:\n{stderr}",
                daemon.wait()
            );
        }
    }
}

/// A notify socket in `dir` (what systemd gives a `Type=notify` service), waiting up to 90 s: a
/// first start compiles the built-in plugins with Winch (about a second); later starts read
/// Cranelift's code from the compile cache.
fn notify_socket(dir: &std::path::Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(90)))
        .expect("timeout");
    (socket, path)
}

/// `dray serve` on a free port with `data_dir` and `extra` arguments, told `socket` as its
/// NOTIFY_SOCKET; its standard error is piped.
fn serve(
    data_dir: &std::path::Path,
    socket: &std::path::Path,
    extra: &[&str],
) -> std::process::Child {
    Command::new(dray_bin())
        .arg("serve")
        .args(extra)
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
        ])
        .arg(data_dir)
        .env("NOTIFY_SOCKET", socket)
        // The tests read its info lines.
        .env_remove("DRAY_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dray serve starts")
}

/// Sends SIGTERM to `child`.
fn terminate(child: &std::process::Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
}

/// How many compiled components the compile cache in `dir` holds.
fn cwasm_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
            .count()
    })
}

#[test]
fn tells_systemd_when_ready_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, socket_path) = notify_socket(dir.path());
    let data_dir = dir.path().join("data");
    let port = free_port();
    let mut child = Command::new(dray_bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data_dir)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dray serve starts");

    let ready = receive(&socket, &mut child);
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("STATUS=serving on 127.0.0.1:{port}")),
        "{ready}"
    );
    let health = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(health.is_ok(), "the API listens once READY=1 is sent");
    // Ready on Winch's code; Cranelift's goes to the compile cache in the background, one file
    // per built-in component.
    let cache = data_dir.join("cache").join("plugins");
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while cwasm_files(&cache) < dray::runtime::BUILTIN_PLUGINS.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "the built-in plugins were not optimized within 180 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    terminate(&child);
    let stopping = receive(&socket, &mut child);
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
    let output = child.wait_with_output().expect("dray serve exits");
    assert!(output.status.success(), "exit status {:?}", output.status);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("created API token"),
        "the first start prints the token once:\n{log}"
    );

    // A second start finds the token and does not print it again.
    let mut second = serve(&data_dir, &socket_path, &[]);
    assert!(receive(&socket, &mut second).contains("READY=1"));
    terminate(&second);
    let output = second.wait_with_output().expect("exits");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!log.contains("created API token"));
    assert!(
        log.contains("built-in plugin loaded from the compile cache"),
        "a restart does not recompile:\n{log}"
    );
    assert!(!log.contains("compiled plugin"), "{log}");
}

#[test]
fn refuses_an_address_it_cannot_listen_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let output = finishes(
        Command::new(dray_bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path()),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot listen") && stderr.contains("--listen"),
        "{stderr}"
    );
}

#[test]
fn refuses_to_start_with_a_known_hosts_file_it_cannot_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "ssh-known-hosts = \"/nonexistent/known_hosts\"\n").expect("write");
    let data = dir.path().join("data");
    let output = finishes(
        Command::new(dray_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ssh-known-hosts") && stderr.contains("/nonexistent/known_hosts"),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing is created");
}

#[test]
fn applies_manifests_at_start_and_refuses_to_start_on_invalid_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "apiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {name: x, namespace: nowhere}\nspec: {}\n").expect("write");
    let data_dir = dir.path().join("data");
    let output = finishes(
        Command::new(dray_bin())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", free_port()),
                "--data-dir",
            ])
            .arg(&data_dir)
            .arg("--apply")
            .arg(repo_root().join("examples/kargo-demo"))
            .arg("--apply")
            .arg(&broken),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broken.yaml:") && stderr.contains("nothing was applied"),
        "{stderr}"
    );

    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    socket
        // A first start compiles the built-in plugins with Winch (about a second); later
        // starts read Cranelift's code from the compile cache.
        .set_read_timeout(Some(Duration::from_secs(90)))
        .expect("timeout");
    let port = free_port();
    let mut child = Command::new(dray_bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data_dir)
        .arg("--apply")
        .arg(repo_root().join("examples/kargo-demo"))
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    assert!(receive(&socket, &mut child).contains("READY=1"));
    let stages = Command::new(dray_bin())
        .args([
            "get",
            "stages",
            "-p",
            "kargo-demo",
            "--no-headers",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data_dir)
        .output()
        .expect("cli runs");
    let listed = String::from_utf8_lossy(&stages.stdout);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(child.wait_with_output().expect("exits").status.success());
}

/// `--log-format json` (and `DRAY_LOG_FORMAT`, the config's `log-format`): every line the
/// daemon writes to standard error is one JSON object with a level, a message and the event's
/// fields, the first start's token message included, so journald's and log shippers' parsers
/// never meet a plain line. A format it does not know stops the start, saying which.
#[test]
fn logs_one_json_object_per_line_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, socket_path) = notify_socket(dir.path());
    let data_dir = dir.path().join("data");
    let mut child = serve(&data_dir, &socket_path, &["--log-format", "json"]);
    assert!(receive(&socket, &mut child).contains("READY=1"));
    terminate(&child);
    let output = child.wait_with_output().expect("dray serve exits");
    assert!(output.status.success(), "exit status {:?}", output.status);
    let log = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line:?}\nin\n{log}"))
        })
        .collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        assert!(
            line["level"].is_string() && line["message"].is_string() && line["target"].is_string(),
            "{line}"
        );
    }
    let token = std::fs::read_to_string(data_dir.join("token")).expect("the token file");
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("created API token"))
            && l["token"] == token.trim()),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["plugin"] == "steps"),
        "the events' fields are fields of the object:\n{log}"
    );

    let refused = finishes(
        Command::new(dray_bin())
            .args(["serve", "--data-dir"])
            .arg(&data_dir)
            .env("DRAY_LOG_FORMAT", "xml"),
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("DRAY_LOG_FORMAT") && stderr.contains("use text or json"),
        "{stderr}"
    );
}
