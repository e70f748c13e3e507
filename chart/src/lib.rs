//! `chart`: Helm charts rendered as `helm template` renders them, without Helm. It loads a chart
//! (with its sub-charts), merges values as Helm coalesces them (defaults, sub-chart scopes,
//! `global`, `null` deleting a default, dependency `condition`s and `tags`), renders every
//! template with the [`gotmpl`] engine and Helm's functions, and orders the documents as Helm
//! does (by kind, then by file), with hooks after.
//!
//! Charts load from directories or from packages (`.tgz`, bounded and checked: no links, no
//! `..`, at most 64 MiB unpacked), sub-charts from either form. Not yet: `import-values`,
//! `values.schema.json`, `toToml`; each is skipped or fails with a message.

pub mod funcs;
pub mod semver;
pub mod strvals;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use gotmpl::{MissingKey, Templates, Value};

/// The most bytes a chart's files may hold in all.
pub const MAX_CHART_BYTES: u64 = 64 << 20;

/// A loaded chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// `Chart.yaml`.
    pub metadata: BTreeMap<String, Value>,
    /// `values.yaml`.
    pub values: Value,
    /// Templates by path relative to the chart (`templates/x.yaml`).
    pub templates: BTreeMap<String, String>,
    /// Files for `.Files`, by path relative to the chart.
    pub files: BTreeMap<String, Vec<u8>>,
    /// CRDs in `crds/`, by path relative to the chart.
    pub crds: BTreeMap<String, String>,
    /// `values.schema.json`, the JSON Schema its values must meet, if it has one.
    pub schema: Option<String>,
    pub subcharts: Vec<Chart>,
}

/// Something wrong with a chart or its rendering: what, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn err(message: impl Into<String>) -> Error {
    Error(message.into())
}

impl Chart {
    pub fn name(&self) -> String {
        self.metadata
            .get("name")
            .map(gotmpl::sprig::strval)
            .unwrap_or_default()
    }

    /// Loads a chart directory, or a packaged chart (`.tgz`).
    pub fn load(path: &Path) -> Result<Chart, Error> {
        if path.is_file() {
            let meta = std::fs::metadata(path)
                .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
            if meta.len() > MAX_CHART_BYTES {
                return Err(err(format!(
                    "{} is larger than {} MiB",
                    path.display(),
                    MAX_CHART_BYTES >> 20
                )));
            }
            let bytes = std::fs::read(path)
                .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
            return Chart::from_archive(&bytes, &path.display().to_string());
        }
        Chart::load_dir(path)
    }

    /// Loads the chart in directory `dir`.
    pub fn load_dir(dir: &Path) -> Result<Chart, Error> {
        let mut files = BTreeMap::new();
        let mut total = 0u64;
        let ignore = read_helmignore(dir);
        walk(dir, dir, &ignore, &mut files, &mut total)?;
        Chart::from_files(files, &dir.display().to_string())
    }

    /// A chart from its files (paths relative to the chart's root); `origin` names it in errors.
    pub fn from_files(mut files: BTreeMap<String, Vec<u8>>, origin: &str) -> Result<Chart, Error> {
        let text = |b: &[u8], path: &str| {
            String::from_utf8(b.to_vec()).map_err(|_| err(format!("{origin}/{path} is not UTF-8")))
        };
        let chart_yaml = files
            .remove("Chart.yaml")
            .ok_or_else(|| err(format!("{origin}: no Chart.yaml: is this a chart?")))?;
        let metadata = match yaml::load_with(&text(&chart_yaml, "Chart.yaml")?, false)
            .map_err(|e| err(format!("{origin}/Chart.yaml: {e}")))?
            .into_iter()
            .next()
        {
            Some(Value::Map(m)) => m.snapshot(),
            _ => return Err(err(format!("{origin}/Chart.yaml is not a mapping"))),
        };
        if metadata
            .get("name")
            .is_none_or(|n| gotmpl::sprig::strval(n).is_empty())
        {
            return Err(err(format!(
                "{origin}/Chart.yaml: chart.metadata.name is required"
            )));
        }
        let values = match files.remove("values.yaml") {
            Some(b) => match yaml::load(&text(&b, "values.yaml")?)
                .map_err(|e| err(format!("{origin}/values.yaml: {e}")))?
                .into_iter()
                .next()
            {
                Some(Value::Map(m)) => Value::Map(m),
                None | Some(Value::Nil) => Value::map([]),
                Some(_) => return Err(err(format!("{origin}/values.yaml is not a mapping"))),
            },
            None => Value::map([]),
        };
        let schema = match files.remove("values.schema.json") {
            Some(b) => Some(text(&b, "values.schema.json")?),
            None => None,
        };
        let mut templates = BTreeMap::new();
        let mut crds = BTreeMap::new();
        let mut own_files = BTreeMap::new();
        let mut sub_files: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
        let mut packaged: Vec<(String, Vec<u8>)> = Vec::new();
        for (path, bytes) in files {
            if let Some(rest) = path.strip_prefix("charts/") {
                match rest.split_once('/') {
                    Some((sub, inner)) => {
                        sub_files
                            .entry(sub.to_string())
                            .or_default()
                            .insert(inner.to_string(), bytes);
                    }
                    None if rest.ends_with(".tgz") || rest.ends_with(".tar.gz") => {
                        packaged.push((rest.to_string(), bytes));
                    }
                    None => {}
                }
                continue;
            }
            if path.starts_with("templates/") {
                templates.insert(path.clone(), text(&bytes, &path)?);
            } else {
                if path.starts_with("crds/") {
                    crds.insert(path.clone(), text(&bytes, &path)?);
                }
                if !matches!(
                    path.as_str(),
                    "requirements.yaml" | "requirements.lock" | "Chart.lock"
                ) {
                    own_files.insert(path, bytes);
                }
            }
        }
        let mut subcharts = Vec::new();
        for (name, files) in sub_files {
            subcharts.push(Chart::from_files(
                files,
                &format!("{origin}/charts/{name}"),
            )?);
        }
        for (name, bytes) in packaged {
            subcharts.push(Chart::from_archive(
                &bytes,
                &format!("{origin}/charts/{name}"),
            )?);
        }
        Ok(Chart {
            metadata,
            values,
            templates,
            files: own_files,
            crds,
            schema,
            subcharts,
        })
    }
}

