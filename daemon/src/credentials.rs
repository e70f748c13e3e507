//! Finding credentials, as Kargo does: by type and repository URL, never by name.
//!
//! A credential is a `Secret` labelled `kargo.akuity.io/cred-type` (`git`, `image`, `helm`) with
//! `repoURL` and `username`/`password` (or `sshPrivateKey`). The project's Secrets are searched
//! first, then those of the shared namespace ([`SHARED_NAMESPACE`]), which serve every project
//! (the notes' "credentials for the whole organisation"). Within a namespace, exact URL matches
//! (after normalisation) come before regular expressions (`repoURLIsRegex: "true"`), each in
//! the order of the Secrets' names; the first match wins.
//!
//! Generic Secrets (`cred-type: generic`) are read by name, for plugins granted `credentials`.

use std::collections::BTreeMap;

use crate::host::credentials::SecretSource;
use crate::host::git::{GitCredential, GitCredentials};
use crate::resource::secret::{CRED_TYPE_LABEL, Secret};
use crate::resource::{Kind, LabelSelector, SHARED_NAMESPACE, urls};
use crate::store::{Reader, Store};

/// Credential types with URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredType {
    Git,
    Image,
    Helm,
}

impl CredType {
    fn label(self) -> &'static str {
        match self {
            CredType::Git => "git",
            CredType::Image => "image",
            CredType::Helm => "helm",
        }
    }

    fn normalize(self, url: &str) -> String {
        match self {
            CredType::Git => urls::normalize_git(url),
            CredType::Image => urls::normalize_image(url),
            CredType::Helm => urls::normalize_chart(url),
        }
    }
}

fn secrets_of_type(reader: &impl Reader, namespace: &str, cred_type: &str) -> Vec<Secret> {
    let selector = LabelSelector {
        match_labels: BTreeMap::from([(CRED_TYPE_LABEL.to_string(), cred_type.to_string())]),
        ..LabelSelector::default()
    };
    reader
        .list(Kind::Secret, Some(namespace), Some(&selector))
        .unwrap_or_default()
        .iter()
        .filter_map(|o| o.typed::<Secret>().ok())
        .collect()
}

/// The Secret that serves `url` for `project`, if any.
pub fn find(reader: &impl Reader, cred_type: CredType, project: &str, url: &str) -> Option<Secret> {
    let wanted = cred_type.normalize(url);
    for namespace in [project, SHARED_NAMESPACE] {
        let secrets = secrets_of_type(reader, namespace, cred_type.label());
        let is_regex = |s: &Secret| s.value("repoURLIsRegex").as_deref() == Some("true");
        let exact = secrets.iter().filter(|s| !is_regex(s)).find(|s| {
            s.value("repoURL")
                .is_some_and(|u| cred_type.normalize(&u) == wanted)
        });
        if let Some(s) = exact {
            return Some(s.clone());
        }
        let by_regex = secrets.iter().filter(|s| is_regex(s)).find(|s| {
            s.value("repoURL")
                .and_then(|re| regex::Regex::new(&re).ok())
                .is_some_and(|re| re.is_match(url) || re.is_match(&wanted))
        });
        if let Some(s) = by_regex {
            return Some(s.clone());
        }
    }
    None
}

/// Git credentials of one project, read from the store when a step asks.
/// Registry credentials of a project for the `oci` capability: its `cred-type: image` (or
/// `helm`) Secrets, then the shared namespace's.
pub struct ProjectOciCredentials {
    pub store: Store,
    pub project: String,
}

impl crate::host::oci::OciCredentials for ProjectOciCredentials {
    fn lookup(&self, cred_type: CredType, repo_url: &str) -> Option<(String, String)> {
        let secret = self
            .store
            .read(|r| Ok(find(r, cred_type, &self.project, repo_url)))
            .ok()
            .flatten()?;
        Some((secret.value("username")?, secret.value("password")?))
    }
}

pub struct ProjectGitCredentials {
    pub store: Store,
    pub project: String,
}

impl GitCredentials for ProjectGitCredentials {
    fn lookup(&self, repo_url: &str) -> Option<GitCredential> {
        let secret = self
            .store
            .read(|r| Ok(find(r, CredType::Git, &self.project, repo_url)))
            .ok()
            .flatten()?;
        let username = secret.value("username").unwrap_or_else(|| "git".into());
        let from = format!(
            "Secret {}/{}",
            secret.metadata.namespace.as_deref().unwrap_or(""),
            secret.metadata.name
        );
        if let Some(key) = secret.value("sshPrivateKey") {
            return Some(GitCredential::SshKey {
                username,
                key,
                from,
            });
        }
        Some(GitCredential::Password {
            username,
            password: secret.value("password")?,
            from,
        })
    }
}

/// A Secret's keys and decoded values.
fn values(secret: &Secret) -> BTreeMap<String, String> {
    let keys = secret.data.keys();
    keys.filter_map(|k| Some((k.clone(), secret.value(k)?)))
        .collect()
}

/// Every generic Secret of `namespace`, by name, with its values (for the `secret()` and
/// `sharedSecret()` expression functions).
pub fn generic_secrets(
    reader: &impl Reader,
    namespace: &str,
) -> BTreeMap<String, BTreeMap<String, String>> {
    secrets_of_type(reader, namespace, "generic")
        .iter()
        .map(|s| (s.metadata.name.clone(), values(s)))
        .collect()
}

/// Generic secrets of one project (then the shared namespace), by name, for plugins granted
/// `credentials`; `allowed` limits which names a plugin may read (`*`: any; empty: none).
pub struct ProjectSecrets {
    pub store: Store,
    pub project: String,
    pub allowed: Vec<String>,
}

