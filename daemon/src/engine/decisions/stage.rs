//! A Promotion's start and end on its Stage, each inside one transaction.
//!
//! When a Promotion starts, the Stage shows it as `currentPromotion`. When it ends, the Stage
//! records it as `lastPromotion`; when it succeeded, the Stage holds its Freight collection (a
//! new `freightHistory` entry), the Freight's `currentlyIn` moves, auto-promotion holds are set
//! or lifted, and either a verification starts or (with none configured) the Freight is
//! `verifiedIn` the Stage at once. A Promotion that registered health checks (Argo CD apps)
//! defers that until the Stage is Healthy ([`healthy`]), as Kargo verifies only a healthy Stage.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::analysis::{self, NewRun};
use super::{auto, events, freight, promotion};
use crate::resource::status::{
    AutoPromotionHold, FreightCollection, HealthCheck, HealthState, PromotionOutcome,
    PromotionPhase, PromotionReference, PromotionStatus, StageHealth, StageStatus,
};
use crate::resource::{Kind, Object, StageSpec};
use crate::rules::availability::{collection_id, origin_key, time_text};
use crate::store::{Reader, StatusMode, StoreError, WriteTx};

/// The project's Warehouses, for [`resolve`]: read only when `spec` selects origins by label.
pub fn warehouses_for(
    r: &impl Reader,
    project: &str,
    spec: &StageSpec,
) -> Result<Vec<Object>, StoreError> {
    if spec.selects_origins() {
        r.list(Kind::Warehouse, Some(project), None)
    } else {
        Ok(Vec::new())
    }
}

/// Resolves `spec`'s origin selectors against `warehouses` (the project's).
pub fn resolve(spec: &mut StageSpec, warehouses: &[Object]) {
    spec.resolve(warehouses.iter().map(|w| crate::resource::Labelled {
        name: w.name(),
        labels: &w.metadata.labels,
    }));
}

/// `spec` with its origin selectors resolved against the project's Warehouses now.
pub fn resolved(
    r: &impl Reader,
    project: &str,
    mut spec: StageSpec,
) -> Result<StageSpec, StoreError> {
    let warehouses = warehouses_for(r, project, &spec)?;
    resolve(&mut spec, &warehouses);
    Ok(spec)
}

/// How many Freight collections a Stage's `freightHistory` keeps.
const FREIGHT_HISTORY: usize = 10;

/// Marks Stage `stage` as promoting with Promotion `promotion` (`status.currentPromotion`).
pub fn started(
    tx: &mut WriteTx,
    project: &str,
    stage: &str,
    promotion: &str,
) -> Result<(), StoreError> {
    if let Some(mut o) = tx.get(Kind::Stage, project, stage)? {
        let mut status: StageStatus = o.status_of()?;
        status.current_promotion = Some(PromotionReference {
            name: promotion.into(),
            ..PromotionReference::default()
        });
        o.set_status(&status);
        tx.put(o, None, StatusMode::Replace)?;
    }
    Ok(())
}

/// The Promotion that ended, as [`record_end`] needs it.
pub struct Ended<'a> {
    pub name: &'a str,
    pub annotations: &'a BTreeMap<String, String>,
    pub status: &'a PromotionStatus,
    /// What its steps asked to be watched (see `rules::health`).
    pub health_checks: &'a [HealthCheck],
}

/// Records a Promotion's end on its Stage (see the module's doc), and the event.
pub fn record_end(
    tx: &mut WriteTx,
    mut stage: Object,
    promotion: Ended<'_>,
    now: SystemTime,
) -> Result<(), StoreError> {
    let Ended {
        name,
        annotations,
        status,
        health_checks,
    } = promotion;
    let project = stage.project().to_string();
    let stage_name = stage.name().to_string();
    let mut s: StageStatus = stage.status_of()?;
    let phase = status.phase();
    s.current_promotion = None;
    // The digests its plugins from registries ran (`oci://…:TAG@sha256:…` → by reference).
    s.plugins = status
        .step_execution_metadata
        .iter()
        .filter_map(|m| m.plugin.as_deref()?.rsplit_once('@'))
        .map(|(reference, digest)| (reference.to_string(), digest.to_string()))
        .collect();
    s.last_promotion = Some(PromotionReference {
        name: name.into(),
        freight: status.freight.clone(),
        status: Some(PromotionOutcome {
            phase: Some(phase),
            finished_at: status.finished_at.clone(),
            message: status.message.clone(),
        }),
        ..PromotionReference::default()
    });
    let actor = annotations
        .get(promotion::ACTOR_ANNOTATION)
        .map(String::as_str);
    if phase == PromotionPhase::Succeeded {
        let spec: StageSpec = stage.spec_of()?;
        let at = (project.as_str(), stage_name.as_str(), &spec);
        // The Stage is watched for what this Promotion registered (nothing: nothing to watch),
        // and is Unknown until the health monitor has looked; its verification waits for that.
        s.health_checks = health_checks.to_vec();
        s.health = (!health_checks.is_empty()).then(|| StageHealth {
            status: HealthState::Unknown,
            issues: vec!["not assessed yet".into()],
            output: None,
        });
        hold_freight(tx, &mut s, at, name, status, actor, now)?;
        hold_or_lift(&mut s, annotations, name, status, actor, now);
    }
    stage.set_status(&s);
    tx.put(stage, None, StatusMode::Replace)?;
    let freight = status.freight.clone().unwrap_or_default();
    events::record(
        tx,
        &project,
        &format!("Promotion{phase}"),
        format!(
            "Promotion of Freight {} into Stage {stage_name} {}: {}",
            freight.shown(),
            phase.as_str().to_lowercase(),
            status.message.as_deref().unwrap_or_default()
        ),
        (Kind::Promotion, name),
        events::About {
            actor,
            freight: Some(&freight.name),
            stage: Some(&stage_name),
            promotion: Some(name),
            ..Default::default()
        },
    )?;
    Ok(())
}

