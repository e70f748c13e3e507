//! Plugins from OCI registries: a step or verifier component published like an image
//! (`dray plugin push`, or `wkg oci push`) and used by reference (`uses: oci://HOST/REPO:TAG`).
//!
//! - [`layout`]: the CNCF Wasm OCI artifact layout (media types, the config, what a puller
//!   accepts);
//! - [`PluginRef`]: a reference as Stages and the CLI write it;
//! - [`resolve`] turns a tag into the manifest digest it names now; [`fetch`] reads the
//!   component of a manifest digest, checks every digest on the way (the manifest's own, the
//!   layer's) and keeps it on disk by content, so a digest is downloaded once per machine;
//! - [`push`] publishes a component.
//!
//! Pulls go through discovery's [`Registries`] (its grants, rate limits, back-off and mirrors);
//! pushes, which only the CLI makes, through `oci-client`.

pub mod copy;
pub mod layout;
pub mod plugins;
pub mod signature;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use oci_client::secrets::RegistryAuth;

use crate::discovery::registry::Registries;
use layout::{Descriptor, Manifest};

/// How Stages name a plugin in a registry.
pub const SCHEME: &str = "oci://";

/// A plugin reference: `oci://HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]`. The registry is
/// always named (no implicit Docker Hub), and a reference without tag or digest means `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl PluginRef {
    /// Whether a step's `uses` (or a verifier kind) names a plugin in a registry.
    pub fn is_oci(text: &str) -> bool {
        text.starts_with(SCHEME)
    }

    pub fn parse(text: &str) -> Result<PluginRef, String> {
        let rest = text.strip_prefix(SCHEME).ok_or_else(|| {
            format!("{text:?} is not a plugin reference: write oci://HOST/REPOSITORY:TAG (or @sha256:DIGEST)")
        })?;
        let bad = |why: &str| format!("{text:?} is not a plugin reference: {why}");
        let (host, _) = rest.split_once('/').ok_or_else(|| {
            bad("name the registry and the repository, oci://HOST/REPOSITORY:TAG")
        })?;
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(bad(
                "the first part must be the registry's host (with a dot or a port, or localhost)",
            ));
        }
        let parsed: oci_client::Reference = rest.parse().map_err(|e| bad(&format!("{e}")))?;
        if let Some(d) = parsed.digest()
            && !layout::is_digest(d)
        {
            return Err(bad("only sha256 digests are accepted"));
        }
        Ok(PluginRef {
            registry: parsed.registry().to_string(),
            repository: parsed.repository().to_string(),
            tag: parsed.tag().map(str::to_string),
            digest: parsed.digest().map(str::to_string),
        })
    }

    /// `HOST/REPOSITORY`, as discovery's registry client takes it.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag this reference resolves (`latest` when it names neither tag nor digest).
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// The same plugin pinned to `digest`.
    pub fn pinned(&self, digest: &str) -> PluginRef {
        PluginRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// For `oci-client`.
    fn oci_reference(&self) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone(),
                digest.clone(),
            ),
            (None, Some(digest)) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                digest.clone(),
            ),
            (tag, None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The manifest digest `reference` names now: its own digest if it has one, else what its tag
/// points at. The digest is computed from the bytes the registry sent, never taken from a header.
pub async fn resolve(
    registries: &Registries,
    reference: &PluginRef,
    auth: &RegistryAuth,
) -> Result<String, String> {
    if let Some(digest) = &reference.digest {
        return Ok(digest.clone());
    }
    let target = registries
        .target(&reference.repo())
        .map_err(|e| e.to_string())?;
    let (bytes, _) = registries
        .manifest(
            &target,
            auth,
            reference.tag_or_latest(),
            &[layout::MANIFEST_MEDIA_TYPE],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(layout::digest(&bytes))
}

/// A component read from a registry (or the local copy of one), every digest checked.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The manifest digest it was read by.
    pub manifest_digest: String,
    /// The component's layer (its digest is the component's content digest).
    pub layer: Descriptor,
    /// The manifest's annotations (title, version, source…).
    pub annotations: BTreeMap<String, String>,
    pub bytes: Vec<u8>,
    /// Whether the bytes came from the local copy (no blob was downloaded).
    pub cached: bool,
}

/// Where a component of layer digest `digest` is kept under `dir`.
fn cached_path(dir: &Path, digest: &str, extension: &str) -> PathBuf {
    dir.join(digest.replace(':', "-")).with_extension(extension)
}

/// Reads the component of manifest `manifest_digest` of `reference`'s repository: the manifest
/// (checked against its digest and the Wasm layout), then the layer, each from `cache_dir` if a
/// copy with that digest is there, else from the registry (checked, then kept there). Both are
/// named by their content, so a kept copy is as good as the registry's: a restarted daemon asks
/// the registry nothing for a digest it has run before.
pub async fn fetch(
    registries: &Registries,
    reference: &PluginRef,
    manifest_digest: &str,
    auth: &RegistryAuth,
    cache_dir: &Path,
) -> Result<Fetched, String> {
    if !layout::is_digest(manifest_digest) {
        return Err(format!("{manifest_digest:?} is not a sha256 digest"));
    }
    let target = registries
        .target(&reference.repo())
        .map_err(|e| e.to_string())?;
    let manifest_path = cached_path(&cache_dir.join("manifests"), manifest_digest, "json");
    let kept = tokio::fs::read(&manifest_path)
        .await
        .ok()
        .filter(|b| layout::digest(b) == manifest_digest);
    let bytes = match kept {
        Some(bytes) => bytes,
        None => {
            registries
                .manifest(
                    &target,
                    auth,
                    manifest_digest,
                    &[layout::MANIFEST_MEDIA_TYPE],
                )
                .await
                .map_err(|e| e.to_string())?
                .0
        }
    };
    let actual = layout::digest(&bytes);
    if actual != manifest_digest {
        return Err(format!(
            "{reference}: the registry sent a manifest whose digest is {actual}, not {manifest_digest}; refused (has the registry been tampered with?)"
        ));
    }
    if bytes.len() > layout::MAX_METADATA_BYTES {
        return Err(format!("{reference}: the manifest is too large"));
    }
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{reference}: the manifest is not an OCI image manifest: {e}"))?;
    let layer = manifest
        .component_layer()
        .map_err(|e| format!("{reference}: {e}"))?
        .clone();
    let path = cached_path(cache_dir, &layer.digest, "wasm");
    if let Ok(local) = tokio::fs::read(&path).await
        && layout::digest(&local) == layer.digest
    {
        keep(&manifest_path, &bytes).await.map_err(|e| {
            format!(
                "cannot keep the manifest in {}: {e}",
                manifest_path.display()
            )
        })?;
        return Ok(Fetched {
            manifest_digest: manifest_digest.to_string(),
            layer,
            annotations: manifest.annotations,
            bytes: local,
            cached: true,
        });
    }
    let component = registries
        // Never more than the manifest declared (itself at most MAX_COMPONENT_BYTES).
        .blob_up_to(&target, auth, &layer.digest, layer.size as usize)
        .await
        .map_err(|e| format!("{reference}: {e}"))?;
    // `blob_up_to` checked the bytes against the layer's digest; the size must agree too.
    if component.len() as i64 != layer.size {
        return Err(format!(
            "{reference}: the layer is {} bytes, but the manifest says {}; refused",
            component.len(),
            layer.size
        ));
    }
    layout::describe(&component).map_err(|e| format!("{reference}: {e}"))?;
    keep(&path, &component)
        .await
        .map_err(|e| format!("cannot keep the plugin in {}: {e}", path.display()))?;
    keep(&manifest_path, &bytes).await.map_err(|e| {
        format!(
            "cannot keep the manifest in {}: {e}",
            manifest_path.display()
        )
    })?;
    Ok(Fetched {
        manifest_digest: manifest_digest.to_string(),
        layer,
        annotations: manifest.annotations,
        bytes: component,
        cached: false,
    })
}

/// Writes `bytes` to `path` whole or not at all (a temporary file renamed into place).
async fn keep(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    tokio::fs::write(&partial, bytes).await?;
    tokio::fs::rename(&partial, path).await
}

/// What [`push`] published.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest_digest: String,
    pub layer_digest: String,
    pub size: usize,
}

