//! Promotions through the API: promote a Freight into a Stage, abort, and read the logs (all
//! at once, or followed live as newline-delimited JSON until the Promotion ends).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt};

use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::engine::decisions::promotion::{self, CreateError};
use crate::engine::logs;
use crate::resource::Kind;
use crate::store::Reader;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromoteRequest {
    /// The Freight's name or alias.
    #[serde(default)]
    freight: Option<String>,
    /// Several Freight (names or aliases, one per origin) in one Promotion.
    #[serde(default)]
    batch: Vec<String>,
    /// The newest available Freight of every origin the Stage requests, in one Promotion.
    #[serde(default)]
    all_newest: bool,
    /// With `allNewest`: only the origins whose Warehouse labels this selects.
    #[serde(default)]
    origins: Option<crate::resource::LabelSelector>,
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::NotFound(m) => ApiError::NotFound(m),
            CreateError::Invalid(m) => ApiError::BadRequest(m),
            CreateError::Closed { message, .. } => ApiError::Conflict(message),
            CreateError::Store(e) => e.into(),
        }
    }
}

/// `POST /v1/projects/{project}/stages/{stage}/promote` with `{"freight": NAME|ALIAS}`.
pub async fn promote(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, stage)): Path<(String, String)>,
    Json(request): Json<PromoteRequest>,
) -> Result<Response, ApiError> {
    let actor = principal.actor.clone();
    let asked = [
        request.freight.is_some(),
        !request.batch.is_empty(),
        request.all_newest,
    ];
    if asked.iter().filter(|a| **a).count() != 1 {
        return Err(ApiError::BadRequest(
            "say what to promote with exactly one of freight (a name or alias), batch (a list of them) or allNewest: true".into(),
        ));
    }
    if request.origins.is_some() && !request.all_newest {
        return Err(ApiError::BadRequest(
            "origins selects Warehouses for allNewest; name the Freight instead".into(),
        ));
    }
    let created = state
        .store
        .write_async(move |tx| {
            let batch = match (request.freight, request.all_newest) {
                (Some(one), _) => vec![one],
                (None, true) => {
                    promotion::newest_batch(tx, &project, &stage, request.origins.as_ref())?
                }
                (None, false) => request.batch,
            };
            promotion::create_batch(tx, &project, &stage, &batch, &actor)
        })
        .await?;
    tracing::info!(project = %created.project(), promotion = %created.name(), actor = %principal.actor, "promotion created");
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `POST /v1/projects/{project}/promotions/{name}/abort`.
pub async fn abort(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, name)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    tracing::info!(%project, promotion = %name, actor = %principal.actor, "promotion abort requested");
    let aborted = state.engine.abort(&project, &name).await?;
    if !aborted {
        return Err(ApiError::Conflict(format!(
            "Promotion {name:?} has already ended; there is nothing to abort"
        )));
    }
    Ok(Json(serde_json::json!({ "aborted": name })))
}

#[derive(Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    follow: bool,
}

fn ended(state: &AppState, kind: Kind, project: &str, name: &str) -> Result<bool, ApiError> {
    let object = state.store.read(|r| r.get(kind, project, name))?;
    match object {
        None => Err(ApiError::NotFound(format!(
            "{kind} {name:?} not found in project {project:?}"
        ))),
        Some(o) => {
            crate::resource::status::has_ended(&o).map_err(|e| ApiError::Internal(e.to_string()))
        }
    }
}

/// `GET /v1/projects/{project}/promotions/{name}/logs[?follow=true]`: JSON lines.
pub async fn logs(
    State(state): State<AppState>,
    Path((project, name)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    stream(state, Kind::Promotion, project, name, query.follow).await
}

/// `GET /v1/projects/{project}/analysisruns/{name}/logs[?follow=true]`: a verification's
/// measurements and everything its verifiers logged, as JSON lines (`step` is the metric).
pub async fn run_logs(
    State(state): State<AppState>,
    Path((project, name)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    stream(state, Kind::AnalysisRun, project, name, query.follow).await
}

/// The stored log of a Promotion or AnalysisRun, followed until it ends when asked.
async fn stream(
    state: AppState,
    kind: Kind,
    project: String,
    name: String,
    follow: bool,
) -> Result<Response, ApiError> {
    let done = {
        let (state, project, name) = (state.clone(), project.clone(), name.clone());
        tokio::task::spawn_blocking(move || ended(&state, kind, &project, &name))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??
    };
    let path = logs::path(state.engine.data_dir(), &project, &name);
    if !follow || done {
        let text = tokio::fs::read(&path).await.unwrap_or_default();
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response());
    }
    // Follow: stream what is there, then what is appended, until the Promotion ends.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut offset = 0u64;
        loop {
            let finished = {
                let (state, project, name) = (state.clone(), project.clone(), name.clone());
                tokio::task::spawn_blocking(move || ended(&state, kind, &project, &name))
                    .await
                    .map(|r| r.unwrap_or(true))
                    .unwrap_or(true)
            };
            if let Ok(mut file) = tokio::fs::File::open(&path).await
                && file.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
            {
                let mut reader = tokio::io::BufReader::new(file);
                let mut line = Vec::new();
                while let Ok(n) = reader.read_until(b'\n', &mut line).await {
                    if n == 0 || line.last() != Some(&b'\n') {
                        break; // a line still being written: read it next time
                    }
                    offset += n as u64;
                    if tx.send(Ok(std::mem::take(&mut line))).await.is_err() {
                        return; // the client went away
                    }
                }
            }
            if finished {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let stream = tokio_stream_from(rx);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
