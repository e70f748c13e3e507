//! Copying and downloading OCI artifacts, for the `oci` host capability (Kargo's `oci-push` and
//! `oci-download`).
//!
//! Manifests are read through [`Registries`] (bounded, rate-limited, with discovery's mirrors) and checked against their digests; blobs stream through
//! `oci-client`, checked against their digests and declared sizes, never held whole in memory.
//! A copy between repositories of one registry mounts blobs instead of moving them.

use std::collections::BTreeMap;
use std::path::Path;

use futures_util::StreamExt as _;
use oci_client::secrets::RegistryAuth;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::discovery::registry::{Registries, Target};

/// The manifest types a copy or download reads.
const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// The most images one index may hold for a copy.
pub const MAX_INDEX_ENTRIES: usize = 64;
/// The most layers one image may have.
pub const MAX_LAYERS: usize = 256;
/// The most bytes one copy moves (blobs already at the destination do not count).
pub const MAX_COPY_BYTES: u64 = 4 << 30;
/// The largest layer `download` writes (as Kargo's `oci-download`).
pub const MAX_DOWNLOAD_BYTES: u64 = 100 << 20;

/// One side of a copy: where, as whom.
pub struct Endpoint {
    /// `HOST/REPO`, as credentials are looked up.
    pub repository: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// The digest, if any.
    pub digest: Option<String>,
    pub auth: RegistryAuth,
    /// The registry and repository path requests go to (Docker Hub's names resolved).
    host: String,
    path: String,
}

impl Endpoint {
    /// Parses `HOST/REPO[:TAG][@sha256:…]` (an `oci://` prefix already removed).
    pub fn parse(text: &str, auth: RegistryAuth) -> Result<Endpoint, String> {
        let reference: oci_client::Reference = text.parse().map_err(|e| {
            format!("{text:?} is not an image reference (HOST/REPO[:TAG][@sha256:…]): {e}")
        })?;
        if let Some(d) = reference.digest()
            && !is_sha256(d)
        {
            return Err(format!("{text:?}: only sha256 digests are accepted"));
        }
        Ok(Endpoint {
            repository: format!("{}/{}", reference.registry(), reference.repository()),
            tag: reference.tag().map(str::to_string),
            digest: reference.digest().map(str::to_string),
            auth,
            host: reference.resolve_registry().to_string(),
            path: reference.repository().to_string(),
        })
    }

    /// What the registry is asked for: the digest, else the tag (`latest` when neither).
    fn reference(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".into())
    }

    fn client_reference(
        &self,
        host: &str,
        repository: &str,
        reference: &str,
    ) -> oci_client::Reference {
        if reference.starts_with("sha256:") {
            oci_client::Reference::with_digest(host.into(), repository.into(), reference.into())
        } else {
            oci_client::Reference::with_tag(host.into(), repository.into(), reference.into())
        }
    }
}

fn is_sha256(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A manifest read and checked: its bytes, digest, media type and JSON.
struct Read {
    bytes: Vec<u8>,
    digest: String,
    media_type: String,
    json: Value,
}

impl Read {
    fn is_index(&self) -> bool {
        self.media_type.contains("index") || self.media_type.contains("manifest.list")
    }
}

/// Reads manifest `reference` of `target`; a digest reference must match the bytes.
async fn read_manifest(
    registries: &Registries,
    target: &Target,
    auth: &RegistryAuth,
    reference: &str,
) -> Result<Read, String> {
    let (bytes, _) = registries
        .manifest(target, auth, reference, &MANIFEST_TYPES)
        .await
        .map_err(|e| e.to_string())?;
    let digest = sha256(&bytes);
    if reference.starts_with("sha256:") && digest != reference {
        return Err(format!(
            "{}/{}@{reference}: the registry sent a manifest whose digest is {digest}; refused",
            target.host, target.repository
        ));
    }
    let json: Value = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "{}/{}:{reference}: the manifest is not JSON: {e}",
            target.host, target.repository
        )
    })?;
    let media_type = match json["mediaType"].as_str() {
        Some(t) => t.to_string(),
        None if json.get("manifests").is_some() => MANIFEST_TYPES[1].to_string(),
        None => MANIFEST_TYPES[0].to_string(),
    };
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(format!(
            "{}/{}:{reference} is a {media_type}, not an image, an index or an artifact manifest",
            target.host, target.repository
        ));
    }
    Ok(Read {
        bytes,
        digest,
        media_type,
        json,
    })
}

