//! The Freight's status, kept in step with the Stages inside the caller's transaction, and the
//! reads that decide availability over many Freight at once.
//!
//! `currentlyIn{stage: {since}}` changes when a Stage's held Freight changes, `verifiedIn{stage:
//! {verifiedAt, longestSoak}}` when a verification succeeds (or a promotion succeeds in a Stage
//! without one), `approvedFor{stage: {approvedAt}}` when a person approves. The rules that read
//! them are in [`crate::rules::availability`].

use std::collections::HashMap;
use std::time::SystemTime;

use crate::resource::status::{ApprovedStage, CurrentStage, FreightStatus};
use crate::resource::validate::parse_duration;
use crate::resource::{FreightOrigin, Kind, Object, StageSpec};
use crate::rules::availability::{
    FreightFacts, available_among, go_duration, origin_key, parse_time, sort_newest_first,
    time_text,
};
use crate::store::{Reader, StatusMode, StoreError, WriteTx};

/// Edits the status of Freight `name` with `edit`; a Freight that is gone is skipped.
fn edit_freight(
    tx: &mut WriteTx,
    project: &str,
    name: &str,
    edit: impl FnOnce(&mut FreightStatus),
) -> Result<(), StoreError> {
    let Some(mut freight) = tx.get(Kind::Freight, project, name)? else {
        return Ok(());
    };
    let mut status: FreightStatus = freight.status_of()?;
    edit(&mut status);
    freight.set_status(&status);
    tx.put(freight, None, StatusMode::Replace)?;
    Ok(())
}

/// Records that `stage` now holds `items` instead of `previous`: Freight that left loses its
/// `currentlyIn` entry (and, if it was verified there, keeps its longest stay as
/// `longestSoak`); Freight that arrived gets `currentlyIn[stage].since`.
pub fn record_entry(
    tx: &mut WriteTx,
    project: &str,
    stage: &str,
    previous: &[String],
    items: &[String],
    now: SystemTime,
) -> Result<(), StoreError> {
    for name in previous.iter().filter(|n| !items.contains(n)) {
        edit_freight(tx, project, name, |status| {
            let since = status
                .currently_in
                .remove(stage)
                .and_then(|c| parse_time(c.since.as_deref()));
            let stay = since
                .and_then(|s| now.duration_since(s).ok())
                .unwrap_or_default();
            if let Some(verified) = status.verified_in.get_mut(stage) {
                let longest = verified
                    .longest_soak
                    .as_deref()
                    .and_then(|d| parse_duration(d).ok())
                    .unwrap_or_default();
                verified.longest_soak = Some(go_duration(longest.max(stay)));
            }
        })?;
    }
    for name in items.iter().filter(|n| !previous.contains(n)) {
        edit_freight(tx, project, name, |status| {
            status.currently_in.insert(
                stage.into(),
                CurrentStage {
                    since: Some(time_text(now)),
                },
            );
        })?;
    }
    Ok(())
}

/// Marks `items` verified in `stage` (keeping any `longestSoak` from earlier stays).
pub fn record_verified(
    tx: &mut WriteTx,
    project: &str,
    stage: &str,
    items: &[String],
    now: SystemTime,
) -> Result<(), StoreError> {
    for name in items {
        edit_freight(tx, project, name, |status| {
            status
                .verified_in
                .entry(stage.into())
                .or_default()
                .verified_at = Some(time_text(now));
        })?;
    }
    Ok(())
}

/// Marks Freight `name` approved for `stage`.
pub fn record_approval(
    tx: &mut WriteTx,
    project: &str,
    name: &str,
    stage: &str,
    now: SystemTime,
) -> Result<(), StoreError> {
    edit_freight(tx, project, name, |status| {
        status.approved_for.insert(
            stage.into(),
            ApprovedStage {
                approved_at: Some(time_text(now)),
            },
        );
    })
}

/// Freight as a whole object, with the facts availability read of it.
pub type Judged = (Object, FreightFacts);

/// Every Freight of `origin` available to the Stage, newest first (whole objects, for the API),
/// and the earliest time a soak will make one more available.
pub fn available_freight(
    r: &impl Reader,
    project: &str,
    stage: &str,
    spec: &StageSpec,
    origin: Option<&FreightOrigin>,
    now: SystemTime,
) -> Result<(Vec<Judged>, Option<SystemTime>), StoreError> {
    let mut objects: HashMap<String, Object> = HashMap::new();
    let mut facts = Vec::new();
    for object in r.list(Kind::Freight, Some(project), None)? {
        facts.push(FreightFacts::of(&object)?);
        objects.insert(object.name().to_string(), object);
    }
    sort_newest_first(&mut facts);
    let (available, wake) = available_among(&facts, stage, spec, origin, now);
    let found = available
        .into_iter()
        .filter_map(|f| Some((objects.remove(&f.name)?, f.clone())))
        .collect();
    Ok((found, wake))
}

/// The project's Freight grouped by origin ([`origin_key`]), each group newest first, for a
/// pass that decides availability for many Stages: a Stage looks only at the Freight of the
/// origins it requests. Only the facts availability reads are kept; 100,000 Freight then fit
/// in a fraction of the memory.
pub fn freight_by_origin(
    r: &impl Reader,
    project: &str,
) -> Result<HashMap<String, Vec<FreightFacts>>, StoreError> {
    let mut groups: HashMap<String, Vec<FreightFacts>> = HashMap::new();
    let mut unreadable = None;
    r.visit(
        Kind::Freight,
        Some(project),
        &mut |freight| match FreightFacts::of(&freight) {
            Ok(facts) => groups
                .entry(origin_key(&facts.origin))
                .or_default()
                .push(facts),
            Err(e) => unreadable = Some(e),
        },
    )?;
    if let Some(e) = unreadable {
        return Err(e.into());
    }
    for group in groups.values_mut() {
        sort_newest_first(group);
    }
    Ok(groups)
}