impl Chart {
    /// Loads a packaged chart (`helm package`'s `.tgz`: one top directory holding the chart).
    /// Bounded: at most [`MAX_CHART_BYTES`] unpacked and 10,000 entries; links, absolute paths
    /// and `..` are refused.
    pub fn from_archive(bytes: &[u8], origin: &str) -> Result<Chart, Error> {
        use std::io::Read as _;
        let gz = flate2::read::GzDecoder::new(bytes);
        let mut archive = tar::Archive::new(gz);
        let mut files = BTreeMap::new();
        let mut total = 0u64;
        let entries = archive
            .entries()
            .map_err(|e| err(format!("{origin} is not a chart archive: {e}")))?;
        for (count, entry) in entries.enumerate() {
            if count >= 10_000 {
                return Err(err(format!("{origin} has more than 10000 entries")));
            }
            let mut entry = entry.map_err(|e| {
                err(format!(
                    "{origin} is not a chart archive (a gzipped tar, as `helm package` makes): {e}"
                ))
            })?;
            let kind = entry.header().entry_type();
            if kind.is_dir() || kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
                continue;
            }
            if !kind.is_file() {
                return Err(err(format!(
                    "{origin} holds a link or a special file; refused"
                )));
            }
            let path = entry
                .path()
                .map_err(|e| err(format!("{origin}: {e}")))?
                .to_string_lossy()
                .replace('\\', "/");
            if path.starts_with('/') || path.split('/').any(|p| p == "..") {
                return Err(err(format!("{origin} holds the path {path:?}; refused")));
            }
            // Inside the archive's top directory (the chart's name).
            let Some((_, inner)) = path.split_once('/') else {
                continue;
            };
            let mut data = Vec::new();
            let limit = MAX_CHART_BYTES.saturating_sub(total) + 1;
            entry
                .by_ref()
                .take(limit)
                .read_to_end(&mut data)
                .map_err(|e| err(format!("{origin}: {e}")))?;
            total += data.len() as u64;
            if total > MAX_CHART_BYTES {
                return Err(err(format!(
                    "{origin} unpacks to more than {} MiB",
                    MAX_CHART_BYTES >> 20
                )));
            }
            files.insert(inner.to_string(), data);
        }
        let ignore: Vec<String> = files
            .get(".helmignore")
            .map(|b| {
                String::from_utf8_lossy(b)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        files.retain(|path, _| !ignored(&ignore, path, false));
        Chart::from_files(files, origin)
    }
}

/// `.helmignore` patterns (one per line; `#` comments; a trailing `/` for directories).
fn read_helmignore(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(".helmignore"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn ignored(patterns: &[String], rel: &str, is_dir: bool) -> bool {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    patterns.iter().any(|p| {
        let (p, dir_only) = match p.strip_suffix('/') {
            Some(p) => (p, true),
            None => (p.as_str(), false),
        };
        if dir_only && !is_dir {
            return false;
        }
        if p.contains('/') {
            funcs::glob_match(p.trim_start_matches('/'), rel)
        } else {
            funcs::glob_match(p, base)
        }
    })
}

fn walk(
    root: &Path,
    dir: &Path,
    ignore: &[String],
    files: &mut BTreeMap<String, Vec<u8>>,
    total: &mut u64,
) -> Result<(), Error> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| err(format!("cannot read {}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| err(e.to_string()))?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .map_err(|e| err(e.to_string()))?
            .to_string_lossy()
            .replace('\\', "/");
        let meta = std::fs::symlink_metadata(&path).map_err(|e| err(e.to_string()))?;
        if meta.file_type().is_symlink() {
            // Links are not followed: a chart from a repository could point anywhere.
            continue;
        }
        if ignored(ignore, &rel, meta.is_dir()) {
            continue;
        }
        if meta.is_dir() {
            walk(root, &path, ignore, files, total)?;
        } else {
            *total += meta.len();
            if *total > MAX_CHART_BYTES {
                return Err(err(format!(
                    "the chart's files pass {} MiB",
                    MAX_CHART_BYTES >> 20
                )));
            }
            let bytes = std::fs::read(&path).map_err(|e| err(format!("cannot read {rel}: {e}")))?;
            files.insert(rel, bytes);
        }
    }
    Ok(())
}

/// Packages the chart in directory `dir` as `helm package` does: a gzipped tar whose one top
/// directory is the chart's name, honouring `.helmignore`, links left out. Returns the chart's
/// name, its version and the archive (conventionally written as `NAME-VERSION.tgz`).
pub fn package(dir: &Path) -> Result<(String, String, Vec<u8>), Error> {
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    walk(dir, dir, &read_helmignore(dir), &mut files, &mut total)?;
    let chart = Chart::from_files(files.clone(), &dir.display().to_string())?;
    let name = chart.name();
    let version = chart
        .metadata
        .get("version")
        .map(gotmpl::sprig::strval)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| err(format!("{}/Chart.yaml has no version", dir.display())))?;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut archive = tar::Builder::new(gz);
    for (path, bytes) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        archive
            .append_data(&mut header, format!("{name}/{path}"), bytes.as_slice())
            .map_err(|e| err(format!("cannot package {path}: {e}")))?;
    }
    let bytes = archive
        .into_inner()
        .and_then(|gz| gz.finish())
        .map_err(|e| err(format!("cannot package {}: {e}", dir.display())))?;
    Ok((name, version, bytes))
}

/// What a render is told (`helm template`'s flags).
#[derive(Debug, Clone)]
pub struct Options {
    pub release_name: String,
    pub namespace: String,
    /// Values given on top of the chart's (`-f` files and `--set`, already merged in order).
    pub values: Value,
    pub kube_version: String,
    /// API versions `.Capabilities.APIVersions.Has` knows, besides the defaults.
    pub api_versions: Vec<String>,
    /// Whether [`DEFAULT_API_VERSIONS`] are known too (`helm template`'s); off, only
    /// `api_versions` are (to render as another Helm version's defaults).
    pub default_api_versions: bool,
    pub include_crds: bool,
    pub disable_hooks: bool,
    pub skip_tests: bool,
    /// The most template nodes and range iterations a render may walk (none: as Helm, bounded
    /// by the caller's deadline; see `gotmpl::Templates::max_steps`).
    pub max_steps: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            release_name: "release-name".into(),
            namespace: "default".into(),
            values: Value::map([]),
            kube_version: "v1.20.0".into(),
            api_versions: Vec::new(),
            default_api_versions: true,
            include_crds: false,
            disable_hooks: false,
            skip_tests: false,
            max_steps: None,
        }
    }
}

