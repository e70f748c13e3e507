//! Verifications as transactions: the AnalysisRun made for what a Stage now holds, a
//! verification started again by a person, and a run's end recorded on its Stage and Freight.
//!
//! A verification is an `AnalysisRun` (Argo Rollouts' schema) made from every template the
//! Stage names, with `{{args.NAME}}` filled from the Stage's `verification.args` (which may hold
//! `${{ }}` expressions) over the templates' defaults. How it decides is in
//! [`crate::rules::analysis`]; how it is measured, in `engine::run::verification`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::{events, freight};
use crate::resource::analysis::{AnalysisRunSpec, Argument, Metric};
use crate::resource::status::{
    AnalysisPhase, AnalysisRunReference, AnalysisRunStatus, FreightReference, StageStatus,
    VerificationInfo,
};
use crate::resource::{AnalysisTemplateSpec, Kind, Object, ObjectMeta, StageSpec};
use crate::rules::analysis::substitute;
use crate::rules::availability::time_text;
use crate::rules::expr::{self, FreightView, Scope};
use crate::store::{Reader, StatusMode, StoreError, WriteTx};

pub const STAGE_LABEL: &str = "kargo.akuity.io/stage";
pub const COLLECTION_LABEL: &str = "kargo.akuity.io/freight-collection";
pub const PROMOTION_LABEL: &str = "kargo.akuity.io/promotion";

/// How many verifications a `freightHistory` entry keeps.
const VERIFICATION_HISTORY: usize = 10;

/// Whether a Stage verifies with templates (otherwise a successful Promotion verifies).
pub fn configured(spec: &StageSpec) -> bool {
    spec.verification
        .as_ref()
        .is_some_and(|v| !v.analysis_templates.is_empty())
}

/// The metrics, declared args, dry-run and retention rules of the Stage's templates.
fn templates(
    r: &impl Reader,
    project: &str,
    spec: &StageSpec,
) -> Result<(AnalysisRunSpec, BTreeMap<String, Argument>), String> {
    let mut run = AnalysisRunSpec::default();
    let mut declared: BTreeMap<String, Argument> = BTreeMap::new();
    let verification = spec.verification.clone().unwrap_or_default();
    for reference in &verification.analysis_templates {
        let (kind, home) = match reference.kind.as_deref().unwrap_or("AnalysisTemplate") {
            "AnalysisTemplate" => (Kind::AnalysisTemplate, project),
            "ClusterAnalysisTemplate" => (Kind::ClusterAnalysisTemplate, ""),
            other => {
                return Err(format!(
                    "verification names a {other} {:?}; use AnalysisTemplate or ClusterAnalysisTemplate",
                    reference.name
                ));
            }
        };
        let template = r
            .get(kind, home, &reference.name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                let place = if home.is_empty() {
                    String::new()
                } else {
                    format!(" in project {project:?}")
                };
                format!(
                    "{kind} {:?} not found{place} (apply it, or fix the Stage's spec.verification.analysisTemplates)",
                    reference.name
                )
            })?;
        let t: AnalysisTemplateSpec = serde_json::from_value(template.spec().clone())
            .map_err(|e| format!("AnalysisTemplate {}: {e}", reference.name))?;
        for metric in t.metrics {
            if run.metrics.iter().any(|m| m.name == metric.name) {
                return Err(format!(
                    "metric {:?} is defined by two of the Stage's AnalysisTemplates",
                    metric.name
                ));
            }
            run.metrics.push(metric);
        }
        for arg in t.args {
            declared.entry(arg.name.clone()).or_insert(arg);
        }
        run.dry_run.extend(t.dry_run);
        run.measurement_retention.extend(t.measurement_retention);
    }
    Ok((run, declared))
}

/// The Stage's `verification.args`, evaluated with expressions over ctx, the Stage's vars and
/// the Freight.
fn stage_args(
    project: &str,
    stage: &str,
    spec: &StageSpec,
    freight: &[FreightReference],
) -> Result<BTreeMap<String, String>, String> {
    let values: Vec<Value> = freight
        .iter()
        .map(|f| serde_json::to_value(f).unwrap_or_default())
        .collect();
    let views: Vec<FreightView> = values.iter().map(FreightView::of).collect();
    let scope = |vars: &Map<String, Value>| Scope {
        variables: json!({"ctx": {"project": project, "stage": stage}, "vars": vars})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        freight: &views,
        ..Scope::default()
    };
    let mut vars = Map::new();
    for var in &spec.vars {
        let value = expr::eval_string(var.value.as_deref().unwrap_or_default(), &scope(&vars))
            .map_err(|e| format!("Stage var {:?}: {e}", var.name))?;
        vars.insert(var.name.clone(), value);
    }
    let mut values = BTreeMap::new();
    let verification = spec.verification.clone().unwrap_or_default();
    for arg in &verification.args {
        let value = expr::eval_string(arg.value.as_deref().unwrap_or_default(), &scope(&vars))
            .map_err(|e| format!("verification arg {:?}: {e}", arg.name))?;
        let text = match value {
            Value::String(s) => s,
            other => other.to_string(),
        };
        values.insert(arg.name.clone(), text);
    }
    Ok(values)
}

