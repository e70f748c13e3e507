//! The CNCF TAG Runtime "Wasm OCI Artifact" layout, the one `wkg`, `oci-wasm` and wasmCloud
//! publish: an OCI image manifest whose config has the media type
//! `application/vnd.wasm.config.v0+json` and whose one layer is the raw component
//! (`application/wasm`). Pulls also accept the older layer type of wasm-to-oci and Spin.
//!
//! Written here on `oci-client` 0.18 rather than through the `oci-wasm` crate, whose current
//! release pins `oci-client` 0.17: the layout is four media types and one small JSON config, and
//! a second OCI client in the build would cost more than it saves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The manifest's media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config's media type: how tools recognise a Wasm artifact.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The layer's media type: the component's bytes.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The layer type of wasm-to-oci and Spin, accepted on pull (never published).
pub const LEGACY_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The config type of wasm-to-oci, accepted on pull.
pub const LEGACY_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v1+json";

/// Standard annotations (OCI image spec).
pub const TITLE: &str = "org.opencontainers.image.title";
pub const VERSION: &str = "org.opencontainers.image.version";
pub const SOURCE: &str = "org.opencontainers.image.source";
pub const CREATED: &str = "org.opencontainers.image.created";
pub const DESCRIPTION: &str = "org.opencontainers.image.description";

/// The largest component Dray pulls: a Python component (the interpreter inside) is ~40 MiB.
pub const MAX_COMPONENT_BYTES: usize = 128 << 20;
/// The largest manifest or config read.
pub const MAX_METADATA_BYTES: usize = 4 << 20;

/// The config of a Wasm artifact (camelCase, as `oci-wasm` writes it).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    /// RFC 3339.
    pub created: String,
    #[serde(default)]
    pub author: Option<String>,
    /// Always `wasm`.
    pub architecture: String,
    /// `wasip2` for a component (`wasip1` for a core module, which Dray does not run).
    pub os: String,
    /// The layers' digests, in the manifest's order (this makes every config unique).
    #[serde(default)]
    pub layer_digests: Vec<String>,
    /// Required for `wasip2`.
    #[serde(default)]
    pub component: Option<ComponentInfo>,
}

/// What a component imports and exports, by WIT name (`dray:plugin/git@0.1.0`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComponentInfo {
    #[serde(default)]
    pub exports: Vec<String>,
    #[serde(default)]
    pub imports: Vec<String>,
    #[serde(default)]
    pub target: Option<String>,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Whether `text` is a `sha256:` digest (64 lower-case hex digits): the only kind Dray trusts.
pub fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The top-level imports and exports of a component, read without compiling it; an error says
/// why the bytes are not a component.
pub fn describe(bytes: &[u8]) -> Result<ComponentInfo, String> {
    use wasmparser::{Encoding, Parser, Payload};
    let mut info = ComponentInfo::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("not a valid WebAssembly file: {e}"))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err(
                        "a core WebAssembly module, not a component: build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
                            .into(),
                    );
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    let import = import.map_err(|e| format!("unreadable import: {e}"))?;
                    info.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    let export = export.map_err(|e| format!("unreadable export: {e}"))?;
                    info.exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// The config of `component` (described by `info`), published at `created` (RFC 3339).
pub fn config(component: &[u8], info: ComponentInfo, created: &str) -> WasmConfig {
    WasmConfig {
        created: created.to_string(),
        author: None,
        architecture: "wasm".into(),
        os: "wasip2".into(),
        layer_digests: vec![digest(component)],
        component: Some(info),
    }
}

/// The manifest annotations Dray publishes: the title (file name), the version (the tag, when
/// it is one), when, and whatever the user adds (`--annotation k=v`).
pub fn annotations(
    title: &str,
    version: Option<&str>,
    created: &str,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert(TITLE.to_string(), title.to_string());
    if let Some(v) = version {
        out.insert(VERSION.to_string(), v.to_string());
    }
    out.insert(CREATED.to_string(), created.to_string());
    out.extend(extra.clone());
    out
}

/// A manifest as read from a registry: only what a puller needs.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// What the manifest is, when it is an artifact that says so (OCI 1.1).
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// The manifest this one refers to (a signature's signed manifest).
    #[serde(default)]
    pub subject: Option<Descriptor>,
}