/// A blob descriptor, checked: digest and size.
fn descriptor(value: &Value, what: &str) -> Result<(String, u64), String> {
    let digest = value["digest"].as_str().unwrap_or_default();
    if !is_sha256(digest) {
        return Err(format!("{what}: {digest:?} is not a sha256 digest"));
    }
    let size = value["size"]
        .as_u64()
        .ok_or_else(|| format!("{what}: no size"))?;
    Ok((digest.to_string(), size))
}

/// The annotations for one manifest: unprefixed ones on the top, `index:` on a top index,
/// `manifest:` on image manifests.
fn annotations_for(
    annotations: &BTreeMap<String, String>,
    top: bool,
    index: bool,
) -> BTreeMap<String, String> {
    annotations
        .iter()
        .filter_map(|(k, v)| {
            let key = match k.split_once(':') {
                Some(("index", key)) if top && index => key,
                Some(("manifest", key)) if !index => key,
                Some(("index" | "manifest", _)) => return None,
                _ if top => k.as_str(),
                _ => return None,
            };
            Some((key.to_string(), v.clone()))
        })
        .collect()
}

/// `json` with `extra` merged into its `annotations`, re-serialized; `None` when nothing changes.
fn annotated(json: &Value, extra: &BTreeMap<String, String>) -> Option<Vec<u8>> {
    if extra.is_empty() {
        return None;
    }
    let mut json = json.clone();
    let map = json
        .as_object_mut()?
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if !map.is_object() {
        *map = Value::Object(Default::default());
    }
    let map = map.as_object_mut()?;
    for (k, v) in extra {
        map.insert(k.clone(), Value::String(v.clone()));
    }
    serde_json::to_vec(&json).ok()
}

/// What a copy wrote.
pub struct Copied {
    pub digest: String,
}

/// A copy in progress: both sides and the bytes moved so far.
struct Copy<'a> {
    registries: &'a Registries,
    source: &'a Endpoint,
    source_target: Target,
    destination: &'a Endpoint,
    destination_target: Target,
    moved: u64,
}

/// Copies `source` with everything it references to `destination`, with `annotations` (see the
/// WIT's `oci.copy`).
pub async fn copy(
    registries: &Registries,
    source: &Endpoint,
    destination: &Endpoint,
    annotations: &BTreeMap<String, String>,
) -> Result<Copied, String> {
    let source_target = registries
        .target(&source.repository)
        .map_err(|e| e.to_string())?;
    // Pushes go to the registry named, never a mirror; its address is checked all the same.
    registries
        .target(&destination.repository)
        .map_err(|e| e.to_string())?;
    let destination_target = Target {
        host: destination.host.clone(),
        repository: destination.path.clone(),
    };
    let mut copy = Copy {
        registries,
        source,
        source_target,
        destination,
        destination_target,
        moved: 0,
    };
    let top = read_manifest(
        registries,
        &copy.source_target,
        &source.auth,
        &source.reference(),
    )
    .await?;
    let (bytes, media_type) = if top.is_index() {
        copy.index(&top, annotations).await?
    } else {
        copy.image(&top, annotations_for(annotations, true, false))
            .await?
    };
    let digest = sha256(&bytes);
    if let Some(wanted) = &destination.digest
        && *wanted != digest
    {
        return Err(format!(
            "the destination names digest {wanted}, but the copy's manifest is {digest} (annotations change it); give the destination a tag"
        ));
    }
    let reference = destination.tag.clone().unwrap_or_else(|| digest.clone());
    copy.push_manifest(&reference, bytes, &media_type).await?;
    Ok(Copied { digest })
}

