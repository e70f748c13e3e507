//! `dray plugin inspect|run`: a plugin author's inner loop, no daemon needed.

use std::time::Duration;

use serde_json::{Value, json};

use super::PluginCommand;
use super::client::{CliError, exit};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::host::credentials::Secrets;
use crate::host::git::GitAccess;
use crate::host::http::AllowList;
use crate::host::metadata::{LogOnly, Metadata};
use crate::runtime::{
    BUILTIN_PLUGINS, Capability, Finished, Grants, Limits, Plugin, Runtime, StepContext,
    capability_name, status_name,
};

fn fail(message: impl Into<String>) -> CliError {
    CliError::new(exit::FAILED, message)
}

/// Reads `builtin:NAME` or a file into (name, bytes).
fn read_plugin(reference: &str) -> Result<(String, Vec<u8>), CliError> {
    if let Some(name) = reference.strip_prefix("builtin:") {
        return BUILTIN_PLUGINS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, b)| (n.to_string(), b.to_vec()))
            .ok_or_else(|| {
                let known: Vec<String> = BUILTIN_PLUGINS
                    .iter()
                    .map(|(n, _)| format!("builtin:{n}"))
                    .collect();
                CliError::new(
                    exit::NOT_FOUND,
                    format!(
                        "no built-in plugin {name:?}: there are {}",
                        known.join(", ")
                    ),
                )
            });
    }
    let path = reference.strip_prefix("file://").unwrap_or(reference);
    let bytes = std::fs::read(path).map_err(|e| {
        CliError::new(
            exit::NOT_FOUND,
            format!("cannot read the plugin {path}: {e}"),
        )
    })?;
    let name = std::path::Path::new(path)
        .file_stem()
        .map_or_else(|| path.to_string(), |s| s.to_string_lossy().into_owned());
    Ok((name, bytes))
}

async fn load(reference: &str, grants: &Grants) -> Result<Plugin, CliError> {
    let (name, bytes) = read_plugin(reference)?;
    let cache = dirs::cache_dir().map(|d| d.join("dray").join("plugins"));
    let runtime = Runtime::new(cache).map_err(|e| fail(format!("{e:#}")))?;
    runtime
        .load(&name, bytes, grants)
        .await
        .map_err(|e| fail(e.to_string()))
}

/// Reads `NAME=FILE` pairs; each file holds a JSON object of strings.
fn read_secrets(pairs: &[String]) -> Result<Secrets, CliError> {
    if pairs.is_empty() {
        return Ok(Secrets::default());
    }
    let mut all: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for pair in pairs {
        let (name, file) = pair.split_once('=').ok_or_else(|| {
            CliError::new(exit::USAGE, format!("--secret {pair:?}: write NAME=FILE"))
        })?;
        let text = std::fs::read_to_string(file)
            .map_err(|e| fail(format!("cannot read the secret file {file}: {e}")))?;
        let values: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| {
            CliError::new(
                exit::USAGE,
                format!("{file} must hold a JSON object of strings: {e}"),
            )
        })?;
        all.insert(name.to_string(), values);
    }
    Ok(Secrets(Some(Arc::new(all))))
}

