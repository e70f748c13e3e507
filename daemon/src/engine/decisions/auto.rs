//! Auto-promotion, and the Freight that control-flow Stages pass on.
//!
//! As in Kargo (KARGO-REFERENCE §6.2), auto-promotion is switched on only by the project's
//! `promotionPolicies` (in its ProjectConfig, or the older `Project.spec`): a person who may
//! edit a Stage cannot give it the right to promote itself. The first policy that matches a
//! Stage (exact `stage`, or a `stageSelector` by name, `regex:`, `glob:` and labels) decides.
//!
//! For each Freight origin a Stage requests, the candidate is the newest available Freight
//! (`NewestFreight`), or the one its single upstream Stage holds now (`MatchUpstream`). A
//! Promotion is created unless the candidate is already in the Stage, a Promotion of it to the
//! Stage exists (whatever became of it: a failed auto-promotion is not repeated), or a person
//! put the origin on hold by promoting something else by hand. Promoting the candidate by hand
//! lifts the hold; switching auto-promotion off clears every hold.
//!
//! A control-flow Stage (no steps) never holds Freight: what is available to it counts as
//! verified in it at once, so Stages downstream of it can take it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use super::freight::{self as freight_status, FreightByOrigin};
use super::promotion;
use serde::Deserialize;

use crate::resource::status::{PromotionPhase, StageStatus};
use crate::resource::{
    FreightOrigin, Kind, Object, ObjectMeta, ProjectConfigSpec, ProjectSpec, PromotionPolicy,
    StageSpec,
};
use crate::rules::availability::{self, FreightFacts, origin_key};
use crate::store::{Reader, StatusMode, StoreError, WriteTx};

/// The actor recorded on Promotions that auto-promotion creates.
pub const ACTOR: &str = "dray:auto-promotion";
/// On a Promotion a person created for Freight other than the candidate: hold the origin.
pub const HOLD_ANNOTATION: &str = "kargo.akuity.io/auto-promotion-hold";
/// On a Promotion a person created for the candidate itself: lift the hold.
pub const RESUME_ANNOTATION: &str = "kargo.akuity.io/auto-promotion-resume";
/// On a Promotion auto-rollback created (`ctx.meta.promotion.rollback`), as in Kargo.
pub const ROLLBACK_ANNOTATION: &str = "kargo.akuity.io/rollback";
/// The actor recorded on Promotions that auto-rollback creates.
pub const ROLLBACK_ACTOR: &str = "dray:auto-rollback";

/// The first of `policies` that matches Stage `name` with `labels`: the one that decides.
fn policy_for<'a>(
    policies: &'a [PromotionPolicy],
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'a PromotionPolicy> {
    policies.iter().find(|policy| match &policy.stage {
        Some(stage) => stage == name,
        None => policy
            .stage_selector
            .as_ref()
            .is_some_and(|s| s.selects(name, labels)),
    })
}

/// The project's promotion policies: its ProjectConfig's, then its Project's.
fn policies(r: &impl Reader, project: &str) -> Result<Vec<PromotionPolicy>, StoreError> {
    let mut out = Vec::new();
    if let Some(config) = r.get(Kind::ProjectConfig, project, project)?
        && let Ok(spec) = serde_json::from_value::<ProjectConfigSpec>(config.spec().clone())
    {
        out.extend(spec.promotion_policies);
    }
    if let Some(p) = r.get(Kind::Project, "", project)?
        && let Ok(spec) = serde_json::from_value::<ProjectSpec>(p.spec().clone())
    {
        out.extend(spec.promotion_policies);
    }
    Ok(out)
}

fn enabled_by(policies: &[PromotionPolicy], stage: &Object) -> bool {
    policy_for(policies, stage.name(), &stage.metadata.labels)
        .is_some_and(|p| p.auto_promotion_enabled)
}

/// Whether waiting Promotions of `stage` give way to the newest (`queuePolicy: Supersede` in
/// the first matching policy).
pub fn supersedes(r: &impl Reader, project: &str, stage: &Object) -> Result<bool, StoreError> {
    Ok(
        policy_for(&policies(r, project)?, stage.name(), &stage.metadata.labels)
            .and_then(|p| p.queue_policy.as_deref())
            == Some("Supersede"),
    )
}

