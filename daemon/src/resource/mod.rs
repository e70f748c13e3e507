//! The resource model: Kargo's `kargo.akuity.io/v1alpha1` kinds (also accepted as
//! `dray.dev/v1alpha1`), Argo Rollouts' `AnalysisTemplate` and credential `v1 Secret`s.
//!
//! Every kind has a typed struct whose field names and defaults follow Kargo. Those structs are
//! the gate of [`decode`]: a document is read into one (unknown fields are refused with their
//! path), checked, and written back as JSON with defaults filled in. The store keeps the
//! uniform [`Object`]; code that reads a spec reads it through the kind's type, and code that
//! reads or writes a status goes through [`status`] ([`Object::status_of`],
//! [`Object::set_status`]).

pub mod analysis;
pub mod configmap;
pub mod freight;
pub mod project;
pub mod secret;
pub mod semver;
mod stage;
pub mod status;
pub mod urls;
pub mod validate;
mod warehouse;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use analysis::AnalysisTemplateSpec;
pub use configmap::ConfigMap;
pub use freight::Freight;
pub use project::{
    ClusterConfigSpec, ProjectConfigSpec, ProjectSpec, PromotionPolicy, ReceiverSecret,
    StageSelector, WebhookReceiver, glob_to_regex,
};
pub use secret::{CRED_TYPE_LABEL, Secret};
pub use stage::{
    FreightOrigin, FreightRequest, FreightSources, Labelled, MAX_LOOP_ITEMS, PromotionSpec,
    PromotionStep, PromotionTaskSpec, StageSpec, StepRetry, find_cycle,
};
pub use validate::{Errors, FieldError};
pub use warehouse::{
    ChartSubscription, CommitSelectionStrategy, FreightCreationPolicy, GitSubscription,
    ImageSelectionStrategy, ImageSubscription, Subscription, WarehouseSpec,
};

pub const KARGO_API_VERSION: &str = "kargo.akuity.io/v1alpha1";
pub const DRAY_API_VERSION: &str = "dray.dev/v1alpha1";
pub const ROLLOUTS_API_VERSION: &str = "argoproj.io/v1alpha1";

/// Secrets in this namespace are global: every project may use them (Kargo's shared namespace).
pub const SHARED_NAMESPACE: &str = "kargo-shared-resources";

/// Where the Secrets of the ClusterConfig's webhook receivers live, as in Kargo: no project
/// reads them.
pub const SYSTEM_NAMESPACE: &str = "kargo-system-resources";

