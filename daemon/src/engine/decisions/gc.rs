//! Garbage collection of old Freight, Promotions, AnalysisRuns and Events, with Kargo's
//! retention rules (KARGO-REFERENCE §5.3) and defaults.
//!
//! - **Freight**, per Warehouse: what is in use is never deleted (in a Stage now, in a Stage's
//!   newest `freightHistory` entry, or named by a Promotion that has not ended), nor is anything
//!   newer than the oldest Freight in use. Of the older ones the newest `max_retained_freight`
//!   stay; the rest go once older than `min_freight_deletion_age`.
//! - **Promotions** and **AnalysisRuns**, per Stage: the newest `max_retained_promotions` that
//!   have ended stay; older ended ones go once older than `min_promotion_deletion_age`, with
//!   their log files. Nothing Pending or Running is touched.
//! - **Events**, per project: the newest [`events::MAX_EVENTS_PER_PROJECT`].
//!
//! A pass is one write transaction per project; a pass that finds nothing writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::resource::{Kind, Object};
use crate::store::{Reader, StoreError, WriteTx};

use super::{analysis, events};
use crate::engine::logs;
use crate::resource::status::{FreightStatus, StageStatus, has_ended};
use crate::rules::availability::{freight_origin, freight_time, origin_key};

/// What to keep; the defaults are Kargo's.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    pub max_retained_freight: usize,
    pub min_freight_deletion_age: Duration,
    pub max_retained_promotions: usize,
    pub min_promotion_deletion_age: Duration,
    /// How often a pass runs.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_retained_freight: 20,
            min_freight_deletion_age: Duration::from_secs(336 * 3600),
            max_retained_promotions: 20,
            min_promotion_deletion_age: Duration::from_secs(336 * 3600),
            interval: Duration::from_secs(600),
        }
    }
}

/// What one pass deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collected {
    pub freight: Vec<String>,
    pub promotions: Vec<String>,
    pub analysis_runs: Vec<String>,
    pub events: usize,
}

fn created(o: &Object) -> SystemTime {
    o.metadata
        .creation_timestamp
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn older_than(o: &Object, age: Duration, now: SystemTime) -> bool {
    now.duration_since(created(o)).is_ok_and(|d| d >= age)
}

/// Adds to `keep` the Freight that must stay besides what is in a Stage: in a Stage's newest
/// history entry, or named by a Promotion or verification that has not ended.
fn in_use(r: &impl Reader, project: &str, keep: &mut BTreeSet<String>) -> Result<(), StoreError> {
    for stage in r.list(Kind::Stage, Some(project), None)? {
        keep.extend(stage.status_of::<StageStatus>()?.current_names());
    }
    for p in r.list(Kind::Promotion, Some(project), None)? {
        if !has_ended(&p)? {
            let batch = p.spec()["batch"].as_array().cloned().unwrap_or_default();
            keep.extend(
                std::iter::once(p.spec()["freight"].clone())
                    .chain(batch)
                    .filter_map(|f| f.as_str().map(str::to_string)),
            );
        }
    }
    for run in r.list(Kind::AnalysisRun, Some(project), None)? {
        if !has_ended(&run)? {
            for f in run.spec()["freightCollection"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(name) = f["name"].as_str() {
                    keep.insert(name.to_string());
                }
            }
        }
    }
    Ok(())
}

/// What garbage collection needs of one Freight (a whole Freight is kilobytes; a project may
/// hold 100,000 of them).
struct Brief {
    time: SystemTime,
    name: String,
    created: SystemTime,
}

/// One pass over `project`.
pub fn collect(
    tx: &mut WriteTx,
    data_dir: &Path,
    project: &str,
    rules: &Retention,
    now: SystemTime,
) -> Result<Collected, StoreError> {
    let mut out = Collected::default();

    // Freight, per Warehouse, read one at a time.
    let mut keep = BTreeSet::new();
    let mut by_origin: BTreeMap<String, Vec<Brief>> = BTreeMap::new();
    let mut unreadable = None;
    tx.visit(Kind::Freight, Some(project), &mut |f| {
        match f.status_of::<FreightStatus>() {
            Ok(status) if !status.currently_in.is_empty() => {
                keep.insert(f.name().to_string());
            }
            Ok(_) => {}
            // Kept, and the pass fails below: a Freight whose status cannot be read might be
            // in a Stage.
            Err(e) => {
                keep.insert(f.name().to_string());
                unreadable = Some(e);
            }
        }
        by_origin
            .entry(origin_key(&freight_origin(&f)))
            .or_default()
            .push(Brief {
                time: freight_time(&f),
                name: f.name().to_string(),
                created: created(&f),
            });
    })?;
    if let Some(e) = unreadable {
        return Err(e.into());
    }
    in_use(tx, project, &mut keep)?;
    for (_, mut freight) in by_origin {
        // Newest first, as the pipeline orders Freight.
        freight.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.name.cmp(&b.name)));
        // Everything up to the oldest Freight in use stays.
        let cutoff = freight
            .iter()
            .rposition(|f| keep.contains(&f.name))
            .map_or(0, |i| i + 1);
        let older = &freight[cutoff..];
        for f in older.iter().skip(rules.max_retained_freight) {
            let old_enough = now
                .duration_since(f.created)
                .is_ok_and(|d| d >= rules.min_freight_deletion_age);
            if keep.contains(&f.name) || !old_enough {
                continue;
            }
            tx.delete(Kind::Freight, project, &f.name)?;
            out.freight.push(f.name.clone());
        }
    }

    // Promotions and AnalysisRuns, per Stage.
    for (kind, label) in [
        (Kind::Promotion, super::promotion::STAGE_LABEL),
        (Kind::AnalysisRun, analysis::STAGE_LABEL),
    ] {
        let mut by_stage: BTreeMap<String, Vec<Object>> = BTreeMap::new();
        for o in tx.list(kind, Some(project), None)? {
            let stage = o.metadata.labels.get(label).cloned().unwrap_or_default();
            by_stage.entry(stage).or_default().push(o);
        }
        for (_, mut objects) in by_stage {
            // Names sort by creation (they carry a ULID); newest first.
            objects.sort_by(|a, b| b.name().cmp(a.name()));
            let mut done: Vec<&Object> = Vec::new();
            for o in &objects {
                if has_ended(o)? {
                    done.push(o);
                }
            }
            for o in done.iter().skip(rules.max_retained_promotions) {
                if !older_than(o, rules.min_promotion_deletion_age, now) {
                    continue;
                }
                tx.delete(kind, project, o.name())?;
                let _ = std::fs::remove_file(logs::path(data_dir, project, o.name()));
                match kind {
                    Kind::Promotion => out.promotions.push(o.name().to_string()),
                    _ => out.analysis_runs.push(o.name().to_string()),
                }
            }
        }
    }

    // Events: names are ULIDs, so name order is time order.
    let all_events = tx.list(Kind::Event, Some(project), None)?;
    let excess = all_events
        .len()
        .saturating_sub(events::MAX_EVENTS_PER_PROJECT);
    for e in all_events.iter().take(excess) {
        tx.delete(Kind::Event, project, e.name())?;
        out.events += 1;
    }
    Ok(out)
}