/// Kargo's auto-rollback (an Enterprise feature there): when the Stage's current Freight failed
/// its verification (`onVerification`, default `[Failed]`) or its last Promotion ended in a
/// phase of `onPromotion`, and nothing is pending or running for it, promote again the newest
/// Freight that was verified in it before, with `kargo.akuity.io/rollback: "true"`. It acts once
/// per failure, and never on the failure of a rollback (no loop).
fn rollback(
    tx: &mut WriteTx,
    project: &str,
    stage: &str,
    policy: &crate::resource::project::AutoRollback,
    status: &mut StageStatus,
    busy: bool,
) -> Result<Vec<Object>, StoreError> {
    if busy || status.current_promotion.is_some() {
        return Ok(Vec::new());
    }
    let on_verification: Vec<&str> = if policy.on_verification.is_empty() {
        vec!["Failed"]
    } else {
        policy.on_verification.iter().map(String::as_str).collect()
    };
    let is_rollback = |tx: &WriteTx, name: &str| -> Result<bool, StoreError> {
        Ok(tx.get(Kind::Promotion, project, name)?.is_some_and(|p| {
            p.metadata
                .annotations
                .get(ROLLBACK_ANNOTATION)
                .map(String::as_str)
                == Some("true")
        }))
    };
    // What failed, and whether the current Freight is to be left (a failed verification) or
    // put back in place (a failed promotion may have half-changed the Stage).
    let mut trigger: Option<(String, String, bool)> = None;
    if let Some(current) = status.freight_history.first()
        && let Some(v) = current.verification_history.first()
        && let Some(phase) = v.phase
        && on_verification.contains(&phase.as_str())
        && !current
            .promotion
            .as_deref()
            .is_some_and(|p| is_rollback(tx, p).unwrap_or(true))
    {
        trigger = Some((
            v.id.clone(),
            format!("its verification {} ended {phase}", v.id),
            true,
        ));
    }
    if trigger.is_none()
        && let Some(last) = &status.last_promotion
        && let Some(phase) = last.status.as_ref().and_then(|s| s.phase)
        && policy.on_promotion.iter().any(|p| p == phase.as_str())
        && !is_rollback(tx, &last.name)?
    {
        trigger = Some((
            last.name.clone(),
            format!("Promotion {} ended {phase}", last.name),
            false,
        ));
    }
    let Some((id, why, leave_current)) = trigger else {
        return Ok(Vec::new());
    };
    if status.last_auto_rollback.as_deref() == Some(id.as_str()) {
        return Ok(Vec::new());
    }
    status.last_auto_rollback = Some(id);
    let skip = usize::from(leave_current);
    let mut stable = None;
    'history: for collection in status.freight_history.iter().skip(skip) {
        for item in collection.items.values() {
            let verified = tx
                .get(Kind::Freight, project, &item.name)?
                .map(|f| f.status_of::<crate::resource::status::FreightStatus>())
                .transpose()?
                .is_some_and(|s| s.verified_in.contains_key(stage));
            if !verified {
                continue 'history;
            }
        }
        stable = Some(collection.clone());
        break;
    }
    let Some(stable) = stable else {
        tracing::warn!(%project, %stage, %why, "auto-rollback: no Freight was verified in this Stage before; nothing to roll back to");
        return Ok(Vec::new());
    };
    let current = status.current_names();
    let mut created = Vec::new();
    for item in stable.items.values() {
        if leave_current && current.contains(&item.name) {
            continue;
        }
        match promotion::create(tx, project, stage, &item.name, ROLLBACK_ACTOR) {
            Ok(mut p) => {
                p.metadata
                    .annotations
                    .insert(ROLLBACK_ANNOTATION.into(), "true".into());
                let put = tx.put(p, None, StatusMode::Keep)?;
                tracing::info!(%project, %stage, freight = %item.name, %why, "auto-rollback");
                created.push(put.0);
            }
            Err(promotion::CreateError::Store(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(%project, %stage, freight = %item.name, error = %e, "auto-rollback could not create a promotion");
            }
        }
    }
    Ok(created)
}

/// Whether the project's policies let Stage `stage` auto-promote.
pub fn enabled(r: &impl Reader, project: &str, stage: &Object) -> Result<bool, StoreError> {
    Ok(enabled_by(&policies(r, project)?, stage))
}

