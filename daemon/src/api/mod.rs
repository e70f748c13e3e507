//! The HTTP API: REST under `/v1` (bearer token; what each role may call is in
//! `access.rs`), `/healthz` and `/readyz` (open).
//!
//! [`router`] builds the whole app from an [`AppState`], so tests drive it with `oneshot`
//! without a socket. Every error leaves as JSON `{code, message, errors?}` through [`ApiError`];
//! internal details are logged, never sent.

mod access;
mod backup;
mod export;
mod generic_receiver;
mod graph;
mod pipeline;
mod plugins;
mod promotions;
mod resources;
mod signin;
mod tokens;
mod ui;
mod watch;
mod webhooks;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Serialize;

use crate::admission::{ApplyError, Problem};
use crate::store::{Reader, Store, StoreError};

/// Requests larger than this are refused (Kargo's API uses the same limit).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// The bootstrap token (the data dir's `token` file), a system admin's; compared in
    /// constant time. Other tokens are in the store, hashed.
    pub token: Arc<str>,
    /// Creates, runs and aborts Promotions.
    pub engine: crate::engine::Engine,
    /// Discovers Warehouses' artifacts (refreshed on request).
    pub discovery: crate::discovery::Discovery,
    /// Webhook deliveries already handled, so a replayed request does nothing.
    pub deliveries: Arc<webhooks::Deliveries>,
    /// People's sign-in with OpenID Connect, when the config has `[oidc]`.
    pub oidc: Option<Arc<crate::auth::oidc::Oidc>>,
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/apply", post(resources::apply))
        .route("/watch", get(watch::watch))
        .route(
            "/version",
            get(|| async { Json(serde_json::json!({ "version": env!("CARGO_PKG_VERSION") })) }),
        )
        .route("/whoami", get(tokens::whoami))
        .route("/backup", get(backup::backup))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{name}", delete(tokens::revoke))
        .route("/plugins", get(plugins::list))
        .route("/plugins/update", post(plugins::update))
        .route("/projects", get(resources::list_projects))
        .route(
            "/projects/{project}",
            get(resources::get_project).delete(resources::delete_project),
        )
        .route(
            "/projects/{project}/stages/{stage}/promote",
            post(promotions::promote),
        )
        .route(
            "/projects/{project}/promotions/{name}/abort",
            post(promotions::abort),
        )
        .route(
            "/projects/{project}/warehouses/{name}/refresh",
            post(refresh_warehouse),
        )
        .route("/projects/{project}/webhookreceivers", get(webhooks::list))
        .route("/projects/{project}/graph", get(graph::graph))
        .route("/projects/{project}/timeline", get(graph::timeline))
        .route("/projects/{project}/export", get(export::export))
        .route(
            "/projects/{project}/freight/{name}/approve",
            post(pipeline::approve),
        )
        .route(
            "/projects/{project}/stages/{stage}/freight",
            get(pipeline::available),
        )
        .route(
            "/projects/{project}/stages/{stage}/freight/{name}",
            get(pipeline::explain),
        )
        .route(
            "/projects/{project}/stages/{stage}/verification",
            post(pipeline::reverify),
        )
        .route(
            "/projects/{project}/stages/{stage}/verification/abort",
            post(pipeline::abort_verification),
        )
        .route(
            "/projects/{project}/stages/{stage}/promote-downstream",
            post(pipeline::promote_downstream),
        )
        .route(
            "/projects/{project}/analysisruns/{name}/logs",
            get(promotions::run_logs),
        )
        .route(
            "/projects/{project}/promotions/{name}/logs",
            get(promotions::logs),
        )
        .route("/projects/{project}/{kind}", get(resources::list))
        .route(
            "/projects/{project}/{kind}/{name}",
            get(resources::get).delete(resources::delete),
        )
        .route(
            "/clusterconfigs/cluster/webhookreceivers",
            get(webhooks::list_cluster),
        )
        .route("/{kind}", get(resources::list_all))
        .route(
            "/{kind}/{name}",
            get(resources::get_cluster).delete(resources::delete_cluster),
        )
        .route_layer(middleware::from_fn(access::authorize))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            access::authenticate,
        ));
    // Webhooks authenticate by their URL and the provider's signature, not the API token, and
    // read at most 2 MiB.
    let webhooks = Router::new()
        .route("/{kind}/{id}", post(webhooks::receive))
        .layer(axum::extract::DefaultBodyLimit::max(webhooks::MAX_BODY));
    // Prometheus scrapes `/metrics` with a token of role viewer in every project (its
    // `authorization` setting): the series name every project and Stage.
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn(access::authorize))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            access::authenticate,
        ));
    Router::new()
        // The web UI (static files; it signs in with a token and calls `/v1`).
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::file))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        // How to sign in (no token: the CLI asks before it has one).
        .route("/auth/config", get(auth_config))
        // The web UI's sign-in with OpenID Connect (no token: it is how the page gets one).
        .merge(
            Router::new()
                .route("/auth/device", post(signin::start))
                .route("/auth/device/token", post(signin::poll))
                .route("/auth/refresh", post(signin::refresh))
                .layer(axum::extract::DefaultBodyLimit::max(32 * 1024)),
        )
        .nest("/v1", v1)
        .nest("/webhooks", webhooks)
        .merge(metrics)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Asks for a discovery of a Warehouse now; answers with a token that the Warehouse's
