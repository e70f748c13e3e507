//! `transformers` and `generators` that configure kustomize's built-in plugins (`apiVersion:
//! builtin`): each config runs as the kustomization field it stands for would (a
//! `NamespaceTransformer` as `namespace`, an `ImageTagTransformer` as one `images` entry, a
//! `ConfigMapGenerator` as one `configMapGenerator` entry…), after the kustomization's own, as
//! kustomize runs them. `LabelTransformer` and `AnnotationsTransformer` honour their
//! `fieldSpecs` (which fields get the pairs, created or not); the other transformers act on
//! kustomize's default fields. Entries are files, or YAML written inline. Any other kind (an
//! exec or container plugin) is refused by name.

use std::collections::BTreeMap;
use std::path::Path;

use dray_sdk::StepError;
use serde_json::{Map, Value, json};

use crate::build::{Resource, fail, join, load_yaml};

/// The config documents an entry list names.
fn configs(
    k: &Map<String, Value>,
    field: &str,
    dir: &Path,
    file: &Path,
) -> Result<Vec<Value>, StepError> {
    let mut out = Vec::new();
    let Some(entries) = k.get(field) else {
        return Ok(out);
    };
    let Value::Array(entries) = entries else {
        return Err(fail(format!("{}: {field} must be a list", file.display())));
    };
    for entry in entries {
        let Some(text) = entry.as_str() else {
            return Err(fail(format!(
                "{}: {field} entries are paths or YAML text",
                file.display()
            )));
        };
        let docs = if text.contains('\n') {
            dray_sdk::yaml::v3::load(text).map_err(|e| {
                fail(format!(
                    "{}: {field}: inline config is not YAML: {e}",
                    file.display()
                ))
            })?
        } else {
            let path = join(dir, text);
            if path.is_dir() {
                return Err(fail(format!(
                    "{}: {field} entry {text} is a directory; Dray's kustomize-build reads transformer and generator configs from files",
                    file.display()
                )));
            }
            load_yaml(&path)?
        };
        out.extend(docs.into_iter().filter(|d| !d.is_null()));
    }
    Ok(out)
}

fn builtin_kind<'a>(doc: &'a Value, field: &str, file: &Path) -> Result<&'a str, StepError> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api != "builtin" && !api.is_empty() {
        return Err(fail(format!(
            "{}: {field}: {api} {kind} is a plugin, not one of kustomize's built-in configs; Dray's kustomize-build runs only those",
            file.display()
        )));
    }
    Ok(kind)
}

/// The kustomization's `generators`.
pub fn generators(
    k: &Map<String, Value>,
    dir: &Path,
    file: &Path,
    resources: &mut Vec<Resource>,
) -> Result<(), StepError> {
    for doc in configs(k, "generators", dir, file)? {
        let field = match builtin_kind(&doc, "generators", file)? {
            "ConfigMapGenerator" => "configMapGenerator",
            "SecretGenerator" => "secretGenerator",
            other => {
                return Err(fail(format!(
                    "{}: generators: {other} is not supported by Dray's kustomize-build (ConfigMapGenerator and SecretGenerator are)",
                    file.display()
                )));
            }
        };
        let mut entry = doc.as_object().cloned().unwrap_or_default();
        entry.remove("apiVersion");
        entry.remove("kind");
        if let Some(Value::Object(meta)) = entry.remove("metadata") {
            for key in ["name", "namespace"] {
                if let Some(v) = meta.get(key) {
                    entry.insert(key.into(), v.clone());
                }
            }
        }
        let mut synthetic = Map::new();
        synthetic.insert(field.into(), json!([entry]));
        crate::generate::generators(&synthetic, dir, file, resources)?;
    }
    Ok(())
}

/// Whether a fieldSpec (`kind`, `group`, `version`) applies to `r`.
fn spec_matches(spec: &Value, r: &Resource) -> bool {
    let s = |k: &str| {
        spec.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let (group, version) = match r.api_version().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", r.api_version()),
    };
    s("kind").is_none_or(|k| k == r.kind())
        && s("group").is_none_or(|g| g == group)
        && s("version").is_none_or(|v| v == version)
}

