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
    serve_on(free_port(), data_dir, socket, extra)
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

/// A certificate for 127.0.0.1 signed by itself, as PEM: (certificate, key).
fn self_signed() -> (String, String) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("a certificate");
    (made.cert.pem(), made.signing_key.serialize_pem())
}

/// `dray --server SERVER whoami`, trusting the certificate in `ca` (if any).
fn whoami(
    server: &str,
    data_dir: &std::path::Path,
    ca: Option<&std::path::Path>,
) -> std::process::Output {
    let mut command = Command::new(dray_bin());
    command
        .args(["--server", server, "whoami", "--data-dir"])
        .arg(data_dir)
        .env_remove("DRAY_TOKEN")
        .env_remove("DRAY_CA_CERT");
    if let Some(ca) = ca {
        command.env("DRAY_CA_CERT", ca);
    }
    finishes(&mut command)
}

/// Sends SIGHUP to `child` and waits for the reload's RELOADING=1 and READY=1.
fn hang_up(socket: &UnixDatagram, child: &mut std::process::Child) {
    let sent = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let reloading = receive(socket, child);
    assert!(
        reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="),
        "{reloading}"
    );
    let ready = receive(socket, child);
    assert!(ready.contains("READY=1"), "{ready}");
}

/// Stops `child` and returns what it logged.
fn stop(child: std::process::Child) -> String {
    terminate(&child);
    let output = child.wait_with_output().expect("dray serve exits");
    assert!(output.status.success(), "exit status {:?}", output.status);
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn serves_https_and_takes_a_renewed_certificate_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, socket_path) = notify_socket(dir.path());
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (first, first_key) = self_signed();
    std::fs::write(&cert, &first).expect("write");
    std::fs::write(&key, &first_key).expect("write");
    let trusted_first = dir.path().join("first.pem");
    std::fs::write(&trusted_first, &first).expect("write");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert-file = {:?}\nkey-file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .expect("write");
    let data_dir = dir.path().join("data");
    let port = free_port();
    let mut child = serve_on(
        port,
        &data_dir,
        &socket_path,
        &["--config", &config.display().to_string()],
    );
    assert!(receive(&socket, &mut child).contains("READY=1"));
    let https = format!("https://127.0.0.1:{port}");

    let out = whoami(&https, &data_dir, Some(&trusted_first));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "admin (system-admin)"
    );
    // Without the certificate's issuer trusted, or in plain HTTP, nothing is answered.
    let out = whoami(&https, &data_dir, None);
    assert_eq!(
        out.status.code(),
        Some(3),
        "an untrusted certificate is refused"
    );
    let out = whoami(&format!("http://127.0.0.1:{port}"), &data_dir, None);
    assert!(
        !out.status.success(),
        "plain HTTP is not served on the TLS port"
    );

    // A renewed certificate, then SIGHUP: new connections get it.
    let (second, second_key) = self_signed();
    std::fs::write(&cert, &second).expect("write");
    std::fs::write(&key, &second_key).expect("write");
    let trusted_second = dir.path().join("second.pem");
    std::fs::write(&trusted_second, &second).expect("write");
    hang_up(&socket, &mut child);
    let out = whoami(&https, &data_dir, Some(&trusted_second));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = whoami(&https, &data_dir, Some(&trusted_first));
    assert_eq!(
        out.status.code(),
        Some(3),
        "the old certificate is no longer served"
    );

    // A broken key is refused: the daemon keeps serving the second certificate.
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    hang_up(&socket, &mut child);
    let out = whoami(&https, &data_dir, Some(&trusted_second));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = stop(child);
    assert!(
        log.contains("config not reloaded") && log.contains("key-file"),
        "the refused reload is logged with its reason:\n{log}"
    );
}

#[test]
fn refuses_to_start_with_a_certificate_it_cannot_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[tls]\ncert-file = \"/nonexistent/tls.crt\"\nkey-file = \"/nonexistent/tls.key\"\n",
    )
    .expect("write");
    let output = finishes(
        Command::new(dray_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data")),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("config [tls]") && stderr.contains("/nonexistent/tls.crt"),
        "{stderr}"
    );
}