/// One rendered document: the template it came from, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub source: String,
    pub content: String,
    pub kind: String,
    pub hook: Option<String>,
}

/// The API versions `helm template` assumes present (Kubernetes' built-in groups).
pub const DEFAULT_API_VERSIONS: &[&str] = &[
    "v1",
    "admissionregistration.k8s.io/v1",
    "admissionregistration.k8s.io/v1beta1",
    "apiextensions.k8s.io/v1",
    "apiextensions.k8s.io/v1beta1",
    "apiregistration.k8s.io/v1",
    "apiregistration.k8s.io/v1beta1",
    "apps/v1",
    "authentication.k8s.io/v1",
    "authentication.k8s.io/v1beta1",
    "authorization.k8s.io/v1",
    "authorization.k8s.io/v1beta1",
    "autoscaling/v1",
    "autoscaling/v2beta1",
    "autoscaling/v2beta2",
    "batch/v1",
    "batch/v1beta1",
    "certificates.k8s.io/v1",
    "certificates.k8s.io/v1beta1",
    "coordination.k8s.io/v1",
    "coordination.k8s.io/v1beta1",
    "discovery.k8s.io/v1beta1",
    "events.k8s.io/v1",
    "events.k8s.io/v1beta1",
    "extensions/v1beta1",
    "flowcontrol.apiserver.k8s.io/v1beta1",
    "networking.k8s.io/v1",
    "networking.k8s.io/v1beta1",
    "node.k8s.io/v1",
    "node.k8s.io/v1beta1",
    "policy/v1beta1",
    "rbac.authorization.k8s.io/v1",
    "rbac.authorization.k8s.io/v1beta1",
    "scheduling.k8s.io/v1",
    "scheduling.k8s.io/v1beta1",
    "storage.k8s.io/v1",
    "storage.k8s.io/v1beta1",
];

/// Helm's install order of kinds; unknown kinds come last, by name.
pub const INSTALL_ORDER: &[&str] = &[
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "Ingress",
    "APIService",
];

/// Merges `over` into `base` as Helm merges values files given in order: maps merge key by key,
/// anything else in `over` replaces.
pub fn merge_values(base: &gotmpl::value::Map, over: &gotmpl::value::Map) {
    for (k, v) in over.entries() {
        match (base.get(&k), &v) {
            (Some(Value::Map(b)), Value::Map(o)) => merge_values(&b, o),
            _ => base.insert(k, v),
        }
    }
}

