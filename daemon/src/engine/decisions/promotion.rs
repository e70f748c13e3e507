//! Creating a Promotion: one Freight into one Stage, with the Stage's template inflated.
//!
//! As in Kargo, a Promotion is built from the Stage's `promotionTemplate` when it is created:
//! `task:` steps are replaced by the PromotionTask's steps (aliases `<task>::<step>`, the task's
//! vars given to each), so later edits to the Stage or the task do not change a Promotion that
//! is already queued. Its name is `<stage>.<ULID>.<first 7 of the Freight>`, which sorts by
//! creation time.

use serde_json::Map;

use super::events;
use super::{auto, freight as freight_status};
use crate::resource::status::{
    FreightReference, PromotionCollection, PromotionPhase, PromotionStatus, StageStatus,
};
use crate::resource::{
    Freight, Kind, NamedValue, Object, ObjectMeta, PromotionSpec, PromotionStep, PromotionTaskSpec,
    StageSpec,
};
use crate::rules::availability::{self, FreightFacts, origin_key};
use crate::store::{Reader, StatusMode, WriteTx};

/// Why a Promotion could not be created; nothing is written then.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// A promotion window closes the Stage now; `next_open` is when it is expected to open.
    #[error("{message}")]
    Closed {
        message: String,
        next_open: Option<std::time::SystemTime>,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The promotion windows of the project's ProjectConfig and of the ClusterConfig that select
/// `stage`, and what they say at `now`.
pub fn window_gate(
    r: &impl Reader,
    project: &str,
    stage: &Object,
    now: std::time::SystemTime,
) -> Result<crate::rules::windows::Gate, crate::store::StoreError> {
    use crate::resource::project::{ClusterConfigSpec, ProjectConfigSpec, PromotionWindow};
    let mut matching: Vec<PromotionWindow> = Vec::new();
    let selects = |w: &PromotionWindow| {
        w.stage_selector
            .as_ref()
            .is_none_or(|s| s.selects(stage.name(), &stage.metadata.labels))
    };
    if let Some(config) = r.get(Kind::ProjectConfig, project, project)?
        && let Ok(spec) = serde_json::from_value::<ProjectConfigSpec>(config.spec().clone())
    {
        matching.extend(spec.promotion_windows.into_iter().filter(|w| selects(w)));
    }
    if let Some(config) = r.get(Kind::ClusterConfig, "", "cluster")?
        && let Ok(spec) = serde_json::from_value::<ClusterConfigSpec>(config.spec().clone())
    {
        let labels = r
            .get(Kind::Project, "", project)?
            .map(|p| p.metadata.labels)
            .unwrap_or_default();
        matching.extend(spec.promotion_windows.into_iter().filter(|w| {
            selects(w)
                && w.project_selector
                    .as_ref()
                    .is_none_or(|s| s.selects(project, &labels))
        }));
    }
    // Windows were checked at apply; one that no longer reads is skipped with a warning.
    let windows: Vec<crate::rules::windows::Window> = matching
        .iter()
        .filter_map(|w| match crate::rules::windows::Window::parse(w) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(%project, window = %w.name, error = %e.message, "promotion window skipped");
                None
            }
        })
        .collect();
    Ok(crate::rules::windows::gate(
        &windows,
        chrono::DateTime::<chrono::Utc>::from(now),
    ))
}

pub const STAGE_LABEL: &str = "kargo.akuity.io/stage";
pub const ACTOR_ANNOTATION: &str = "kargo.akuity.io/create-actor";

