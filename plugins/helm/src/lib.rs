//! Kargo's Helm steps, in the sandbox, with no `helm` binary:
//!
//! - `helm-template` renders a chart in the work directory with the Stage's values (the `chart`
//!   crate renders as `helm template` does) and writes the documents to one file, to Helm's
//!   directory layout, or one file per resource; `buildDependencies` first fetches what the
//!   chart's `Chart.lock` locks, as `helm dependency build`;
//! - `helm-update-chart` sets dependency versions in `Chart.yaml` (typically from the Freight,
//!   with `chartFrom()`) and fetches the dependencies into `charts/`, as `helm dependency
//!   update`, writing `Chart.lock`.
//!
//! Charts are fetched through the host's `helm` interface ([`deps`]), so repository
//! credentials never enter the sandbox.

mod deps;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chart::{Chart, Document, Options};
use dray_sdk::{Step, StepContext, StepError, StepKind, StepResult};
use gotmpl::Value;
use gotmpl::value::Map;
use serde::Deserialize;
use serde_json::json;

/// The plugin's step kinds (or verifiers): exported by `plugins/steps` with the other built-ins.
pub struct Helm;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetValue {
    key: String,
    value: String,
    #[serde(default)]
    literal: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChartUpdate {
    repository: String,
    name: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateConfig {
    path: String,
    #[serde(default)]
    charts: Vec<ChartUpdate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    path: String,
    out_path: String,
    #[serde(default)]
    release_name: Option<String>,
    #[serde(default)]
    use_release_name: bool,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    out_layout: Option<String>,
    #[serde(default)]
    values_files: Vec<String>,
    #[serde(default)]
    ignore_missing_value_files: bool,
    #[serde(default)]
    set_values: Vec<SetValue>,
    #[serde(default)]
    build_dependencies: bool,
    #[serde(default)]
    include_crds: bool,
    #[serde(default)]
    disable_hooks: bool,
    #[serde(default)]
    skip_tests: bool,
    #[serde(default)]
    kube_version: Option<String>,
    #[serde(default)]
    api_versions: Vec<String>,
}

impl Step for Helm {
    fn describe() -> Vec<StepKind> {
        vec![
            dray_sdk::kind(
                "helm-template",
                "Renders a Helm chart from the work directory as `helm template` does, with values files and --set values, into a file or a directory",
                json!({
                    "type": "object", "additionalProperties": false, "required": ["path", "outPath"],
                    "properties": {
                        "path": {"type": "string", "minLength": 1, "description": "The chart's directory in the work directory"},
                        "outPath": {"type": "string", "minLength": 1, "description": "A .yaml/.yml file for all documents, else a directory"},
                        "releaseName": {"type": "string", "description": "The release's name (default release-name)"},
                        "useReleaseName": {"type": "boolean", "description": "With the helm layout, write under outPath/RELEASE"},
                        "namespace": {"type": "string", "description": "The release's namespace (default: the project's name)"},
                        "outLayout": {"type": "string", "enum": ["helm", "flat"], "description": "helm: the chart's paths; flat: one file per resource"},
                        "valuesFiles": {"type": "array", "items": {"type": "string"}, "description": "Values files in the work directory, merged in order"},
                        "ignoreMissingValueFiles": {"type": "boolean", "description": "Skip values files that do not exist"},
                        "setValues": {
                            "type": "array",
                            "items": {
                                "type": "object", "additionalProperties": false, "required": ["key", "value"],
                                "properties": {
                                    "key": {"type": "string", "minLength": 1},
                                    "value": {"type": "string"},
                                    "literal": {"type": "boolean", "description": "The value as it is (--set-literal), not --set's syntax"}
                                }
                            }
                        },
                        "buildDependencies": {"type": "boolean", "description": "Fetch what the chart's Chart.lock locks into charts/ first (helm dependency build)"},
                        "includeCRDs": {"type": "boolean", "description": "Include the CRDs of crds/"},
                        "disableHooks": {"type": "boolean", "description": "Leave hooks out"},
                        "skipTests": {"type": "boolean", "description": "Leave test hooks out"},
                        "kubeVersion": {"type": "string", "description": "The Kubernetes version .Capabilities reports (default v1.20.0)"},
                        "apiVersions": {"type": "array", "items": {"type": "string"}, "description": "API versions .Capabilities.APIVersions.Has knows besides Kubernetes' own"}
                    }
                }),
                &[],
            ),
            dray_sdk::kind(
                "helm-update-chart",
                "Sets the versions of a chart's dependencies in Chart.yaml and fetches them into charts/, writing Chart.lock (helm dependency update)",
                json!({
                    "type": "object", "additionalProperties": false, "required": ["path"],
                    "properties": {
                        "path": {"type": "string", "minLength": 1, "description": "The (umbrella) chart's directory in the work directory"},
                        "charts": {
                            "type": "array",
                            "description": "Dependencies to set, each matched by repository and name",
                            "items": {
                                "type": "object", "additionalProperties": false, "required": ["repository", "name", "version"],
                                "properties": {
                                    "repository": {"type": "string", "minLength": 1, "description": "The dependency's repository as Chart.yaml writes it (https://… or oci://…)"},
                                    "name": {"type": "string", "minLength": 1},
                                    "version": {"type": "string", "minLength": 1, "description": "The version (or constraint) to set"}
                                }
                            }
                        }
                    }
                }),
                &[],
            ),
        ]
    }

    fn run(kind: String, context: StepContext, config: String) -> Result<StepResult, StepError> {
        match kind.as_str() {
            "helm-template" => template(&context, &dray_sdk::config(&config)?),
            "helm-update-chart" => update_chart(&dray_sdk::config(&config)?),
            _ => Err(StepError::InvalidConfig(format!(
                "helm offers helm-template and helm-update-chart, not {kind:?}"
            ))),
        }
    }
}

/// `helm-update-chart`, as Kargo's: the versions set, the dependencies fetched, and a commit
/// message when the lock changed.
fn update_chart(config: &UpdateConfig) -> Result<StepResult, StepError> {
    let dir = inside(&config.path);
    let chart_yaml = dir.join("Chart.yaml");
    let text = std::fs::read_to_string(&chart_yaml)
        .map_err(|e| dray_sdk::terminal(format!("cannot read {}/Chart.yaml: {e}", config.path)))?;
    let doc = dray_sdk::yaml::edit::to_json(&text)
        .map_err(|e| dray_sdk::terminal(format!("{}/Chart.yaml: {e}", config.path)))?;
    let present = doc["dependencies"].as_array().cloned().unwrap_or_default();
    let mut edits = Vec::new();
    for update in &config.charts {
        let found = present.iter().position(|d| {
            d["name"].as_str() == Some(update.name.as_str())
                && d["repository"].as_str() == Some(update.repository.as_str())
        });
        let Some(i) = found else {
            return Err(dray_sdk::terminal(format!(
                "no dependency in {}/Chart.yaml matches update with repository {:?} and name {:?}",
                config.path, update.repository, update.name
            )));
        };
        if present[i]["version"].as_str() != Some(update.version.as_str()) {
            use dray_sdk::path::Segment;
            edits.push((
                vec![
                    Segment::Key("dependencies".into()),
                    Segment::Index(i),
                    Segment::Key("version".into()),
                ],
                serde_json::Value::String(update.version.clone()),
            ));
        }
    }
    if !edits.is_empty() {
        let edited = dray_sdk::yaml::edit::update(&text, &edits)
            .map_err(|e| dray_sdk::terminal(format!("{}/Chart.yaml: {e}", config.path)))?;
        std::fs::write(&chart_yaml, edited).map_err(|e| {
            dray_sdk::retryable(format!("cannot write {}/Chart.yaml: {e}", config.path))
        })?;
    }
    let changes = deps::update(&dir)
        .map_err(|e| dray_sdk::terminal(format!("the dependencies of {}: {e}", config.path)))?;
    if changes.is_empty() {
        dray_sdk::info!("the dependencies of {} are up to date", config.path);
        return Ok(dray_sdk::succeeded(json!({})));
    }
    let mut message = format!("Updated chart dependencies for {}\n", config.path);
    for (name, change) in &changes {
        let change = if change.is_empty() { "removed" } else { change };
        message.push_str(&format!("\n- {name}: {change}"));
        dray_sdk::info!("{name}: {change}");
    }
    Ok(dray_sdk::succeeded(json!({"commitMessage": message})))
}

fn inside(path: &str) -> PathBuf {
    Path::new("/").join(path.trim_start_matches('/'))
}

fn template(context: &StepContext, config: &Config) -> Result<StepResult, StepError> {
    if config.build_dependencies {
        deps::build(&inside(&config.path))
            .map_err(|e| dray_sdk::terminal(format!("the dependencies of {}: {e}", config.path)))?;
    }
    let chart = Chart::load(&inside(&config.path)).map_err(|e| {
        dray_sdk::terminal(format!("cannot load the chart at {}: {e}", config.path))
    })?;
    let values = Map::new(BTreeMap::new());
    for file in &config.values_files {
        let text = match std::fs::read_to_string(inside(file)) {
            Ok(t) => t,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && config.ignore_missing_value_files =>
            {
                dray_sdk::info!("values file {file} does not exist; skipped");
                continue;
            }
            Err(e) => {
                return Err(dray_sdk::terminal(format!(
                    "cannot read values file {file}: {e}"
                )));
            }
        };
        let docs = chart::yaml::load(&text)
            .map_err(|e| dray_sdk::terminal(format!("values file {file}: {e}")))?;
        match docs.into_iter().next() {
            Some(Value::Map(m)) => chart::merge_values(&values, &m),
            None | Some(Value::Nil) => {}
            Some(_) => {
                return Err(dray_sdk::terminal(format!(
                    "values file {file} is not a mapping"
                )));
            }
        }
    }
    for set in &config.set_values {
        let result = if set.literal {
            chart::strvals::set_literal(&values, &format!("{}={}", set.key, set.value))
        } else {
            chart::strvals::set(
                &values,
                &format!("{}={}", set.key, set.value),
                chart::strvals::Typing::Typed,
            )
        };
        result.map_err(|e| dray_sdk::terminal(format!("setValues {}: {e}", set.key)))?;
    }
    let release_name = config
        .release_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "release-name".into());
    let options = Options {
        release_name: release_name.clone(),
        namespace: config
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| context.project.clone()),
        values: Value::Map(values),
        kube_version: config
            .kube_version
            .clone()
            .filter(|v| !v.is_empty())
            .map(|v| {
                if v.starts_with('v') {
                    v
                } else {
                    format!("v{v}")
                }
            })
            .unwrap_or_else(|| Options::default().kube_version),
        api_versions: config.api_versions.clone(),
        default_api_versions: true,
        include_crds: config.include_crds,
        disable_hooks: config.disable_hooks,
        skip_tests: config.skip_tests,
        max_steps: None,
    };
    let docs = chart::render(&chart, &options).map_err(|e| dray_sdk::terminal(e.0))?;
    let written = write(config, &release_name, &docs)?;
    dray_sdk::info!(
        "rendered {} ({} documents) into {}",
        config.path,
        docs.len(),
        config.out_path
    );
    Ok(dray_sdk::succeeded(
        json!({"documents": docs.len(), "files": written}),
    ))
}

