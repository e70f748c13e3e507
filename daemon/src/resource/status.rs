//! The status of every kind Dray writes, as Rust types.
//!
//! Status is the server's: nothing a manifest says about it is kept ([`super::decode`] drops
//! it), and everything in it is written by Dray through these types. The wire names are
//! Kargo's (camelCase; Argo Rollouts' for an AnalysisRun). Each type keeps the fields it does
//! not know in `other` (`#[serde(flatten)]`), so a status written by a newer Dray, or by Kargo
//! when the store is Kubernetes, survives a read-modify-write by this one.
//!
//! Read a status with [`Object::status_of`] and write it back with [`Object::set_status`]; the
//! phase enums own their rules ([`PromotionPhase::is_terminal`], [`AnalysisPhase::rank`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::freight::{Chart, Freight, GitCommit, Image};
use super::{FreightOrigin, Kind, Object};

/// A stored status (or spec) that does not read as its type: a bug, or a store written by
/// something else. Says which object, so it can be found and fixed.
#[derive(Debug, thiserror::Error)]
#[error("the {part} of {kind} {project}/{name} is unreadable: {source}")]
pub struct StatusError {
    /// `status` or `spec`.
    pub part: &'static str,
    pub kind: Kind,
    pub project: String,
    pub name: String,
    #[source]
    pub source: serde_json::Error,
}

impl Object {
    /// The typed status; an object with no status yet reads as `T::default()`.
    pub fn status_of<T: DeserializeOwned + Default>(&self) -> Result<T, StatusError> {
        match self.body.get("status") {
            None | Some(Value::Null) => Ok(T::default()),
            Some(status) => T::deserialize(status).map_err(|source| StatusError {
                part: "status",
                kind: self.kind,
                project: self.project().to_string(),
                name: self.name().to_string(),
                source,
            }),
        }
    }

    /// The typed spec of a stored object (checked when it was applied); one with no spec reads
    /// as `T::default()`.
    pub fn spec_of<T: DeserializeOwned + Default>(&self) -> Result<T, StatusError> {
        match self.body.get("spec") {
            None | Some(Value::Null) => Ok(T::default()),
            Some(spec) => T::deserialize(spec).map_err(|source| StatusError {
                part: "spec",
                kind: self.kind,
                project: self.project().to_string(),
                name: self.name().to_string(),
                source,
            }),
        }
    }

    /// Replaces the status with `status`.
    pub fn set_status<T: Serialize>(&mut self, status: &T) {
        let value = serde_json::to_value(status).expect("a status type serializes");
        self.body.insert("status".into(), value);
    }
}

/// Whether a Promotion or an AnalysisRun has ended; other kinds do not run, and have not.
pub fn has_ended(object: &Object) -> Result<bool, StatusError> {
    Ok(match object.kind {
        Kind::Promotion => object.status_of::<PromotionStatus>()?.phase().is_terminal(),
        Kind::AnalysisRun => object
            .status_of::<AnalysisRunStatus>()?
            .phase()
            .is_terminal(),
        _ => false,
    })
}

/// Defines a phase enum whose wire form is the variant's name.
macro_rules! phases {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

phases! {
    /// Where a Promotion stands (Kargo's phases, plus `Discarded` for the queue policy
    /// `Supersede`).
    PromotionPhase {
        Pending,
        Running,
        Succeeded,
        Failed,
        Errored,
        Aborted,
        /// A newer Promotion of the same Stage superseded it before it started.
        Discarded,
    }
}

impl PromotionPhase {
    /// Whether the Promotion has ended: it will never run a step again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, PromotionPhase::Pending | PromotionPhase::Running)
    }
}

phases! {
    /// Where one step of a Promotion stands (`stepExecutionMetadata[].status`).
    StepStatus {
        Running,
        Succeeded,
        Failed,
        Errored,
        Skipped,
        Aborted,
    }
}

impl StepStatus {
    /// Whether the step failed (the kind that counts for `failure()` and the Promotion's phase
    /// unless it may continue on error).
    pub fn is_failure(self) -> bool {
        matches!(self, StepStatus::Failed | StepStatus::Errored)
    }
}