/// The step list with tasks inflated.
fn inflate(
    tx: &impl Reader,
    project: &str,
    steps: &[PromotionStep],
) -> Result<Vec<PromotionStep>, CreateError> {
    let mut out = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let Some(task) = &step.task else {
            let mut step = step.clone();
            step.as_.get_or_insert_with(|| format!("step-{}", i + 1));
            out.push(step);
            continue;
        };
        let task_alias = step
            .as_
            .clone()
            .unwrap_or_else(|| format!("task-{}", i + 1));
        let (kind, home) = match task.kind.as_deref().unwrap_or("PromotionTask") {
            "PromotionTask" => (Kind::PromotionTask, project),
            "ClusterPromotionTask" => (Kind::ClusterPromotionTask, ""),
            other => {
                return Err(CreateError::Invalid(format!(
                    "step {task_alias}: task kind {other:?} is not PromotionTask or ClusterPromotionTask"
                )));
            }
        };
        let object = tx.get(kind, home, &task.name)?.ok_or_else(|| {
            CreateError::NotFound(if home.is_empty() {
                format!(
                    "step {task_alias}: ClusterPromotionTask {:?} not found",
                    task.name
                )
            } else {
                format!(
                    "step {task_alias}: PromotionTask {:?} not found in project {project:?}",
                    task.name
                )
            })
        })?;
        let spec: PromotionTaskSpec = serde_json::from_value(object.spec().clone())
            .map_err(|e| CreateError::Invalid(format!("PromotionTask {}: {e}", task.name)))?;
        // The task's vars: its defaults, overridden by the task step's `vars`.
        let mut vars: Vec<NamedValue> = Vec::new();
        for var in &spec.vars {
            let given = step.vars.iter().find(|v| v.name == var.name);
            let value = given.and_then(|v| v.value.clone()).or(var.value.clone());
            if value.is_none() {
                return Err(CreateError::Invalid(format!(
                    "step {task_alias}: PromotionTask {:?} needs var {:?}; set it in the step's vars",
                    task.name, var.name
                )));
            }
            vars.push(NamedValue {
                name: var.name.clone(),
                value,
            });
        }
        for extra in step
            .vars
            .iter()
            .filter(|v| !spec.vars.iter().any(|t| t.name == v.name))
        {
            vars.push(extra.clone());
        }
        for (j, inner) in spec.steps.iter().enumerate() {
            let mut inner = inner.clone();
            let alias = inner
                .as_
                .clone()
                .unwrap_or_else(|| format!("step-{}", j + 1));
            inner.as_ = Some(format!("{task_alias}::{alias}"));
            let mut all = vars.clone();
            all.extend(inner.vars);
            inner.vars = all;
            if inner.if_.is_none() {
                inner.if_.clone_from(&step.if_);
            }
            if inner.for_each.is_none() {
                inner.for_each.clone_from(&step.for_each);
            }
            out.push(inner);
        }
    }
    Ok(out)
}

/// The Promotion's annotations: who created it, and whether it holds or lifts auto-promotion.
/// A person promoting by hand pauses auto-promotion of this origin unless they chose what it
/// would have chosen (then they lift the pause).
fn annotations(
    tx: &mut WriteTx,
    project: &str,
    (stage_object, spec): (&Object, &StageSpec),
    freight: &Freight,
    actor: &str,
    now: std::time::SystemTime,
) -> Result<std::collections::BTreeMap<String, String>, CreateError> {
    let mut annotations: std::collections::BTreeMap<String, String> =
        [(ACTOR_ANNOTATION.to_string(), actor.to_string())].into();
    if actor != auto::ACTOR
        && actor != auto::ROLLBACK_ACTOR
        && auto::enabled(tx, project, stage_object)?
    {
        let mut groups = freight_status::FreightByOrigin::new(project);
        let stage = stage_object.name();
        let (candidate, _) =
            auto::candidate(tx, project, &mut groups, stage, spec, &freight.origin, now)?;
        let key = if candidate.is_some_and(|c| c.name == freight.metadata.name) {
            auto::RESUME_ANNOTATION
        } else {
            auto::HOLD_ANNOTATION
        };
        annotations.insert(key.to_string(), "true".to_string());
    }
    Ok(annotations)
}