/// The kinds Dray stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Project,
    ProjectConfig,
    Warehouse,
    Stage,
    Freight,
    Promotion,
    PromotionTask,
    AnalysisTemplate,
    /// A Stage's verification in progress or done: made by Dray, never applied.
    AnalysisRun,
    Secret,
    /// Settings expressions read (`configMap(name)`).
    ConfigMap,
    /// Something that happened (a Promotion ended, Freight was approved…): made by Dray.
    Event,
    /// Cluster-wide settings (webhook receivers for every project); one, named `cluster`.
    ClusterConfig,
    /// A PromotionTask every project's Stages may use (`task: {kind: ClusterPromotionTask}`).
    ClusterPromotionTask,
    /// An AnalysisTemplate every project's Stages may verify with.
    ClusterAnalysisTemplate,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::Project,
        Kind::ProjectConfig,
        Kind::Warehouse,
        Kind::Stage,
        Kind::Freight,
        Kind::Promotion,
        Kind::PromotionTask,
        Kind::AnalysisTemplate,
        Kind::AnalysisRun,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::Event,
        Kind::ClusterConfig,
        Kind::ClusterPromotionTask,
        Kind::ClusterAnalysisTemplate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Project => "Project",
            Kind::ProjectConfig => "ProjectConfig",
            Kind::Warehouse => "Warehouse",
            Kind::Stage => "Stage",
            Kind::Freight => "Freight",
            Kind::Promotion => "Promotion",
            Kind::PromotionTask => "PromotionTask",
            Kind::AnalysisTemplate => "AnalysisTemplate",
            Kind::AnalysisRun => "AnalysisRun",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::Event => "Event",
            Kind::ClusterConfig => "ClusterConfig",
            Kind::ClusterPromotionTask => "ClusterPromotionTask",
            Kind::ClusterAnalysisTemplate => "ClusterAnalysisTemplate",
        }
    }

    /// The URL segment and the CLI's usual spelling: `stages`, `freight`, `projectconfigs`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Project => "projects",
            Kind::ProjectConfig => "projectconfigs",
            Kind::Warehouse => "warehouses",
            Kind::Stage => "stages",
            Kind::Freight => "freight",
            Kind::Promotion => "promotions",
            Kind::PromotionTask => "promotiontasks",
            Kind::AnalysisTemplate => "analysistemplates",
            Kind::AnalysisRun => "analysisruns",
            Kind::Secret => "secrets",
            Kind::ConfigMap => "configmaps",
            Kind::Event => "events",
            Kind::ClusterConfig => "clusterconfigs",
            Kind::ClusterPromotionTask => "clusterpromotiontasks",
            Kind::ClusterAnalysisTemplate => "clusteranalysistemplates",
        }
    }

    /// Projects and the cluster-wide kinds do not live inside a project (they are stored under
    /// the project `""`).
    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::Project
                | Kind::ClusterConfig
                | Kind::ClusterPromotionTask
                | Kind::ClusterAnalysisTemplate
        )
    }

    /// The `apiVersion`s under which a document of this kind is accepted.
    pub fn api_versions(self) -> &'static [&'static str] {
        match self {
            Kind::AnalysisTemplate | Kind::AnalysisRun | Kind::ClusterAnalysisTemplate => {
                &[ROLLOUTS_API_VERSION]
            }
            Kind::Secret | Kind::ConfigMap | Kind::Event => &["v1"],
            _ => &[KARGO_API_VERSION, DRAY_API_VERSION],
        }
    }

    fn from_manifest(api_version: &str, kind: &str) -> Result<Kind, String> {
        let found = Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind {kind:?}: Dray knows {}", known.join(", "))
            })?;
        if !found.api_versions().contains(&api_version) {
            return Err(format!(
                "apiVersion {api_version:?} does not serve kind {kind}: use {}",
                found.api_versions().join(" or ")
            ));
        }
        Ok(found)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;

    /// Accepts what people type: `stage`, `stages`, `Stage`, `promo`, `promos`, `warehouse`.
    fn from_str(s: &str) -> Result<Kind, String> {
        let lower = s.to_ascii_lowercase();
        let short = match lower.as_str() {
            "promo" | "promos" => Some(Kind::Promotion),
            "promotask" | "promotasks" => Some(Kind::PromotionTask),
            "clusterpromotask" | "clusterpromotasks" => Some(Kind::ClusterPromotionTask),
            "secret" | "credentials" | "creds" => Some(Kind::Secret),
            "freights" => Some(Kind::Freight),
            "cm" => Some(Kind::ConfigMap),
            _ => None,
        };
        short
            .or_else(|| {
                Kind::ALL.into_iter().find(|k| {
                    let singular = k.as_str().to_ascii_lowercase();
                    lower == singular || lower == k.plural()
                })
            })
            .ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
                format!(
                    "unknown resource type {s:?}: use one of {}",
                    known.join(", ")
                )
            })
    }
}

/// Kubernetes-style object metadata; the server owns `uid`, `resourceVersion`, `generation`
/// and `creationTimestamp` and ignores what a manifest says for them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// A stored resource of any kind: envelope plus the kind's own top-level fields (`spec`,
/// `status`, or Freight's `commits`/`images`/...).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    pub api_version: String,
    pub kind: Kind,
    pub metadata: ObjectMeta,
    #[serde(flatten)]
    pub body: Map<String, Value>,
}

impl Object {
    /// The project the object belongs to ("" for a Project itself).
    pub fn project(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("")
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    pub fn spec(&self) -> &Value {
        self.body.get("spec").unwrap_or(&Value::Null)
    }

    pub fn status(&self) -> &Value {
        self.body.get("status").unwrap_or(&Value::Null)
    }

    /// The typed view of this object, for code that needs more than the envelope.
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(serde_json::to_value(self)?)
    }
}

/// `apiVersion`, `kind`, `metadata`, `spec` (and an ignored `status`): the shape of every kind
/// except Freight and Secret.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: S,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub status: Value,
}