/// Coalesces `over` onto the chart's defaults, as Helm: `over` wins, maps merge, a `null` in
/// `over` deletes the default, sub-charts get their own key with the parent's `global`.
pub fn coalesce(chart: &Chart, over: &Value) -> Value {
    let dest = match over {
        Value::Map(m) => deep_copy_map(m),
        _ => BTreeMap::new(),
    };
    let dest = gotmpl::value::Map::new(dest);
    coalesce_into(chart, &dest);
    Value::Map(dest)
}

fn deep_copy_map(m: &gotmpl::value::Map) -> BTreeMap<String, Value> {
    m.entries()
        .into_iter()
        .map(|(k, v)| (k, deep_copy(&v)))
        .collect()
}

fn deep_copy(v: &Value) -> Value {
    match v {
        Value::Map(m) => Value::from(deep_copy_map(m)),
        Value::List(l) => Value::list(l.iter().map(deep_copy)),
        other => other.clone(),
    }
}

fn coalesce_into(chart: &Chart, dest: &gotmpl::value::Map) {
    if let Value::Map(defaults) = &chart.values {
        coalesce_tables(dest, defaults);
    }
    for sub in &chart.subcharts {
        let name = sub.name();
        let child = match dest.get(&name) {
            Some(Value::Map(m)) => m,
            _ => {
                let m = gotmpl::value::Map::new(BTreeMap::new());
                dest.insert(name.clone(), Value::Map(m.clone()));
                m
            }
        };
        // The parent's globals go down to the child (the parent's win).
        if let Some(Value::Map(parent_globals)) = dest.get("global") {
            let child_globals = match child.get("global") {
                Some(Value::Map(g)) => g,
                _ => {
                    let g = gotmpl::value::Map::new(BTreeMap::new());
                    child.insert("global".into(), Value::Map(g.clone()));
                    g
                }
            };
            for (k, v) in parent_globals.entries() {
                match (child_globals.get(&k), &v) {
                    (Some(Value::Map(c)), Value::Map(p)) => {
                        let merged = deep_copy_map(p);
                        let merged = gotmpl::value::Map::new(merged);
                        coalesce_tables(&merged, &c);
                        child_globals.insert(k, Value::Map(merged));
                    }
                    _ => child_globals.insert(k, deep_copy(&v)),
                }
            }
        }
        coalesce_into(sub, &child);
    }
}

/// Fills `dest` with `defaults` where it has no value; maps merge; a nil in `dest` deletes.
fn coalesce_tables(dest: &gotmpl::value::Map, defaults: &gotmpl::value::Map) {
    for (k, default) in defaults.entries() {
        match dest.get(&k) {
            None => dest.insert(k, deep_copy(&default)),
            Some(Value::Nil) => {
                dest.remove(&k);
            }
            Some(Value::Map(d)) => {
                if let Value::Map(def) = &default {
                    coalesce_tables(&d, def);
                }
            }
            Some(_) => {}
        }
    }
    // Nulls the user gave for keys without defaults are removed too.
    for (k, v) in dest.entries() {
        if matches!(v, Value::Nil) {
            dest.remove(&k);
        }
    }
}

/// Fills `dst` with what `src` has and `dst` lacks, maps merging key by key (Helm's
/// `MergeTables`: `dst` wins, nulls stay).
fn merge_tables(dst: &gotmpl::value::Map, src: &gotmpl::value::Map) {
    for (k, v) in src.entries() {
        match (dst.get(&k), &v) {
            (None, _) => dst.insert(k, deep_copy(&v)),
            (Some(Value::Map(d)), Value::Map(s)) => merge_tables(&d, s),
            _ => {}
        }
    }
}

/// The map at dotted `path` under `values` (Helm's `Values.Table`), if every step is a map.
fn table(values: &Value, path: &str) -> Option<gotmpl::value::Map> {
    let mut current = values.clone();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        current = match &current {
            Value::Map(m) => m.get(part)?,
            _ => return None,
        };
    }
    match current {
        Value::Map(m) => Some(m),
        _ => None,
    }
}