/// The Freight collection a Promotion takes: its own Freight (`own`, one per origin), plus what
/// the Stage holds from its other origins. Reckoned when the Promotion is created, and again
/// when it starts (Promotions of several origins queued together must each carry what the ones
/// before them brought).
pub fn collection(
    stage: &Object,
    own: &[FreightReference],
) -> Result<Vec<FreightReference>, CreateError> {
    let mut collection = own.to_vec();
    let status: StageStatus = stage.status_of().map_err(crate::store::StoreError::from)?;
    if let Some(current) = status.current() {
        let taken: Vec<String> = own.iter().map(|r| origin_key(&r.origin)).collect();
        collection.extend(
            current
                .items
                .iter()
                .filter(|(origin, _)| !taken.contains(origin))
                .map(|(_, item)| item.clone()),
        );
    }
    Ok(collection)
}

/// Creates a Pending Promotion of `freight` (name or alias) into `stage`.
pub fn create(
    tx: &mut WriteTx,
    project: &str,
    stage: &str,
    freight: &str,
    actor: &str,
) -> Result<Object, CreateError> {
    create_batch(tx, project, stage, &[freight.to_string()], actor)
}

/// Stage `stage` and its spec, origin selectors resolved.
fn stage_and_spec(
    tx: &WriteTx,
    project: &str,
    stage: &str,
) -> Result<(Object, StageSpec), CreateError> {
    let stage_object = tx.get(Kind::Stage, project, stage)?.ok_or_else(|| {
        CreateError::NotFound(format!("Stage {stage:?} not found in project {project:?}"))
    })?;
    let spec: StageSpec = serde_json::from_value(stage_object.spec().clone())
        .map_err(|e| CreateError::Invalid(format!("Stage {stage}: {e}")))?;
    let spec = super::stage::resolved(tx, project, spec)?;
    Ok((stage_object, spec))
}

/// The most Freight one Promotion may carry.
pub const MAX_BATCH: usize = 1000;

