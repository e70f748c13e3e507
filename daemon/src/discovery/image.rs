//! Image discovery: which tags of a container image repository are candidates for Freight, best
//! first, as Kargo's `SemVer`, `Lexical`, `Digest` and `NewestBuild` strategies.
//!
//! A cycle lists the repository's tags (one request per page, through [`super::registry`], which
//! also keeps tokens, rate-limits and backs off each registry); when the list is the one
//! the last discovery saw, its result is reused without fetching a manifest (the `Digest`
//! strategy still asks for its tag's current digest: that tag is expected to move). Otherwise the
//! manifests of the best `discoveryLimit` tags are fetched for their digests and annotations
//! (`org.opencontainers.image.revision` links an image to the commit it was built from).

use std::collections::HashMap;

use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::registry::{Registries, Target};
use crate::resource::semver::{Constraint, parse_version};
use crate::resource::{ImageSelectionStrategy, ImageSubscription};

/// Manifest types a discovery accepts: OCI and Docker, single images and indexes.
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Why a discovery failed: a registry that asked to slow down (HTTP 429) is told apart, so that
/// only that registry is backed off.
#[derive(Debug)]
pub enum ImageError {
    Throttled(String),
    Failed(String),
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageError::Throttled(m) | ImageError::Failed(m) => f.write_str(m),
        }
    }
}

impl From<String> for ImageError {
    fn from(m: String) -> Self {
        ImageError::Failed(m)
    }
}

impl From<&str> for ImageError {
    fn from(m: &str) -> Self {
        ImageError::Failed(m.to_string())
    }
}

/// `what: error: cause: cause…`: reqwest's own message ("error sending request") hides the cause.
pub(crate) fn with_causes(what: &str, error: &dyn std::error::Error) -> String {
    let mut message = format!("{what}: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

/// One candidate image, as Kargo's `DiscoveredImageReference`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredImage {
    pub tag: String,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub annotations: Map<String, Value>,
    /// The build time (NewestBuild), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// What one subscription's discovery found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageResult {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    /// A hash of the repository's tag list when it was last read.
    #[serde(default)]
    pub observed_tags: String,
    pub references: Vec<DiscoveredImage>,
}

pub(crate) fn reference(repo: &str, tag: &str) -> Result<Reference, String> {
    format!("{repo}:{tag}")
        .parse::<Reference>()
        .map_err(|e| format!("{repo}:{tag} is not an image reference: {e}"))
}

/// One subscription's repository, where it is read from, and with which credential.
struct Session<'a> {
    registries: &'a Registries,
    /// The repository as the Warehouse names it (for messages).
    repo: &'a str,
    target: Target,
    auth: RegistryAuth,
}

/// Single-image manifest types (an index's entries point at these).
const IMAGE_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

impl Session<'_> {
    /// The manifest of `tag` (an image or an index), raw, and its digest.
    async fn manifest(&self, tag: &str) -> Result<(Vec<u8>, String), ImageError> {
        self.registries
            .manifest(&self.target, &self.auth, tag, MANIFEST_TYPES)
            .await
    }

    /// The image manifest of `tag` and its config (for an index, those of its linux/amd64
    /// image, or its first): two requests, three for an index.
    async fn config(&self, tag: &str) -> Result<(Value, Value), ImageError> {
        let (bytes, _) = self.manifest(tag).await?;
        let mut manifest: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if let Some(list) = manifest["manifests"].as_array() {
            let linux_amd64 = |m: &&Value| {
                m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64"
            };
            let chosen = list.iter().find(linux_amd64).or(list.first());
            let digest = chosen
                .and_then(|m| m["digest"].as_str())
                .ok_or_else(|| ImageError::Failed(format!("{tag}: the index lists no image")))?
                .to_string();
            let (bytes, _) = self
                .registries
                .manifest(&self.target, &self.auth, &digest, IMAGE_TYPES)
                .await?;
            manifest = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        }
        let digest = manifest["config"]["digest"]
            .as_str()
            .ok_or_else(|| ImageError::Failed(format!("{tag}: the manifest names no config")))?;
        let config = self
            .registries
            .blob(&self.target, &self.auth, digest)
            .await?;
        let config = serde_json::from_slice(&config).unwrap_or(Value::Null);
        Ok((manifest, config))
    }
}

