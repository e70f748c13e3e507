//! Pull requests on the services that host Git repositories, for Kargo's `git-open-pr`,
//! `git-wait-for-pr` and `git-merge-pr`: GitHub (and GitHub Enterprise), GitLab, Gitea, Bitbucket
//! Cloud and Azure DevOps (and Azure DevOps Server), each through its documented REST API.
//!
//! The token is the password of the repository's `cred-type: git` Secret, looked up by the
//! repository URL as a clone's credentials are; it goes only to that service's API and never
//! into the sandbox or a message. Answers are bounded (size, time, pages) and read as untrusted.

mod azure;
mod bitbucket;
mod gitea;
pub mod github;
mod gitlab;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use crate::runtime::bindings::dray::plugin::git::{GitError, MergeOutcome, PullRequest};

/// The most bytes read of one answer.
const MAX_ANSWER: usize = 4 << 20;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most pages read when listing pull requests.
const MAX_PAGES: usize = 10;

type Outcome<T> = Result<T, GitError>;

/// The services Dray speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Github,
    Gitlab,
    Gitea,
    Bitbucket,
    Azure,
}

impl Provider {
    /// Kargo's names (the step configs' `provider`).
    pub fn parse(name: &str) -> Option<Provider> {
        Some(match name {
            "github" => Provider::Github,
            "gitlab" => Provider::Gitlab,
            "gitea" => Provider::Gitea,
            "bitbucket" => Provider::Bitbucket,
            "azure" => Provider::Azure,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Provider::Github => "GitHub",
            Provider::Gitlab => "GitLab",
            Provider::Gitea => "Gitea",
            Provider::Bitbucket => "Bitbucket",
            Provider::Azure => "Azure DevOps",
        }
    }

    /// The service a well-known host is.
    fn of_host(host: &str) -> Option<Provider> {
        Some(match host {
            "github.com" => Provider::Github,
            h if h.ends_with(".ghe.com") => Provider::Github,
            "gitlab.com" => Provider::Gitlab,
            "gitea.com" | "codeberg.org" => Provider::Gitea,
            "bitbucket.org" => Provider::Bitbucket,
            "dev.azure.com" => Provider::Azure,
            h if h.ends_with(".visualstudio.com") => Provider::Azure,
            _ => return None,
        })
    }
}

/// `[git-hosts."HOST[:PORT]"]` in the daemon config: a self-hosted service, so that steps need
/// not name its `provider`, and where its API is when not where the service usually has it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostConfig {
    /// `github`, `gitlab`, `gitea`, `bitbucket` or `azure`.
    pub provider: String,
    /// The API's base URL (GitHub Enterprise: `https://HOST/api/v3`, GitLab `…/api/v4`, Gitea
    /// `…/api/v1`, Bitbucket `https://api.bitbucket.org/2.0`, Azure DevOps: the URL the
    /// organisation or collection paths hang from).
    #[serde(default)]
    pub api_url: Option<String>,
}

/// The operator's `[git-hosts]`, checked.
#[derive(Debug, Clone, Default)]
pub struct Hosts(BTreeMap<String, (Provider, Option<Url>)>);

impl Hosts {
    pub fn new(config: &BTreeMap<String, HostConfig>) -> Result<Hosts, String> {
        let mut hosts = BTreeMap::new();
        for (host, entry) in config {
            let provider = Provider::parse(&entry.provider).ok_or_else(|| {
                format!(
                    "git-hosts.{host:?}.provider: {:?} is not one of github, gitlab, gitea, bitbucket, azure",
                    entry.provider
                )
            })?;
            let api = match &entry.api_url {
                None => None,
                Some(text) => {
                    let url = Url::parse(text.trim_end_matches('/')).map_err(|e| {
                        format!("git-hosts.{host:?}.api-url: {text:?} is not a URL: {e}")
                    })?;
                    if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() {
                        return Err(format!(
                            "git-hosts.{host:?}.api-url: an http or https URL without credentials"
                        ));
                    }
                    Some(url)
                }
            };
            hosts.insert(host.to_ascii_lowercase(), (provider, api));
        }
        Ok(Hosts(hosts))
    }
}

