//! Who may call which route: authentication (the bearer token → a [`Principal`]) and the one
//! table that says what role each route needs.
//!
//! [`authenticate`] runs before routing on all of `/v1` (and `/metrics`) and leaves the [`Principal`] in the
//! request's extensions for handlers that record an actor or filter what they list.
//! [`authorize`] runs after routing, looks up the matched route in [`need`] and refuses with
//! 403 what the principal's role does not cover. A route missing from the table is refused for
//! everyone but system admins, so a new route is closed until someone decides who may call it.

use axum::extract::{FromRequestParts, MatchedPath, OriginalUri, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::auth::{Principal, Role};

/// What a route asks of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Need {
    /// Any valid token; what the route shows is filtered by [`Principal::may_see`], or it
    /// checks each object itself (apply).
    AnyToken,
    /// This role in the project the path names (`{project}`).
    InProject(Role),
    /// This role in every project (a token made with `--all-projects`, or a system admin):
    /// for what spans all projects, such as the metrics.
    EveryProject(Role),
    /// A system admin.
    System,
}

/// The role each route needs, by method and route pattern as the router writes it.
pub(super) fn need(method: &Method, route: &str) -> Option<Need> {
    use Need::*;
    use Role::*;
    if (method, route) == (&Method::GET, "/metrics") {
        return Some(EveryProject(Viewer));
    }
    let route = route.strip_prefix("/v1")?;
    let method = method.as_str();
    Some(match (method, route) {
        ("GET", "/version" | "/whoami" | "/watch" | "/projects" | "/plugins") => AnyToken,
        // Lists of a kind across projects, cluster-wide kinds and the ClusterConfig's
        // receivers: filtered to what the caller may see.
        ("GET", "/{kind}" | "/{kind}/{name}" | "/clusterconfigs/cluster/webhookreceivers") => {
            AnyToken
        }
        // Each document is checked against the project it is in.
        ("POST", "/apply") => AnyToken,
        (
            "GET",
            "/projects/{project}"
            | "/projects/{project}/{kind}"
            | "/projects/{project}/{kind}/{name}"
            | "/projects/{project}/webhookreceivers"
            | "/projects/{project}/graph"
            | "/projects/{project}/timeline"
            | "/projects/{project}/export"
            | "/projects/{project}/stages/{stage}/freight"
            | "/projects/{project}/stages/{stage}/freight/{name}"
            | "/projects/{project}/promotions/{name}/logs"
            | "/projects/{project}/analysisruns/{name}/logs",
        ) => InProject(Viewer),
        (
            "POST",
            "/projects/{project}/stages/{stage}/promote"
            | "/projects/{project}/stages/{stage}/promote-downstream"
            | "/projects/{project}/promotions/{name}/abort"
            | "/projects/{project}/warehouses/{name}/refresh"
            | "/projects/{project}/freight/{name}/approve"
            | "/projects/{project}/stages/{stage}/verification"
            | "/projects/{project}/stages/{stage}/verification/abort",
        ) => InProject(Promoter),
        ("DELETE", "/projects/{project}" | "/projects/{project}/{kind}/{name}") => InProject(Admin),
        ("DELETE", "/{kind}/{name}") => System,
        ("POST", "/plugins/update") => System,
        ("GET" | "POST", "/tokens") | ("DELETE", "/tokens/{name}") => System,
        // Every project's Secrets are in it.
        ("GET", "/backup") => System,
        _ => return None,
    })
}

/// Resolves the bearer token to a [`Principal`] (401 when there is none), for every `/v1`
/// request.
pub(super) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let principal = if bool::from(given.as_bytes().ct_eq(state.token.as_bytes())) {
        Some(Principal::bootstrap())
    } else if given.starts_with(crate::auth::tokens::PREFIX) {
        match state
            .store
            .read_async(move |r| crate::auth::tokens::authenticate(r, &given))
            .await
        {
            Ok(found) => found,
            Err(e) => return ApiError::from(e).into_response(),
        }
    } else if let Some(oidc) = &state.oidc
        && crate::auth::oidc::Oidc::looks_like_jwt(&given)
    {
        use crate::auth::oidc::OidcError;
        match oidc.principal(&given).await {
            Ok(person) => Some(person),
            Err(OidcError::Expired) => return unauthorized(ApiError::SignInExpired),
            Err(OidcError::Invalid) => None,
            Err(e @ OidcError::Provider(_)) => {
                tracing::warn!(error = %e, "a sign-in could not be checked");
                return ApiError::Unavailable(e.to_string()).into_response();
            }
        }
    } else {
        None
    };
    let Some(principal) = principal else {
        return unauthorized(ApiError::Unauthorized);
    };
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// A 401 that says how to authenticate.
fn unauthorized(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"dray\""),
    );
    response
}

/// Refuses (403) a routed request whose principal lacks what [`need`] says the route needs.
pub(super) async fn authorize(request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let params = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok();
    let request = Request::from_parts(parts, body);
    let Some(principal) = request.extensions().get::<Principal>() else {
        return ApiError::Unauthorized.into_response();
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    let project = params.as_ref().and_then(|params| {
        params
            .iter()
            .find(|(name, _)| *name == "project")
            .map(|(_, value)| value.to_string())
    });
    let allowed = match need(request.method(), route) {
        Some(Need::AnyToken) => true,
        Some(Need::InProject(role)) => principal.may(role, project.as_deref()),
        Some(Need::EveryProject(role)) => principal.may_everywhere(role),
        Some(Need::System) | None => principal.is_system_admin(),
    };
    if allowed {
        return next.run(request).await;
    }
    let what = match need(request.method(), route) {
        Some(Need::InProject(role)) => format!(
            "role {role} in project {:?}",
            project.as_deref().unwrap_or_default()
        ),
        Some(Need::EveryProject(role)) => format!("role {role} in every project"),
        _ => "role system-admin".to_string(),
    };
    let path = request
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| request.uri().path(), |uri| uri.path());
    ApiError::Forbidden(format!(
        "{principal} may not {} {path}: that needs {what}; ask a system admin for a token that has it",
        request.method(),
    ))
    .into_response()
}

/// Why `principal` may not write `object` in an apply, if it may not.
pub(super) fn refusal(principal: &Principal, object: &crate::resource::Object) -> Option<String> {
    if principal.may_write(object.kind, object.project(), object.name()) {
        return None;
    }
    Some(match object.kind {
        crate::resource::Kind::Project => format!(
            "{principal} may not create or change project {:?}: that needs role admin in it",
            object.name()
        ),
        kind if kind.namespaced() => format!(
            "{principal} may not write in project {:?}: that needs role admin in it",
            object.project()
        ),
        kind => format!("{principal} may not write a {kind}: that needs role system-admin"),
    })
}
