//! Azure DevOps' REST API (`dev.azure.com`, `ORG.visualstudio.com`, and Azure DevOps Server at
//! `HOST/COLLECTION`): pull requests of `ORG/PROJECT/_git/REPO`, version 7.1.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::{
    GitError, MergeOutcome, NewPullRequest, Outcome, PullRequest, Repo, items, number, required,
    text,
};

const API_VERSION: &str = "7.1";

/// (organisation or collection, project, repository) of the repository's URL.
pub(super) fn parts(repo: &Repo) -> Option<(String, String, String)> {
    let s = &repo.segments;
    let host = repo.web.host_str().unwrap_or_default();
    match (host.strip_suffix(".visualstudio.com"), s.as_slice()) {
        (Some(org), [project, git, name]) if git == "_git" => {
            Some((org.to_string(), project.clone(), name.clone()))
        }
        // The legacy `DefaultCollection` segment.
        (Some(org), [_, project, git, name]) if git == "_git" => {
            Some((org.to_string(), project.clone(), name.clone()))
        }
        (None, [org, project, git, name]) if git == "_git" => {
            Some((org.clone(), project.clone(), name.clone()))
        }
        _ => None,
    }
}

fn pull_requests(repo: &Repo, rest: &[&str]) -> reqwest::Url {
    let (org, project, name) = parts(repo).unwrap_or_default();
    let mut segments = vec![
        org.as_str(),
        project.as_str(),
        "_apis",
        "git",
        "repositories",
        name.as_str(),
        "pullrequests",
    ];
    segments.extend_from_slice(rest);
    let mut url = repo.url(&segments);
    url.query_pairs_mut()
        .append_pair("api-version", API_VERSION);
    url
}

fn pull_request(repo: &Repo, v: &Value) -> Option<PullRequest> {
    let status = text(v, &["status"]).unwrap_or_default();
    let number = number(v, "pullRequestId")?;
    let merged = status == "completed";
    Some(PullRequest {
        number,
        url: format!("{}/pullrequest/{number}", repo.web),
        open: status == "active",
        merged,
        merge_commit: text(v, &["lastMergeCommit", "commitId"]).filter(|_| merged),
        head_commit: text(v, &["lastMergeSourceCommit", "commitId"]),
    })
}

pub(super) async fn list(repo: &Repo, source: &str, target: &str) -> Outcome<Vec<PullRequest>> {
    let (source_ref, target_ref) = (
        format!("refs/heads/{source}"),
        format!("refs/heads/{target}"),
    );
    let mut url = pull_requests(repo, &[]);
    url.query_pairs_mut()
        .append_pair("searchCriteria.status", "active")
        .append_pair("searchCriteria.sourceRefName", &source_ref)
        .append_pair("searchCriteria.targetRefName", &target_ref)
        .append_pair("$top", "500");
    let answer = repo.get(url, "list pull requests").await?;
    Ok(items(answer, Some("value"))?
        .iter()
        .filter(|v| {
            text(v, &["sourceRefName"]).as_deref() == Some(&source_ref)
                && text(v, &["targetRefName"]).as_deref() == Some(&target_ref)
        })
        .filter_map(|v| pull_request(repo, v))
        .collect())
}

pub(super) async fn create(repo: &Repo, new: &NewPullRequest) -> Outcome<PullRequest> {
    let labels: Vec<Value> = new.labels.iter().map(|l| json!({"name": l})).collect();
    let body = json!({
        "sourceRefName": format!("refs/heads/{}", new.source),
        "targetRefName": format!("refs/heads/{}", new.target),
        "title": new.title,
        "description": new.description,
        "labels": labels,
    });
    let (_, answer) = repo
        .call(
            Method::POST,
            pull_requests(repo, &[]),
            Some(&body),
            "open a pull request",
        )
        .await?;
    required(pull_request(repo, &answer), "opening a pull request")
}

pub(super) async fn get(repo: &Repo, number: u64) -> Outcome<(PullRequest, Value)> {
    let n = number.to_string();
    let answer = repo
        .get(
            pull_requests(repo, &[&n]),
            &format!("read pull request {number}"),
        )
        .await?;
    let pr = required(pull_request(repo, &answer), "reading a pull request")?;
    Ok((pr, answer))
}

pub(super) async fn merge(repo: &Repo, number: u64, method: Option<&str>) -> Outcome<MergeOutcome> {
    const METHODS: &[&str] = &["noFastForward", "squash", "rebase", "rebaseMerge"];
    super::check_method(method, METHODS, "Azure DevOps")?;
    let (pr, answer) = get(repo, number).await?;
    let status = text(&answer, &["status"]).unwrap_or_default();
    match status.as_str() {
        "completed" => return Ok(MergeOutcome::Merged(pr)),
        "abandoned" => {
            return Err(GitError::Rejected(format!(
                "pull request {number} was abandoned"
            )));
        }
        "active" => {}
        other => {
            return Ok(MergeOutcome::NotReady(format!(
                "Azure DevOps says its status is {other:?}"
            )));
        }
    }
    if answer.get("isDraft").and_then(Value::as_bool) == Some(true) {
        return Ok(MergeOutcome::NotReady("it is a draft".into()));
    }
    let merge_status = text(&answer, &["mergeStatus"]).unwrap_or_default();
    if merge_status == "conflicts" {
        return Err(GitError::Rejected(format!(
            "pull request {number} has conflicts with its target branch"
        )));
    }
    if merge_status != "succeeded" {
        return Ok(MergeOutcome::NotReady(format!(
            "Azure DevOps says its merge status is {merge_status:?}"
        )));
    }
    let mut body = json!({
        "status": "completed",
        "lastMergeSourceCommit": answer.get("lastMergeSourceCommit").cloned().unwrap_or(Value::Null),
    });
    if let Some(m) = method {
        body["completionOptions"] = json!({"mergeStrategy": m});
    }
    let n = number.to_string();
    repo.call(
        Method::PATCH,
        pull_requests(repo, &[&n]),
        Some(&body),
        &format!("complete pull request {number}"),
    )
    .await?;
    // Azure DevOps completes a pull request in the background.
    for _ in 0..10 {
        let (pr, _) = get(repo, number).await?;
        if pr.merged {
            return Ok(MergeOutcome::Merged(pr));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(MergeOutcome::NotReady(
        "Azure DevOps has not completed it yet".into(),
    ))
}
