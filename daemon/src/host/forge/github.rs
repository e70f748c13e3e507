//! GitHub's REST API (github.com, `*.ghe.com`, GitHub Enterprise Server at `/api/v3`): pulls,
//! issue labels, merges.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    GitError, MAX_PAGES, MergeOutcome, NewPullRequest, Outcome, PullRequest, Repo, items, number,
    required, text,
};

fn pulls<'a>(repo: &'a Repo, rest: &[&'a str]) -> reqwest::Url {
    let mut segments = vec!["repos", &repo.segments[0], &repo.segments[1], "pulls"];
    segments.extend_from_slice(rest);
    repo.url(&segments)
}

fn pull_request(v: &Value) -> Option<PullRequest> {
    let merged = v.get("merged_at").is_some_and(|m| !m.is_null());
    Some(PullRequest {
        number: number(v, "number")?,
        url: text(v, &["html_url"]).unwrap_or_default(),
        open: text(v, &["state"]).as_deref() == Some("open"),
        merged,
        // GitHub names a test merge commit while the pull request is open.
        merge_commit: text(v, &["merge_commit_sha"]).filter(|_| merged),
        head_commit: text(v, &["head", "sha"]),
    })
}

pub(super) async fn list(repo: &Repo, source: &str, target: &str) -> Outcome<Vec<PullRequest>> {
    let mut found = Vec::new();
    for page in 1..=MAX_PAGES {
        let mut url = pulls(repo, &[]);
        url.query_pairs_mut()
            .append_pair("state", "open")
            .append_pair("head", &format!("{}:{source}", repo.segments[0]))
            .append_pair("base", target)
            .append_pair("per_page", "100")
            .append_pair("page", &page.to_string());
        let list = items(repo.get(url, "list pull requests").await?, None)?;
        let full = list.len() == 100;
        found.extend(list.iter().filter_map(|v| {
            let same = text(v, &["head", "ref"]).as_deref() == Some(source)
                && text(v, &["base", "ref"]).as_deref() == Some(target);
            pull_request(v).filter(|_| same)
        }));
        if !full {
            break;
        }
    }
    Ok(found)
}

pub(super) async fn create(repo: &Repo, new: &NewPullRequest) -> Outcome<PullRequest> {
    let body = json!({
        "title": new.title,
        "head": new.source,
        "base": new.target,
        "body": new.description,
        "maintainer_can_modify": false,
    });
    let (_, answer) = repo
        .call(
            Method::POST,
            pulls(repo, &[]),
            Some(&body),
            "open a pull request",
        )
        .await?;
    let pr = required(pull_request(&answer), "opening a pull request")?;
    if !new.labels.is_empty() {
        let n = pr.number.to_string();
        let url = repo.url(&[
            "repos",
            &repo.segments[0],
            &repo.segments[1],
            "issues",
            &n,
            "labels",
        ]);
        repo.call(
            Method::POST,
            url,
            Some(&json!({"labels": new.labels})),
            "label the pull request",
        )
        .await?;
    }
    Ok(pr)
}

pub(super) async fn get(repo: &Repo, number: u64) -> Outcome<(PullRequest, Value)> {
    let n = number.to_string();
    let answer = repo
        .get(pulls(repo, &[&n]), &format!("read pull request {number}"))
        .await?;
    let pr = required(pull_request(&answer), "reading a pull request")?;
    Ok((pr, answer))
}

