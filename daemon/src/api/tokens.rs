//! `/v1/whoami` and `/v1/tokens`: who the caller is, and the API tokens (system admins only,
//! as `access.rs` says).

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::auth::tokens::{self, Token, TokenError};
use crate::auth::{Principal, Role, Scope};

/// `GET /v1/whoami`: the caller's actor, role and projects.
pub(super) async fn whoami(Extension(principal): Extension<Principal>) -> Json<Value> {
    Json(json!({
        "actor": principal.actor,
        "grants": principal.grants,
        "summary": principal.to_string(),
    }))
}

/// `GET /v1/tokens`: every token's name, role, projects and maker; never the token.
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let items = state.store.read_async(tokens::list).await?;
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CreateRequest {
    name: String,
    role: Role,
    #[serde(default)]
    projects: BTreeSet<String>,
    #[serde(default)]
    all_projects: bool,
}

/// `POST /v1/tokens`: makes a token and answers with it; it is never shown again.
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Json(request): Json<CreateRequest>,
) -> Result<Json<Value>, ApiError> {
    if request.all_projects && !request.projects.is_empty() {
        return Err(ApiError::BadRequest(
            "give projects or allProjects, not both".into(),
        ));
    }
    for project in &request.projects {
        crate::resource::validate::check_label(project)
            .map_err(|why| ApiError::BadRequest(format!("project {why}")))?;
    }
    let token = Token {
        name: request.name,
        role: request.role,
        scope: if request.all_projects || request.role == Role::SystemAdmin {
            Scope::AllProjects
        } else {
            Scope::Projects(request.projects)
        },
        created: crate::resource::now(),
        created_by: principal.actor,
    };
    let shown = token.clone();
    let secret = state
        .store
        .write_async(move |tx| tokens::create(tx, token))
        .await?;
    tracing::info!(name = %shown.name, role = %shown.role, by = %shown.created_by, "token created");
    Ok(Json(json!({ "token": secret, "item": shown })))
}

/// `DELETE /v1/tokens/{name}`: revokes a token at once.
pub(super) async fn revoke(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let revoked = state
        .store
        .write_async(move |tx| tokens::revoke(tx, &name))
        .await?;
    tracing::info!(name = %revoked.name, by = %principal.actor, "token revoked");
    Ok(Json(json!({ "revoked": revoked.name })))
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Store(s) => s.into(),
            TokenError::NotFound(_) => ApiError::NotFound(e.to_string()),
            TokenError::Exists(_) => ApiError::Conflict(e.to_string()),
            TokenError::BadName(_) | TokenError::NoProjects(_) => {
                ApiError::BadRequest(e.to_string())
            }
        }
    }
}
