//! Chart discovery: the versions of a Helm chart, greatest first, from a classic chart
//! repository (its `index.yaml`) or an OCI registry (`oci://host/path/chart`: the chart's tags),
//! filtered by `semverConstraint`. A classic repository is asked with the `ETag` of the index it
//! sent last, so an unchanged index is a `304` and is not downloaded again.

use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::registry::Registries;
use crate::resource::ChartSubscription;
use crate::resource::semver::{Constraint, parse_version};

/// The largest chart repository index read (large public indexes are a few tens of MiB; what
/// the reader expands it to is bounded by [`crate::manifest::MAX_EXPANDED_BYTES`]).
const MAX_INDEX_BYTES: usize = 32 << 20;

/// What one subscription's discovery found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChartResult {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub versions: Vec<String>,
    /// The classic repository's `ETag` for the index these versions came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// Credentials for a chart repository: user and password, if a Secret matched.
pub type Basic = Option<(String, String)>;

fn select(
    sub: &ChartSubscription,
    versions: impl Iterator<Item = String>,
) -> Result<Vec<String>, String> {
    let constraint = match sub.semver_constraint.as_deref() {
        Some(c) if !c.is_empty() => {
            Some(Constraint::parse(c).map_err(|e| format!("semverConstraint {c:?}: {}", e.0))?)
        }
        _ => None,
    };
    let mut found: Vec<(semver::Version, String)> = versions
        .filter_map(|v| parse_version(&v, false).map(|parsed| (parsed, v)))
        .filter(|(v, _)| constraint.as_ref().is_none_or(|c| c.matches(v)))
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.dedup_by(|a, b| a.1 == b.1);
    Ok(found
        .into_iter()
        .take(sub.discovery_limit.clamp(1, 100) as usize)
        .map(|(_, v)| v)
        .collect())
}

/// What asking a classic repository for its index gave.
pub(crate) enum Index {
    /// The index is the one sent with the `ETag` the request carried.
    NotModified,
    /// The index (its first document, as JSON) and its `ETag`.
    Read { etag: Option<String>, index: Value },
}

/// Reads a classic chart repository's `index.yaml`, with `If-None-Match: etag` if given.
pub(crate) async fn index(
    repo_url: &str,
    auth: &Basic,
    etag: Option<&str>,
) -> Result<Index, String> {
    let url = format!("{}/index.yaml", repo_url.trim_end_matches('/'));
    if let Some(host) = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
    {
        super::image::reserved(host).map_err(|e| e.to_string())?;
    }
    let mut request = crate::tls::client().get(&url);
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    if let Some(etag) = etag {
        request = request.header("If-None-Match", etag);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("cannot fetch {url}: {e}"))?;
    if response.status() == reqwest::StatusCode::NOT_MODIFIED && etag.is_some() {
        return Ok(Index::NotModified);
    }
    if !response.status().is_success() {
        let hint = if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            "; add a Secret labelled kargo.akuity.io/cred-type: helm with repoURL, username and password"
        } else {
            ""
        };
        return Err(format!("{url} answered {}{hint}", response.status()));
    }
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_bounded(response, &url, MAX_INDEX_BYTES, "a chart repository index").await?;
    let text = String::from_utf8_lossy(&body);
    // The manifest reader bounds what aliases expand to, nesting and documents: the index
    // comes from a server, not from the operator.
    let docs = crate::manifest::parse(&text).map_err(|e| format!("{url} is not YAML: {e}"))?;
    let index = docs
        .into_iter()
        .next()
        .map(|d| d.value)
        .unwrap_or(Value::Null);
    Ok(Index::Read { etag, index })
}

/// A response's body, refused past `limit` bytes (`what` says what it should have been).
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
    url: &str,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("cannot read {url}: {e}"))?
    {
        if body.len() + chunk.len() > limit {
            return Err(format!(
                "{url} is larger than {} MiB, more than {what} should be",
                limit >> 20
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn classic(
    sub: &ChartSubscription,
    auth: Basic,
    previous: Option<&ChartResult>,
) -> Result<ChartResult, String> {
    let name = sub
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or("a chart repository subscription needs `name` (the chart in the repository)")?;
    let previous =
        previous.filter(|p| p.repo_url == sub.repo_url && p.name.as_deref() == Some(name));
    let (etag, index) = match index(
        &sub.repo_url,
        &auth,
        previous.and_then(|p| p.etag.as_deref()),
    )
    .await?
    {
        // Only a request carrying the previous index's ETag can be answered 304.
        Index::NotModified => {
            return previous
                .cloned()
                .ok_or_else(|| format!("{} answered 304 unasked", sub.repo_url));
        }
        Index::Read { etag, index } => (etag, index),
    };
    let Value::Array(list) = &index["entries"][name] else {
        return Err(format!(
            "{}/index.yaml has no chart {name:?}",
            sub.repo_url.trim_end_matches('/')
        ));
    };
    let versions = list
        .iter()
        .filter_map(|e| e["version"].as_str().map(str::to_string));
    Ok(ChartResult {
        repo_url: sub.repo_url.clone(),
        name: Some(name.to_string()),
        versions: select(sub, versions)?,
        etag,
    })
}

/// Helm writes a version's build metadata (`+`) as `_` in an OCI tag, which cannot hold `+`.
fn version_of_tag(tag: String) -> String {
    tag.replace('_', "+")
}

async fn oci(
    sub: &ChartSubscription,
    auth: Basic,
    registries: &Registries,
) -> Result<ChartResult, String> {
    let repo = sub
        .repo_url
        .trim_start_matches("oci://")
        .trim_end_matches('/');
    if sub.name.as_deref().is_some_and(|n| !n.is_empty()) {
        return Err(
            "an oci:// chart subscription names the chart in repoURL; leave `name` empty".into(),
        );
    }
    let target = registries.target(repo).map_err(|e| e.to_string())?;
    let auth = match auth {
        Some((user, password)) => RegistryAuth::Basic(user, password),
        None => RegistryAuth::Anonymous,
    };
    let tags = registries
        .guarded(&target.host, registries.tags(&target, &auth))
        .await
        .map_err(|e| e.to_string())?;
    Ok(ChartResult {
        repo_url: sub.repo_url.clone(),
        name: None,
        versions: select(sub, tags.into_iter().map(version_of_tag))?,
        etag: None,
    })
}

/// Discovers the versions of one chart subscription.
pub async fn discover(
    sub: &ChartSubscription,
    auth: Basic,
    previous: Option<&ChartResult>,
    registries: &Registries,
) -> Result<ChartResult, String> {
    if sub.repo_url.starts_with("oci://") {
        oci(sub, auth, registries).await
    } else {
        classic(sub, auth, previous).await
    }
}

/// The Freight entry of the best version.
pub fn best(result: &ChartResult) -> Option<Value> {
    let version = result.versions.first()?;
    let mut value = serde_json::json!({"repoURL": result.repo_url, "version": version});
    if let Some(name) = &result.name {
        value["name"] = serde_json::json!(name);
    }
    Some(value)
}