async fn details(s: &Session<'_>, tag: &str) -> Result<DiscoveredImage, ImageError> {
    details_and_manifest(s, tag).await.map(|(d, _)| d)
}

/// [`details`], and the manifest itself (for the platform check).
async fn details_and_manifest(
    s: &Session<'_>,
    tag: &str,
) -> Result<(DiscoveredImage, Value), ImageError> {
    let (bytes, digest) = s.manifest(tag).await?;
    let manifest: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let annotations = manifest["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let found = DiscoveredImage {
        tag: tag.to_string(),
        digest,
        annotations,
        created_at: None,
    };
    Ok((found, manifest))
}

/// A `platform` as Warehouses write it: `os/arch[/variant]`.
struct Platform {
    os: String,
    arch: String,
    variant: Option<String>,
}

impl Platform {
    fn parse(text: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(format!(
                "platform {text:?} is not os/arch or os/arch/variant, e.g. linux/arm64"
            )),
        }
    }

    fn matches(&self, os: &Value, arch: &Value, variant: &Value) -> bool {
        os.as_str() == Some(self.os.as_str())
            && arch.as_str() == Some(self.arch.as_str())
            && self
                .variant
                .as_deref()
                .is_none_or(|v| variant.as_str() == Some(v))
    }
}

/// Whether the image behind `manifest` runs on `platform`: an index lists its platforms; a
/// single image's config says its own.
async fn supports(
    s: &Session<'_>,
    tag: &str,
    manifest: &Value,
    platform: &Platform,
) -> Result<bool, ImageError> {
    if let Some(list) = manifest["manifests"].as_array() {
        return Ok(list.iter().any(|m| {
            let p = &m["platform"];
            platform.matches(&p["os"], &p["architecture"], &p["variant"])
        }));
    }
    let (_, config) = s.config(tag).await?;
    Ok(platform.matches(&config["os"], &config["architecture"], &config["variant"]))
}

/// Refuses hosts under the top-level domains reserved for documentation and tests (RFC 2606:
/// `.example`, `.invalid`, `.test`): they never resolve, and asking a resolver about them can
/// take minutes on a machine whose DNS is unreachable.
pub(crate) fn reserved(host: &str) -> Result<(), ImageError> {
    let name = host
        .rsplit_once(':')
        .map_or(host, |(h, _)| h)
        .trim_end_matches('.');
    if [".example", ".invalid", ".test"]
        .iter()
        .any(|tld| name.ends_with(tld))
        || name == "example"
    {
        return Err(ImageError::Failed(format!(
            "{host} is under a reserved documentation domain (RFC 2606) and cannot be reached; nothing to discover"
        )));
    }
    Ok(())
}

/// The most tags NewestBuild reads the build time of in one discovery.
const MAX_NEWEST_BUILD_TAGS: usize = 1000;

/// An image's build time, as Kargo takes it: the latest of the manifest's or the config's
/// `org.opencontainers.image.created`, the config's `org.label-schema.build-date`, and the
/// config's `created`; normalised to RFC 3339 UTC so that text order is time order.
async fn build_time(s: &Session<'_>, tag: &str) -> Result<String, ImageError> {
    let (manifest, config) = s.config(tag).await?;
    let labels = &config["config"]["Labels"];
    let candidates = [
        manifest["annotations"]["org.opencontainers.image.created"]
            .as_str()
            .map(str::to_string),
        labels["org.opencontainers.image.created"]
            .as_str()
            .map(str::to_string),
        labels["org.label-schema.build-date"]
            .as_str()
            .map(str::to_string),
        config["created"].as_str().map(str::to_string),
    ];
    let newest = candidates
        .iter()
        .flatten()
        .filter_map(|t| {
            humantime::parse_rfc3339_weak(t.trim_end_matches('Z').split('.').next().unwrap_or(t))
                .ok()
        })
        .max()
        .ok_or_else(|| {
            ImageError::Failed(format!(
                "{}:{tag} has no build time (no created annotation, label or config field)",
                s.repo
            ))
        })?;
    Ok(humantime::format_rfc3339_seconds(newest).to_string())
}

