//! Events: what happened in a project, in words (Kargo's event reasons, KARGO-REFERENCE §15).
//!
//! An Event is stored like any resource (`dray get events -p P`), named by a ULID so that names
//! sort by time, and written in the same transaction as the change it reports: an event is never
//! recorded for a change that did not happen, nor missed for one that did. The payload follows
//! Kargo's annotations (`event.kargo.akuity.io/actor`, `freight-name`, `stage-name`,
//! `promotion-name`, `analysis-run-name`). Garbage collection keeps the newest
//! [`MAX_EVENTS_PER_PROJECT`] of each project.

use std::collections::BTreeMap;

use serde_json::{Map, json};

use crate::resource::{Kind, Object, ObjectMeta};
use crate::store::{StatusMode, StoreError, WriteTx};

/// How many Events a project keeps.
pub const MAX_EVENTS_PER_PROJECT: usize = 1000;

/// What an Event concerns, for its annotations.
#[derive(Debug, Default, Clone)]
pub struct About<'a> {
    pub actor: Option<&'a str>,
    pub freight: Option<&'a str>,
    pub stage: Option<&'a str>,
    pub promotion: Option<&'a str>,
    pub analysis_run: Option<&'a str>,
}

/// Warning for failures, Normal otherwise.
fn severity(reason: &str) -> &'static str {
    if ["Failed", "Errored", "Aborted", "Inconclusive", "Discarded"]
        .iter()
        .any(|bad| reason.ends_with(bad))
    {
        "Warning"
    } else {
        "Normal"
    }
}

/// Records Event `reason` about `object` (kind, name) of `project`.
pub fn record(
    tx: &mut WriteTx,
    project: &str,
    reason: &str,
    message: String,
    object: (Kind, &str),
    about: About<'_>,
) -> Result<(), StoreError> {
    let now = crate::resource::now();
    let mut annotations = BTreeMap::new();
    for (key, value) in [
        ("actor", about.actor),
        ("freight-name", about.freight),
        ("stage-name", about.stage),
        ("promotion-name", about.promotion),
        ("analysis-run-name", about.analysis_run),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            annotations.insert(format!("event.kargo.akuity.io/{key}"), v.to_string());
        }
    }
    let mut body = Map::new();
    body.insert("type".into(), json!(severity(reason)));
    body.insert("reason".into(), json!(reason));
    body.insert("message".into(), json!(message));
    body.insert(
        "involvedObject".into(),
        json!({"kind": object.0.as_str(), "name": object.1, "namespace": project}),
    );
    body.insert("firstTimestamp".into(), json!(now));
    body.insert("source".into(), json!({"component": "dray"}));
    let event = Object {
        api_version: "v1".into(),
        kind: Kind::Event,
        metadata: ObjectMeta {
            name: ulid::Ulid::new().to_string().to_lowercase(),
            namespace: Some(project.into()),
            annotations,
            ..ObjectMeta::default()
        },
        body,
    };
    tx.put(event, Some("0"), StatusMode::Replace)?;
    Ok(())
}

/// Records who created, changed or deleted an object (`verb`: `Created`, `Configured`,
/// `Deleted`) as Event `<Kind><verb>` in the object's project, e.g. `StageConfigured`. False for
/// what has no project to hold the Event (cluster-scoped kinds, a Project's own deletion, which
/// takes its Events with it): the caller logs those.
pub fn record_change(
    tx: &mut WriteTx,
    object: &Object,
    verb: &str,
    actor: &str,
) -> Result<bool, StoreError> {
    let project = match object.kind {
        Kind::Event => return Ok(false),
        Kind::Project if verb != "Deleted" => object.name(),
        kind if kind.namespaced() => object.project(),
        _ => return Ok(false),
    };
    let freight = (object.kind == Kind::Freight).then(|| object.name());
    let stage = (object.kind == Kind::Stage).then(|| object.name());
    record(
        tx,
        project,
        &format!("{}{verb}", object.kind),
        format!(
            "{} {} {} by {actor}",
            object.kind,
            object.name(),
            verb.to_lowercase()
        ),
        (object.kind, object.name()),
        About {
            actor: Some(actor),
            freight,
            stage,
            ..Default::default()
        },
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_warnings() {
        assert_eq!(severity("PromotionFailed"), "Warning");
        assert_eq!(severity("FreightVerificationInconclusive"), "Warning");
        assert_eq!(severity("PromotionSucceeded"), "Normal");
        assert_eq!(severity("FreightApproved"), "Normal");
    }
}
