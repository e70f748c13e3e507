//! The pipeline between Stages: which Freight a Stage may take, and the Freight status that
//! decides it.
//!
//! Semantics are Kargo's (KARGO-REFERENCE §5.3, §6.1). A Freight is available to a Stage that
//! requests its origin when it was approved for that Stage, when the Stage takes the origin
//! `direct`ly, or when it was verified (and soaked for `requiredSoakTime`) in one upstream Stage
//! (`OneOf`, the default) or in every one (`All`). The soak is the longest continuous stay in the
//! upstream Stage, or the current stay if longer. Every decision comes with its reasons, so
//! `dray explain` can answer "why is this Freight not available to prod?".
//!
//! The status lives on the Freight: `currentlyIn{stage: {since}}`, `verifiedIn{stage:
//! {verifiedAt, longestSoak}}` and `approvedFor{stage: {approvedAt}}`. The writers here keep it
//! in step with the Stages' `freightHistory`, inside the caller's transaction.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::resource::validate::parse_duration;
use crate::resource::{FreightOrigin, Kind, Object, StageSpec};
use crate::store::{Reader, StatusMode, StoreError, WriteTx};

/// `Warehouse/name`, the key of a Stage's `freightHistory[].items`.
pub fn origin_key(origin: &FreightOrigin) -> String {
    format!("{}/{}", origin.kind, origin.name)
}

pub fn time_text(t: SystemTime) -> String {
    crate::resource::timestamp(t)
}

fn parse_time(v: &Value) -> Option<SystemTime> {
    v.as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
}

/// A duration as Go writes it (`1h2m3s`), which is how Kargo stores `longestSoak`.
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// A short human duration for messages: `45s`, `5m 3s`.
fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// The origin a Freight came from.
pub fn freight_origin(freight: &Object) -> FreightOrigin {
    freight
        .body
        .get("origin")
        .cloned()
        .and_then(|o| serde_json::from_value(o).ok())
        .unwrap_or_default()
}

/// When the Freight came to be: `discoveredAt`, else its creation time.
pub fn freight_time(freight: &Object) -> SystemTime {
    freight
        .body
        .get("discoveredAt")
        .and_then(parse_time)
        .or_else(|| {
            freight
                .metadata
                .creation_timestamp
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        })
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Newest first; equal times by name, so the order is stable.
pub fn sort_newest_first(freight: &mut [Object]) {
    freight.sort_by(|a, b| {
        freight_time(b)
            .cmp(&freight_time(a))
            .then_with(|| a.name().cmp(b.name()))
    });
}

fn status_of<'a>(freight: &'a Object, field: &str, stage: &str) -> &'a Value {
    &freight.status()[field][stage]
}

/// How long `freight` has soaked in `stage`: its longest continuous stay there, or its current
/// stay if that is longer.
pub fn soaked(freight: &Object, stage: &str, now: SystemTime) -> Duration {
    let longest = status_of(freight, "verifiedIn", stage)["longestSoak"]
        .as_str()
        .and_then(|d| parse_duration(d).ok())
        .unwrap_or_default();
    let current = parse_time(&status_of(freight, "currentlyIn", stage)["since"])
        .and_then(|since| now.duration_since(since).ok())
        .unwrap_or_default();
    longest.max(current)
}

/// A Stage's decision about one Freight, with the reasons.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub available: bool,
    /// One sentence per fact that decided it.
    pub reasons: Vec<String>,
    /// When an upstream soak will be long enough, if the Freight stays there and that is all
    /// that is missing (the auto-promoter wakes up then).
    #[serde(skip)]
    pub ready_at: Option<SystemTime>,
}

