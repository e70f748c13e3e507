//! `Warehouse`: subscriptions to image, Git and chart repositories, and how Freight is made.

use serde::{Deserialize, Serialize};

use super::{Check, Errors};

fn default_interval() -> String {
    "5m0s".into()
}

fn default_discovery_limit() -> i64 {
    20
}

fn default_true() -> bool {
    true
}

fn is_true(v: &bool) -> bool {
    *v
}

fn is_default_limit(v: &i64) -> bool {
    *v == 20
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarehouseSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    #[serde(default = "default_interval")]
    pub interval: String,
    #[serde(default)]
    pub freight_creation_policy: FreightCreationPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freight_creation_criteria: Option<FreightCreationCriteria>,
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
}

impl Default for WarehouseSpec {
    fn default() -> Self {
        WarehouseSpec {
            shard: None,
            interval: default_interval(),
            freight_creation_policy: FreightCreationPolicy::default(),
            freight_creation_criteria: None,
            subscriptions: Vec::new(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FreightCreationPolicy {
    #[default]
    Automatic,
    Manual,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FreightCreationCriteria {
    pub expression: String,
}

/// One subscription: an optional `name` and exactly one of `image`, `git`, `chart`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subscription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSubscription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSubscription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartSubscription>,
    /// Kargo's generic subscription, for artifacts that are not images, commits or charts.
    /// Dray has no subscriber for any `subscriptionType` yet: its Freight is made by hand (a
    /// `Freight` with `artifacts`), and discovery says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<GenericSubscription>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenericSubscription {
    pub subscription_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_limit: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageSelectionStrategy {
    #[default]
    SemVer,
    Lexical,
    Digest,
    NewestBuild,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageSubscription {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    #[serde(default)]
    pub image_selection_strategy: ImageSelectionStrategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// Kargo's former name for the SemVer `constraint`; still read, and used when `constraint`
    /// is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver_constraint: Option<String>,
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub strict_semvers: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_tags_regexes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_tags_regexes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(
        default = "default_discovery_limit",
        skip_serializing_if = "is_default_limit"
    )]
    pub discovery_limit: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache_by_tag: bool,
    #[serde(
        default,
        rename = "insecureSkipTLSVerify",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub insecure_skip_tls_verify: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommitSelectionStrategy {
    #[default]
    NewestFromBranch,
    SemVer,
    Lexical,
    NewestTag,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSubscription {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    #[serde(default)]
    pub commit_selection_strategy: CommitSelectionStrategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver_constraint: Option<String>,
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub strict_semvers: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_tags_regexes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_tags_regexes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(
        default = "default_discovery_limit",
        skip_serializing_if = "is_default_limit"
    )]
    pub discovery_limit: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blobless: bool,
    #[serde(
        default,
        rename = "insecureSkipTLSVerify",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub insecure_skip_tls_verify: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartSubscription {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver_constraint: Option<String>,
    #[serde(
        default = "default_discovery_limit",
        skip_serializing_if = "is_default_limit"
    )]
    pub discovery_limit: i64,
    #[serde(
        default,
        rename = "insecureSkipTLSVerify",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub insecure_skip_tls_verify: bool,
}

fn check_regexes(errors: &mut Errors, at: &str, field: &str, list: &[String]) {
    for (i, re) in list.iter().enumerate() {
        errors.regex(&format!("{at}.{field}[{i}]"), re);
    }
}

fn check_path_filters(errors: &mut Errors, at: &str, field: &str, list: &[String]) {
    for (i, p) in list.iter().enumerate() {
        let path = format!("{at}.{field}[{i}]");
        if let Some(re) = p
            .strip_prefix("regex:")
            .or_else(|| p.strip_prefix("regexp:"))
        {
            errors.regex(&path, re);
        } else if let Some(glob) = p.strip_prefix("glob:") {
            if let Err(e) = super::project::glob_to_regex(glob) {
                errors.add(path, e);
            }
        } else if p.is_empty() {
            errors.add(path, "must not be empty");
        }
    }
}

impl Check for WarehouseSpec {
    fn check(&self, errors: &mut Errors) {
        errors.duration("spec.interval", &self.interval);
        if self.subscriptions.is_empty() {
            errors.add(
                "spec.subscriptions",
                "needs at least one subscription (image, git or chart)",
            );
        }
        let mut names = std::collections::HashSet::new();
        let mut repos = std::collections::HashSet::new();
        for (i, sub) in self.subscriptions.iter().enumerate() {
            let at = format!("spec.subscriptions[{i}]");
            if let Some(name) = &sub.name {
                errors.label(&format!("{at}.name"), name);
                if !names.insert(name.clone()) {
                    errors.add(
                        format!("{at}.name"),
                        format!("subscription name {name:?} is used twice"),
                    );
                }
            }
            errors.exactly_one(
                &at,
                &[
                    ("image", sub.image.is_some()),
                    ("git", sub.git.is_some()),
                    ("chart", sub.chart.is_some()),
                    ("subscription", sub.subscription.is_some()),
                ],
            );
            if let Some(generic) = &sub.subscription {
                let at = format!("{at}.subscription");
                if sub.name.is_none() {
                    errors.add(
                        at.clone(),
                        "needs the subscription's name (spec.subscriptions[].name): a generic subscription has no repository URL to be known by",
                    );
                }
                errors.required(
                    &format!("{at}.subscriptionType"),
                    &generic.subscription_type,
                );
                if generic.config.as_ref().is_some_and(|c| !c.is_object()) {
                    errors.add(format!("{at}.config"), "must be an object");
                }
                if generic
                    .discovery_limit
                    .is_some_and(|l| !(1..=100).contains(&l))
                {
                    errors.add(format!("{at}.discoveryLimit"), "must be from 1 to 100");
                }
            }
            if let Some(image) = &sub.image {
                let at = format!("{at}.image");
                if errors.required(&format!("{at}.repoURL"), &image.repo_url)
                    && !repos.insert(("image", image.repo_url.clone()))
                {
                    errors.add(
                        format!("{at}.repoURL"),
                        "this repository is subscribed to twice",
                    );
                }
                let constraint = image
                    .constraint
                    .as_ref()
                    .or(image.semver_constraint.as_ref());
                match (image.image_selection_strategy, constraint) {
                    (ImageSelectionStrategy::SemVer, Some(c)) => errors.constraint(&format!("{at}.constraint"), c),
                    (ImageSelectionStrategy::Digest, None) => errors.add(
                        format!("{at}.constraint"),
                        "is required with the Digest strategy: name the mutable tag to track, e.g. latest",
                    ),
                    _ => {}
                }
                check_regexes(errors, &at, "allowTagsRegexes", &image.allow_tags_regexes);
                check_regexes(errors, &at, "ignoreTagsRegexes", &image.ignore_tags_regexes);
                if let Some(platform) = &image.platform {
                    let parts = platform.split('/').count();
                    if !(2..=3).contains(&parts) || platform.split('/').any(str::is_empty) {
                        errors.add(
                            format!("{at}.platform"),
                            format!("{platform:?} is not os/arch[/variant]"),
                        );
                    }
                }
                errors.range(
                    &format!("{at}.discoveryLimit"),
                    image.discovery_limit,
                    1,
                    100,
                );
            }
            if let Some(git) = &sub.git {
                let at = format!("{at}.git");
                if errors.required(&format!("{at}.repoURL"), &git.repo_url)
                    && !repos.insert(("git", git.repo_url.clone()))
                {
                    errors.add(
                        format!("{at}.repoURL"),
                        "this repository is subscribed to twice",
                    );
                }
                if let Some(c) = &git.semver_constraint {
                    errors.constraint(&format!("{at}.semverConstraint"), c);
                }
                check_regexes(errors, &at, "allowTagsRegexes", &git.allow_tags_regexes);
                check_regexes(errors, &at, "ignoreTagsRegexes", &git.ignore_tags_regexes);
                check_path_filters(errors, &at, "includePaths", &git.include_paths);
                check_path_filters(errors, &at, "excludePaths", &git.exclude_paths);
                if let Some(since) = &git.since
                    && humantime::parse_rfc3339_weak(since).is_err()
                {
                    errors.add(
                        format!("{at}.since"),
                        format!("{since:?} is not an RFC 3339 time"),
                    );
                }
                if let Some(filter) = &git.expression_filter {
                    errors.condition(&format!("{at}.expressionFilter"), filter);
                }
                errors.range(&format!("{at}.discoveryLimit"), git.discovery_limit, 1, 100);
            }
            if let Some(chart) = &sub.chart {
                let at = format!("{at}.chart");
                errors.required(&format!("{at}.repoURL"), &chart.repo_url);
                let oci = chart.repo_url.starts_with("oci://");
                match (&chart.name, oci) {
                    (None, false) => errors.add(
                        format!("{at}.name"),
                        "is required for a classic (https://) chart repository",
                    ),
                    (Some(_), true) => errors.add(
                        format!("{at}.name"),
                        "must be empty for an oci:// chart: the repository URL names the chart",
                    ),
                    _ => {}
                }
                if let Some(c) = &chart.semver_constraint {
                    errors.constraint(&format!("{at}.semverConstraint"), c);
                }
                errors.range(
                    &format!("{at}.discoveryLimit"),
                    chart.discovery_limit,
                    1,
                    100,
                );
            }
        }
        if let Some(criteria) = &self.freight_creation_criteria {
            errors.condition(
                "spec.freightCreationCriteria.expression",
                &criteria.expression,
            );
        }
    }
}
