//! Webhook receivers (`POST /webhooks/{type}/{id}`): a Git host tells Dray about a push, and the
//! Warehouses subscribed to that repository are discovered at once instead of on their interval.
//!
//! Receivers are declared in a project's ProjectConfig (`spec.webhookReceivers`), each with a
//! Secret. As in Kargo, the receiver's URL ends in `sha256(project + receiver name + secret)`, so
//! rotating the Secret changes the URL, and each provider's own check is applied on top:
//! GitHub and Gitea sign the body (HMAC-SHA256 in `X-Hub-Signature-256`), Bitbucket too
//! (`X-Hub-Signature`), GitLab sends the token (`X-Gitlab-Token`); comparisons are constant-time.
//! Registries tell about pushed images: Docker Hub, Quay and Azure Container Registry are
//! authenticated by the URL alone (as in Kargo), Harbor by its `Authorization` header. Azure
//! DevOps sends Git pushes. The `generic` receiver does what its own `actions` say
//! ([`super::generic_receiver`]). A bad signature gets 401 and changes
//! nothing. The answer comes before discovery runs.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::discovery::git::PathFilter;
use crate::resource::urls::{normalize_git, normalize_image};
use crate::resource::{
    ClusterConfigSpec, CommitSelectionStrategy, Kind, ProjectConfigSpec, SYSTEM_NAMESPACE, Secret,
    WarehouseSpec,
};
use crate::store::Reader;
pub use payload::header;
use payload::{Push, image_push, pull_request_event, push};

mod payload;

/// The headers in which providers name a delivery, the same on every retry of it.
const DELIVERY_HEADERS: &[&str] = &[
    "x-github-delivery",
    "x-gitea-delivery",
    "x-gitlab-event-uuid",
    "x-request-uuid",
];
/// How many handled deliveries are remembered (the oldest are forgotten first).
const DELIVERIES_KEPT: usize = 10_000;

/// Delivery IDs already handled, per receiver: a request replayed verbatim (same signature,
/// same delivery ID) is answered without refreshing anything again. Kept in memory: a restart
/// forgets them, which costs at most one more refresh per replay.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// A std mutex: held for a lookup and an insert, never across an await.
    seen: std::sync::Mutex<(
        std::collections::HashSet<String>,
        std::collections::VecDeque<String>,
    )>,
}

impl Deliveries {
    /// Records `key`; false if it was recorded before.
    fn forget(&self, key: &str) {
        let mut guard = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (set, order) = &mut *guard;
        if set.remove(key) {
            order.retain(|k| k != key);
        }
    }

    fn first_time(&self, key: String) -> bool {
        let mut guard = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (set, order) = &mut *guard;
        if set.contains(&key) {
            return false;
        }
        if order.len() >= DELIVERIES_KEPT
            && let Some(oldest) = order.pop_front()
        {
            set.remove(&oldest);
        }
        set.insert(key.clone());
        order.push_back(key);
        true
    }
}

/// The provider's delivery ID of a request, if it sends one.
fn delivery_id(headers: &HeaderMap) -> Option<&str> {
    DELIVERY_HEADERS
        .iter()
        .map(|h| header(headers, h))
        .find(|v| !v.is_empty())
}

/// The largest body a receiver reads (Kargo's limit).
pub const MAX_BODY: usize = 2 << 20;

/// The receiver types Dray handles, and the Secret key each one's secret is under.
const TYPES: &[(&str, &str)] = &[
    ("github", "secret"),
    ("gitea", "secret"),
    ("gitlab", "secret-token"),
    ("bitbucket", "secret"),
    ("dockerhub", "secret"),
    ("quay", "secret"),
    ("harbor", "auth-header"),
    ("artifactory", "secret-token"),
    ("azure", "secret"),
    ("generic", "secret"),
];

/// One receiver of a project, with its secret and URL path.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub project: String,
    pub name: String,
    pub kind: &'static str,
    pub secret: String,
    pub path: String,
    /// Artifactory: the virtual repository that stands for the local one in image URLs.
    pub virtual_repo: Option<String>,
    /// Generic: what to do with a request (Kargo's `actions`).
    pub actions: Vec<Value>,
}

