//! `v1 ConfigMap`s: plain settings an expression reads with `configMap(name)` (in the project)
//! or `sharedConfigMap(name)` (in [`super::SHARED_NAMESPACE`]), as in Kargo.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Check, Errors, ObjectMeta};

/// The most bytes of data one ConfigMap may hold (Kubernetes' limit).
pub const MAX_BYTES: usize = 1 << 20;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMap {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Accepted for Kubernetes' sake; expressions read only `data`, as Kargo's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub immutable: bool,
    #[serde(default, skip_serializing)]
    pub status: Value,
}

impl Check for ConfigMap {
    fn check(&self, errors: &mut Errors) {
        let bytes: usize = self
            .data
            .iter()
            .chain(&self.binary_data)
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if bytes > MAX_BYTES {
            errors.add(
                "data",
                format!("holds {bytes} bytes; a ConfigMap may hold at most {MAX_BYTES} (1 MiB)"),
            );
        }
        for key in self.data.keys().chain(self.binary_data.keys()) {
            let valid = !key.is_empty()
                && key.len() <= 253
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid {
                errors.add(
                    format!("data.{key}"),
                    "is not a valid key: use letters, digits, '-', '_' and '.' (at most 253)",
                );
            }
        }
        for key in self.data.keys() {
            if self.binary_data.contains_key(key) {
                errors.add(
                    format!("binaryData.{key}"),
                    "is also in data: a key may be in only one of them",
                );
            }
        }
    }
}
