//! Credential `v1 Secret`s, found by the label `kargo.akuity.io/cred-type`.
//!
//! A Secret in a project serves that project; one in [`super::SHARED_NAMESPACE`] serves every
//! project. `stringData` is folded into base64 `data` on apply, as Kubernetes does, and values
//! never leave the API unredacted.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Check, Errors, ObjectMeta};

pub const CRED_TYPE_LABEL: &str = "kargo.akuity.io/cred-type";
const CRED_TYPES: [&str; 4] = ["git", "helm", "image", "generic"];

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default = "opaque", rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing)]
    pub string_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub immutable: bool,
    #[serde(default, skip_serializing)]
    pub status: Value,
}

fn opaque() -> String {
    "Opaque".into()
}

impl Secret {
    /// The decoded value of one key, if present and valid UTF-8.
    pub fn value(&self, key: &str) -> Option<String> {
        let bytes = STANDARD.decode(self.data.get(key)?).ok()?;
        String::from_utf8(bytes).ok()
    }
}

impl Check for Secret {
    fn normalize(&mut self) {
        for (key, value) in std::mem::take(&mut self.string_data) {
            self.data.insert(key, STANDARD.encode(value));
        }
    }

    fn check(&self, errors: &mut Errors) {
        if let Some(t) = self.metadata.labels.get(CRED_TYPE_LABEL)
            && !CRED_TYPES.contains(&t.as_str())
        {
            errors.add(
                format!("metadata.labels.{CRED_TYPE_LABEL}"),
                format!(
                    "{t:?} is not a credential type: use one of {}",
                    CRED_TYPES.join(", ")
                ),
            );
        }
        for (key, value) in &self.data {
            if STANDARD.decode(value).is_err() {
                errors.add(
                    format!("data.{key}"),
                    "is not base64: put plain text under stringData instead",
                );
            }
        }
        if let Some(re) = self
            .value("repoURLIsRegex")
            .filter(|v| v == "true")
            .and(self.value("repoURL"))
        {
            errors.regex("stringData.repoURL", &re);
        }
    }
}