#[test]
fn serves_the_api_on_a_unix_socket_for_its_own_user_only() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, socket_path) = notify_socket(dir.path());
    let api_socket = dir.path().join("dray.sock");
    // A stale socket file from a daemon that died is replaced.
    drop(std::os::unix::net::UnixListener::bind(&api_socket).expect("a stale socket"));
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("unix-socket = {:?}\n", api_socket.display().to_string()),
    )
    .expect("write");
    let data_dir = dir.path().join("data");
    let mut child = serve(
        &data_dir,
        &socket_path,
        &["--config", &config.display().to_string()],
    );
    assert!(receive(&socket, &mut child).contains("READY=1"));
    let meta = std::fs::metadata(&api_socket).expect("the socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o077,
        0,
        "other users cannot connect"
    );
    let out = whoami(&format!("unix:{}", api_socket.display()), &data_dir, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "admin (system-admin)"
    );
    // A request without a token is refused on the socket too.
    let mut raw = std::os::unix::net::UnixStream::connect(&api_socket).expect("connect");
    use std::io::{Read, Write};
    raw.write_all(b"GET /v1/projects HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    raw.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.0 401"), "{answer}");
    stop(child);
}

#[test]
fn takes_its_sockets_from_systemd_socket_activation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, socket_path) = notify_socket(dir.path());
    let port = free_port();
    let api_socket = dir.path().join("dray.sock");
    let data_dir = dir.path().join("data");
    // systemd's own activator binds both, then runs dray with LISTEN_FDS=2 and LISTEN_PID set:
    // what a dray.socket unit with two ListenStream= lines does.
    let mut child = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{port}"), "-l"])
        .arg(&api_socket)
        .arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", socket_path.display()))
        .arg(dray_bin())
        // The listen address it would bind otherwise is taken by the activator: taking systemd's
        // sockets is the only way this start can work.
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-socket-activate ({e}): install it with `apt-get install systemd` (tests/run.sh does)")
        });
    // The activator starts dray at the first connection, which dray then answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            break stream;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the activator never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(receive(&socket, &mut child).contains("READY=1"));
    drop(first);
    let out = whoami(&format!("http://127.0.0.1:{port}"), &data_dir, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = whoami(&format!("unix:{}", api_socket.display()), &data_dir, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop(child);
}

#[test]
fn pets_the_systemd_watchdog_while_alive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, socket_path) = notify_socket(dir.path());
    let data_dir = dir.path().join("data");
    let mut child = Command::new(dray_bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
        ])
        .arg(&data_dir)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dray serve starts");
    assert!(receive(&socket, &mut child).contains("READY=1"));
    for _ in 0..3 {
        let pet = receive(&socket, &mut child);
        assert!(pet.contains("WATCHDOG=1"), "{pet}");
    }
    stop(child);
}

/// `dray serve` on `port` with `data_dir` and `extra` arguments, told `socket` as its
/// NOTIFY_SOCKET, with the default log filter (the tests read its info lines); its standard
/// error is piped.
fn serve_on(
    port: u16,
    data_dir: &std::path::Path,
    socket: &std::path::Path,
    extra: &[&str],
) -> std::process::Child {
    Command::new(dray_bin())
        .arg("serve")
        .args(extra)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .env("NOTIFY_SOCKET", socket)
        .env_remove("DRAY_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dray serve starts")
}