phases! {
    /// Where an AnalysisRun, one of its metrics, or one measurement stands (Argo Rollouts'
    /// phases, plus `Aborted` for a verification stopped by a person).
    AnalysisPhase {
        Pending,
        Running,
        Successful,
        Failed,
        Error,
        Inconclusive,
        Aborted,
    }
}

impl AnalysisPhase {
    /// Whether the run (or metric) has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, AnalysisPhase::Pending | AnalysisPhase::Running)
    }

    /// How bad an ended phase is: a run ends as its worst metric (Argo's order: Successful <
    /// Inconclusive < Error < Failed).
    pub fn rank(self) -> u8 {
        match self {
            AnalysisPhase::Successful => 0,
            AnalysisPhase::Inconclusive => 1,
            AnalysisPhase::Error => 2,
            _ => 3,
        }
    }
}

impl From<crate::runtime::MeasurementPhase> for AnalysisPhase {
    fn from(p: crate::runtime::MeasurementPhase) -> AnalysisPhase {
        use crate::runtime::MeasurementPhase as M;
        match p {
            M::Successful => AnalysisPhase::Successful,
            M::Failed => AnalysisPhase::Failed,
            M::Inconclusive => AnalysisPhase::Inconclusive,
            M::Error => AnalysisPhase::Error,
        }
    }
}

/// One Freight as a Promotion or a Stage refers to it (Kargo's `FreightReference`, with the
/// alias).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FreightReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default)]
    pub origin: FreightOrigin,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<GitCommit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<Chart>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl FreightReference {
    /// The whole reference: name, alias, origin and artifacts.
    pub fn of(f: &Freight) -> FreightReference {
        FreightReference {
            name: f.metadata.name.clone(),
            alias: f.alias.clone(),
            origin: f.origin.clone(),
            commits: f.commits.clone(),
            images: f.images.clone(),
            charts: f.charts.clone(),
            other: Map::new(),
        }
    }

    /// Name, alias and origin only (a Promotion's `status.freight`).
    pub fn short(&self) -> FreightReference {
        FreightReference {
            name: self.name.clone(),
            alias: self.alias.clone(),
            origin: self.origin.clone(),
            ..FreightReference::default()
        }
    }

    /// The alias if there is one, else the name: what messages show.
    pub fn shown(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

/// A Promotion's Freight collection: the promoted Freight first, then what the Stage holds
/// from its other origins.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PromotionCollection {
    #[serde(default)]
    pub items: Vec<FreightReference>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `status` of a Promotion: the whole truth of a run, written after every step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PromotionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PromotionPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freight: Option<FreightReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freight_collection: Option<PromotionCollection>,
    /// The index of the step that runs (or runs next).
    #[serde(default)]
    pub current_step: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// One entry per step that has started, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_execution_metadata: Vec<StepExecution>,
    /// The steps' outputs by alias (and a task's by the task's alias).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub state: Map<String, Value>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl PromotionStatus {
    /// The phase; a Promotion with none yet is Pending.
    pub fn phase(&self) -> PromotionPhase {
        self.phase.unwrap_or(PromotionPhase::Pending)
    }

    /// The Freight of the collection (none when the status has none).
    pub fn items(&self) -> &[FreightReference] {
        self.freight_collection
            .as_ref()
            .map_or(&[], |c| c.items.as_slice())
    }
}

/// One step of a Promotion (`stepExecutionMetadata[]`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepExecution {
    pub alias: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StepStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Consecutive failed calls so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub error_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_on_error: Option<bool>,
    /// For a plugin named by reference: the digest it ran (`oci://HOST/REPO:TAG@sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// A step with `forEach`: its items and the outputs of those done so far (Dray).
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_progress: Option<LoopProgress>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// How far a looping step has come: the items `forEach` gave when it started (kept, so that a
/// resumed run goes on over the same list), and the outputs of each item done, in order.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoopProgress {
    pub items: Vec<Value>,
    #[serde(default)]
    pub outputs: Vec<Value>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A Promotion as a Stage remembers it (`currentPromotion`, `lastPromotion`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PromotionReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freight: Option<FreightReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PromotionOutcome>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// How a Stage's last Promotion ended.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PromotionOutcome {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PromotionPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `status` of a Stage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    /// What the Stage held, newest first; the first entry is what it holds now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freight_history: Vec<FreightCollection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_promotion: Option<PromotionReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_promotion: Option<PromotionReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_enabled: Option<bool>,
    /// Origin key → the hold a person put on auto-promotion by promoting other Freight.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auto_promotion_holds: BTreeMap<String, AutoPromotionHold>,
    /// What steps recorded with `set-metadata` (for `stageMetadata()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// The plugins from registries its last Promotion ran: reference as written → digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugins: BTreeMap<String, String>,
    /// What its last successful Promotion asked to be watched (Dray keeps them on the Stage;
    /// Kargo on the Promotion).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheck>,
    /// How those are, kept current from a watch (none: nothing to watch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<StageHealth>,
    /// What last made auto-rollback act (an AnalysisRun or a Promotion), so it acts once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_auto_rollback: Option<String>,
    /// Every origin it requests, its `originSelector`s resolved against the Warehouses now;
    /// kept current as Warehouses come, go and change labels (Dray; absent for a Stage with
    /// no selector).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selected_origins: Vec<FreightOrigin>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One health check a step registered: the kind of step and what it needs to look at.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub uses: String,
    #[serde(default)]
    pub input: Value,
}

/// Kargo's health states, from best to worst (`Ord` follows).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum HealthState {
    Healthy,
    #[default]
    Unknown,
    Progressing,
    Unhealthy,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "Healthy",
            HealthState::Unknown => "Unknown",
            HealthState::Progressing => "Progressing",
            HealthState::Unhealthy => "Unhealthy",
        }
    }
}

