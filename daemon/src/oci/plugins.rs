//! Plugins from registries as the daemon runs them: the operator's policy, the pins, the local
//! copies, and the loaded components.
//!
//! A Stage writes `uses: oci://HOST/REPO:TAG` (or `@sha256:…`; `#KIND` picks one step kind of a
//! component that offers several). The first use resolves the tag to a manifest digest and
//! records it as a **pin** (`<data dir>/plugins/pins.json`); every later use, after a restart
//! too, runs that digest until a person re-resolves it (`dray plugin update`), so moving a tag
//! never changes a running pipeline. The component is fetched once per digest, checked, kept in
//! `<data dir>/plugins/oci/`, compiled once (the compile cache is keyed by content), and loaded
//! once per process.
//!
//! Policy (`[[steps.oci]]` in the daemon config): a reference is used only if a rule's `match`
//! (a glob over `HOST/REPOSITORY`) covers it; the rule says which capabilities it may import
//! (`grants`), which generic Secrets it may read (`secrets`), and whether it must be named by
//! digest (`require-digest`). A component importing more than its rule grants fails to load,
//! with the capability and the config key in the message.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{PluginRef, fetch, resolve};
use crate::discovery::registry::Registries;
use crate::runtime::{Grants, Plugin, Runtime};
use crate::store::Store;

/// One rule of `[[steps.oci]]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OciRule {
    /// A glob over `HOST/REPOSITORY`: `registry.acme.internal/steps/*`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Capabilities its plugins may import: `http`, `git`, `credentials`, `metadata`, `oci`,
    /// `helm`, `kube`.
    #[serde(default)]
    pub grants: Vec<String>,
    /// With `credentials`: the generic Secrets (by name, or `*`) its plugins may read.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// With `kube`: the kinds its plugins may reach and how (`"get,patch
    /// Application.argoproj.io"`), as for `[[steps.plugins]]`.
    #[serde(default)]
    pub kube: Vec<String>,
    /// Refuse references by tag: only `@sha256:…` may be used.
    #[serde(default)]
    pub require_digest: bool,
    /// Public keys (PEM files, as cosign.pub) one of which must have signed the plugin, as
    /// cosign stores signatures. Empty: signatures are not checked.
    #[serde(default)]
    pub keys: Vec<PathBuf>,
}

/// A tag resolved once, and run from then on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Pin {
    /// The reference as Stages write it (`oci://HOST/REPO:TAG`).
    pub reference: String,
    /// The manifest digest it runs.
    pub digest: String,
    /// When it was resolved (RFC 3339).
    pub resolved_at: String,
}

/// A plugin ready to run, and what to record about it.
pub struct Resolved {
    pub plugin: Arc<Plugin>,
    /// The step (or verifier) kind to call.
    pub kind: String,
    /// `oci://HOST/REPO:TAG@sha256:…`: what the Promotion records it ran.
    pub pinned: String,
    /// The generic Secrets its rule lets it read.
    pub secrets: Vec<String>,
    /// The kube rules its rule grants.
    pub kube: Arc<[crate::host::kube::Rule]>,
}

impl std::fmt::Debug for RegistryPlugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryPlugins")
            .field("rules", &self.rules.len())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// One `[[steps.oci]]` rule, read once at start: its pattern, keys and kube rules.
struct CompiledRule {
    pattern: regex::Regex,
    rule: OciRule,
    keys: Vec<super::signature::PublicKey>,
    kube: Arc<[crate::host::kube::Rule]>,
}

/// The daemon's plugins from registries (see the module docs).
pub struct RegistryPlugins {
    registries: Registries,
    runtime: Runtime,
    store: Store,
    rules: Vec<CompiledRule>,
    dir: PathBuf,
    pins: Mutex<BTreeMap<String, Pin>>,
    /// Loaded components by manifest digest and rule.
    loaded: Mutex<HashMap<String, Arc<Plugin>>>,
}