/// The Stage now holds the Promotion's collection: a new `freightHistory` entry, `currentlyIn`
/// moved, and its verification (see [`verify`]) now, or once the Stage's health checks find it
/// Healthy when its Promotion registered some.
fn hold_freight(
    tx: &mut WriteTx,
    s: &mut StageStatus,
    at: (&str, &str, &StageSpec),
    promotion: &str,
    status: &PromotionStatus,
    actor: Option<&str>,
    now: SystemTime,
) -> Result<(), StoreError> {
    let (project, stage, spec) = at;
    let previous = s
        .current()
        .map(FreightCollection::names)
        .unwrap_or_default();
    let collection = status.items();
    let names: Vec<String> = collection.iter().map(|i| i.name.clone()).collect();
    let entry = FreightCollection {
        id: collection_id(&names),
        items: collection
            .iter()
            .map(|i| (origin_key(&i.origin), i.clone()))
            .collect(),
        promotion: Some(promotion.into()),
        ..FreightCollection::default()
    };
    s.freight_history.insert(0, entry);
    s.freight_history.truncate(FREIGHT_HISTORY);
    freight::record_entry(tx, project, stage, &previous, &names, now)?;
    if s.health_checks.is_empty() {
        verify(
            tx,
            s,
            (project, stage, spec),
            actor.unwrap_or_default(),
            now,
        )?;
    } else {
        s.freight_history[0].awaiting_health = true;
    }
    Ok(())
}

/// Stage `stage` is Healthy: what it holds and waited for that is verified now (a run started, or
/// the Freight `verifiedIn` it when it has no verification).
pub fn healthy(
    tx: &mut WriteTx,
    s: &mut StageStatus,
    stage: &Object,
    now: SystemTime,
) -> Result<(), StoreError> {
    if !s.freight_history.first().is_some_and(|e| e.awaiting_health) {
        return Ok(());
    }
    s.freight_history[0].awaiting_health = false;
    let spec: StageSpec = stage.spec_of()?;
    verify(tx, s, (stage.project(), stage.name(), &spec), "", now)
}

/// The verification of what Stage `stage` holds now: a run started when the Stage has one,
/// else the Freight `verifiedIn` it at once.
fn verify(
    tx: &mut WriteTx,
    s: &mut StageStatus,
    at: (&str, &str, &StageSpec),
    actor: &str,
    now: SystemTime,
) -> Result<(), StoreError> {
    let (project, stage, spec) = at;
    let Some(entry) = s.freight_history.first_mut() else {
        return Ok(());
    };
    let collection: Vec<_> = entry.items.values().cloned().collect();
    let names = entry.names();
    let verifies = analysis::configured(spec);
    if verifies {
        let record = NewRun {
            project,
            stage,
            spec,
            freight: &collection,
            collection_id: &entry.id,
            promotion: entry.promotion.as_deref(),
            actor,
        }
        .start(tx, now)?;
        entry.verification_history.push(record);
    } else {
        freight::record_verified(tx, project, stage, &names, now)?;
    }
    Ok(())
}

/// Auto-promotion holds: a person chose other Freight than auto-promotion would (hold), or the
/// same (lift); see `engine::decisions::promotion::create`.
fn hold_or_lift(
    s: &mut StageStatus,
    annotations: &BTreeMap<String, String>,
    promotion: &str,
    status: &PromotionStatus,
    actor: Option<&str>,
    now: SystemTime,
) {
    let freight = status.freight.clone().unwrap_or_default();
    let key = origin_key(&freight.origin);
    if annotations.contains_key(auto::HOLD_ANNOTATION) {
        s.auto_promotion_holds.insert(
            key,
            AutoPromotionHold {
                freight_name: freight.name,
                origin: freight.origin,
                promotion_name: promotion.into(),
                actor: actor.unwrap_or_default().into(),
                created_at: time_text(now),
                ..AutoPromotionHold::default()
            },
        );
    } else if annotations.contains_key(auto::RESUME_ANNOTATION) {
        s.auto_promotion_holds.remove(&key);
    }
}
