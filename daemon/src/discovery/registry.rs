//! How discovery speaks to OCI registries. One [`Registries`] is shared by every Warehouse (and
//! chart subscription), so what it learns about a registry holds for all of them:
//!
//! - **Grants** (a bearer token, or basic credentials a registry accepted) are kept per registry,
//!   repository and credential until they expire, so a cycle that finds nothing new is a single
//!   tag-list request: no `/v2/` probe, no token request.
//! - **A client-side rate limit** per registry (`[discovery] registry-requests-per-second`):
//!   discoveries of many Warehouses on one registry queue behind it; other registries are not
//!   slowed.
//! - **Back-off**: a registry that answers 429 is left alone for 10 s, then twice as long each
//!   time it asks again (10 min at most); only discoveries that use it wait.
//! - **Mirrors** (`[discovery.registry-mirrors]`): a registry's images may be read from a mirror
//!   (a pull-through cache, or the copy an air-gapped site keeps), as Docker's `registry-mirrors`
//!   and containerd's hosts do. Freight still names the images as the Warehouse does.
//!
//! Tag lists, manifests and configs are read here with plain HTTP (the distribution API is three
//! GETs) rather than through oci-client, which Dray keeps for its image references and for
//! fetching plugins: oci-client 0.18 does not expose the `Link` header registries paginate tag
//! lists with (some cap a page well below 1,000 tags), asks `/v2/` before every request to a
//! registry that needs no token (doubling the requests of a discovery), and keeps its tokens
//! per client rather than for every Warehouse.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::image::{ImageError, reference, reserved, with_causes};

/// Tags asked for per page; registries may send fewer (and then a `Link` to the next page).
const PAGE: usize = 1000;
/// Most pages read for one repository (a million tags).
const MAX_PAGES: usize = 1000;
/// The largest answer read: a page of tags, a manifest or an image config (a registry that
/// sends more is refused, not followed).
const MAX_BODY: usize = 16 << 20;
/// The requests per second a registry gets when the config does not say.
pub const DEFAULT_RATE: u32 = 20;

/// Where a repository is read from.
#[derive(Debug, Clone)]
pub struct Target {
    /// The host requests go to: the registry, or its mirror.
    pub host: String,
    /// The repository path in the registry (`library/nginx` for Docker Hub's `nginx`).
    pub repository: String,
}

impl Target {
    /// The distribution API's URL of `path` (`tags/list`, `manifests/…`, `blobs/…`) in this
    /// repository.
    fn url(&self, path: &str) -> String {
        format!(
            "{}://{}/v2/{}/{path}",
            scheme(&self.host),
            self.host,
            self.repository
        )
    }
}

/// What a registry accepted from us, and until when it is good.
#[derive(Clone)]
enum Grant {
    Bearer(String),
    Basic(String, String),
}

/// Registries as discovery knows them; see the module docs.
pub struct Registries {
    http: reqwest::Client,
    /// Grants by host, repository and credential, with when they stop being used.
    grants: Mutex<HashMap<String, (Grant, Instant)>>,
    limiter: DefaultKeyedRateLimiter<String>,
    backoff: Mutex<HashMap<String, (Instant, Duration)>>,
    /// Mirror host by registry (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    mirrors: BTreeMap<String, String>,
}

pub(crate) fn is_local(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

/// Registries on `localhost` or a loopback address are spoken to over plain HTTP, as Docker does.
fn scheme(host: &str) -> &'static str {
    if is_local(host) { "http" } else { "https" }
}

/// A short fingerprint of a credential: grants and clients are never shared between two.
fn credential_key(auth: &RegistryAuth) -> String {
    let text = match auth {
        RegistryAuth::Anonymous => return "-".into(),
        RegistryAuth::Basic(user, password) => format!("basic\0{user}\0{password}"),
        RegistryAuth::Bearer(token) => format!("bearer\0{token}"),
    };
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

/// The `rel="next"` target of a `Link` header, resolved against `url`.
fn next_page(headers: &reqwest::header::HeaderMap, url: &reqwest::Url) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|link| {
            link.split(';')
                .skip(1)
                .any(|p| p.trim().replace(' ', "") == "rel=\"next\"")
        })
        .and_then(|link| {
            let target = link.split(';').next()?.trim();
            let target = target.strip_prefix('<')?.strip_suffix('>')?;
            url.join(target).ok().map(String::from)
        })
}

