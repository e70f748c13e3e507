//! Resource endpoints: apply, get, list, delete.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::admission::{self, Outcome, Source};
use crate::auth::Principal;
use crate::engine::decisions::events;
use crate::resource::freight;
use crate::resource::{Kind, LabelSelector, Object};
use crate::store::{Reader, StoreError};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ApplyQuery {
    /// The project for documents that do not name one.
    project: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// The JSON form of an apply: several named sources (files), one transaction.
#[derive(Deserialize)]
struct ApplyBody {
    sources: Vec<Source>,
}

#[derive(Serialize)]
pub(super) struct ApplyResponse {
    items: Vec<Outcome>,
    dry_run: bool,
}

/// `POST /v1/apply`: a YAML/JSON manifest stream as the body, or
/// `{"sources": [{"name", "content"}]}` with `Content-Type: application/json`.
pub(super) async fn apply(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<ApplyQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ApplyResponse>, ApiError> {
    let body = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::TooLarge,
        other => ApiError::BadRequest(other.body_text()),
    })?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::BadRequest("the manifests are not UTF-8 text".into()))?;
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let sources = match serde_json::from_str::<ApplyBody>(&text) {
        Ok(body) if is_json => body.sources,
        _ => vec![Source {
            name: "request body".into(),
            content: text,
        }],
    };
    let (store, engine) = (state.store.clone(), state.engine.clone());
    let dry_run = query.dry_run;
    let items = tokio::task::spawn_blocking(move || {
        let kinds: &dyn admission::StepKinds = &engine;
        admission::apply_as(
            &store,
            &sources,
            query.project.as_deref(),
            dry_run,
            Some(kinds),
            Some(&principal.actor),
            &|object| super::access::refusal(&principal, object),
        )
    })
    .await
    .map_err(|e| ApiError::Internal(format!("apply task failed: {e}")))??;
    Ok(Json(ApplyResponse { items, dry_run }))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    label_selector: Option<String>,
}

impl ListQuery {
    fn selector(&self) -> Result<Option<LabelSelector>, ApiError> {
        self.label_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(LabelSelector::parse)
            .transpose()
            .map_err(ApiError::BadRequest)
    }
}

fn parse_kind(kind: &str) -> Result<Kind, ApiError> {
    kind.parse().map_err(ApiError::NotFound)
}

