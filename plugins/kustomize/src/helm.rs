//! `helmCharts`, as `kustomize build --enable-helm` inflates them, with Dray's own chart renderer
//! (the `chart` crate, what `helm-template` uses) instead of a `helm` binary: each chart is
//! rendered as `helm template` would render it with the entry's release name, namespace and
//! values, and its documents join the kustomization's resources, which the kustomization's
//! transformers then change like any other.
//!
//! A chart is read from `helmGlobals.chartHome` (default `charts/` beside the kustomization):
//! `NAME-VERSION/NAME` when the entry names a version and that directory exists, else `NAME`.
//! One that is not there is pulled from the entry's `repo` (classic or `oci://`) through the
//! host's `helm` interface, as kustomize pulls it, into `NAME-VERSION/NAME.tgz`.

use std::path::Path;

use chart::{Chart, Options};
use dray_sdk::StepError;
use gotmpl::Value as GoValue;
use gotmpl::value::Map as GoMap;
use serde_json::{Map, Value};

use crate::build::{Resource, fail, join};

/// The chart an entry names, loaded.
fn chart(
    entry: &Map<String, Value>,
    dir: &Path,
    k: &Map<String, Value>,
    file: &Path,
) -> Result<Chart, StepError> {
    let name = entry
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && !n.contains(['/', '\\']) && *n != "..")
        .ok_or_else(|| {
            fail(format!(
                "{}: a helmCharts entry needs a chart name",
                file.display()
            ))
        })?;
    let home = k
        .get("helmGlobals")
        .and_then(|g| g.get("chartHome"))
        .and_then(Value::as_str)
        .unwrap_or("charts");
    let mut home = join(dir, home);
    let version = entry
        .get("version")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty());
    let repo = entry
        .get("repo")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    // As kustomize: a chart with a version and a repo lives in a directory of its own.
    if let (Some(version), Some(_)) = (version, repo) {
        home = home.join(format!("{name}-{version}"));
    }
    let local = home.join(name);
    let target = home.join(format!("{name}.tgz"));
    for path in [&local, &target] {
        if path.exists() {
            return Chart::load(path)
                .map_err(|e| fail(format!("{}: helm chart {name}: {e}", file.display())));
        }
    }
    let Some(repo) = repo else {
        return Err(fail(format!(
            "{}: no repo specified for pull, no chart found at '{}'",
            file.display(),
            local.display()
        )));
    };
    let Some(version) = version else {
        return Err(fail(format!(
            "{}: helm chart {name} from {repo}: name the chart's version (Dray pulls exact versions only)",
            file.display()
        )));
    };
    dray_sdk::helm::pull(repo, name, version, &target.display().to_string()).map_err(|e| {
        fail(format!(
            "{}: cannot pull helm chart {name} {version} from {repo}: {e}",
            file.display()
        ))
    })?;
    Chart::load(&target).map_err(|e| fail(format!("{}: helm chart {name}: {e}", file.display())))
}

/// A values file (YAML) as a map; empty when the file holds nothing.
fn values_file(path: &Path, file: &Path) -> Result<GoMap, StepError> {
    let text = crate::build::read(path)?;
    match chart::yaml::load(&text)
        .map_err(|e| fail(format!("{}: {}: {e}", file.display(), path.display())))?
        .into_iter()
        .next()
    {
        Some(GoValue::Map(m)) => Ok(m),
        None | Some(GoValue::Nil) => Ok(GoMap::default()),
        Some(_) => Err(fail(format!(
            "{}: {} is not a mapping of values",
            file.display(),
            path.display()
        ))),
    }
}

/// The values an entry gives on top of the chart's: `valuesFile` and `valuesInline` combined as
/// `valuesMerge` says (`override`, the default: inline values win; `merge`: the file's win;
/// `replace`: inline values alone), then each of `additionalValuesFiles` on top.
fn values(entry: &Map<String, Value>, dir: &Path, file: &Path) -> Result<GoValue, StepError> {
    let main = match entry
        .get("valuesFile")
        .and_then(Value::as_str)
        .filter(|f| !f.is_empty())
    {
        Some(f) => values_file(&join(dir, f), file)?,
        None => GoMap::default(),
    };
    let inline = match entry.get("valuesInline") {
        Some(v @ Value::Object(_)) => match chart::funcs::from_json(v) {
            GoValue::Map(m) => m,
            _ => GoMap::default(),
        },
        _ => GoMap::default(),
    };
    let mode = entry
        .get("valuesMerge")
        .and_then(Value::as_str)
        .unwrap_or("override");
    let result = match mode {
        "override" | "" => {
            chart::merge_values(&main, &inline);
            main
        }
        "replace" if !inline.is_empty() => inline,
        "replace" => main,
        "merge" => {
            chart::merge_values(&inline, &main);
            inline
        }
        other => {
            return Err(fail(format!(
                "{}: valuesMerge {other:?} must be override, merge or replace",
                file.display()
            )));
        }
    };
    // Then each additional values file, in order, as further `--values` flags.
    for f in entry
        .get("additionalValuesFiles")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        chart::merge_values(&result, &values_file(&join(dir, f), file)?);
    }
    Ok(GoValue::Map(result))
}

/// Renders the kustomization's `helmCharts` into `resources`.
pub fn inflate(
    k: &Map<String, Value>,
    dir: &Path,
    file: &Path,
    resources: &mut Vec<Resource>,
) -> Result<(), StepError> {
    let Some(entries) = k.get("helmCharts") else {
        return Ok(());
    };
    let Value::Array(entries) = entries else {
        return Err(fail(format!(
            "{}: helmCharts must be a list",
            file.display()
        )));
    };
    for entry in entries {
        let Value::Object(entry) = entry else {
            return Err(fail(format!(
                "{}: helmCharts entries are mappings",
                file.display()
            )));
        };
        let chart = chart(entry, dir, k, file)?;
        let s = |key: &str| {
            entry
                .get(key)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        };
        let flag = |key: &str| entry.get(key).and_then(Value::as_bool).unwrap_or(false);
        let defaults = Options::default();
        let options = Options {
            release_name: s("releaseName").unwrap_or("release-name").to_string(),
            namespace: s("namespace").unwrap_or("default").to_string(),
            values: values(entry, dir, file)?,
            kube_version: s("kubeVersion")
                .map(|v| {
                    if v.starts_with('v') {
                        v.to_string()
                    } else {
                        format!("v{v}")
                    }
                })
                .unwrap_or(defaults.kube_version),
            api_versions: entry
                .get("apiVersions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            default_api_versions: true,
            include_crds: flag("includeCRDs"),
            disable_hooks: flag("skipHooks"),
            skip_tests: flag("skipTests"),
            max_steps: None,
        };
        let docs = chart::render(&chart, &options).map_err(|e| {
            fail(format!(
                "{}: helm chart {}: {e}",
                file.display(),
                s("name").unwrap_or("?")
            ))
        })?;
        for (i, doc) in docs.iter().enumerate() {
            for value in dray_sdk::yaml::v3::load(&doc.content)
                .map_err(|e| fail(format!("{}: {}: {e}", file.display(), doc.source)))?
            {
                if value.is_null() {
                    continue;
                }
                resources.push(crate::build::resource(value, Path::new(&doc.source), i)?);
            }
        }
    }
    Ok(())
}
