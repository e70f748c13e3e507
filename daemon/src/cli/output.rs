//! How the CLI shows resources: aligned tables like kubectl's, YAML, or JSON.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter};

use crate::resource::Kind;
use crate::resource::status::{
    AnalysisPhase, AnalysisRunStatus, FreightStatus, PromotionStatus, StageStatus, VerificationInfo,
};

/// Renders rows under a header, each column as wide as its widest cell, three spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `5s`, `3m`, `2h`, `4d`, as kubectl's AGE column.
pub fn age(created: Option<&str>, now: SystemTime) -> String {
    let Some(created) = created.and_then(|c| humantime::parse_rfc3339_weak(c).ok()) else {
        return "<unknown>".into();
    };
    let secs = now
        .duration_since(created)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The status of a listed object as its type; a table shows what it can of one it cannot read.
fn status<T: serde::de::DeserializeOwned + Default>(o: &Value) -> T {
    o.get("status")
        .and_then(|s| T::deserialize(s).ok())
        .unwrap_or_default()
}

/// The aliases of the Freight a Stage holds now.
fn stage_freight(s: &StageStatus) -> String {
    let held: Vec<String> = s
        .current()
        .map(|c| c.items.values().map(|i| i.shown().to_string()).collect())
        .unwrap_or_default();
    if held.is_empty() {
        "-".into()
    } else {
        held.join(",")
    }
}

/// What a Stage is doing: promoting, verifying, or how its last verification ended.
fn stage_state(s: &StageStatus) -> String {
    if s.current_promotion.is_some() {
        return "promoting".into();
    }
    match s.current_verification().map(VerificationInfo::phase) {
        Some(p) if !p.is_terminal() => "verifying".into(),
        Some(AnalysisPhase::Successful) => "verified".into(),
        Some(other) => format!("verification {}", other.as_str().to_lowercase()),
        None if s.current().is_some() => "steady".into(),
        None => "-".into(),
    }
}

fn text(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The strings of a JSON array (other items and a missing array: none).
pub fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

fn array<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Header names, and the function that fills those cells for one object.
type Columns = (&'static [&'static str], fn(&Value) -> Vec<String>);

/// The columns shown for each kind (besides PROJECT, NAME and AGE).
fn columns(kind: Kind) -> Columns {
    match kind {
        Kind::Stage => (
            &[
                "SOURCES",
                "STEPS",
                "VERIFICATION",
                "AUTO",
                "FREIGHT",
                "STATE",
                "HEALTH",
            ],
            |o| {
                let status: StageStatus = status(o);
                let sources: Vec<String> = array(o, "/spec/requestedFreight")
                    .iter()
                    .map(|r| {
                        let mut from = Vec::new();
                        if r.pointer("/sources/direct") == Some(&Value::Bool(true)) {
                            match r.get("originSelector") {
                                // Warehouses by label: `warehouses{team=shop}`.
                                Some(selector) => {
                                    from.push(format!("warehouses{{{}}}", selector_text(selector)))
                                }
                                None => from.push(format!("warehouse/{}", text(r, "/origin/name"))),
                            }
                        }
                        from.extend(
                            array(r, "/sources/stages")
                                .iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string),
                        );
                        from.join("+")
                    })
                    .collect();
                let steps = array(o, "/spec/promotionTemplate/spec/steps").len();
                let templates: Vec<String> = array(o, "/spec/verification/analysisTemplates")
                    .iter()
                    .map(|t| text(t, "/name"))
                    .collect();
                vec![
                    sources.join(","),
                    if steps == 0 {
                        "none (control flow)".into()
                    } else {
                        steps.to_string()
                    },
                    if templates.is_empty() {
                        "-".into()
                    } else {
                        templates.join(",")
                    },
                    if status.auto_promotion_enabled == Some(true) {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                    stage_freight(&status),
                    stage_state(&status),
                    status
                        .health
                        .as_ref()
                        .map_or("-", |h| h.status.as_str())
                        .into(),
                ]
            },
        ),
        Kind::Warehouse => (&["SUBSCRIPTIONS", "INTERVAL", "FREIGHT CREATION"], |o| {
            let subs: Vec<String> = array(o, "/spec/subscriptions")
                .iter()
                .filter_map(|s| {
                    ["image", "git", "chart"].iter().find_map(|t| {
                        s.get(*t).map(|sub| {
                            let name = text(sub, "/name");
                            let repo = text(sub, "/repoURL");
                            if name.is_empty() {
                                format!("{t}:{repo}")
                            } else {
                                format!("{t}:{repo}/{name}")
                            }
                        })
                    })
                })
                .collect();
            vec![
                subs.join(","),
                text(o, "/spec/interval"),
                text(o, "/spec/freightCreationPolicy"),
            ]
        }),
        Kind::Freight => (
            &["ALIAS", "ORIGIN", "ARTIFACTS", "IN", "VERIFIED IN"],
            |o| {
                let mut artifacts = Vec::new();
                for i in array(o, "/images") {
                    artifacts.push(format!("{}:{}", text(i, "/repoURL"), text(i, "/tag")));
                }
                for c in array(o, "/commits") {
                    let id = text(c, "/id");
                    artifacts.push(format!(
                        "{}@{}",
                        text(c, "/repoURL"),
                        &id[..id.len().min(7)]
                    ));
                }
                for c in array(o, "/charts") {
                    artifacts.push(format!(
                        "{}/{}:{}",
                        text(c, "/repoURL"),
                        text(c, "/name"),
                        text(c, "/version")
                    ));
                }
                let status: FreightStatus = status(o);
                let stages = |names: Vec<&String>| -> String {
                    if names.is_empty() {
                        "-".into()
                    } else {
                        names.into_iter().cloned().collect::<Vec<_>>().join(",")
                    }
                };
                vec![
                    text(o, "/alias"),
                    text(o, "/origin/name"),
                    artifacts.join(","),
                    stages(status.currently_in.keys().collect()),
                    stages(status.verified_in.keys().collect()),
                ]
            },
        ),
        Kind::Promotion => (&["STAGE", "FREIGHT", "PHASE"], |o| {
            vec![
                text(o, "/spec/stage"),
                text(o, "/spec/freight"),
                status::<PromotionStatus>(o).phase().to_string(),
            ]
        }),
        Kind::ConfigMap => (&["KEYS"], |o| {
            let keys: Vec<String> = o
                .get("data")
                .and_then(Value::as_object)
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default();
            vec![keys.join(",")]
        }),
        Kind::Secret => (&["CRED TYPE", "KEYS"], |o| {
            let keys: Vec<String> = o
                .get("data")
                .and_then(Value::as_object)
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default();
            vec![
                text(o, "/metadata/labels/kargo.akuity.io~1cred-type"),
                keys.join(","),
            ]
        }),
        Kind::ProjectConfig => (&["AUTO-PROMOTION POLICIES", "RECEIVERS"], |o| {
            vec![
                array(o, "/spec/promotionPolicies").len().to_string(),
                array(o, "/spec/webhookReceivers").len().to_string(),
            ]
        }),
        Kind::ClusterConfig => (&["RECEIVERS"], |o| {
            vec![array(o, "/spec/webhookReceivers").len().to_string()]
        }),
        Kind::AnalysisTemplate | Kind::ClusterAnalysisTemplate => (&["METRICS"], |o| {
            vec![
                array(o, "/spec/metrics")
                    .iter()
                    .map(|m| text(m, "/name"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        }),
        Kind::AnalysisRun => (&["STAGE", "FREIGHT", "PHASE", "MESSAGE"], |o| {
            vec![
                text(o, "/metadata/labels/kargo.akuity.io~1stage"),
                text(o, "/spec/freight"),
                status::<AnalysisRunStatus>(o).phase().to_string(),
                status::<AnalysisRunStatus>(o).message.unwrap_or_default(),
            ]
        }),
        Kind::Event => (&["TYPE", "REASON", "OBJECT", "ACTOR", "MESSAGE"], |o| {
            vec![
                text(o, "/type"),
                text(o, "/reason"),
                format!(
                    "{}/{}",
                    text(o, "/involvedObject/kind"),
                    text(o, "/involvedObject/name")
                ),
                text(o, "/metadata/annotations/event.kargo.akuity.io~1actor"),
                text(o, "/message"),
            ]
        }),
        Kind::PromotionTask | Kind::ClusterPromotionTask => (&["STEPS"], |o| {
            vec![array(o, "/spec/steps").len().to_string()]
        }),
        Kind::Project => (&["STAGES", "WAREHOUSES", "UNHEALTHY"], |o| {
            // `status.stats`, which the daemon computes when a Project is read.
            let stats = o.pointer("/status/stats");
            let count = |path: &str| stats.and_then(|s| s.pointer(path)).and_then(Value::as_u64);
            let (Some(stages), Some(warehouses)) =
                (count("/stages/count"), count("/warehouses/count"))
            else {
                return vec!["-".into(), "-".into(), "-".into()];
            };
            let healthy = count("/stages/health/healthy").unwrap_or(0)
                + count("/warehouses/health/healthy").unwrap_or(0);
            vec![
                stages.to_string(),
                warehouses.to_string(),
                (stages + warehouses).saturating_sub(healthy).to_string(),
            ]
        }),
    }
}

/// The table for a list of objects of one kind; `with_project` adds a PROJECT column.
pub fn objects_table(kind: Kind, items: &[Value], with_project: bool, now: SystemTime) -> String {
    let (extra, cells) = columns(kind);
    let mut header = Vec::new();
    if with_project {
        header.push("PROJECT");
    }
    header.push("NAME");
    header.extend_from_slice(extra);
    header.push("AGE");
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|o| {
            let mut row = Vec::new();
            if with_project {
                row.push(text(o, "/metadata/namespace"));
            }
            row.push(text(o, "/metadata/name"));
            row.extend(cells(o));
            row.push(age(
                o.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str),
                now,
            ));
            row
        })
        .collect();
    table(&header, &rows)
}

fn to_yaml(v: &Value) -> Yaml {
    match v {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => n
            .as_i64()
            .map_or_else(|| Yaml::Real(n.to_string()), Yaml::Integer),
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(items) => Yaml::Array(items.iter().map(to_yaml).collect()),
        Value::Object(map) => {
            let mut hash = Hash::new();
            for (k, v) in map {
                hash.insert(Yaml::String(k.clone()), to_yaml(v));
            }
            Yaml::Hash(hash)
        }
    }
}

/// One YAML document per value, each starting with `---`.
pub fn yaml(values: &[Value]) -> String {
    let mut out = String::new();
    for v in values {
        let mut doc = String::new();
        let mut emitter = YamlEmitter::new(&mut doc);
        emitter.multiline_strings(true);
        if emitter.dump(&to_yaml(v)).is_ok() {
            out.push_str(&doc);
            out.push('\n');
        }
    }
    out
}

/// A label selector as `kubectl` writes one: `team=shop,tier in (a,b),!legacy`.
fn selector_text(selector: &Value) -> String {
    let mut parts: Vec<String> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for r in array(selector, "/matchExpressions") {
        let key = text(r, "/key");
        let values: Vec<&str> = array(r, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match text(r, "/operator").as_str() {
            "Exists" => key,
            "DoesNotExist" => format!("!{key}"),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            _ => format!("{key} in ({})", values.join(",")),
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "AGE"],
            &[
                vec!["test".into(), "5s".into()],
                vec!["production".into(), "2h".into()],
            ],
        );
        assert_eq!(t, "NAME         AGE\ntest         5s\nproduction   2h\n");
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now = humantime::parse_rfc3339("2026-01-02T00:00:00Z").expect("time");
        assert_eq!(age(Some("2026-01-01T23:59:30Z"), now), "30s");
        assert_eq!(age(Some("2026-01-01T23:00:00Z"), now), "60m");
        assert_eq!(age(Some("2026-01-01T00:00:00Z"), now), "24h");
        assert_eq!(age(Some("2025-12-01T00:00:00Z"), now), "32d");
    }

    #[test]
    fn yaml_round_trips_through_the_manifest_reader() {
        let v = serde_json::json!({"kind": "Stage", "spec": {"n": 3, "ok": true, "s": "1.2", "text": "a\nb"}});
        let docs = crate::manifest::parse(&yaml(std::slice::from_ref(&v))).expect("valid yaml");
        assert_eq!(docs[0].value, v);
    }
}