/// Creates one Pending Promotion of every Freight of `batch` (names or aliases, at most one per
/// origin) into `stage`: one run of the steps, one commit, for all of them (a Dray extension:
/// the first is `spec.freight`, the others `spec.batch`). Each must be available to the Stage;
/// if one is not, nothing is created.
pub fn create_batch(
    tx: &mut WriteTx,
    project: &str,
    stage: &str,
    batch: &[String],
    actor: &str,
) -> Result<Object, CreateError> {
    if batch.is_empty() || batch.len() > MAX_BATCH {
        return Err(CreateError::Invalid(format!(
            "a Promotion takes from 1 to {MAX_BATCH} Freight, not {}",
            batch.len()
        )));
    }
    let (stage_object, spec) = stage_and_spec(tx, project, stage)?;
    if let crate::rules::windows::Gate::Closed { reason, next_open } =
        window_gate(tx, project, &stage_object, std::time::SystemTime::now())?
    {
        return Err(CreateError::Closed {
            message: format!("Stage {stage:?} is closed to promotions: {reason}"),
            next_open: next_open.map(std::time::SystemTime::from),
        });
    }
    let template = spec.promotion_template.clone().unwrap_or_default().spec;
    if template.steps.is_empty() {
        return Err(CreateError::Invalid(format!(
            "Stage {stage:?} has no promotion steps (a control-flow Stage): Freight reaches it by verification upstream, not by promotion"
        )));
    }
    let now = std::time::SystemTime::now();
    let mut all: Vec<Freight> = Vec::new();
    for wanted in batch {
        let freight = admissible(tx, project, (stage, &spec), wanted, now)?;
        if let Some(other) = all.iter().find(|f| f.origin == freight.origin) {
            return Err(CreateError::Invalid(format!(
                "Freight {} and {} both come from {}: a Promotion takes one Freight per origin",
                shown(other),
                shown(&freight),
                origin_key(&freight.origin)
            )));
        }
        all.push(freight);
    }
    let first = &all[0];
    // Holds and their lifting follow a person's choice of one Freight; a batch is the newest
    // of each origin, or what a person listed, and sets none.
    let annotations = if all.len() == 1 {
        annotations(tx, project, (&stage_object, &spec), first, actor, now)?
    } else {
        [(ACTOR_ANNOTATION.to_string(), actor.to_string())].into()
    };
    let steps = inflate(tx, project, &template.steps)?;
    let references: Vec<FreightReference> = all.iter().map(FreightReference::of).collect();
    let collection = collection(&stage_object, &references)?;

    let short = &first.metadata.name[..first.metadata.name.len().min(7)];
    let name = format!(
        "{stage}.{}.{short}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let promotion_spec = PromotionSpec {
        stage: stage.into(),
        freight: Some(first.metadata.name.clone()),
        batch: all[1..].iter().map(|f| f.metadata.name.clone()).collect(),
        origin: None,
        vars: template.vars,
        steps,
    };
    let mut body = Map::new();
    body.insert(
        "spec".into(),
        serde_json::to_value(&promotion_spec).map_err(|e| CreateError::Invalid(e.to_string()))?,
    );
    let mut object = Object {
        api_version: "kargo.akuity.io/v1alpha1".into(),
        kind: Kind::Promotion,
        metadata: ObjectMeta {
            name,
            namespace: Some(project.into()),
            labels: [(STAGE_LABEL.to_string(), stage.to_string())].into(),
            annotations,
            ..ObjectMeta::default()
        },
        body,
    };
    object.set_status(&PromotionStatus {
        phase: Some(PromotionPhase::Pending),
        freight: Some(references[0].short()),
        freight_collection: Some(PromotionCollection {
            items: collection,
            ..PromotionCollection::default()
        }),
        ..PromotionStatus::default()
    });
    let (stored, _) = tx.put(object, Some("0"), StatusMode::Replace)?;
    let what = match all.len() {
        1 => format!("Freight {}", shown(first)),
        n => format!("{n} Freight ({}, …)", shown(first)),
    };
    events::record(
        tx,
        project,
        "PromotionCreated",
        format!("Promotion of {what} into Stage {stage} created by {actor}"),
        (Kind::Promotion, stored.name()),
        events::About {
            actor: Some(actor),
            freight: Some(&first.metadata.name),
            stage: Some(stage),
            promotion: Some(stored.name()),
            ..Default::default()
        },
    )?;
    Ok(stored)
}

/// The newest Freight available to `stage` from each origin it requests (only Warehouses that
/// `origins` selects, if given) and that it does not hold already: what `dray promote
/// --all-newest` promotes in one batch. Names, in origin order.
pub fn newest_batch(
    tx: &WriteTx,
    project: &str,
    stage: &str,
    origins: Option<&crate::resource::LabelSelector>,
) -> Result<Vec<String>, CreateError> {
    let (stage_object, spec) = stage_and_spec(tx, project, stage)?;
    let labels: std::collections::HashMap<String, std::collections::BTreeMap<String, String>> =
        match origins {
            Some(_) => tx
                .list(Kind::Warehouse, Some(project), None)?
                .into_iter()
                .map(|w| (w.name().to_string(), w.metadata.labels))
                .collect(),
            None => Default::default(),
        };
    let held = stage_object
        .status_of::<StageStatus>()
        .map_err(crate::store::StoreError::from)?
        .current_names();
    let mut groups = freight_status::FreightByOrigin::new(project);
    let now = std::time::SystemTime::now();
    let mut newest = Vec::new();
    for request in &spec.requested_freight {
        if let Some(selector) = origins
            && !labels
                .get(&request.origin.name)
                .is_some_and(|l| selector.matches(l))
        {
            continue;
        }
        if let Some(f) = groups.newest_available(tx, stage, &spec, &request.origin, now)?
            && !held.contains(&f.name)
        {
            newest.push(f.name);
        }
    }
    if newest.is_empty() {
        return Err(CreateError::Invalid(format!(
            "Stage {stage:?} already holds the newest available Freight of every origin{}: nothing to promote",
            if origins.is_some() { " selected" } else { "" }
        )));
    }
    Ok(newest)
}

