//! `kustomize-build`: renders a kustomization as `kustomize build` does, inside the sandbox.
//! It covers the fields overlays use every day (resources and bases, namespace, name prefix and
//! suffix, labels and annotations, images, replicas, strategic-merge and JSON 6902 patches,
//! ConfigMap and Secret generators with kustomize's content hash and the references to them)
//! and refuses the rest by name, so an unsupported kustomization fails loudly instead of
//! rendering something different. The end-to-end tests compare its output with `kubectl
//! kustomize`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use dray_sdk::StepError;
use serde_json::{Map, Value, json};

use crate::config::{Config, FieldSpec};
use crate::{emit, generate, patch, transform};

/// A rendered resource and the name it had when it was first loaded or generated (references
/// in other resources use that name; the final name is in `doc`).
#[derive(Clone, Debug)]
pub struct Resource {
    pub doc: Value,
    pub original_name: String,
    /// The namespace it had then (`""` for none).
    pub original_namespace: String,
    /// Generated with a content-hash suffix still to add.
    pub hashed: bool,
}

impl Resource {
    pub fn kind(&self) -> &str {
        self.doc.get("kind").and_then(Value::as_str).unwrap_or("")
    }
    pub fn name(&self) -> &str {
        self.doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn namespace(&self) -> &str {
        self.doc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn api_version(&self) -> &str {
        self.doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn set_name(&mut self, name: String) {
        if let Some(meta) = self.doc.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("name".into(), Value::String(name));
        }
    }
}

/// The fields this implementation understands; any other top-level field is refused.
const KNOWN: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "resources",
    "bases",
    "namespace",
    "namePrefix",
    "nameSuffix",
    "commonLabels",
    "labels",
    "commonAnnotations",
    "images",
    "replicas",
    "patches",
    "patchesStrategicMerge",
    "patchesJson6902",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "buildMetadata",
    "components",
    "replacements",
    "vars",
    "transformers",
    "generators",
    "helmCharts",
    "helmGlobals",
    "sortOptions",
    "configurations",
];

pub fn fail(message: impl Into<String>) -> StepError {
    StepError::Terminal(message.into())
}

/// Joins `relative` to `dir` lexically (the sandbox's root is the work directory, so `..`
/// cannot leave it; this keeps messages readable).
pub fn join(dir: &Path, relative: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in dir.join(relative).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The largest file a kustomization may name (a resource, a patch, a generator's file).
pub const MAX_FILE: u64 = 32 << 20;

/// The bytes of a regular file of at most [`MAX_FILE`]: a kustomization comes from a Git
/// repository, and a device, a FIFO or a huge file there must fail, not hang or exhaust memory.
/// The error says which file and why ("cannot read …: …").
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let cannot = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| cannot(&e))?;
    let meta = file.metadata().map_err(|e| cannot(&e))?;
    if !meta.is_file() {
        return Err(cannot(&"not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(&e))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(cannot(&format_args!("larger than {} MiB", MAX_FILE >> 20)));
    }
    Ok(bytes)
}

pub fn read(path: &Path) -> Result<String, StepError> {
    String::from_utf8(read_bytes(path).map_err(fail)?)
        .map_err(|_| fail(format!("cannot read {}: not UTF-8 text", path.display())))
}

/// Every document of a YAML file as JSON (empty documents dropped).
pub fn load_yaml(path: &Path) -> Result<Vec<Value>, StepError> {
    let text = read(path)?;
    let docs = dray_sdk::yaml::v3::load(&text)
        .map_err(|e| fail(format!("{} is not valid YAML: {e}", path.display())))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

fn strings(k: &Map<String, Value>, field: &str, file: &Path) -> Result<Vec<String>, StepError> {
    match k.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    fail(format!(
                        "{}: {field} must be a list of strings",
                        file.display()
                    ))
                })
            })
            .collect(),
        Some(_) => Err(fail(format!("{}: {field} must be a list", file.display()))),
    }
}

pub(crate) fn string_map(k: &Map<String, Value>, field: &str) -> BTreeMap<String, String> {
    k.get(field)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Loads a resource file's documents as resources (each needs a kind and a name).
fn load_resources(path: &Path) -> Result<Vec<Resource>, StepError> {
    let mut out = Vec::new();
    for (i, doc) in load_yaml(path)?.into_iter().enumerate() {
        if doc.get("kind").and_then(Value::as_str) == Some("List") {
            for item in doc
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                out.push(resource(item, path, i)?);
            }
            continue;
        }
        out.push(resource(doc, path, i)?);
    }
    Ok(out)
}

