//! A real OCI registry for end-to-end tests: Debian's `docker-registry` (CNCF distribution) on a
//! free port with its storage in a temporary directory, with no auth, htpasswd basic auth, or
//! the bearer-token flow (a token service started here, which signs ES256 JWTs with a
//! certificate the registry trusts), and a pusher that writes images and charts through the
//! registry's HTTP API (blobs, then the manifest), as `docker push` or `skopeo` would. Every
//! request the registry answers is recorded, so tests can count them.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How a [`Registry`] checks who is asking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Auth {
    None,
    /// htpasswd: [`USER`] and [`PASSWORD`].
    Basic,
    /// Bearer tokens from a token service: [`USER`] and [`PASSWORD`] get pull and push; anyone
    /// else gets a token that grants nothing (as Docker Hub answers for a private repository).
    Token,
}

/// The config of the images pushed here: linux/amd64, nothing else.
const IMAGE_CONFIG: &[u8] =
    br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;

/// The one account of a registry started with auth.
pub const USER: &str = "puller";
pub const PASSWORD: &str = "pull-secret-7";

/// A running registry; stopped when dropped.
pub struct Registry {
    /// `127.0.0.1:<port>`: image references start with it.
    pub address: String,
    child: Child,
    auth: Auth,
    /// `METHOD URI STATUS` of every request answered, oldest first.
    requests: Arc<Mutex<Vec<String>>>,
    issuer: Option<Arc<TokenService>>,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// A registry that lets anyone pull and push.
    pub fn start() -> Registry {
        Registry::start_with(Auth::None)
    }

    pub fn start_with(auth: Auth) -> Registry {
        let dir = tempfile::tempdir().expect("a storage directory");
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:0\n  secret: dray-tests\n",
            dir.path().join("data").display()
        );
        let mut issuer = None;
        match auth {
            Auth::None => {}
            Auth::Basic => {
                let hash = bcrypt::hash(PASSWORD, 5).expect("bcrypt");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{USER}:{hash}\n")).expect("write htpasswd");
                text.push_str(&format!(
                    "auth:\n  htpasswd: {{realm: dray-tests, path: {}}}\n",
                    file.display()
                ));
            }
            Auth::Token => {
                let service = TokenService::start();
                let bundle = dir.path().join("token.crt");
                std::fs::write(&bundle, &service.certificate_pem).expect("write the bundle");
                text.push_str(&format!(
                    "auth:\n  token: {{realm: \"{}/token\", service: {SERVICE}, issuer: {ISSUER}, rootcertbundle: {}}}\n",
                    service.url,
                    bundle.display()
                ));
                issuer = Some(service);
            }
        }
        std::fs::write(&config, text).expect("write the config");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "docker-registry is missing ({e}); these tests need a real registry: `apt-get install -y docker-registry` (tests/run.sh installs it)"
                )
            });
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        for stream in streams {
            let (tx, requests) = (tx.clone(), requests.clone());
            std::thread::spawn(move || read_log(stream, tx, requests));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let address = loop {
            if let Ok(address) = rx.recv_timeout(Duration::from_millis(100)) {
                break address;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start listening within 20 s"
            );
        };
        Registry {
            address,
            child,
            auth,
            requests,
            issuer,
            _dir: dir,
        }
    }

    /// Where the registry keeps its blobs and manifests (to tamper with them in a test).
    pub fn storage(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// The file in which the registry keeps blob `digest` (`sha256:…`).
    pub fn blob_file(&self, digest: &str) -> std::path::PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The requests the registry has answered so far, as `METHOD URI STATUS`, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }

    /// Tokens the token service has issued (to anyone but this pusher).
    pub fn tokens_issued(&self) -> usize {
        self.issuer
            .as_ref()
            .map_or(0, |i| i.issued.load(Ordering::SeqCst))
    }

    /// `request` with the pusher's credentials for `repo`.
    fn authorized(&self, request: reqwest::RequestBuilder, repo: &str) -> reqwest::RequestBuilder {
        match (&self.auth, &self.issuer) {
            (Auth::Basic, _) => request.basic_auth(USER, Some(PASSWORD)),
            (Auth::Token, Some(issuer)) => request.bearer_auth(issuer.mint(
                USER,
                serde_json::json!([{"type": "repository", "name": repo, "actions": ["pull", "push"]}]),
            )),
            _ => request,
        }
    }
}