/// Whether `other` is on the same host and port as `url`.
fn same_host(url: &reqwest::Url, other: &str) -> bool {
    let place = |u: &reqwest::Url| {
        u.host_str()
            .map(|h| (h.to_ascii_lowercase(), u.port_or_known_default()))
    };
    reqwest::Url::parse(other).is_ok_and(|o| place(&o).is_some() && place(&o) == place(url))
}

#[derive(Deserialize)]
struct TagList {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registries")
            .field("mirrors", &self.mirrors)
            .finish_non_exhaustive()
    }
}

impl Registries {
    /// `rate`: requests per second per registry; `mirrors`: mirror host by registry.
    pub fn new(rate: u32, mirrors: BTreeMap<String, String>) -> Registries {
        let rate = NonZeroU32::new(rate.max(1)).expect("at least one");
        Registries {
            http: crate::tls::client_builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
            grants: Mutex::default(),
            limiter: RateLimiter::keyed(Quota::per_second(rate)),
            backoff: Mutex::default(),
            mirrors,
        }
    }

    /// Where `repo_url` (`host/path`, `path` for Docker Hub) is read from.
    pub fn target(&self, repo_url: &str) -> Result<Target, ImageError> {
        let image = reference(repo_url.trim_end_matches('/'), "latest")?;
        let named = image.registry().to_string();
        let host = self
            .mirrors
            .get(&named)
            .or_else(|| self.mirrors.get(image.resolve_registry()))
            .cloned()
            .unwrap_or_else(|| image.resolve_registry().to_string());
        reserved(&host)?;
        Ok(Target {
            host,
            repository: image.repository().to_string(),
        })
    }

    /// Waits for `host`'s rate limit to allow one more request.
    pub async fn permit(&self, host: &str) {
        self.limiter.until_key_ready(&host.to_string()).await;
    }

    /// Runs `call` against `host` unless it is being left alone after a 429; a 429 backs it off,
    /// an answer forgets its back-off.
    pub async fn guarded<T>(
        &self,
        host: &str,
        call: impl Future<Output = Result<T, ImageError>>,
    ) -> Result<T, ImageError> {
        let until = self
            .backoff
            .lock()
            .expect("backoff")
            .get(host)
            .map(|(at, _)| *at)
            .filter(|at| *at > Instant::now());
        if let Some(until) = until {
            let wait = until.saturating_duration_since(Instant::now()).as_secs() + 1;
            return Err(ImageError::Throttled(format!(
                "{host} asked to slow down (429); it is left alone for another {wait} s"
            )));
        }
        let result = call.await;
        let mut backoff = self.backoff.lock().expect("backoff");
        match &result {
            Err(ImageError::Throttled(_)) => {
                let wait = backoff.get(host).map_or(Duration::from_secs(10), |(_, d)| {
                    (*d * 2).min(Duration::from_secs(600))
                });
                backoff.insert(host.to_string(), (Instant::now() + wait, wait));
                tracing::warn!(%host, ?wait, "registry answered 429; backing off");
            }
            Err(ImageError::Failed(_)) => {}
            Ok(_) => {
                backoff.remove(host);
            }
        }
        result
    }