/// The dependencies of `Chart.yaml`, as maps.
fn dependencies(chart: &Chart) -> Vec<BTreeMap<String, Value>> {
    match chart.metadata.get("dependencies") {
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|d| match d {
                Value::Map(m) => Some(m.snapshot()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Applies the dependencies' `import-values`, deepest charts first, as Helm 3.14+ does: a
/// string `X` imports the child's `exports.X` into the parent's top level, a `{child, parent}`
/// pair the child's table `child` at `parent`; the parent's own values win over what it imports
/// (Helm 3.6 let a string import win over them, and lost the imports made before a pair). The
/// child is found by its alias if it has one, and an import whose table is missing is skipped,
/// as in Helm.
fn import_values(chart: &mut Chart) {
    for sub in &mut chart.subcharts {
        import_values(sub);
    }
    let deps = dependencies(chart);
    if !chart.metadata.contains_key("dependencies") {
        return;
    }
    let values = coalesce(chart, &Value::Nil);
    let imported = gotmpl::value::Map::new(BTreeMap::new());
    for dep in &deps {
        let name = dep
            .get("alias")
            .map(gotmpl::sprig::strval)
            .filter(|a| !a.is_empty())
            .or_else(|| dep.get("name").map(gotmpl::sprig::strval))
            .unwrap_or_default();
        let Some(Value::List(imports)) = dep.get("import-values") else {
            continue;
        };
        for import in imports.iter() {
            let (child, parent) = match &import {
                Value::Map(m) => (
                    m.get("child")
                        .map(|v| gotmpl::sprig::strval(&v))
                        .unwrap_or_default(),
                    m.get("parent")
                        .map(|v| gotmpl::sprig::strval(&v))
                        .unwrap_or_default(),
                ),
                other => (
                    format!("exports.{}", gotmpl::sprig::strval(other)),
                    ".".to_string(),
                ),
            };
            let Some(found) = table(&values, &format!("{name}.{child}")) else {
                continue;
            };
            let mut at = Value::Map(found);
            if parent != "." {
                for part in parent.rsplit('.') {
                    at = Value::map([(part.to_string(), at)]);
                }
            }
            if let Value::Map(m) = at {
                merge_tables(&imported, &m);
            }
        }
    }
    if let Value::Map(own) = &values {
        merge_tables(own, &imported);
    }
    chart.values = values;
}

/// Values as JSON, for schema validation: integral floats as integers (as Go's JSON writes
/// them, so `replicas: 2` is an integer to the schema).
fn json_of(v: &Value) -> serde_json::Value {
    match v {
        Value::Nil => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
            serde_json::Value::from(*f as i64)
        }
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::List(l) => serde_json::Value::Array(l.iter().map(json_of).collect()),
        Value::Map(m) => serde_json::Value::Object(
            m.entries()
                .into_iter()
                .map(|(k, v)| (k, json_of(&v)))
                .collect(),
        ),
        other => serde_json::Value::String(gotmpl::sprig::strval(other)),
    }
}

/// Checks `values` against the chart's `values.schema.json` and each enabled sub-chart's values
/// against its own, as Helm does before rendering; every problem, by chart.
fn validate(chart: &Chart, values: &Value, problems: &mut String) -> Result<(), Error> {
    if let Some(text) = &chart.schema {
        // The validator recurses once per level of the schema (up to JSON's 128): on a stack of
        // its own, so a deep schema is checked rather than overflowing the caller's.
        let found = stacker::grow(SCHEMA_STACK_BYTES, || schema_problems(chart, text, values))?;
        if !found.is_empty() {
            problems.push_str(&format!("{}:\n{}", chart.name(), found.concat()));
        }
    }
    for sub in &chart.subcharts {
        let scoped = match values {
            Value::Map(m) => m.get(&sub.name()).unwrap_or(Value::Nil),
            _ => Value::Nil,
        };
        validate(sub, &scoped, problems)?;
    }
    Ok(())
}

/// The stack a chart's schema is compiled and applied on.
const SCHEMA_STACK_BYTES: usize = 32 << 20;

/// What is wrong with `values` by `chart`'s schema `text`: `- path: what` each.
fn schema_problems(chart: &Chart, text: &str, values: &Value) -> Result<Vec<String>, Error> {
    let name = chart.name();
    let schema: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| err(format!("{name}/values.schema.json is not JSON: {e}")))?;
    let location = format!("chart:///{name}/values.schema.json");
    let mut compiler = boon::Compiler::new();
    compiler.use_loader(Box::new(NothingOutside));
    let mut schemas = boon::Schemas::new();
    let not_a_schema = |e: boon::CompileError| {
        let mut message = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            message.push_str(&format!(": {c}"));
            cause = c.source();
        }
        err(format!(
            "{name}/values.schema.json is not a valid JSON Schema: {message}"
        ))
    };
    compiler
        .add_resource(&location, schema)
        .map_err(not_a_schema)?;
    let compiled = compiler
        .compile(&location, &mut schemas)
        .map_err(not_a_schema)?;
    let mut found = Vec::new();
    if let Err(e) = schemas.validate(&json_of(values), compiled) {
        leaf_problems(&e, &mut found);
    }
    Ok(found)
}

/// Where a schema's `$ref` to another document is looked up: nowhere. A chart's schema may
/// refer within itself and to the JSON Schema metaschemas (built into boon), never to a file or a
/// URL (Helm would fetch them; a promotion step must not read the machine's files or the network
/// behind its grants).
struct NothingOutside;

impl boon::UrlLoader for NothingOutside {
    fn load(&self, url: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        Err(format!(
            "{url} is outside the chart: only references within values.schema.json are followed"
        )
        .into())
    }
}

/// The innermost problems of a validation error, `- path.to.value: what` each (Helm's form).
fn leaf_problems(e: &boon::ValidationError<'_, '_>, found: &mut Vec<String>) {
    if !e.causes.is_empty() {
        for cause in &e.causes {
            leaf_problems(cause, found);
        }
        return;
    }
    let at = e.instance_location.to_string();
    let at = if at.is_empty() {
        "(root)".to_string()
    } else {
        at.trim_start_matches('/').replace('/', ".")
    };
    found.push(format!("- {at}: {}\n", shortened(&e.kind.to_string())));
}

/// A problem as long as the value it quotes, cut in the middle: a 100 kB value must not push
/// the other problems out of a bounded step message.
fn shortened(text: &str) -> String {
    const KEEP: usize = 120;
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= 2 * KEEP {
        return text.to_string();
    }
    let head: String = chars[..KEEP].iter().collect();
    let tail: String = chars[chars.len() - KEEP..].iter().collect();
    format!(
        "{head}… ({} characters left out) …{tail}",
        chars.len() - 2 * KEEP
    )
}

/// Removes sub-charts whose dependency `condition` (or `tags`) turns them off.
fn enabled_subcharts(chart: &Chart, values: &Value, path: &str) -> Chart {
    let mut chart = chart.clone();
    let deps = dependencies(&chart);
    let lookup = |dotted: &str| -> Option<Value> {
        let mut current = values.clone();
        for part in dotted.split('.') {
            current = match &current {
                Value::Map(m) => m.get(part)?,
                _ => return None,
            };
        }
        Some(current)
    };
    let mut kept = Vec::new();
    for mut sub in std::mem::take(&mut chart.subcharts) {
        let name = sub.name();
        let dep = deps
            .iter()
            .find(|d| d.get("name").map(gotmpl::sprig::strval).as_deref() == Some(name.as_str()));
        let mut enabled = true;
        if let Some(dep) = dep {
            if let Some(alias) = dep
                .get("alias")
                .map(gotmpl::sprig::strval)
                .filter(|a| !a.is_empty())
            {
                sub.metadata.insert("name".into(), Value::from(alias));
            }
            let mut decided = false;
            if let Some(condition) = dep.get("condition").map(gotmpl::sprig::strval) {
                for c in condition
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                {
                    if let Some(Value::Bool(b)) = lookup(&format!("{path}{c}")) {
                        enabled = b;
                        decided = true;
                        break;
                    }
                }
            }
            if !decided && let Some(Value::List(tags)) = dep.get("tags") {
                let states: Vec<bool> = tags
                    .iter()
                    .filter_map(
                        |t| match lookup(&format!("tags.{}", gotmpl::sprig::strval(t))) {
                            Some(Value::Bool(b)) => Some(b),
                            _ => None,
                        },
                    )
                    .collect();
                if !states.is_empty() {
                    enabled = states.iter().any(|b| *b);
                }
            }
        }
        if enabled {
            let sub_path = format!("{path}{}.", sub.name());
            kept.push(enabled_subcharts(&sub, values, &sub_path));
        }
    }
    chart.subcharts = kept;
    chart
}

fn chart_object(metadata: &BTreeMap<String, Value>) -> Value {
    let s = |k: &str| {
        metadata
            .get(k)
            .map(gotmpl::sprig::strval)
            .map_or(Value::from(""), Value::from)
    };
    Value::map([
        ("Name".to_string(), s("name")),
        ("Version".to_string(), s("version")),
        ("AppVersion".to_string(), s("appVersion")),
        ("Description".to_string(), s("description")),
        ("Type".to_string(), s("type")),
        ("APIVersion".to_string(), s("apiVersion")),
        ("Home".to_string(), s("home")),
        ("Icon".to_string(), s("icon")),
        ("KubeVersion".to_string(), s("kubeVersion")),
        (
            "Deprecated".to_string(),
            metadata
                .get("deprecated")
                .cloned()
                .unwrap_or(Value::Bool(false)),
        ),
        (
            "Keywords".to_string(),
            metadata.get("keywords").cloned().unwrap_or(Value::Nil),
        ),
        (
            "Sources".to_string(),
            metadata.get("sources").cloned().unwrap_or(Value::Nil),
        ),
        (
            "Annotations".to_string(),
            metadata.get("annotations").cloned().unwrap_or(Value::Nil),
        ),
        (
            "Maintainers".to_string(),
            metadata.get("maintainers").cloned().unwrap_or(Value::Nil),
        ),
    ])
}

/// A template to render: its full name, the data it sees.
struct Job {
    name: String,
    data: Value,
}

/// Renders `chart` as `helm template` does; the documents in Helm's order (hooks last).
pub fn render(chart: &Chart, options: &Options) -> Result<Vec<Document>, Error> {
    let first = coalesce(chart, &options.values);
    let mut chart = enabled_subcharts(chart, &first, "");
    import_values(&mut chart);
    let values = coalesce(&chart, &options.values);
    let mut problems = String::new();
    validate(&chart, &values, &mut problems)?;
    if !problems.is_empty() {
        return Err(err(format!(
            "values don't meet the specifications of the schema(s) in the following chart(s):\n{}",
            problems.trim_end()
        )));
    }
    let mut api_versions: Vec<String> = if options.default_api_versions {
        DEFAULT_API_VERSIONS.iter().map(|s| s.to_string()).collect()
    } else {
        Vec::new()
    };
    api_versions.extend(options.api_versions.iter().cloned());
    let caps = Value::Object(Arc::new(funcs::Capabilities {
        kube_version: options.kube_version.clone(),
        api_versions,
    }));
    let release = Value::map([
        (
            "Name".to_string(),
            Value::from(options.release_name.as_str()),
        ),
        (
            "Namespace".to_string(),
            Value::from(options.namespace.as_str()),
        ),
        ("IsUpgrade".to_string(), Value::Bool(false)),
        ("IsInstall".to_string(), Value::Bool(true)),
        ("Revision".to_string(), Value::Int(1)),
        ("Service".to_string(), Value::from("Helm")),
    ]);
    let mut set = Templates::new();
    set.missing_key(MissingKey::Zero);
    if let Some(steps) = options.max_steps {
        set.max_steps(steps);
    }
    funcs::install(&mut set);
    let mut sources: Vec<(String, String)> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    collect(
        &chart,
        &chart.name(),
        &values,
        &caps,
        &release,
        &mut sources,
        &mut jobs,
    );
    // Deeper paths first, so a parent's `define` replaces a sub-chart's of the same name.
    sources.sort_by(|a, b| {
        b.0.matches('/')
            .count()
            .cmp(&a.0.matches('/').count())
            .then_with(|| a.0.cmp(&b.0))
    });
    for (name, text) in &sources {
        set.parse(name, text)
            .map_err(|e| err(format!("parse error at ({}): {}", location(&e), e.message)))?;
    }
    let mut rendered: BTreeMap<String, String> = BTreeMap::new();
    for job in jobs {
        let out = set
            .execute(&job.name, &job.data)
            .map_err(|e| err(e.message))?;
        rendered.insert(job.name, out.replace("<no value>", ""));
    }
    let mut docs = Vec::new();
    let mut hooks = Vec::new();
    if options.include_crds {
        let mut crds = Vec::new();
        collect_crds(&chart, &mut crds);
        // As `helm template --include-crds`: each file whole, named by its path in its chart.
        for (source, content) in crds {
            docs.push(Document {
                source,
                content: content.trim_end_matches('\n').to_string(),
                kind: "CustomResourceDefinition".into(),
                hook: None,
            });
        }
    }
    let crd_count = docs.len();
    for (source, content) in &rendered {
        if source.ends_with("NOTES.txt") {
            continue;
        }
        for part in split_manifests(content) {
            let head = yaml::load_with(&part, false)
                .map_err(|e| err(format!("YAML parse error on {source}: {e}")))?;
            let head = head.into_iter().next().unwrap_or(Value::Nil);
            let kind = match &head {
                Value::Map(m) => m
                    .get("kind")
                    .map(|k| gotmpl::sprig::strval(&k))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            let hook = match &head {
                Value::Map(m) => match m.get("metadata") {
                    Some(Value::Map(meta)) => match meta.get("annotations") {
                        Some(Value::Map(a)) => {
                            a.get("helm.sh/hook").map(|h| gotmpl::sprig::strval(&h))
                        }
                        _ => None,
                    },
                    _ => None,
                },
                _ => None,
            };
            let doc = Document {
                source: source.clone(),
                content: part,
                kind,
                hook,
            };
            if doc.hook.is_some() {
                hooks.push(doc);
            } else {
                docs.push(doc);
            }
        }
    }
    let rank = |kind: &str| INSTALL_ORDER.iter().position(|k| *k == kind);
    let order = |a: &Document, b: &Document| match (rank(&a.kind), rank(&b.kind)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.kind.cmp(&b.kind),
    };
    docs[crd_count..].sort_by(order);
    hooks.sort_by(order);
    if !options.disable_hooks {
        for hook in hooks {
            let is_test = hook.hook.as_deref().is_some_and(|h| {
                h.split(',')
                    .any(|p| matches!(p.trim(), "test" | "test-success"))
            });
            if options.skip_tests && is_test {
                continue;
            }
            docs.push(hook);
        }
    }
    Ok(docs)
}

fn location(e: &gotmpl::ParseError) -> String {
    format!("{}:{}", e.name, e.line)
}

fn collect(
    chart: &Chart,
    prefix: &str,
    values: &Value,
    caps: &Value,
    release: &Value,
    sources: &mut Vec<(String, String)>,
    jobs: &mut Vec<Job>,
) {
    let files = Value::Object(Arc::new(funcs::Files(Arc::new(chart.files.clone()))));
    let chart_value = chart_object(&chart.metadata);
    for (path, text) in &chart.templates {
        let name = format!("{prefix}/{path}");
        sources.push((name.clone(), text.clone()));
        let base = path.rsplit('/').next().unwrap_or(path);
        if base.starts_with('_') {
            continue;
        }
        let data = Value::map([
            ("Values".to_string(), values.clone()),
            ("Chart".to_string(), chart_value.clone()),
            ("Capabilities".to_string(), caps.clone()),
            ("Release".to_string(), release.clone()),
            ("Files".to_string(), files.clone()),
            (
                "Template".to_string(),
                Value::map([
                    ("Name".to_string(), Value::from(name.as_str())),
                    (
                        "BasePath".to_string(),
                        Value::from(format!("{prefix}/templates")),
                    ),
                ]),
            ),
        ]);
        jobs.push(Job { name, data });
    }
    for sub in &chart.subcharts {
        let sub_values = match values {
            Value::Map(m) => m.get(&sub.name()).unwrap_or_else(|| Value::map([])),
            _ => Value::map([]),
        };
        collect(
            sub,
            &format!("{prefix}/charts/{}", sub.name()),
            &sub_values,
            caps,
            release,
            sources,
            jobs,
        );
    }
}

fn collect_crds(chart: &Chart, out: &mut Vec<(String, String)>) {
    for (path, text) in &chart.crds {
        if [".yaml", ".yml", ".json"].iter().any(|e| path.ends_with(e)) {
            out.push((path.clone(), text.clone()));
        }
    }
    for sub in &chart.subcharts {
        collect_crds(sub, out);
    }
}

/// Helm's `SplitManifests`: the text split at `(?:^|\s*\n)---\s*`, each part trimmed, empty
/// ones gone.
pub fn split_manifests(text: &str) -> Vec<String> {
    static SEP: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let sep = SEP.get_or_init(|| regex::Regex::new(r"(?:^|\s*\n)---\s*").expect("a regex"));
    sep.split(text)
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect()
}

/// What [`print()`] (or `helm template`) printed, read back: each document's source and its
/// content parsed (`json_numbers` as [`yaml::load_with`]); an error names the source.
pub fn read_printed(text: &str, json_numbers: bool) -> Result<Vec<(String, Value)>, String> {
    text.split("---\n# Source: ")
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (source, body) = part.split_once('\n').unwrap_or((part, ""));
            let doc = yaml::load_with(body, json_numbers)
                .map_err(|e| format!("{source}: {e}\n{body}"))?
                .into_iter()
                .next()
                .unwrap_or(Value::Nil);
            Ok((source.to_string(), doc))
        })
        .collect()
}

