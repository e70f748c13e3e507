//! People signed in with OpenID Connect: `dray login` gets an ID token from the identity
//! provider (the device flow), and every request carries it as its bearer token. The daemon
//! checks it against the provider's keys and maps its groups to roles with the config's
//! `[[oidc.roles]]`.
//!
//! Checked: the signature (asymmetric algorithms only: RSA, RSA-PSS, ECDSA, EdDSA; never `none`
//! or a shared secret), by a key of the issuer's JWKS with the token's `kid`; `iss` is the
//! configured issuer; `aud` holds the client ID; `exp` and `nbf` (one minute of leeway). The
//! discovery document and the keys are fetched from the issuer only (HTTPS, or HTTP on a
//! loopback address), bounded in size and time, and the keys are fetched again at most every 30
//! seconds: a token naming an unknown `kid` cannot make the daemon hammer the provider.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Grant, Principal, Role, Scope};

/// `[oidc]` in the daemon config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OidcConfig {
    /// The provider's issuer URL, as its tokens' `iss` says it.
    pub issuer_url: String,
    /// The client the CLI signs in as (a public client with the device grant); tokens must be
    /// for it (`aud`).
    pub client_id: String,
    /// The claim that lists a person's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Scopes the CLI asks for besides `openid`, `email`, `offline_access` (e.g. `groups`).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Which group holds which role where.
    #[serde(default)]
    pub roles: Vec<GroupRole>,
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_scopes() -> Vec<String> {
    vec!["groups".into()]
}

/// `[[oidc.roles]]`: members of `group` hold `role` in `projects` (or every project).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GroupRole {
    pub group: String,
    pub role: Role,
    #[serde(default)]
    pub projects: BTreeSet<String>,
    #[serde(default)]
    pub all_projects: bool,
}

impl OidcConfig {
    /// What serde cannot check.
    pub fn check(&self) -> Result<(), String> {
        issuer_allowed(&self.issuer_url)?;
        if self.client_id.trim().is_empty() {
            return Err("[oidc] client-id is empty".into());
        }
        for (i, r) in self.roles.iter().enumerate() {
            if r.role != Role::SystemAdmin && r.projects.is_empty() && !r.all_projects {
                return Err(format!(
                    "[[oidc.roles]] {i} (group {:?}): role {} holds in projects: set projects = [...] or all-projects = true",
                    r.group, r.role
                ));
            }
        }
        Ok(())
    }
}

/// HTTPS, or HTTP to a loopback address (a provider on the same machine, as in tests).
pub(crate) fn issuer_allowed(url: &str) -> Result<(), String> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| {
            url.starts_with(p)
                && url[p.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| c == ':' || c == '/')
        });
    if url.starts_with("https://") || loopback {
        Ok(())
    } else {
        Err(format!(
            "[oidc] issuer-url {url:?} must be https:// (or http:// on a loopback address)"
        ))
    }
}

/// What a bearer token that looks like a JWT turned out to be.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Its time is up: the person signs in again (`dray login` refreshes by itself).
    #[error("your sign-in has expired: run `dray login` again")]
    Expired,
    /// Not a token of the configured provider for this client, or tampered with.
    #[error("the token is not one of the configured OpenID Connect provider for this daemon")]
    Invalid,
    /// The provider could not be asked for its keys.
    #[error("the OpenID Connect provider cannot be reached: {0}")]
    Provider(String),
}

/// The provider's discovery document, as far as Dray reads it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    pub token_endpoint: String,
}

/// Longest bearer token looked at.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest discovery document or key set read.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// The keys are fetched again at most this often.
const REFETCH_EVERY: Duration = Duration::from_secs(30);

/// The verifier of a daemon with `[oidc]`; cheap to share.
pub struct Oidc {
    pub config: OidcConfig,
    http: reqwest::Client,
    /// What was fetched from the provider, and when it was last asked. A tokio lock: it is held
    /// across the fetch, so concurrent requests wait for one fetch.
    keys: tokio::sync::Mutex<Fetched>,
    /// The provider calls made for the web UI's sign-in in the current minute (see
    /// [`Oidc::may_call_for_a_page`]).
    page_calls: std::sync::Mutex<(Instant, u32)>,
}

/// At most this many provider calls a minute for the web UI's sign-in (starts, polls and
/// refreshes of every page together): those routes take no token, and must not let anyone
/// make the daemon hammer its provider.
pub const PAGE_CALLS_PER_MINUTE: u32 = 300;

/// The provider's discovery document and keys as last fetched.
#[derive(Default)]
struct Fetched {
    discovery: Option<Discovery>,
    keys: Option<JwkSet>,
    /// When the provider was last asked, whether or not it answered: a provider that is down
    /// is not asked again for every request that carries a token.
    asked: Option<Instant>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

impl Oidc {
    pub fn new(config: OidcConfig) -> Oidc {
        let http = crate::tls::client_builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        Oidc {
            config,
            http,
            keys: tokio::sync::Mutex::new(Fetched::default()),
            page_calls: std::sync::Mutex::new((Instant::now(), 0)),
        }
    }