impl RegistryPlugins {
    /// `dir`: `<data dir>/plugins`; its `pins.json` is read now.
    pub fn new(
        runtime: Runtime,
        store: Store,
        rules: &[OciRule],
        dir: PathBuf,
        registries: Registries,
    ) -> anyhow::Result<RegistryPlugins> {
        let compiled = rules
            .iter()
            .map(|r| {
                let re = crate::resource::glob_to_regex(&r.pattern).map_err(|e| {
                    anyhow::anyhow!("config [[steps.oci]] match {:?}: {e}", r.pattern)
                })?;
                let keys = r
                    .keys
                    .iter()
                    .map(|path| {
                        let name = path.display().to_string();
                        let pem = std::fs::read_to_string(path).map_err(|e| {
                            anyhow::anyhow!("config [[steps.oci]] keys: cannot read {name}: {e}")
                        })?;
                        super::signature::PublicKey::from_pem(&name, &pem)
                            .map_err(|e| anyhow::anyhow!("config [[steps.oci]] keys: {e}"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let kube = r
                    .kube
                    .iter()
                    .map(|rule| {
                        crate::host::kube::Rule::parse(rule).map_err(|e| {
                            anyhow::anyhow!("config [[steps.oci]] match {:?}: {e}", r.pattern)
                        })
                    })
                    .collect::<anyhow::Result<Arc<[_]>>>()?;
                Ok(CompiledRule {
                    pattern: re,
                    rule: r.clone(),
                    keys,
                    kube,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let pins = match std::fs::read(dir.join("pins.json")) {
            Ok(bytes) => {
                let list: Vec<Pin> = serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!("{} is unreadable: {e}", dir.join("pins.json").display())
                })?;
                list.into_iter().map(|p| (p.reference.clone(), p)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => anyhow::bail!("cannot read {}: {e}", dir.join("pins.json").display()),
        };
        Ok(RegistryPlugins {
            registries,
            runtime,
            store,
            rules: compiled,
            dir,
            pins: Mutex::new(pins),
            loaded: Mutex::new(HashMap::new()),
        })
    }

    /// Every pin, by reference.
    pub async fn pins(&self) -> Vec<Pin> {
        self.pins.lock().await.values().cloned().collect()
    }

    fn rule(&self, r: &PluginRef) -> Result<&CompiledRule, String> {
        let repo = r.repo();
        self.rules
            .iter()
            .find(|c| c.pattern.is_match(&repo))
            .ok_or_else(|| {
                format!(
                    "plugins may not come from {repo}: the daemon config allows none from there (add a [[steps.oci]] rule with match = \"{repo}\", or a pattern covering it, and the grants it needs)"
                )
            })
    }

    /// The credential for `r`'s repository: the project's `cred-type: image` Secret, if any.
    async fn auth(&self, project: &str, r: &PluginRef) -> Result<RegistryAuth, String> {
        let (project, url) = (project.to_string(), r.repo());
        let secret = self
            .store
            .read_async(move |reader| {
                Ok(crate::credentials::find(
                    reader,
                    crate::credentials::CredType::Image,
                    &project,
                    &url,
                ))
            })
            .await
            .map_err(|e| format!("cannot read the project's Secrets: {e}"))?;
        Ok(
            match secret.and_then(|s| Some((s.value("username")?, s.value("password")?))) {
                Some((user, password)) => RegistryAuth::Basic(user, password),
                None => RegistryAuth::Anonymous,
            },
        )
    }

    async fn save_pins(&self, pins: &BTreeMap<String, Pin>) -> Result<(), String> {
        let list: Vec<&Pin> = pins.values().collect();
        let bytes = serde_json::to_vec_pretty(&list).map_err(|e| e.to_string())?;
        let path = self.dir.join("pins.json");
        super::keep(&path, &bytes)
            .await
            .map_err(|e| format!("cannot record the pin in {}: {e}", path.display()))
    }

    /// The digest `r` runs: its own, or its pin (made now, on first use).
    async fn digest(&self, r: &PluginRef, auth: &RegistryAuth) -> Result<String, String> {
        if let Some(d) = &r.digest {
            return Ok(d.clone());
        }
        let key = r.to_string();
        if let Some(pin) = self.pins.lock().await.get(&key) {
            return Ok(pin.digest.clone());
        }
        // Resolved without holding the pins (other references go on meanwhile); if another
        // Promotion pinned this one in between, its pin stands.
        let digest = resolve(&self.registries, r, auth).await?;
        let mut pins = self.pins.lock().await;
        if let Some(pin) = pins.get(&key) {
            return Ok(pin.digest.clone());
        }
        pins.insert(
            key.clone(),
            Pin {
                reference: key.clone(),
                digest: digest.clone(),
                resolved_at: crate::resource::now(),
            },
        );
        self.save_pins(&pins).await?;
        tracing::info!(reference = %key, %digest, "plugin pinned");
        Ok(digest)
    }

    /// Resolves the tag of `reference` again and pins what it names now (`dray plugin
    /// update`); returns the old digest (if it was pinned) and the new one.
    pub async fn update(
        &self,
        reference: &str,
        project: &str,
    ) -> Result<(Option<String>, String), String> {
        let r = PluginRef::parse(reference)?;
        if r.digest.is_some() {
            return Err(format!(
                "{reference} names a digest; there is nothing to re-resolve"
            ));
        }
        self.rule(&r)?;
        let auth = self.auth(project, &r).await?;
        let digest = resolve(&self.registries, &r, &auth).await?;
        let key = r.to_string();
        let mut pins = self.pins.lock().await;
        let old = pins.get(&key).map(|p| p.digest.clone());
        pins.insert(
            key.clone(),
            Pin {
                reference: key,
                digest: digest.clone(),
                resolved_at: crate::resource::now(),
            },
        );
        self.save_pins(&pins).await?;
        Ok((old, digest))
    }

    /// The plugin `uses` names, for a step of `project`: checked against the policy, pinned,
    /// fetched and loaded as needed.
    pub async fn get(&self, uses: &str, project: &str) -> Result<Resolved, String> {
        let (reference, kind) = match uses.split_once('#') {
            Some((r, k)) => (r, Some(k)),
            None => (uses, None),
        };
        let r = PluginRef::parse(reference)?;
        let compiled = self.rule(&r)?;
        let (rule, keys) = (&compiled.rule, compiled.keys.as_slice());
        if rule.require_digest && r.digest.is_none() {
            return Err(format!(
                "{r}: the daemon config requires plugins from {} to be named by digest (oci://{}@sha256:…; `dray plugin pull {r}` prints it)",
                r.repo(),
                r.repo()
            ));
        }
        let auth = self.auth(project, &r).await?;
        let digest = self.digest(&r, &auth).await?;
        let pinned = r.pinned(&digest).to_string();
        // Loaded once per digest *and rule*: the same component allowed by two rules is linked
        // with each rule's grants, never with the other's.
        let loaded_key = format!("{digest} {}", rule.pattern);
        let known = self.loaded.lock().await.get(&loaded_key).cloned();
        let plugin = match known {
            Some(p) => p,
            None => {
                if !keys.is_empty() {
                    let by =
                        super::verify_signature(&self.registries, &r, &digest, &auth, keys).await?;
                    tracing::info!(reference = %r, %digest, key = %by, "plugin signature verified");
                }
                let fetched =
                    fetch(&self.registries, &r, &digest, &auth, &self.dir.join("oci")).await?;
                let grants = Grants::parse(&rule.grants)
                    .map_err(|e| format!("config [[steps.oci]] match {:?}: {e}", rule.pattern))?;
                let plugin = self
                    .runtime
                    .load(&pinned, fetched.bytes, &grants)
                    .await
                    .map_err(|e| {
                        format!(
                            "{e} (for a plugin from a registry, grants are the `grants` of its [[steps.oci]] rule, match {:?})",
                            rule.pattern
                        )
                    })?;
                self.loaded
                    .lock()
                    .await
                    .entry(loaded_key)
                    .or_insert_with(|| Arc::new(plugin))
                    .clone()
            }
        };
        let names: Vec<&str> = plugin.kinds.iter().map(|k| k.name.as_str()).collect();
        let kind = match (kind, names.as_slice()) {
            (Some(k), _) if names.contains(&k) => k.to_string(),
            (Some(k), _) => {
                return Err(format!(
                    "{r} offers no kind {k:?}; it offers {}",
                    names.join(", ")
                ));
            }
            (None, [one]) => one.to_string(),
            (None, _) => {
                return Err(format!(
                    "{r} offers several kinds ({}); name one: {r}#KIND",
                    names.join(", ")
                ));
            }
        };
        Ok(Resolved {
            plugin,
            kind,
            pinned,
            secrets: rule.secrets.clone(),
            kube: compiled.kube.clone(),
        })
    }
}
