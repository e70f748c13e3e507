//! The Kubernetes clusters the daemon may reach (`[clusters.NAME]` in its config): how to connect
//! (a kubeconfig file and context, or the in-cluster service account) and which projects may use
//! each, in which namespaces. Nothing here is required: a daemon with no cluster behaves as
//! before, and whatever needs one fails with the config key to set.
//!
//! The cluster's own RBAC stays the last word: what the daemon's cluster user may not do, the
//! API server refuses, and the refusal reaches the step with its message.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde::Deserialize;

/// One cluster in the daemon config.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// A kubeconfig file (as kubectl reads it).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Its context; unset: its current context.
    #[serde(default)]
    pub context: Option<String>,
    /// The pod's service account instead of a kubeconfig (Dray running in the cluster).
    #[serde(default)]
    pub in_cluster: bool,
    /// The projects that may use the cluster: names, `*` patterns (`team-*`) or `*` for all.
    #[serde(default)]
    pub projects: Vec<String>,
    /// The namespaces those projects may reach there: names or `*` patterns. Empty: none
    /// (cluster-scoped kinds only).
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// The clusters, connected (a client each; nothing is sent until a call needs it).
pub struct Clusters {
    by_name: BTreeMap<String, Arc<Cluster>>,
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

/// One cluster: its client and who may reach what there.
pub struct Cluster {
    pub name: String,
    pub client: kube::Client,
    projects: Vec<String>,
    namespaces: Vec<String>,
    /// How a person opens another namespace: the daemon config, or `dray plugin run`'s flag.
    pub namespace_hint: String,
    /// Kinds already looked up by discovery, by (apiVersion, kind).
    kinds: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
}

impl Clusters {
    /// Connects to every cluster of the config; an error names the cluster and what to fix.
    pub async fn connect(configs: &BTreeMap<String, ClusterConfig>) -> anyhow::Result<Clusters> {
        // The clients take rustls' process-wide provider.
        crate::tls::install_provider();
        let mut by_name = BTreeMap::new();
        for (name, config) in configs {
            let client = client(config)
                .await
                .map_err(|e| anyhow::anyhow!("config [clusters.{name}]: {e}"))?;
            by_name.insert(
                name.clone(),
                Arc::new(Cluster {
                    name: name.clone(),
                    client,
                    projects: config.projects.clone(),
                    namespaces: config.namespaces.clone(),
                    namespace_hint: format!(
                        "add it to `namespaces` of [clusters.{name}] in the daemon config"
                    ),
                    kinds: Mutex::new(HashMap::new()),
                }),
            );
        }
        Ok(Clusters { by_name })
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// These clusters with `hint` as the way to open another namespace (for `dray plugin run`,
    /// whose clusters come from flags).
    pub fn with_namespace_hint(mut self, hint: &str) -> Clusters {
        for cluster in self.by_name.values_mut() {
            if let Some(c) = Arc::get_mut(cluster) {
                c.namespace_hint = hint.to_string();
            }
        }
        self
    }

    /// Cluster `name`, whoever may use it.
    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.by_name.get(name).cloned()
    }