#[test]
fn sighup_puts_new_step_grants_in_force_and_refuses_a_broken_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, socket_path) = notify_socket(dir.path());
    let endpoint = dray_tests::http::json_server(|_| r#"{"state": "ready"}"#.to_string());
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[steps]\nallow-hosts = []\n").expect("write");
    let data_dir = dir.path().join("data");
    let port = free_port();
    let mut child = serve_on(
        port,
        &data_dir,
        &socket_path,
        &["--config", &config.display().to_string()],
    );
    assert!(receive(&socket, &mut child).contains("READY=1"));
    let server = format!("http://127.0.0.1:{port}");
    let cli = |args: &[&str]| {
        finishes(
            Command::new(dray_bin())
                .args(["--server", &server, "--data-dir"])
                .arg(&data_dir)
                .args(args)
                .env_remove("DRAY_TOKEN"),
        )
    };
    let pipeline = dray_tests::manifests::project(
        "shop",
        &["image: {repoURL: registry.example/web}"],
    ) + &dray_tests::manifests::stage(
        "shop",
        "dev",
        &format!(
            "- uses: http\n  config:\n    url: http://{endpoint}/status\n    successExpression: 'response.body.state == \"ready\"'"
        ),
    ) + &dray_tests::manifests::freight(
        "shop",
        "first",
        "images:\n- {repoURL: registry.example/web, tag: \"1.0.0\"}",
    );
    let manifests = dir.path().join("pipeline.yaml");
    std::fs::write(&manifests, pipeline).expect("write");
    let out = cli(&["apply", "-f", &manifests.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let promote = || {
        cli(&[
            "promote",
            "-p",
            "shop",
            "--stage",
            "dev",
            "--freight",
            "first",
            "--wait",
        ])
    };

    // Not granted at start: the step may not reach the endpoint.
    let out = promote();
    let said = String::from_utf8_lossy(&out.stdout).to_lowercase()
        + &String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        !out.status.success() && said.contains("not in the allowed hosts"),
        "the host is not allowed yet: {said}"
    );
    // Granted by editing the file and SIGHUP, with no restart.
    std::fs::write(
        &config,
        format!("[steps]\nallow-hosts = [\"{endpoint}\"]\n"),
    )
    .expect("write");
    hang_up(&socket, &mut child);
    let out = promote();
    assert!(
        out.status.success(),
        "the reloaded grant holds: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A config with a mistake is refused whole; the grant in force stays.
    std::fs::write(&config, "[steps]\nallow-hosts = [\"\"]\nno-such-key = 1\n").expect("write");
    hang_up(&socket, &mut child);
    let out = promote();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = stop(child);
    assert!(log.contains("config reloaded"), "{log}");
    assert!(
        log.contains("config not reloaded") && log.contains("no-such-key"),
        "the refused reload says why:\n{log}"
    );
}

#[test]
fn the_systemd_example_units_are_valid_and_hardened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let examples = repo_root().join("examples").join("systemd");
    // The unit as installed, pointing at this build of dray (systemd checks it is executable).
    let unit = std::fs::read_to_string(examples.join("dray.service"))
        .expect("dray.service")
        .replace("/usr/local/bin/dray", &dray_bin().display().to_string());
    std::fs::write(dir.path().join("dray.service"), unit).expect("write");
    std::fs::copy(examples.join("dray.socket"), dir.path().join("dray.socket")).expect("copy");
    let analyze = |args: &[&str]| {
        Command::new("systemd-analyze")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run systemd-analyze ({e}): install it with `apt-get install systemd` (tests/run.sh does)")
            })
    };
    let verified = analyze(&["verify", "--man=no", "./dray.socket", "./dray.service"]);
    let said = String::from_utf8_lossy(&verified.stderr);
    assert!(
        verified.status.success() && said.trim().is_empty(),
        "systemd finds fault with the units:\n{said}"
    );
    // systemd's own exposure score (0 safest, 10 unprotected); below 2 is "OK".
    let security = analyze(&["security", "--offline=true", "./dray.service"]);
    let text = String::from_utf8_lossy(&security.stdout).into_owned()
        + &String::from_utf8_lossy(&security.stderr);
    let score: f64 = text
        .split("Overall exposure level for dray.service:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score < 2.0, "exposure {score}:\n{text}");
    // The example config is one the daemon takes.
    let config = dray::Config::load(Some(&examples.join("config.toml")), |_| None)
        .expect("examples/systemd/config.toml loads");
    config.check().expect("and passes the checks");
}