/// Whether `freight` is available to Stage `stage` (its spec `spec`) at `now`, and why.
pub fn availability(stage: &str, spec: &StageSpec, freight: &Object, now: SystemTime) -> Verdict {
    let origin = freight_origin(freight);
    let mut verdict = Verdict {
        available: false,
        reasons: Vec::new(),
        ready_at: None,
    };
    let requests: Vec<_> = spec
        .requested_freight
        .iter()
        .filter(|r| r.origin == origin)
        .collect();
    if requests.is_empty() {
        let wanted: Vec<String> = spec
            .requested_freight
            .iter()
            .map(|r| origin_key(&r.origin))
            .collect();
        verdict.reasons.push(format!(
            "{stage} does not request Freight from {} (it requests {})",
            origin_key(&origin),
            wanted.join(", ")
        ));
        return verdict;
    }
    if let Some(at) = status_of(freight, "approvedFor", stage)["approvedAt"].as_str() {
        verdict.available = true;
        verdict
            .reasons
            .push(format!("approved for {stage} at {at}"));
        return verdict;
    }
    for request in requests {
        let sources = &request.sources;
        if sources.direct {
            verdict.available = true;
            verdict.reasons.push(format!(
                "{stage} takes Freight from {} directly",
                origin_key(&origin)
            ));
            return verdict;
        }
        if sources.stages.is_empty() {
            verdict.reasons.push(format!(
                "{stage} requests {} neither directly nor from upstream Stages",
                origin_key(&origin)
            ));
            continue;
        }
        let required = sources
            .required_soak_time
            .as_deref()
            .and_then(|d| parse_duration(d).ok())
            .unwrap_or_default();
        let all = sources.availability_strategy.as_deref() == Some("All");
        let mut passed = 0;
        for upstream in &sources.stages {
            let verified = &status_of(freight, "verifiedIn", upstream)["verifiedAt"];
            let Some(at) = verified.as_str() else {
                verdict.reasons.push(format!("not verified in {upstream}"));
                continue;
            };
            if required.is_zero() {
                passed += 1;
                verdict
                    .reasons
                    .push(format!("verified in {upstream} at {at}"));
                continue;
            }
            let soak = soaked(freight, upstream, now);
            if soak >= required {
                passed += 1;
                verdict.reasons.push(format!(
                    "verified in {upstream} and soaked there {} (at least {} required)",
                    human(soak),
                    human(required)
                ));
            } else if status_of(freight, "currentlyIn", upstream).is_object() {
                let ready = now + (required - soak);
                verdict.ready_at = Some(verdict.ready_at.map_or(ready, |r| r.min(ready)));
                verdict.reasons.push(format!(
                    "verified in {upstream} but soaked there only {} of the {} required (ready in {} if it stays)",
                    human(soak),
                    human(required),
                    human(required - soak)
                ));
            } else {
                verdict.reasons.push(format!(
                    "verified in {upstream} but it stayed there at most {}, short of the {} required",
                    human(soak),
                    human(required)
                ));
            }
        }
        let ok = if all {
            passed == sources.stages.len()
        } else {
            passed > 0
        };
        if ok {
            verdict.available = true;
            let rule = if all {
                "every upstream Stage"
            } else {
                "one upstream Stage"
            };
            verdict.reasons.push(format!("{stage} needs {rule}: met"));
            verdict.ready_at = None;
            return verdict;
        }
        let rule = if all {
            format!("all of {}", sources.stages.join(", "))
        } else {
            format!("one of {}", sources.stages.join(", "))
        };
        verdict.reasons.push(format!(
            "{stage} needs Freight verified{} in {rule}",
            if required.is_zero() {
                String::new()
            } else {
                format!(" and soaked {}", human(required))
            }
        ));
    }
    verdict
}

/// The names of the Freight a Stage holds now (its newest `freightHistory` entry).
pub fn current_freight(stage: &Object) -> Vec<String> {
    collection_names(&stage.status()["freightHistory"][0])
}

