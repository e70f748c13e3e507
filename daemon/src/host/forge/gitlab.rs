//! GitLab's REST API (`/api/v4`): merge requests of a project named by its path.

use reqwest::Method;
use serde_json::{Value, json};

use super::{
    GitError, MAX_PAGES, MergeOutcome, NewPullRequest, Outcome, PullRequest, Repo, items, number,
    required, text,
};

fn merge_requests(repo: &Repo, rest: &[&str]) -> reqwest::Url {
    // The project's path is one segment, its slashes encoded (`group%2Frepo`).
    let project = repo.segments.join("/");
    let mut segments = vec!["projects", project.as_str(), "merge_requests"];
    segments.extend_from_slice(rest);
    repo.url(&segments)
}

fn pull_request(v: &Value) -> Option<PullRequest> {
    let state = text(v, &["state"]).unwrap_or_default();
    let merged = state == "merged";
    Some(PullRequest {
        number: number(v, "iid")?,
        url: text(v, &["web_url"]).unwrap_or_default(),
        open: state == "opened" || state == "locked",
        merged,
        merge_commit: text(v, &["merge_commit_sha"])
            .or_else(|| text(v, &["squash_commit_sha"]))
            .or_else(|| text(v, &["sha"]).filter(|_| merged)),
        head_commit: text(v, &["sha"]),
    })
}

pub(super) async fn list(repo: &Repo, source: &str, target: &str) -> Outcome<Vec<PullRequest>> {
    let mut found = Vec::new();
    for page in 1..=MAX_PAGES {
        let mut url = merge_requests(repo, &[]);
        url.query_pairs_mut()
            .append_pair("state", "opened")
            .append_pair("source_branch", source)
            .append_pair("target_branch", target)
            .append_pair("per_page", "100")
            .append_pair("page", &page.to_string());
        let list = items(repo.get(url, "list merge requests").await?, None)?;
        let full = list.len() == 100;
        found.extend(list.iter().filter_map(|v| {
            let same = text(v, &["source_branch"]).as_deref() == Some(source)
                && text(v, &["target_branch"]).as_deref() == Some(target);
            pull_request(v).filter(|_| same)
        }));
        if !full {
            break;
        }
    }
    Ok(found)
}

pub(super) async fn create(repo: &Repo, new: &NewPullRequest) -> Outcome<PullRequest> {
    let mut body = json!({
        "source_branch": new.source,
        "target_branch": new.target,
        "title": new.title,
        "description": new.description,
    });
    if !new.labels.is_empty() {
        body["labels"] = json!(new.labels.join(","));
    }
    let (_, answer) = repo
        .call(
            Method::POST,
            merge_requests(repo, &[]),
            Some(&body),
            "open a merge request",
        )
        .await?;
    required(pull_request(&answer), "opening a merge request")
}

pub(super) async fn get(repo: &Repo, number: u64) -> Outcome<(PullRequest, Value)> {
    let n = number.to_string();
    let answer = repo
        .get(
            merge_requests(repo, &[&n]),
            &format!("read merge request {number}"),
        )
        .await?;
    let pr = required(pull_request(&answer), "reading a merge request")?;
    Ok((pr, answer))
}

pub(super) async fn merge(repo: &Repo, number: u64, method: Option<&str>) -> Outcome<MergeOutcome> {
    super::check_method(method, &["merge", "squash"], "GitLab")?;
    let (pr, answer) = get(repo, number).await?;
    if pr.merged {
        return Ok(MergeOutcome::Merged(pr));
    }
    if text(&answer, &["state"]).as_deref() != Some("opened") {
        return Err(GitError::Rejected(format!(
            "merge request {number} was closed without being merged"
        )));
    }
    let status = text(&answer, &["detailed_merge_status"]).unwrap_or_default();
    let draft = answer.get("draft").and_then(Value::as_bool) == Some(true);
    if draft || status != "mergeable" {
        return Ok(MergeOutcome::NotReady(format!(
            "GitLab says its merge status is {:?}",
            if draft { "draft" } else { &status }
        )));
    }
    let body = if method == Some("squash") {
        json!({"squash": true})
    } else {
        json!({})
    };
    let n = number.to_string();
    let (_, answer) = repo
        .call(
            Method::PUT,
            merge_requests(repo, &[&n, "merge"]),
            Some(&body),
            &format!("merge merge request {number}"),
        )
        .await?;
    let pr = required(pull_request(&answer), "merging a merge request")?;
    if pr.merged {
        Ok(MergeOutcome::Merged(pr))
    } else {
        Ok(MergeOutcome::Merged(get(repo, number).await?.0))
    }
}
