//! `Project` and `ProjectConfig`: the tenant and its promotion policies and webhook receivers.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Check, Errors, LabelSelector};

/// Kargo removed `Project.spec`, but older manifests (and the notes Dray is built for) still put
/// `promotionPolicies` there; Dray accepts them and treats them like a ProjectConfig's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotion_policies: Vec<PromotionPolicy>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectConfigSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotion_policies: Vec<PromotionPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook_receivers: Vec<WebhookReceiver>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freight_links: Vec<DeepLink>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stage_links: Vec<DeepLink>,
    /// When the project's Stages may be promoted to (see [`crate::rules::windows`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotion_windows: Vec<PromotionWindow>,
}

/// A time window that opens (`Allow`) or closes (`Deny`) the Stages it selects to promotions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromotionWindow {
    pub name: String,
    /// None: every Stage in scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_selector: Option<StageSelector>,
    /// ClusterConfig only: the projects it applies to (none: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_selector: Option<StageSelector>,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rrule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtstart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtend: Option<String>,
}

/// Kargo's `autoRollback`: which ends of a promotion or verification roll the Stage back to
/// the last Freight verified in it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoRollback {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_promotion: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_verification: Vec<String>,
}

/// The one `ClusterConfig` (named `cluster`): webhook receivers that refresh matching
/// Warehouses in every project, their Secrets in [`super::SYSTEM_NAMESPACE`]; Kargo's
/// `gitClient` (the committer) and deep links are accepted and kept.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfigSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook_receivers: Vec<WebhookReceiver>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_client: Option<GitClient>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freight_links: Vec<DeepLink>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stage_links: Vec<DeepLink>,
    /// Windows for the Stages of every project (or those `projectSelector` selects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotion_windows: Vec<PromotionWindow>,
}

/// Kargo's cluster-wide committer identity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitClient {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_secret: Option<SecretRef>,
}

/// Which Stages auto-promote: by exact `stage` name (deprecated) or by `stageSelector`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromotionPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_selector: Option<StageSelector>,
    #[serde(default)]
    pub auto_promotion_enabled: bool,
    /// Dray: what happens to Promotions still waiting when a newer one is queued: `Queue` (the
    /// default, Kargo's behaviour: they run in order) or `Supersede` (they are discarded and
    /// only the newest runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<AutoRollback>,
    /// Dray: auto-promotion puts the candidates of all the Stage's origins into one Promotion
    /// (one run, one commit), waiting this long (a duration, `0s` for not at all) after the
    /// first of them arrived for others to join. Unset: one Promotion per Freight, as Kargo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_window: Option<String>,
}

/// `name` is exact, `regex:...` or `glob:...`; labels are ANDed with it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StageSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub match_labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<super::LabelSelectorRequirement>,
}

impl StageSelector {
    /// Whether it selects the resource called `name` with `labels`: by exact name, `regex:`
    /// or `glob:` (none: any name), and its labels.
    pub fn selects(&self, name: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
        let name_ok = match self.name.as_deref() {
            None | Some("") => true,
            Some(n) => {
                if let Some(re) = n.strip_prefix("regex:") {
                    regex::Regex::new(re).is_ok_and(|re| re.is_match(name))
                } else if let Some(glob) = n.strip_prefix("glob:") {
                    glob_to_regex(glob).is_ok_and(|re| re.is_match(name))
                } else {
                    n == name
                }
            }
        };
        name_ok && self.labels().matches(labels)
    }