    /// The HTTP client for the provider (bounded in time, no redirects).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The scopes a sign-in asks for: `openid`, `email`, `offline_access` and the config's.
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes = vec![
            "openid".to_string(),
            "email".into(),
            "offline_access".into(),
        ];
        scopes.extend(self.config.scopes.iter().cloned());
        scopes
    }

    /// The provider's discovery document, fetched once and kept (a provider that is down is
    /// asked again at most every 30 s).
    pub async fn discovery(&self) -> Result<Discovery, OidcError> {
        let mut fetched = self.keys.lock().await;
        if let Some(d) = &fetched.discovery {
            return Ok(d.clone());
        }
        if fetched.asked.is_some_and(|at| at.elapsed() < REFETCH_EVERY) {
            return Err(OidcError::Provider(
                "it did not answer; trying again within 30 s".into(),
            ));
        }
        // Only a failure counts as asking: the keys are still to be fetched after a success.
        let discovery = Oidc::discover(&self.http, &self.config.issuer_url)
            .await
            .map_err(|e| {
                fetched.asked = Some(Instant::now());
                OidcError::Provider(e)
            })?;
        fetched.discovery = Some(discovery.clone());
        Ok(discovery)
    }

    /// Whether one more provider call for a page's sign-in fits this minute's
    /// [`PAGE_CALLS_PER_MINUTE`]; counts it if so.
    pub fn may_call_for_a_page(&self) -> bool {
        let mut calls = self.page_calls.lock().unwrap_or_else(|e| e.into_inner());
        if calls.0.elapsed() >= Duration::from_secs(60) {
            *calls = (Instant::now(), 0);
        }
        if calls.1 >= PAGE_CALLS_PER_MINUTE {
            return false;
        }
        calls.1 += 1;
        true
    }

    /// Whether `token` looks like a JWT (three base64url parts), so it is this module's to check.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.starts_with("eyJ") && token.split('.').count() == 3
    }

    /// The provider's discovery document.
    pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Discovery, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = get_json(http, &url).await?;
        if discovery.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(format!(
                "the provider at {issuer} says its issuer is {:?}; set [oidc] issuer-url to that",
                discovery.issuer
            ));
        }
        Ok(discovery)
    }

    /// The person `token` signs in, with the grants of their groups.
    pub async fn principal(&self, token: &str) -> Result<Principal, OidcError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(OidcError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| OidcError::Invalid)?;
        let asymmetric = matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        );
        if !asymmetric {
            return Err(OidcError::Invalid);
        }
        let key = self.key(header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[
            self.config.issuer_url.trim_end_matches('/'),
            &self.config.issuer_url,
        ]);
        validation.set_audience(&[&self.config.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 60;
        validation.validate_nbf = true;
        let claims =
            jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => OidcError::Expired,
                    _ => OidcError::Invalid,
                }
            })?;
        Ok(self.grants_of(claims.claims))
    }

    fn grants_of(&self, claims: Claims) -> Principal {
        let groups: BTreeSet<String> = match claims.rest.get(&self.config.groups_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(one)) => [one.clone()].into(),
            _ => BTreeSet::new(),
        };
        let grants = self
            .config
            .roles
            .iter()
            .filter(|r| groups.contains(&r.group))
            .map(|r| Grant {
                role: r.role,
                scope: if r.all_projects || r.role == Role::SystemAdmin {
                    Scope::AllProjects
                } else {
                    Scope::Projects(r.projects.clone())
                },
            })
            .collect();
        let actor = match claims.email.filter(|e| !e.is_empty()) {
            Some(email) => format!("email:{email}"),
            None => format!("subject:{}", claims.sub),
        };
        Principal { actor, grants }
    }

    /// The issuer's key `kid` for `alg`, from the cached key set or a fresh one.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, OidcError> {
        let mut fetched = self.keys.lock().await;
        let known = fetched
            .keys
            .as_ref()
            .is_some_and(|set| find(set, kid).is_some());
        let may_ask = fetched.asked.is_none_or(|at| at.elapsed() >= REFETCH_EVERY);
        if !known && may_ask {
            fetched.asked = Some(Instant::now());
            let discovery = match fetched.discovery.clone() {
                Some(d) => d,
                None => Oidc::discover(&self.http, &self.config.issuer_url)
                    .await
                    .map_err(OidcError::Provider)?,
            };
            issuer_allowed(&discovery.jwks_uri).map_err(|_| {
                OidcError::Provider(format!(
                    "its jwks_uri {} is not https://",
                    discovery.jwks_uri
                ))
            })?;
            let set: JwkSet = get_json(&self.http, &discovery.jwks_uri)
                .await
                .map_err(OidcError::Provider)?;
            fetched.discovery = Some(discovery);
            fetched.keys = Some(set);
        }
        let Some(set) = fetched.keys.as_ref() else {
            return Err(OidcError::Provider(
                "its keys could not be fetched; trying again within 30 s".into(),
            ));
        };
        let jwk = find(set, kid).ok_or(OidcError::Invalid)?;
        if let Some(key_alg) = jwk.common.key_algorithm
            && format!("{key_alg:?}") != format!("{alg:?}")
        {
            return Err(OidcError::Invalid);
        }
        DecodingKey::from_jwk(jwk).map_err(|_| OidcError::Invalid)
    }
}

