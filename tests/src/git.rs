//! Real Git servers for end-to-end tests: `git daemon` (anonymous `git://`, push allowed), smart
//! HTTP through `git http-backend` with basic auth (`tests/servers/git_http_server.py`), and
//! OpenSSH's `sshd` with public-key login. All serve the bare repositories of one temporary
//! directory and stop when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fails with how to install a missing program, never skips.
pub fn require(program: &str, package: &str) {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{program} is missing; these tests need a real one: `apt-get install -y {package}` (tests/run.sh installs it)"
    );
}

/// Runs git with a fixed identity; panics with its stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_with(dir, args, &[])
}

/// [`git`] with extra environment variables (e.g. `GIT_COMMITTER_DATE`).
pub fn git_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A directory of bare repositories.
pub struct Repos {
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

impl Repos {
    pub fn new() -> Repos {
        require("git", "git");
        let dir = tempfile::tempdir().expect("a temporary directory");
        Repos {
            root: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    /// [`Repos::create`] with `count` files made by `file(n)` (path, content): a monorepo of
    /// many services.
    pub fn create_many(
        &self,
        name: &str,
        count: usize,
        file: impl Fn(usize) -> (String, String),
    ) -> String {
        let files: Vec<(String, String)> = (0..count).map(file).collect();
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        self.create(name, &files)
    }

    /// Creates bare repository `name` (e.g. `app.git`) whose `main` holds `files`; returns the
    /// commit's ID.
    pub fn create(&self, name: &str, files: &[(&str, &str)]) -> String {
        let bare = self.root.join(name);
        git(&self.root, &["init", "-q", "--bare", "-b", "main", name]);
        let work = tempfile::tempdir().expect("a work tree");
        git(work.path(), &["init", "-q", "-b", "main"]);
        for (path, content) in files {
            let file = work.path().join(path);
            std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
            std::fs::write(file, content).expect("write");
        }
        git(work.path(), &["add", "-A"]);
        git(work.path(), &["commit", "-q", "-m", "initial"]);
        git(
            work.path(),
            &["push", "-q", bare.to_str().expect("utf-8"), "main"],
        );
        git(work.path(), &["rev-parse", "HEAD"])
    }

    /// Creates bare repository `name` whose `main` has `commits` commits (each changing
    /// `history.txt`), the last of which also holds `files`; returns the last commit. Made with
    /// `git fast-import`, so 10,000 commits take seconds.
    pub fn create_with_history(
        &self,
        name: &str,
        files: &[(String, String)],
        commits: usize,
    ) -> String {
        use std::io::Write;
        let bare = self.root.join(name);
        git(&self.root, &["init", "-q", "--bare", "-b", "main", name]);
        let blob = |path: &str, content: &str| {
            format!(
                "M 100644 inline {path}\ndata {}\n{content}\n",
                content.len()
            )
        };
        let mut stream = String::new();
        for i in 1..=commits.max(1) {
            let message = format!("change {i}");
            stream.push_str(&format!(
                "commit refs/heads/main\ncommitter Bench <bench@example.com> {} +0000\ndata {}\n{message}\n",
                1_700_000_000 + i,
                message.len()
            ));
            stream.push_str(&blob("history.txt", &format!("{i}\n")));
            if i == commits.max(1) {
                for (path, content) in files {
                    stream.push_str(&blob(path, content));
                }
            }
            stream.push('\n');
        }
        let mut child = Command::new("git")
            .args(["fast-import", "--quiet"])
            .current_dir(&bare)
            .stdin(Stdio::piped())
            .spawn()
            .expect("git fast-import runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stream.as_bytes())
            .expect("write the stream");
        assert!(
            child.wait().expect("fast-import ends").success(),
            "git fast-import failed"
        );
        git(&bare, &["rev-parse", "main"])
    }

    /// Commits `files` (path, content) on top of `branch` of repository `name` with `message`
    /// and pushes it, as a developer would; returns the new commit's ID.
    pub fn commit(
        &self,
        name: &str,
        branch: &str,
        files: &[(&str, &str)],
        message: &str,
    ) -> String {
        self.commit_at(name, branch, files, message, None)
    }

    /// [`Repos::commit`] dated `at` (seconds since the epoch) when given.
    pub fn commit_at(
        &self,
        name: &str,
        branch: &str,
        files: &[(&str, &str)],
        message: &str,
        at: Option<i64>,
    ) -> String {
        let date = at.map(|t| format!("@{t} +0000")).unwrap_or_default();
        let env: Vec<(&str, &str)> = match at {
            Some(_) => vec![
                ("GIT_AUTHOR_DATE", date.as_str()),
                ("GIT_COMMITTER_DATE", date.as_str()),
            ],
            None => Vec::new(),
        };
        let bare = self.root.join(name);
        let work = tempfile::tempdir().expect("a work tree");
        let url = bare.to_str().expect("utf-8");
        git(work.path(), &["clone", "-q", "-b", branch, url, "."]);
        for (path, content) in files {
            let file = work.path().join(path);
            std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
            std::fs::write(file, content).expect("write");
        }
        git(work.path(), &["add", "-A"]);
        git_with(work.path(), &["commit", "-q", "-m", message], &env);
        git(work.path(), &["push", "-q", "origin", branch]);
        git(work.path(), &["rev-parse", "HEAD"])
    }

    /// Tags `commit` of repository `name` (annotated when `message` is given).
    pub fn tag(&self, name: &str, tag: &str, commit: &str, message: Option<&str>) {
        let bare = self.root.join(name);
        match message {
            Some(m) => git(&bare, &["tag", "-a", tag, commit, "-m", m]),
            None => git(&bare, &["tag", tag, commit]),
        };
    }

    /// `git log --format=%s` of a branch of a repository (newest first).
    pub fn subjects(&self, name: &str, branch: &str) -> Vec<String> {
        let out = git(&self.root.join(name), &["log", "--format=%s", branch, "--"]);
        out.lines().map(str::to_string).collect()
    }

    /// A path in a branch, as `git show branch:path` prints it.
    pub fn show(&self, name: &str, branch: &str, path: &str) -> String {
        git(
            &self.root.join(name),
            &["show", &format!("{branch}:{path}")],
        )
    }
}

impl Default for Repos {
    fn default() -> Self {
        Repos::new()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `git daemon` serving `repos` over `git://127.0.0.1:<port>/`, push enabled.
pub struct GitDaemon {
    pub url: String,
    child: Child,
}

impl GitDaemon {
    pub fn start(repos: &Repos) -> GitDaemon {
        let port = free_port();
        let root = repos.root.to_str().expect("utf-8");
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={root}"),
                "--export-all",
                "--enable=receive-pack",
                "--log-destination=none",
                root,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        GitDaemon {
            url: format!("git://127.0.0.1:{port}"),
            child,
        }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Smart HTTP with basic auth (`user:password`) serving `repos` at `http://127.0.0.1:<port>/`.
pub struct GitHttp {
    pub url: String,
    child: Child,
}

impl GitHttp {
    pub fn start(repos: &Repos, credentials: &str) -> GitHttp {
        require("python3", "python3");
        let script = crate::repo_root().join("tests/servers/git_http_server.py");
        let (child, address) = crate::spawn_listening(
            Command::new("python3")
                .arg(script)
                .arg(&repos.root)
                .arg("0")
                .arg(credentials),
            "the git HTTP server",
        );
        GitHttp {
            url: format!("http://{address}"),
            child,
        }
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Git hosting service (`tests/servers/git_forge_server.py`): smart HTTP Git with basic auth
/// (any user, password `token`) and the pull request REST APIs of GitHub, GitLab, Gitea,
/// Bitbucket Cloud and Azure DevOps over the same repositories, at `http://127.0.0.1:<port>`.
pub struct GitForge {
    pub url: String,
    child: Child,
}

impl GitForge {
    pub fn start(repos: &Repos, token: &str) -> GitForge {
        require("python3", "python3");
        let script = crate::repo_root().join("tests/servers/git_forge_server.py");
        let (child, address) = crate::spawn_listening(
            Command::new("python3")
                .arg(script)
                .arg(&repos.root)
                .arg(token),
            "the forge server",
        );
        GitForge {
            url: format!("http://{address}"),
            child,
        }
    }

    /// Steers pull request `number` of repository `repo` (its path under the root): `merge`,
    /// `close`, or `set` with `fields` (`draft`, `blocked`).
    pub async fn control(&self, action: &str, repo: &str, number: u64, fields: serde_json::Value) {
        let mut body = serde_json::json!({"repo": repo, "number": number});
        if let (Some(b), Some(f)) = (body.as_object_mut(), fields.as_object()) {
            b.extend(f.clone());
        }
        let response = dray::tls::client()
            .post(format!("{}/_test/{action}", self.url))
            .json(&body)
            .send()
            .await
            .expect("the forge answers");
        assert!(
            response.status().is_success(),
            "{action}: {}",
            response.status()
        );
    }

    /// Every REST request the forge received: `{method, path, query, body}`.
    pub async fn requests(&self) -> Vec<serde_json::Value> {
        dray::tls::client()
            .get(format!("{}/_test/requests", self.url))
            .send()
            .await
            .expect("the forge answers")
            .json()
            .await
            .expect("JSON")
    }
}

impl Drop for GitForge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// OpenSSH's `sshd` serving `repos` over `ssh://USER@127.0.0.1:<port>/<repos root>/…`, as a Git
/// forge does: public-key login only, with a fresh host key and a fresh client key.
pub struct GitSsh {
    /// `ssh://user@127.0.0.1:port` (a repository's URL adds its absolute path).
    pub url: String,
    /// The client's private key (OpenSSH format), for a `cred-type: git` Secret.
    pub private_key: String,
    /// The server's line for a known-hosts file: `[127.0.0.1]:port ssh-ed25519 AAAA…`.
    pub known_host: String,
    /// The directory of the repositories it serves.
    root: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl GitSsh {
    pub fn start(repos: &Repos) -> GitSsh {
        const SSHD: &str = "/usr/sbin/sshd";
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing; the SSH tests need a real one: `apt-get install -y openssh-server` (tests/run.sh installs it)"
        );
        let dir = tempfile::tempdir().expect("a directory for sshd");
        let path = |name: &str| dir.path().join(name);
        for key in ["host_key", "client_key"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(path(key))
                .output()
                .expect("ssh-keygen runs (openssh-client)");
            assert!(out.status.success(), "ssh-keygen: {out:?}");
        }
        std::fs::copy(path("client_key.pub"), path("authorized_keys")).expect("authorize");
        let port = free_port();
        // sshd logs in as the user it runs as (root in CI).
        let user = Command::new("id")
            .arg("-un")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .expect("id runs");
        std::fs::write(
            path("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 UsePAM no\nStrictModes no\n",
                path("host_key").display(),
                path("sshd.pid").display(),
                path("authorized_keys").display(),
            ),
        )
        .expect("write sshd_config");
        // sshd wants its privilege-separation directory to exist.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(path("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let host_key = std::fs::read_to_string(path("host_key.pub")).expect("the host key");
        let mut fields = host_key.split_whitespace();
        let (kind, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        GitSsh {
            url: format!("ssh://{user}@127.0.0.1:{port}"),
            private_key: std::fs::read_to_string(path("client_key")).expect("the client key"),
            known_host: format!("[127.0.0.1]:{port} {kind} {key}"),
            root: repos.root.clone(),
            child,
            _dir: dir,
        }
    }

    /// A `cred-type: git` Secret of `project` holding the client's key for `repo_url`.
    pub fn secret(&self, project: &str, repo_url: &str) -> String {
        let key: String = self
            .private_key
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect();
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: git-ssh\n  namespace: {project}\n  labels: {{kargo.akuity.io/cred-type: git}}\n\
             stringData:\n  repoURL: '{repo_url}'\n  sshPrivateKey: |\n{key}"
        )
    }

    /// The URL of repository `name`.
    pub fn repo_url(&self, name: &str) -> String {
        format!("{}{}/{name}", self.url, self.root.display())
    }
}

impl Drop for GitSsh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
