//! Kustomize steps. `kustomize-set-image` sets images in a `kustomization.yaml` as `kustomize
//! edit set image` does (an `images` entry per image name: `newName`, `newTag` or `digest`;
//! entries sorted by name), from the Freight being promoted; like `kustomize edit`, it rewrites
//! the file, so comments in it are not kept. `kustomize-build` renders a kustomization as
//! `kustomize build` does (see `build.rs` for what it covers).

mod build;
mod config;
mod custom;
mod emit;
mod generate;
mod helm;
mod patch;
mod references;
mod replace;
mod transform;
mod vars;

use dray_sdk::{Step, StepContext, StepError, StepKind, StepResult};
use serde::Deserialize;
use serde_json::json;
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

/// The plugin's step kinds (or verifiers): exported by `plugins/steps` with the other built-ins.
pub struct Kustomize;

/// Renders the kustomization in `dir` as `kustomize-build` does, into its documents (the
/// library's entry for the fuzz target and for tests; the step writes them out).
pub fn render(dir: &std::path::Path) -> Result<Vec<serde_json::Value>, String> {
    build::build(dir)
        .map(|resources| resources.into_iter().map(|r| r.doc).collect())
        .map_err(|e| match e {
            StepError::InvalidConfig(m) | StepError::Retryable(m) | StepError::Terminal(m) => m,
        })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageConfig {
    image: String,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    new_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetImageConfig {
    path: String,
    #[serde(default)]
    images: Option<Vec<ImageConfig>>,
}

/// What one entry of `images:` becomes.
struct Setting {
    name: String,
    new_name: Option<String>,
    tag: Option<String>,
    digest: Option<String>,
}

fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "required": ["path"],
        "additionalProperties": false,
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "The directory holding kustomization.yaml"},
            "images": {
                "type": "array",
                "description": "Images to set; without it, every image of the Freight collection",
                "items": {
                    "type": "object",
                    "required": ["image"],
                    "additionalProperties": false,
                    "properties": {
                        "image": {"type": "string", "minLength": 1, "description": "The image repository the Warehouse subscribes to"},
                        "tag": {"type": "string", "description": "Set this tag (the Freight's version otherwise)"},
                        "digest": {"type": "string", "description": "Set this digest instead of a tag"},
                        "name": {"type": "string", "description": "The image's name in the kustomization (the repository otherwise)"},
                        "newName": {"type": "string", "description": "Rename the image"}
                    },
                    "not": {"required": ["tag", "digest"], "properties": {"tag": {"minLength": 1}, "digest": {"minLength": 1}}}
                }
            }
        }
    })
}

fn settings(context: &StepContext, config: &SetImageConfig) -> Result<Vec<Setting>, StepError> {
    let freight_images: Vec<&dray_sdk::Image> = context
        .freight
        .iter()
        .flat_map(|f| f.images.iter())
        .collect();
    let Some(images) = &config.images else {
        if freight_images.is_empty() {
            return Err(StepError::InvalidConfig(
                "the Freight carries no images; list them under `images`".into(),
            ));
        }
        return Ok(freight_images
            .iter()
            .map(|i| Setting {
                name: i.repo_url.clone(),
                new_name: None,
                tag: i.tag.clone().filter(|t| !t.is_empty()),
                digest: i
                    .tag
                    .as_ref()
                    .filter(|t| !t.is_empty())
                    .map_or(i.digest.clone(), |_| None),
            })
            .collect());
    };
    images
        .iter()
        .map(|image| {
            let (mut tag, mut digest) = (
                image.tag.clone().filter(|t| !t.is_empty()),
                image.digest.clone().filter(|d| !d.is_empty()),
            );
            if tag.is_none() && digest.is_none() {
                let found = freight_images.iter().find(|i| i.repo_url == image.image).ok_or_else(|| {
                    StepError::InvalidConfig(format!(
                        "images: the Freight carries no image {:?}; give a tag or digest, or promote Freight that has it",
                        image.image
                    ))
                })?;
                tag = found.tag.clone().filter(|t| !t.is_empty());
                if tag.is_none() {
                    digest = found.digest.clone();
                }
            }
            Ok(Setting {
                name: image.name.clone().unwrap_or_else(|| image.image.clone()),
                new_name: image.new_name.clone(),
                tag,
                digest,
            })
        })
        .collect()
}

fn key(k: &str) -> Yaml {
    Yaml::String(k.to_string())
}

