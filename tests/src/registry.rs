//! A real OCI registry for end-to-end tests: Debian's `docker-registry` (CNCF distribution) on a
//! free port with its storage in a temporary directory, and a pusher that writes images through
//! the registry's HTTP API (blobs, then the manifest), as `docker push` or `skopeo` would.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A running registry; stopped when dropped.
pub struct Registry {
    /// `127.0.0.1:<port>`: image references start with it.
    pub address: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("a storage directory");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:0\n  secret: dray-tests\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write the config");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "docker-registry is missing ({e}); these tests need a real registry: `apt-get install -y docker-registry` (tests/run.sh installs it)"
                )
            });
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
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
                }
            }
        });
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
            _dir: dir,
        }
    }

    async fn upload(&self, client: &reqwest::Client, repo: &str, bytes: &[u8]) -> String {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let started = client
            .post(format!("http://{}/v2/{repo}/blobs/uploads/", self.address))
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
        let done = client
            .put(format!("{location}{separator}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
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
        let client = reqwest::Client::new();
        let layer = self.upload(&client, repo, content.as_bytes()).await;
        let config = br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_digest = self.upload(&client, repo, config).await;
        let annotations: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": content.len()}],
            "annotations": annotations,
        })
        .to_string();
        let put = client
            .put(format!("http://{}/v2/{repo}/manifests/{tag}", self.address))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await
            .expect("push the manifest");
        assert_eq!(
            put.status(),
            201,
            "pushing the manifest: {}",
            put.text().await.unwrap_or_default()
        );
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(manifest.as_bytes()))
        )
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
        let put = client
            .put(format!(
                "http://{}/v2/{repo}/manifests/{digest}",
                self.address
            ))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await
            .expect("push a platform manifest");
        assert_eq!(put.status(), 201, "pushing a platform manifest");
        (digest, manifest.len())
    }

    /// Pushes a multi-platform image `repo:tag` (an OCI index of linux images for `archs`);
    /// returns the index's digest.
    pub async fn push_index(&self, repo: &str, tag: &str, archs: &[&str]) -> String {
        let client = reqwest::Client::new();
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
        let put = client
            .put(format!("http://{}/v2/{repo}/manifests/{tag}", self.address))
            .header("Content-Type", "application/vnd.oci.image.index.v1+json")
            .body(index.clone())
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