/// The documents as `helm template` prints them.
pub fn print(docs: &[Document]) -> String {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n# Source: ");
        out.push_str(&d.source);
        out.push('\n');
        out.push_str(&d.content);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart_with_schema(schema: &str) -> Chart {
        let files = BTreeMap::from([
            (
                "Chart.yaml".to_string(),
                b"apiVersion: v2\nname: hostile\nversion: 1.0.0\n".to_vec(),
            ),
            ("values.yaml".to_string(), b"name: x\n".to_vec()),
            ("values.schema.json".to_string(), schema.as_bytes().to_vec()),
        ]);
        Chart::from_files(files, "test").expect("a chart")
    }

    fn render_with(chart: &Chart, values: &str) -> Result<Vec<Document>, Error> {
        let values = yaml::load(values).expect("values").remove(0);
        render(
            chart,
            &Options {
                values,
                ..Options::default()
            },
        )
    }

    /// A schema that refers to a file of the machine or to a URL is refused, and nothing is read.
    #[test]
    fn a_schema_cannot_read_files_or_urls() {
        let secret = tempfile::NamedTempFile::new().expect("a file");
        std::fs::write(secret.path(), r#"{"type": "string"}"#).expect("write");
        for target in [
            format!("file://{}", secret.path().display()),
            "http://127.0.0.1:9/schema.json".to_string(),
        ] {
            let schema = format!(r#"{{"properties": {{"name": {{"$ref": "{target}"}}}}}}"#);
            let e = render_with(&chart_with_schema(&schema), "{}").expect_err("refused");
            assert!(
                e.0.contains("not a valid JSON Schema") && e.0.contains("outside the chart"),
                "{e}"
            );
        }
        // References within the schema and to the metaschema work.
        let inside = r##"{"$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"n": {"type": "integer"}},
            "properties": {"name": {"$ref": "#/definitions/n"}}}"##;
        let e = render_with(&chart_with_schema(inside), "{}").expect_err("name is a string");
        assert!(e.0.contains("- name: "), "{e}");
    }

    /// A pattern that makes a backtracking engine take exponential time is matched in linear
    /// time (boon uses the `regex` crate), so a chart cannot stall the step on it.
    #[test]
    fn a_catastrophic_pattern_does_not_stall_validation() {
        let chart = chart_with_schema(r#"{"properties": {"name": {"pattern": "^(a+)+$"}}}"#);
        let long = format!("name: {}!\n", "a".repeat(50_000));
        let e = render_with(&chart, &long).expect_err("does not match");
        assert!(e.0.contains("does not match pattern"), "{e}");
        assert!(e.0.contains("(49796 characters left out)"), "{e}");
    }

    /// A schema nested beyond what the JSON reader takes (128 levels) is refused as such; one
    /// just inside it is compiled and applied.
    #[test]
    fn a_deeply_nested_schema_is_refused_not_a_crash() {
        let nested = |depth: usize| {
            format!(
                "{{\"properties\": {{\"name\": {}{{\"type\": \"integer\"}}{}}}}}",
                "{\"not\": {\"not\": ".repeat(depth),
                "}}".repeat(depth)
            )
        };
        let e = render_with(&chart_with_schema(&nested(5_000)), "{}").expect_err("refused");
        assert!(e.0.contains("values.schema.json is not JSON"), "{e}");
        // 120 `not`s: 124 levels of JSON.
        let chart = chart_with_schema(&nested(60));
        if let Err(e) = render_with(&chart, "name: 3") {
            panic!("{e}");
        }
        let e = render_with(&chart, "name: x").expect_err("not an integer");
        assert!(e.0.contains("- name: "), "{e}");
    }
}