pub(crate) fn resource(mut doc: Value, path: &Path, index: usize) -> Result<Resource, StepError> {
    // kustomize keeps annotations apart and writes none when there are none.
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut)
        && meta
            .get("annotations")
            .is_some_and(|a| a.is_null() || a.as_object().is_some_and(|m| m.is_empty()))
    {
        meta.remove("annotations");
    }
    let name = doc.pointer("/metadata/name").and_then(Value::as_str);
    match (doc.get("kind").and_then(Value::as_str), name) {
        (Some(_), Some(name)) => Ok(Resource {
            original_name: name.to_string(),
            original_namespace: doc
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            doc,
            hashed: false,
        }),
        _ => Err(fail(format!(
            "{} (document {}): a resource needs kind and metadata.name",
            path.display(),
            index + 1
        ))),
    }
}

/// Renders the kustomization in `dir` (the inner, unhashed result: hash suffixes and name
/// references are settled once, at the top).
fn build_dir(
    dir: &Path,
    depth: usize,
    vars: &mut Vec<Value>,
    config: &mut Config,
) -> Result<Vec<Resource>, StepError> {
    let mut resources = Vec::new();
    // A kustomization's configurations apply to it and to those that include it, not to its
    // siblings.
    let mut own = Config::default();
    build_into(dir, depth, &mut resources, vars, &mut own, false)?;
    config.extend(own);
    Ok(resources)
}

/// Renders the kustomization (or, if `component`, the Component) in `dir` onto `resources`:
/// a kustomization starts from nothing, a Component works on what its parent has accumulated,
/// as kustomize runs one (after the parent's resources and generators, before its
/// transformers).
fn build_into(
    dir: &Path,
    depth: usize,
    resources: &mut Vec<Resource>,
    vars: &mut Vec<Value>,
    config: &mut Config,
    component: bool,
) -> Result<(), StepError> {
    if depth > 32 {
        return Err(fail(format!(
            "{}: kustomizations nest more than 32 deep (a cycle?)",
            dir.display()
        )));
    }
    let file = kustomization_file(dir)
        .ok_or_else(|| fail(format!("{} has no kustomization.yaml", dir.display())))?;
    let k = match load_yaml(&file)?.into_iter().next() {
        Some(Value::Object(k)) => k,
        None => Map::new(),
        Some(_) => return Err(fail(format!("{} is not a mapping", file.display()))),
    };
    let is_component = k.get("kind").and_then(Value::as_str) == Some("Component");
    if component && !is_component {
        return Err(fail(format!(
            "{} is listed in components but is not a Component (kind: Component, apiVersion: kustomize.config.k8s.io/v1alpha1)",
            file.display()
        )));
    }
    if !component && is_component {
        return Err(fail(format!(
            "{} is a Component: list it in components, not in resources",
            file.display()
        )));
    }
    if let Some(unknown) = k.keys().find(|key| !KNOWN.contains(&key.as_str())) {
        return Err(fail(format!(
            "{}: {unknown} is not supported by Dray's kustomize-build (it supports {}); render with a custom step instead",
            file.display(),
            KNOWN[3..].join(", ")
        )));
    }
    for entry in strings(&k, "resources", &file)?
        .iter()
        .chain(strings(&k, "bases", &file)?.iter())
    {
        if entry.contains("://") || entry.starts_with("github.com/") || entry.starts_with("git@") {
            return Err(fail(format!(
                "{}: remote resource {entry} is not supported (a step sees only its work directory); clone it with git-clone first",
                file.display()
            )));
        }
        let path = join(dir, entry);
        if path.is_dir() {
            resources.extend(build_dir(&path, depth + 1, vars, config)?);
        } else if path.is_file() {
            resources.extend(load_resources(&path)?);
        } else {
            return Err(fail(format!(
                "{}: resource {entry} does not exist",
                file.display()
            )));
        }
    }
    crate::config::load(&k, dir, &file, config)?;
    generate::generators(&k, dir, &file, resources)?;
    crate::helm::inflate(&k, dir, &file, resources)?;
    for entry in strings(&k, "components", &file)? {
        let path = join(dir, &entry);
        if !path.is_dir() {
            return Err(fail(format!(
                "{}: component {entry} is not a directory",
                file.display()
            )));
        }
        build_into(&path, depth + 1, resources, vars, config, true)?;
    }
    crate::custom::generators(&k, dir, &file, resources)?;
    check_unique(resources, &file)?;
    transform(resources, &k, dir, &file, config)?;
    crate::custom::transformers(&k, dir, &file, resources, config)?;
    crate::vars::collect(&k, &file, vars)?;
    Ok(())
}

