//! The `dray:plugin/oci` interface (capability `oci`): a step copies and downloads OCI
//! artifacts through the host's registry client ([`crate::oci::copy`]), with the project's
//! `cred-type: image` Secrets (or `cred-type: helm` ones for `oci://` references), which the guest
//! never sees. Registries are reached as discovery reaches them (any a Warehouse may subscribe to,
//! with its rate limits and read mirrors); a download lands only inside the work directory.

use std::path::PathBuf;
use std::sync::Arc;

use oci_client::secrets::RegistryAuth;
use wasmtime::component::{HasSelf, Linker};

use crate::credentials::CredType;
use crate::discovery::registry::Registries;
use crate::oci::copy::{self, Endpoint};
use crate::runtime::bindings::dray::plugin::oci::{self, Copied, Downloaded};
use crate::runtime::log::{Source, StepLog};

/// The most `oci` calls one step call may make.
pub const MAX_CALLS: u32 = 32;

/// Finds the credential for a repository (`HOST/REPO`, or `oci://HOST/REPO` for Helm's).
pub trait OciCredentials: Send + Sync {
    fn lookup(&self, cred_type: CredType, repo_url: &str) -> Option<(String, String)>;
}

/// What one step call may do with registries.
#[derive(Clone, Default)]
pub struct OciAccess {
    /// How registries are reached; none: the call gets an error saying so.
    pub registries: Option<Arc<Registries>>,
    pub credentials: Option<Arc<dyn OciCredentials>>,
}

impl std::fmt::Debug for OciAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciAccess")
            .field("registries", &self.registries.is_some())
            .field("credentials", &self.credentials.is_some())
            .finish()
    }
}

/// What the `oci` capability keeps for one call.
pub struct OciState {
    pub access: OciAccess,
    pub workdir: PathBuf,
    pub log: StepLog,
    pub calls: u32,
}

impl OciState {
    /// The endpoint `text` names, with its credential.
    fn endpoint(&self, text: &str) -> Result<Endpoint, String> {
        let (cred_type, bare) = match text.strip_prefix("oci://") {
            Some(bare) => (CredType::Helm, bare),
            None => (CredType::Image, text),
        };
        let mut endpoint = Endpoint::parse(bare, RegistryAuth::Anonymous)?;
        let url = match cred_type {
            CredType::Helm => format!("oci://{}", endpoint.repository),
            _ => endpoint.repository.clone(),
        };
        if let Some((user, password)) = self
            .access
            .credentials
            .as_ref()
            .and_then(|c| c.lookup(cred_type, &url))
        {
            endpoint.auth = RegistryAuth::Basic(user, password);
        }
        Ok(endpoint)
    }

    /// Counts a call; the registries to use.
    fn start(&mut self) -> Result<Arc<Registries>, String> {
        self.calls += 1;
        if self.calls > MAX_CALLS {
            return Err(format!("a step may make at most {MAX_CALLS} oci calls"));
        }
        self.access
            .registries
            .clone()
            .ok_or_else(|| "registries are not reachable from here".to_string())
    }

    fn record<T>(&self, what: &str, started: std::time::Instant, result: &Result<T, String>) {
        let (level, message) = match result {
            Ok(_) => (
                "info",
                format!("oci {what} ({} ms)", started.elapsed().as_millis()),
            ),
            Err(e) => ("warn", format!("oci {what} failed: {e}")),
        };
        self.log.push(Source::Host, level, message, Vec::new());
    }
}

impl oci::Host for OciState {
    async fn copy(
        &mut self,
        source: String,
        destination: String,
        annotations: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<Copied, String>> {
        let started = std::time::Instant::now();
        let result = async {
            let registries = self.start()?;
            if annotations.len() > 64 {
                return Err("at most 64 annotations".to_string());
            }
            let from = self.endpoint(&source)?;
            let to = self.endpoint(&destination)?;
            let copied =
                copy::copy(&registries, &from, &to, &annotations.into_iter().collect()).await?;
            Ok(Copied {
                digest: copied.digest,
                tag: to.tag,
            })
        }
        .await;
        self.record(&format!("copy {source} to {destination}"), started, &result);
        Ok(result)
    }

    async fn download(
        &mut self,
        reference: String,
        path: String,
        media_type: Option<String>,
        allow_overwrite: bool,
    ) -> wasmtime::Result<Result<Downloaded, String>> {
        let started = std::time::Instant::now();
        let result = async {
            let registries = self.start()?;
            let source = self.endpoint(&reference)?;
            let target = crate::host::git::resolve(&self.workdir, &path)
                .map_err(|e| crate::host::git::error_text(&e).to_string())?;
            if target == self.workdir {
                return Err(format!(
                    "path {path:?} is the work directory itself; name a file"
                ));
            }
            match tokio::fs::symlink_metadata(&target).await {
                Ok(m) if m.is_dir() => {
                    return Err(format!("{path} is a directory"));
                }
                Ok(_) if !allow_overwrite => {
                    return Err(format!(
                        "{path} exists and overwriting is not allowed (set allowOverwrite)"
                    ));
                }
                _ => {}
            }
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| format!("cannot create the directory of {path}: {e}"))?;
            }
            let written =
                copy::download(&registries, &source, &target, media_type.as_deref()).await?;
            Ok(Downloaded {
                digest: written.digest,
                size: written.size,
                media_type: written.media_type,
            })
        }
        .await;
        self.record(&format!("download {reference} to {path}"), started, &result);
        Ok(result)
    }
}

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut OciState,
) -> wasmtime::Result<()> {
    oci::add_to_linker::<T, HasSelf<OciState>>(linker, get)
}