pub(super) async fn merge(repo: &Repo, number: u64, method: Option<&str>) -> Outcome<MergeOutcome> {
    super::check_method(method, &["merge", "squash", "rebase"], "GitHub")?;
    let (pr, answer) = get(repo, number).await?;
    if pr.merged {
        return Ok(MergeOutcome::Merged(pr));
    }
    if !pr.open {
        return Err(GitError::Rejected(format!(
            "pull request {number} was closed without being merged"
        )));
    }
    let state = text(&answer, &["mergeable_state"]).unwrap_or_default();
    let mut policy_blocked = false;
    match state.as_str() {
        "clean" | "unstable" | "has_hooks" => {}
        "dirty" => {
            return Err(GitError::Rejected(format!(
                "pull request {number} has conflicts with its target branch"
            )));
        }
        "blocked" | "behind" => policy_blocked = true,
        "draft" | "unknown" | "" => {
            return Ok(MergeOutcome::NotReady(format!(
                "GitHub says its mergeable state is {:?}",
                if state.is_empty() {
                    "not known yet"
                } else {
                    &state
                }
            )));
        }
        _ => {
            let draft = answer.get("draft").and_then(Value::as_bool) == Some(true);
            let mergeable = answer.get("mergeable").and_then(Value::as_bool) == Some(true);
            if draft || !mergeable {
                return Ok(MergeOutcome::NotReady(format!(
                    "GitHub says its mergeable state is {state:?}"
                )));
            }
        }
    }
    let n = number.to_string();
    let body = match method {
        Some(m) => json!({"merge_method": m}),
        None => json!({}),
    };
    match repo
        .call(
            Method::PUT,
            pulls(repo, &[&n, "merge"]),
            Some(&body),
            &format!("merge pull request {number}"),
        )
        .await
    {
        Ok((_, answer)) if answer.get("merged").and_then(Value::as_bool) == Some(true) => {}
        Ok(_) => {
            return Err(GitError::Rejected(format!(
                "GitHub did not merge pull request {number}"
            )));
        }
        // 405: not mergeable right now (GitHub's words decide whether it may become so).
        Err(GitError::Failed(m)) if m.contains(&StatusCode::METHOD_NOT_ALLOWED.to_string()) => {
            let transient = if m.contains("not allowed") {
                false
            } else {
                m.contains("Base branch was modified")
                    || m.contains("Pull Request is not mergeable")
                    || policy_blocked
            };
            return if transient {
                Ok(MergeOutcome::NotReady(m))
            } else {
                Err(GitError::Rejected(m))
            };
        }
        Err(e) => return Err(e),
    }
    Ok(MergeOutcome::Merged(get(repo, number).await?.0))
}

/// What [`replay`] did.
pub enum Replayed {
    /// The branch already holds the commits.
    Identical,
    /// The branch now points at this commit, made by GitHub.
    Updated(String),
    /// The branch moved on (or is ahead): integrate its commits and try again.
    Behind(String),
}

/// The most commits one `github-push` replays (Kargo's `githubPush.maxRevisions`).
pub const MAX_REPLAYED: usize = 10;

fn git_url<'a>(repo: &'a Repo, rest: &[&'a str]) -> reqwest::Url {
    let mut segments = vec!["repos", &repo.segments[0], &repo.segments[1]];
    segments.extend_from_slice(rest);
    repo.url(&segments)
}