impl SecretSource for ProjectSecrets {
    fn allows(&self, name: &str) -> bool {
        self.allowed.iter().any(|a| a == name || a == "*")
    }

    fn get(&self, name: &str) -> Option<BTreeMap<String, String>> {
        if !self.allows(name) {
            return None;
        }
        self.store
            .read(|r| {
                for namespace in [self.project.as_str(), SHARED_NAMESPACE] {
                    let found = r.get(Kind::Secret, namespace, name)?;
                    let secret = found.and_then(|o| o.typed::<Secret>().ok());
                    if let Some(s) = secret.filter(|s| {
                        s.metadata.labels.get(CRED_TYPE_LABEL).map(String::as_str)
                            == Some("generic")
                    }) {
                        return Ok(Some(values(&s)));
                    }
                }
                Ok(None)
            })
            .ok()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{self, Source};

    fn store_with(yaml: &str) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let sources = vec![Source {
            name: "creds.yaml".into(),
            content: yaml.into(),
        }];
        admission::apply(&store, &sources, None, false, None).unwrap();
        (dir, store)
    }

    const SECRETS: &str = r#"
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: shop}
---
apiVersion: v1
kind: Secret
metadata:
  name: b-exact
  namespace: shop
  labels: {kargo.akuity.io/cred-type: git}
stringData: {repoURL: "https://git.example/org/app.git", username: exact, password: p1}
---
apiVersion: v1
kind: Secret
metadata:
  name: a-regex
  namespace: shop
  labels: {kargo.akuity.io/cred-type: git}
stringData: {repoURL: "^https://git\\.example/org/.*$", repoURLIsRegex: "true", username: regex, password: p2}
---
apiVersion: v1
kind: Secret
metadata:
  name: org-wide
  namespace: kargo-shared-resources
  labels: {kargo.akuity.io/cred-type: git}
stringData: {repoURL: "https://git.example/other/lib", username: shared, password: p3}
---
apiVersion: v1
kind: Secret
metadata:
  name: api-token
  namespace: shop
  labels: {kargo.akuity.io/cred-type: generic}
stringData: {token: s3cret}
"#;

    fn user(store: &Store, url: &str) -> Option<String> {
        let creds = ProjectGitCredentials {
            store: store.clone(),
            project: "shop".into(),
        };
        match creds.lookup(url)? {
            GitCredential::Password { username, .. } => Some(username),
            GitCredential::SshKey { username, .. } => Some(username),
        }
    }

    #[test]
    fn exact_urls_win_over_regexes_and_the_project_over_the_shared_namespace() {
        let (_dir, store) = store_with(SECRETS);
        // Normalised: no `.git`, any case.
        assert_eq!(
            user(&store, "https://GIT.example/org/app").as_deref(),
            Some("exact")
        );
        assert_eq!(
            user(&store, "https://git.example/org/web.git").as_deref(),
            Some("regex")
        );
        assert_eq!(
            user(&store, "https://git.example/other/lib.git").as_deref(),
            Some("shared")
        );
        assert_eq!(user(&store, "https://elsewhere.example/x.git"), None);
    }

    #[test]
    fn generic_secrets_are_read_by_name_only_when_allowed() {
        let (_dir, store) = store_with(SECRETS);
        let secrets = |allowed: &[&str]| ProjectSecrets {
            store: store.clone(),
            project: "shop".into(),
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
        };
        let got = secrets(&["api-token"]).get("api-token").unwrap();
        assert_eq!(got.get("token").map(String::as_str), Some("s3cret"));
        assert_eq!(secrets(&[]).get("api-token"), None);
        // A git credential is not a generic secret.
        assert_eq!(secrets(&["*"]).get("b-exact"), None);
    }
}

/// Hides secret values in text the daemon keeps or shows (step messages, logs, events): every
/// occurrence of a value, as written and as JSON would escape it, becomes `***`. Values shorter
/// than [`Redactor::SHORTEST`] bytes are left alone; hiding every `1` or `ok` would make
/// messages unreadable and protect nothing.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a value that contains another is hidden whole.
    values: Vec<String>,
}

impl Redactor {
    pub const SHORTEST: usize = 4;

    pub fn new(values: impl IntoIterator<Item = String>) -> Redactor {
        let mut all = Vec::new();
        for value in values {
            if value.len() < Self::SHORTEST {
                continue;
            }
            let escaped = serde_json::to_string(&value).unwrap_or_default();
            let escaped = &escaped[1..escaped.len().saturating_sub(1).max(1)];
            if escaped != value && escaped.len() >= Self::SHORTEST {
                all.push(escaped.to_string());
            }
            all.push(value);
        }
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Redactor { values: all }
    }

    /// Every value of every secret in `secrets` (name → key → value).
    pub fn of(secrets: &BTreeMap<String, BTreeMap<String, String>>) -> Redactor {
        Redactor::new(secrets.values().flat_map(|v| v.values().cloned()))
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod redactor_tests {
    use super::*;

    #[test]
    fn hides_values_as_written_and_as_json_escapes_them() {
        let r = Redactor::new([
            "hunter2-token".to_string(),
            "a\"quoted\"b".into(),
            "ok".into(),
        ]);
        assert_eq!(
            r.redact("Authorization: Bearer hunter2-token failed; ok"),
            "Authorization: Bearer *** failed; ok"
        );
        assert_eq!(
            r.redact(r#"value "a\"quoted\"b" is not a URL"#),
            r#"value "***" is not a URL"#
        );
        assert_eq!(r.redact("a\"quoted\"b"), "***");
    }

    #[test]
    fn a_value_containing_another_is_hidden_whole() {
        let r = Redactor::new(["secret".to_string(), "my-secret-value".into()]);
        assert_eq!(r.redact("x my-secret-value y secret"), "x *** y ***");
    }
}