pub(super) async fn run(command: PluginCommand) -> Result<(), CliError> {
    match command {
        PluginCommand::Inspect { plugin } => {
            // Inspecting grants everything, so any plugin can be looked at (nothing runs but
            // `describe`).
            let plugin = load(&plugin, &Grants::all()).await?;
            println!("plugin   {}", plugin.name);
            println!("digest   {}", plugin.digest);
            println!("imports  {}", plugin.imports.join("\n         "));
            for kind in &plugin.kinds {
                let capabilities: Vec<String> = kind
                    .capabilities
                    .iter()
                    .map(|c| capability_name(*c).to_string())
                    .collect();
                println!();
                let what = match plugin.role {
                    crate::runtime::Role::Step => "step kind",
                    crate::runtime::Role::Verifier => "verifier ",
                };
                println!("{what}     {}", kind.name);
                println!("description   {}", kind.description);
                println!(
                    "capabilities  {}",
                    if capabilities.is_empty() {
                        "none".into()
                    } else {
                        capabilities.join(", ")
                    }
                );
                let schema = serde_json::to_string_pretty(&kind.schema).unwrap_or_default();
                println!("config schema {}", schema.replace('\n', "\n              "));
            }
            Ok(())
        }
        PluginCommand::Run {
            plugin,
            kind,
            config,
            workdir,
            timeout,
            memory,
            allow_hosts,
            secrets,
            allow_git,
            git_local_roots,
        } => {
            let secrets = read_secrets(&secrets)?;
            let allow = AllowList::parse(&allow_hosts)
                .map_err(|e| CliError::new(exit::USAGE, format!("--allow-host {e}")))?;
            let text = match config.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| fail(format!("cannot read the config {path}: {e}")))?,
                None => config,
            };
            let config: Value = serde_json::from_str(&text)
                .map_err(|e| CliError::new(exit::USAGE, format!("--config is not JSON: {e}")))?;
            if !workdir.is_dir() {
                return Err(CliError::new(
                    exit::USAGE,
                    format!("--workdir {} is not a directory", workdir.display()),
                ));
            }
            let mut granted = Vec::new();
            if !allow.is_empty() {
                granted.push(Capability::Http);
            }
            if secrets.0.is_some() {
                granted.push(Capability::Credentials);
            }
            if allow_git {
                granted.push(Capability::Git);
            }
            // Nothing to write to outside a promotion: metadata is only logged.
            granted.push(Capability::Metadata);
            let grants = Grants::of(&granted);
            let plugin = load(&plugin, &grants).await?;
            let context = StepContext {
                project: "local".into(),
                stage: "local".into(),
                promotion: String::new(),
                step_alias: kind.clone(),
                freight: Vec::new(),
                vars: "{}".into(),
                outputs: "{}".into(),
            };
            let limits = Limits {
                timeout: Duration::from_secs(timeout),
                memory_bytes: memory << 20,
                allow_hosts: allow,
                secrets,
                git: GitAccess {
                    local_roots: git_local_roots,
                    ..GitAccess::default()
                },
                metadata: Metadata(Some(Arc::new(LogOnly))),
                ..Limits::default()
            };
            if plugin.role == crate::runtime::Role::Verifier {
                use crate::runtime::MeasurementPhase;
                // A verifier takes one measurement; the conditions are the metric's, so the
                // value and the verifier's own phase are what there is to see.
                let report = plugin
                    .verify(&kind, &context, &config, &workdir, &limits)
                    .await;
                for line in &report.log {
                    eprintln!("{line}");
                }
                let took = format!("{:.1} ms", report.duration.as_secs_f64() * 1000.0);
                return match report.outcome {
                    Ok(m) => {
                        let phase = match m.phase {
                            MeasurementPhase::Successful => "successful",
                            MeasurementPhase::Failed => "failed",
                            MeasurementPhase::Inconclusive => "inconclusive",
                            MeasurementPhase::Error => "error",
                        };
                        let result =
                            json!({"phase": phase, "value": m.value, "message": m.message});
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&result).unwrap_or_default()
                        );
                        eprintln!("{kind}: measured ({phase}) in {took}");
                        Ok(())
                    }
                    Err(failure) => Err(fail(format!(
                        "{kind} failed after {took}: {}",
                        failure.message
                    ))),
                };
            }
            let report = plugin
                .run(&kind, &context, &config, &workdir, &limits)
                .await;
            for line in &report.log {
                eprintln!("{line}");
            }
            let took = format!("{:.1} ms", report.duration.as_secs_f64() * 1000.0);
            match report.outcome {
                Ok(Finished {
                    status,
                    outputs,
                    message,
                    retry_after,
                }) => {
                    let result = json!({
                        "status": status_name(status),
                        "outputs": outputs,
                        "message": message,
                        "retryAfterSeconds": retry_after.map(|d| d.as_secs()),
                    });
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&result).unwrap_or_default()
                    );
                    eprintln!("{kind}: {} in {took}", status_name(status));
                    Ok(())
                }
                Err(failure) => {
                    let kind_name = serde_json::to_value(failure.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    Err(fail(format!(
                        "{kind} failed ({kind_name}) after {took}: {}",
                        failure.message
                    )))
                }
            }
        }
    }
}