    /// Every tag of the repository, following the registry's pages.
    pub async fn tags(
        &self,
        target: &Target,
        auth: &RegistryAuth,
    ) -> Result<Vec<String>, ImageError> {
        let what = format!(
            "cannot list the tags of {}/{}",
            target.host, target.repository
        );
        let mut url = target.url(&format!("tags/list?n={PAGE}"));
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let response = self
                .get(target, auth, &url, "application/json", &what)
                .await?;
            let next = next_page(response.headers(), response.url());
            // The grant goes with the next request: never to another host.
            if let Some(next) = &next
                && !same_host(response.url(), next)
            {
                return Err(ImageError::Failed(format!(
                    "{what}: the next page is on another host ({next}); not followed"
                )));
            }
            let body = read_limited(response, &what).await?;
            let list: TagList = serde_json::from_slice(&body).map_err(|e| {
                ImageError::Failed(format!("{what}: the answer is not a tag list: {e}"))
            })?;
            all.extend(list.tags.unwrap_or_default());
            match next {
                Some(next) => url = next,
                None => return Ok(all),
            }
        }
        Err(ImageError::Failed(format!(
            "{what}: more than {MAX_PAGES} pages of tags; narrow the repository"
        )))
    }

    /// The manifest `reference` (a tag or a digest) of the repository, as one of the `accept`
    /// media types: its bytes, and its digest (the registry's `Docker-Content-Digest`, else the
    /// bytes' own).
    pub async fn manifest(
        &self,
        target: &Target,
        auth: &RegistryAuth,
        reference: &str,
        accept: &[&str],
    ) -> Result<(Vec<u8>, String), ImageError> {
        let what = format!(
            "cannot read the manifest {}/{}:{reference}",
            target.host, target.repository
        );
        let url = target.url(&format!("manifests/{reference}"));
        let response = self
            .get(target, auth, &url, &accept.join(", "), &what)
            .await?;
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_limited(response, &what).await?;
        let digest =
            digest.unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(&bytes))));
        Ok((bytes, digest))
    }

    /// The blob `digest` of the repository (an image's config), checked against its digest.
    pub async fn blob(
        &self,
        target: &Target,
        auth: &RegistryAuth,
        digest: &str,
    ) -> Result<Vec<u8>, ImageError> {
        self.blob_up_to(target, auth, digest, MAX_BODY).await
    }

    /// [`Registries::blob`] for blobs that may be larger (a plugin's component): refused past
    /// `max` bytes.
    pub async fn blob_up_to(
        &self,
        target: &Target,
        auth: &RegistryAuth,
        digest: &str,
        max: usize,
    ) -> Result<Vec<u8>, ImageError> {
        let what = format!(
            "cannot read the blob {}/{}@{digest}",
            target.host, target.repository
        );
        let url = target.url(&format!("blobs/{digest}"));
        let response = self.get(target, auth, &url, "*/*", &what).await?;
        let bytes = read_up_to(response, &what, max).await?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if digest.starts_with("sha256:") && actual != digest {
            return Err(ImageError::Failed(format!(
                "{what}: the registry sent content whose digest is {actual}"
            )));
        }
        Ok(bytes)
    }

    /// The referrers of manifest `digest` of type `artifact_type`, as an OCI index, from the
    /// registry's referrers API (`None` where it has none).
    pub async fn referrers(
        &self,
        target: &Target,
        auth: &RegistryAuth,
        digest: &str,
        artifact_type: &str,
    ) -> Option<Vec<u8>> {
        let what = format!(
            "cannot list the referrers of {}/{}@{digest}",
            target.host, target.repository
        );
        let url = target.url(&format!("referrers/{digest}?artifactType={artifact_type}"));
        let response = self
            .get(
                target,
                auth,
                &url,
                "application/vnd.oci.image.index.v1+json",
                &what,
            )
            .await
            .ok()?;
        read_limited(response, &what).await.ok()
    }

    /// A GET of `url` with the grant known for this repository and credential; a 401 is
    /// answered (once) by following the registry's challenge.
    async fn get(
        &self,
        target: &Target,
        auth: &RegistryAuth,
        url: &str,
        accept: &str,
        what: &str,
    ) -> Result<reqwest::Response, ImageError> {
        let key = format!(
            "{}|{}|{}",
            target.host,
            target.repository,
            credential_key(auth)
        );
        let mut grant = {
            let grants = self.grants.lock().expect("grants");
            grants
                .get(&key)
                .filter(|(_, until)| *until > Instant::now())
                .map(|(g, _)| g.clone())
        };
        let mut challenged = false;
        loop {
            self.permit(&target.host).await;
            let mut request = self.http.get(url).header("Accept", accept);
            request = match &grant {
                Some(Grant::Bearer(token)) => request.bearer_auth(token),
                Some(Grant::Basic(user, password)) => request.basic_auth(user, Some(password)),
                None => request,
            };
            let response = request
                .send()
                .await
                .map_err(|e| ImageError::Failed(with_causes(what, &e)))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == reqwest::StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = response
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let (granted, until) = self.authorize(target, auth, &challenge, what).await?;
                self.grants
                    .lock()
                    .expect("grants")
                    .insert(key.clone(), (granted.clone(), until));
                grant = Some(granted);
                continue;
            }
            return Err(match status.as_u16() {
                429 => ImageError::Throttled(format!(
                    "{what}: the registry answered 429 Too Many Requests"
                )),
                401 | 403 => ImageError::Failed(format!(
                    "{what}: the registry refused access ({status}); {}",
                    credentials_hint(auth)
                )),
                404 => ImageError::Failed(format!(
                    "{what}: not found (404); check the repository's name"
                )),
                _ => {
                    let body = response.text().await.unwrap_or_default();
                    ImageError::Failed(format!(
                        "{what}: the registry answered {status}: {}",
                        body.chars().take(200).collect::<String>().trim()
                    ))
                }
            });
        }
    }

    /// Answers a registry's `WWW-Authenticate` challenge: a token from its `Bearer` realm
    /// (with the credential, if any), or the credential itself for `Basic`.
    async fn authorize(
        &self,
        target: &Target,
        auth: &RegistryAuth,
        challenge: &str,
        what: &str,
    ) -> Result<(Grant, Instant), ImageError> {
        let challenges = http_auth::parse_challenges(challenge).unwrap_or_default();
        let param = |c: &http_auth::ChallengeRef, name: &str| {
            c.params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_unescaped())
        };
        if let Some(bearer) = challenges
            .iter()
            .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        {
            let realm = param(bearer, "realm").ok_or_else(|| {
                ImageError::Failed(format!("{what}: the registry's challenge names no realm"))
            })?;
            let mut query = vec![(
                "scope".to_string(),
                format!("repository:{}:pull", target.repository),
            )];
            if let Some(service) = param(bearer, "service") {
                query.push(("service".into(), service));
            }
            let mut request = self.http.get(&realm).query(&query);
            match auth {
                RegistryAuth::Basic(user, password) => {
                    request = request.basic_auth(user, Some(password))
                }
                RegistryAuth::Bearer(token) => request = request.bearer_auth(token),
                RegistryAuth::Anonymous => {}
            }
            self.permit(&target.host).await;
            let response = request.send().await.map_err(|e| {
                ImageError::Failed(format!(
                    "{what}: cannot reach the token service {realm}: {e}"
                ))
            })?;
            let status = response.status();
            if !status.is_success() {
                return Err(if status.as_u16() == 429 {
                    ImageError::Throttled(format!("{what}: {realm} answered 429 Too Many Requests"))
                } else {
                    ImageError::Failed(format!(
                        "{what}: the token service {realm} refused ({status}); {}",
                        credentials_hint(auth)
                    ))
                });
            }
            let body = read_limited(response, what).await?;
            let answer: TokenAnswer = serde_json::from_slice(&body)
                .map_err(|e| ImageError::Failed(format!("{what}: {realm} sent no token: {e}")))?;
            let token = answer
                .token
                .or(answer.access_token)
                .ok_or_else(|| ImageError::Failed(format!("{what}: {realm} sent no token")))?;
            // Used until a little before it expires (60 s when the service does not say).
            let life = Duration::from_secs(answer.expires_in.unwrap_or(60).max(10));
            return Ok((Grant::Bearer(token), Instant::now() + life.mul_f32(0.9)));
        }
        if challenges
            .iter()
            .any(|c| c.scheme.eq_ignore_ascii_case("basic"))
            && let RegistryAuth::Basic(user, password) = auth
        {
            return Ok((
                Grant::Basic(user.clone(), password.clone()),
                Instant::now() + Duration::from_secs(3600),
            ));
        }
        Err(ImageError::Failed(format!(
            "{what}: the registry asks for credentials; {}",
            credentials_hint(auth)
        )))
    }
}