/// One repository on one service, and how to reach its API.
pub struct Repo {
    provider: Provider,
    /// The API base (see [`HostConfig::api_url`]).
    api: Url,
    /// `https://HOST/PATH` without `.git`: pages link from here.
    web: Url,
    /// The path's segments (`owner`, `repo`; GitLab's groups; Azure's org, project, `_git`, repo).
    segments: Vec<String>,
    token: Option<String>,
    client: reqwest::Client,
}

impl Repo {
    /// Finds the service of `repo_url` (`provider` if the step names one) and its API.
    pub fn locate(
        hosts: &Hosts,
        repo_url: &str,
        provider: Option<&str>,
        token: Option<String>,
    ) -> Outcome<Repo> {
        let web = web_url(repo_url)?;
        let host = web.host_str().unwrap_or_default().to_ascii_lowercase();
        let authority = match web.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let configured = hosts.0.get(&authority);
        let provider = match provider {
            Some(name) => Provider::parse(name).ok_or_else(|| {
                GitError::Invalid(format!(
                    "provider {name:?} is not one of github, gitlab, gitea, bitbucket, azure"
                ))
            })?,
            None => configured
                .map(|(p, _)| *p)
                .or_else(|| Provider::of_host(&host))
                .ok_or_else(|| {
                    GitError::Invalid(format!(
                        "cannot tell which service hosts {authority}: set `provider` (github, gitlab, gitea, bitbucket or azure) in the step's config, or have the operator name the host in the daemon config ([git-hosts.\"{authority}\"] provider = …)"
                    ))
                })?,
        };
        let segments: Vec<String> = web
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        // The operator's API URL is for the service the operator named.
        let api = match configured
            .filter(|(p, _)| *p == provider)
            .and_then(|(_, api)| api.clone())
        {
            Some(api) => api,
            None => default_api(provider, &web, &host)?,
        };
        let client = crate::tls::client_builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dray/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GitError::Failed(format!("cannot build an HTTP client: {e}")))?;
        let repo = Repo {
            provider,
            api,
            web,
            segments,
            token: token.filter(|t| !t.is_empty()),
            client,
        };
        repo.check_path()?;
        Ok(repo)
    }

    fn check_path(&self) -> Outcome<()> {
        let fits = match self.provider {
            Provider::Github | Provider::Gitea | Provider::Bitbucket => self.segments.len() == 2,
            Provider::Gitlab => self.segments.len() >= 2,
            Provider::Azure => azure::parts(self).is_some(),
        };
        if fits {
            Ok(())
        } else {
            Err(GitError::Invalid(format!(
                "{} is not a {} repository URL ({})",
                self.web,
                self.provider.name(),
                match self.provider {
                    Provider::Github | Provider::Gitea | Provider::Bitbucket => "HOST/OWNER/REPO",
                    Provider::Gitlab => "HOST/GROUP[/SUBGROUP…]/REPO",
                    Provider::Azure => "HOST/ORG/PROJECT/_git/REPO",
                }
            )))
        }
    }

    /// The API URL of `segments` under the base.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.api.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    /// Sends a request and reads its JSON answer (`Value::Null` for an empty one); the error
    /// says what was asked and what the service answered.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        what: &str,
    ) -> Outcome<(StatusCode, Value)> {
        let mut request = self.client.request(method, url);
        request = match (&self.token, self.provider) {
            (None, _) => request,
            (Some(t), Provider::Github) => request
                .bearer_auth(t)
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28"),
            (Some(t), Provider::Gitlab) => request.header("PRIVATE-TOKEN", t),
            (Some(t), Provider::Gitea) => request.header("Authorization", format!("token {t}")),
            (Some(t), Provider::Bitbucket) => request.bearer_auth(t),
            (Some(t), Provider::Azure) => request.basic_auth("", Some(t)),
        };
        if let Some(body) = body {
            request = request.json(body);
        }
        let service = self.provider.name();
        let mut response = request.send().await.map_err(|e| {
            GitError::Failed(format!(
                "cannot {what} on {service} ({}): {}",
                self.api,
                without_url(&e)
            ))
        })?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            GitError::Failed(format!(
                "cannot {what} on {service}: the answer broke off: {}",
                without_url(&e)
            ))
        })? {
            if bytes.len() + chunk.len() > MAX_ANSWER {
                return Err(GitError::Failed(format!(
                    "cannot {what} on {service}: its answer is over {} MiB",
                    MAX_ANSWER >> 20
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) if !status.is_success() => Value::Null,
                Err(e) => {
                    return Err(GitError::Failed(format!(
                        "cannot {what} on {service}: its answer is not JSON ({e})"
                    )));
                }
            }
        };
        if status.is_success() {
            return Ok((status, value));
        }
        let said = said(&value);
        let message = format!("cannot {what} on {service}: HTTP {status}{said}");
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => GitError::Denied(format!(
                "{message}; {}",
                if self.token.is_some() {
                    "check the token (the password of the repository's cred-type: git Secret) and its scopes"
                } else {
                    "add a Secret labelled kargo.akuity.io/cred-type: git with the repository's repoURL and a token as its password"
                }
            )),
            StatusCode::NOT_FOUND => GitError::NotFound(message),
            _ => GitError::Failed(message),
        })
    }

    async fn get(&self, url: Url, what: &str) -> Outcome<Value> {
        Ok(self.call(Method::GET, url, None, what).await?.1)
    }

    /// Open pull requests from `source` to `target` (the service's filters, then checked again
    /// here).
    pub async fn open_pull_requests(
        &self,
        source: &str,
        target: &str,
    ) -> Outcome<Vec<PullRequest>> {
        match self.provider {
            Provider::Github => github::list(self, source, target).await,
            Provider::Gitlab => gitlab::list(self, source, target).await,
            Provider::Gitea => gitea::list(self, source, target).await,
            Provider::Bitbucket => bitbucket::list(self, source, target).await,
            Provider::Azure => azure::list(self, source, target).await,
        }
    }

    pub async fn create(&self, new: &NewPullRequest) -> Outcome<PullRequest> {
        match self.provider {
            Provider::Github => github::create(self, new).await,
            Provider::Gitlab => gitlab::create(self, new).await,
            Provider::Gitea => gitea::create(self, new).await,
            Provider::Bitbucket => bitbucket::create(self, new).await,
            Provider::Azure => azure::create(self, new).await,
        }
    }

    pub async fn pull_request(&self, number: u64) -> Outcome<PullRequest> {
        match self.provider {
            Provider::Github => github::get(self, number).await.map(|(pr, _)| pr),
            Provider::Gitlab => gitlab::get(self, number).await.map(|(pr, _)| pr),
            Provider::Gitea => gitea::get(self, number).await.map(|(pr, _)| pr),
            Provider::Bitbucket => bitbucket::get(self, number).await.map(|(pr, _)| pr),
            Provider::Azure => azure::get(self, number).await.map(|(pr, _)| pr),
        }
    }

    /// GitHub only: see [`github::replay`].
    pub async fn github_replay(
        &self,
        branch: &str,
        base_branch: &str,
        head: &str,
        force: bool,
    ) -> Outcome<github::Replayed> {
        self.github_only()?;
        github::replay(self, branch, base_branch, head, force).await
    }

    /// GitHub only: deletes a ref the push made.
    pub async fn github_delete_ref(&self, reference: &str) -> Outcome<()> {
        self.github_only()?;
        github::delete_ref(self, reference).await
    }

    fn github_only(&self) -> Outcome<()> {
        if self.provider == Provider::Github {
            Ok(())
        } else {
            Err(GitError::Invalid(format!(
                "github-push pushes through GitHub's API; {} is on {}: use git-push",
                self.web,
                self.provider.name()
            )))
        }
    }

    pub async fn merge(&self, number: u64, method: Option<&str>) -> Outcome<MergeOutcome> {
        match self.provider {
            Provider::Github => github::merge(self, number, method).await,
            Provider::Gitlab => gitlab::merge(self, number, method).await,
            Provider::Gitea => gitea::merge(self, number, method).await,
            Provider::Bitbucket => bitbucket::merge(self, number, method).await,
            Provider::Azure => azure::merge(self, number, method).await,
        }
    }
}

