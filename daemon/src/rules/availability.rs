//! Availability and soak: which Freight a Stage may take, and why.
//!
//! Semantics are Kargo's (KARGO-REFERENCE §5.3, §6.1). A Freight is available to a Stage that
//! requests its origin when it was approved for that Stage, when the Stage takes the origin
//! `direct`ly, or when it was verified (and soaked for `requiredSoakTime`) in one upstream Stage
//! (`OneOf`, the default) or in every one (`All`). The soak is the longest continuous stay in the
//! upstream Stage, or the current stay if longer. Every decision comes with its reasons, so
//! `dray explain` can answer "why is this Freight not available to prod?".
//!
//! The facts live in the Freight's [`FreightStatus`] (`currentlyIn`, `verifiedIn`,
//! `approvedFor`); `engine::decisions::freight` keeps them in step with the Stages. Nothing here
//! reads the store or the clock: `now` is an argument.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::resource::status::{FreightStatus, StatusError};
use crate::resource::validate::parse_duration;
use crate::resource::{FreightOrigin, Object, StageSpec};

/// `Warehouse/name`, the key of a Stage's `freightHistory[].items`.
pub fn origin_key(origin: &FreightOrigin) -> String {
    format!("{}/{}", origin.kind, origin.name)
}

pub fn time_text(t: SystemTime) -> String {
    crate::resource::timestamp(t)
}

/// A status time back as a time (`None` when absent or unreadable).
pub fn parse_time(text: Option<&str>) -> Option<SystemTime> {
    text.and_then(|t| humantime::parse_rfc3339_weak(t).ok())
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
        .and_then(|o| FreightOrigin::deserialize(o).ok())
        .unwrap_or_default()
}

/// When the Freight came to be: `discoveredAt`, else its creation time.
pub fn freight_time(freight: &Object) -> SystemTime {
    parse_time(freight.body.get("discoveredAt").and_then(|v| v.as_str()))
        .or_else(|| parse_time(freight.metadata.creation_timestamp.as_deref()))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// What availability reads of one Freight: small enough that a pass over 100,000 of them holds
/// no artifact lists.
#[derive(Debug, Clone, PartialEq)]
pub struct FreightFacts {
    pub name: String,
    pub alias: Option<String>,
    pub origin: FreightOrigin,
    /// `discoveredAt`, else the creation time.
    pub time: SystemTime,
    pub status: FreightStatus,
}

/// The part of a Freight's status availability reads. Read without the fields it does not need
/// (nor the unknown ones [`FreightStatus`] keeps): a pass reads it for every Freight of a
/// project, and buffering the rest costs a tenth of the pass.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Facts {
    #[serde(default)]
    currently_in: std::collections::BTreeMap<String, crate::resource::status::CurrentStage>,
    #[serde(default)]
    verified_in: std::collections::BTreeMap<String, crate::resource::status::VerifiedStage>,
    #[serde(default)]
    approved_for: std::collections::BTreeMap<String, crate::resource::status::ApprovedStage>,
}

impl FreightFacts {
    /// The facts of `freight`; their `status` holds `currentlyIn`, `verifiedIn` and
    /// `approvedFor` only (it is for reading, never written back).
    pub fn of(freight: &Object) -> Result<FreightFacts, StatusError> {
        let facts: Facts = freight.status_of()?;
        let status = FreightStatus {
            currently_in: facts.currently_in,
            verified_in: facts.verified_in,
            approved_for: facts.approved_for,
            ..FreightStatus::default()
        };
        Ok(FreightFacts {
            name: freight.name().to_string(),
            alias: freight
                .body
                .get("alias")
                .and_then(|a| a.as_str())
                .map(str::to_string),
            origin: freight_origin(freight),
            time: freight_time(freight),
            status,
        })
    }
}

/// Newest first; equal times by name, so the order is stable.
pub fn sort_newest_first(freight: &mut [FreightFacts]) {
    freight.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.name.cmp(&b.name)));
}