/// Kustomize's built-in transformers, in its order, as `k` configures them.
pub(crate) fn transform(
    resources: &mut Vec<Resource>,
    k: &Map<String, Value>,
    dir: &Path,
    file: &Path,
    config: &Config,
) -> Result<(), StepError> {
    let (k, file) = (k.clone(), file.to_path_buf());
    // The order of kustomize's built-in transformers.
    for entry in strings(&k, "patchesStrategicMerge", &file)? {
        let path = join(dir, &entry);
        for doc in load_yaml(&path)? {
            apply_patch(resources, doc, None, &file)?;
        }
    }
    if let Some(patches) = k.get("patches").and_then(Value::as_array) {
        for (i, p) in patches.iter().enumerate() {
            let docs = patch_docs(p, dir, &file, i)?;
            let target = p.get("target").cloned();
            for doc in docs {
                apply_patch(resources, doc, target.clone(), &file)?;
            }
        }
    }
    if let Some(namespace) = k.get("namespace").and_then(Value::as_str) {
        transform::namespace(resources, namespace);
    }
    let prefix = k.get("namePrefix").and_then(Value::as_str).unwrap_or("");
    let suffix = k.get("nameSuffix").and_then(Value::as_str).unwrap_or("");
    if !prefix.is_empty() || !suffix.is_empty() {
        transform::prefix_suffix(resources, prefix, suffix);
    }
    let common = string_map(&k, "commonLabels");
    if !common.is_empty() {
        transform::labels(resources, &common, true, true);
        extra_pairs(resources, &config.common_labels, &common);
    }
    if let Some(labels) = k.get("labels").and_then(Value::as_array) {
        for l in labels {
            let pairs = l
                .as_object()
                .map(|l| string_map(l, "pairs"))
                .unwrap_or_default();
            let selectors = l
                .get("includeSelectors")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let templates = l
                .get("includeTemplates")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                || selectors;
            transform::labels(resources, &pairs, selectors, templates);
            if selectors {
                extra_pairs(resources, &config.common_labels, &pairs);
            }
        }
    }
    let annotations = string_map(&k, "commonAnnotations");
    if !annotations.is_empty() {
        transform::annotations(resources, &annotations);
        extra_pairs(resources, &config.common_annotations, &annotations);
    }
    if let Some(patches) = k.get("patchesJson6902").and_then(Value::as_array) {
        for (i, p) in patches.iter().enumerate() {
            for doc in patch_docs(p, dir, &file, i)? {
                apply_patch(resources, doc, p.get("target").cloned(), &file)?;
            }
        }
    }
    if let Some(replicas) = k.get("replicas").and_then(Value::as_array) {
        transform::replicas(resources, replicas, &file)?;
    }
    if let Some(images) = k.get("images").and_then(Value::as_array) {
        transform::images(resources, images);
        for spec in &config.images {
            for r in resources.iter_mut().filter(|r| spec.matches(r)) {
                let mut f = |v: &mut Value| transform::set_image(v, images);
                crate::config::visit(&mut r.doc, &spec.parts(), false, &mut f);
            }
        }
    }
    crate::replace::apply(resources, &k, dir, &file)?;
    Ok(())
}

/// Puts `pairs` into the maps custom fieldSpecs name (`configurations`).
fn extra_pairs(resources: &mut [Resource], specs: &[FieldSpec], pairs: &BTreeMap<String, String>) {
    for spec in specs {
        for r in resources.iter_mut().filter(|r| spec.matches(r)) {
            let mut f = |v: &mut Value| {
                if let Value::Object(m) = v {
                    for (k, val) in pairs {
                        m.insert(k.clone(), Value::String(val.clone()));
                    }
                }
            };
            crate::config::visit(&mut r.doc, &spec.parts(), spec.create, &mut f);
        }
    }
}

