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
    FreightFacts, availability, available_among, go_duration, origin_key, parse_time,
    sort_newest_first, time_text,
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

/// A project's Freight by origin, newest first, read from the store's per-origin index only as
/// far as a caller looks: a pass that decides for many Stages finds each origin's newest
/// available Freight after reading a few, whatever the project holds. Only the facts
/// availability reads are kept. Good for one transaction, until a Freight's status changes in
/// it ([`FreightByOrigin::forget`]).
pub struct FreightByOrigin {
    project: String,
    groups: HashMap<String, Group>,
}

#[derive(Default)]
struct Group {
    /// The newest of the origin's Freight, in order.
    read: Vec<FreightFacts>,
    /// Whether `read` holds all of them.
    complete: bool,
}

/// How many Freight the first read of an origin takes; each later one takes as many as were
/// read before (so a walk to the end reads each once and asks the store O(log n) times).
const FIRST_READ: usize = 8;

impl FreightByOrigin {
    pub fn new(project: &str) -> FreightByOrigin {
        FreightByOrigin {
            project: project.to_string(),
            groups: HashMap::new(),
        }
    }

    /// The `index`-th newest Freight of `origin`, if it has that many.
    pub fn nth(
        &mut self,
        r: &impl Reader,
        origin: &FreightOrigin,
        index: usize,
    ) -> Result<Option<&FreightFacts>, StoreError> {
        let group = self.groups.entry(origin_key(origin)).or_default();
        while index >= group.read.len() && !group.complete {
            let want = group.read.len().max(FIRST_READ);
            let more =
                r.freight_newest_first(&self.project, &origin_key(origin), group.read.len(), want)?;
            group.complete = more.len() < want;
            for freight in &more {
                group.read.push(FreightFacts::of(freight)?);
            }
        }
        Ok(group.read.get(index))
    }

    /// Every Freight of `origin`, newest first.
    pub fn all(
        &mut self,
        r: &impl Reader,
        origin: &FreightOrigin,
    ) -> Result<&[FreightFacts], StoreError> {
        self.nth(r, origin, usize::MAX)?;
        Ok(self
            .groups
            .get(&origin_key(origin))
            .map_or(&[][..], |g| g.read.as_slice()))
    }

    /// The newest Freight of `origin` available to Stage `stage`.
    pub fn newest_available(
        &mut self,
        r: &impl Reader,
        stage: &str,
        spec: &StageSpec,
        origin: &FreightOrigin,
        now: SystemTime,
    ) -> Result<Option<FreightFacts>, StoreError> {
        for index in 0.. {
            match self.nth(r, origin, index)? {
                Some(f) if availability(stage, spec, f, now).available => {
                    return Ok(Some(f.clone()));
                }
                Some(_) => {}
                None => break,
            }
        }
        Ok(None)
    }

    /// Drops what was read: the statuses of some Freight changed since.
    pub fn forget(&mut self) {
        self.groups.clear();
    }
}
