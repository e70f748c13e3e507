//! A real Prometheus server (Debian's `prometheus`): with no scrape targets, enough to answer
//! instant queries such as `vector(0.99)`, as a verification's `prometheus` metric asks them;
//! or scraping daemons' `/metrics` every second with a bearer token. Stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start() -> Prometheus {
        Prometheus::with_config("global: {scrape_interval: 1m}\n")
    }

    /// Scrapes each `(job, host:port, bearer token)` at `/metrics` every second.
    pub fn scraping(targets: &[(&str, &str, &str)]) -> Prometheus {
        let mut config = String::from("global: {scrape_interval: 1s}\nscrape_configs:\n");
        for (job, target, token) in targets {
            config.push_str(&format!(
                "- job_name: {job}\n  scrape_interval: 1s\n  authorization: {{type: Bearer, credentials: {token}}}\n  static_configs: [{{targets: [\"{target}\"]}}]\n"
            ));
        }
        Prometheus::with_config(&config)
    }

    fn with_config(text: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("a directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, text).expect("write the config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start prometheus ({e}): install it with `apt-get install prometheus` (tests/run.sh does)")
            });
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = ready(port);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready in 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Prometheus {
            url,
            child,
            _dir: dir,
        }
    }
}

/// Whether `GET /-/ready` answers 200 (plain HTTP over a socket: tests run inside a runtime,
/// where a blocking HTTP client may not).
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /-/ready HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