/// The body of `response`, refused past [`MAX_BODY`].
async fn read_limited(response: reqwest::Response, what: &str) -> Result<Vec<u8>, ImageError> {
    read_up_to(response, what, MAX_BODY).await
}

/// The body of `response`, refused past `max` bytes.
async fn read_up_to(
    mut response: reqwest::Response,
    what: &str,
    max: usize,
) -> Result<Vec<u8>, ImageError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ImageError::Failed(with_causes(what, &e)))?
    {
        if body.len() + chunk.len() > max {
            let limit = if max >= 1 << 20 {
                format!("{} MiB", max >> 20)
            } else {
                format!("{max} bytes")
            };
            return Err(ImageError::Failed(format!(
                "{what}: the registry's answer is larger than {limit}; refused"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn credentials_hint(auth: &RegistryAuth) -> &'static str {
    match auth {
        RegistryAuth::Anonymous => {
            "add a Secret labelled kargo.akuity.io/cred-type: image (helm for charts) whose repoURL matches, with username and password"
        }
        _ => {
            "check the username and password of the matching cred-type Secret, and that they may pull this repository"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        let url = reqwest::Url::parse("https://r.io/v2/a/tags/list?n=1000").unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::LINK,
            "</v2/a/tags/list?last=v9&n=1000>; rel=\"next\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_page(&headers, &url).as_deref(),
            Some("https://r.io/v2/a/tags/list?last=v9&n=1000")
        );
        headers.insert(
            reqwest::header::LINK,
            "<https://r.io/other>; rel=\"prev\"".parse().unwrap(),
        );
        assert_eq!(next_page(&headers, &url), None);
        assert!(same_host(&url, "https://R.io:443/v2/a/tags/list?last=x"));
        assert!(!same_host(&url, "https://elsewhere.io/v2/a/tags/list"));
        assert!(!same_host(&url, "http://r.io/v2/a/tags/list"));
    }

    #[test]
    fn a_mirror_serves_its_registry_and_docker_hub_names_are_completed() {
        let mirrors = BTreeMap::from([("docker.io".to_string(), "127.0.0.1:5000".to_string())]);
        let registries = Registries::new(5, mirrors);
        let t = registries.target("acme/web").unwrap();
        assert_eq!(
            (t.host.as_str(), t.repository.as_str()),
            ("127.0.0.1:5000", "acme/web")
        );
        let t = registries.target("nginx").unwrap();
        assert_eq!(t.repository, "library/nginx");
        let t = registries.target("ghcr.io/acme/web").unwrap();
        assert_eq!(t.host, "ghcr.io");
        assert!(registries.target("registry.example/acme").is_err());
    }

    #[tokio::test]
    async fn each_registry_has_its_own_request_budget() {
        let registries = Registries::new(1, BTreeMap::new());
        registries.permit("a.io").await;
        let key = |k: &str| k.to_string();
        assert!(
            registries.limiter.check_key(&key("a.io")).is_err(),
            "a second request to a.io within the second must wait"
        );
        assert!(
            registries.limiter.check_key(&key("b.io")).is_ok(),
            "b.io is not slowed by a.io"
        );
    }

    #[test]
    fn credentials_never_share_a_key() {
        let a = credential_key(&RegistryAuth::Basic("u".into(), "p".into()));
        let b = credential_key(&RegistryAuth::Basic("u".into(), "q".into()));
        assert_ne!(a, b);
        assert_eq!(credential_key(&RegistryAuth::Anonymous), "-");
    }
}