/// A pull request to open.
pub struct NewPullRequest {
    pub source: String,
    pub target: String,
    pub title: String,
    pub description: String,
    pub labels: Vec<String>,
}

/// `https://HOST[:PORT]/PATH` of a repository URL (`http(s)://`, `ssh://`, or scp-like
/// `user@host:path`), without `.git` and never with credentials.
fn web_url(repo_url: &str) -> Outcome<Url> {
    let invalid = |why: &str| {
        GitError::Invalid(format!(
            "the repository URL is not one a hosting service's API can be found from: {why}"
        ))
    };
    let parsed = match Url::parse(repo_url) {
        Ok(url) => url,
        Err(_) => {
            // scp-like: git@host:owner/repo.git
            let (user_host, path) = repo_url
                .split_once(':')
                .ok_or_else(|| invalid("not a URL"))?;
            let host = user_host.rsplit('@').next().unwrap_or(user_host);
            Url::parse(&format!("https://{host}/{}", path.trim_start_matches('/')))
                .map_err(|_| invalid("not a URL"))?
        }
    };
    if parsed.password().is_some() {
        return Err(invalid(
            "it holds a password; put credentials in a cred-type: git Secret",
        ));
    }
    let scheme = match parsed.scheme() {
        "http" => "http",
        "https" | "ssh" | "git+ssh" => "https",
        other => return Err(invalid(&format!("the scheme {other:?} has no API"))),
    };
    let host = parsed.host_str().ok_or_else(|| invalid("no host"))?;
    let port = match (parsed.scheme(), parsed.port()) {
        ("http" | "https", Some(p)) => format!(":{p}"),
        _ => String::new(),
    };
    let path = parsed.path().trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    Url::parse(&format!("{scheme}://{host}{port}/{path}")).map_err(|_| invalid("not a URL"))
}

