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

/// A reference as the CLI takes it: `oci://` may be left out.
fn plugin_ref(text: &str) -> Result<crate::oci::PluginRef, CliError> {
    let text = if crate::oci::PluginRef::is_oci(text) {
        text.to_string()
    } else {
        format!("{}{text}", crate::oci::SCHEME)
    };
    crate::oci::PluginRef::parse(&text).map_err(|e| CliError::new(exit::USAGE, e))
}

/// `dray plugin run --allow-oci`'s credentials: DRAY_REGISTRY_USERNAME and
/// DRAY_REGISTRY_PASSWORD, for every registry.
struct EnvCredentials;

impl crate::host::oci::OciCredentials for EnvCredentials {
    fn lookup(
        &self,
        _cred_type: crate::credentials::CredType,
        _repo_url: &str,
    ) -> Option<(String, String)> {
        match registry_auth() {
            oci_client::secrets::RegistryAuth::Basic(user, password) => Some((user, password)),
            _ => None,
        }
    }
}

/// Registry credentials from DRAY_REGISTRY_USERNAME and DRAY_REGISTRY_PASSWORD.
fn registry_auth() -> oci_client::secrets::RegistryAuth {
    match (
        std::env::var("DRAY_REGISTRY_USERNAME"),
        std::env::var("DRAY_REGISTRY_PASSWORD"),
    ) {
        (Ok(user), Ok(password)) => oci_client::secrets::RegistryAuth::Basic(user, password),
        _ => oci_client::secrets::RegistryAuth::Anonymous,
    }
}

/// Pulls a component (through the local copy in the user's cache dir) and says what it got.
async fn pull(reference: &crate::oci::PluginRef) -> Result<crate::oci::Fetched, CliError> {
    let registries = crate::discovery::registry::Registries::new(
        crate::discovery::registry::DEFAULT_RATE,
        BTreeMap::new(),
    );
    let auth = registry_auth();
    let digest = crate::oci::resolve(&registries, reference, &auth)
        .await
        .map_err(fail)?;
    let cache = dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("dray")
        .join("oci");
    crate::oci::fetch(&registries, reference, &digest, &auth, &cache)
        .await
        .map_err(fail)
}

/// Whether the registry holds cosign-style signatures of `digest` (checked against keys only by
/// a daemon whose rule names them).
async fn signature_status(r: &crate::oci::PluginRef, digest: &str) -> String {
    let registries = crate::discovery::registry::Registries::new(
        crate::discovery::registry::DEFAULT_RATE,
        BTreeMap::new(),
    );
    let Ok(target) = registries.target(&r.repo()) else {
        return "unknown".into();
    };
    match crate::oci::signature_manifests(&registries, &target, &registry_auth(), digest)
        .await
        .len()
    {
        0 => "none".into(),
        n => format!(
            "{n} signature manifest(s) (at tag {} or as referrers; a daemon checks them against its rule's keys)",
            crate::oci::signature::tag(digest)
        ),
    }
}

/// Writes a private key readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| {
            CliError::new(
                exit::FAILED,
                format!("cannot write {}: {e}", path.display()),
            )
        })
}