/// Discovers the candidate images of one subscription, with `auth` from the project's
/// `cred-type: image` Secrets. `previous` is the last result (reused when the tags have not
/// changed).
pub async fn discover(
    sub: &ImageSubscription,
    auth: RegistryAuth,
    previous: Option<&ImageResult>,
    registries: &Registries,
) -> Result<ImageResult, ImageError> {
    let target = registries.target(&sub.repo_url)?;
    let session = Session {
        registries,
        repo: sub.repo_url.trim_end_matches('/'),
        target,
        auth,
    };
    registries
        .guarded(&session.target.host, discover_from(sub, &session, previous))
        .await
}

/// The tags a subscription considers, best first: those `allowTagsRegexes` admit and
/// `ignoreTagsRegexes` do not, ranked by the strategy (SemVer: greatest version within the
/// constraint; Lexical: last in lexical order). For NewestBuild, the eligible tags in listing
/// order: their ranking needs build times from the registry.
pub fn rank_tags(sub: &ImageSubscription, all: &[String]) -> Result<Vec<String>, ImageError> {
    let regexes = |list: &[String]| -> Result<Vec<regex::Regex>, String> {
        list.iter()
            .map(|r| regex::Regex::new(r).map_err(|e| format!("tag regex {r:?}: {e}")))
            .collect()
    };
    let (allow, ignore) = (
        regexes(&sub.allow_tags_regexes)?,
        regexes(&sub.ignore_tags_regexes)?,
    );
    let wanted = |t: &str| {
        (allow.is_empty() || allow.iter().any(|r| r.is_match(t)))
            && !ignore.iter().any(|r| r.is_match(t))
    };
    Ok(match sub.image_selection_strategy {
        ImageSelectionStrategy::SemVer => {
            let constraint = match sub
                .constraint
                .as_deref()
                .or(sub.semver_constraint.as_deref())
            {
                Some(c) if !c.is_empty() => {
                    Some(Constraint::parse(c).map_err(|e| format!("constraint {c:?}: {}", e.0))?)
                }
                _ => None,
            };
            let mut versions: Vec<(semver::Version, String)> = all
                .iter()
                .filter(|t| wanted(t))
                .filter_map(|t| parse_version(t, sub.strict_semvers).map(|v| (v, t.clone())))
                .filter(|(v, _)| constraint.as_ref().is_none_or(|c| c.matches(v)))
                .collect();
            versions.sort_by(|a, b| b.0.cmp(&a.0));
            versions.into_iter().map(|(_, t)| t).collect()
        }
        ImageSelectionStrategy::NewestBuild => all.iter().filter(|t| wanted(t)).cloned().collect(),
        _ => {
            let mut lexical: Vec<String> = all.iter().filter(|t| wanted(t)).cloned().collect();
            lexical.sort_by(|a, b| b.cmp(a));
            lexical
        }
    })
}

