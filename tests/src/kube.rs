//! A real Kubernetes API server: `kube-apiserver` v1.20.2 (tests/run.sh builds it from Debian's
//! source into `~/.cache/dray-tools/kube`, or `DRAY_KUBE_APISERVER`) on a real `etcd`, each on
//! free ports in a directory of its own, stopped when dropped. No controller manager, scheduler
//! or kubelet runs: a test that needs their part (Argo CD writing an Application's status, a
//! Job finishing) plays it through the API, and says so.
//!
//! Users (static tokens): `admin` (`system:masters`), `dray` (no rights until a test grants
//! some with RBAC, as an operator would) and `reader` (none ever).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "admin-token";
pub const DRAY_TOKEN: &str = "dray-token";
pub const READER_TOKEN: &str = "reader-token";

pub struct KubeCluster {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The API server's certificate, which is also its CA (self-signed).
    pub ca: PathBuf,
    client: reqwest::Client,
    apiserver: Child,
    etcd: Child,
    dir: tempfile::TempDir,
}

fn apiserver_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("DRAY_KUBE_APISERVER") {
        return path.into();
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/dray-tools/kube/kube-apiserver")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn spawn(command: &mut Command, what: &str, install: &str) -> Child {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({e}): {install}"))
}

impl KubeCluster {
    /// Starts etcd and the API server and waits until it is ready (a few seconds).
    pub async fn start() -> KubeCluster {
        let dir = tempfile::tempdir().expect("a directory");
        let root = dir.path();
        let (client_port, peer_port, port) = (free_port(), free_port(), free_port());
        let etcd = spawn(
            Command::new("etcd")
                .args(["--name", "test", "--data-dir"])
                .arg(root.join("etcd"))
                .arg(format!(
                    "--listen-client-urls=http://127.0.0.1:{client_port}"
                ))
                .arg(format!(
                    "--advertise-client-urls=http://127.0.0.1:{client_port}"
                ))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
                ))
                .arg(format!(
                    "--initial-cluster=test=http://127.0.0.1:{peer_port}"
                ))
                .args(["--logger", "zap", "--log-outputs"])
                .arg(root.join("etcd.log")),
            "etcd",
            "install it with `apt-get install etcd-server` (tests/run.sh does)",
        );
        openssl(root, &["genrsa", "-out", "sa.key", "2048"]);
        openssl(root, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        std::fs::write(
            root.join("tokens.csv"),
            format!(
                "{ADMIN_TOKEN},admin,uid-admin,\"system:masters\"\n{DRAY_TOKEN},dray,uid-dray,\n{READER_TOKEN},reader,uid-reader,\n"
            ),
        )
        .expect("write the tokens");
        let log = std::fs::File::create(root.join("apiserver.log")).expect("a log file");
        let apiserver = Command::new(apiserver_binary())
            .arg(format!("--etcd-servers=http://127.0.0.1:{client_port}"))
            .args(["--advertise-address=127.0.0.1", "--bind-address=127.0.0.1"])
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", root.join("certs").display()))
            .arg(format!("--token-auth-file={}", root.join("tokens.csv").display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", root.join("sa.pub").display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                root.join("sa.key").display()
            ))
            .args([
                "--service-cluster-ip-range=10.0.0.0/24",
                "--disable-admission-plugins=ServiceAccount",
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): tests/run.sh builds it (tests/tools/build-kube-apiserver.sh), or set DRAY_KUBE_APISERVER",
                    apiserver_binary().display()
                )
            });
        let url = format!("https://127.0.0.1:{port}");
        let ca = root.join("certs/apiserver.crt");
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            if let Ok(pem) = std::fs::read(&ca)
                && let Ok(cert) = reqwest::Certificate::from_pem(&pem)
            {
                let client = dray::tls::client_builder()
                    .add_root_certificate(cert)
                    .build()
                    .expect("a client");
                let ready = client
                    .get(format!("{url}/readyz"))
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    break client;
                }
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver did not become ready in 60 s; its log:\n{}",
                std::fs::read_to_string(root.join("apiserver.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        KubeCluster {
            url,
            ca,
            client,
            apiserver,
            etcd,
            dir,
        }
    }

    /// A kubeconfig file for the user of `token`, as an operator would write it.
    pub fn kubeconfig(&self, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{token}.kubeconfig"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: test, cluster: {{server: \"{}\", certificate-authority: \"{}\"}}}}]\nusers: [{{name: user, user: {{token: {token}}}}}]\ncontexts: [{{name: test, context: {{cluster: test, user: user}}}}]\ncurrent-context: test\n",
                self.url,
                self.ca.display()
            ),
        )
        .expect("write the kubeconfig");
        path
    }

    /// `method path` as the admin, with a JSON body (or a merge patch, for PATCH): the status
    /// and the answer.
    pub async fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let patch = method == reqwest::Method::PATCH;
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request
                .header(
                    "content-type",
                    if patch {
                        "application/merge-patch+json"
                    } else {
                        "application/json"
                    },
                )
                .body(body.to_string());
        }
        let response = request.send().await.expect("the API server answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Like [`KubeCluster::request`], panicking unless the answer is a success.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.request(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        answer
    }

    /// Creates namespace `name`.
    pub async fn namespace(&self, name: &str) {
        self.ok(
            "POST",
            "/api/v1/namespaces",
            Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})),
        )
        .await;
    }

    /// Grants user `dray` `verbs` on `resources` of `group` in `namespace` (a Role and its
    /// binding, as an operator would).
    pub async fn grant_dray(
        &self,
        namespace: &str,
        group: &str,
        resources: &[&str],
        verbs: &[&str],
    ) {
        let name = format!("dray-{}", resources.join("-").replace('/', "-"));
        self.ok(
            "POST",
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles"),
            Some(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": name},
                "rules": [{"apiGroups": [group], "resources": resources, "verbs": verbs}],
            })),
        )
        .await;
        self.ok(
            "POST",
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"),
            Some(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dray"}],
            })),
        )
        .await;
    }

    /// Installs a CRD with Argo CD's `Application` shape (group `argoproj.io`, `spec`, `status`
    /// and `operation` kept as they come, no status subresource: as Argo CD's own) and waits
    /// until it is served.
    pub async fn install_application_crd(&self) {
        let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        self.ok(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            Some(json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "applications.argoproj.io"},
                "spec": {
                    "group": "argoproj.io",
                    "names": {"kind": "Application", "listKind": "ApplicationList", "plural": "applications", "singular": "application", "shortNames": ["app", "apps"]},
                    "scope": "Namespaced",
                    "versions": [{
                        "name": "v1alpha1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                            "spec": open, "status": open, "operation": open,
                        }}},
                    }],
                },
            })),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .request("GET", "/apis/argoproj.io/v1alpha1/applications", None)
            .await
            .0
            != 200
        {
            assert!(
                Instant::now() < deadline,
                "the Application CRD was not served in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl KubeCluster {
    /// Installs the CRDs `dray crds` prints and waits until each kind is served.
    pub async fn install_dray_crds(&self) {
        for crd in dray::store::kubernetes::crds::definitions() {
            self.ok(
                "POST",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                Some(crd.clone()),
            )
            .await;
            let spec = &crd["spec"];
            let path = format!(
                "/apis/{}/v1alpha1/{}",
                spec["group"].as_str().expect("a group"),
                spec["names"]["plural"].as_str().expect("a plural")
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while self.request("GET", &path, None).await.0 != 200 {
                assert!(Instant::now() < deadline, "{path} was not served in 30 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `dray serve` as a process (so it can be killed as a crash kills it) on `cluster`'s store,
/// with a data dir of its own; killed when dropped.
pub struct DrayProcess {
    pub child: Child,
    pub url: String,
    pub token: String,
    _dir: tempfile::TempDir,
}

impl Drop for DrayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DrayProcess {
    /// Starts one whose http steps may reach `allow_host`, with the Lease timings (duration,
    /// renew deadline, retry period in seconds) given or Dray's defaults; returns once ready.
    pub fn start(
        cluster: &KubeCluster,
        allow_host: &str,
        lease: Option<(f64, f64, f64)>,
    ) -> DrayProcess {
        let dir = tempfile::tempdir().expect("a data dir");
        crate::share_compile_cache(dir.path()).expect("the compile cache");
        let port = free_port();
        let timings = lease.map_or_else(String::new, |(duration, deadline, retry)| {
            format!(
                "lease-duration-seconds = {duration:?}\nrenew-deadline-seconds = {deadline:?}\nretry-period-seconds = {retry:?}\n"
            )
        });
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "data-dir = {:?}\nlisten = \"127.0.0.1:{port}\"\nstore = \"kubernetes\"\n\
                 [steps]\nallow-hosts = [{allow_host:?}]\n\
                 [kubernetes]\nkubeconfig = {:?}\n{timings}",
                dir.path().display().to_string(),
                cluster.kubeconfig(ADMIN_TOKEN).display().to_string(),
            ),
        )
        .expect("the config");
        let child = Command::new(crate::dray_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dray serve starts");
        let url = format!("http://127.0.0.1:{port}");
        let client = crate::blocking_client();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !client
            .get(format!("{url}/readyz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "dray serve not ready in 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let token = std::fs::read_to_string(dir.path().join("token"))
            .expect("the token")
            .trim()
            .to_string();
        DrayProcess {
            child,
            url,
            token,
            _dir: dir,
        }
    }

    /// `method path` on its API with its token, panicking unless it succeeds.
    pub fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = crate::blocking_client()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("the replica answers");
        let status = response.status();
        let body: Value = response.json().unwrap_or_default();
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }
}

/// A node whose kubelet is `tests/servers/kubelet_server.py`: it serves the container logs the
/// test writes ([`FakeKubelet::log`]) when the API server asks for them, and nothing else (no
/// container ever runs). Stopped when dropped.
pub struct FakeKubelet {
    /// The node's name, for a Pod's `spec.nodeName`.
    pub node: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl FakeKubelet {
    /// Appends `text` to the log of `container` of Pod `pod` in `namespace`.
    pub fn log(&self, namespace: &str, pod: &str, container: &str, text: &str) {
        use std::io::Write;
        let path = self
            .dir
            .path()
            .join(format!("{namespace}_{pod}_{container}.log"));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("the log file");
        file.write_all(text.as_bytes()).expect("write the log");
    }

    /// Ends the container: a follower of its log gets the rest and the end.
    pub fn end(&self, namespace: &str, pod: &str, container: &str) {
        self.log(namespace, pod, container, "");
        let path = self
            .dir
            .path()
            .join(format!("{namespace}_{pod}_{container}.log.done"));
        std::fs::write(path, "").expect("mark the container done");
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KubeCluster {
    /// Registers node `name` whose kubelet is a [`FakeKubelet`] (the API server reaches it at
    /// 127.0.0.1 on its port, over HTTPS, without checking its certificate, as it does when no
    /// `--kubelet-certificate-authority` is set).
    pub async fn fake_node(&self, name: &str) -> FakeKubelet {
        use std::io::BufRead as _;
        let dir = tempfile::tempdir().expect("a directory");
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
            ],
        );
        let mut child = Command::new("python3")
            .arg(crate::repo_root().join("tests/servers/kubelet_server.py"))
            .arg(dir.path())
            .arg(dir.path().join("cert.pem"))
            .arg(dir.path().join("key.pem"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the fake kubelet starts (python3)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the fake kubelet says where it listens");
        let port: u16 = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the fake kubelet: {line:?}"));
        self.ok(
            "POST",
            "/api/v1/nodes",
            Some(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})),
        )
        .await;
        self.ok(
            "PATCH",
            &format!("/api/v1/nodes/{name}/status"),
            Some(json!({"status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            }})),
        )
        .await;
        FakeKubelet {
            node: name.into(),
            dir,
            child,
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs (tests/run.sh installs it)");
    assert!(status.success(), "openssl {args:?}");
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