/// Writes an OCI image layout at `dir` holding one image tagged `tag`, as a build tool leaves
/// one: a gzip tar layer with `hello.txt` (`content`), a linux/amd64 config, and its manifest.
pub fn oci_layout(dir: &std::path::Path, tag: &str, content: &str) {
    use std::io::Write;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("the layout's blobs");
    let put = |bytes: &[u8]| {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).expect("write a blob");
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "hello.txt", content.as_bytes())
        .expect("tar");
    let raw = tar.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).expect("gzip");
    let (layer, layer_size) = put(&gz.finish().expect("gzip"));
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", hex::encode(Sha256::digest(&raw)))]}})
    .to_string();
    let (config, config_size) = put(config.as_bytes());
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}]})
    .to_string();
    let (manifest, manifest_size) = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion": "1.0.0"}"#)
        .expect("oci-layout");
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest, "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).expect("index.json");
}

impl Registry {
    /// Copies image `tag` of the OCI layout at `layout` to `repo:tag` with `skopeo copy`, as
    /// the pusher's account; `docker_format` converts it to Docker's schema 2 manifest (as
    /// `docker push` writes). Returns the digest the registry serves it under.
    pub async fn skopeo_copy(
        &self,
        layout: &std::path::Path,
        tag: &str,
        repo: &str,
        docker_format: bool,
    ) -> String {
        let mut command = Command::new("skopeo");
        command.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if docker_format {
            command.args(["--format", "v2s2"]);
        }
        if self.auth != Auth::None {
            command.arg(format!("--dest-creds={USER}:{PASSWORD}"));
        }
        let out = command
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.address))
            .output()
            .unwrap_or_else(|e| {
                panic!("skopeo is missing ({e}): `apt-get install -y skopeo` (tests/run.sh installs it)")
            });
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let head = self
            .authorized(
                dray::tls::client()
                    .head(format!("http://{}/v2/{repo}/manifests/{tag}", self.address))
                    .header(
                        "Accept",
                        "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
                    ),
                repo,
            )
            .send()
            .await
            .expect("HEAD the manifest");
        assert_eq!(head.status(), 200, "HEAD {repo}:{tag}");
        let media_type = head.headers()["content-type"]
            .to_str()
            .expect("a type")
            .to_string();
        assert_eq!(
            media_type.contains("docker"),
            docker_format,
            "{repo}:{tag} is served as {media_type}"
        );
        head.headers()["docker-content-digest"]
            .to_str()
            .expect("a digest")
            .to_string()
    }
}

/// Reads the registry's log: the address it listens on (sent once), and each request it
/// answered (from the access log: `"GET /v2/… HTTP/1.1" 200`).
fn read_log(
    stream: impl std::io::Read,
    tx: std::sync::mpsc::Sender<String>,
    requests: Arc<Mutex<Vec<String>>>,
) {
    for line in std::io::BufReader::new(stream)
        .lines()
        .map_while(Result::ok)
    {
        if let Some(at) = line.find("listening on ") {
            let rest = &line[at + "listening on ".len()..];
            let address: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"')
                .collect();
            let _ = tx.send(address);
        } else if let Some((_, rest)) = line.split_once("] \"") {
            // Combined log format: `… [date] "GET /v2/x HTTP/1.1" 200 2 "" "agent"`.
            let Some((request, after)) = rest.split_once('"') else {
                continue;
            };
            let mut words = request.split(' ');
            let (method, uri) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let status = after.split_whitespace().next().unwrap_or("");
            requests
                .lock()
                .expect("requests")
                .push(format!("{method} {uri} {status}"));
        }
    }
}