/// Publishes `component` at `reference` in the CNCF Wasm layout, with the standard annotations
/// and `extra` ones; `title` is the layer's file name.
pub async fn push(
    reference: &PluginRef,
    component: Vec<u8>,
    title: &str,
    extra: &BTreeMap<String, String>,
    auth: &RegistryAuth,
) -> Result<Pushed, String> {
    use oci_client::client::{Config, ImageLayer};
    let info = layout::describe(&component)?;
    let created = crate::resource::now();
    let config = layout::config(&component, info, &created);
    let layer_digest = layout::digest(&component);
    let size = component.len();
    let layer = ImageLayer::new(
        component,
        layout::LAYER_MEDIA_TYPE.to_string(),
        Some([(layout::TITLE.to_string(), title.to_string())].into()),
    );
    let config = Config::new(
        serde_json::to_vec(&config).map_err(|e| e.to_string())?,
        layout::CONFIG_MEDIA_TYPE.to_string(),
        None,
    );
    let annotations = layout::annotations(title, reference.tag.as_deref(), &created, extra);
    let mut manifest = oci_client::manifest::OciImageManifest::build(
        std::slice::from_ref(&layer),
        &config,
        Some(annotations),
    );
    manifest.media_type = Some(layout::MANIFEST_MEDIA_TYPE.to_string());
    let client = client(&reference.registry);
    let target = reference.oci_reference();
    client
        .push(&target, &[layer], config, auth, Some(manifest.clone()))
        .await
        .map_err(|e| format!("cannot push {reference}: {e}"))?;
    let manifest_digest = client
        .fetch_manifest_digest(&target, auth)
        .await
        .map_err(|e| format!("pushed {reference}, but cannot read back its digest: {e}"))?;
    Ok(Pushed {
        manifest_digest,
        layer_digest,
        size,
    })
}

