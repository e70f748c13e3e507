//! The OAuth 2.0 device flow (RFC 8628) with the configured OpenID Connect provider: start a
//! sign-in (a code for the person to enter at the provider), ask whether it has ended, and
//! refresh an ID token. `dray login` calls the provider with these itself; the web UI has the
//! daemon call them on its behalf (`/auth/device`, `/auth/device/token`, `/auth/refresh`), so
//! the page needs no exception to its content policy and the provider no redirect address.
//!
//! The provider's answers are bounded (64 KiB, each value 8 KiB) and checked: a verification
//! address is `https://` (or `http://` on a loopback address), never a `javascript:` URL for a
//! page to show as a link.

use serde_json::Value;

/// Largest answer read from the provider.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Longest code, token or address taken from an answer.
const MAX_VALUE_BYTES: usize = 8 * 1024;

/// A sign-in started at the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    /// What the daemon or the CLI polls with; a secret of this sign-in.
    pub device_code: String,
    /// What the person enters at `verification_uri`.
    pub user_code: String,
    pub verification_uri: String,
    /// `verification_uri` with the code in it, when the provider gives one.
    pub verification_uri_complete: Option<String>,
    /// Seconds to wait between polls.
    pub interval: u64,
    /// Seconds the code is valid.
    pub expires_in: u64,
}

/// What the provider gives once the person signed in.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    pub id_token: String,
    pub refresh_token: Option<String>,
}

/// Where a started sign-in stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    /// The person has not finished yet: ask again after the interval.
    Pending,
    /// Asked too often: ask again after the interval and 5 s more.
    SlowDown,
    Done(Tokens),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    /// The person refused at the provider.
    #[error("the sign-in was refused at the provider")]
    Denied,
    /// The code or the refresh token is no longer valid.
    #[error("the sign-in expired: sign in again")]
    Expired,
    /// The provider refused, with its reason.
    #[error("the provider refused: {0}")]
    Refused(String),
    /// The provider could not be reached, or its answer was not one.
    #[error("the OpenID Connect provider: {0}")]
    Provider(String),
}

/// Starts a sign-in at `endpoint` (the provider's `device_authorization_endpoint`) for `scope`
/// (space-separated).
pub async fn start(
    http: &reqwest::Client,
    endpoint: &str,
    client_id: &str,
    scope: &str,
) -> Result<Started, DeviceError> {
    let answer = post(
        http,
        endpoint,
        &[("client_id", client_id), ("scope", scope)],
    )
    .await?;
    if let Some(error) = refusal(&answer) {
        return Err(DeviceError::Refused(error));
    }
    let field = |name: &str| -> Result<String, DeviceError> {
        text(&answer, name)?.ok_or_else(|| {
            DeviceError::Provider(format!("its answer to a new sign-in has no {name}"))
        })
    };
    let verification_uri = field("verification_uri")?;
    web_address(&verification_uri)?;
    let verification_uri_complete = text(&answer, "verification_uri_complete")?;
    if let Some(uri) = &verification_uri_complete {
        web_address(uri)?;
    }
    Ok(Started {
        device_code: field("device_code")?,
        user_code: field("user_code")?,
        verification_uri,
        verification_uri_complete,
        interval: answer["interval"].as_u64().unwrap_or(5).clamp(1, 60),
        expires_in: answer["expires_in"].as_u64().unwrap_or(600).clamp(1, 3600),
    })
}

/// Asks `token_endpoint` whether the sign-in of `device_code` has ended.
pub async fn poll(
    http: &reqwest::Client,
    token_endpoint: &str,
    client_id: &str,
    device_code: &str,
) -> Result<Poll, DeviceError> {
    let answer = post(
        http,
        token_endpoint,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", client_id),
        ],
    )
    .await?;
    match answer["error"].as_str() {
        None => tokens(&answer).map(Poll::Done),
        Some("authorization_pending") => Ok(Poll::Pending),
        Some("slow_down") => Ok(Poll::SlowDown),
        Some("access_denied") => Err(DeviceError::Denied),
        Some("expired_token") => Err(DeviceError::Expired),
        Some(_) => Err(DeviceError::Refused(refusal(&answer).unwrap_or_default())),
    }
}