/// A time as status fields write it: RFC 3339 in UTC with milliseconds.
pub fn timestamp(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Now, as [`timestamp`] writes it.
pub fn now() -> String {
    timestamp(std::time::SystemTime::now())
}

/// Per-kind checks that need more than the types (names, references, exclusive fields).
pub(crate) trait Check {
    /// Fills what the server derives (defaults that depend on other fields, fingerprints).
    fn normalize(&mut self) {}
    fn check(&self, errors: &mut Errors);
}

/// The outcome of reading one document through the typed gate.
pub type Decoded = Result<Object, Vec<FieldError>>;

/// Reads one document (already parsed from YAML or JSON) through its kind's typed struct:
/// unknown fields, wrong types and failed checks come back as [`FieldError`]s with paths.
/// `default_project` fills `metadata.namespace` when a namespaced document has none.
pub fn decode(document: Value, default_project: Option<&str>) -> Decoded {
    let one = |path: &str, message: String| {
        vec![FieldError {
            path: path.into(),
            message,
        }]
    };
    let api_version = document
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind_name = document
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if api_version.is_empty() {
        return Err(one(
            "apiVersion",
            "is required (e.g. kargo.akuity.io/v1alpha1)".into(),
        ));
    }
    if kind_name.is_empty() {
        return Err(one("kind", "is required (e.g. Stage)".into()));
    }
    let kind = Kind::from_manifest(api_version, kind_name).map_err(|m| {
        let path = if m.starts_with("unknown kind") {
            "kind"
        } else {
            "apiVersion"
        };
        one(path, m)
    })?;
    let mut errors = Errors::default();
    let normalized = match kind {
        Kind::Project => gate::<Manifest<ProjectSpec>>(document, &mut errors),
        Kind::ProjectConfig => gate::<Manifest<ProjectConfigSpec>>(document, &mut errors),
        Kind::Warehouse => gate::<Manifest<WarehouseSpec>>(document, &mut errors),
        Kind::Stage => gate::<Manifest<StageSpec>>(document, &mut errors),
        Kind::Promotion => gate::<Manifest<PromotionSpec>>(document, &mut errors),
        Kind::PromotionTask | Kind::ClusterPromotionTask => {
            gate::<Manifest<PromotionTaskSpec>>(document, &mut errors)
        }
        Kind::AnalysisTemplate | Kind::ClusterAnalysisTemplate => {
            gate::<Manifest<AnalysisTemplateSpec>>(document, &mut errors)
        }
        Kind::ClusterConfig => gate::<Manifest<ClusterConfigSpec>>(document, &mut errors),
        Kind::Freight => gate::<Freight>(document, &mut errors),
        Kind::Secret => gate::<Secret>(document, &mut errors),
        Kind::ConfigMap => gate::<ConfigMap>(document, &mut errors),
        Kind::Event => {
            return Err(one(
                "kind",
                "Events are recorded by Dray; they cannot be applied".into(),
            ));
        }
        Kind::AnalysisRun => {
            return Err(one(
                "kind",
                "AnalysisRuns are made by Dray when a Stage verifies; write an AnalysisTemplate and name it in the Stage's spec.verification.analysisTemplates".into(),
            ));
        }
    }?;
    let mut object: Object = serde_json::from_value(normalized).map_err(|e| {
        one(
            "",
            format!("internal: normalized document does not read back: {e}"),
        )
    })?;
    // Status is the server's: what a manifest says about it is ignored, as `kubectl apply` does.
    object.body.remove("status");
    let meta = &mut object.metadata;
    (
        meta.uid,
        meta.resource_version,
        meta.generation,
        meta.creation_timestamp,
    ) = (None, None, None, None);
    if kind.namespaced() && meta.namespace.is_none() {
        meta.namespace = default_project.map(str::to_string);
    }
    check_meta(kind, meta, &mut errors);
    if errors.is_empty() {
        Ok(object)
    } else {
        Err(errors.0)
    }
}

fn check_meta(kind: Kind, meta: &ObjectMeta, errors: &mut Errors) {
    match kind {
        // Freight names are fingerprints, filled in by the server.
        Kind::Freight => {}
        Kind::Project => errors.label("metadata.name", &meta.name),
        _ => errors.subdomain("metadata.name", &meta.name),
    }
    match (&meta.namespace, kind.namespaced()) {
        (Some(_), false) => errors.add(
            "metadata.namespace",
            format!("must not be set: a {kind} is not inside a project"),
        ),
        (None, true) => errors.add(
            "metadata.namespace",
            format!("is required: say which project this {kind} belongs to (or pass --project)"),
        ),
        (Some(ns), true) => errors.label("metadata.namespace", ns),
        (None, false) => {}
    }
    if kind == Kind::Project && [SHARED_NAMESPACE, SYSTEM_NAMESPACE].contains(&meta.name.as_str()) {
        errors.add(
            "metadata.name",
            format!(
                "{:?} is reserved: its Secrets serve {}; name the project otherwise",
                meta.name,
                if meta.name == SHARED_NAMESPACE {
                    "every project"
                } else {
                    "the ClusterConfig only"
                }
            ),
        );
    }
    if kind == Kind::ClusterConfig && meta.name != "cluster" {
        errors.add(
            "metadata.name",
            "must be \"cluster\": there is one ClusterConfig, as in Kargo",
        );
    }
    if kind == Kind::ProjectConfig
        && meta
            .namespace
            .as_deref()
            .is_some_and(|ns| ns != meta.name && !meta.name.is_empty())
    {
        errors.add(
            "metadata.name",
            format!(
                "a ProjectConfig must be named after its project {:?}",
                meta.namespace.as_deref().unwrap_or_default()
            ),
        );
    }
}

/// A serde message with the value it quotes left out: `invalid type: string "x", expected a
/// map` becomes `invalid type: a string, expected a map`.
fn without_values(message: &str) -> String {
    let Some((what, rest)) = message.split_once(": ") else {
        return message.to_string();
    };
    match rest.split_once(", expected ") {
        Some((found, expected)) => {
            let kind = found.split([' ', '`', '"']).next().unwrap_or("value");
            format!("{what}: a {kind} (value not shown), expected {expected}")
        }
        None => format!("{what} (value not shown)"),
    }
}

/// Deserializes `T` (collecting the path of the first type error), runs its checks, and returns
/// it re-serialized: defaults filled, fields in canonical order.
fn gate<T: DeserializeOwned + Serialize + Check>(
    document: Value,
    errors: &mut Errors,
) -> Result<Value, Vec<FieldError>> {
    let mut typed: T = serde_path_to_error::deserialize(document).map_err(|e| {
        let mut path = e.path().to_string();
        let message = e.inner().to_string();
        // Point at the unknown field itself, so its line and column can be shown.
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            let ends_with_field = path == field || path.ends_with(&format!(".{field}"));
            if !ends_with_field {
                path = if path == "." {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                };
            }
        }
        if path == "." {
            path.clear();
        }
        // A Secret's values are never echoed, not even when they have the wrong type.
        let message = if path.starts_with("data") || path.starts_with("stringData") {
            without_values(&message)
        } else {
            message
        };
        vec![FieldError { path, message }]
    })?;
    typed.normalize();
    typed.check(errors);
    serde_json::to_value(&typed).map_err(|e| {
        vec![FieldError {
            path: String::new(),
            message: e.to_string(),
        }]
    })
}