/// Dray's WIT contract as a binary WIT package (encoded by the build script from `wit/`).
pub static WIT_PACKAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dray-plugin.wasm"));
/// The contract's package name and version, as its WIT declares them.
pub const WIT_PACKAGE_NAME: &str = "dray:plugin";
pub const WIT_PACKAGE_VERSION: &str = "0.1.0";

/// An `oci-client` for `registry` (plain HTTP for a registry on this machine, as Docker does).
pub(crate) fn client(registry: &str) -> oci_client::Client {
    use oci_client::client::{ClientConfig, ClientProtocol};
    let local = crate::discovery::registry::is_local(registry);
    crate::tls::install_provider();
    #[allow(clippy::disallowed_methods)] // the provider is installed
    oci_client::Client::new(ClientConfig {
        protocol: if local {
            ClientProtocol::HttpsExcept(vec![registry.to_string()])
        } else {
            ClientProtocol::Https
        },
        ..ClientConfig::default()
    })
}

/// Signs manifest `digest` of `reference`'s repository with `key` and pushes the signature where
/// cosign keeps it by default (the tag `sha256-HEX.sig`).
pub async fn push_signature(
    reference: &PluginRef,
    digest: &str,
    key: &signature::SigningKey,
    auth: &RegistryAuth,
) -> Result<(), String> {
    use oci_client::client::{Config, ImageLayer};
    let payload = signature::payload(&reference.repo(), digest);
    let signed = key.sign(&payload)?;
    let layer = ImageLayer::new(
        payload,
        signature::MEDIA_TYPE.to_string(),
        Some([(signature::ANNOTATION.to_string(), signed)].into()),
    );
    let config = Config::new(
        b"{}".to_vec(),
        "application/vnd.oci.image.config.v1+json".to_string(),
        None,
    );
    let mut manifest =
        oci_client::manifest::OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
    manifest.media_type = Some(layout::MANIFEST_MEDIA_TYPE.to_string());
    let target = oci_client::Reference::with_tag(
        reference.registry.clone(),
        reference.repository.clone(),
        signature::tag(digest),
    );
    client(&reference.registry)
        .push(&target, &[layer], config, auth, Some(manifest))
        .await
        .map_err(|e| format!("cannot push the signature of {reference}: {e}"))?;
    Ok(())
}