/// The Freight names of one `freightHistory` entry.
pub fn collection_names(entry: &Value) -> Vec<String> {
    let mut names: Vec<String> = entry["items"]
        .as_object()
        .map(|items| {
            items
                .values()
                .filter_map(|i| i["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Kargo's FreightCollection id: sha1 of the sorted Freight names joined by ",".
pub fn collection_id(names: &[String]) -> String {
    use sha1::Digest;
    let mut sorted = names.to_vec();
    sorted.sort();
    hex::encode(sha1::Sha1::digest(sorted.join(",").as_bytes()))
}

/// Edits the status of Freight `name` with `edit`; a Freight that is gone is skipped.
fn edit_freight(
    tx: &mut WriteTx,
    project: &str,
    name: &str,
    edit: impl FnOnce(&mut Map<String, Value>),
) -> Result<(), StoreError> {
    let Some(mut freight) = tx.get(Kind::Freight, project, name)? else {
        return Ok(());
    };
    let mut status = freight.status().as_object().cloned().unwrap_or_default();
    edit(&mut status);
    freight.body.insert("status".into(), Value::Object(status));
    tx.put(freight, None, StatusMode::Replace)?;
    Ok(())
}

fn entry<'a>(status: &'a mut Map<String, Value>, field: &str) -> &'a mut Map<String, Value> {
    let value = status.entry(field.to_string()).or_insert_with(|| json!({}));
    if !value.is_object() {
        *value = json!({});
    }
    value.as_object_mut().expect("an object")
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
            let since = entry(status, "currentlyIn")
                .remove(stage)
                .and_then(|c| parse_time(&c["since"]));
            let stay = since
                .and_then(|s| now.duration_since(s).ok())
                .unwrap_or_default();
            if let Some(Value::Object(verified)) = entry(status, "verifiedIn").get_mut(stage) {
                let longest = verified
                    .get("longestSoak")
                    .and_then(Value::as_str)
                    .and_then(|d| parse_duration(d).ok())
                    .unwrap_or_default();
                verified.insert("longestSoak".into(), json!(go_duration(longest.max(stay))));
            }
        })?;
    }
    for name in items.iter().filter(|n| !previous.contains(n)) {
        edit_freight(tx, project, name, |status| {
            entry(status, "currentlyIn").insert(stage.into(), json!({"since": time_text(now)}));
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
            let verified = entry(status, "verifiedIn");
            let mut record = verified
                .get(stage)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            record.insert("verifiedAt".into(), json!(time_text(now)));
            verified.insert(stage.into(), Value::Object(record));
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
        entry(status, "approvedFor").insert(stage.into(), json!({"approvedAt": time_text(now)}));
    })
}

/// Every Freight of `origin` available to the Stage, newest first, and the earliest time a
/// soak will make one more available.
pub fn available_freight(
    r: &impl Reader,
    project: &str,
    stage: &str,
    spec: &StageSpec,
    origin: Option<&FreightOrigin>,
    now: SystemTime,
) -> Result<(Vec<Object>, Option<SystemTime>), StoreError> {
    let all = project_freight(r, project)?;
    let (available, wake) = available_among(&all, stage, spec, origin, now);
    Ok((available.into_iter().cloned().collect(), wake))
}

/// Every Freight of `project`, newest first: read once by a pass over many Stages.
pub fn project_freight(r: &impl Reader, project: &str) -> Result<Vec<Object>, StoreError> {
    let mut all = r.list(Kind::Freight, Some(project), None)?;
    sort_newest_first(&mut all);
    Ok(all)
}

/// The project's Freight grouped by origin ([`origin_key`]), each group newest first, for a
/// pass that decides availability for many Stages: a Stage looks only at the Freight of the
/// origins it requests. The artifact lists (`images`, `commits`, `charts`) are dropped on the
/// way in, since availability does not read them; 100,000 Freight then fit in a fraction of
/// the memory.
pub fn freight_by_origin(
    r: &impl Reader,
    project: &str,
) -> Result<std::collections::HashMap<String, Vec<Object>>, StoreError> {
    let mut groups: std::collections::HashMap<String, Vec<Object>> = Default::default();
    r.visit(Kind::Freight, Some(project), &mut |mut freight| {
        for artifacts in ["images", "commits", "charts"] {
            freight.body.remove(artifacts);
        }
        groups
            .entry(origin_key(&freight_origin(&freight)))
            .or_default()
            .push(freight);
    })?;
    for group in groups.values_mut() {
        sort_newest_first(group);
    }
    Ok(groups)
}

/// [`available_freight`] over Freight already read (newest first).
pub fn available_among<'a>(
    all: &'a [Object],
    stage: &str,
    spec: &StageSpec,
    origin: Option<&FreightOrigin>,
    now: SystemTime,
) -> (Vec<&'a Object>, Option<SystemTime>) {
    let mut wake: Option<SystemTime> = None;
    let mut out = Vec::new();
    for freight in all {
        let o = freight_origin(freight);
        if origin.is_some_and(|want| &o != want)
            || !spec.requested_freight.iter().any(|r| r.origin == o)
        {
            continue;
        }
        let verdict = availability(stage, spec, freight, now);
        if verdict.available {
            out.push(freight);
        } else if let Some(at) = verdict.ready_at {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
    }
    (out, wake)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{FreightRequest, FreightSources, ObjectMeta};

    fn freight(name: &str, status: Value) -> Object {
        let mut body = Map::new();
        body.insert("origin".into(), json!({"kind": "Warehouse", "name": "w"}));
        body.insert("status".into(), status);
        Object {
            api_version: "kargo.akuity.io/v1alpha1".into(),
            kind: Kind::Freight,
            metadata: ObjectMeta {
                name: name.into(),
                namespace: Some("p".into()),
                ..ObjectMeta::default()
            },
            body,
        }
    }

    fn stage(sources: FreightSources) -> StageSpec {
        StageSpec {
            requested_freight: vec![FreightRequest {
                origin: FreightOrigin {
                    kind: "Warehouse".into(),
                    name: "w".into(),
                },
                sources,
            }],
            ..StageSpec::default()
        }
    }

    fn upstream(stages: &[&str], soak: Option<&str>, strategy: Option<&str>) -> StageSpec {
        stage(FreightSources {
            stages: stages.iter().map(|s| s.to_string()).collect(),
            required_soak_time: soak.map(str::to_string),
            availability_strategy: strategy.map(str::to_string),
            ..FreightSources::default()
        })
    }

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn direct_sources_take_every_freight_of_their_origin() {
        let spec = stage(FreightSources {
            direct: true,
            ..FreightSources::default()
        });
        let v = availability("test", &spec, &freight("f", json!({})), SystemTime::now());
        assert!(v.available, "{v:?}");
    }

    #[test]
    fn freight_from_an_origin_the_stage_does_not_request_is_not_available() {
        let spec = upstream(&["test"], None, None);
        let mut f = freight("f", json!({}));
        f.body.insert(
            "origin".into(),
            json!({"kind": "Warehouse", "name": "other"}),
        );
        let v = availability("uat", &spec, &f, SystemTime::now());
        assert!(!v.available);
        assert!(v.reasons[0].contains("does not request Freight from Warehouse/other"));
    }

    #[test]
    fn one_of_needs_one_verified_upstream_and_all_needs_every_one() {
        let f = freight(
            "f",
            json!({"verifiedIn": {"a": {"verifiedAt": "2026-01-01T00:00:00Z"}}}),
        );
        let now = SystemTime::now();
        assert!(availability("x", &upstream(&["a", "b"], None, None), &f, now).available);
        let all = availability("x", &upstream(&["a", "b"], None, Some("All")), &f, now);
        assert!(!all.available);
        assert!(
            all.reasons.iter().any(|r| r == "not verified in b"),
            "{all:?}"
        );
    }

    #[test]
    fn soak_counts_the_current_stay_and_says_when_it_will_be_enough() {
        let f = freight(
            "f",
            json!({
                "verifiedIn": {"test": {"verifiedAt": "2026-01-01T00:00:00Z"}},
                "currentlyIn": {"test": {"since": "2026-01-01T00:00:00Z"}},
            }),
        );
        let spec = upstream(&["test"], Some("1h"), None);
        let early = availability("uat", &spec, &f, at("2026-01-01T00:20:00Z"));
        assert!(!early.available);
        assert_eq!(early.ready_at, Some(at("2026-01-01T01:00:00Z")));
        assert!(
            early.reasons[0].contains("only 20m of the 1h required"),
            "{early:?}"
        );
        assert!(availability("uat", &spec, &f, at("2026-01-01T01:00:00Z")).available);
    }

    #[test]
    fn soak_remembers_the_longest_stay_after_the_freight_left() {
        let f = freight(
            "f",
            json!({"verifiedIn": {"test": {"verifiedAt": "2026-01-01T00:00:00Z", "longestSoak": "2h0m0s"}}}),
        );
        let spec = upstream(&["test"], Some("90m"), None);
        assert!(availability("uat", &spec, &f, SystemTime::now()).available);
        let short = upstream(&["test"], Some("3h"), None);
        let v = availability("uat", &short, &f, SystemTime::now());
        assert!(!v.available && v.ready_at.is_none(), "{v:?}");
    }

    #[test]
    fn an_approval_bypasses_verification_and_soak() {
        let f = freight(
            "f",
            json!({"approvedFor": {"prod": {"approvedAt": "2026-01-01T00:00:00Z"}}}),
        );
        let v = availability(
            "prod",
            &upstream(&["uat"], Some("1h"), None),
            &f,
            SystemTime::now(),
        );
        assert!(v.available);
        assert!(v.reasons[0].starts_with("approved for prod"));
    }

    #[test]
    fn go_durations_round_trip_through_the_parser() {
        for secs in [0, 59, 61, 3600, 3725, 90061] {
            let d = Duration::from_secs(secs);
            assert_eq!(
                parse_duration(&go_duration(d)).unwrap(),
                d,
                "{}",
                go_duration(d)
            );
        }
    }
}