/// Credential values never leave the daemon.
pub(super) fn redacted(mut object: Object) -> Value {
    if object.kind == Kind::Secret
        && let Some(Value::Object(data)) = object.body.get_mut("data")
    {
        for value in data.values_mut() {
            *value = Value::String("*** REDACTED ***".into());
        }
    }
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// Lists what `principal` may see of `kind` (in `project`, or in every project).
async fn list_objects(
    state: &AppState,
    principal: &Principal,
    kind: Kind,
    project: Option<String>,
    query: ListQuery,
) -> Result<Json<Value>, ApiError> {
    let selector = query.selector()?;
    let sequence = state.store.last_seq();
    let objects = state
        .store
        .read_async(move |r| {
            r.list(
                kind,
                project.as_deref().filter(|_| kind.namespaced()),
                selector.as_ref(),
            )
        })
        .await?;
    let items: Vec<Value> = objects
        .into_iter()
        .filter(|o| principal.may_see(o))
        .map(redacted)
        .collect();
    Ok(Json(json!({ "items": items, "sequence": sequence })))
}

pub(super) async fn list_projects(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let Json(mut answer) = list_objects(&state, &principal, Kind::Project, None, query).await?;
    // Each project at a glance (`status.stats`, as Kargo's): read now, in one transaction.
    let names: Vec<String> = answer["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let stats = state
        .store
        .read_async(move |r| {
            names
                .iter()
                .map(|p| super::graph::project_stats(r, p))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    if let Some(items) = answer["items"].as_array_mut() {
        for (item, stats) in items.iter_mut().zip(stats) {
            with_stats(item, stats);
        }
    }
    Ok(Json(answer))
}

/// Sets a Project's `status.stats` (computed when it is read, not stored).
fn with_stats(project: &mut Value, stats: Value) {
    if !project["status"].is_object() {
        project["status"] = json!({});
    }
    project["status"]["stats"] = stats;
}

pub(super) async fn list_all(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(kind): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    list_objects(&state, &principal, parse_kind(&kind)?, None, query).await
}

pub(super) async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, kind)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let kind = parse_kind(&kind)?;
    if kind == Kind::Project {
        return Err(ApiError::BadRequest(
            "projects are not inside a project: GET /v1/projects".into(),
        ));
    }
    ensure_project(&state, &project).await?;
    list_objects(&state, &principal, kind, Some(project), query).await
}

async fn ensure_project(state: &AppState, project: &str) -> Result<(), ApiError> {
    let p = project.to_string();
    let found = state
        .store
        .read_async(move |r| r.get(Kind::Project, "", &p))
        .await?;
    match found {
        Some(_) => Ok(()),
        None if project == crate::resource::SHARED_NAMESPACE
            || project == crate::resource::SYSTEM_NAMESPACE =>
        {
            Ok(())
        }
        None => Err(ApiError::NotFound(format!(
            "project {project:?} not found: list projects with `dray get projects`"
        ))),
    }
}

pub(super) async fn get_project(
    State(state): State<AppState>,
    Path(project): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Json(mut answer) =
        get_object(&state, Kind::Project, String::new(), project.clone()).await?;
    let stats = state
        .store
        .read_async(move |r| super::graph::project_stats(r, &project))
        .await?;
    with_stats(&mut answer, stats);
    Ok(Json(answer))
}

/// A cluster-wide kind (`Project`s have their own routes) named by its plural.
fn cluster_kind(kind: &str) -> Result<Kind, ApiError> {
    let kind = parse_kind(kind)?;
    if kind.namespaced() || kind == Kind::Project {
        return Err(ApiError::NotFound(format!(
            "{kind} lives in a project: /v1/projects/{{project}}/{}/{{name}}",
            kind.plural()
        )));
    }
    Ok(kind)
}

/// `GET /v1/{kind}/{name}` of a cluster-wide kind.
pub(super) async fn get_cluster(
    State(state): State<AppState>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    get_object(&state, cluster_kind(&kind)?, String::new(), name).await
}

/// `DELETE /v1/{kind}/{name}` of a cluster-wide kind.
pub(super) async fn delete_cluster(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let kind = cluster_kind(&kind)?;
    let deleted = state
        .store
        .write_async(move |tx| tx.delete(kind, "", &name))
        .await?;
    // No project holds an Event about a cluster-scoped object: the log does.
    tracing::info!(%kind, name = deleted.name(), actor = %principal.actor, "deleted");
    Ok(Json(json!({ "deleted": [summary(&deleted)] })))
}

pub(super) async fn get(
    State(state): State<AppState>,
    Path((project, kind, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let kind = parse_kind(&kind)?;
    ensure_project(&state, &project).await?;
    get_object(&state, kind, project, name).await
}

/// Freight is found by name or by alias, as in Kargo.
async fn get_object(
    state: &AppState,
    kind: Kind,
    project: String,
    name: String,
) -> Result<Json<Value>, ApiError> {
    let (p, n) = (project.clone(), name.clone());
    let found = state
        .store
        .read_async(move |r| {
            if kind == Kind::Freight {
                return freight::find(r, &p, &n);
            }
            r.get(kind, &p, &n)
        })
        .await?;
    found.map(|o| Json(redacted(o))).ok_or_else(|| {
        let inside = if kind.namespaced() {
            format!(" in project {project:?}")
        } else {
            String::new()
        };
        ApiError::NotFound(format!(
            "{kind} {name:?} not found{inside}: list them with `dray get {}{}`",
            kind.plural(),
            if kind.namespaced() {
                format!(" -p {project}")
            } else {
                String::new()
            }
        ))
    })
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((project, kind, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let kind = parse_kind(&kind)?;
    if kind == Kind::Project {
        return Err(ApiError::BadRequest(
            "delete a project with DELETE /v1/projects/{name}".into(),
        ));
    }
    let deleted = state
        .store
        .write_async(move |tx| {
            if kind == Kind::Freight
                && let Some(f) = tx.get(kind, &project, &name)? {
                    let status: crate::resource::status::FreightStatus = f
                        .status_of()
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    let stages: Vec<String> = status.currently_in.into_keys().collect();
                    if !stages.is_empty() {
                        return Err(ApiError::Conflict(format!(
                            "Freight {name:?} is in use by Stage(s) {}: promote other Freight there first",
                            stages.join(", ")
                        )));
                    }
                }
            let deleted = tx.delete(kind, &project, &name)?;
            events::record_change(tx, &deleted, "Deleted", &principal.actor)?;
            Ok::<_, ApiError>(deleted)
        })
        .await?;
    Ok(Json(json!({ "deleted": [summary(&deleted)] })))
}

fn summary(o: &Object) -> Value {
    json!({ "kind": o.kind, "project": o.project(), "name": o.name() })
}

/// Deleting a Project deletes everything in it, in one transaction (as deleting a Kargo
/// Project deletes its namespace).
pub(super) async fn delete_project(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(project): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = project.clone();
    let deleted = state
        .store
        .write_async(move |tx| {
            let project_object =
                tx.get(Kind::Project, "", &project)?
                    .ok_or_else(|| StoreError::NotFound {
                        kind: Kind::Project,
                        project: String::new(),
                        name: project.clone(),
                    })?;
            let mut deleted = Vec::new();
            for kind in Kind::ALL.into_iter().filter(|k| k.namespaced()) {
                for o in tx.list(kind, Some(&project), None)? {
                    let gone = tx.delete(kind, &project, o.name())?;
                    // Its Events go too, unlisted: they are the record, not what a user made.
                    if kind != Kind::Event {
                        deleted.push(summary(&gone));
                    }
                }
            }
            tx.delete(Kind::Project, "", project_object.name())?;
            deleted.push(summary(&project_object));
            Ok::<_, StoreError>(deleted)
        })
        .await?;
    // The project's Events went with it: the log keeps who deleted it.
    tracing::info!(project = %name, objects = deleted.len(), actor = %principal.actor, "project deleted");
    Ok(Json(json!({ "deleted": deleted })))
}