/// A Stage's `status.health`, as Kargo's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageHealth {
    pub status: HealthState,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<String>,
    /// What the checks saw (`applicationStatuses` for Argo CD apps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
}

impl StageStatus {
    /// What the Stage holds now.
    pub fn current(&self) -> Option<&FreightCollection> {
        self.freight_history.first()
    }

    /// The names of the Freight the Stage holds now, sorted.
    pub fn current_names(&self) -> Vec<String> {
        self.current()
            .map(FreightCollection::names)
            .unwrap_or_default()
    }

    /// The verification of what the Stage holds now, if one was started.
    pub fn current_verification(&self) -> Option<&VerificationInfo> {
        self.current()?.verification_history.first()
    }

    /// The AnalysisRun verifying the Stage now, if one is running.
    pub fn running_verification(&self) -> Option<&str> {
        let v = self.current_verification()?;
        (!v.phase().is_terminal()).then_some(v.id.as_str())
    }
}

/// One entry of a Stage's `freightHistory`: the Freight it held together, by origin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FreightCollection {
    /// Kargo's id: sha1 of the sorted Freight names.
    pub id: String,
    /// Origin key (`Warehouse/name`) → the Freight from it.
    #[serde(default)]
    pub items: BTreeMap<String, FreightReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<String>,
    /// Newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verification_history: Vec<VerificationInfo>,
    /// Dray: the Stage's health checks must find it Healthy before it is verified (Kargo's
    /// rule: verification waits until the Stage is healthy).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_health: bool,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl FreightCollection {
    /// The Freight names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.items.values().map(|i| i.name.clone()).collect();
        names.sort();
        names
    }
}

/// One verification of a Freight collection (`verificationHistory[]`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerificationInfo {
    /// The AnalysisRun's name.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AnalysisPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_run: Option<AnalysisRunReference>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl VerificationInfo {
    pub fn phase(&self) -> AnalysisPhase {
        self.phase.unwrap_or(AnalysisPhase::Pending)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunReference {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AnalysisPhase>,
}

/// A person's hold on auto-promotion of one origin into a Stage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoPromotionHold {
    pub freight_name: String,
    #[serde(default)]
    pub origin: FreightOrigin,
    pub promotion_name: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `status` of a Freight: where it is, where it was verified, what it was approved for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FreightStatus {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub currently_in: BTreeMap<String, CurrentStage>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub verified_in: BTreeMap<String, VerifiedStage>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub approved_for: BTreeMap<String, ApprovedStage>,
    /// What steps recorded with `set-metadata` (for `freightMetadata()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CurrentStage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedStage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<String>,
    /// The longest continuous stay after verification, as Go writes durations (`1h2m3s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_soak: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApprovedStage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<String>,
}

/// `status` of an AnalysisRun: the whole truth of a verification, written after every
/// measurement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AnalysisPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_results: Vec<MetricResult>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl AnalysisRunStatus {
    pub fn phase(&self) -> AnalysisPhase {
        self.phase.unwrap_or(AnalysisPhase::Pending)
    }
}