/// The first of `keys` that signed manifest `digest` of `reference`'s repository, as cosign
/// stores signatures (see [`signature`]); an error says what is missing.
pub async fn verify_signature(
    registries: &Registries,
    reference: &PluginRef,
    digest: &str,
    auth: &RegistryAuth,
    keys: &[signature::PublicKey],
) -> Result<String, String> {
    let names = keys
        .iter()
        .map(|k| k.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let target = registries
        .target(&reference.repo())
        .map_err(|e| e.to_string())?;
    let manifests = signature_manifests(registries, &target, auth, digest).await;
    if manifests.is_empty() {
        return Err(format!(
            "{reference}@{digest} has no signature the daemon can find (neither at tag {} nor among its referrers); its [[steps.oci]] rule requires one by {names} (sign with `dray plugin push --sign-key` or `cosign sign --key`)",
            signature::tag(digest)
        ));
    }
    for manifest in manifests {
        for layer in manifest
            .layers
            .iter()
            .filter(|l| l.media_type == signature::MEDIA_TYPE && l.size > 0 && l.size <= 64 << 10)
            .take(16)
        {
            let Some(signed) = layer.annotations.get(signature::ANNOTATION) else {
                continue;
            };
            let payload = registries
                .blob_up_to(&target, auth, &layer.digest, layer.size as usize)
                .await
                .map_err(|e| format!("{reference}: cannot read a signature: {e}"))?;
            if !signature::names(&payload, digest) {
                continue;
            }
            if let Some(key) = keys.iter().find(|k| k.verifies(&payload, signed)) {
                return Ok(key.name.clone());
            }
        }
    }
    Err(format!(
        "{reference}@{digest} is not signed by any key its [[steps.oci]] rule trusts ({names}); refused"
    ))
}

/// The manifests that may hold signatures of `digest`: the one at cosign's `.sig` tag, and
/// (at most 16) referrers of the signature artifact type, from the referrers API or its
/// fallback tag. Unreadable places hold none.
pub async fn signature_manifests(
    registries: &Registries,
    target: &crate::discovery::registry::Target,
    auth: &RegistryAuth,
    digest: &str,
) -> Vec<Manifest> {
    let manifest_types = [layout::MANIFEST_MEDIA_TYPE];
    let read = |reference: String| async move {
        let (bytes, _) = registries
            .manifest(target, auth, &reference, &manifest_types)
            .await
            .ok()?;
        serde_json::from_slice::<Manifest>(&bytes).ok()
    };
    let mut found: Vec<Manifest> = read(signature::tag(digest)).await.into_iter().collect();
    let index = match registries
        .referrers(target, auth, digest, signature::ARTIFACT_TYPE)
        .await
    {
        Some(bytes) => Some(bytes),
        None => registries
            .manifest(
                target,
                auth,
                &signature::referrers_tag(digest),
                &["application/vnd.oci.image.index.v1+json"],
            )
            .await
            .ok()
            .map(|(bytes, _)| bytes),
    };
    let referrers = index
        .and_then(|bytes| serde_json::from_slice::<layout::Index>(&bytes).ok())
        .map(|index| index.manifests)
        .unwrap_or_default();
    for referrer in referrers
        .iter()
        .filter(|d| d.artifact_type.as_deref() == Some(signature::ARTIFACT_TYPE))
        .filter(|d| d.digest.starts_with("sha256:"))
        .take(16)
    {
        if let Some(manifest) = read(referrer.digest.clone()).await
            && manifest
                .subject
                .as_ref()
                .is_some_and(|s| s.digest == digest)
        {
            found.push(manifest);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_their_registry() {
        let r = PluginRef::parse("oci://registry.acme.internal/steps/render:1.4.0").unwrap();
        assert_eq!(r.registry, "registry.acme.internal");
        assert_eq!(r.repository, "steps/render");
        assert_eq!(r.tag.as_deref(), Some("1.4.0"));
        assert_eq!(
            r.to_string(),
            "oci://registry.acme.internal/steps/render:1.4.0"
        );
        let local = PluginRef::parse("oci://127.0.0.1:5000/hello").unwrap();
        assert_eq!(local.tag_or_latest(), "latest");
        let d = layout::digest(b"x");
        let pinned = local.pinned(&d);
        assert_eq!(
            pinned.to_string(),
            format!("oci://127.0.0.1:5000/hello:latest@{d}")
        );
        assert_eq!(PluginRef::parse(&pinned.to_string()).unwrap(), pinned);
        let by_digest = PluginRef::parse(&format!("oci://127.0.0.1:5000/hello@{d}")).unwrap();
        assert_eq!((by_digest.tag, by_digest.digest), (None, Some(d.clone())));
    }

    #[test]
    fn the_published_contract_is_the_wit_of_this_build() {
        let wit = include_str!("../../../wit/plugin.wit");
        assert!(wit.contains(&format!(
            "package {WIT_PACKAGE_NAME}@{WIT_PACKAGE_VERSION};"
        )));
        let info = layout::describe(WIT_PACKAGE).expect("a component");
        assert!(
            ["oci", "full-step", "verifier"]
                .iter()
                .all(|name| info.exports.iter().any(|e| e == name)),
            "{:?}",
            info.exports
        );
    }

    #[test]
    fn bad_references_say_how_to_write_one() {
        for bad in [
            "render:1.0",
            "oci://render:1.0",
            "oci://steps/render:1.0",
            "oci://registry.acme.internal",
            "oci://registry.acme.internal/steps/render@md5:abc",
            "oci://registry.acme.internal/Steps/render:1.0",
        ] {
            assert!(PluginRef::parse(bad).is_err(), "{bad}");
        }
    }
}
