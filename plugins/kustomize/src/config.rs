//! `configurations`: files that teach kustomize where more fields are, beyond its defaults, for
//! custom resources — which fields refer to a ConfigMap or a Service by name (`nameReference`),
//! which hold images (`images`), where `commonLabels` and `commonAnnotations` go, where vars may
//! appear (`varReference`). A kustomization's configurations apply to it and to the
//! kustomizations that include it, as kustomize merges them upwards.

use std::path::Path;

use dray_sdk::StepError;
use serde_json::{Map, Value};

use crate::build::{Resource, fail, join, load_yaml};

/// Where a field is, in the kinds it applies to (`kind`, `group`, `version`: any if absent).
#[derive(Debug, Clone)]
pub struct FieldSpec {
    kind: Option<String>,
    group: Option<String>,
    version: Option<String>,
    /// The path's parts; a part written `name[]` walks a list (lists are walked through anyway).
    pub path: Vec<String>,
    pub create: bool,
}

impl FieldSpec {
    fn parse(v: &Value, file: &Path) -> Result<FieldSpec, StepError> {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let path = s("path")
            .ok_or_else(|| fail(format!("{}: a fieldSpec needs a path", file.display())))?;
        Ok(FieldSpec {
            kind: s("kind"),
            group: s("group"),
            version: s("version"),
            path: path
                .split('/')
                .filter(|p| !p.is_empty())
                .map(|p| p.trim_end_matches("[]").to_string())
                .collect(),
            create: v.get("create").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// Whether it applies to `r`.
    pub fn matches(&self, r: &Resource) -> bool {
        self.matches_kind_of(r.kind(), r.api_version())
    }

    /// [`FieldSpec::matches`] for a resource of `kind` and `api_version`.
    pub fn matches_kind_of(&self, kind: &str, api_version: &str) -> bool {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.kind.as_deref().is_none_or(|k| k == kind)
            && self.group.as_deref().is_none_or(|g| g == group)
            && self.version.as_deref().is_none_or(|v| v == version)
    }

    pub fn parts(&self) -> Vec<&str> {
        self.path.iter().map(String::as_str).collect()
    }
}

/// What configurations add to kustomize's defaults.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// (the kind referred to, where the reference is).
    pub name_refs: Vec<(String, FieldSpec)>,
    pub var_refs: Vec<FieldSpec>,
    pub images: Vec<FieldSpec>,
    pub common_labels: Vec<FieldSpec>,
    pub common_annotations: Vec<FieldSpec>,
}

impl Config {
    pub fn extend(&mut self, other: Config) {
        self.name_refs.extend(other.name_refs);
        self.var_refs.extend(other.var_refs);
        self.images.extend(other.images);
        self.common_labels.extend(other.common_labels);
        self.common_annotations.extend(other.common_annotations);
    }
}

fn specs(doc: &Value, field: &str, file: &Path) -> Result<Vec<FieldSpec>, StepError> {
    doc.get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| FieldSpec::parse(v, file))
        .collect()
}

/// Reads a kustomization's `configurations` into `config`.
pub fn load(
    k: &Map<String, Value>,
    dir: &Path,
    file: &Path,
    config: &mut Config,
) -> Result<(), StepError> {
    let Some(entries) = k.get("configurations") else {
        return Ok(());
    };
    let Value::Array(entries) = entries else {
        return Err(fail(format!(
            "{}: configurations must be a list of files",
            file.display()
        )));
    };
    for entry in entries {
        let Some(path) = entry.as_str() else {
            return Err(fail(format!(
                "{}: configurations must be a list of files",
                file.display()
            )));
        };
        let path = join(dir, path);
        for doc in load_yaml(&path)? {
            let Value::Object(fields) = &doc else {
                continue;
            };
            for key in fields.keys() {
                if !matches!(
                    key.as_str(),
                    "nameReference"
                        | "varReference"
                        | "images"
                        | "commonLabels"
                        | "commonAnnotations"
                ) {
                    return Err(fail(format!(
                        "{}: {key} is not supported by Dray's kustomize-build (nameReference, varReference, images, commonLabels and commonAnnotations are)",
                        path.display()
                    )));
                }
            }
            for target in doc
                .get("nameReference")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let kind = target.get("kind").and_then(Value::as_str).ok_or_else(|| {
                    fail(format!("{}: a nameReference needs a kind", path.display()))
                })?;
                for spec in specs(target, "fieldSpecs", &path)? {
                    config.name_refs.push((kind.to_string(), spec));
                }
            }
            config.var_refs.extend(specs(&doc, "varReference", &path)?);
            config.images.extend(specs(&doc, "images", &path)?);
            config
                .common_labels
                .extend(specs(&doc, "commonLabels", &path)?);
            config
                .common_annotations
                .extend(specs(&doc, "commonAnnotations", &path)?);
        }
    }
    Ok(())
}

/// Calls `f` on every value at `path` under `node` (lists walked through); missing maps on the
/// way are created when `create`.
pub fn visit(node: &mut Value, path: &[&str], create: bool, f: &mut dyn FnMut(&mut Value)) {
    match node {
        Value::Array(items) => items.iter_mut().for_each(|i| visit(i, path, create, f)),
        Value::Object(map) => match path.split_first() {
            None => f(node),
            Some((first, rest)) => {
                if !map.contains_key(*first) {
                    if !create {
                        return;
                    }
                    map.insert(first.to_string(), Value::Object(Map::new()));
                }
                if let Some(child) = map.get_mut(*first) {
                    if child.is_null() && create {
                        *child = Value::Object(Map::new());
                    }
                    visit(child, rest, create, f);
                }
            }
        },
        _ if path.is_empty() => f(node),
        _ => {}
    }
}