/// The Freight auto-promotion would pick for `origin` now, and the earliest time a soak could
/// change the answer.
/// `freight` reads the project's Freight by origin as far as needed: it stops at the choice.
pub fn candidate(
    r: &impl Reader,
    project: &str,
    freight: &mut FreightByOrigin,
    stage: &str,
    spec: &StageSpec,
    origin: &FreightOrigin,
    now: SystemTime,
) -> Result<(Option<FreightFacts>, Option<SystemTime>), StoreError> {
    let request = spec.requested_freight.iter().find(|r| &r.origin == origin);
    let match_upstream = request
        .and_then(|r| r.sources.auto_promotion_options.as_ref())
        .and_then(|o| o.selection_policy.as_deref())
        == Some("MatchUpstream");
    // MatchUpstream takes what the upstream Stage holds; NewestFreight, the newest available.
    let held: Option<Vec<String>> = if match_upstream {
        let upstream = request.and_then(|r| r.sources.stages.first());
        Some(match upstream {
            Some(u) => r
                .get(Kind::Stage, project, u)?
                .map(|s| s.status_of::<StageStatus>())
                .transpose()?
                .map(|s| s.current_names())
                .unwrap_or_default(),
            None => Vec::new(),
        })
    } else {
        None
    };
    // Newest first, stopping at the choice: an older Freight that becomes available later
    // would not be chosen over it, so only newer ones can ask for a wake-up.
    let mut wake: Option<SystemTime> = None;
    for index in 0.. {
        let Some(f) = freight.nth(r, origin, index)? else {
            break;
        };
        let verdict = availability::availability(stage, spec, f, now);
        if verdict.available {
            if held.as_ref().is_none_or(|h| h.contains(&f.name)) {
                return Ok((Some(f.clone()), wake));
            }
        } else if let Some(at) = verdict.ready_at {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
    }
    Ok((None, wake))
}

/// The origins `spec` (resolved) requests, for the Stage's `status.selectedOrigins`, when it
/// `selects` some by label; none otherwise.
fn selected_origins(spec: &StageSpec, selects: bool) -> Vec<FreightOrigin> {
    if selects {
        spec.requested_freight
            .iter()
            .map(|r| r.origin.clone())
            .collect()
    } else {
        Vec::new()
    }
}

/// Writes `status` as Stage `name`'s status (a Stage gone meanwhile is left gone).
fn write_status(
    tx: &mut WriteTx,
    project: &str,
    name: &str,
    status: &StageStatus,
) -> Result<(), StoreError> {
    if let Some(mut stage) = tx.get(Kind::Stage, project, name)? {
        stage.set_status(status);
        tx.put(stage, None, StatusMode::Replace)?;
    }
    Ok(())
}

/// What a pass reads of a Stage, straight from its stored JSON: no object is built, and the
/// spec is read apart (a Stage whose spec does not read is passed over, as before).
#[derive(Deserialize)]
struct StageHead {
    metadata: ObjectMeta,
    #[serde(default)]
    status: Option<StageStatus>,
}

#[derive(Deserialize)]
struct StageBody {
    spec: StageSpec,
}

/// A Stage as a pass reads it.
struct StageRead {
    meta: ObjectMeta,
    /// `None` when the spec does not read.
    spec: Option<StageSpec>,
    status: StageStatus,
}

/// Every object of `kind` in `project`, in name order, as `read` makes it from the stored
/// JSON. Every stored object was checked when it was written; one that does not read is a
/// corrupt store, and fails the pass (rather than, say, letting auto-promotion create a
/// Promotion again).
fn read_each<T>(
    r: &impl Reader,
    kind: Kind,
    project: &str,
    mut read: impl FnMut(&[u8]) -> Result<T, serde_json::Error>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    let mut unreadable = None;
    r.visit_json(kind, project, &mut |json| match read(json) {
        Ok(item) => out.push(item),
        Err(e) => unreadable = Some(e),
    })?;
    match unreadable {
        Some(source) => Err(StoreError::Corrupt {
            key: format!("{kind}/{project}/… (read by auto-promotion)"),
            source,
        }),
        None => Ok(out),
    }
}

/// The project's Stages, in name order.
fn stage_heads(r: &impl Reader, project: &str) -> Result<Vec<StageRead>, StoreError> {
    read_each(r, Kind::Stage, project, |json| {
        let head = serde_json::from_slice::<StageHead>(json)?;
        Ok(StageRead {
            meta: head.metadata,
            spec: serde_json::from_slice::<StageBody>(json)
                .ok()
                .map(|b| b.spec),
            status: head.status.unwrap_or_default(),
        })
    })
}

/// What a pass reads of a Promotion: its Stage, its Freight and its phase. A project keeps
/// thousands of Promotions, each with its steps' status; a pass skips all of that.
#[derive(Deserialize, Default)]
struct PromotionRef {
    #[serde(default)]
    spec: RefSpec,
    #[serde(default)]
    status: RefStatus,
}

#[derive(Deserialize, Default)]
struct RefSpec {
    #[serde(default)]
    stage: String,
    #[serde(default)]
    freight: Option<String>,
    #[serde(default)]
    batch: Vec<String>,
}

#[derive(Deserialize, Default)]
struct RefStatus {
    #[serde(default)]
    phase: Option<PromotionPhase>,
}

/// The project's Promotions as [`PromotionRef`]s.
fn promotion_refs(r: &impl Reader, project: &str) -> Result<Vec<PromotionRef>, StoreError> {
    read_each(r, Kind::Promotion, project, |json| {
        serde_json::from_slice(json)
    })
}

/// The Stages of `project` with a Promotion not ended (Pending, or Running when a previous
/// process stopped), read lean.
pub fn stages_with_unfinished_promotions(
    r: &impl Reader,
    project: &str,
) -> Result<BTreeSet<String>, StoreError> {
    Ok(promotion_refs(r, project)?
        .into_iter()
        .filter(|p| !p.status.phase.is_some_and(|ph| ph.is_terminal()))
        .map(|p| p.spec.stage)
        .collect())
}

fn steps_of(spec: &StageSpec) -> usize {
    spec.promotion_template
        .as_ref()
        .map_or(0, |t| t.spec.steps.len())
}

/// One pass over a project: creates the Promotions auto-promotion wants, passes Freight through
/// control-flow Stages, and keeps `status.autoPromotionEnabled` (and holds) in step with the
/// policies. Returns the Promotions created and when to look again (a soak ending), if ever.
pub fn reconcile(
    tx: &mut WriteTx,
    project: &str,
    now: SystemTime,
) -> Result<(Vec<Object>, Option<SystemTime>), StoreError> {
    let policies = policies(tx, project)?;
    let stages = stage_heads(tx, project)?;
    let promotions = promotion_refs(tx, project)?;
    // Every (Stage, Freight) a Promotion was made for, batches included.
    let promoted: BTreeSet<(String, String)> = promotions
        .iter()
        .flat_map(|p| {
            p.spec
                .freight
                .iter()
                .chain(&p.spec.batch)
                .map(|f| (p.spec.stage.clone(), f.clone()))
        })
        .collect();
    let mut created = Vec::new();
    let mut wake: Option<SystemTime> = None;
    let mut soon = |at: Option<SystemTime>| {
        if let Some(at) = at {
            wake = Some(wake.map_or(at, |w: SystemTime| w.min(at)));
        }
    };
    // The project's Freight by origin, read through the store's index as far as the Stages
    // look (again after a control-flow Stage changed some): each origin's newest few, not the
    // project's every Freight.
    let mut freight = FreightByOrigin::new(project);
    // The Warehouses, read once when a Stage selects origins by label.
    let mut warehouses: Option<Vec<Object>> = None;
    for StageRead {
        meta,
        spec,
        mut status,
    } in stages
    {
        let Some(mut spec) = spec else {
            continue;
        };
        let name = meta.name;
        let selects = spec.selects_origins();
        if selects {
            if warehouses.is_none() {
                warehouses = Some(tx.list(Kind::Warehouse, Some(project), None)?);
            }
            super::stage::resolve(&mut spec, warehouses.as_deref().unwrap_or_default());
        }
        let selected = selected_origins(&spec, selects);
        if status.selected_origins != selected {
            status.selected_origins = selected;
            write_status(tx, project, &name, &status)?;
        }
        if steps_of(&spec) == 0 {
            // Control flow: everything available counts as verified here.
            let mut fresh: Vec<String> = Vec::new();
            for request in &spec.requested_freight {
                let group = freight.all(tx, &request.origin)?;
                let (available, at) =
                    availability::available_among(group, &name, &spec, Some(&request.origin), now);
                soon(at);
                fresh.extend(
                    available
                        .iter()
                        .filter(|f| !f.status.verified_in.contains_key(&name))
                        .map(|f| f.name.clone()),
                );
            }
            if !fresh.is_empty() {
                freight_status::record_verified(tx, project, &name, &fresh, now)?;
                freight.forget();
            }
            continue;
        }
        let policy = policy_for(&policies, &name, &meta.labels);
        let enabled = policy.is_some_and(|p| p.auto_promotion_enabled);
        // Keep the status in step: the flag, and no holds while switched off.
        let before = status.clone();
        status.auto_promotion_enabled = Some(enabled);
        if !enabled {
            status.auto_promotion_holds.clear();
        }
        if let Some(policy) = policy.and_then(|p| p.auto_rollback.as_ref()) {
            let busy = promotions.iter().any(|p| {
                p.spec.stage == name && !p.status.phase.is_some_and(|ph| ph.is_terminal())
            });
            let rolled = rollback(tx, project, &name, policy, &mut status, busy)?;
            if !rolled.is_empty() {
                created.extend(rolled);
                // Auto-promotion of the failed Freight is not repeated (a Promotion of it
                // exists); nothing more to do for this Stage in this pass.
                write_status(tx, project, &name, &status)?;
                continue;
            }
        }
        if status != before {
            write_status(tx, project, &name, &status)?;
        }
        if !enabled {
            continue;
        }
        let current = status.current_names();
        let batch_window = policy
            .and_then(|p| p.batch_window.as_deref())
            .map(|w| crate::resource::validate::parse_duration(w).unwrap_or_default());
        let mut batch: Vec<FreightFacts> = Vec::new();
        for request in &spec.requested_freight {
            let held = status
                .auto_promotion_holds
                .contains_key(&origin_key(&request.origin));
            if held {
                continue;
            }
            let (chosen, at) = candidate(
                tx,
                project,
                &mut freight,
                &name,
                &spec,
                &request.origin,
                now,
            )?;
            soon(at);
            let Some(chosen) = chosen else { continue };
            let key = (name.clone(), chosen.name.clone());
            if current.contains(&chosen.name) || promoted.contains(&key) {
                continue;
            }
            if batch_window.is_some() {
                batch.push(chosen);
                continue;
            }
            let made = promotion::create(tx, project, &name, &chosen.name, ACTOR);
            if let Some(p) = made_or_waiting(made, (project, &name), &mut soon)? {
                created.push(p);
            }
        }
        // Batched: once the window after the first candidate's arrival has passed, all of them
        // in one Promotion.
        if let (Some(window), Some(first)) = (batch_window, batch.iter().map(|f| f.time).min()) {
            let due = first + window;
            if now < due {
                soon(Some(due));
                continue;
            }
            let names: Vec<String> = batch.iter().map(|f| f.name.clone()).collect();
            let made = promotion::create_batch(tx, project, &name, &names, ACTOR);
            if let Some(p) = made_or_waiting(made, (project, &name), &mut soon)? {
                created.push(p);
            }
        }
    }
    Ok((created, wake))
}

/// The Promotion auto-promotion made, or why not: a closed window asks to look again when it
/// opens (`soon`), anything else is logged; only a store failure ends the pass.
fn made_or_waiting(
    made: Result<Object, promotion::CreateError>,
    (project, stage): (&str, &str),
    soon: &mut impl FnMut(Option<SystemTime>),
) -> Result<Option<Object>, StoreError> {
    match made {
        Ok(p) => Ok(Some(p)),
        Err(promotion::CreateError::Store(e)) => Err(e),
        Err(promotion::CreateError::Closed { message, next_open }) => {
            tracing::debug!(%project, %stage, %message, "auto-promotion waits");
            soon(next_open);
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(%project, %stage, error = %e, "auto-promotion could not create a promotion");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ObjectMeta;
    use crate::resource::StageSelector;

    fn stage(name: &str, labels: &[(&str, &str)]) -> Object {
        Object {
            api_version: "kargo.akuity.io/v1alpha1".into(),
            kind: Kind::Stage,
            metadata: ObjectMeta {
                name: name.into(),
                namespace: Some("p".into()),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..ObjectMeta::default()
            },
            body: Default::default(),
        }
    }

    fn selector(name: Option<&str>, labels: &[(&str, &str)], on: bool) -> PromotionPolicy {
        PromotionPolicy {
            stage: None,
            stage_selector: Some(StageSelector {
                name: name.map(str::to_string),
                match_labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                match_expressions: Vec::new(),
            }),
            auto_promotion_enabled: on,
            queue_policy: None,
            auto_rollback: None,
            batch_window: None,
        }
    }

    #[test]
    fn policies_select_stages_by_name_pattern_and_labels() {
        let policies = vec![
            selector(Some("glob:prod-*"), &[], false),
            selector(Some("regex:^(test|uat)$"), &[], true),
            selector(None, &[("tier", "edge")], true),
        ];
        assert!(enabled_by(&policies, &stage("test", &[])));
        assert!(enabled_by(&policies, &stage("uat", &[])));
        assert!(!enabled_by(&policies, &stage("uat2", &[])));
        assert!(!enabled_by(
            &policies,
            &stage("prod-eu", &[("tier", "edge")])
        ));
        assert!(enabled_by(&policies, &stage("cdn", &[("tier", "edge")])));
        let exact = PromotionPolicy {
            stage: Some("dev".into()),
            stage_selector: None,
            auto_promotion_enabled: true,
            queue_policy: None,
            auto_rollback: None,
            batch_window: None,
        };
        assert!(enabled_by(std::slice::from_ref(&exact), &stage("dev", &[])));
        assert!(!enabled_by(&[exact], &stage("dev2", &[])));
    }
}
