//! `GET /v1/projects/{project}/export[?secrets=true]`: a project's definitions as they would be
//! applied again, for keeping pipelines in Git (`dray get all -p P -o yaml`).
//!
//! Definitions only: the Project, its ProjectConfig, Warehouses, Stages, PromotionTasks,
//! AnalysisTemplates and ConfigMaps, each without status or server-set metadata (uid, resource
//! version, generation, creation time). Freight, Promotions, verifications and events are what
//! happened, not definitions: a backup keeps those. Secrets are left out (their names are
//! listed), because a redacted value applied again would overwrite the real one; a system admin,
//! who may take a backup with every Secret anyway, may ask for them with `secrets=true`.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::resource::{Kind, Object};
use crate::store::Reader;

/// The kinds exported, in the order they apply.
const DEFINITIONS: [Kind; 6] = [
    Kind::ProjectConfig,
    Kind::ConfigMap,
    Kind::PromotionTask,
    Kind::AnalysisTemplate,
    Kind::Warehouse,
    Kind::Stage,
];

#[derive(Deserialize, Default)]
pub(super) struct ExportQuery {
    #[serde(default)]
    secrets: bool,
}

/// An object as it would be written by hand.
fn definition(mut object: Object) -> Value {
    let meta = &mut object.metadata;
    meta.uid = None;
    meta.resource_version = None;
    meta.generation = None;
    meta.creation_timestamp = None;
    object.body.remove("status");
    serde_json::to_value(object).unwrap_or(Value::Null)
}

pub(super) async fn export(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(project): Path<String>,
    Query(query): Query<ExportQuery>,
) -> Result<Json<Value>, ApiError> {
    if query.secrets && !principal.is_system_admin() {
        return Err(ApiError::Forbidden(format!(
            "{principal} may not export Secrets' values: that needs role system-admin (leave out secrets=true to export the rest)"
        )));
    }
    let p = project.clone();
    let (items, secrets) = state
        .store
        .read_async(move |r| {
            let Some(project) = r.get(Kind::Project, "", &p)? else {
                return Ok(None);
            };
            let mut items = vec![definition(project)];
            for kind in DEFINITIONS {
                items.extend(r.list(kind, Some(&p), None)?.into_iter().map(definition));
            }
            let secrets = r.list(Kind::Secret, Some(&p), None)?;
            Ok(Some((items, secrets)))
        })
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "project {project:?} not found: list projects with `dray get projects`"
            ))
        })?;
    let (mut items, mut left_out) = (items, Vec::new());
    for secret in secrets {
        if query.secrets {
            items.push(definition(secret));
        } else {
            left_out.push(secret.name().to_string());
        }
    }
    Ok(Json(json!({ "items": items, "secretsLeftOut": left_out })))
}
