//! What a provider's webhook payload says: a Git push (repository URLs, ref, changed paths), a
//! pull request event, or pushed images. Pure functions of the headers and the parsed body, which
//! come from anyone who knows a receiver's URL: they index into the JSON and never fail, and
//! what they return is bounded by the body (at most [`super::MAX_BODY`]). Depends on nothing
//! but `http` and `serde_json`: the `webhook_payload` fuzz target includes it by path.

use http::HeaderMap;
use serde_json::Value;

/// A header's value, `""` when absent or not text.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// What a push said: the repository's URLs, the ref, and the paths it changed (empty: unknown).
pub struct Push {
    pub urls: Vec<String>,
    pub git_ref: String,
    pub paths: Vec<String>,
}

fn strings(v: &Value) -> impl Iterator<Item = String> + '_ {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
}

fn changed_paths(commits: &[&Value]) -> Vec<String> {
    let mut paths = Vec::new();
    for c in commits {
        for field in ["added", "modified", "removed"] {
            paths.extend(strings(&c[field]));
        }
    }
    paths
}

/// Reads a push out of a provider's payload; `None` for events that are not pushes.
pub fn push(kind: &str, headers: &HeaderMap, payload: &Value) -> Option<Push> {
    let url_fields = |repo: &Value, fields: &[&str]| -> Vec<String> {
        fields
            .iter()
            .filter_map(|f| repo[*f].as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    match kind {
        "github" | "gitea" => {
            let event = header(
                headers,
                if kind == "github" {
                    "x-github-event"
                } else {
                    "x-gitea-event"
                },
            );
            if event != "push" {
                return None;
            }
            let mut commits: Vec<&Value> = payload["commits"]
                .as_array()
                .map(|c| c.iter().collect())
                .unwrap_or_default();
            let paths = if commits.len() >= 2048 {
                Vec::new()
            } else {
                if payload["head_commit"].is_object() {
                    commits.push(&payload["head_commit"]);
                }
                changed_paths(&commits)
            };
            Some(Push {
                urls: url_fields(
                    &payload["repository"],
                    &["clone_url", "ssh_url", "html_url"],
                ),
                git_ref: payload["ref"].as_str().unwrap_or("").to_string(),
                paths,
            })
        }
        "gitlab" => {
            let event = header(headers, "x-gitlab-event");
            if event != "Push Hook" && event != "Tag Push Hook" {
                return None;
            }
            let commits: Vec<&Value> = payload["commits"]
                .as_array()
                .map(|c| c.iter().collect())
                .unwrap_or_default();
            Some(Push {
                urls: url_fields(
                    &payload["project"],
                    &["git_http_url", "git_ssh_url", "web_url"],
                ),
                git_ref: payload["ref"].as_str().unwrap_or("").to_string(),
                paths: changed_paths(&commits),
            })
        }
        "azure" => {
            // Azure DevOps (Azure Container Registry pushes are images, below).
            if payload["eventType"].as_str() != Some("git.push") {
                return None;
            }
            let resource = &payload["resource"];
            Some(Push {
                urls: url_fields(&resource["repository"], &["remoteUrl", "sshUrl"]),
                git_ref: resource["refUpdates"][0]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                paths: Vec::new(),
            })
        }
        "bitbucket" => {
            if header(headers, "x-event-key") != "repo:push" {
                return None;
            }
            let html = payload["repository"]["links"]["html"]["href"]
                .as_str()
                .unwrap_or("");
            let git_ref = payload["push"]["changes"][0]["new"]["name"]
                .as_str()
                .unwrap_or("");
            let kind = payload["push"]["changes"][0]["new"]["type"]
                .as_str()
                .unwrap_or("branch");
            Some(Push {
                urls: vec![html.to_string(), format!("{html}.git")],
                git_ref: if kind == "tag" {
                    format!("refs/tags/{git_ref}")
                } else {
                    format!("refs/heads/{git_ref}")
                },
                paths: Vec::new(),
            })
        }
        _ => None,
    }
}

/// Whether a delivery says a pull request changed (opened, reviewed, merged, closed…).
pub fn pull_request_event(kind: &str, headers: &HeaderMap, payload: &Value) -> bool {
    match kind {
        "github" => matches!(
            header(headers, "x-github-event"),
            "pull_request" | "pull_request_review"
        ),
        "gitea" => header(headers, "x-gitea-event").starts_with("pull_request"),
        "gitlab" => header(headers, "x-gitlab-event") == "Merge Request Hook",
        "bitbucket" => {
            let key = header(headers, "x-event-key");
            key.starts_with("pullrequest:") || key.starts_with("pr:")
        }
        "azure" => payload["eventType"]
            .as_str()
            .is_some_and(|e| e.starts_with("git.pullrequest.")),
        _ => false,
    }
}

/// The image repositories a registry's push event names; `None` for other events.
/// Artifactory's URL is `<host of jpd_origin>/<repo key, or the virtual repository>/<image>`.
pub fn image_push(kind: &str, payload: &Value, virtual_repo: Option<&str>) -> Option<Vec<String>> {
    match kind {
        "artifactory" => {
            if payload["event_type"].as_str() != Some("pushed") {
                return None;
            }
            let data = &payload["data"];
            let origin = payload["jpd_origin"].as_str().unwrap_or("");
            let host = origin
                .split_once("://")
                .map_or(origin, |(_, h)| h)
                .trim_end_matches('/');
            let repo = virtual_repo.or(data["repo_key"].as_str())?;
            let image = data["image_name"].as_str()?;
            Some(vec![format!("{host}/{repo}/{image}")])
        }
        "azure" => {
            // Azure Container Registry: `{"action": "push", "target": {"repository"},
            // "request": {"host"}}`.
            if payload["action"].as_str() != Some("push") {
                return None;
            }
            let host = payload["request"]["host"].as_str()?;
            let repo = payload["target"]["repository"].as_str()?;
            Some(vec![format!("{host}/{repo}")])
        }
        "dockerhub" => {
            let name = payload["repository"]["repo_name"].as_str()?;
            Some(vec![name.to_string()])
        }
        "quay" => {
            let url = payload["docker_url"].as_str()?;
            Some(vec![url.to_string()])
        }
        "harbor" => {
            if payload["type"].as_str() != Some("PUSH_ARTIFACT") {
                return None;
            }
            let urls: Vec<String> = payload["event_data"]["resources"]
                .as_array()?
                .iter()
                .filter_map(|r| r["resource_url"].as_str())
                .map(|u| u.split_once('@').map_or(u, |(repo, _)| repo).to_string())
                .collect();
            Some(urls)
        }
        _ => None,
    }
}