impl Copy<'_> {
    fn clients(&self) -> (oci_client::Client, oci_client::Client) {
        (
            super::client(&self.source_target.host),
            super::client(&self.destination_target.host),
        )
    }

    fn source_ref(&self, reference: &str) -> oci_client::Reference {
        self.source.client_reference(
            &self.source_target.host,
            &self.source_target.repository,
            reference,
        )
    }

    fn destination_ref(&self, reference: &str) -> oci_client::Reference {
        self.destination.client_reference(
            &self.destination_target.host,
            &self.destination_target.repository,
            reference,
        )
    }

    /// Copies an index's images (by digest), then returns the index to push, annotated.
    async fn index(
        &mut self,
        top: &Read,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(Vec<u8>, String), String> {
        let mut json = top.json.clone();
        let entries = json["manifests"]
            .as_array_mut()
            .ok_or_else(|| format!("index {}: no manifests", top.digest))?;
        if entries.len() > MAX_INDEX_ENTRIES {
            return Err(format!(
                "index {} lists {} manifests; at most {MAX_INDEX_ENTRIES} are copied",
                top.digest,
                entries.len()
            ));
        }
        let per_image = annotations_for(annotations, false, false);
        let mut changed = false;
        for (i, entry) in entries.iter_mut().enumerate() {
            let (digest, _) = descriptor(entry, &format!("index {} manifests[{i}]", top.digest))?;
            let child = read_manifest(
                self.registries,
                &self.source_target,
                &self.source.auth,
                &digest,
            )
            .await?;
            if child.is_index() {
                return Err(format!(
                    "index {} holds another index ({digest}); nested indexes are not copied",
                    top.digest
                ));
            }
            let (bytes, media_type) = self.image(&child, per_image.clone()).await?;
            let pushed = sha256(&bytes);
            if pushed != digest {
                changed = true;
                entry["digest"] = Value::String(pushed.clone());
                entry["size"] = Value::from(bytes.len());
            }
            self.push_manifest(&pushed, bytes, &media_type).await?;
        }
        let own = annotations_for(annotations, true, true);
        let bytes = if changed || !own.is_empty() {
            annotated(&json, &own).unwrap_or_else(|| serde_json::to_vec(&json).unwrap_or_default())
        } else {
            top.bytes.clone()
        };
        Ok((bytes, top.media_type.clone()))
    }

    /// Copies an image's config and layers; returns its manifest to push, annotated.
    async fn image(
        &mut self,
        manifest: &Read,
        annotations: BTreeMap<String, String>,
    ) -> Result<(Vec<u8>, String), String> {
        let what = format!("manifest {}", manifest.digest);
        let layers = manifest.json["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if layers.len() > MAX_LAYERS {
            return Err(format!(
                "{what} has {} layers; at most {MAX_LAYERS}",
                layers.len()
            ));
        }
        let mut blobs = vec![descriptor(
            &manifest.json["config"],
            &format!("{what} config"),
        )?];
        for (i, layer) in layers.iter().enumerate() {
            blobs.push(descriptor(layer, &format!("{what} layers[{i}]"))?);
        }
        for (digest, size) in blobs {
            self.blob(&digest, size).await?;
        }
        let bytes =
            annotated(&manifest.json, &annotations).unwrap_or_else(|| manifest.bytes.clone());
        Ok((bytes, manifest.media_type.clone()))
    }

    /// Makes blob `digest` present at the destination: there already, mounted from the source
    /// repository (same registry), or streamed.
    async fn blob(&mut self, digest: &str, size: u64) -> Result<(), String> {
        let (source, destination) = self.clients();
        let to = self.destination_ref(digest);
        destination
            .store_auth_if_needed(&self.destination_target.host, &self.destination.auth)
            .await;
        if destination.blob_exists(&to, digest).await.unwrap_or(false) {
            return Ok(());
        }
        let from = self.source_ref(digest);
        if self.source_target.host == self.destination_target.host
            && destination.mount_blob(&to, &from, digest).await.is_ok()
            && destination.blob_exists(&to, digest).await.unwrap_or(false)
        {
            return Ok(());
        }
        if self.moved + size > MAX_COPY_BYTES {
            return Err(format!(
                "the copy would move more than {} GiB; refused",
                MAX_COPY_BYTES >> 30
            ));
        }
        source
            .store_auth_if_needed(&self.source_target.host, &self.source.auth)
            .await;
        let layer = oci_client::manifest::OciDescriptor {
            digest: digest.to_string(),
            size: size as i64,
            ..Default::default()
        };
        let stream = source.pull_blob_stream(&from, &layer).await.map_err(|e| {
            format!(
                "cannot read blob {digest} of {}: {e}",
                self.source.repository
            )
        })?;
        let bounded = bounded(stream.stream, size, digest.to_string());
        destination
            .push_blob_stream(&to, bounded, digest, Some(size))
            .await
            .map_err(|e| {
                format!(
                    "cannot write blob {digest} to {}: {e}",
                    self.destination.repository
                )
            })?;
        self.moved += size;
        Ok(())
    }

    async fn push_manifest(
        &self,
        reference: &str,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<(), String> {
        let (_, destination) = self.clients();
        destination
            .store_auth_if_needed(&self.destination_target.host, &self.destination.auth)
            .await;
        let content_type = media_type
            .parse()
            .map_err(|_| format!("{media_type:?} is not a media type"))?;
        destination
            .push_manifest_raw(&self.destination_ref(reference), bytes, content_type)
            .await
            .map_err(|e| {
                format!(
                    "cannot write the manifest {reference} to {}: {e}",
                    self.destination.repository
                )
            })?;
        Ok(())
    }
}

/// `stream`, cut with an error past `size` bytes.
fn bounded(
    stream: impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
    size: u64,
    digest: String,
) -> impl futures_util::Stream<Item = oci_client::errors::Result<bytes::Bytes>> + Send + 'static {
    let mut seen = 0u64;
    stream.map(move |chunk| {
        let chunk = chunk.map_err(|e| {
            oci_client::errors::OciDistributionError::GenericError(Some(e.to_string()))
        })?;
        seen += chunk.len() as u64;
        if seen > size {
            return Err(oci_client::errors::OciDistributionError::GenericError(
                Some(format!(
                    "blob {digest} is larger than the {size} bytes its manifest declares"
                )),
            ));
        }
        Ok(chunk)
    })
}