fn check_unique(resources: &[Resource], file: &Path) -> Result<(), StepError> {
    let mut seen = std::collections::BTreeSet::new();
    for r in resources {
        if !seen.insert((
            r.api_version().to_string(),
            r.kind().to_string(),
            r.namespace().to_string(),
            r.name().to_string(),
        )) {
            return Err(fail(format!(
                "{}: {} {} is defined twice (kustomize refuses duplicates too)",
                file.display(),
                r.kind(),
                r.name()
            )));
        }
    }
    Ok(())
}

/// A `patches` entry's documents (from `path` or inline `patch`).
fn patch_docs(p: &Value, dir: &Path, file: &Path, i: usize) -> Result<Vec<Value>, StepError> {
    if let Some(path) = p.get("path").and_then(Value::as_str) {
        return load_yaml(&join(dir, path));
    }
    let text = p.get("patch").and_then(Value::as_str).ok_or_else(|| {
        fail(format!(
            "{}: patches[{i}] needs path or patch",
            file.display()
        ))
    })?;
    let docs = dray_sdk::yaml::v3::load(text).map_err(|e| {
        fail(format!(
            "{}: patches[{i}].patch is not valid YAML: {e}",
            file.display()
        ))
    })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

pub(crate) fn matches_target(r: &Resource, target: &Value) -> Result<bool, StepError> {
    let field = |name: &str| target.get(name).and_then(Value::as_str);
    let regex = |pattern: &str, value: &str| -> Result<bool, StepError> {
        let full = format!("^(?:{pattern})$");
        // Names in targets are regular expressions in kustomize; most are plain names.
        if pattern
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Ok(pattern == value);
        }
        crate::regex_match(&full, value).map_err(|e| fail(format!("patch target {pattern:?}: {e}")))
    };
    let (group, version) = match r.api_version().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", r.api_version()),
    };
    if field("group").is_some_and(|g| g != group)
        || field("version").is_some_and(|v| v != version)
        || field("kind").is_some_and(|k| k != r.kind())
    {
        return Ok(false);
    }
    if let Some(name) = field("name") {
        // A target may name a resource by its current name or the one it was loaded with (a
        // base's patch still finds `web` after a prefix made it `dev-web`), as kustomize allows.
        if !regex(name, r.name())? && !regex(name, &r.original_name)? {
            return Ok(false);
        }
    }
    if let Some(ns) = field("namespace")
        && !regex(ns, r.namespace())?
    {
        return Ok(false);
    }
    for (selector, at) in [
        ("labelSelector", "/metadata/labels"),
        ("annotationSelector", "/metadata/annotations"),
    ] {
        if let Some(sel) = field(selector) {
            let have = r.doc.pointer(at).cloned().unwrap_or(json!({}));
            for term in sel.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let ok = match term.split_once("!=") {
                    Some((k, v)) => have.get(k.trim()).and_then(Value::as_str) != Some(v.trim()),
                    None => match term.split_once('=') {
                        Some((k, v)) => {
                            have.get(k.trim()).and_then(Value::as_str)
                                == Some(v.trim_start_matches('=').trim())
                        }
                        None => have.get(term).is_some(),
                    },
                };
                if !ok {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

fn apply_patch(
    resources: &mut Vec<Resource>,
    doc: Value,
    target: Option<Value>,
    file: &Path,
) -> Result<(), StepError> {
    let json6902 = patch::is_json6902(&doc);
    let target = match target {
        Some(t) => t,
        None if json6902 => {
            return Err(fail(format!(
                "{}: a JSON 6902 patch needs a target",
                file.display()
            )));
        }
        None => {
            let kind = doc.get("kind").and_then(Value::as_str);
            let name = doc.pointer("/metadata/name").and_then(Value::as_str);
            match (kind, name) {
                (Some(kind), Some(name)) => json!({"kind": kind, "name": name}),
                _ => {
                    return Err(fail(format!(
                        "{}: a patch without a target needs kind and metadata.name",
                        file.display()
                    )));
                }
            }
        }
    };
    if !json6902 && doc.get("$patch").and_then(Value::as_str) == Some("delete") {
        // A patch that deletes the resource it targets.
        let before = resources.len();
        let mut kept = Vec::new();
        for r in resources.drain(..) {
            if !matches_target(&r, &target)? {
                kept.push(r);
            }
        }
        *resources = kept;
        if resources.len() == before && target.get("name").is_some() {
            return Err(fail(format!(
                "{}: the patch deleting {} {} matches no resource",
                file.display(),
                target.get("kind").and_then(Value::as_str).unwrap_or("?"),
                target.get("name").and_then(Value::as_str).unwrap_or("?")
            )));
        }
        return Ok(());
    }
    let mut hit = 0;
    for r in resources.iter_mut() {
        if !matches_target(r, &target)? {
            continue;
        }
        hit += 1;
        if json6902 {
            patch::json6902(&mut r.doc, doc.as_array().expect("checked")).map_err(|e| {
                fail(format!(
                    "{}: patch on {} {}: {e}",
                    file.display(),
                    r.kind(),
                    r.name()
                ))
            })?;
        } else {
            let mut doc = doc.clone();
            // Labels and annotations are string maps to kustomize: a null in a patch's becomes
            // the text "null" instead of removing the key.
            for field in ["labels", "annotations"] {
                if let Some(Value::Object(m)) = doc.pointer_mut(&format!("/metadata/{field}")) {
                    for v in m.values_mut().filter(|v| v.is_null()) {
                        *v = Value::String("null".into());
                    }
                }
            }
            // A patch found by target names the resource itself, not a rename.
            if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("name");
                meta.remove("namespace");
            }
            if let Some(obj) = doc.as_object_mut() {
                obj.remove("apiVersion");
                obj.remove("kind");
            }
            patch::merge(&mut r.doc, doc);
        }
    }
    if hit == 0
        && target.get("name").is_some()
        && target.get("labelSelector").is_none()
        && !json6902
    {
        return Err(fail(format!(
            "{}: the patch for {} {} matches no resource",
            file.display(),
            target.get("kind").and_then(Value::as_str).unwrap_or("?"),
            target.get("name").and_then(Value::as_str).unwrap_or("?")
        )));
    }
    Ok(())
}

/// Kustomize's legacy output order: kinds that others depend on first, webhooks last.
fn kind_rank(kind: &str) -> i32 {
    const FIRST: &[&str] = &[
        "Namespace",
        "ResourceQuota",
        "StorageClass",
        "CustomResourceDefinition",
        "ServiceAccount",
        "PodSecurityPolicy",
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "ConfigMap",
        "Secret",
        "Endpoints",
        "Service",
        "LimitRange",
        "PriorityClass",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "Deployment",
        "StatefulSet",
        "CronJob",
        "PodDisruptionBudget",
    ];
    const LAST: &[&str] = &[
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    if let Some(i) = FIRST.iter().position(|k| *k == kind) {
        return i as i32 - 100;
    }
    LAST.iter()
        .position(|k| *k == kind)
        .map_or(0, |i| i as i32 + 1)
}

/// Renders the kustomization at `dir`: every resource, hashed names settled, references
/// updated, in kustomize's order.
pub fn build(dir: &Path) -> Result<Vec<Resource>, StepError> {
    let mut vars = Vec::new();
    let mut config = Config::default();
    let mut resources = build_dir(dir, 0, &mut vars, &mut config)?;
    generate::add_hashes(&mut resources);
    crate::references::update(&mut resources, &config.name_refs);
    crate::vars::resolve(&mut resources, &vars, &config.var_refs)?;
    // The top kustomization's `sortOptions` (kustomize reads no other): `fifo` keeps the order
    // resources were accumulated in; `legacy` may name its own first and last kinds.
    let file = kustomization_file(dir)
        .ok_or_else(|| fail(format!("{} has no kustomization.yaml", dir.display())))?;
    let top = load_yaml(&file)?.into_iter().next().unwrap_or(Value::Null);
    let sort = top.get("sortOptions");
    if sort.and_then(|s| s.get("order")).and_then(Value::as_str) == Some("fifo") {
        return Ok(resources);
    }
    let kinds = |field: &str| -> Option<Vec<String>> {
        sort?
            .get("legacySortOptions")?
            .get(field)?
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
    };
    let (first, last) = (kinds("orderFirst"), kinds("orderLast"));
    let rank = |kind: &str| -> i32 {
        if first.is_none() && last.is_none() {
            return kind_rank(kind);
        }
        if let Some(i) = first.iter().flatten().position(|k| k == kind) {
            return i as i32 - 10_000;
        }
        last.iter()
            .flatten()
            .position(|k| k == kind)
            .map_or(0, |i| i as i32 + 1)
    };
    resources.sort_by(|a, b| {
        let gvk = |r: &Resource| format!("{}_{}", r.api_version(), r.kind());
        (
            rank(a.kind()),
            gvk(a),
            a.namespace().to_string(),
            a.name().to_string(),
        )
            .cmp(&(
                rank(b.kind()),
                gvk(b),
                b.namespace().to_string(),
                b.name().to_string(),
            ))
    });
    Ok(resources)
}

/// The file a resource goes to when `outPath` is a directory.
fn file_name(r: &Resource, kustomize_style: bool, several_namespaces: bool) -> String {
    let name = if kustomize_style {
        let (group, version) = match r.api_version().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), r.api_version().to_string()),
        };
        let gvk = [group, version, r.kind().to_string()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("_");
        let base = format!("{gvk}_{}.yaml", r.name());
        if several_namespaces && !r.namespace().is_empty() {
            format!("{}_{base}", r.namespace())
        } else {
            base
        }
    } else if r.namespace().is_empty() {
        format!("{}-{}.yaml", r.kind(), r.name())
    } else {
        format!("{}-{}-{}.yaml", r.namespace(), r.kind(), r.name())
    };
    name.to_lowercase()
}

/// Writes the result: one file when `out` ends in .yaml/.yml, a file per resource otherwise.
pub fn write(resources: &[Resource], out: &str, format: &str) -> Result<usize, StepError> {
    let out_path = Path::new(out);
    let io = |e: std::io::Error, p: &Path| {
        StepError::Retryable(format!("cannot write {}: {e}", p.display()))
    };
    if out.ends_with(".yaml") || out.ends_with(".yml") {
        if let Some(parent) = out_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io(e, parent))?;
        }
        std::fs::write(out_path, emit::documents(resources.iter().map(|r| &r.doc)))
            .map_err(|e| io(e, out_path))?;
        return Ok(1);
    }
    std::fs::create_dir_all(out_path).map_err(|e| io(e, out_path))?;
    let namespaces: std::collections::BTreeSet<&str> = resources
        .iter()
        .map(|r| r.namespace())
        .filter(|n| !n.is_empty())
        .collect();
    let mut written = 0;
    for r in resources {
        let name = file_name(r, format == "kustomize", namespaces.len() > 1);
        // Names come from rendered resources: never let one be a path.
        if name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(fail(format!(
                "{} {}: {name:?} is not a safe file name",
                r.kind(),
                r.name()
            )));
        }
        let path = out_path.join(&name);
        std::fs::write(&path, emit::document(&r.doc)).map_err(|e| io(e, &path))?;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// A fresh directory holding `files` (name, content).
    fn dir(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("dray-kustomize-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (file, text) in files {
            std::fs::write(dir.join(file), text).expect("write");
        }
        dir
    }

    #[test]
    fn a_device_or_a_huge_file_is_refused_not_read() {
        let d = dir(
            "device",
            &[(
                "kustomization.yaml",
                "configMapGenerator:\n- name: zeros\n  files: [/dev/zero]\n",
            )],
        );
        let error = crate::render(&d).expect_err("a device is no resource");
        assert!(error.contains("/dev/zero: not a regular file"), "{error}");

        let d = dir(
            "huge",
            &[(
                "kustomization.yaml",
                "configMapGenerator:\n- name: big\n  files: [big.bin]\n",
            )],
        );
        // Sparse: 33 MiB of holes, no disk used.
        std::fs::File::create(d.join("big.bin"))
            .and_then(|f| f.set_len(super::MAX_FILE + (1 << 20)))
            .expect("sparse file");
        let error = crate::render(&d).expect_err("over the limit");
        assert!(error.contains("big.bin: larger than 32 MiB"), "{error}");
    }
}