/// Kargo's `github-push`: re-creates the commits `head` has beyond `branch` (both already on
/// GitHub: `head` under a staging ref) through GitHub's Git data API, so GitHub makes and signs
/// them (they show as verified), then moves `branch` to the last one (creating it from `base`
/// when it does not exist). Each commit keeps its message and tree, and names its author in a
/// `Co-authored-by` trailer.
pub async fn replay(
    repo: &Repo,
    branch: &str,
    base_branch: &str,
    head: &str,
    force: bool,
) -> Outcome<Replayed> {
    let read_ref = |name: &str| {
        let mut segments = vec!["git", "ref", "heads"];
        segments.extend(name.split('/'));
        let url = git_url(repo, &segments);
        let what = format!("read branch {name}");
        async move {
            match repo.get(url, &what).await {
                Ok(v) => Ok(text(&v, &["object", "sha"])),
                Err(GitError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        }
    };
    let existing = read_ref(branch).await?;
    let base = match &existing {
        Some(sha) => sha.clone(),
        None => read_ref(base_branch).await?.ok_or_else(|| {
            GitError::NotFound(format!(
                "neither {branch} nor {base_branch} exists on GitHub"
            ))
        })?,
    };
    let range = format!("{base}...{head}");
    let mut url = git_url(repo, &["compare", &range]);
    url.query_pairs_mut().append_pair("per_page", "250");
    let comparison = repo.get(url, &format!("compare {range}")).await?;
    let status = text(&comparison, &["status"]).unwrap_or_default();
    match status.as_str() {
        "identical" if existing.is_some() => return Ok(Replayed::Identical),
        // A new branch at the base's commit: only the ref to create.
        "identical" => {}
        "ahead" => {}
        "behind" | "diverged" if force => {}
        "behind" | "diverged" => {
            return Ok(Replayed::Behind(format!(
                "{branch} on GitHub has commits the work tree lacks ({status})"
            )));
        }
        other => {
            return Err(GitError::Failed(format!(
                "GitHub compared {range} as {other:?}"
            )));
        }
    }
    let commits = comparison
        .get("commits")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if commits.len() > MAX_REPLAYED {
        return Err(GitError::Invalid(format!(
            "{} commits to push, more than the {MAX_REPLAYED} github-push replays; squash them, or use git-push",
            commits.len()
        )));
    }
    let mut parent = text(&comparison, &["merge_base_commit", "sha"]).unwrap_or(base.clone());
    let mut mapped: Vec<(String, String)> = Vec::new();
    for (i, c) in commits.iter().enumerate() {
        let (Some(sha), Some(tree)) = (text(c, &["sha"]), text(c, &["commit", "tree", "sha"]))
        else {
            return Err(GitError::Failed(format!(
                "commit {} of the range lacks its ID or tree",
                i + 1
            )));
        };
        let mut message = text(c, &["commit", "message"]).unwrap_or_default();
        if let (Some(name), Some(email)) = (
            text(c, &["commit", "author", "name"]),
            text(c, &["commit", "author", "email"]),
        ) {
            message = format!("{}\n\nCo-authored-by: {name} <{email}>", message.trim_end());
        }
        // A merge commit keeps its other parents (mapped when they were replayed too).
        let parents: Vec<String> = match c.get("parents").and_then(Value::as_array) {
            Some(list) if list.len() > 1 => list
                .iter()
                .filter_map(|p| text(p, &["sha"]))
                .map(|p| {
                    mapped
                        .iter()
                        .find(|(old, _)| *old == p)
                        .map_or(p.clone(), |(_, new)| new.clone())
                })
                .collect(),
            _ => vec![parent.clone()],
        };
        let (_, made) = repo
            .call(
                Method::POST,
                git_url(repo, &["git", "commits"]),
                Some(&json!({"message": message, "tree": tree, "parents": parents})),
                &format!("re-create commit {sha}"),
            )
            .await?;
        let new = text(&made, &["sha"]).ok_or_else(|| {
            GitError::Failed("GitHub's answer to a new commit names no commit".into())
        })?;
        mapped.push((sha, new.clone()));
        parent = new;
    }
    let moved = match existing {
        Some(_) => {
            let mut segments = vec!["git", "refs", "heads"];
            segments.extend(branch.split('/'));
            repo.call(
                Method::PATCH,
                git_url(repo, &segments),
                Some(&json!({"sha": parent, "force": force})),
                &format!("move {branch}"),
            )
            .await
        }
        None => {
            repo.call(
                Method::POST,
                git_url(repo, &["git", "refs"]),
                Some(&json!({"ref": format!("refs/heads/{branch}"), "sha": parent})),
                &format!("create {branch}"),
            )
            .await
        }
    };
    match moved {
        Ok(_) => Ok(Replayed::Updated(parent)),
        // 422: not a fast-forward any more (someone pushed meanwhile).
        Err(GitError::Failed(m)) if m.contains("422") => Ok(Replayed::Behind(m)),
        Err(e) => Err(e),
    }
}

/// Deletes a ref the push made (`refs/dray/staging/…`); a failure is only logged by the caller.
pub async fn delete_ref(repo: &Repo, reference: &str) -> Outcome<()> {
    let mut segments = vec!["git", "refs"];
    segments.extend(reference.trim_start_matches("refs/").split('/'));
    repo.call(
        Method::DELETE,
        git_url(repo, &segments),
        None,
        &format!("delete {reference}"),
    )
    .await
    .map(|_| ())
}