async fn discover_from(
    sub: &ImageSubscription,
    s: &Session<'_>,
    previous: Option<&ImageResult>,
) -> Result<ImageResult, ImageError> {
    let limit = sub.discovery_limit.clamp(1, 100) as usize;
    if sub.image_selection_strategy == ImageSelectionStrategy::Digest {
        let tag = sub
            .constraint
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or("the Digest strategy needs `constraint`: the tag to track, e.g. latest")?;
        let found = details(s, tag).await?;
        return Ok(ImageResult {
            repo_url: sub.repo_url.clone(),
            observed_tags: String::new(),
            references: vec![found],
        });
    }
    let all = s.registries.tags(&s.target, &s.auth).await?;
    let observed = hex::encode(Sha256::digest(all.join("\n").as_bytes()));
    if let Some(previous) =
        previous.filter(|p| p.observed_tags == observed && p.repo_url == sub.repo_url)
    {
        return Ok(previous.clone());
    }
    let ranked = rank_tags(sub, &all)?;
    // Build times read for NewestBuild, by tag.
    let mut times: HashMap<String, String> = HashMap::new();
    let mut candidates: Vec<String> = match sub.image_selection_strategy {
        ImageSelectionStrategy::NewestBuild => {
            // Every eligible tag's build time is read (Kargo warns this is costly; narrow the
            // tags with allowTagsRegexes). A tag seen before keeps the time it had.
            let eligible: Vec<&String> = ranked.iter().collect();
            if eligible.len() > MAX_NEWEST_BUILD_TAGS {
                return Err(ImageError::Failed(format!(
                    "NewestBuild would read the build time of {} tags (at most {MAX_NEWEST_BUILD_TAGS}); narrow them with allowTagsRegexes",
                    eligible.len()
                )));
            }
            let mut dated = Vec::new();
            for tag in eligible {
                let known = previous
                    .and_then(|p| p.references.iter().find(|r| &r.tag == tag))
                    .and_then(|r| r.created_at.clone());
                let created = match known {
                    Some(c) => c,
                    None => build_time(s, tag).await?,
                };
                times.insert(tag.clone(), created.clone());
                dated.push((created, tag.clone()));
            }
            dated.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
            dated.into_iter().map(|(_, t)| t).collect()
        }
        _ => ranked,
    };
    let platform = sub.platform.as_deref().map(Platform::parse).transpose()?;
    if platform.is_none() {
        candidates.truncate(limit);
    }
    let mut references = Vec::new();
    for tag in candidates {
        if references.len() >= limit {
            break;
        }
        // With cacheByTag, a tag seen before is taken to point where it pointed.
        let known = previous
            .filter(|_| sub.cache_by_tag && platform.is_none())
            .and_then(|p| p.references.iter().find(|r| r.tag == tag).cloned());
        let mut found = match (known, &platform) {
            (Some(r), _) => r,
            (None, None) => details(s, &tag).await?,
            (None, Some(platform)) => {
                // Each tag costs a manifest (and, for a single image, a config) request.
                let (found, manifest) = details_and_manifest(s, &tag).await?;
                if !supports(s, &tag, &manifest, platform).await? {
                    continue;
                }
                found
            }
        };
        if let Some(created) = times.get(&tag) {
            found.created_at = Some(created.clone());
        }
        references.push(found);
    }
    Ok(ImageResult {
        repo_url: sub.repo_url.clone(),
        observed_tags: observed,
        references,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(json: serde_json::Value) -> ImageSubscription {
        serde_json::from_value(json).expect("a subscription")
    }

    #[test]
    fn tags_are_ranked_by_the_strategy_after_the_regexes() {
        let tags: Vec<String> = [
            "1.2.0",
            "1.10.0",
            "v1.9.9",
            "2.0.0-rc.1",
            "2.0.0",
            "latest",
            "1.10.1-rc.1",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        let semver = sub(
            serde_json::json!({"repoURL": "r/a", "imageSelectionStrategy": "SemVer",
            "constraint": "^1.0.0", "ignoreTagsRegexes": ["-rc"]}),
        );
        assert_eq!(
            rank_tags(&semver, &tags).unwrap(),
            ["1.10.0", "v1.9.9", "1.2.0"]
        );
        let lexical = sub(
            serde_json::json!({"repoURL": "r/a", "imageSelectionStrategy": "Lexical",
            "allowTagsRegexes": ["^[0-9]"]}),
        );
        assert_eq!(rank_tags(&lexical, &tags).unwrap()[0], "2.0.0-rc.1");
        let bad = sub(serde_json::json!({"repoURL": "r/a", "allowTagsRegexes": ["("]}));
        assert!(rank_tags(&bad, &tags).is_err());
    }
}