    /// The cluster `name` (none: the only one `project` may use), if `project` may use it.
    pub fn for_project(&self, project: &str, name: Option<&str>) -> Result<&Cluster, String> {
        let usable: Vec<&Cluster> = self
            .by_name
            .values()
            .map(|c| c.as_ref())
            .filter(|c| c.projects.iter().any(|p| matches(p, project)))
            .collect();
        match name {
            Some(name) => match self.by_name.get(name) {
                None if self.by_name.is_empty() => Err(format!(
                    "there is no cluster {name:?}: the daemon config names none (add [clusters.{name}] with its kubeconfig and the projects that may use it)"
                )),
                None => Err(format!(
                    "there is no cluster {name:?}; the daemon config names {}",
                    self.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
                Some(c) if !usable.iter().any(|u| u.name == c.name) => Err(format!(
                    "project {project:?} may not use cluster {name:?}: add it to `projects` of [clusters.{name}] in the daemon config"
                )),
                Some(c) => Ok(c),
            },
            None => match usable.as_slice() {
                [only] => Ok(only),
                [] if self.by_name.is_empty() => Err(
                    "no Kubernetes cluster is configured: add [clusters.NAME] with its kubeconfig and the projects that may use it to the daemon config".into(),
                ),
                [] => Err(format!(
                    "project {project:?} may use no cluster: add it to `projects` of one of [clusters.{}] in the daemon config",
                    self.by_name.keys().cloned().collect::<Vec<_>>().join("], [clusters.")
                )),
                many => Err(format!(
                    "project {project:?} may use several clusters ({}): name one (`cluster:`)",
                    many.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                )),
            },
        }
    }
}

impl Cluster {
    /// Whether the projects of this cluster may reach `namespace` in it.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|p| matches(p, namespace))
    }

    /// The resource of `api_version` `kind` (discovery, asked once per kind) and whether it is
    /// namespaced.
    pub async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, bool), String> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(found) = self.lock().get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, capabilities): (ApiResource, ApiCapabilities) =
            kube::discovery::pinned_kind(&self.client, &gvk)
                .await
                .map_err(|e| match e {
                    // An unknown group is a 404 of its discovery document; a known group
                    // without the kind, a discovery error.
                    kube::Error::Api(status) if status.code == 404 => format!(
                        "cluster {:?} does not serve {kind} in {api_version} (is its CRD installed?)",
                        self.name
                    ),
                    kube::Error::Discovery(_) => format!(
                        "cluster {:?} does not serve {kind} in {api_version} (is its CRD installed?)",
                        self.name
                    ),
                    e => describe(&self.name, e),
                })?;
        let found = (resource, capabilities.scope == Scope::Namespaced);
        self.lock().insert(key, found.clone());
        Ok(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (ApiResource, bool)>> {
        self.kinds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A client for the cluster `config` names (a kubeconfig and context, or in-cluster).
pub async fn client(config: &ClusterConfig) -> Result<kube::Client, String> {
    let config = match (&config.kubeconfig, config.in_cluster) {
        (Some(_), true) => {
            return Err("set either `kubeconfig` or `in-cluster = true`, not both".into());
        }
        (None, false) => {
            return Err("set `kubeconfig` (a file) or `in-cluster = true`".into());
        }
        (None, true) => kube::Config::incluster()
            .map_err(|e| format!("in-cluster: {e} (is the daemon running in a pod?)"))?,
        (Some(file), false) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(file)
                .map_err(|e| format!("kubeconfig {}: {e}", file.display()))?;
            let options = kube::config::KubeConfigOptions {
                context: config.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", file.display()))?
        }
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// A client error as a step or an operator reads it: the API server's own message for a refusal
/// (with what to do for the usual ones), the transport's otherwise.
pub fn describe(cluster: &str, error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let hint = match status.code {
                401 => " (the daemon's credentials for it were not accepted: check the kubeconfig)",
                403 => " (the daemon's cluster user lacks this permission: grant it with RBAC)",
                _ => "",
            };
            format!("cluster {cluster:?}: {}{hint}", status.message)
        }
        e => format!("cluster {cluster:?} cannot be reached: {e}"),
    }
}

/// A name against a pattern of the config: exact, or with `*` standing for any characters.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(mut left) = name.strip_prefix(head) else {
                return false;
            };
            let parts: Vec<&str> = rest.split('*').collect();
            let (last, middle) = parts.split_last().expect("split yields one part at least");
            for part in middle {
                match left.find(part) {
                    Some(i) => left = &left[i + part.len()..],
                    None => return false,
                }
            }
            left.len() >= last.len() && left.ends_with(last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_names() {
        assert!(matches("*", "anything"));
        assert!(matches("shop", "shop"));
        assert!(!matches("shop", "shop-prod"));
        assert!(matches("shop-*", "shop-prod"));
        assert!(!matches("shop-*", "other-shop-prod"));
        assert!(matches("*-prod", "shop-prod"));
        assert!(matches("a*b*c", "aXbYc"));
        assert!(!matches("a*b*c", "aXcYb"));
        assert!(!matches("ab*ba", "aba"));
    }
}