/// One metric of a run: its tally and its latest measurements.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    pub name: String,
    pub phase: AnalysisPhase,
    #[serde(default)]
    pub count: i64,
    #[serde(default)]
    pub successful: i64,
    #[serde(default)]
    pub failed: i64,
    #[serde(default)]
    pub inconclusive: i64,
    #[serde(default)]
    pub error: i64,
    #[serde(default)]
    pub consecutive_error: i64,
    /// Oldest first, at most the metric's retention.
    #[serde(default)]
    pub measurements: Vec<Measurement>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl MetricResult {
    /// A metric that has not been measured yet.
    pub fn new(name: &str, dry_run: bool) -> MetricResult {
        MetricResult {
            name: name.to_string(),
            phase: AnalysisPhase::Running,
            count: 0,
            successful: 0,
            failed: 0,
            inconclusive: 0,
            error: 0,
            consecutive_error: 0,
            measurements: Vec::new(),
            dry_run,
            message: None,
            other: Map::new(),
        }
    }
}

/// One measurement of a metric.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    pub phase: AnalysisPhase,
    #[serde(default)]
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `status` of a Warehouse: what discovery found last.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WarehouseStatus {
    /// Per subscription, the artifacts found (newest first), as `dray get warehouse` shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovered_artifacts: Option<Value>,
    /// Why the last discovery found less than it should, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(
        default,
        rename = "lastFreightID",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_freight_id: Option<String>,
    /// The refresh token of the last discovery asked for, once it has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_refresh: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<u64>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A status read into its type and written back is the same JSON, including fields the
    /// type does not know.
    fn round_trips<T: Serialize + DeserializeOwned>(status: Value) {
        let typed: T = serde_json::from_value(status.clone()).expect("reads");
        assert_eq!(serde_json::to_value(&typed).expect("writes"), status);
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        round_trips::<PromotionStatus>(json!({
            "phase": "Running", "currentStep": 1, "health": {"status": "Healthy"},
            "stepExecutionMetadata": [{"alias": "a", "status": "Succeeded", "future": 1}],
        }));
        round_trips::<StageStatus>(json!({
            "freightHistory": [{"id": "x", "items": {}, "kargoOnly": true}],
            "health": {"status": "Unknown"},
        }));
    }

    #[test]
    fn phases_know_when_they_end() {
        assert!(!PromotionPhase::Running.is_terminal());
        assert!(PromotionPhase::Discarded.is_terminal());
        assert!(!AnalysisPhase::Pending.is_terminal());
        assert!(AnalysisPhase::Inconclusive.is_terminal());
        assert!(AnalysisPhase::Failed.rank() > AnalysisPhase::Error.rank());
        let none = Object {
            api_version: "v1".into(),
            kind: Kind::Promotion,
            metadata: Default::default(),
            body: Map::new(),
        };
        let status: PromotionStatus = none.status_of().expect("no status reads as default");
        assert_eq!(status.phase(), PromotionPhase::Pending);
    }

    #[test]
    fn an_unreadable_status_names_its_object() {
        let mut o = Object {
            api_version: "v1".into(),
            kind: Kind::Stage,
            metadata: super::super::ObjectMeta {
                name: "uat".into(),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            body: Map::new(),
        };
        o.body
            .insert("status".into(), json!({"freightHistory": "nope"}));
        let e = o.status_of::<StageStatus>().expect_err("unreadable");
        assert!(e.to_string().contains("Stage shop/uat"), "{e}");
    }
}