fn default_api(provider: Provider, web: &Url, host: &str) -> Outcome<Url> {
    let origin = web.origin().ascii_serialization();
    let text = match provider {
        Provider::Github if host == "github.com" => "https://api.github.com".to_string(),
        Provider::Github if host.ends_with(".ghe.com") => format!("https://api.{host}"),
        Provider::Github => format!("{origin}/api/v3"),
        Provider::Gitlab => format!("{origin}/api/v4"),
        Provider::Gitea => format!("{origin}/api/v1"),
        Provider::Bitbucket if host == "bitbucket.org" => {
            "https://api.bitbucket.org/2.0".to_string()
        }
        Provider::Bitbucket => {
            return Err(GitError::Invalid(format!(
                "{host} is not Bitbucket Cloud (bitbucket.org), the only Bitbucket whose API Dray speaks; the operator may name the API of a service that speaks it in the daemon config ([git-hosts.\"{host}\"] api-url = …)"
            )));
        }
        Provider::Azure if host.ends_with(".visualstudio.com") => {
            "https://dev.azure.com".to_string()
        }
        Provider::Azure => origin,
    };
    Url::parse(&text).map_err(|e| GitError::Invalid(format!("{text}: {e}")))
}

/// What a service said in an error answer, short (`: "…"`), or nothing.
fn said(value: &Value) -> String {
    let text = ["message", "error", "error_description"]
        .iter()
        .find_map(|k| match value.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Object(o)) => o.get("message").and_then(Value::as_str).map(str::to_string),
            // GitLab lists its reasons.
            Some(Value::Array(list)) => Some(
                list.iter()
                    .take(8)
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
            .filter(|t| !t.is_empty()),
            _ => None,
        });
    match text {
        Some(t) => {
            let t: String = t.chars().filter(|c| !c.is_control()).take(300).collect();
            format!(": {t:?}")
        }
        None => String::new(),
    }
}

/// reqwest's error without the URL it carries (the API URL is named by the caller).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text
            .replace(&format!(" ({url})"), "")
            .replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A string field.