fn provider(r: &crate::resource::WebhookReceiver) -> Option<(&'static str, &str)> {
    [
        ("github", &r.github),
        ("gitea", &r.gitea),
        ("gitlab", &r.gitlab),
        ("bitbucket", &r.bitbucket),
        ("dockerhub", &r.dockerhub),
        ("quay", &r.quay),
        ("harbor", &r.harbor),
        ("azure", &r.azure),
    ]
    .into_iter()
    .find_map(|(kind, block)| block.as_ref().map(|b| (kind, b.secret_ref.name.as_str())))
    .or_else(|| {
        r.artifactory
            .as_ref()
            .map(|a| ("artifactory", a.secret_ref.name.as_str()))
    })
    .or_else(|| {
        r.generic
            .as_ref()
            .map(|g| ("generic", g.secret_ref.name.as_str()))
    })
}

/// Every receiver of `project` (or of all projects) whose Secret exists, with its path.
pub fn receivers(
    reader: &impl Reader,
    project: Option<&str>,
) -> Result<Vec<Receiver>, crate::store::StoreError> {
    let mut out = Vec::new();
    if project.is_none_or(str::is_empty) {
        // The ClusterConfig's receivers: project "", Secrets in the system namespace.
        for config in reader.list(Kind::ClusterConfig, None, None)? {
            if let Ok(spec) = serde_json::from_value::<ClusterConfigSpec>(config.spec().clone()) {
                add_receivers(
                    reader,
                    "",
                    SYSTEM_NAMESPACE,
                    &spec.webhook_receivers,
                    &mut out,
                )?;
            }
        }
    }
    for config in reader.list(Kind::ProjectConfig, project.filter(|p| !p.is_empty()), None)? {
        if project == Some("") {
            break;
        }
        let Ok(spec) = serde_json::from_value::<ProjectConfigSpec>(config.spec().clone()) else {
            continue;
        };
        let project = config.project().to_string();
        add_receivers(
            reader,
            &project,
            &project,
            &spec.webhook_receivers,
            &mut out,
        )?;
    }
    Ok(out)
}

/// What a refreshed Warehouse is called in a webhook's answer: its name, with its project for
/// a ClusterConfig's receiver.
pub(super) fn refreshed_name(receiver: &Receiver, project: &str, warehouse: &str) -> String {
    if receiver.project.is_empty() {
        format!("{project}/{warehouse}")
    } else {
        warehouse.to_string()
    }
}

/// The receivers of one config: `project` is whose they are ("" for the cluster's), and
/// `secrets` the namespace their Secrets are read from.
fn add_receivers(
    reader: &impl Reader,
    project: &str,
    secrets: &str,
    receivers: &[crate::resource::WebhookReceiver],
    out: &mut Vec<Receiver>,
) -> Result<(), crate::store::StoreError> {
    {
        let project = project.to_string();
        for r in receivers {
            let Some((kind, secret_name)) = provider(r) else {
                continue;
            };
            let key = TYPES
                .iter()
                .find(|(t, _)| *t == kind)
                .map_or("secret", |(_, k)| k);
            let Some(object) = reader.get(Kind::Secret, secrets, secret_name)? else {
                continue;
            };
            let Ok(secret) = object.typed::<Secret>() else {
                continue;
            };
            let Some(value) = secret.value(key) else {
                continue;
            };
            let digest = Sha256::digest(format!("{project}{}{value}", r.name).as_bytes());
            out.push(Receiver {
                path: format!("/webhooks/{kind}/{}", hex::encode(digest)),
                project: project.clone(),
                name: r.name.clone(),
                kind,
                secret: value,
                virtual_repo: r
                    .artifactory
                    .as_ref()
                    .and_then(|a| a.virtual_repo_name.clone()),
                actions: r
                    .generic
                    .as_ref()
                    .map(|g| g.actions.clone())
                    .unwrap_or_default(),
            });
        }
    }
    Ok(())
}

fn hmac_ok(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    hmac_hex_ok(secret, body, hex_sig)
}