/// The key `kid` names; without a `kid`, the set's only key.
fn find<'a>(set: &'a JwkSet, kid: Option<&str>) -> Option<&'a jsonwebtoken::jwk::Jwk> {
    match kid {
        Some(kid) => set.find(kid),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
}

/// GETs `url` as JSON, at most [`MAX_DOCUMENT_BYTES`].
async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let mut response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("GET {url}: the answer is larger than 1 MiB"));
        }
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not the JSON expected: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OidcConfig {
        OidcConfig {
            issuer_url: "https://idp.example".into(),
            client_id: "dray".into(),
            groups_claim: "groups".into(),
            scopes: vec![],
            roles: vec![
                GroupRole {
                    group: "shop-devs".into(),
                    role: Role::Promoter,
                    projects: ["shop".to_string()].into(),
                    all_projects: false,
                },
                GroupRole {
                    group: "auditors".into(),
                    role: Role::Viewer,
                    projects: BTreeSet::new(),
                    all_projects: true,
                },
            ],
        }
    }

    fn claims(json: Value) -> Claims {
        serde_json::from_value(json).expect("claims")
    }

    #[test]
    fn groups_map_to_grants_and_the_actor_is_the_email() {
        let oidc = Oidc::new(config());
        let person = oidc.grants_of(claims(serde_json::json!({
            "sub": "u1", "email": "ann@example.test", "groups": ["shop-devs", "auditors", "other"]
        })));
        assert_eq!(
            person.to_string(),
            "email:ann@example.test (promoter in shop; viewer in every project)"
        );
        let nobody = oidc.grants_of(claims(serde_json::json!({"sub": "u2", "groups": "other"})));
        assert_eq!(nobody.to_string(), "subject:u2 (no role)");
    }

    #[test]
    fn only_https_or_loopback_issuers_and_scoped_roles_name_projects() {
        assert!(issuer_allowed("https://idp.example").is_ok());
        assert!(issuer_allowed("http://127.0.0.1:5556/dex").is_ok());
        assert!(issuer_allowed("http://localhost.evil.example").is_err());
        assert!(issuer_allowed("http://idp.example").is_err());
        let mut bad = config();
        bad.roles[0].projects.clear();
        assert!(bad.check().unwrap_err().contains("shop-devs"));
    }

    #[tokio::test]
    async fn a_provider_that_is_down_is_not_asked_again_for_every_request() {
        // Nothing listens there: the first request tries, and fails.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let oidc = Oidc::new(OidcConfig {
            issuer_url: format!("http://127.0.0.1:{port}"),
            ..config()
        });
        use base64::Engine;
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","kid":"k"}"#),
            b64(r#"{"sub":"x"}"#)
        );
        let first = oidc.principal(&token).await;
        assert!(
            matches!(&first, Err(OidcError::Provider(m)) if m.contains("openid-configuration")),
            "{first:?}"
        );
        let second = oidc.principal(&token).await;
        assert!(
            matches!(&second, Err(OidcError::Provider(m)) if m.contains("within 30 s")),
            "{second:?}"
        );
    }

    #[tokio::test]
    async fn tokens_of_the_wrong_shape_or_algorithm_are_refused_before_any_fetch() {
        // The issuer does not exist: any fetch would fail with Provider, not Invalid.
        let oidc = Oidc::new(config());
        use base64::Engine;
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let payload = b64(
            r#"{"sub":"x","iss":"https://idp.example","aud":"dray","exp":9999999999,"groups":["shop-devs"]}"#,
        );
        for header in [r#"{"alg":"none"}"#, r#"{"alg":"HS256","kid":"k"}"#] {
            let token = format!("{}.{payload}.", b64(header));
            assert!(
                matches!(oidc.principal(&token).await, Err(OidcError::Invalid)),
                "{header}"
            );
        }
        let huge = format!("eyJ{}.a.b", "A".repeat(MAX_TOKEN_BYTES));
        assert!(matches!(
            oidc.principal(&huge).await,
            Err(OidcError::Invalid)
        ));
    }
}