    /// The label part of the selector (the name part is matched separately).
    pub fn labels(&self) -> LabelSelector {
        LabelSelector {
            match_labels: self.match_labels.clone(),
            match_expressions: self.match_expressions.clone(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeepLink {
    pub title: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub if_: Option<String>,
}

/// A webhook receiver: a `name` and exactly one provider block.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookReceiver {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<ReceiverSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab: Option<ReceiverSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitea: Option<ReceiverSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitbucket: Option<ReceiverSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<ReceiverSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerhub: Option<ReceiverSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quay: Option<ReceiverSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harbor: Option<ReceiverSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifactory: Option<ArtifactoryReceiver>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic: Option<GenericReceiver>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiverSecret {
    pub secret_ref: SecretRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactoryReceiver {
    pub secret_ref: SecretRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_repo_name: Option<String>,
}

/// The generic receiver's `actions` keep Kargo's shape; they are interpreted by the webhook
/// receivers, which check them when they run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenericReceiver {
    pub secret_ref: SecretRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
}

pub(crate) fn check_policies(path: &str, policies: &[PromotionPolicy], errors: &mut Errors) {
    for (i, p) in policies.iter().enumerate() {
        let at = format!("{path}[{i}]");
        errors.exactly_one(
            &at,
            &[
                ("stage", p.stage.is_some()),
                ("stageSelector", p.stage_selector.is_some()),
            ],
        );
        if let Some(stage) = &p.stage {
            errors.subdomain(&format!("{at}.stage"), stage);
        }
        if let Some(q) = &p.queue_policy
            && !matches!(q.as_str(), "Queue" | "Supersede")
        {
            errors.add(
                format!("{at}.queuePolicy"),
                format!("{q:?} is not a queue policy: use Queue or Supersede"),
            );
        }
        if let Some(selector) = &p.stage_selector {
            check_selector(&format!("{at}.stageSelector"), selector, errors);
        }
        if let Some(window) = &p.batch_window {
            errors.duration(&format!("{at}.batchWindow"), window);
        }
        if let Some(rollback) = &p.auto_rollback {
            let at = format!("{at}.autoRollback");
            for (field, list, allowed) in [
                ("onPromotion", &rollback.on_promotion, ["Failed", "Errored"]),
                (
                    "onVerification",
                    &rollback.on_verification,
                    ["Failed", "Error"],
                ),
            ] {
                for (j, phase) in list.iter().enumerate() {
                    if !allowed.contains(&phase.as_str()) {
                        errors.add(
                            format!("{at}.{field}[{j}]"),
                            format!("{phase:?} is not {} or {}", allowed[0], allowed[1]),
                        );
                    }
                }
            }
        }
    }
}

/// Translates a shell glob (`*`, `?`, `[...]`) to an anchored regex.
pub fn glob_to_regex(glob: &str) -> Result<regex::Regex, String> {
    let mut re = String::from("^");
    let mut chars = glob.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '[' => {
                re.push('[');
                for c in chars.by_ref() {
                    re.push(c);
                    if c == ']' {
                        break;
                    }
                }
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| format!("{glob:?} is not a valid glob: {e}"))
}

impl Check for ProjectSpec {
    fn check(&self, errors: &mut Errors) {
        check_policies("spec.promotionPolicies", &self.promotion_policies, errors);
    }
}

impl Check for ClusterConfigSpec {
    fn check(&self, errors: &mut Errors) {
        check_receivers(&self.webhook_receivers, errors);
        check_windows(&self.promotion_windows, true, errors);
    }
}

impl Check for ProjectConfigSpec {
    fn check(&self, errors: &mut Errors) {
        check_policies("spec.promotionPolicies", &self.promotion_policies, errors);
        check_receivers(&self.webhook_receivers, errors);
        check_windows(&self.promotion_windows, false, errors);
    }
}

fn check_selector(at: &str, selector: &StageSelector, errors: &mut Errors) {
    if let Some(name) = &selector.name {
        if let Some(pattern) = name.strip_prefix("regex:") {
            errors.regex(&format!("{at}.name"), pattern);
        } else if let Some(pattern) = name.strip_prefix("glob:")
            && let Err(e) = glob_to_regex(pattern)
        {
            errors.add(format!("{at}.name"), e);
        }
    }
    selector.labels().check(at, errors);
}

fn check_windows(windows: &[PromotionWindow], cluster: bool, errors: &mut Errors) {
    let mut names = std::collections::HashSet::new();
    for (i, w) in windows.iter().enumerate() {
        let at = format!("spec.promotionWindows[{i}]");
        errors.subdomain(&format!("{at}.name"), &w.name);
        if !names.insert(&w.name) {
            errors.add(
                format!("{at}.name"),
                format!("window {:?} is defined twice", w.name),
            );
        }
        if let Some(selector) = &w.stage_selector {
            check_selector(&format!("{at}.stageSelector"), selector, errors);
        }
        match (&w.project_selector, cluster) {
            (Some(_), false) => errors.add(
                format!("{at}.projectSelector"),
                "is for a ClusterConfig's windows; a ProjectConfig's apply to its own project",
            ),
            (Some(selector), true) => {
                check_selector(&format!("{at}.projectSelector"), selector, errors)
            }
            (None, _) => {}
        }
        if let Err(e) = crate::rules::windows::Window::parse(w) {
            errors.add(format!("{at}.{}", e.field), e.message);
        }
    }
}

fn check_receivers(receivers: &[WebhookReceiver], errors: &mut Errors) {
    {
        let mut names = std::collections::HashSet::new();
        for (i, r) in receivers.iter().enumerate() {
            let at = format!("spec.webhookReceivers[{i}]");
            if errors.required(&format!("{at}.name"), &r.name) && !names.insert(&r.name) {
                errors.add(
                    format!("{at}.name"),
                    format!("receiver {:?} is defined twice", r.name),
                );
            }
            errors.exactly_one(
                &at,
                &[
                    ("github", r.github.is_some()),
                    ("gitlab", r.gitlab.is_some()),
                    ("gitea", r.gitea.is_some()),
                    ("bitbucket", r.bitbucket.is_some()),
                    ("azure", r.azure.is_some()),
                    ("dockerhub", r.dockerhub.is_some()),
                    ("quay", r.quay.is_some()),
                    ("harbor", r.harbor.is_some()),
                    ("artifactory", r.artifactory.is_some()),
                    ("generic", r.generic.is_some()),
                ],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        let re = glob_to_regex("uat-*").unwrap();
        assert!(re.is_match("uat-eu"));
        assert!(!re.is_match("prod-uat-eu"));
        assert!(glob_to_regex("a.b").unwrap().is_match("a.b"));
        assert!(!glob_to_regex("a.b").unwrap().is_match("axb"));
    }
}