fn shown(freight: &Freight) -> &str {
    freight.alias.as_deref().unwrap_or(&freight.metadata.name)
}

/// Freight `wanted` (name or alias), if Stage `stage` (its resolved `spec`) requests its origin
/// and may take it now.
fn admissible(
    tx: &WriteTx,
    project: &str,
    (stage, spec): (&str, &StageSpec),
    wanted: &str,
    now: std::time::SystemTime,
) -> Result<Freight, CreateError> {
    let freight_object = crate::resource::freight::find(tx, project, wanted)?.ok_or_else(|| {
        CreateError::NotFound(format!(
            "no Freight named or aliased {wanted:?} in project {project:?} (list them with `dray get freight -p {project}`)"
        ))
    })?;
    let freight: Freight = freight_object
        .typed()
        .map_err(|e| CreateError::Invalid(format!("Freight {wanted}: {e}")))?;
    if !spec
        .requested_freight
        .iter()
        .any(|r| r.origin == freight.origin)
    {
        let named: Vec<String> = spec
            .requested_freight
            .iter()
            .map(|r| format!("{} {:?}", r.origin.kind, r.origin.name))
            .collect();
        return Err(CreateError::Invalid(format!(
            "Stage {stage:?} does not request Freight from {} {:?} ({})",
            freight.origin.kind,
            freight.origin.name,
            if named.is_empty() {
                "its requestedFreight selects no Warehouse now".to_string()
            } else {
                format!("its requestedFreight names {}", named.join(", "))
            }
        )));
    }
    let facts = FreightFacts::of(&freight_object).map_err(crate::store::StoreError::from)?;
    let verdict = availability::availability(stage, spec, &facts, now);
    if !verdict.available {
        let shown = shown(&freight);
        return Err(CreateError::Invalid(format!(
            "Freight {shown} is not available to Stage {stage:?}: {} (see `dray explain freight {shown} --stage {stage} -p {project}`; `dray approve` lets it in without verification)",
            verdict.reasons.join("; ")
        )));
    }
    Ok(freight)
}

/// Ends a Pending Promotion without running it (`Aborted` by a person, `Discarded` by the
/// queue policy), with the event; returns false when it was not Pending (nothing changes).
/// The status message and the event say `<phase>: <why>`.
pub fn end_pending(
    tx: &mut WriteTx,
    project: &str,
    name: &str,
    phase: PromotionPhase,
    why: &str,
) -> Result<bool, crate::store::StoreError> {
    let Some(mut o) = tx.get(Kind::Promotion, project, name)? else {
        return Ok(false);
    };
    let mut status: PromotionStatus = o.status_of()?;
    if status.phase() != PromotionPhase::Pending {
        return Ok(false);
    }
    let said = format!("{}: {why}", phase.as_str().to_lowercase());
    status.phase = Some(phase);
    status.message = Some(said.clone());
    status.finished_at = Some(crate::resource::now());
    o.set_status(&status);
    let spec: PromotionSpec = serde_json::from_value(o.spec().clone()).unwrap_or_default();
    let freight = spec.freight.unwrap_or_default();
    tx.put(o, None, StatusMode::Replace)?;
    events::record(
        tx,
        project,
        &format!("Promotion{phase}"),
        format!("Promotion into Stage {} {said}", spec.stage),
        (Kind::Promotion, name),
        events::About {
            freight: Some(&freight),
            stage: Some(&spec.stage),
            promotion: Some(name),
            ..Default::default()
        },
    )?;
    Ok(true)
}
