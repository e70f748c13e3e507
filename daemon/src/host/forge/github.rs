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