/// Writes the documents as Kargo's `helm-template` does; the number of files written.
fn write(config: &Config, release_name: &str, docs: &[Document]) -> Result<usize, StepError> {
    let io = |path: &Path, e: std::io::Error| {
        dray_sdk::retryable(format!("cannot write {}: {e}", path.display()))
    };
    let out = inside(&config.out_path);
    let as_file = out.extension().is_some_and(|e| e == "yaml" || e == "yml");
    let (manifests, hooks): (Vec<&Document>, Vec<&Document>) =
        docs.iter().partition(|d| d.hook.is_none());
    let section = |d: &Document| format!("---\n# Source: {}\n{}\n", d.source, d.content);
    if as_file {
        let manifest: String = manifests.iter().map(|d| section(d)).collect();
        let mut text = format!("{}\n", manifest.trim());
        for hook in &hooks {
            text.push_str(&section(hook));
        }
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        std::fs::write(&out, text).map_err(|e| io(&out, e))?;
        return Ok(1);
    }
    if config.out_layout.as_deref() == Some("flat") {
        std::fs::create_dir_all(&out).map_err(|e| io(&out, e))?;
        for (i, doc) in docs.iter().enumerate() {
            let name = flat_name(&doc.content).unwrap_or_else(|| format!("resource-{i}.yaml"));
            let path = out.join(name);
            std::fs::write(&path, &doc.content).map_err(|e| io(&path, e))?;
        }
        return Ok(docs.len());
    }
    let base = if config.use_release_name {
        out.join(release_name)
    } else {
        out
    };
    let mut files: BTreeMap<PathBuf, String> = BTreeMap::new();
    for doc in docs {
        if doc.source.split('/').any(|p| p == "..") {
            return Err(dray_sdk::terminal(format!(
                "{} leaves the output directory",
                doc.source
            )));
        }
        files
            .entry(base.join(&doc.source))
            .or_default()
            .push_str(&section(doc));
    }
    for (path, text) in &files {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        std::fs::write(path, text).map_err(|e| io(path, e))?;
    }
    Ok(files.len())
}

/// `[group-]kind[-namespace]-name.yaml`, lower-case, as Kargo names flat files.
fn flat_name(content: &str) -> Option<String> {
    let doc = chart::yaml::load_with(content, false)
        .ok()?
        .into_iter()
        .next()?;
    let Value::Map(m) = doc else { return None };
    let text = |v: Option<Value>| {
        v.map(|v| gotmpl::sprig::strval(&v))
            .filter(|s| !s.is_empty())
    };
    let kind = text(m.get("kind"))?;
    let metadata = match m.get("metadata") {
        Some(Value::Map(meta)) => meta,
        _ => return None,
    };
    let name = text(metadata.get("name"))?;
    let mut file = kind;
    if let Some(api) = text(m.get("apiVersion"))
        && let Some((group, _)) = api.rsplit_once('/')
    {
        file = format!("{}-{file}", group.replace('.', "_"));
    }
    if let Some(ns) = text(metadata.get("namespace")) {
        file = format!("{file}-{ns}");
    }
    Some(format!("{}.yaml", format!("{file}-{name}").to_lowercase()))
}
