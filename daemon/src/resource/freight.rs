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
use super::urls::{normalize_chart, normalize_git};
use super::{Check, Errors, ObjectMeta};

/// The label that mirrors a Freight's alias, as in Kargo.
pub const ALIAS_LABEL: &str = "kargo.akuity.io/alias";

/// A Freight of `project` by name, or else by alias (aliases are unique per project, kept in
/// [`ALIAS_LABEL`] and indexed by the store, so this is a few reads, not a scan).
pub fn find(
    reader: &impl crate::store::Reader,
    project: &str,
    name_or_alias: &str,
) -> Result<Option<super::Object>, crate::store::StoreError> {
    if let Some(o) = reader.get(super::Kind::Freight, project, name_or_alias)? {
        return Ok(Some(o));
    }
    for name in reader.freight_named_by_alias(project, name_or_alias)? {
        if let Some(o) = reader.get(super::Kind::Freight, project, &name)? {
            return Ok(Some(o));
        }
    }
    Ok(None)
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
