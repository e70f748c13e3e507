//! OCI steps, as Kargo's: `oci-push` copies an image, index or artifact (a Helm chart with
//! `oci://`) to another repository or tag, and `oci-download` writes an artifact's layer into the
//! work directory. The registry work happens on the host (the `oci` interface), with the
//! project's `cred-type: image` (or `helm`) Secrets, which this component never sees.

use std::collections::BTreeMap;

use dray_sdk::{Step, StepContext, StepError, StepKind, StepResult};
use serde::Deserialize;
use serde_json::json;

/// The plugin's step kinds (or verifiers): exported by `plugins/steps` with the other built-ins.
pub struct Oci;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Push {
    #[serde(alias = "srcRef")]
    image_ref: String,
    dest_ref: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Download {
    image_ref: String,
    out_path: String,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    allow_overwrite: bool,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

const REFERENCE: &str = "HOST/REPO:TAG or HOST/REPO@sha256:… (oci://… for a Helm chart, read with cred-type: helm Secrets)";

impl Step for Oci {
    fn describe() -> Vec<StepKind> {
        let insecure = json!({"type": "boolean", "description": "Accepted for Kargo's manifests; Dray always verifies TLS (add the registry's CA to the system's trust store)"});
        vec![
            dray_sdk::kind(
                "oci-push",
                "Copies an image, index or artifact with all its blobs to another repository or tag (retags when both are in one repository)",
                json!({
                    "type": "object", "additionalProperties": false, "required": ["destRef"],
                    "properties": {
                        "imageRef": {"type": "string", "minLength": 1, "description": format!("What to copy: {REFERENCE}")},
                        "srcRef": {"type": "string", "minLength": 1, "description": "Older name of imageRef"},
                        "destRef": {"type": "string", "minLength": 1, "description": format!("Where to: {REFERENCE}")},
                        "annotations": {
                            "type": "object", "additionalProperties": {"type": "string"},
                            "description": "Annotations to add to the copied manifest; keys prefixed index: go only to an index, manifest: to image manifests"
                        },
                        "insecureSkipTLSVerify": insecure.clone(),
                    },
                    "oneOf": [{"required": ["imageRef"]}, {"required": ["srcRef"]}]
                }),
                &[],
            ),
            dray_sdk::kind(
                "oci-download",
                "Writes a layer of an OCI artifact (the first, or the first of mediaType) to a file in the work directory, at most 100 MiB",
                json!({
                    "type": "object", "additionalProperties": false, "required": ["imageRef", "outPath"],
                    "properties": {
                        "imageRef": {"type": "string", "minLength": 1, "description": format!("The artifact: {REFERENCE}")},
                        "outPath": {"type": "string", "minLength": 1, "description": "The file to write, in the work directory"},
                        "mediaType": {"type": "string", "minLength": 1, "description": "Take the first layer of this media type"},
                        "allowOverwrite": {"type": "boolean", "description": "Replace outPath if it exists (default false)"},
                        "insecureSkipTLSVerify": insecure,
                    }
                }),
                &[],
            ),
        ]
    }

    fn run(kind: String, _context: StepContext, config: String) -> Result<StepResult, StepError> {
        match kind.as_str() {
            "oci-push" => push(dray_sdk::config(&config)?),
            "oci-download" => download(dray_sdk::config(&config)?),
            other => Err(StepError::InvalidConfig(format!(
                "oci offers oci-push and oci-download, not {other:?}"
            ))),
        }
    }
}

fn warn_insecure(insecure: bool) {
    if insecure {
        dray_sdk::warn!("insecureSkipTLSVerify is ignored: Dray always verifies TLS");
    }
}

fn push(config: Push) -> Result<StepResult, StepError> {
    warn_insecure(config.insecure_skip_tls_verify);
    let annotations: Vec<(String, String)> = config.annotations.into_iter().collect();
    let copied = dray_sdk::oci::copy(&config.image_ref, &config.dest_ref, &annotations)
        .map_err(dray_sdk::retryable)?;
    dray_sdk::info!(
        "copied {} to {} ({})",
        config.image_ref,
        config.dest_ref,
        copied.digest
    );
    Ok(dray_sdk::succeeded(json!({
        "image": config.dest_ref,
        "digest": copied.digest,
        "tag": copied.tag.unwrap_or_default(),
    })))
}

fn download(config: Download) -> Result<StepResult, StepError> {
    warn_insecure(config.insecure_skip_tls_verify);
    let written = dray_sdk::oci::download(
        &config.image_ref,
        &config.out_path,
        config.media_type.as_deref(),
        config.allow_overwrite,
    )
    .map_err(dray_sdk::retryable)?;
    dray_sdk::info!(
        "wrote {} ({} bytes, {})",
        config.out_path,
        written.size,
        written.media_type
    );
    Ok(dray_sdk::succeeded(json!({
        "digest": written.digest,
        "size": written.size,
        "mediaType": written.media_type,
    })))
}