/// How long a Freight has soaked in `stage`: its longest continuous stay there, or its current
/// stay if that is longer.
pub fn soaked(status: &FreightStatus, stage: &str, now: SystemTime) -> Duration {
    let longest = status
        .verified_in
        .get(stage)
        .and_then(|v| v.longest_soak.as_deref())
        .and_then(|d| parse_duration(d).ok())
        .unwrap_or_default();
    let current = status
        .currently_in
        .get(stage)
        .and_then(|c| parse_time(c.since.as_deref()))
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
pub fn availability(
    stage: &str,
    spec: &StageSpec,
    freight: &FreightFacts,
    now: SystemTime,
) -> Verdict {
    let origin = &freight.origin;
    let status = &freight.status;
    let mut verdict = Verdict {
        available: false,
        reasons: Vec::new(),
        ready_at: None,
    };
    let requests: Vec<_> = spec
        .requested_freight
        .iter()
        .filter(|r| &r.origin == origin)
        .collect();
    if requests.is_empty() {
        let wanted: Vec<String> = spec
            .requested_freight
            .iter()
            .map(|r| origin_key(&r.origin))
            .collect();
        verdict.reasons.push(if wanted.is_empty() {
            format!(
                "{stage} does not request Freight from {} (its originSelector matches no Warehouse)",
                origin_key(origin)
            )
        } else {
            format!(
                "{stage} does not request Freight from {} (it requests {})",
                origin_key(origin),
                wanted.join(", ")
            )
        });
        return verdict;
    }
    if let Some(at) = status
        .approved_for
        .get(stage)
        .and_then(|a| a.approved_at.as_deref())
    {
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
                origin_key(origin)
            ));
            return verdict;
        }
        if sources.stages.is_empty() {
            verdict.reasons.push(format!(
                "{stage} requests {} neither directly nor from upstream Stages",
                origin_key(origin)
            ));
            continue;
        }
        if upstream(stage, sources, status, now, &mut verdict) {
            return verdict;
        }
    }
    verdict
}

/// Judges one request's upstream Stages (`sources.stages`, not empty): adds a reason per Stage
/// and the rule's outcome to `verdict`, and returns true when the Freight is available.
fn upstream(
    stage: &str,
    sources: &crate::resource::FreightSources,
    status: &FreightStatus,
    now: SystemTime,
    verdict: &mut Verdict,
) -> bool {
    let required = sources
        .required_soak_time
        .as_deref()
        .and_then(|d| parse_duration(d).ok())
        .unwrap_or_default();
    let all = sources.availability_strategy.as_deref() == Some("All");
    let mut passed = 0;
    for upstream in &sources.stages {
        let verified = status.verified_in.get(upstream);
        let Some(at) = verified.and_then(|v| v.verified_at.as_deref()) else {
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
        let soak = soaked(status, upstream, now);
        if soak >= required {
            passed += 1;
            verdict.reasons.push(format!(
                "verified in {upstream} and soaked there {} (at least {} required)",
                human(soak),
                human(required)
            ));
        } else if status.currently_in.contains_key(upstream) {
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
        return true;
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
    false
}

/// Kargo's FreightCollection id: sha1 of the sorted Freight names joined by ",".
pub fn collection_id(names: &[String]) -> String {
    use sha1::Digest;
    let mut sorted = names.to_vec();
    sorted.sort();
    hex::encode(sha1::Sha1::digest(sorted.join(",").as_bytes()))
}

/// The Freight of `all` (newest first) available to the Stage, only of `origin` if given, and
/// the earliest time a soak will make one more available.
pub fn available_among<'a>(
    all: &'a [FreightFacts],
    stage: &str,
    spec: &StageSpec,
    origin: Option<&FreightOrigin>,
    now: SystemTime,
) -> (Vec<&'a FreightFacts>, Option<SystemTime>) {
    let mut wake: Option<SystemTime> = None;
    let mut out = Vec::new();
    for freight in all {
        if origin.is_some_and(|want| &freight.origin != want)
            || !spec
                .requested_freight
                .iter()
                .any(|r| r.origin == freight.origin)
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
    use crate::resource::{FreightRequest, FreightSources};
    use serde_json::{Value, json};

    fn freight(name: &str, status: Value) -> FreightFacts {
        FreightFacts {
            name: name.into(),
            alias: None,
            origin: FreightOrigin {
                kind: "Warehouse".into(),
                name: "w".into(),
            },
            time: SystemTime::UNIX_EPOCH,
            status: serde_json::from_value(status).expect("a Freight status"),
        }
    }

    fn stage(sources: FreightSources) -> StageSpec {
        StageSpec {
            requested_freight: vec![FreightRequest {
                origin: FreightOrigin {
                    kind: "Warehouse".into(),
                    name: "w".into(),
                },
                origin_selector: None,
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
        f.origin.name = "other".into();
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
