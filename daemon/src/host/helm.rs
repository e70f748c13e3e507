//! The `dray:plugin/helm` interface (capability `helm`): a step lists and pulls Helm charts from
//! classic chart repositories (their `index.yaml`) and OCI registries through the host, with the
//! project's `cred-type: helm` Secrets, which the guest never sees. Repositories are reached as
//! chart discovery reaches them; what the guest gets is bounded (the index as discovery bounds
//! it, at most [`MAX_VERSIONS`] versions, archives of at most [`MAX_ARCHIVE_BYTES`]), every
//! archive a classic index gives a digest for is checked against it, and an archive lands only
//! inside the work directory, at a path that did not exist.
//!
//! Resolving a version constraint is left to the guest (the helm plugin resolves as Helm's
//! resolver does), so the host serves exactly what a repository lists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_client::secrets::RegistryAuth;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use wasmtime::component::{HasSelf, Linker};

use super::oci::OciAccess;
use crate::credentials::CredType;
use crate::discovery::chart::{Index, index, read_bounded};
use crate::oci::copy::{self, Endpoint, MAX_DOWNLOAD_BYTES};
use crate::runtime::bindings::dray::plugin::helm::{self, Pulled};
use crate::runtime::log::{Source, StepLog};

/// The most `helm` calls one step call may make (an umbrella chart with this many dependencies
/// is far past any seen).
pub const MAX_CALLS: u32 = 128;
/// The most versions `versions` answers.
pub const MAX_VERSIONS: usize = 10_000;
/// The largest chart archive `pull` writes (as `oci-download`'s layers).
pub const MAX_ARCHIVE_BYTES: u64 = MAX_DOWNLOAD_BYTES;
/// The media type of a chart's archive in an OCI registry (Helm 3.8+).
const CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// What the `helm` capability keeps for one call: the access it shares with `oci`, and the
/// classic indexes already read (a dependency update asks each repository twice).
pub struct HelmState {
    pub access: OciAccess,
    pub workdir: PathBuf,
    pub log: StepLog,
    pub calls: u32,
    pub indexes: HashMap<String, Value>,
}

impl HelmState {
    pub fn new(access: OciAccess, workdir: &Path, log: StepLog) -> HelmState {
        HelmState {
            access,
            workdir: workdir.to_path_buf(),
            log,
            calls: 0,
            indexes: HashMap::new(),
        }
    }

    fn credential(&self, repo_url: &str) -> Option<(String, String)> {
        self.access
            .credentials
            .as_ref()
            .and_then(|c| c.lookup(CredType::Helm, repo_url))
    }

    fn start(&mut self) -> Result<(), String> {
        if self.access.registries.is_none() {
            return Err(
                "chart repositories are not reachable from here: grant the helm capability (`dray plugin run --allow-helm`)"
                    .into(),
            );
        }
        self.calls += 1;
        if self.calls > MAX_CALLS {
            return Err(format!("a step may make at most {MAX_CALLS} helm calls"));
        }
        Ok(())
    }

    /// The entries of chart `name` in the classic repository `repo_url`.
    async fn entries(&mut self, repo_url: &str, name: &str) -> Result<Vec<Value>, String> {
        let key = repo_url.trim_end_matches('/').to_string();
        if !self.indexes.contains_key(&key) {
            let auth = self.credential(repo_url);
            let Index::Read { index, .. } = index(&key, &auth, None).await? else {
                return Err(format!("{key} answered 304 unasked"));
            };
            self.indexes.insert(key.clone(), index);
        }
        match &self.indexes[&key]["entries"][name] {
            Value::Array(list) => Ok(list.clone()),
            _ => Err(format!("{key}/index.yaml has no chart {name:?}")),
        }
    }

    /// The OCI repository of chart `name` under `oci://HOST/PATH`, with its credential.
    fn oci_endpoint(&self, repository: &str, name: &str, tag: &str) -> Result<Endpoint, String> {
        let bare = repository
            .strip_prefix("oci://")
            .ok_or_else(|| format!("{repository:?} is not an oci:// repository"))?
            .trim_end_matches('/');
        if name.is_empty() || name.contains(['/', ':', '@']) {
            return Err(format!("{name:?} is not a chart name"));
        }
        let mut endpoint =
            Endpoint::parse(&format!("{bare}/{name}:{tag}"), RegistryAuth::Anonymous)?;
        if let Some((user, password)) = self.credential(&format!("oci://{bare}/{name}")) {
            endpoint.auth = RegistryAuth::Basic(user, password);
        }
        Ok(endpoint)
    }

    fn record<T>(&self, what: &str, started: std::time::Instant, result: &Result<T, String>) {
        let (level, message) = match result {
            Ok(_) => (
                "info",
                format!("helm {what} ({} ms)", started.elapsed().as_millis()),
            ),
            Err(e) => ("warn", format!("helm {what} failed: {e}")),
        };
        self.log.push(Source::Host, level, message, Vec::new());
    }