fn hmac_hex_ok(secret: &str, body: &[u8], hex_sig: &str) -> bool {
    let Ok(given) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// Whether the request proves it knows the receiver's secret, the provider's way.
fn authentic(r: &Receiver, headers: &HeaderMap, body: &[u8]) -> bool {
    match r.kind {
        "github" | "gitea" => hmac_ok(&r.secret, body, header(headers, "x-hub-signature-256")),
        "bitbucket" => hmac_ok(&r.secret, body, header(headers, "x-hub-signature")),
        "gitlab" => bool::from(
            header(headers, "x-gitlab-token")
                .as_bytes()
                .ct_eq(r.secret.as_bytes()),
        ),
        "harbor" => bool::from(
            header(headers, "authorization")
                .as_bytes()
                .ct_eq(r.secret.as_bytes()),
        ),
        // The URL, which holds a hash of the secret, is the proof: Docker Hub, Quay, Azure
        // and generic senders sign nothing.
        "dockerhub" | "quay" | "azure" | "generic" => true,
        "artifactory" => hmac_hex_ok(&r.secret, body, header(headers, "x-jfrog-event-auth")),
        _ => false,
    }
}

/// Whether a push concerns a Git subscription: its repository, a ref it watches, and (when the
/// payload lists paths) a path its filters admit.
fn concerns(sub: &crate::resource::GitSubscription, push: &Push) -> bool {
    let url = normalize_git(&sub.repo_url);
    if !push.urls.iter().any(|u| normalize_git(u) == url) {
        return false;
    }
    let by_branch = sub.commit_selection_strategy == CommitSelectionStrategy::NewestFromBranch;
    if let Some(branch) = push.git_ref.strip_prefix("refs/heads/") {
        if !by_branch || sub.branch.as_deref().is_some_and(|b| b != branch) {
            return false;
        }
    } else if push.git_ref.starts_with("refs/tags/") && by_branch {
        return false;
    }
    if push.paths.is_empty() || !by_branch {
        return true;
    }
    match (
        PathFilter::new(&sub.include_paths),
        PathFilter::new(&sub.exclude_paths),
    ) {
        (Ok(include), Ok(exclude)) => push.paths.iter().any(|p| include.admits(&exclude, p)),
        _ => true,
    }
}

pub async fn receive(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let answer = receive_at(&state, &kind, &id, &headers, &body).await;
    let result = match &answer {
        Ok((_, result)) => *result,
        Err(ApiError::NotFound(_)) => "not_found",
        Err(ApiError::BadSignature) => "bad_signature",
        Err(ApiError::BadRequest(_)) => "bad_request",
        Err(_) => "error",
    };
    state.engine.metrics().webhook(&kind, result);
    answer.map(|(json, _)| json)
}

/// [`receive`]'s work; answers with what to count: `accepted`, or `replayed` for a delivery
/// seen before.
async fn receive_at(
    state: &AppState,
    kind: &str,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Json<Value>, &'static str), ApiError> {
    let path = format!("/webhooks/{kind}/{id}");
    // For Docker Hub, Quay, Azure and generic receivers the path is the only secret: compare
    // every one in constant time, so timing tells nothing about how much of a guess matched.
    let mut found = None;
    for r in state.store.read_async(|r| receivers(r, None)).await? {
        if bool::from(r.path.as_bytes().ct_eq(path.as_bytes())) {
            found = Some(r);
        }
    }
    let found =
        found.ok_or_else(|| ApiError::NotFound("no webhook receiver at this URL".into()))?;
    if !authentic(&found, headers, body) {
        tracing::warn!(project = %found.project, receiver = %found.name, "webhook refused: bad signature or token");
        return Err(ApiError::BadSignature);
    }
    let delivery = delivery_id(headers).map(|d| (d.to_string(), format!("{}\n{d}", found.path)));
    if let Some((delivery, key)) = &delivery
        && !state.deliveries.first_time(key.clone())
    {
        tracing::info!(project = %found.project, receiver = %found.name, delivery, "webhook replayed; ignored");
        let answer = json!({
            "receiver": found.name,
            "refreshed": [],
            "note": format!("delivery {delivery} was received before; nothing to do"),
        });
        return Ok((Json(answer), "replayed"));
    }
    let handled = handle(state, &found, headers, body).await;
    if handled.is_err()
        && let Some((_, key)) = delivery
    {
        // Not handled: the provider's retry of this delivery must not be taken for a replay.
        state.deliveries.forget(&key);
    }
    handled.map(|json| (json, "accepted"))
}

/// What an authentic delivery asks: refresh the Warehouses its push concerns.
async fn handle(
    state: &AppState,
    found: &Receiver,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    if found.kind == "generic" {
        let refreshed = super::generic_receiver::act(state, found, headers, &payload).await?;
        tracing::info!(project = %found.project, receiver = %found.name, ?refreshed, "webhook");
        return Ok(Json(
            json!({"receiver": found.name, "refreshed": refreshed}),
        ));
    }
    if pull_request_event(found.kind, headers, &payload) {
        // Kargo refreshes the Promotions waiting on a pull request; here they ask again now.
        let woken = state.engine.wake_pull_request_waits(&found.project).await;
        tracing::info!(project = %found.project, receiver = %found.name, ?woken, "pull request webhook");
        return Ok(Json(
            json!({"receiver": found.name, "refreshed": [], "woken": woken}),
        ));
    }
    let images = image_push(found.kind, &payload, found.virtual_repo.as_deref());
    let git_push = push(found.kind, headers, &payload);
    if images.is_none() && git_push.is_none() {
        return Ok(Json(
            json!({"receiver": found.name, "refreshed": [], "note": "not a push event; nothing to do"}),
        ));
    }
    let pushed_images: Vec<String> = images
        .unwrap_or_default()
        .iter()
        .map(|u| normalize_image(u))
        .collect();
    let project = found.project.clone();
    let warehouses = state
        .store
        .read_async(move |r| {
            r.list(
                Kind::Warehouse,
                Some(project.as_str()).filter(|p| !p.is_empty()),
                None,
            )
        })
        .await?;
    let mut refreshed = Vec::new();
    for w in warehouses {
        let Ok(spec) = serde_json::from_value::<WarehouseSpec>(w.spec().clone()) else {
            continue;
        };
        let subs = &spec.subscriptions;
        let by_git = git_push.as_ref().is_some_and(|p| {
            subs.iter()
                .filter_map(|s| s.git.as_ref())
                .any(|g| concerns(g, p))
        });
        let by_image = subs
            .iter()
            .filter_map(|s| s.image.as_ref())
            .any(|i| pushed_images.contains(&normalize_image(&i.repo_url)));
        if by_git || by_image {
            state.discovery.refresh(w.project(), w.name(), None);
            refreshed.push(refreshed_name(found, w.project(), w.name()));
        }
    }
    tracing::info!(project = %found.project, receiver = %found.name, ?refreshed, "webhook");
    Ok(Json(
        json!({"receiver": found.name, "refreshed": refreshed}),
    ))
}

/// `GET /v1/clusterconfigs/cluster/webhookreceivers`: the ClusterConfig's receivers.
pub async fn list_cluster(state: State<AppState>) -> Result<Json<Value>, ApiError> {
    list(state, Path(String::new())).await
}

/// `GET /v1/projects/{p}/webhookreceivers`: each receiver's name, type and URL path.
pub async fn list(
    State(state): State<AppState>,
    Path(project): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let all = state
        .store
        .read_async(move |r| receivers(r, Some(&project)))
        .await?;
    let items: Vec<Value> = all
        .iter()
        .map(|r| json!({"name": r.name, "type": r.kind, "path": r.path}))
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn registry_events_name_the_pushed_repository() {
        let hub = json!({"push_data": {"tag": "1.2.0"}, "repository": {"repo_name": "acme/web"}});
        let urls = image_push("dockerhub", &hub, None).expect("a push");
        // Docker Hub names repositories without a registry; they match docker.io subscriptions.
        assert_eq!(
            normalize_image(&urls[0]),
            normalize_image("docker.io/acme/web")
        );
        let harbor = json!({"type": "PUSH_ARTIFACT", "event_data": {"resources": [
            {"resource_url": "harbor.example/proj/web@sha256:ab", "tag": "1.0"}]}});
        assert_eq!(
            image_push("harbor", &harbor, None).expect("a push"),
            ["harbor.example/proj/web"]
        );
        assert!(image_push("harbor", &json!({"type": "DELETE_ARTIFACT"}), None).is_none());
        assert!(image_push("github", &hub, None).is_none());
        let acr = json!({"action": "push", "target": {"repository": "web", "tag": "1.0"},
            "request": {"host": "acme.azurecr.io"}});
        assert_eq!(
            image_push("azure", &acr, None).expect("a push"),
            ["acme.azurecr.io/web"]
        );
        assert!(image_push("azure", &json!({"action": "ping"}), None).is_none());
        let jfrog = json!({"event_type": "pushed", "jpd_origin": "https://acme.jfrog.io",
            "data": {"repo_key": "docker-local", "image_name": "web", "tag": "1.0"}});
        assert_eq!(
            image_push("artifactory", &jfrog, None).expect("a push"),
            ["acme.jfrog.io/docker-local/web"]
        );
        assert_eq!(
            image_push("artifactory", &jfrog, Some("docker")).expect("a push"),
            ["acme.jfrog.io/docker/web"]
        );
    }

    #[test]
    fn signatures_are_checked_the_providers_way() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").expect("a key");
        mac.update(b"body");
        let hex_sig = hex::encode(mac.finalize().into_bytes());
        assert!(hmac_ok("k", b"body", &format!("sha256={hex_sig}")));
        assert!(
            !hmac_ok("k", b"body", &hex_sig),
            "GitHub's header has the sha256= prefix"
        );
        assert!(hmac_hex_ok("k", b"body", &hex_sig));
        assert!(!hmac_hex_ok("other", b"body", &hex_sig));
        assert!(!hmac_hex_ok("k", b"body2", &hex_sig));
    }
}
