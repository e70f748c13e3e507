//! `Freight`: an immutable set of artifact versions, named by Kargo's fingerprint of them.
//!
//! The name is `sha1(origin "Kind/name" + ":" + sorted parts joined by "|")` exactly as Kargo's
//! `GenerateFreightID`, so the same artifacts get the same name in Kargo and in Dray. Git URLs
//! and chart URLs are normalized first (Kargo's `NormalizeGit` and `NormalizeChart`); image URLs
//! are not. Dray also normalizes `git://` and `file://` URLs (which Kargo does not accept) like
//! `https://` ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha1::{Digest, Sha1};

use super::stage::FreightOrigin;
use super::{Check, Errors, ObjectMeta};

/// The label that mirrors a Freight's alias, as in Kargo.
pub const ALIAS_LABEL: &str = "kargo.akuity.io/alias";

/// A Freight of `project` by name, or else by alias (aliases are unique per project and kept
/// in [`ALIAS_LABEL`], so this is one label-selected read, not a scan).
pub fn find(
    reader: &impl crate::store::Reader,
    project: &str,
    name_or_alias: &str,
) -> Result<Option<super::Object>, crate::store::StoreError> {
    if let Some(o) = reader.get(super::Kind::Freight, project, name_or_alias)? {
        return Ok(Some(o));
    }
    let by_alias = super::LabelSelector {
        match_labels: [(ALIAS_LABEL.to_string(), name_or_alias.to_string())].into(),
        ..Default::default()
    };
    Ok(reader
        .list(super::Kind::Freight, Some(project), Some(&by_alias))?
        .into_iter()
        .next())
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Freight {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default)]
    pub origin: FreightOrigin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovered_at: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<GitCommit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<Chart>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactReference>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub status: Value,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitCommit {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub branch: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub committer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subscription_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Image {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subscription_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Chart {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subscription_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactReference {
    pub artifact_type: String,
    #[serde(default)]
    pub subscription_name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl Freight {
    /// Kargo's `GenerateFreightID`.
    pub fn fingerprint(&self) -> String {
        fn with_sub(base: String, sub: &str) -> String {
            if sub.is_empty() {
                base
            } else {
                format!("{base}:{sub}")
            }
        }
        let mut parts = Vec::new();
        for c in &self.commits {
            let base = if c.tag.is_empty() {
                format!("{}:{}", normalize_git(&c.repo_url), c.id)
            } else {
                format!("{}:{}:{}", normalize_git(&c.repo_url), c.tag, c.id)
            };
            parts.push(with_sub(base, &c.subscription_name));
        }
        for i in &self.images {
            parts.push(with_sub(
                format!("{}:{}@{}", i.repo_url, i.tag, i.digest),
                &i.subscription_name,
            ));
        }
        for h in &self.charts {
            let base = format!(
                "{}:{}",
                go_path_join(&normalize_chart(&h.repo_url), &h.name),
                h.version
            );
            parts.push(with_sub(base, &h.subscription_name));
        }
        for a in &self.artifacts {
            parts.push(format!(
                "{}:{}:{}",
                a.artifact_type, a.subscription_name, a.version
            ));
        }
        parts.sort();
        let text = format!(
            "{}/{}:{}",
            self.origin.kind,
            self.origin.name,
            parts.join("|")
        );
        hex::encode(Sha1::digest(text.as_bytes()))
    }
}

impl Check for Freight {
    /// The name is always the fingerprint, whatever the manifest said (as Kargo's webhook does).
    fn normalize(&mut self) {
        self.metadata.name = self.fingerprint();
        if let Some(alias) = &self.alias {
            self.metadata
                .labels
                .insert(ALIAS_LABEL.into(), alias.clone());
        }
    }

    fn check(&self, errors: &mut Errors) {
        if self.origin.kind != "Warehouse" {
            errors.add("origin.kind", "must be Warehouse");
        }
        errors.subdomain("origin.name", &self.origin.name);
        if self.commits.is_empty()
            && self.images.is_empty()
            && self.charts.is_empty()
            && self.artifacts.is_empty()
        {
            errors.add(
                "",
                "Freight needs at least one artifact: a commit, an image or a chart",
            );
        }
        if let Some(alias) = &self.alias {
            errors.label("alias", alias);
        }
        for (i, c) in self.commits.iter().enumerate() {
            errors.required(&format!("commits[{i}].repoURL"), &c.repo_url);
            errors.required(&format!("commits[{i}].id"), &c.id);
        }
        for (i, image) in self.images.iter().enumerate() {
            errors.required(&format!("images[{i}].repoURL"), &image.repo_url);
            if image.tag.is_empty() && image.digest.is_empty() {
                errors.add(format!("images[{i}]"), "needs a tag or a digest");
            }
        }
        for (i, chart) in self.charts.iter().enumerate() {
            errors.required(&format!("charts[{i}].repoURL"), &chart.repo_url);
            errors.required(&format!("charts[{i}].version"), &chart.version);
        }
    }
}

/// Kargo's `SanitizeURL`: trim, and drop non-printable characters anywhere.
fn sanitize(url: &str) -> String {
    url.chars()
        .filter(|c| !c.is_control() && *c != '\u{feff}')
        .collect::<String>()
        .trim()
        .to_string()
}

fn trim_repo_path(path: &str) -> &str {
    let path = path.strip_suffix('/').unwrap_or(path);
    path.strip_suffix(".git").unwrap_or(path)
}

/// Kargo's `NormalizeGit`: lower-case; for http(s) drop credentials, a trailing `/` then `.git`;
/// `ssh://` keeps its user; SCP-style `user@host:path` becomes `ssh://user@host/path`. A URL with
/// a query, or anything unrecognized, is returned unchanged.
pub fn normalize_git(repo: &str) -> String {
    let lower = sanitize(&repo.to_lowercase());
    let hierarchical = ["http://", "https://", "ssh://", "git://", "file://"];
    if let Some(scheme) = hierarchical.iter().find(|s| lower.starts_with(**s)) {
        let rest = &lower[scheme.len()..];
        if rest.contains('?') || rest.contains(' ') {
            return repo.to_string();
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let authority = match *scheme {
            "http://" | "https://" => authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host),
            _ => authority,
        };
        return format!("{scheme}{authority}{}", trim_repo_path(path));
    }
    // SCP-style: [user@]host[:path]
    let (user_host, path) = lower.split_once(':').unwrap_or((lower.as_str(), ""));
    let (user, host) = user_host
        .split_once('@')
        .map_or((None, user_host), |(u, h)| (Some(u), h));
    let word = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    };
    if user.is_some_and(|u| !word(u))
        || !host.split('.').all(word)
        || path.contains(' ')
        || path.contains('?')
    {
        return repo.to_string();
    }
    let path = trim_repo_path(path);
    if path.is_empty() {
        format!("ssh://{user_host}")
    } else {
        format!("ssh://{user_host}/{path}")
    }
}

/// Kargo's `NormalizeImage`: Docker Hub forms collapse (`docker.io/`, `index.docker.io/`,
/// `registry-1.docker.io/` and `library/` are dropped); a tag or digest is dropped; anything that
/// does not parse as an image reference is returned unchanged.
pub fn normalize_image(repo_url: &str) -> String {
    let lower = sanitize(&repo_url.to_lowercase());
    let without_digest = lower.split_once('@').map_or(lower.as_str(), |(r, _)| r);
    let without_tag = match without_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    };
    let valid = !without_tag.is_empty()
        && without_tag.split('/').enumerate().all(|(i, part)| {
            !part.is_empty()
                && part.chars().all(|c| {
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || "._-".contains(c)
                        || (i == 0 && c == ':')
                })
        });
    if !valid {
        return repo_url.to_string();
    }
    let (registry, path) = match without_tag.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => ("index.docker.io", without_tag),
    };
    if path.split('/').next().is_some_and(|p| p.contains(':')) {
        return repo_url.to_string();
    }
    match registry {
        "index.docker.io" | "docker.io" | "registry-1.docker.io" => {
            path.strip_prefix("library/").unwrap_or(path).to_string()
        }
        _ => format!("{registry}/{path}"),
    }
}

/// Kargo's `NormalizeChart`: sanitize, lower-case, strip `oci://`, then image normalization.
pub fn normalize_chart(repo: &str) -> String {
    let lower = sanitize(repo).to_lowercase();
    let stripped = lower.strip_prefix("oci://").unwrap_or(&lower);
    normalize_image(stripped)
}

/// Go's `path.Join(a, b)`: join with `/`, then `path.Clean` (which also folds `//`, so
/// `https://host` + `chart` gives `https:/host/chart`, as in Kargo).
fn go_path_join(a: &str, b: &str) -> String {
    let joined = match (a.is_empty(), b.is_empty()) {
        (true, true) => return String::new(),
        (true, false) => b.to_string(),
        (false, true) => a.to_string(),
        (false, false) => format!("{a}/{b}"),
    };
    let rooted = joined.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|p| *p != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            p => out.push(p),
        }
    }
    let body = out.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

