//! The web UI's sign-in with OpenID Connect: the daemon runs the device flow with its provider
//! on the page's behalf (`auth::device`), so the page talks to its own origin only.
//!
//! - `POST /auth/device` starts a sign-in: `{userCode, verificationURI, verificationURIComplete,
//!   interval, expiresIn, deviceCode}`. The person opens the address (anywhere) and enters the
//!   code; the page keeps `deviceCode` to ask with.
//! - `POST /auth/device/token` `{deviceCode}`: `{status: "pending" | "slow-down"}` until the
//!   person has signed in, then `{status: "signed-in", idToken, refreshToken}`.
//! - `POST /auth/refresh` `{refreshToken}`: a new `{idToken, refreshToken}`.
//!
//! The ID token is then the page's bearer token, checked on every request as `dray login`'s is.
//! These routes take no token (the page has none yet): every call is bounded (a 32 KiB body,
//! codes of 8 KiB, the provider asked at most [`PAGE_CALLS_PER_MINUTE`] times a minute for all
//! pages together), answers are never cached (`Cache-Control: no-store`), and no code or token
//! is written to the log or into an error.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, ErrorBody};
use crate::auth::device::{self, DeviceError, Poll, Tokens};
use crate::auth::oidc::{Oidc, OidcError, PAGE_CALLS_PER_MINUTE};

/// Longest device code or refresh token taken from a page.
const MAX_CODE_BYTES: usize = 8 * 1024;

/// What went wrong, as the page reads it: the status, a code and a sentence.
pub struct Refusal(StatusCode, &'static str, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let Refusal(status, code, message) = self;
        no_store(
            (
                status,
                Json(ErrorBody {
                    code,
                    message,
                    errors: None,
                }),
            )
                .into_response(),
        )
    }
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl From<DeviceError> for Refusal {
    fn from(e: DeviceError) -> Refusal {
        let status = match e {
            DeviceError::Denied => StatusCode::FORBIDDEN,
            DeviceError::Expired => StatusCode::GONE,
            DeviceError::Refused(_) => StatusCode::BAD_REQUEST,
            DeviceError::Provider(_) => StatusCode::BAD_GATEWAY,
        };
        let code = match e {
            DeviceError::Denied => "access_denied",
            DeviceError::Expired => "expired",
            DeviceError::Refused(_) => "refused",
            DeviceError::Provider(_) => "provider",
        };
        Refusal(status, code, e.to_string())
    }
}

/// The daemon's provider, its endpoints, and one call's room in the minute's budget.
async fn provider(state: &AppState) -> Result<(&Oidc, crate::auth::oidc::Discovery), Refusal> {
    let Some(oidc) = state.oidc.as_deref() else {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            "not_found",
            "this daemon has no OpenID Connect sign-in ([oidc] in its config): sign in with an API token".into(),
        ));
    };
    if !oidc.may_call_for_a_page() {
        return Err(Refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many",
            format!(
                "more than {PAGE_CALLS_PER_MINUTE} sign-in requests this minute: try again in a minute"
            ),
        ));
    }
    let discovery = oidc.discovery().await.map_err(|e| match e {
        OidcError::Provider(m) => Refusal(
            StatusCode::BAD_GATEWAY,
            "provider",
            format!("the OpenID Connect provider: {m}"),
        ),
        other => Refusal(StatusCode::BAD_GATEWAY, "provider", other.to_string()),
    })?;
    crate::auth::oidc::issuer_allowed(&discovery.token_endpoint).map_err(|_| {
        Refusal(
            StatusCode::BAD_GATEWAY,
            "provider",
            "the provider's token_endpoint is not https://".into(),
        )
    })?;
    Ok((oidc, discovery))
}

/// `POST /auth/device`: starts a sign-in.
pub async fn start(State(state): State<AppState>) -> Result<Response, Refusal> {
    let (oidc, discovery) = provider(&state).await?;
    let Some(endpoint) = discovery.device_authorization_endpoint else {
        return Err(Refusal(
            StatusCode::BAD_GATEWAY,
            "provider",
            format!(
                "the provider {} does not offer the device flow (device_authorization_endpoint): enable it for client {}",
                oidc.config.issuer_url, oidc.config.client_id
            ),
        ));
    };
    crate::auth::oidc::issuer_allowed(&endpoint).map_err(|_| {
        Refusal(
            StatusCode::BAD_GATEWAY,
            "provider",
            "the provider's device_authorization_endpoint is not https://".into(),
        )
    })?;
    let started = device::start(
        oidc.http(),
        &endpoint,
        &oidc.config.client_id,
        &oidc.scopes().join(" "),
    )
    .await?;
    Ok(no_store(
        Json(json!({
            "userCode": started.user_code,
            "verificationURI": started.verification_uri,
            "verificationURIComplete": started.verification_uri_complete,
            "interval": started.interval,
            "expiresIn": started.expires_in,
            "deviceCode": started.device_code,
        }))
        .into_response(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeviceTokenRequest {
    device_code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RefreshRequest {
    refresh_token: String,
}

/// The page's JSON body, with its one code checked for size.
fn body<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    code: impl Fn(&T) -> &str,
) -> Result<T, Refusal> {
    let request: T = serde_json::from_slice(bytes).map_err(|_| {
        Refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the body must be a JSON object with just {what}"),
        )
    })?;
    let value = code(&request);
    if value.is_empty() || value.len() > MAX_CODE_BYTES {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{what} must be given, and at most 8 KiB"),
        ));
    }
    Ok(request)
}

fn tokens(status: Option<&str>, t: Tokens) -> Response {
    let mut answer = json!({ "idToken": t.id_token, "refreshToken": t.refresh_token });
    if let Some(status) = status {
        answer["status"] = Value::from(status);
    }
    no_store(Json(answer).into_response())
}

/// `POST /auth/device/token`: whether the sign-in of `deviceCode` has ended.
pub async fn poll(State(state): State<AppState>, bytes: Bytes) -> Result<Response, Refusal> {
    let request: DeviceTokenRequest = body(&bytes, "deviceCode", |r: &DeviceTokenRequest| {
        &r.device_code
    })?;
    let (oidc, discovery) = provider(&state).await?;
    let status = |s: &str| no_store(Json(json!({ "status": s })).into_response());
    Ok(
        match device::poll(
            oidc.http(),
            &discovery.token_endpoint,
            &oidc.config.client_id,
            &request.device_code,
        )
        .await?
        {
            Poll::Pending => status("pending"),
            Poll::SlowDown => status("slow-down"),
            Poll::Done(t) => tokens(Some("signed-in"), t),
        },
    )
}

/// `POST /auth/refresh`: a new ID token for `refreshToken`.
pub async fn refresh(State(state): State<AppState>, bytes: Bytes) -> Result<Response, Refusal> {
    let request: RefreshRequest = body(&bytes, "refreshToken", |r: &RefreshRequest| {
        &r.refresh_token
    })?;
    let (oidc, discovery) = provider(&state).await?;
    let t = device::refresh(
        oidc.http(),
        &discovery.token_endpoint,
        &oidc.config.client_id,
        &request.refresh_token,
    )
    .await?;
    Ok(tokens(None, t))
}