/// What `download` wrote.
pub struct Downloaded {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// Writes the first layer of `source` (the first of `media_type`, if given) to `path` (a host
/// path inside the work directory, already checked), at most [`MAX_DOWNLOAD_BYTES`].
pub async fn download(
    registries: &Registries,
    source: &Endpoint,
    path: &Path,
    media_type: Option<&str>,
) -> Result<Downloaded, String> {
    let target = registries
        .target(&source.repository)
        .map_err(|e| e.to_string())?;
    let manifest = read_manifest(registries, &target, &source.auth, &source.reference()).await?;
    if manifest.is_index() {
        let platforms = manifest.json["manifests"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|e| {
                        Some(format!(
                            "{}/{} {}",
                            e["platform"]["os"].as_str()?,
                            e["platform"]["architecture"].as_str()?,
                            e["digest"].as_str()?
                        ))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        return Err(format!(
            "{} is an index ({platforms}); name one of its manifests by digest",
            source.repository
        ));
    }
    let layers = manifest.json["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let layer = match media_type {
        Some(wanted) => layers
            .iter()
            .find(|l| l["mediaType"] == wanted)
            .ok_or_else(|| format!("{} has no layer of media type {wanted}", source.repository))?,
        None => layers
            .first()
            .ok_or_else(|| format!("{} has no layers", source.repository))?,
    };
    let (digest, size) = descriptor(layer, "the layer")?;
    if size > MAX_DOWNLOAD_BYTES {
        return Err(format!(
            "the layer is {size} bytes; oci-download writes at most {} MiB",
            MAX_DOWNLOAD_BYTES >> 20
        ));
    }
    let client = super::client(&target.host);
    client
        .store_auth_if_needed(&target.host, &source.auth)
        .await;
    let from = source.client_reference(&target.host, &target.repository, &digest);
    let descriptor = oci_client::manifest::OciDescriptor {
        digest: digest.clone(),
        size: size as i64,
        ..Default::default()
    };
    let stream = client
        .pull_blob_stream(&from, &descriptor)
        .await
        .map_err(|e| format!("cannot read layer {digest} of {}: {e}", source.repository))?;
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    let written = write_stream(stream.stream, &partial, size, &digest).await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    tokio::fs::rename(&partial, path)
        .await
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(Downloaded {
        digest,
        size,
        media_type: layer["mediaType"].as_str().unwrap_or_default().to_string(),
    })
}

/// Writes `stream` to `path`: exactly `size` bytes whose digest is `digest`.
async fn write_stream(
    mut stream: impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Unpin,
    path: &Path,
    size: u64,
    digest: &str,
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt as _;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut seen = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading layer {digest}: {e}"))?;
        seen += chunk.len() as u64;
        if seen > size {
            return Err(format!(
                "layer {digest} is larger than the {size} bytes its manifest declares; refused"
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if seen != size || actual != digest {
        return Err(format!(
            "layer {digest}: the registry sent {seen} bytes whose digest is {actual}; refused"
        ));
    }
    file.flush()
        .await
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_go_where_their_prefix_says() {
        let all: BTreeMap<String, String> = [("plain", "1"), ("index:i", "2"), ("manifest:m", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let keys = |m: BTreeMap<String, String>| m.into_keys().collect::<Vec<_>>();
        assert_eq!(keys(annotations_for(&all, true, true)), ["i", "plain"]);
        assert_eq!(keys(annotations_for(&all, true, false)), ["m", "plain"]);
        assert_eq!(keys(annotations_for(&all, false, false)), ["m"]);
        let json = serde_json::json!({"schemaVersion": 2, "annotations": {"a": "b"}});
        let out: Value = serde_json::from_slice(
            &annotated(&json, &[("c".to_string(), "d".to_string())].into()).expect("changed"),
        )
        .expect("json");
        assert_eq!(out["annotations"], serde_json::json!({"a": "b", "c": "d"}));
        assert!(annotated(&json, &BTreeMap::new()).is_none());
    }

    #[tokio::test]
    async fn a_layer_that_is_longer_or_other_than_declared_is_not_kept() {
        let dir = tempfile::tempdir().expect("a dir");
        let path = dir.path().join("layer");
        let chunks = |parts: &[&'static [u8]]| {
            futures_util::stream::iter(
                parts
                    .iter()
                    .map(|p| Ok::<_, std::io::Error>(bytes::Bytes::from_static(p)))
                    .collect::<Vec<_>>(),
            )
        };
        let digest = sha256(b"hello");
        write_stream(chunks(&[b"hel", b"lo"]), &path, 5, &digest)
            .await
            .expect("the declared bytes");
        let e = write_stream(chunks(&[b"hello", b" and more"]), &path, 5, &digest)
            .await
            .expect_err("longer");
        assert!(e.contains("larger than the 5 bytes"), "{e}");
        let e = write_stream(chunks(&[b"jello"]), &path, 5, &digest)
            .await
            .expect_err("other bytes");
        assert!(e.contains("whose digest is"), "{e}");
        let e = write_stream(chunks(&[b"hell"]), &path, 5, &digest)
            .await
            .expect_err("shorter");
        assert!(e.contains("sent 4 bytes"), "{e}");
    }

    #[test]
    fn references_must_name_sha256_digests() {
        let e = Endpoint::parse("127.0.0.1:5000/a@md5:00", RegistryAuth::Anonymous);
        assert!(e.is_err());
        let ok =
            Endpoint::parse("127.0.0.1:5000/team/app:1.0", RegistryAuth::Anonymous).expect("ok");
        assert_eq!(ok.repository, "127.0.0.1:5000/team/app");
        assert_eq!(ok.reference(), "1.0");
    }
}