    async fn list(&mut self, repository: &str, name: &str) -> Result<Vec<String>, String> {
        self.start()?;
        let versions: Vec<String> = if repository.starts_with("oci://") {
            let registries = self.registries()?;
            let endpoint = self.oci_endpoint(repository, name, "latest")?;
            let target = registries
                .target(&endpoint.repository)
                .map_err(|e| e.to_string())?;
            registries
                .guarded(&target.host, registries.tags(&target, &endpoint.auth))
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                // Helm writes a version's build metadata (`+`) as `_` in a tag.
                .map(|t| t.replace('_', "+"))
                .collect()
        } else {
            self.entries(repository, name)
                .await?
                .iter()
                .filter(|e| e["urls"].as_array().is_some_and(|u| !u.is_empty()))
                .filter_map(|e| e["version"].as_str().map(str::to_string))
                .collect()
        };
        if versions.len() > MAX_VERSIONS {
            return Err(format!(
                "{repository} lists {} versions of {name}, more than the {MAX_VERSIONS} a step may read",
                versions.len()
            ));
        }
        Ok(versions)
    }

    fn registries(&self) -> Result<std::sync::Arc<crate::discovery::registry::Registries>, String> {
        self.access
            .registries
            .clone()
            .ok_or_else(|| "registries are not reachable from here".to_string())
    }

    /// The host path `path` names, checked: inside the work directory, not there yet.
    async fn target(&self, path: &str) -> Result<PathBuf, String> {
        let target = super::git::resolve(&self.workdir, path)
            .map_err(|e| super::git::error_text(&e).to_string())?;
        if target == self.workdir {
            return Err(format!(
                "path {path:?} is the work directory itself; name a file"
            ));
        }
        if tokio::fs::symlink_metadata(&target).await.is_ok() {
            return Err(format!("{path} exists; remove it first"));
        }
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| format!("cannot create the directory of {path}: {e}"))?;
        }
        Ok(target)
    }

    async fn fetch(
        &mut self,
        repository: &str,
        name: &str,
        version: &str,
        path: &str,
    ) -> Result<Pulled, String> {
        self.start()?;
        if repository.starts_with("oci://") {
            let registries = self.registries()?;
            let source = self.oci_endpoint(repository, name, &version.replace('+', "_"))?;
            let target = self.target(path).await?;
            let written = copy::download(&registries, &source, &target, Some(CHART_LAYER)).await?;
            return Ok(Pulled {
                digest: written.digest,
                size: written.size,
            });
        }
        let entries = self.entries(repository, name).await?;
        let entry = entries
            .iter()
            .find(|e| e["version"].as_str() == Some(version))
            .ok_or_else(|| format!("{repository} has no version {version:?} of chart {name}"))?;
        let listed = entry["urls"][0]
            .as_str()
            .ok_or_else(|| format!("{repository} lists {name} {version} without a URL"))?;
        let base = reqwest::Url::parse(&format!("{}/", repository.trim_end_matches('/')))
            .map_err(|e| format!("{repository:?} is not a URL: {e}"))?;
        let url = base.join(listed).map_err(|e| {
            format!("{repository} lists {name} {version} at {listed:?}, not a URL: {e}")
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "{repository} lists {name} {version} at {url}, which is not HTTP"
            ));
        }
        let mut request = crate::tls::client().get(url.clone());
        // As Helm does without --pass-credentials: the repository's credential goes only to
        // its own host.
        if url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default()
            && let Some((user, password)) = self.credential(repository)
        {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("cannot fetch {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        let body = read_bounded(
            response,
            url.as_str(),
            MAX_ARCHIVE_BYTES as usize,
            "a chart archive",
        )
        .await?;
        let digest = format!("{:x}", Sha256::digest(&body));
        if let Some(listed) = entry["digest"].as_str().filter(|d| !d.is_empty())
            && listed.trim_start_matches("sha256:") != digest
        {
            return Err(format!(
                "{url} is not the archive {repository}/index.yaml lists for {name} {version} (digest sha256:{digest}, listed {listed})"
            ));
        }
        let target = self.target(path).await?;
        tokio::fs::write(&target, &body)
            .await
            .map_err(|e| format!("cannot write {path}: {e}"))?;
        Ok(Pulled {
            digest: format!("sha256:{digest}"),
            size: body.len() as u64,
        })
    }
}

impl helm::Host for HelmState {
    async fn versions(
        &mut self,
        repository: String,
        name: String,
    ) -> wasmtime::Result<Result<Vec<String>, String>> {
        let started = std::time::Instant::now();
        let result = self.list(&repository, &name).await;
        self.record(
            &format!("versions of {name} in {repository}"),
            started,
            &result,
        );
        Ok(result)
    }

    async fn pull(
        &mut self,
        repository: String,
        name: String,
        version: String,
        path: String,
    ) -> wasmtime::Result<Result<Pulled, String>> {
        let started = std::time::Instant::now();
        let result = self.fetch(&repository, &name, &version, &path).await;
        self.record(
            &format!("pull {name} {version} from {repository} to {path}"),
            started,
            &result,
        );
        Ok(result)
    }
}

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut HelmState,
) -> wasmtime::Result<()> {
    helm::add_to_linker::<T, HasSelf<HelmState>>(linker, get)
}