impl Registry {
    async fn upload(&self, client: &reqwest::Client, repo: &str, bytes: &[u8]) -> String {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let started = self
            .authorized(
                client.post(format!("http://{}/v2/{repo}/blobs/uploads/", self.address)),
                repo,
            )
            .send()
            .await
            .expect("start an upload");
        assert_eq!(started.status(), 202, "starting an upload");
        let location = started.headers()["location"]
            .to_str()
            .expect("a location")
            .to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.address)
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let done = self
            .authorized(
                client
                    .put(format!("{location}{separator}digest={digest}"))
                    .header("Content-Type", "application/octet-stream")
                    .body(bytes.to_vec()),
                repo,
            )
            .send()
            .await
            .expect("upload");
        assert_eq!(done.status(), 201, "uploading a blob");
        digest
    }

    /// Pushes a one-layer image `repo:tag` whose layer is `content`, with manifest
    /// `annotations`; returns the manifest's digest.
    pub async fn push(
        &self,
        repo: &str,
        tag: &str,
        content: &str,
        annotations: &[(&str, &str)],
    ) -> String {
        self.push_artifact(
            repo,
            &[tag],
            ("application/vnd.oci.image.config.v1+json", IMAGE_CONFIG),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                content.as_bytes(),
            ),
            annotations,
        )
        .await
    }

    /// Pushes one small image under every tag of `tags` (a repository with thousands of tags).
    pub async fn push_tags(&self, repo: &str, tags: &[String]) -> String {
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        self.push_artifact(
            repo,
            &tags,
            ("application/vnd.oci.image.config.v1+json", IMAGE_CONFIG),
            ("application/vnd.oci.image.layer.v1.tar+gzip", b"layer"),
            &[],
        )
        .await
    }

    /// Pushes a Helm chart `repo:version` as Helm 3.8+ does: a chart config and one
    /// `.tgz` layer with Helm's media types; the tag writes `+` as `_`. Returns the digest.
    pub async fn push_chart(&self, repo: &str, version: &str, tgz: &[u8]) -> String {
        let name = repo.rsplit('/').next().unwrap_or(repo);
        let config =
            serde_json::json!({"apiVersion": "v2", "name": name, "version": version}).to_string();
        self.push_artifact(
            repo,
            &[&version.replace('+', "_")],
            (
                "application/vnd.cncf.helm.config.v1+json",
                config.as_bytes(),
            ),
            ("application/vnd.cncf.helm.chart.content.v1.tar+gzip", tgz),
            &[],
        )
        .await
    }

    /// Pushes one manifest (a config and one layer, with their media types) under every tag
    /// of `tags`, several at a time; returns its digest.
    pub async fn push_artifact(
        &self,
        repo: &str,
        tags: &[&str],
        (config_type, config): (&str, &[u8]),
        (layer_type, layer): (&str, &[u8]),
        annotations: &[(&str, &str)],
    ) -> String {
        use futures_util::StreamExt;
        let client = dray::tls::client();
        let layer_digest = self.upload(&client, repo, layer).await;
        let config_digest = self.upload(&client, repo, config).await;
        let annotations: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": layer.len()}],
            "annotations": annotations,
        })
        .to_string();
        let puts = futures_util::stream::iter(tags.iter().map(|tag| {
            self.authorized(
                client
                    .put(format!("http://{}/v2/{repo}/manifests/{tag}", self.address))
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    .body(manifest.clone()),
                repo,
            )
            .send()
        }))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
        for put in puts {
            let put = put.expect("push the manifest");
            assert_eq!(
                put.status(),
                201,
                "pushing the manifest: {}",
                put.text().await.unwrap_or_default()
            );
        }
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(manifest.as_bytes()))
        )
    }
}

impl Registry {
    /// Uploads one blob to `repo`; returns its digest.
    pub async fn put_blob(&self, repo: &str, bytes: &[u8]) -> String {
        self.upload(&dray::tls::client(), repo, bytes).await
    }

    /// Puts `manifest` (of `media_type`) at `reference` (a tag or its digest) of `repo`; returns
    /// its digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        manifest: &serde_json::Value,
    ) -> String {
        let body = manifest.to_string();
        let put = self
            .authorized(
                dray::tls::client()
                    .put(format!(
                        "http://{}/v2/{repo}/manifests/{reference}",
                        self.address
                    ))
                    .header("Content-Type", media_type)
                    .body(body.clone()),
                repo,
            )
            .send()
            .await
            .expect("put a manifest");
        assert_eq!(
            put.status(),
            201,
            "putting a manifest: {}",
            put.text().await.unwrap_or_default()
        );
        format!("sha256:{}", hex::encode(Sha256::digest(body.as_bytes())))
    }
}