/// `status.lastHandledRefresh` shows once that discovery has ended.
async fn refresh_warehouse(
    State(state): State<AppState>,
    axum::extract::Path((project, name)): axum::extract::Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (p, n) = (project.clone(), name.clone());
    let exists = state
        .store
        .read_async(move |r| Ok(r.get(crate::resource::Kind::Warehouse, &p, &n)?.is_some()))
        .await?;
    if !exists {
        return Err(ApiError::NotFound(format!(
            "Warehouse {name:?} not found in project {project:?}"
        )));
    }
    let token = ulid::Ulid::new().to_string().to_lowercase();
    state
        .discovery
        .refresh(&project, &name, Some(token.clone()));
    Ok(Json(
        serde_json::json!({ "warehouse": name, "token": token }),
    ))
}

/// `GET /auth/config`: the OpenID Connect provider and client `dray login` uses, or `null`.
async fn auth_config(State(state): State<AppState>) -> Json<serde_json::Value> {
    let oidc = state.oidc.as_ref().map(|o| {
        let scopes = o.scopes();
        serde_json::json!({
            "issuerURL": o.config.issuer_url,
            "clientID": o.config.client_id,
            "scopes": scopes,
        })
    });
    Json(serde_json::json!({ "oidc": oidc }))
}

/// `GET /metrics`: every metric in OpenMetrics text, with the queue depth and the store's size
/// read now (one pass over the Promotions' phases).
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let queued = state
        .store
        .read_async(|r| {
            let mut queued = 0u64;
            r.visit(crate::resource::Kind::Promotion, None, &mut |o| {
                let phase = o
                    .status_of::<crate::resource::status::PromotionStatus>()
                    .map(|s| s.phase());
                if matches!(phase, Ok(crate::resource::status::PromotionPhase::Pending)) {
                    queued += 1;
                }
            })?;
            Ok(queued)
        })
        .await?;
    let running = state.engine.running_promotions() as u64;
    let text = state
        .engine
        .metrics()
        .render(queued, running, state.store.file_size());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Ready when the store can be read (reopening it if it failed: a full disk that has room
/// again); 503 with the reason otherwise.
async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.check())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok("ok")
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint: see the API section of the README".into())
}

/// Every way a request can fail, each with a stable `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "missing or wrong API token: pass it as 'Authorization: Bearer <token>' (the CLI reads it from the data dir's token file, or DRAY_TOKEN)"
    )]
    Unauthorized,
    /// The token is valid but its role does not cover the request.
    #[error("{0}")]
    Forbidden(String),
    /// A person's sign-in has expired.
    #[error("your sign-in has expired: run `dray login` again")]
    SignInExpired,
    /// Documents of an apply that the token's role does not cover.
    #[error("{} document(s) are outside what this token may change; nothing was applied", .0.len())]
    ForbiddenDocuments(Vec<Problem>),
    #[error("{0}")]
    NotFound(String),
    /// A webhook whose signature or token does not match its receiver's secret.
    #[error("the webhook's signature or token does not match the receiver's secret")]
    BadSignature,
    #[error("{0}")]
    BadRequest(String),
    #[error("{} problem(s) in the manifests; nothing was applied", .0.len())]
    Invalid(Vec<Problem>),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error(
        "the request body is larger than {MAX_BODY_BYTES} bytes: split the apply into smaller files"
    )]
    TooLarge,
    /// The data file cannot be used now (a full disk); the request may be tried again.
    #[error("{0}")]
    Unavailable(String),
    /// Logged in full; the client sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [Problem]>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Unauthorized | ApiError::SignInExpired => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            ApiError::Forbidden(_) | ApiError::ForbiddenDocuments(_) => {
                (StatusCode::FORBIDDEN, "forbidden")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadSignature => (StatusCode::UNAUTHORIZED, "bad_signature"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Gone(_) => (StatusCode::GONE, "gone"),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "request failed");
                "internal error: see the daemon's log".to_string()
            }
            other => other.to_string(),
        };
        let errors = match &self {
            ApiError::Invalid(problems) | ApiError::ForbiddenDocuments(problems) => {
                Some(problems.as_slice())
            }
            _ => None,
        };
        (
            status,
            Json(ErrorBody {
                code,
                message,
                errors,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            StoreError::Conflict { .. } | StoreError::Stale { .. } => {
                ApiError::Conflict(e.to_string())
            }
            StoreError::Gone { .. } => ApiError::Gone(e.to_string()),
            StoreError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Invalid(problems) => ApiError::Invalid(problems),
            ApplyError::Forbidden(problems) => ApiError::ForbiddenDocuments(problems),
            ApplyError::Store(s) => s.into(),
        }
    }
}

#[cfg(test)]
mod tests;