impl<S: Check> Check for Manifest<S> {
    fn check(&self, errors: &mut Errors) {
        self.spec.check(errors);
    }
}

/// `matchLabels` + `matchExpressions`, as Kubernetes label selectors.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelector {
    pub(crate) fn check(&self, path: &str, errors: &mut Errors) {
        for (i, r) in self.match_expressions.iter().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            match r.operator.as_str() {
                "In" | "NotIn" if r.values.is_empty() => {
                    errors.add(format!("{p}.values"), "must not be empty for In and NotIn")
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => errors.add(
                    format!("{p}.operator"),
                    format!("{other:?} is not an operator: use In, NotIn, Exists or DoesNotExist"),
                ),
            }
        }
    }

    /// Parses kubectl's selector syntax: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`,
    /// `a notin (x,y)`, joined by commas.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut selector = LabelSelector::default();
        let mut terms = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    terms.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        terms.push(&text[start..]);
        let bad = |t: &str| {
            format!(
                "{t:?} is not a label selector term: use key=value, key!=value, key, !key, key in (a,b) or key notin (a,b)"
            )
        };
        for term in terms.into_iter().map(str::trim) {
            let requirement =
                |key: &str, operator: &str, values: Vec<String>| LabelSelectorRequirement {
                    key: key.trim().to_string(),
                    operator: operator.into(),
                    values,
                };
            let set = |rest: &str| -> Option<Vec<String>> {
                let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
                Some(
                    inner
                        .split(',')
                        .map(|v| v.trim().to_string())
                        .filter(|v| !v.is_empty())
                        .collect(),
                )
            };
            if let Some((key, value)) = term.split_once("!=") {
                selector.match_expressions.push(requirement(
                    key,
                    "NotIn",
                    vec![value.trim().to_string()],
                ));
            } else if let Some((key, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                selector
                    .match_labels
                    .insert(key.trim().to_string(), value.trim().to_string());
            } else if let Some((key, rest)) = term.split_once(" notin ") {
                selector.match_expressions.push(requirement(
                    key,
                    "NotIn",
                    set(rest).ok_or_else(|| bad(term))?,
                ));
            } else if let Some((key, rest)) = term.split_once(" in ") {
                selector.match_expressions.push(requirement(
                    key,
                    "In",
                    set(rest).ok_or_else(|| bad(term))?,
                ));
            } else if let Some(key) = term.strip_prefix('!') {
                selector
                    .match_expressions
                    .push(requirement(key, "DoesNotExist", vec![]));
            } else if !term.is_empty() && !term.contains([' ', '(', ')']) {
                selector
                    .match_expressions
                    .push(requirement(term, "Exists", vec![]));
            } else {
                return Err(bad(term));
            }
        }
        Ok(selector)
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => value.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_read_like_kubectl() {
        let s =
            LabelSelector::parse("tier=web, env in (dev, uat),!legacy,team!=ops").expect("valid");
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(s.matches(&labels(&[("tier", "web"), ("env", "uat")])));
        assert!(!s.matches(&labels(&[("tier", "web"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("tier", "web"), ("env", "dev"), ("legacy", "1")])));
        assert!(!s.matches(&labels(&[("tier", "web"), ("env", "dev"), ("team", "ops")])));
        assert!(LabelSelector::parse("env in dev").is_err());
    }

    #[test]
    fn the_shared_and_system_namespaces_are_no_projects() {
        for name in [SHARED_NAMESPACE, SYSTEM_NAMESPACE] {
            let errors = decode(
                serde_json::json!({"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project",
                    "metadata": {"name": name}}),
                None,
            )
            .unwrap_err();
            assert!(errors[0].message.contains("is reserved"), "{errors:?}");
        }
    }

    #[test]
    fn kargo_fields_dray_does_not_act_on_are_accepted_and_checked() {
        let warehouse = |sub: serde_json::Value| {
            serde_json::json!({"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Warehouse",
                "metadata": {"name": "w", "namespace": "p"},
                "spec": {"freightCreationPolicy": "Manual", "subscriptions": [sub]}})
        };
        let generic = serde_json::json!({"name": "flags",
            "subscription": {"subscriptionType": "feature-flags", "config": {"env": "prod"}, "discoveryLimit": 5}});
        assert!(decode(warehouse(generic), None).is_ok());
        let errors = decode(
            warehouse(serde_json::json!({"subscription": {"subscriptionType": "x", "config": [1], "discoveryLimit": 500}})),
            None,
        )
        .unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.subscriptions[0].subscription",
                "spec.subscriptions[0].subscription.config",
                "spec.subscriptions[0].subscription.discoveryLimit"
            ],
            "{errors:?}"
        );
        let stage = serde_json::json!({"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Stage",
            "metadata": {"name": "s", "namespace": "p"},
            "spec": {"requestedFreight": [{"origin": {"kind": "Warehouse", "name": "w"}, "sources": {"direct": true}}],
                     "targets": {"selectors": [{"matchLabels": {"region": "eu"}}]}}});
        assert!(decode(stage, None).is_ok());
        let config = |policy: serde_json::Value| {
            serde_json::json!({"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "ProjectConfig",
                "metadata": {"name": "p", "namespace": "p"},
                "spec": {"promotionPolicies": [policy]}})
        };
        assert!(
            decode(
                config(serde_json::json!({"stage": "s", "autoRollback": {"onPromotion": ["Errored"], "onVerification": ["Failed", "Error"]}})),
                None
            )
            .is_ok()
        );
        let errors = decode(
            config(
                serde_json::json!({"stage": "s", "autoRollback": {"onVerification": ["Errored"]}}),
            ),
            None,
        )
        .unwrap_err();
        assert_eq!(
            errors[0].path,
            "spec.promotionPolicies[0].autoRollback.onVerification[0]"
        );
    }

    #[test]
    fn a_config_map_is_bounded_and_its_keys_are_checked() {
        let config_map = |data: serde_json::Value| {
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "p"}, "data": data})
        };
        assert!(
            decode(
                config_map(serde_json::json!({"replicas": "3", "a.b_c-d": "x"})),
                None
            )
            .is_ok()
        );
        let huge = "x".repeat(configmap::MAX_BYTES);
        let errors = decode(config_map(serde_json::json!({"big": huge})), None).unwrap_err();
        assert_eq!(errors[0].path, "data");
        assert!(
            errors[0].message.contains("at most 1048576"),
            "{}",
            errors[0].message
        );
        for key in ["../etc", "a b", ""] {
            let errors = decode(config_map(serde_json::json!({key: "v"})), None).unwrap_err();
            assert!(
                errors[0].message.contains("not a valid key"),
                "{key:?}: {errors:?}"
            );
        }
        let errors = decode(config_map(serde_json::json!({"n": 3})), None).unwrap_err();
        assert_eq!(errors[0].path, "data.n");
    }

    #[test]
    fn metric_conditions_are_checked_unless_args_fill_them_in() {
        let template = |condition: &str| {
            serde_json::json!({
                "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
                "metadata": {"name": "t", "namespace": "p"},
                "spec": {"metrics": [{"name": "m", "successCondition": condition,
                    "provider": {"web": {"url": "http://x"}}}]},
            })
        };
        assert!(decode(template("result[0] >= 0.95 && asInt(result[1]) < 3"), None).is_ok());
        assert!(decode(template("result >= {{args.threshold}}"), None).is_ok());
        let errors = decode(template("result >="), None).unwrap_err();
        assert_eq!(errors[0].path, "spec.metrics[0].successCondition");
        let errors = decode(template("len(result) > mean(result"), None).unwrap_err();
        assert_eq!(errors[0].path, "spec.metrics[0].successCondition");
        let errors = decode(template("percentile(result, 95) < 1"), None).unwrap_err();
        assert!(
            errors[0].message.contains("unknown function percentile()"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn a_secret_value_of_the_wrong_type_is_not_echoed() {
        for data in [
            serde_json::json!({"stringData": {"password": ["hunter2-value"]}}),
            serde_json::json!({"stringData": {"password": {"x": "hunter2-value"}}}),
            serde_json::json!({"data": "hunter2-value"}),
        ] {
            let mut doc = serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s", "namespace": "p"},
            });
            doc.as_object_mut()
                .expect("object")
                .extend(data.as_object().expect("object").clone());
            let errors = decode(doc, None).expect_err("wrong type");
            let text = format!("{errors:?}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("expected"), "{text}");
        }
    }

    #[test]
    fn kinds_are_found_by_what_people_type() {
        for (typed, kind) in [
            ("stages", Kind::Stage),
            ("Stage", Kind::Stage),
            ("promo", Kind::Promotion),
            ("freight", Kind::Freight),
            ("warehouse", Kind::Warehouse),
        ] {
            assert_eq!(typed.parse::<Kind>(), Ok(kind));
        }
        assert!("stagez".parse::<Kind>().unwrap_err().contains("stages"));
    }
}

/// A `name: value` pair (Stage and template `vars`, verification `args`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedValue {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

pub(crate) fn check_vars(path: &str, vars: &[NamedValue], errors: &mut Errors) {
    static VAR: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"^[a-zA-Z_]\w*$").expect("valid regex"));
    let mut seen = std::collections::HashSet::new();
    for (i, var) in vars.iter().enumerate() {
        if !VAR.is_match(&var.name) {
            errors.add(
                format!("{path}[{i}].name"),
                format!("{:?} is not a variable name: use letters, digits and _, not starting with a digit", var.name),
            );
        } else if !seen.insert(&var.name) {
            errors.add(
                format!("{path}[{i}].name"),
                format!("variable {:?} is defined twice", var.name),
            );
        }
        if let Some(value) = &var.value {
            errors.expressions(&format!("{path}[{i}].value"), value);
        }
    }
}