/// Adjectives and animals for aliases (`adjective-animal`), as Kargo's moniker words do.
const ADJECTIVES: &[&str] = &[
    "agile",
    "amber",
    "ancient",
    "arctic",
    "autumn",
    "bold",
    "brave",
    "breezy",
    "bright",
    "brisk",
    "calm",
    "candid",
    "cheerful",
    "clever",
    "cosmic",
    "crimson",
    "curious",
    "dapper",
    "daring",
    "dusty",
    "eager",
    "early",
    "electric",
    "elegant",
    "emerald",
    "fancy",
    "fearless",
    "fluffy",
    "frosty",
    "gentle",
    "giant",
    "gleaming",
    "golden",
    "graceful",
    "happy",
    "hasty",
    "hidden",
    "humble",
    "icy",
    "jolly",
    "keen",
    "kind",
    "lively",
    "lucky",
    "lunar",
    "mellow",
    "mighty",
    "misty",
    "modest",
    "nimble",
    "noble",
    "odd",
    "patient",
    "plucky",
    "polite",
    "proud",
    "quick",
    "quiet",
    "rapid",
    "rustic",
    "sandy",
    "scarlet",
    "shiny",
    "silent",
    "silver",
    "sleepy",
    "smooth",
    "snowy",
    "solar",
    "spry",
    "steady",
    "stormy",
    "sturdy",
    "sunny",
    "swift",
    "tidy",
    "tiny",
    "tranquil",
    "twilight",
    "velvet",
    "vivid",
    "wandering",
    "warm",
    "wild",
    "windy",
    "wise",
    "witty",
    "wonky",
    "young",
    "zesty",
];
const ANIMALS: &[&str] = &[
    "albatross",
    "alpaca",
    "antelope",
    "badger",
    "beaver",
    "bison",
    "bobcat",
    "buffalo",
    "camel",
    "caribou",
    "cheetah",
    "condor",
    "coyote",
    "crane",
    "dingo",
    "dolphin",
    "dragonfly",
    "eagle",
    "egret",
    "falcon",
    "ferret",
    "finch",
    "flamingo",
    "fox",
    "gazelle",
    "gecko",
    "gibbon",
    "giraffe",
    "gopher",
    "heron",
    "hedgehog",
    "ibis",
    "iguana",
    "jackal",
    "jaguar",
    "kestrel",
    "koala",
    "lemur",
    "leopard",
    "llama",
    "lynx",
    "magpie",
    "manatee",
    "marmot",
    "meerkat",
    "mink",
    "moose",
    "narwhal",
    "newt",
    "ocelot",
    "octopus",
    "orca",
    "osprey",
    "otter",
    "owl",
    "panda",
    "panther",
    "pelican",
    "penguin",
    "puffin",
    "quail",
    "rabbit",
    "raccoon",
    "raven",
    "reindeer",
    "robin",
    "salmon",
    "seal",
    "sparrow",
    "squid",
    "stork",
    "swan",
    "tapir",
    "tauntaun",
    "tiger",
    "toucan",
    "turtle",
    "urchin",
    "vulture",
    "walrus",
    "weasel",
    "whale",
    "wolf",
    "wombat",
    "yak",
    "zebra",
];