fn text(v: &Value, path: &[&str]) -> Option<String> {
    let mut v = v;
    for key in path {
        v = v.get(key)?;
    }
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// A number field (some services send numbers as strings).
fn number(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The list of an answer (`[…]` or `{key: […]}`), bounded.
fn items(v: Value, key: Option<&str>) -> Outcome<Vec<Value>> {
    let list = match (v, key) {
        (Value::Array(list), _) => list,
        (Value::Object(mut o), Some(key)) => match o.remove(key) {
            Some(Value::Array(list)) => list,
            _ => return Err(GitError::Failed(format!("the answer has no list {key:?}"))),
        },
        _ => return Err(GitError::Failed("the answer is not a list".into())),
    };
    Ok(list)
}

/// The pull request of an answer, or why it is not one.
fn required(pr: Option<PullRequest>, what: &str) -> Outcome<PullRequest> {
    pr.ok_or_else(|| GitError::Failed(format!("the answer to {what} is not a pull request")))
}

/// Checks `method` against a service's merge methods.
fn check_method(method: Option<&str>, valid: &[&str], service: &str) -> Outcome<()> {
    match method {
        Some(m) if !valid.contains(&m) => Err(GitError::Invalid(format!(
            "mergeMethod {m:?} is not one of {service}'s: {}",
            valid.join(", ")
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locate(url: &str, provider: Option<&str>) -> Outcome<Repo> {
        Repo::locate(&Hosts::default(), url, provider, None)
    }

    #[test]
    fn finds_the_service_and_its_api_from_the_url() {
        let r = locate("https://github.com/acme/app.git", None).unwrap();
        assert_eq!(r.provider, Provider::Github);
        assert_eq!(
            r.url(&["repos", "acme", "app"]).as_str(),
            "https://api.github.com/repos/acme/app"
        );
        let r = locate("git@github.com:acme/app.git", None).unwrap();
        assert_eq!(r.web.as_str(), "https://github.com/acme/app");
        let r = locate("https://git.corp:8443/acme/app", Some("github")).unwrap();
        assert_eq!(r.api.as_str(), "https://git.corp:8443/api/v3");
        let r = locate("https://gitlab.com/group/sub/app.git", None).unwrap();
        assert_eq!(
            r.url(&["projects", &r.segments.join("/")]).as_str(),
            "https://gitlab.com/api/v4/projects/group%2Fsub%2Fapp"
        );
        let r = locate("https://dev.azure.com/org/proj/_git/app", None).unwrap();
        assert_eq!(r.provider, Provider::Azure);
        let r = locate("https://org.visualstudio.com/proj/_git/app", None).unwrap();
        assert_eq!(azure::parts(&r).unwrap().0, "org");
        assert!(matches!(
            locate("https://bitbucket.org/ws/app", None)
                .unwrap()
                .provider,
            Provider::Bitbucket
        ));
    }

    #[test]
    fn refuses_what_it_cannot_place() {
        let e = locate("https://git.corp/acme/app", None).err().unwrap();
        assert!(
            matches!(&e, GitError::Invalid(m) if m.contains("[git-hosts.\"git.corp\"]")),
            "{e:?}"
        );
        let e = locate("https://git.corp/acme/app", Some("gitbucket"))
            .err()
            .unwrap();
        assert!(
            matches!(&e, GitError::Invalid(m) if m.contains("not one of")),
            "{e:?}"
        );
        let e = locate("https://git.corp/acme/app", Some("bitbucket"))
            .err()
            .unwrap();
        assert!(
            matches!(&e, GitError::Invalid(m) if m.contains("Bitbucket Cloud")),
            "{e:?}"
        );
        let e = locate("https://github.com/acme", None).err().unwrap();
        assert!(
            matches!(&e, GitError::Invalid(m) if m.contains("HOST/OWNER/REPO")),
            "{e:?}"
        );
        let e = locate("https://dev.azure.com/org/proj/app", None)
            .err()
            .unwrap();
        assert!(
            matches!(&e, GitError::Invalid(m) if m.contains("_git")),
            "{e:?}"
        );
        let e = locate("file:///srv/git/app", Some("github")).err().unwrap();
        assert!(matches!(&e, GitError::Invalid(_)), "{e:?}");
        // A password in the URL is refused, and not repeated.
        let e = locate("https://bob:hunter2@github.com/acme/app", None)
            .err()
            .unwrap();
        assert!(
            matches!(&e, GitError::Invalid(m) if !m.contains("hunter2")),
            "{e:?}"
        );
    }

    #[test]
    fn the_operator_names_self_hosted_services() {
        let mut config = BTreeMap::new();
        config.insert(
            "Git.Corp:3000".to_string(),
            HostConfig {
                provider: "gitea".into(),
                api_url: None,
            },
        );
        config.insert(
            "code.corp".to_string(),
            HostConfig {
                provider: "bitbucket".into(),
                api_url: Some("http://127.0.0.1:9/2.0/".into()),
            },
        );
        let hosts = Hosts::new(&config).unwrap();
        let r = Repo::locate(&hosts, "http://git.corp:3000/acme/app.git", None, None).unwrap();
        assert_eq!(
            (r.provider, r.api.as_str()),
            (Provider::Gitea, "http://git.corp:3000/api/v1")
        );
        let r = Repo::locate(&hosts, "https://code.corp/ws/app", None, None).unwrap();
        assert_eq!(
            r.url(&["repositories", "ws", "app"]).as_str(),
            "http://127.0.0.1:9/2.0/repositories/ws/app"
        );
        config.insert(
            "bad".to_string(),
            HostConfig {
                provider: "svn".into(),
                api_url: None,
            },
        );
        assert!(Hosts::new(&config).unwrap_err().contains("svn"));
        config.remove("bad");
        config.insert(
            "bad".to_string(),
            HostConfig {
                provider: "gitea".into(),
                api_url: Some("https://u:p@x/api".into()),
            },
        );
        assert!(
            Hosts::new(&config)
                .unwrap_err()
                .contains("without credentials")
        );
    }

    /// Answers every connection with `head` and then `body`; returns its base URL.
    fn serve(head: &'static str, body: Vec<u8>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let head = head.replace("{len}", &body.len().to_string());
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        url
    }

    async fn read_from(url: &str, token: Option<&str>) -> Outcome<PullRequest> {
        let repo = Repo::locate(
            &Hosts::default(),
            &format!("{url}/acme/app.git"),
            Some("github"),
            token.map(str::to_string),
        )?;
        repo.pull_request(1).await
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n";

    #[tokio::test]
    async fn hostile_answers_are_refused_not_believed() {
        // Larger than the limit: refused, not held.
        let huge = format!("{{\"number\": 1, \"pad\": \"{}\"}}", "x".repeat(MAX_ANSWER));
        let e = read_from(&serve(OK, huge.into_bytes()), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, GitError::Failed(m) if m.contains("over 4 MiB")),
            "{e:?}"
        );
        // Not JSON, and JSON that is no pull request.
        let e = read_from(&serve(OK, b"<html>".to_vec()), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, GitError::Failed(m) if m.contains("not JSON")),
            "{e:?}"
        );
        let e = read_from(&serve(OK, b"[1, 2]".to_vec()), None)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, GitError::Failed(m) if m.contains("not a pull request")),
            "{e:?}"
        );
        // A redirect is not followed (it could carry the token elsewhere).
        let moved = "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/steal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let e = read_from(&serve(moved, Vec::new()), Some("s3cret-token"))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, GitError::Failed(m) if m.contains("302") && !m.contains("s3cret")),
            "{e:?}"
        );
        // An error answer's words are quoted, bounded and stripped of control characters.
        let refused = "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n";
        let body = format!(
            "{{\"message\": \"Bad credentials\\u001b[31m{}\"}}",
            "!".repeat(5000)
        );
        let e = read_from(&serve(refused, body.into_bytes()), Some("s3cret-token"))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, GitError::Denied(m) if m.contains("Bad credentials") && m.len() < 700 && !m.contains('\u{1b}') && !m.contains("s3cret")),
            "{e:?}"
        );
    }

    #[test]
    fn error_answers_are_quoted_short_and_plain() {
        let long = "x".repeat(1000) + "\u{1b}[2J";
        let s = said(&serde_json::json!({"message": long}));
        assert!(s.len() < 320 && !s.contains('\u{1b}'), "{s}");
        assert_eq!(
            said(&serde_json::json!({"error": {"message": "no"}})),
            ": \"no\""
        );
        assert_eq!(
            said(&serde_json::json!({"message": ["no branch", "no base"]})),
            ": \"no branch; no base\""
        );
        assert_eq!(said(&Value::Null), "");
    }
}
