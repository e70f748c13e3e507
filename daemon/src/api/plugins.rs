//! Plugins through the API: what the daemon runs, and re-resolving a pinned reference.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};

/// `GET /v1/plugins`: the step and verifier kinds the daemon loaded, and the pins of the
/// plugins named by reference (`oci://…`), each with the digest it runs.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let pins = match state.engine.registry_plugins() {
        Some(registry) => registry.pins().await,
        None => Vec::new(),
    };
    Json(json!({
        "steps": state.engine.step_kinds(),
        "verifiers": state.engine.verifier_kinds(),
        "pins": pins,
    }))
}

#[derive(Deserialize)]
pub struct UpdateRequest {
    /// `oci://HOST/REPO:TAG`, as Stages write it.
    reference: String,
    /// The project whose `cred-type: image` Secrets authenticate to the registry.
    #[serde(default)]
    project: Option<String>,
}

/// `POST /v1/plugins/update` with `{"reference": R, "project": P}`: resolves R's tag again and
/// pins what it names now; Promotions that start afterwards run it.
pub async fn update(
    State(state): State<AppState>,
    Json(request): Json<UpdateRequest>,
) -> Result<Json<Value>, ApiError> {
    let registry = state.engine.registry_plugins().ok_or_else(|| {
        ApiError::BadRequest(
            "this daemon runs no plugins from registries (add [[steps.oci]] rules to its config)"
                .into(),
        )
    })?;
    let project = request.project.unwrap_or_default();
    let (old, new) = registry
        .update(&request.reference, &project)
        .await
        .map_err(ApiError::BadRequest)?;
    tracing::info!(reference = %request.reference, ?old, %new, "plugin pin updated");
    Ok(Json(json!({
        "reference": request.reference,
        "previous": old,
        "digest": new,
    })))
}
