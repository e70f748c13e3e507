//! Data-file steps, as Kargo's: `yaml-update`, `json-update` and `toml-update` change values at
//! key paths in place (comments and layout stay); `yaml-parse`, `json-parse` and `toml-parse`
//! read values out with expressions; `yaml-merge` merges YAML files into one.

mod json;
mod toml;

use std::fs;

use dray_sdk::{Step, StepContext, StepError, StepKind, StepResult};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The plugin's step kinds (or verifiers): exported by `plugins/steps` with the other built-ins.
pub struct Data;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    key: String,
    value: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateConfig {
    path: String,
    updates: Vec<Update>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Output {
    name: String,
    from_expression: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParseConfig {
    path: String,
    outputs: Vec<Output>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MergeConfig {
    in_files: Vec<String>,
    out_file: String,
    #[serde(default)]
    ignore_missing_files: bool,
}

#[derive(Clone, Copy)]
enum Format {
    Yaml,
    Json,
    Toml,
}

fn read(path: &str) -> Result<String, StepError> {
    fs::read_to_string(path).map_err(|e| StepError::Terminal(format!("cannot read {path}: {e}")))
}

fn update(format: Format, config: UpdateConfig) -> Result<StepResult, StepError> {
    let text = read(&config.path)?;
    let updates = config
        .updates
        .iter()
        .enumerate()
        .map(|(i, u)| {
            dray_sdk::path::split(&u.key)
                .map(|p| (p, u.value.clone()))
                .map_err(|e| StepError::InvalidConfig(format!("updates[{i}].key: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let changed = match format {
        Format::Yaml => dray_sdk::yaml::edit::update(&text, &updates),
        Format::Json => json::update(&text, &updates),
        Format::Toml => toml::update(&text, &updates),
    }
    .map_err(|e| StepError::Terminal(format!("{}: {e}", config.path)))?;
    fs::write(&config.path, &changed)
        .map_err(|e| StepError::Retryable(format!("cannot write {}: {e}", config.path)))?;
    let mut message = format!("Updated {}\n", config.path);
    for u in &config.updates {
        let shown = match &u.value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        message.push_str(&format!("\n- {}: {shown}", u.key));
        dray_sdk::info!("set {} = {shown} in {}", u.key, config.path);
    }
    Ok(dray_sdk::succeeded(json!({ "commitMessage": message })))
}

fn parse(format: Format, config: ParseConfig) -> Result<StepResult, StepError> {
    let text = read(&config.path)?;
    let data = match format {
        Format::Yaml => dray_sdk::yaml::edit::to_json(&text),
        Format::Json => serde_json::from_str(&text).map_err(|e| format!("not valid JSON: {e}")),
        Format::Toml => toml::to_json(&text),
    }
    .map_err(|e| StepError::Terminal(format!("{}: {e}", config.path)))?;
    let variables = match data {
        Value::Object(map) => map,
        other => Map::from_iter([("value".to_string(), other)]),
    };
    let mut outputs = Map::new();
    for (i, output) in config.outputs.iter().enumerate() {
        let value = dray_sdk::expr::eval(&output.from_expression, &variables).map_err(|e| {
            StepError::Terminal(format!(
                "outputs[{i}] ({}): {}: {e}",
                output.name, output.from_expression
            ))
        })?;
        outputs.insert(output.name.clone(), value);
    }
    Ok(dray_sdk::succeeded(Value::Object(outputs)))
}

/// Merges `over` into `base`: mappings merge key by key, anything else is replaced (as Kargo's
/// yaml-merge, which follows kustomize's merge of values files).
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                match base.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

fn yaml_merge(config: MergeConfig) -> Result<StepResult, StepError> {
    let mut merged = Value::Object(Map::new());
    let mut used = Vec::new();
    for file in &config.in_files {
        let text = match fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && config.ignore_missing_files => {
                dray_sdk::info!("{file} does not exist; skipped (ignoreMissingFiles)");
                continue;
            }
            Err(e) => return Err(StepError::Terminal(format!("cannot read {file}: {e}"))),
        };
        let doc = dray_sdk::yaml::edit::to_json(&text)
            .map_err(|e| StepError::Terminal(format!("{file}: {e}")))?;
        if !doc.is_null() {
            merge(&mut merged, doc);
        }
        used.push(file.as_str());
    }
    let mut out = String::new();
    yaml_rust2::YamlEmitter::new(&mut out)
        .dump(&dray_sdk::yaml::edit::yaml(&merged))
        .map_err(|e| StepError::Terminal(format!("cannot write {}: {e}", config.out_file)))?;
    let out = out.strip_prefix("---\n").unwrap_or(&out).to_string() + "\n";
    if let Some(parent) = std::path::Path::new(&config.out_file)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        fs::create_dir_all(parent)
            .map_err(|e| StepError::Terminal(format!("cannot create {}: {e}", parent.display())))?;
    }
    fs::write(&config.out_file, out)
        .map_err(|e| StepError::Retryable(format!("cannot write {}: {e}", config.out_file)))?;
    dray_sdk::info!("merged {} file(s) into {}", used.len(), config.out_file);
    let message = format!("Updated {} from {}", config.out_file, used.join(", "));
    Ok(dray_sdk::succeeded(json!({ "commitMessage": message })))
}

fn update_schema(format: &str) -> Value {
    json!({
        "type": "object", "additionalProperties": false, "required": ["path", "updates"],
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": format!("The {format} file")},
            "updates": {
                "type": "array", "minItems": 1, "description": "Values to set, in order",
                "items": {
                    "type": "object", "additionalProperties": false, "required": ["key", "value"],
                    "properties": {
                        "key": {"type": "string", "minLength": 1, "description": "A dot path (`image.tag`, `containers.0.image`; `\\.` for a dot in a key). A missing last key is added"},
                        "value": {"description": "The new value (any JSON value)"}
                    }
                }
            }
        }
    })
}

fn parse_schema(format: &str) -> Value {
    json!({
        "type": "object", "additionalProperties": false, "required": ["path", "outputs"],
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": format!("The {format} file")},
            "outputs": {
                "type": "array", "minItems": 1, "description": "Outputs to compute from the file",
                "items": {
                    "type": "object", "additionalProperties": false, "required": ["name", "fromExpression"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "description": "The output's name"},
                        "fromExpression": {"type": "string", "minLength": 1, "description": "An expression over the file's top-level keys, e.g. `spec.replicas`"}
                    }
                }
            }
        }
    })
}

impl Step for Data {
    fn describe() -> Vec<StepKind> {
        let mut kinds = Vec::new();
        for (name, format) in [("yaml", "YAML"), ("json", "JSON"), ("toml", "TOML")] {
            kinds.push(dray_sdk::kind(
                &format!("{name}-update"),
                &format!("Sets values in a {format} file in place, keeping its comments and layout; outputs `commitMessage`"),
                update_schema(format),
                &[],
            ));
            kinds.push(dray_sdk::kind(
                &format!("{name}-parse"),
                &format!("Reads values out of a {format} file into outputs, with expressions"),
                parse_schema(format),
                &[],
            ));
        }
        kinds.push(dray_sdk::kind(
            "yaml-merge",
            "Merges YAML files into one (later files win; mappings merge, other values are replaced); outputs `commitMessage`",
            json!({
                "type": "object", "additionalProperties": false, "required": ["inFiles", "outFile"],
                "properties": {
                    "inFiles": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}, "description": "The files to merge, in order"},
                    "outFile": {"type": "string", "minLength": 1, "description": "The merged file to write"},
                    "ignoreMissingFiles": {"type": "boolean", "default": false, "description": "Skip input files that do not exist"}
                }
            }),
            &[],
        ));
        kinds
    }

    fn run(kind: String, _context: StepContext, config: String) -> Result<StepResult, StepError> {
        let format = match kind.split('-').next() {
            Some("yaml") => Format::Yaml,
            Some("json") => Format::Json,
            Some("toml") => Format::Toml,
            _ => {
                return Err(StepError::InvalidConfig(format!(
                    "the data plugin has no step {kind:?}"
                )));
            }
        };
        match kind.split_once('-').map(|(_, action)| action) {
            Some("update") => update(format, dray_sdk::config(&config)?),
            Some("parse") => parse(format, dray_sdk::config(&config)?),
            Some("merge") if matches!(format, Format::Yaml) => {
                yaml_merge(dray_sdk::config(&config)?)
            }
            _ => Err(StepError::InvalidConfig(format!(
                "the data plugin has no step {kind:?}"
            ))),
        }
    }
}
