//! `GET /v1/projects/{project}/graph`: a project's pipeline as the web UI draws it, in one
//! answer: every Warehouse and Stage placed (column and row, [`crate::rules::layout`]), the
//! edges between them, and for each Stage what it holds, what it is doing and which newer
//! Freight waits for it. The browser places boxes; it computes nothing from whole objects.

use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use serde_json::Value;

use super::{ApiError, AppState};
use crate::engine::decisions::freight::FreightByOrigin;
use crate::resource::status::{
    AnalysisPhase, FreightReference, PromotionPhase, StageStatus, VerificationInfo,
};
use crate::resource::{FreightOrigin, Kind, Object, StageSpec};
use crate::rules::availability::{self, origin_key};
use crate::rules::layout;
use crate::store::{Reader, StoreError};

/// How many of an origin's newest Freight are looked at for one that waits for a Stage.
const LOOK_BACK: usize = 20;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Graph {
    project: String,
    /// The store's sequence the graph was read at: a watch from it misses nothing.
    sequence: u64,
    columns: usize,
    rows: f64,
    nodes: Vec<Node>,
    /// Upstream → downstream, by index into `nodes`.
    edges: Vec<(usize, usize)>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    kind: &'static str,
    name: String,
    column: usize,
    row: f64,
    /// A Warehouse: its subscriptions (`image:REPO`, `git:URL`, `chart:REPO/NAME`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subscriptions: Vec<String>,
    /// A Warehouse: its newest Freight. A Stage: what it holds.
    freight: Vec<Shown>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stage: Option<StageView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StageView {
    /// `promoting`, `verifying`, `verified`, `failed` (its last Promotion or verification),
    /// `steady` (holds Freight, nothing to verify), `empty`.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    promotion: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_promotion: Option<LastPromotion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification: Option<Verification>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<&'static str>,
    auto_promotion: bool,
    /// The Warehouses whose Freight it takes (directly or through upstream Stages).
    origins: Vec<String>,
    /// Newer Freight it may take now, per origin.
    waiting: Vec<Shown>,
    /// It has no promotion steps (it only passes Freight on).
    control_flow: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LastPromotion {
    name: String,
    phase: PromotionPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Verification {
    run: String,
    phase: AnalysisPhase,
}

/// A Freight as a box shows it.
#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Shown {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    alias: Option<String>,
    origin: String,
    /// `REPO:TAG` for images, `REPO@SHORT-ID` for commits, `REPO/NAME:VERSION` for charts.
    artifacts: Vec<String>,
}

impl Shown {
    fn of(f: &FreightReference) -> Shown {
        let mut artifacts = Vec::new();
        artifacts.extend(f.images.iter().map(|i| format!("{}:{}", i.repo_url, i.tag)));
        artifacts.extend(f.commits.iter().map(|c| {
            let short = c.id.get(..7).unwrap_or(&c.id);
            format!("{}@{short}", c.repo_url)
        }));
        artifacts.extend(f.charts.iter().map(|c| match c.name.as_str() {
            "" => format!("{}:{}", c.repo_url, c.version),
            name => format!("{}/{name}:{}", c.repo_url, c.version),
        }));
        Shown {
            name: f.name.clone(),
            alias: f.alias.clone(),
            origin: f.origin.name.clone(),
            artifacts,
        }
    }

    fn of_object(freight: &Object) -> Result<Shown, StoreError> {
        let f: crate::resource::Freight =
            freight.typed().map_err(|source| StoreError::Corrupt {
                key: format!("Freight/{}/{}", freight.project(), freight.name()),
                source,
            })?;
        Ok(Shown::of(&FreightReference::of(&f)))
    }
}

pub async fn graph(
    State(state): State<AppState>,
    Path(project): Path<String>,
) -> Result<Json<Graph>, ApiError> {
    // Read before the graph: a change made while it is read is then seen again by a watch.
    let sequence = state.store.last_seq();
    let graph = state
        .store
        .read_async(move |r| {
            if r.get(Kind::Project, "", &project)?.is_none() {
                return Ok(None);
            }
            read(r, &project, sequence, SystemTime::now()).map(Some)
        })
        .await?;
    graph.map(Json).ok_or_else(|| {
        ApiError::NotFound("project not found: list projects with `dray get projects`".into())
    })
}

fn read(
    r: &impl Reader,
    project: &str,
    sequence: u64,
    now: SystemTime,
) -> Result<Graph, StoreError> {
    let mut warehouses = r.list(Kind::Warehouse, Some(project), None)?;
    warehouses.sort_by(|a, b| a.name().cmp(b.name()));
    let mut stages = r.list(Kind::Stage, Some(project), None)?;
    stages.sort_by(|a, b| a.name().cmp(b.name()));
    let index_of = |kind: Kind, name: &str| -> Option<usize> {
        match kind {
            Kind::Warehouse => warehouses.binary_search_by(|w| w.name().cmp(name)).ok(),
            _ => stages
                .binary_search_by(|s| s.name().cmp(name))
                .ok()
                .map(|i| warehouses.len() + i),
        }
    };

    let mut upstream: Vec<Vec<usize>> = vec![Vec::new(); warehouses.len()];
    let mut specs = Vec::with_capacity(stages.len());
    let mut statuses = Vec::with_capacity(stages.len());
    for stage in &stages {
        let status: StageStatus = stage.status_of()?;
        let spec: StageSpec = stage.spec_of()?;
        let spec = if spec
            .requested_freight
            .iter()
            .any(|f| f.origin_selector.is_some())
        {
            crate::engine::decisions::stage::resolved(r, project, spec)?
        } else {
            spec
        };
        let mut ups = Vec::new();
        for request in &spec.requested_freight {
            if request.sources.direct {
                ups.extend(index_of(Kind::Warehouse, &request.origin.name));
            }
            for s in &request.sources.stages {
                ups.extend(index_of(Kind::Stage, s));
            }
        }
        upstream.push(ups);
        specs.push(spec);
        statuses.push(status);
    }
    let places = layout::layered(&upstream);

    let mut by_origin = FreightByOrigin::new(project);
    let mut nodes = Vec::with_capacity(places.len());
    for (w, place) in warehouses.iter().zip(&places) {
        let newest = r.freight_newest_first(
            project,
            &origin_key(&FreightOrigin {
                kind: "Warehouse".into(),
                name: w.name().to_string(),
            }),
            0,
            1,
        )?;
        nodes.push(Node {
            kind: "Warehouse",
            name: w.name().to_string(),
            column: place.column,
            row: place.row,
            subscriptions: subscriptions(w.spec()),
            freight: newest
                .iter()
                .map(Shown::of_object)
                .collect::<Result<_, _>>()?,
            stage: None,
        });
    }
    for (((stage, spec), status), place) in stages
        .iter()
        .zip(&specs)
        .zip(&statuses)
        .zip(&places[warehouses.len()..])
    {
        let view = stage_view(r, project, stage.name(), spec, status, &mut by_origin, now)?;
        nodes.push(Node {
            kind: "Stage",
            name: stage.name().to_string(),
            column: place.column,
            row: place.row,
            subscriptions: Vec::new(),
            freight: status
                .current()
                .map(|c| c.items.values().map(Shown::of).collect())
                .unwrap_or_default(),
            stage: Some(view),
        });
    }
    let edges = upstream
        .iter()
        .enumerate()
        .flat_map(|(to, ups)| ups.iter().map(move |&from| (from, to)))
        .collect();
    Ok(Graph {
        project: project.to_string(),
        sequence,
        columns: places.iter().map(|p| p.column + 1).max().unwrap_or(0),
        rows: places.iter().map(|p| p.row + 1.0).fold(0.0, f64::max),
        nodes,
        edges,
    })
}

fn subscriptions(spec: &Value) -> Vec<String> {
    let empty = Vec::new();
    spec["subscriptions"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|s| {
            ["image", "git", "chart"].iter().find_map(|kind| {
                let sub = s.get(*kind)?;
                let repo = sub["repoURL"].as_str().unwrap_or_default();
                Some(match sub["name"].as_str() {
                    Some(name) if !name.is_empty() => format!("{kind}:{repo}/{name}"),
                    _ => format!("{kind}:{repo}"),
                })
            })
        })
        .collect()
}

/// What a Stage is doing, as the UI shows it: `promoting`, `verifying`, `failed` (its last
/// Promotion failed or errored, or its verification did not succeed), `verified`, `steady`
/// (holds Freight, nothing to verify) or `empty`.
pub(super) fn stage_state(status: &StageStatus) -> &'static str {
    let verification = status.current_verification().map(VerificationInfo::phase);
    let last_failed = status
        .last_promotion
        .as_ref()
        .and_then(|p| p.status.as_ref())
        .and_then(|o| o.phase)
        .is_some_and(|phase| matches!(phase, PromotionPhase::Failed | PromotionPhase::Errored));
    if status.current_promotion.is_some() {
        "promoting"
    } else if verification.is_some_and(|phase| !phase.is_terminal()) {
        "verifying"
    } else if last_failed {
        "failed"
    } else {
        match verification {
            Some(AnalysisPhase::Successful) => "verified",
            Some(_) => "failed",
            None if status.current().is_some() => "steady",
            None => "empty",
        }
    }
}

/// A project at a glance, as Kargo's Project `status.stats` (how many Warehouses and Stages,
/// how many healthy) and Dray's count of Stages by [`stage_state`]. A Warehouse is healthy when
/// its last discovery found all it should; a Stage when it has not failed and what it watches
/// (if anything) is healthy.
pub(super) fn project_stats(r: &impl Reader, project: &str) -> Result<Value, StoreError> {
    let mut stages = 0u64;
    let mut healthy_stages = 0u64;
    let mut states = std::collections::BTreeMap::<&str, u64>::new();
    let mut unreadable = None;
    r.visit(
        Kind::Stage,
        Some(project),
        &mut |o| match o.status_of::<StageStatus>() {
            Ok(status) => {
                let state = stage_state(&status);
                stages += 1;
                *states.entry(state).or_default() += 1;
                let watched_healthy = status
                    .health
                    .as_ref()
                    .is_none_or(|h| h.status == crate::resource::status::HealthState::Healthy);
                if state != "failed" && watched_healthy {
                    healthy_stages += 1;
                }
            }
            Err(e) => unreadable = Some(e),
        },
    )?;
    if let Some(e) = unreadable {
        return Err(e.into());
    }
    let mut warehouses = 0u64;
    let mut healthy_warehouses = 0u64;
    r.visit(Kind::Warehouse, Some(project), &mut |o| {
        warehouses += 1;
        match o.status_of::<crate::resource::status::WarehouseStatus>() {
            Ok(status) if status.message.is_none() => healthy_warehouses += 1,
            Ok(_) => {}
            Err(e) => unreadable = Some(e),
        }
    })?;
    if let Some(e) = unreadable {
        return Err(e.into());
    }
    Ok(serde_json::json!({
        "warehouses": {"count": warehouses, "health": {"healthy": healthy_warehouses}},
        "stages": {"count": stages, "health": {"healthy": healthy_stages}, "states": states},
    }))
}

fn stage_view(
    r: &impl Reader,
    project: &str,
    stage: &str,
    spec: &StageSpec,
    status: &StageStatus,
    by_origin: &mut FreightByOrigin,
    now: SystemTime,
) -> Result<StageView, StoreError> {
    let verification = status
        .current_verification()
        .map(|v: &VerificationInfo| Verification {
            run: v.id.clone(),
            phase: v.phase(),
        });
    let last_promotion = status.last_promotion.as_ref().map(|p| {
        let outcome = p.status.as_ref();
        LastPromotion {
            name: p.name.clone(),
            phase: outcome
                .and_then(|o| o.phase)
                .unwrap_or(PromotionPhase::Pending),
            message: outcome.and_then(|o| o.message.clone()),
        }
    });
    let state = stage_state(status);

    // Per origin: the newest Freight the Stage may take that is newer than what it holds.
    let held: Vec<String> = status.current_names();
    let mut waiting = Vec::new();
    let mut origins: Vec<&FreightOrigin> =
        spec.requested_freight.iter().map(|r| &r.origin).collect();
    origins.dedup();
    for origin in origins {
        for index in 0..LOOK_BACK {
            let Some(f) = by_origin.nth(r, origin, index)? else {
                break;
            };
            if held.contains(&f.name) {
                break;
            }
            if availability::availability(stage, spec, f, now).available {
                if let Some(freight) = r.get(Kind::Freight, project, &f.name)? {
                    waiting.push(Shown::of_object(&freight)?);
                }
                break;
            }
        }
    }
    Ok(StageView {
        state,
        promotion: status.current_promotion.as_ref().map(|p| p.name.clone()),
        last_promotion,
        verification,
        health: status.health.as_ref().map(|h| h.status.as_str()),
        auto_promotion: status.auto_promotion_enabled == Some(true),
        origins: spec
            .requested_freight
            .iter()
            .map(|r| r.origin.name.clone())
            .collect(),
        waiting,
        control_flow: spec
            .promotion_template
            .as_ref()
            .is_none_or(|t| t.spec.steps.is_empty()),
    })
}

/// The most Freight one timeline answer holds.
const MAX_TIMELINE: usize = 200;

#[derive(serde::Deserialize)]
pub struct TimelineQuery {
    warehouse: String,
    /// With a Stage: whether each Freight is available to it, and why.
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    skip: usize,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TimelineEntry {
    #[serde(flatten)]
    shown: Shown,
    /// `discoveredAt`, else when it was made.
    time: String,
    currently_in: Vec<String>,
    verified_in: Vec<String>,
    approved_for: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    availability: Option<availability::Verdict>,
}

/// `GET /v1/projects/{project}/timeline?warehouse=W[&stage=S][&skip=N][&limit=M]`: a
/// Warehouse's Freight, newest first, a page at a time (at most 200), each with the Stages it
/// is in, verified in and approved for, and, given a Stage, whether that Stage may take it and
/// why.
pub async fn timeline(
    State(state): State<AppState>,
    Path(project): Path<String>,
    query: Result<axum::extract::Query<TimelineQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let axum::extract::Query(query) = query.map_err(|e| {
        ApiError::BadRequest(format!(
            "{}: ask for ?warehouse=W[&stage=S][&skip=N][&limit=M]",
            e.body_text()
        ))
    })?;
    let limit = query.limit.unwrap_or(50).min(MAX_TIMELINE);
    let answer = state
        .store
        .read_async(move |r| {
            let run = || -> Result<Value, ApiError> {
                if r.get(Kind::Warehouse, &project, &query.warehouse)?
                    .is_none()
                {
                    return Err(ApiError::NotFound(format!(
                        "Warehouse {:?} not found in project {project:?}",
                        query.warehouse
                    )));
                }
                let spec = match &query.stage {
                    Some(stage) => Some(super::pipeline::stage_spec(r, &project, stage)?.1),
                    None => None,
                };
                let origin = FreightOrigin {
                    kind: "Warehouse".into(),
                    name: query.warehouse.clone(),
                };
                // One more than asked: whether there are more.
                let mut page =
                    r.freight_newest_first(&project, &origin_key(&origin), query.skip, limit + 1)?;
                let more = page.len() > limit;
                page.truncate(limit);
                let now = SystemTime::now();
                let mut items = Vec::with_capacity(page.len());
                for freight in &page {
                    let facts = availability::FreightFacts::of(freight)
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    let verdict = match (&query.stage, &spec) {
                        (Some(stage), Some(spec)) => {
                            Some(availability::availability(stage, spec, &facts, now))
                        }
                        _ => None,
                    };
                    items.push(TimelineEntry {
                        shown: Shown::of_object(freight)?,
                        time: availability::time_text(facts.time),
                        currently_in: facts.status.currently_in.keys().cloned().collect(),
                        verified_in: facts.status.verified_in.keys().cloned().collect(),
                        approved_for: facts.status.approved_for.keys().cloned().collect(),
                        availability: verdict,
                    });
                }
                Ok(serde_json::json!({ "items": items, "more": more }))
            };
            Ok(run())
        })
        .await??;
    Ok(Json(answer))
}