/// Reads `builtin:NAME`, `oci://…` or a file into (name, bytes).
async fn read_plugin(reference: &str) -> Result<(String, Vec<u8>), CliError> {
    if crate::oci::PluginRef::is_oci(reference) {
        let r = plugin_ref(reference)?;
        let fetched = pull(&r).await?;
        let name = r
            .repository
            .rsplit('/')
            .next()
            .unwrap_or("plugin")
            .to_string();
        eprintln!(
            "{r}: manifest {}, component {} ({} bytes)",
            fetched.manifest_digest, fetched.layer.digest, fetched.layer.size
        );
        for (key, value) in &fetched.annotations {
            eprintln!("  {key}: {value}");
        }
        eprintln!(
            "  signature: {}",
            signature_status(&r, &fetched.manifest_digest).await
        );
        return Ok((name, fetched.bytes));
    }
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
    let (name, bytes) = read_plugin(reference).await?;
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

/// `dray plugin ls`.
pub(super) async fn list(client: &super::client::Client) -> Result<(), CliError> {
    let answer = client
        .send(reqwest::Method::GET, "/v1/plugins", None)
        .await?;
    let names = |key: &str| -> String {
        answer[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("step kinds  {}", names("steps"));
    println!("verifiers   {}", names("verifiers"));
    let pins = answer["pins"].as_array().cloned().unwrap_or_default();
    if pins.is_empty() {
        println!("no plugins from registries pinned yet");
        return Ok(());
    }
    println!();
    println!("{:<56} {:<73} RESOLVED", "REFERENCE", "DIGEST");
    for pin in pins {
        println!(
            "{:<56} {:<73} {}",
            pin["reference"].as_str().unwrap_or_default(),
            pin["digest"].as_str().unwrap_or_default(),
            pin["resolvedAt"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// `dray plugin update REF`.
pub(super) async fn update(
    client: &super::client::Client,
    reference: &str,
    project: Option<String>,
) -> Result<(), CliError> {
    let r = plugin_ref(reference)?;
    let answer = client
        .send(
            reqwest::Method::POST,
            "/v1/plugins/update",
            Some(json!({"reference": r.to_string(), "project": project})),
        )
        .await?;
    let new = answer["digest"].as_str().unwrap_or_default();
    match answer["previous"].as_str() {
        Some(old) if old == new => println!("{r}: unchanged, still {new}"),
        Some(old) => println!("{r}: {old} -> {new}"),
        None => println!("{r}: pinned to {new}"),
    }
    Ok(())
}

pub(super) async fn run(command: PluginCommand) -> Result<(), CliError> {
    match command {
        PluginCommand::GenerateKey { output_prefix } => {
            let password = std::env::var(crate::oci::signature::PASSWORD_VARIABLE)
                .ok()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    CliError::new(
                        exit::USAGE,
                        format!(
                            "set {} to the password that encrypts the private key",
                            crate::oci::signature::PASSWORD_VARIABLE
                        ),
                    )
                })?;
            let (private, public) = crate::oci::signature::generate(&password).map_err(fail)?;
            let key = output_prefix.with_extension("key");
            let pub_path = output_prefix.with_extension("pub");
            for path in [&key, &pub_path] {
                if path.exists() {
                    return Err(CliError::new(
                        exit::FAILED,
                        format!("{} exists; not overwritten", path.display()),
                    ));
                }
            }
            write_private(&key, &private)?;
            std::fs::write(&pub_path, public).map_err(|e| {
                CliError::new(
                    exit::FAILED,
                    format!("cannot write {}: {e}", pub_path.display()),
                )
            })?;
            println!(
                "private key {} (sign with `dray plugin push --sign-key`)",
                key.display()
            );
            println!(
                "public key  {} (list it in a [[steps.oci]] rule's keys)",
                pub_path.display()
            );
            Ok(())
        }
        PluginCommand::Ls | PluginCommand::Update { .. } => Err(CliError::new(
            exit::USAGE,
            "internal: plugin ls and update talk to the daemon",
        )),
        PluginCommand::Push {
            reference,
            file,
            annotations,
            sign_key,
        } => {
            let sign_key = match &sign_key {
                Some(path) => {
                    let pem = std::fs::read_to_string(path).map_err(|e| {
                        CliError::new(
                            exit::NOT_FOUND,
                            format!("cannot read the signing key {}: {e}", path.display()),
                        )
                    })?;
                    let password = std::env::var(crate::oci::signature::PASSWORD_VARIABLE).ok();
                    let key =
                        crate::oci::signature::SigningKey::from_pem(&pem, password.as_deref())
                            .map_err(|e| {
                                CliError::new(exit::USAGE, format!("{}: {e}", path.display()))
                            })?;
                    Some(key)
                }
                None => None,
            };
            let r = plugin_ref(&reference)?;
            if r.digest.is_some() {
                return Err(CliError::new(
                    exit::USAGE,
                    "push to a tag (oci://HOST/REPO:TAG); the digest is the registry's to give",
                ));
            }
            let mut extra = BTreeMap::new();
            for pair in &annotations {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    CliError::new(
                        exit::USAGE,
                        format!("--annotation {pair:?}: write KEY=VALUE"),
                    )
                })?;
                extra.insert(k.to_string(), v.to_string());
            }
            let bytes = std::fs::read(&file).map_err(|e| {
                CliError::new(
                    exit::NOT_FOUND,
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            let title = file.file_name().map_or_else(
                || "plugin.wasm".into(),
                |n| n.to_string_lossy().into_owned(),
            );
            let auth = registry_auth();
            let pushed = crate::oci::push(&r, bytes, &title, &extra, &auth)
                .await
                .map_err(fail)?;
            println!("pushed {r}");
            if let Some(key) = &sign_key {
                crate::oci::push_signature(&r, &pushed.manifest_digest, key, &auth)
                    .await
                    .map_err(fail)?;
                println!(
                    "signed    {}",
                    crate::oci::signature::tag(&pushed.manifest_digest)
                );
            }
            println!("digest    {}", pushed.manifest_digest);
            println!("component {} ({} bytes)", pushed.layer_digest, pushed.size);
            println!("use it as oci://{}@{}", r.repo(), pushed.manifest_digest);
            Ok(())
        }
        PluginCommand::PushWit { reference } => {
            let mut r = plugin_ref(&reference)?;
            if r.digest.is_some() {
                return Err(CliError::new(
                    exit::USAGE,
                    "push to a tag (oci://HOST/REPO:TAG); the digest is the registry's to give",
                ));
            }
            // Without a tag of its own (`oci_client` reads none as `latest`), the version's.
            let tagged = reference
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'));
            if !tagged {
                r.tag = Some(crate::oci::WIT_PACKAGE_VERSION.to_string());
            }
            let title = format!(
                "{}@{}.wasm",
                crate::oci::WIT_PACKAGE_NAME,
                crate::oci::WIT_PACKAGE_VERSION
            );
            let pushed = crate::oci::push(
                &r,
                crate::oci::WIT_PACKAGE.to_vec(),
                &title,
                &BTreeMap::new(),
                &registry_auth(),
            )
            .await
            .map_err(fail)?;
            println!(
                "pushed {r} ({}@{}, {} bytes)",
                crate::oci::WIT_PACKAGE_NAME,
                crate::oci::WIT_PACKAGE_VERSION,
                pushed.size
            );
            println!("digest    {}", pushed.manifest_digest);
            Ok(())
        }
        PluginCommand::Pull { reference, output } => {
            let r = plugin_ref(&reference)?;
            let fetched = pull(&r).await?;
            let output = output.unwrap_or_else(|| {
                let name = r.repository.rsplit('/').next().unwrap_or("plugin");
                std::path::PathBuf::from(format!("{name}.wasm"))
            });
            std::fs::write(&output, &fetched.bytes)
                .map_err(|e| fail(format!("cannot write {}: {e}", output.display())))?;
            println!(
                "pulled {} to {}",
                r.pinned(&fetched.manifest_digest),
                output.display()
            );
            println!(
                "component {} ({} bytes)",
                fetched.layer.digest, fetched.layer.size
            );
            Ok(())
        }
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
            allow_oci,
            allow_helm,
            git_local_roots,
            kubeconfig,
            kube_context,
            kube_namespaces,
            kube_rules,
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
            if allow_oci {
                granted.push(Capability::Oci);
            }
            if allow_helm {
                granted.push(Capability::Helm);
            }
            let kube = kube_access(
                &plugin,
                kubeconfig,
                kube_context,
                kube_namespaces,
                &kube_rules,
            )
            .await?;
            if kube.clusters.is_some() {
                granted.push(Capability::Kube);
            }
            // Nothing to write to outside a promotion: metadata is only logged.
            granted.push(Capability::Metadata);
            let grants = Grants::of(&granted);
            // The built-in steps are one component that imports every capability: it loads with
            // all of them, as in the daemon, and what a call may reach is still what the flags
            // open (no hosts, secrets, registries or clusters unless named). A kind that
            // declares Git needs --allow-git, as a plugin of its own would; kustomize-build's
            // chart pulls fail saying to pass --allow-helm.
            let plugin = if plugin.starts_with("builtin:") {
                let loaded = load(&plugin, &Grants::all()).await?;
                if let Some(info) = loaded.kind(&kind)
                    && info.capabilities.contains(&Capability::Git)
                    && !grants.allows(Capability::Git)
                {
                    return Err(CliError::new(
                        exit::USAGE,
                        format!("{} {kind} uses Git: pass --allow-git", loaded.name),
                    ));
                }
                loaded
            } else {
                load(&plugin, &grants).await?
            };
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
                oci: crate::host::oci::OciAccess {
                    registries: (allow_oci || allow_helm).then(|| {
                        Arc::new(crate::discovery::registry::Registries::new(
                            crate::discovery::registry::DEFAULT_RATE,
                            BTreeMap::new(),
                        ))
                    }),
                    credentials: Some(Arc::new(EnvCredentials)),
                },
                kube,
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

/// The `kube` access of `dray plugin run`: the cluster of `kubeconfig` as cluster `local`, open
/// to project `local` in `namespaces`, with `rules` (a built-in plugin's own when none are given).
async fn kube_access(
    plugin: &str,
    kubeconfig: Option<std::path::PathBuf>,
    context: Option<String>,
    namespaces: Vec<String>,
    rules: &[String],
) -> Result<crate::host::kube::KubeAccess, CliError> {
    let Some(kubeconfig) = kubeconfig else {
        if !rules.is_empty() || !namespaces.is_empty() {
            return Err(CliError::new(
                exit::USAGE,
                "--kube and --kube-namespace need --kubeconfig (the cluster to reach)",
            ));
        }
        return Ok(crate::host::kube::KubeAccess::default());
    };
    let config = crate::clusters::ClusterConfig {
        kubeconfig: Some(kubeconfig),
        context,
        projects: vec!["local".into()],
        namespaces,
        ..Default::default()
    };
    let clusters =
        crate::clusters::Clusters::connect(&BTreeMap::from([("local".to_string(), config)]))
            .await
            .map_err(|e| CliError::new(exit::USAGE, format!("--kubeconfig: {e:#}")))?
            .with_namespace_hint("open it with --kube-namespace");
    let rules: Arc<[crate::host::kube::Rule]> = if rules.is_empty() {
        let builtin = plugin.strip_prefix("builtin:").unwrap_or_default();
        crate::host::kube::builtin_rules()
            .remove(builtin)
            .unwrap_or_else(|| Arc::from([]))
    } else {
        rules
            .iter()
            .map(|r| crate::host::kube::Rule::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CliError::new(exit::USAGE, format!("--kube {e}")))?
            .into()
    };
    Ok(crate::host::kube::KubeAccess {
        clusters: Some(Arc::new(clusters)),
        project: "local".into(),
        rules,
    })
}