/// An index as read from a registry (a referrers list).
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub artifact_type: Option<String>,
}

impl Manifest {
    /// The component's layer, after checking this is a Wasm artifact Dray can run: a Wasm
    /// config, exactly one Wasm layer, a sane size and a `sha256:` digest.
    pub fn component_layer(&self) -> Result<&Descriptor, String> {
        if let Some(t) = &self.media_type
            && t != MANIFEST_MEDIA_TYPE
        {
            return Err(format!(
                "the manifest's media type is {t}, not an OCI image manifest ({MANIFEST_MEDIA_TYPE}); is this an index or another kind of artifact?"
            ));
        }
        let config = &self.config.media_type;
        if config != CONFIG_MEDIA_TYPE && config != LEGACY_CONFIG_MEDIA_TYPE {
            return Err(format!(
                "the artifact's config is {config}, not a Wasm component ({CONFIG_MEDIA_TYPE}); push components with `dray plugin push` or `wkg oci push`"
            ));
        }
        let wasm: Vec<&Descriptor> = self
            .layers
            .iter()
            .filter(|l| l.media_type == LAYER_MEDIA_TYPE || l.media_type == LEGACY_LAYER_MEDIA_TYPE)
            .collect();
        let [layer] = wasm.as_slice() else {
            return Err(format!(
                "the artifact has {} Wasm layers; a plugin is exactly one component ({LAYER_MEDIA_TYPE})",
                wasm.len()
            ));
        };
        if !is_digest(&layer.digest) {
            return Err(format!(
                "the layer's digest {:?} is not a sha256 digest",
                layer.digest
            ));
        }
        if layer.size <= 0 || layer.size as u64 > MAX_COMPONENT_BYTES as u64 {
            return Err(format!(
                "the layer is {} bytes; a plugin may be at most {} MiB",
                layer.size,
                MAX_COMPONENT_BYTES >> 20
            ));
        }
        Ok(layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config: &str, layers: &[(&str, &str, i64)]) -> Manifest {
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|(t, d, s)| serde_json::json!({"mediaType": t, "digest": d, "size": s}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": config, "digest": digest(b"{}"), "size": 2},
            "layers": layers,
        }))
        .expect("a manifest")
    }

    #[test]
    fn a_wasm_artifact_has_one_component_layer() {
        let d = digest(b"wasm");
        let ok = manifest(CONFIG_MEDIA_TYPE, &[(LAYER_MEDIA_TYPE, &d, 4)]);
        assert_eq!(ok.component_layer().expect("a layer").digest, d);
        let legacy = manifest(
            LEGACY_CONFIG_MEDIA_TYPE,
            &[(LEGACY_LAYER_MEDIA_TYPE, &d, 4)],
        );
        assert!(legacy.component_layer().is_ok());
    }

    #[test]
    fn images_and_odd_artifacts_are_refused_with_the_reason() {
        let d = digest(b"wasm");
        let image = manifest(
            "application/vnd.oci.image.config.v1+json",
            &[("application/vnd.oci.image.layer.v1.tar+gzip", &d, 4)],
        );
        assert!(
            image
                .component_layer()
                .unwrap_err()
                .contains("not a Wasm component")
        );
        let two = manifest(
            CONFIG_MEDIA_TYPE,
            &[(LAYER_MEDIA_TYPE, &d, 4), (LAYER_MEDIA_TYPE, &d, 4)],
        );
        assert!(two.component_layer().unwrap_err().contains("2 Wasm layers"));
        let md5 = manifest(CONFIG_MEDIA_TYPE, &[(LAYER_MEDIA_TYPE, "md5:abc", 4)]);
        assert!(md5.component_layer().unwrap_err().contains("not a sha256"));
        let huge = manifest(CONFIG_MEDIA_TYPE, &[(LAYER_MEDIA_TYPE, &d, 1 << 40)]);
        assert!(huge.component_layer().unwrap_err().contains("at most"));
    }

    #[test]
    fn a_core_module_is_not_a_component() {
        let module = b"\0asm\x01\0\0\0";
        assert!(
            describe(module)
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(describe(b"not wasm").is_err());
    }

    #[test]
    fn digests_are_sha256_only() {
        assert!(is_digest(&digest(b"x")));
        assert!(!is_digest("sha256:ABC"));
        assert!(!is_digest("sha512:00"));
    }
}