/// A random `adjective-animal` alias; `taken` says whether one is already used in the project.
/// After many collisions a number is appended, so generation always ends.
pub fn generate_alias(mut taken: impl FnMut(&str) -> bool) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let mut pick = || {
        format!(
            "{}-{}",
            ADJECTIVES[rng.random_range(0..ADJECTIVES.len())],
            ANIMALS[rng.random_range(0..ANIMALS.len())]
        )
    };
    for _ in 0..64 {
        let alias = pick();
        if !taken(&alias) {
            return alias;
        }
    }
    let mut n = 2;
    loop {
        let alias = format!("{}-{n}", pick());
        n += 1;
        if !taken(&alias) {
            return alias;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freight(json: Value) -> Freight {
        serde_json::from_value(json).expect("valid freight")
    }

    /// Vectors computed outside Rust (Python's hashlib) from the strings Kargo's algorithm
    /// builds; the comments show those strings.
    #[test]
    fn fingerprints_match_kargos_algorithm() {
        // "Warehouse/my-warehouse:public.ecr.aws/nginx/nginx:1.27.0@sha256:abc"
        let f = freight(serde_json::json!({
            "apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Freight", "metadata": {},
            "origin": {"kind": "Warehouse", "name": "my-warehouse"},
            "images": [{"repoURL": "public.ecr.aws/nginx/nginx", "tag": "1.27.0", "digest": "sha256:abc"}]
        }));
        assert_eq!(f.fingerprint(), "9cb63e7cb3ac2465cb4958883fda69a3de9aa09b");

        // Parts sorted byte-wise: image URLs as written (docker.io/library/nginx is not nginx),
        // Git URLs normalized, a tag and a subscription name appended, chart URLs normalized
        // and path-joined (https://... folds to https:/...).
        let f = freight(serde_json::json!({
            "apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Freight", "metadata": {"name": "ignored"},
            "origin": {"kind": "Warehouse", "name": "kargo-demo"},
            "commits": [
                {"repoURL": "https://GitHub.com/example/kargo-demo.git/", "id": "1111111111111111111111111111111111111111"},
                {"repoURL": "git@github.com:example/app.git", "tag": "v1.2.0",
                 "id": "2222222222222222222222222222222222222222", "subscriptionName": "app-src"}
            ],
            "images": [
                {"repoURL": "nginx", "tag": "1.26.0", "digest": "sha256:aaa"},
                {"repoURL": "docker.io/library/nginx", "tag": "1.26.0", "digest": "sha256:bbb"}
            ],
            "charts": [
                {"repoURL": "https://charts.example.com", "name": "nginx", "version": "18.1.0"},
                {"repoURL": "oci://ghcr.io/example/charts/app", "version": "0.3.1", "subscriptionName": "charts"}
            ]
        }));
        assert_eq!(f.fingerprint(), "beb4efb7f9b470bb0321992443025d21c3066c13");
    }

    #[test]
    fn any_change_of_an_artifact_changes_the_name() {
        let base = serde_json::json!({
            "apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Freight", "metadata": {},
            "origin": {"kind": "Warehouse", "name": "w"},
            "images": [{"repoURL": "r", "tag": "1.0.0", "digest": "sha256:a"}]
        });
        let name = freight(base.clone()).fingerprint();
        for (pointer, value) in [
            ("/images/0/tag", "1.0.1"),
            ("/images/0/digest", "sha256:b"),
            ("/origin/name", "x"),
        ] {
            let mut changed = base.clone();
            *changed.pointer_mut(pointer).expect("field") = value.into();
            assert_ne!(freight(changed).fingerprint(), name, "{pointer}");
        }
    }

    #[test]
    fn normalizes_git_urls_like_kargo() {
        let cases = [
            (
                "https://github.com/example/repo.git/",
                "https://github.com/example/repo",
            ),
            (
                "https://foo:bar@localhost:8443/example/repo.git",
                "https://localhost:8443/example/repo",
            ),
            (
                "HTTPS://GitHub.com/Example/Repo",
                "https://github.com/example/repo",
            ),
            (
                "ssh://git@github.com/example/repo.git/",
                "ssh://git@github.com/example/repo",
            ),
            (
                "git@github.com:example/repo.git",
                "ssh://git@github.com/example/repo",
            ),
            ("github.com:example/repo/", "ssh://github.com/example/repo"),
            ("git.example.com", "ssh://git.example.com"),
            (
                "http://github.com/example/repo?foo=bar",
                "http://github.com/example/repo?foo=bar",
            ),
            ("not even remotely a url", "not even remotely a url"),
            ("https://github.com/", "https://github.com"),
            ("file:///tmp/gitops.git", "file:///tmp/gitops"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_git(input), expected, "{input}");
        }
    }

    #[test]
    fn normalizes_chart_urls_like_kargo() {
        let cases = [
            ("", ""),
            ("  oci://repo  ", "repo"),
            ("OCI://Repo", "repo"),
            ("oci://docker.io/example/repo", "example/repo"),
            ("index.docker.io/example/repo", "example/repo"),
            ("registry-1.docker.io/library/repo", "repo"),
            (
                "oci://ghcr.io/example/charts/app",
                "ghcr.io/example/charts/app",
            ),
            (
                "oci://localhost:5000/charts/app",
                "localhost:5000/charts/app",
            ),
            ("https://charts.example.com", "https://charts.example.com"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_chart(input), expected, "{input:?}");
        }
    }

    #[test]
    fn joins_paths_like_go() {
        assert_eq!(
            go_path_join("https://charts.example.com", "nginx"),
            "https:/charts.example.com/nginx"
        );
        assert_eq!(go_path_join("ghcr.io/x/app", ""), "ghcr.io/x/app");
        assert_eq!(go_path_join("a/b/", "../c"), "a/c");
    }

    #[test]
    fn aliases_are_adjective_animal_and_avoid_taken_ones() {
        let first = generate_alias(|_| false);
        let (adjective, animal) = first.split_once('-').expect("adjective-animal");
        assert!(ADJECTIVES.contains(&adjective) && ANIMALS.contains(&animal));
        let other = generate_alias(|a| a == first);
        assert_ne!(other, first);
        let numbered = generate_alias(|a| a.matches('-').count() == 1);
        assert_eq!(numbered.matches('-').count(), 2);
    }
}