/// A new ID token for `refresh_token`.
pub async fn refresh(
    http: &reqwest::Client,
    token_endpoint: &str,
    client_id: &str,
    refresh_token: &str,
) -> Result<Tokens, DeviceError> {
    let answer = post(
        http,
        token_endpoint,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ],
    )
    .await?;
    match answer["error"].as_str() {
        None => tokens(&answer),
        // RFC 6749: an expired or revoked refresh token is `invalid_grant`.
        Some("invalid_grant") => Err(DeviceError::Expired),
        Some(_) => Err(DeviceError::Refused(refusal(&answer).unwrap_or_default())),
    }
}

fn tokens(answer: &Value) -> Result<Tokens, DeviceError> {
    let Some(id_token) = text(answer, "id_token")? else {
        return Err(DeviceError::Provider(
            "it gave no ID token: the client must ask for the openid scope".into(),
        ));
    };
    Ok(Tokens {
        id_token,
        refresh_token: text(answer, "refresh_token")?,
    })
}

/// The provider's `error` and `error_description`, when the answer is a refusal.
fn refusal(answer: &Value) -> Option<String> {
    let error = answer["error"].as_str()?;
    let said = answer["error_description"].as_str().unwrap_or_default();
    let mut reason = if said.is_empty() {
        error.to_string()
    } else {
        format!("{error}: {said}")
    };
    if reason.len() > 300 {
        let mut end = 300;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    Some(reason)
}

/// The string `name` of `answer`, if there, at most [`MAX_VALUE_BYTES`].
fn text(answer: &Value, name: &str) -> Result<Option<String>, DeviceError> {
    match &answer[name] {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) if s.len() <= MAX_VALUE_BYTES => Ok(Some(s.clone())),
        Value::String(_) => Err(DeviceError::Provider(format!(
            "its {name} is longer than 8 KiB"
        ))),
        _ => Err(DeviceError::Provider(format!("its {name} is not a string"))),
    }
}

/// A web address a person may be sent to: https, or http on a loopback address.
fn web_address(uri: &str) -> Result<(), DeviceError> {
    super::oidc::issuer_allowed(uri).map_err(|_| {
        DeviceError::Provider(format!(
            "it names a sign-in page that is not an https:// address: {:?}",
            uri.chars().take(100).collect::<String>()
        ))
    })
}

/// POSTs `form` to `url` and reads the JSON answer, whatever its status (the provider says
/// `authorization_pending` with a 400), at most [`MAX_ANSWER_BYTES`].
async fn post(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Result<Value, DeviceError> {
    let fail = |e: String| DeviceError::Provider(format!("POST {url}: {e}"));
    let mut response = http
        .post(url)
        .form(form)
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER_BYTES {
            return Err(fail("the answer is larger than 64 KiB".into()));
        }
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(answer @ Value::Object(_)) => Ok(answer),
        _ => Err(fail(format!("{status}, and not a JSON object"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_bounded_and_of_their_type() {
        let answer = json!({"a": "x", "b": "", "c": 7, "d": "y".repeat(MAX_VALUE_BYTES + 1)});
        assert_eq!(text(&answer, "a"), Ok(Some("x".into())));
        assert_eq!(text(&answer, "b"), Ok(None));
        assert_eq!(text(&answer, "missing"), Ok(None));
        assert!(text(&answer, "c").is_err());
        assert!(text(&answer, "d").is_err());
    }

    #[test]
    fn a_sign_in_page_is_a_web_address() {
        assert!(web_address("https://idp.example/device").is_ok());
        assert!(web_address("http://127.0.0.1:4444/device").is_ok());
        for hostile in [
            "javascript:alert(1)",
            "data:text/html,<script>",
            "http://idp.example/device",
            "//idp.example",
        ] {
            assert!(web_address(hostile).is_err(), "{hostile}");
        }
    }

    #[test]
    fn a_refusal_is_the_providers_reason_cut_short() {
        assert_eq!(refusal(&json!({})), None);
        assert_eq!(
            refusal(&json!({"error": "invalid_client"})),
            Some("invalid_client".into())
        );
        let long = refusal(&json!({"error": "x", "error_description": "é".repeat(400)}))
            .expect("a reason");
        assert!(long.len() <= 304 && long.ends_with('…'), "{long}");
    }
}