/// The run's spec from the Stage's templates, or why it cannot be made.
fn build_spec(
    r: &impl Reader,
    project: &str,
    stage: &str,
    spec: &StageSpec,
    freight: &[FreightReference],
) -> Result<AnalysisRunSpec, String> {
    let (mut run, declared) = templates(r, project, spec)?;
    let mut values = stage_args(project, stage, spec, freight)?;
    if let Some(name) = values.keys().find(|n| !declared.contains_key(*n)) {
        return Err(format!(
            "verification arg {name:?} is not declared by the Stage's AnalysisTemplates (they declare {})",
            declared.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    for (name, arg) in &declared {
        let value = match (values.get(name), &arg.value, &arg.value_from) {
            (Some(v), _, _) => Some(v.clone()),
            (None, Some(v), _) => Some(v.clone()),
            // Secret values are read at each measurement, never stored in the run.
            (None, None, Some(_)) => None,
            (None, None, None) => {
                return Err(format!(
                    "AnalysisTemplate arg {name:?} has no value; give it one in the Stage's spec.verification.args"
                ));
            }
        };
        let value_from = if value.is_none() {
            arg.value_from.clone()
        } else {
            None
        };
        if let Some(v) = &value {
            values.insert(name.clone(), v.clone());
        }
        run.args.push(Argument {
            name: name.clone(),
            value,
            value_from,
        });
    }
    run.metrics = run
        .metrics
        .into_iter()
        .map(|m| {
            let mut v = serde_json::to_value(&m).map_err(|e| e.to_string())?;
            substitute(&mut v, &values);
            serde_json::from_value::<Metric>(v)
                .map_err(|e| format!("metric {:?} after its args were filled: {e}", m.name))
        })
        .collect::<Result<_, _>>()?;
    run.freight = freight.first().map(|f| f.name.clone()).unwrap_or_default();
    run.freight_collection = freight.to_vec();
    Ok(run)
}

/// Creates the AnalysisRun for the Freight collection a Stage now holds (inside the caller's
/// transaction) and returns the `verificationHistory` record for it. A run that cannot be
/// built (a missing template, an arg without value) is stored as an Error with the reason.
pub struct NewRun<'a> {
    pub project: &'a str,
    pub stage: &'a str,
    pub spec: &'a StageSpec,
    pub freight: &'a [FreightReference],
    pub collection_id: &'a str,
    pub promotion: Option<&'a str>,
    pub actor: &'a str,
}

impl NewRun<'_> {
    pub fn start(&self, tx: &mut WriteTx, now: SystemTime) -> Result<VerificationInfo, StoreError> {
        let name = format!(
            "{}.{}",
            self.stage,
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let verification = self.spec.verification.clone().unwrap_or_default();
        let metadata = verification.analysis_run_metadata.unwrap_or_default();
        let mut labels = metadata.labels.clone();
        labels.insert(STAGE_LABEL.into(), self.stage.into());
        labels.insert(COLLECTION_LABEL.into(), self.collection_id.into());
        if let Some(p) = self.promotion {
            labels.insert(PROMOTION_LABEL.into(), p.into());
        }
        let started = Some(time_text(now));
        let (run_spec, status) =
            match build_spec(tx, self.project, self.stage, self.spec, self.freight) {
                Ok(s) => (
                    s,
                    AnalysisRunStatus {
                        phase: Some(AnalysisPhase::Pending),
                        started_at: started,
                        ..AnalysisRunStatus::default()
                    },
                ),
                Err(message) => (
                    AnalysisRunSpec {
                        freight_collection: self.freight.to_vec(),
                        ..AnalysisRunSpec::default()
                    },
                    AnalysisRunStatus {
                        phase: Some(AnalysisPhase::Error),
                        message: Some(message),
                        completed_at: started.clone(),
                        started_at: started,
                        ..AnalysisRunStatus::default()
                    },
                ),
            };
        let mut object = Object {
            api_version: crate::resource::ROLLOUTS_API_VERSION.into(),
            kind: Kind::AnalysisRun,
            metadata: ObjectMeta {
                name: name.clone(),
                namespace: Some(self.project.into()),
                labels,
                annotations: metadata.annotations.clone(),
                ..ObjectMeta::default()
            },
            body: Map::new(),
        };
        object.body.insert(
            "spec".into(),
            serde_json::to_value(&run_spec).expect("a run spec serializes"),
        );
        object.set_status(&status);
        tx.put(object, Some("0"), StatusMode::Replace)?;
        Ok(VerificationInfo {
            id: name.clone(),
            actor: Some(self.actor.to_string()),
            start_time: Some(time_text(now)),
            phase: status.phase,
            message: status.message,
            analysis_run: Some(AnalysisRunReference {
                namespace: self.project.into(),
                name,
                phase: status.phase,
            }),
            ..VerificationInfo::default()
        })
    }
}

/// Starts a verification of what Stage `stage` holds now (`dray verify stage`). Fails when the
/// Stage holds nothing, has no verification, or is verifying already.
pub fn reverify(
    tx: &mut WriteTx,
    project: &str,
    stage: &str,
    actor: &str,
) -> Result<Result<String, String>, StoreError> {
    let Some(mut object) = tx.get(Kind::Stage, project, stage)? else {
        return Ok(Err(format!(
            "Stage {stage:?} not found in project {project:?}"
        )));
    };
    let Ok(spec) = serde_json::from_value::<StageSpec>(object.spec().clone()) else {
        return Ok(Err(format!("Stage {stage:?} has an unreadable spec")));
    };
    if !configured(&spec) {
        return Ok(Err(format!(
            "Stage {stage:?} has no spec.verification.analysisTemplates; its Freight is verified when a promotion succeeds"
        )));
    }
    let mut status: StageStatus = object.status_of()?;
    if let Some(running) = status.running_verification() {
        return Ok(Err(format!(
            "Stage {stage:?} is verifying already ({running}); abort it first with `dray verify stage {stage} --abort`"
        )));
    }
    let Some(current) = status.freight_history.first_mut() else {
        return Ok(Err(format!(
            "Stage {stage:?} holds no Freight yet; promote some first"
        )));
    };
    let items: Vec<FreightReference> = current.items.values().cloned().collect();
    let record = NewRun {
        project,
        stage,
        spec: &spec,
        freight: &items,
        collection_id: &current.id,
        promotion: None,
        actor,
    }
    .start(tx, SystemTime::now())?;
    let run = record.id.clone();
    current.verification_history.insert(0, record);
    current.verification_history.truncate(VERIFICATION_HISTORY);
    object.set_status(&status);
    tx.put(object, None, StatusMode::Replace)?;
    Ok(Ok(run))
}

/// Records a run's end (its status written as `status`): the Stage's verification record,
/// `verifiedIn` on every Freight of the collection when Successful, and an event.
pub fn record_end(
    tx: &mut WriteTx,
    run: &Object,
    status: &AnalysisRunStatus,
    now: SystemTime,
) -> Result<(), StoreError> {
    let (project, name) = (run.project(), run.name());
    let label = |key: &str| run.metadata.labels.get(key).cloned().unwrap_or_default();
    let (stage_name, collection) = (label(STAGE_LABEL), label(COLLECTION_LABEL));
    let phase = status.phase();
    if let Some(mut o) = tx.get(Kind::AnalysisRun, project, name)? {
        o.set_status(status);
        tx.put(o, None, StatusMode::Replace)?;
    }
    let Some(mut stage) = tx.get(Kind::Stage, project, &stage_name)? else {
        return Ok(());
    };
    let mut stage_status: StageStatus = stage.status_of()?;
    for entry in stage_status
        .freight_history
        .iter_mut()
        .filter(|e| e.id == collection)
    {
        for record in entry
            .verification_history
            .iter_mut()
            .filter(|r| r.id == name)
        {
            record.phase = Some(phase);
            record.message.clone_from(&status.message);
            record.finish_time.clone_from(&status.completed_at);
            if let Some(reference) = &mut record.analysis_run {
                reference.phase = Some(phase);
            }
        }
    }
    stage.set_status(&stage_status);
    tx.put(stage, None, StatusMode::Replace)?;
    let spec: AnalysisRunSpec = serde_json::from_value(run.spec().clone()).unwrap_or_default();
    let items: Vec<String> = spec
        .freight_collection
        .iter()
        .map(|f| f.name.clone())
        .collect();
    if phase == AnalysisPhase::Successful {
        freight::record_verified(tx, project, &stage_name, &items, now)?;
    }
    let reason = match phase {
        AnalysisPhase::Successful => "Succeeded",
        AnalysisPhase::Error => "Errored",
        other => other.as_str(),
    };
    events::record(
        tx,
        project,
        &format!("FreightVerification{reason}"),
        format!(
            "verification in Stage {stage_name}: {}{}",
            reason.to_lowercase(),
            status
                .message
                .as_deref()
                .filter(|m| !m.is_empty())
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        ),
        (Kind::AnalysisRun, name),
        events::About {
            freight: items.first().map(String::as_str),
            stage: Some(&stage_name),
            analysis_run: Some(name),
            ..Default::default()
        },
    )?;
    Ok(())
}