fn set_image(config: SetImageConfig, context: &StepContext) -> Result<StepResult, StepError> {
    let dir = config.path.trim_end_matches('/');
    let file = ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .map(|name| format!("{dir}/{name}"))
        .find(|p| std::fs::metadata(p).is_ok())
        .ok_or_else(|| StepError::Terminal(format!("{dir} has no kustomization.yaml")))?;
    let text = std::fs::read_to_string(&file)
        .map_err(|e| StepError::Terminal(format!("cannot read {file}: {e}")))?;
    let mut docs = YamlLoader::load_from_str(&text)
        .map_err(|e| StepError::Terminal(format!("{file} is not YAML: {e}")))?;
    let mut root = match docs.pop() {
        Some(Yaml::Hash(h)) => h,
        None => Hash::new(),
        Some(_) => return Err(StepError::Terminal(format!("{file} is not a mapping"))),
    };
    let mut entries: Vec<Hash> = match root.get(&key("images")) {
        Some(Yaml::Array(items)) => items.iter().filter_map(|i| i.as_hash().cloned()).collect(),
        _ => Vec::new(),
    };
    let wanted = settings(context, &config)?;
    let mut lines = Vec::new();
    for setting in &wanted {
        let position = entries.iter().position(|e| {
            e.get(&key("name")).and_then(Yaml::as_str) == Some(setting.name.as_str())
        });
        let entry = match position {
            Some(i) => &mut entries[i],
            None => {
                let mut h = Hash::new();
                h.insert(key("name"), key(&setting.name));
                entries.push(h);
                entries.last_mut().expect("just pushed")
            }
        };
        if let Some(n) = &setting.new_name {
            entry.insert(key("newName"), key(n));
        }
        match (&setting.tag, &setting.digest) {
            (Some(tag), _) => {
                entry.insert(key("newTag"), key(tag));
                entry.remove(&key("digest"));
                lines.push(format!(
                    "- {}:{tag}",
                    setting.new_name.as_ref().unwrap_or(&setting.name)
                ));
            }
            (None, Some(digest)) => {
                entry.insert(key("digest"), key(digest));
                entry.remove(&key("newTag"));
                lines.push(format!(
                    "- {}@{digest}",
                    setting.new_name.as_ref().unwrap_or(&setting.name)
                ));
            }
            (None, None) => {}
        }
    }
    entries.sort_by(|a, b| {
        let name = |h: &Hash| {
            h.get(&key("name"))
                .and_then(Yaml::as_str)
                .unwrap_or("")
                .to_string()
        };
        name(a).cmp(&name(b))
    });
    root.insert(
        key("images"),
        Yaml::Array(entries.into_iter().map(Yaml::Hash).collect()),
    );
    let mut out = String::new();
    YamlEmitter::new(&mut out)
        .dump(&Yaml::Hash(root))
        .map_err(|e| StepError::Terminal(format!("cannot write {file}: {e}")))?;
    let out = out.strip_prefix("---\n").unwrap_or(&out).to_string() + "\n";
    std::fs::write(&file, out)
        .map_err(|e| StepError::Retryable(format!("cannot write {file}: {e}")))?;
    dray_sdk::info!("set {} image(s) in {file}", wanted.len());
    let message = format!(
        "Updated {dir} to use new image{}\n\n{}",
        if lines.len() == 1 { "" } else { "s" },
        lines.join("\n")
    );
    Ok(dray_sdk::succeeded(json!({ "commitMessage": message })))
}

/// Whether `pattern` (anchored) matches `value`.
pub(crate) fn regex_match(pattern: &str, value: &str) -> Result<bool, String> {
    regex::Regex::new(pattern)
        .map(|r| r.is_match(value))
        .map_err(|e| e.to_string())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BuildConfig {
    path: String,
    out_path: String,
    #[serde(default)]
    output_format: Option<String>,
    #[serde(default)]
    plugin: Option<serde_json::Value>,
}

fn kustomize_build(config: BuildConfig) -> Result<StepResult, StepError> {
    if config.plugin.is_some() {
        return Err(StepError::InvalidConfig(
            "plugin.helm: Dray's kustomize-build does not inflate Helm charts; render them with a helm step first".into(),
        ));
    }
    let resources = build::build(std::path::Path::new(&config.path))?;
    let format = config.output_format.as_deref().unwrap_or("kargo");
    let files = build::write(&resources, &config.out_path, format)?;
    dray_sdk::info!(
        "rendered {} resource(s) from {} into {} ({files} file(s))",
        resources.len(),
        config.path,
        config.out_path
    );
    Ok(dray_sdk::succeeded(json!({})))
}

impl Step for Kustomize {
    fn describe() -> Vec<StepKind> {
        vec![
            dray_sdk::kind(
                "kustomize-set-image",
                "Sets image tags or digests in kustomization.yaml, from the Freight by default; outputs `commitMessage`",
                schema(),
                &[],
            ),
            dray_sdk::kind(
                "kustomize-build",
                "Renders a kustomization as `kustomize build` does, to one file (outPath ending in .yaml) or a file per resource",
                json!({
                    "type": "object", "additionalProperties": false, "required": ["path", "outPath"],
                    "properties": {
                        "path": {"type": "string", "minLength": 1, "description": "The directory holding kustomization.yaml"},
                        "outPath": {"type": "string", "minLength": 1, "description": "A .yaml/.yml file for all resources, or a directory for a file per resource"},
                        "outputFormat": {"type": "string", "enum": ["kargo", "kustomize"], "description": "File names in a directory: kargo ([namespace-]kind-name.yaml, the default) or kustomize ([namespace_]group_version_kind_name.yaml)"},
                        "plugin": {"type": "object", "description": "Helm chart inflation settings (not supported: Dray refuses kustomizations with helmCharts)"}
                    }
                }),
                &[],
            ),
        ]
    }

    fn run(kind: String, context: StepContext, config: String) -> Result<StepResult, StepError> {
        match kind.as_str() {
            "kustomize-set-image" => set_image(dray_sdk::config(&config)?, &context),
            "kustomize-build" => kustomize_build(dray_sdk::config(&config)?),
            other => Err(StepError::InvalidConfig(format!(
                "the kustomize plugin has no step {other:?}"
            ))),
        }
    }
}