impl Registry {
    /// Pushes a single image for `arch` (linux) by digest; returns (digest, size).
    async fn push_platform_image(
        &self,
        client: &reqwest::Client,
        repo: &str,
        arch: &str,
    ) -> (String, usize) {
        let layer = self.upload(client, repo, arch.as_bytes()).await;
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        let config_digest = self.upload(client, repo, config.as_bytes()).await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": arch.len()}],
        })
        .to_string();
        let digest = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(manifest.as_bytes()))
        );
        let put = self
            .authorized(
                client
                    .put(format!(
                        "http://{}/v2/{repo}/manifests/{digest}",
                        self.address
                    ))
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    .body(manifest.clone()),
                repo,
            )
            .send()
            .await
            .expect("push a platform manifest");
        assert_eq!(put.status(), 201, "pushing a platform manifest");
        (digest, manifest.len())
    }

    /// Pushes a multi-platform image `repo:tag` (an OCI index of linux images for `archs`);
    /// returns the index's digest.
    pub async fn push_index(&self, repo: &str, tag: &str, archs: &[&str]) -> String {
        let client = dray::tls::client();
        let mut manifests = Vec::new();
        for arch in archs {
            let (digest, size) = self.push_platform_image(&client, repo, arch).await;
            manifests.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest, "size": size,
                "platform": {"os": "linux", "architecture": arch},
            }));
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        })
        .to_string();
        let put = self
            .authorized(
                client
                    .put(format!("http://{}/v2/{repo}/manifests/{tag}", self.address))
                    .header("Content-Type", "application/vnd.oci.image.index.v1+json")
                    .body(index.clone()),
                repo,
            )
            .send()
            .await
            .expect("push the index");
        assert_eq!(
            put.status(),
            201,
            "pushing the index: {}",
            put.text().await.unwrap_or_default()
        );
        format!("sha256:{}", hex::encode(Sha256::digest(index.as_bytes())))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The token service's names, as the registry's `auth.token` config repeats them.
const SERVICE: &str = "dray-test-registry";
const ISSUER: &str = "dray-test-issuer";

/// A bearer-token service for the registry, as Docker Hub's or Harbor's: `GET /token?scope=…`
/// answers a JWT signed (ES256) with a key whose self-signed certificate the registry trusts.
/// Stopped with the process (its thread has nothing else to do).
struct TokenService {
    url: String,
    certificate_pem: String,
    key: ring::signature::EcdsaKeyPair,
    /// `x5c`: the certificate, base64 DER, in every token's header.
    chain: String,
    issued: AtomicUsize,
}

impl TokenService {
    fn start() -> Arc<TokenService> {
        use base64::Engine as _;
        let made = rcgen::generate_simple_self_signed(vec!["dray-test-issuer".to_string()])
            .expect("a certificate");
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &made.signing_key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .expect("the signing key");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let service = Arc::new(TokenService {
            url: format!("http://{}", listener.local_addr().expect("address")),
            certificate_pem: made.cert.pem(),
            key,
            chain: base64::engine::general_purpose::STANDARD.encode(made.cert.der()),
            issued: AtomicUsize::new(0),
        });
        let state = service.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new()
                    .route("/token", axum::routing::get(token))
                    .with_state(state);
                axum::serve(listener, app).await.expect("the token service");
            });
        });
        service
    }

    /// A token for `subject` granting `access` (Docker's claim: a list of
    /// `{type, name, actions}`), valid for 5 minutes.
    fn mint(&self, subject: &str, access: serde_json::Value) -> String {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.chain]});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("{now}-{}", self.issued.load(Ordering::SeqCst)),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self
            .key
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", b64(signature.as_ref()))
    }
}

/// `GET /token?service=…&scope=repository:NAME:ACTIONS`: the requested actions for the
/// account, nothing for anyone else (with any other password, or none).
async fn token(
    axum::extract::State(service): axum::extract::State<Arc<TokenService>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> axum::Json<serde_json::Value> {
    use base64::Engine as _;
    service.issued.fetch_add(1, Ordering::SeqCst);
    let account = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .filter(|v| *v == format!("{USER}:{PASSWORD}"));
    let access = match (account, query.get("scope")) {
        (Some(_), Some(scope)) => {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            serde_json::json!([{"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}])
        }
        _ => serde_json::json!([]),
    };
    let token = service.mint(USER, access);
    axum::Json(serde_json::json!({"token": token, "access_token": token, "expires_in": 300}))
}