/// Puts `pairs` into the map at `path` (lists walked through), creating maps if `create`.
fn put(node: &mut Value, path: &[&str], pairs: &BTreeMap<String, String>, create: bool) {
    match node {
        Value::Array(items) => items.iter_mut().for_each(|i| put(i, path, pairs, create)),
        Value::Object(map) => match path.split_first() {
            None => {
                for (k, v) in pairs {
                    map.insert(k.clone(), json!(v));
                }
            }
            Some((first, rest)) => {
                if !map.contains_key(*first) {
                    if !create {
                        return;
                    }
                    map.insert(first.to_string(), json!({}));
                }
                if let Some(child) = map.get_mut(*first) {
                    if child.is_null() && create {
                        *child = json!({});
                    }
                    put(child, rest, pairs, create);
                }
            }
        },
        _ => {}
    }
}

/// The kustomization's `transformers`.
pub fn transformers(
    k: &Map<String, Value>,
    dir: &Path,
    file: &Path,
    resources: &mut Vec<Resource>,
    config: &crate::config::Config,
) -> Result<(), StepError> {
    for doc in configs(k, "transformers", dir, file)? {
        let kind = builtin_kind(&doc, "transformers", file)?.to_string();
        let get = |key: &str| doc.get(key).cloned().unwrap_or(Value::Null);
        let mut synthetic = Map::new();
        match kind.as_str() {
            "LabelTransformer" | "AnnotationsTransformer" => {
                let field = if kind == "LabelTransformer" {
                    "labels"
                } else {
                    "annotations"
                };
                let pairs = doc
                    .as_object()
                    .map(|m| crate::build::string_map(m, field))
                    .unwrap_or_default();
                for spec in doc
                    .get("fieldSpecs")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    let path = spec.get("path").and_then(Value::as_str).unwrap_or("");
                    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
                    let create = spec.get("create").and_then(Value::as_bool).unwrap_or(false);
                    for r in resources.iter_mut() {
                        if spec_matches(&spec, r) {
                            put(&mut r.doc, &parts, &pairs, create);
                        }
                    }
                }
                continue;
            }
            "NamespaceTransformer" => {
                synthetic.insert(
                    "namespace".into(),
                    doc.pointer("/metadata/namespace")
                        .cloned()
                        .unwrap_or(Value::Null),
                );
            }
            "PrefixSuffixTransformer" | "PrefixTransformer" | "SuffixTransformer" => {
                synthetic.insert("namePrefix".into(), get("prefix"));
                synthetic.insert("nameSuffix".into(), get("suffix"));
            }
            "ImageTagTransformer" => {
                synthetic.insert("images".into(), json!([get("imageTag")]));
            }
            "ReplicaCountTransformer" => {
                synthetic.insert("replicas".into(), json!([get("replica")]));
            }
            "PatchTransformer" => {
                let mut patch = Map::new();
                for key in ["patch", "path", "target", "options"] {
                    if let Some(v) = doc.get(key) {
                        patch.insert(key.into(), v.clone());
                    }
                }
                synthetic.insert("patches".into(), json!([patch]));
            }
            "PatchStrategicMergeTransformer" => {
                synthetic.insert("patchesStrategicMerge".into(), get("paths"));
                if let Some(inline) = doc.get("patches").and_then(Value::as_str) {
                    synthetic.insert("patches".into(), json!([{"patch": inline}]));
                }
            }
            "PatchJson6902Transformer" => {
                let mut patch = Map::new();
                patch.insert("target".into(), get("target"));
                if let Some(p) = doc.get("path") {
                    patch.insert("path".into(), p.clone());
                }
                if let Some(op) = doc.get("jsonOp") {
                    patch.insert("patch".into(), op.clone());
                }
                synthetic.insert("patchesJson6902".into(), json!([patch]));
            }
            "ReplacementTransformer" => {
                synthetic.insert("replacements".into(), get("replacements"));
            }
            other => {
                return Err(fail(format!(
                    "{}: transformers: {other} is not supported by Dray's kustomize-build",
                    file.display()
                )));
            }
        }
        crate::build::transform(resources, &synthetic, dir, file, config)?;
    }
    Ok(())
}
