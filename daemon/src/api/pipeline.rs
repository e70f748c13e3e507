//! The pipeline through the API: approvals, what a Stage may take and why, verification runs,
//! and promoting to every Stage downstream of one.

use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::engine::decisions::{analysis, events, freight as freight_status, promotion};
use crate::resource::status::StageStatus;
use crate::resource::{Kind, Object, StageSpec, freight};
use crate::rules::availability::{self, FreightFacts};
use crate::store::{Reader, WriteTx};

#[derive(Deserialize)]
pub struct StageRequest {
    stage: String,
}

#[derive(Deserialize)]
pub struct FreightRequest {
    /// The Freight's name or alias.
    freight: String,
}

pub(super) fn stage_spec(
    r: &impl Reader,
    project: &str,
    stage: &str,
) -> Result<(Object, StageSpec), ApiError> {
    let object = r.get(Kind::Stage, project, stage)?.ok_or_else(|| {
        ApiError::NotFound(format!("Stage {stage:?} not found in project {project:?}"))
    })?;
    let spec = serde_json::from_value(object.spec().clone())
        .map_err(|e| ApiError::Internal(format!("Stage {stage}: {e}")))?;
    let spec = crate::engine::decisions::stage::resolved(r, project, spec)?;
    Ok((object, spec))
}

fn find_freight(r: &impl Reader, project: &str, name: &str) -> Result<Object, ApiError> {
    freight::find(r, project, name)?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no Freight named or aliased {name:?} in project {project:?} (list them with `dray get freight -p {project}`)"
        ))
    })
}

/// `POST /v1/projects/{project}/freight/{freight}/approve` with `{"stage": S}`: lets the
/// Freight into the Stage without verification or soak upstream.
pub async fn approve(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, name)): Path<(String, String)>,
    Json(request): Json<StageRequest>,
) -> Result<Json<Value>, ApiError> {
    let actor = principal.actor;
    let approved = state
        .store
        .write_async(move |tx: &mut WriteTx| {
            let (_, spec) = stage_spec(tx, &project, &request.stage)?;
            let f = find_freight(tx, &project, &name)?;
            let origin = availability::freight_origin(&f);
            if !spec.requested_freight.iter().any(|r| r.origin == origin) {
                return Err(ApiError::BadRequest(format!(
                    "Stage {:?} does not request Freight from {}; an approval would not let it in",
                    request.stage,
                    availability::origin_key(&origin)
                )));
            }
            freight_status::record_approval(tx, &project, f.name(), &request.stage, SystemTime::now())?;
            let shown = f.body.get("alias").and_then(Value::as_str).unwrap_or(f.name());
            events::record(
                tx,
                &project,
                "FreightApproved",
                format!("Freight {shown} approved for Stage {}", request.stage),
                (Kind::Freight, f.name()),
                events::About {
                    actor: Some(&actor),
                    freight: Some(f.name()),
                    stage: Some(&request.stage),
                    ..Default::default()
                },
            )?;
            Ok(json!({"freight": f.name(), "alias": f.body.get("alias"), "approvedFor": request.stage}))
        })
        .await?;
    tracing::info!(freight = %approved["freight"], stage = %approved["approvedFor"], "freight approved");
    Ok(Json(approved))
}

/// `GET /v1/projects/{project}/stages/{stage}/freight`: the Freight the Stage may take now,
/// newest first, each with the reasons.
pub async fn available(
    State(state): State<AppState>,
    Path((project, stage)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let items = state
        .store
        .read_async(move |r| {
            let (_, spec) = match stage_spec(r, &project, &stage) {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            let now = SystemTime::now();
            let (freight, _) =
                freight_status::available_freight(r, &project, &stage, &spec, None, now)?;
            Ok(Ok(freight
                .into_iter()
                .map(|(f, facts)| {
                    let verdict = availability::availability(&stage, &spec, &facts, now);
                    let mut v = serde_json::to_value(&f).unwrap_or_default();
                    v["availability"] = json!(verdict);
                    v
                })
                .collect::<Vec<_>>()))
        })
        .await??;
    Ok(Json(json!({ "items": items })))
}

/// `GET /v1/projects/{project}/stages/{stage}/freight/{freight}`: whether that Freight is
/// available to the Stage, and why.
pub async fn explain(
    State(state): State<AppState>,
    Path((project, stage, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let answer = state
        .store
        .read_async(move |r| {
            let run = || -> Result<Value, ApiError> {
                let (stage_object, spec) = stage_spec(r, &project, &stage)?;
                let f = find_freight(r, &project, &name)?;
                let facts = FreightFacts::of(&f).map_err(|e| ApiError::Internal(e.to_string()))?;
                let verdict = availability::availability(&stage, &spec, &facts, SystemTime::now());
                let current = stage_object
                    .status_of::<StageStatus>()
                    .map_err(|e| ApiError::Internal(e.to_string()))?
                    .current_names();
                Ok(json!({
                    "freight": f.name(),
                    "alias": f.body.get("alias"),
                    "stage": stage,
                    "available": verdict.available,
                    "reasons": verdict.reasons,
                    "inStage": current.iter().any(|c| c == f.name()),
                    "status": f.status(),
                }))
            };
            Ok(run())
        })
        .await??;
    Ok(Json(answer))
}

/// `POST /v1/projects/{project}/stages/{stage}/verification`: verifies again what the Stage
/// holds.
pub async fn reverify(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, stage)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let run = state
        .store
        .write_async(move |tx| analysis::reverify(tx, &project, &stage, &principal.actor))
        .await?
        .map_err(ApiError::Conflict)?;
    Ok((StatusCode::CREATED, Json(json!({"analysisRun": run}))).into_response())
}

/// `POST /v1/projects/{project}/stages/{stage}/verification/abort`.
pub async fn abort_verification(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, stage)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    tracing::info!(%project, %stage, actor = %principal.actor, "verification abort requested");
    match state.engine.abort_verification(&project, &stage).await? {
        Some(run) => Ok(Json(json!({"aborted": run}))),
        None => Err(ApiError::Conflict(format!(
            "Stage {stage:?} is not verifying; there is nothing to abort"
        ))),
    }
}

/// `POST /v1/projects/{project}/stages/{stage}/promote-downstream` with `{"freight": F}`:
/// promotes F to every Stage that takes Freight from this one.
pub async fn promote_downstream(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, stage)): Path<(String, String)>,
    Json(request): Json<FreightRequest>,
) -> Result<Response, ApiError> {
    let created = state
        .store
        .write_async(move |tx| {
            stage_spec(tx, &project, &stage)?;
            let downstream: Vec<String> = tx
                .list(Kind::Stage, Some(&project), None)?
                .into_iter()
                .filter(|s| {
                    serde_json::from_value::<StageSpec>(s.spec().clone()).is_ok_and(|spec| {
                        spec.requested_freight
                            .iter()
                            .any(|r| r.sources.stages.contains(&stage))
                    })
                })
                .map(|s| s.name().to_string())
                .collect();
            if downstream.is_empty() {
                return Err(ApiError::BadRequest(format!(
                    "no Stage takes Freight from {stage:?}"
                )));
            }
            let mut created = Vec::new();
            for s in downstream {
                created.push(promotion::create(
                    tx,
                    &project,
                    &s,
                    &request.freight,
                    &principal.actor,
                )?);
            }
            Ok(created)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"items": created}))).into_response())
}
