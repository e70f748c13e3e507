//! Bitbucket Cloud's REST API (`https://api.bitbucket.org/2.0`): pull requests of a workspace's
//! repository. Its answers abbreviate commit hashes; the merge commit is looked up in full.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    GitError, MAX_PAGES, MergeOutcome, NewPullRequest, Outcome, PullRequest, Repo, items, number,
    required, text,
};

fn under<'a>(repo: &'a Repo, rest: &[&'a str]) -> reqwest::Url {
    let mut segments = vec!["repositories", &repo.segments[0], &repo.segments[1]];
    segments.extend_from_slice(rest);
    repo.url(&segments)
}

fn pull_request(v: &Value) -> Option<PullRequest> {
    let state = text(v, &["state"]).unwrap_or_default();
    Some(PullRequest {
        number: number(v, "id")?,
        url: text(v, &["links", "html", "href"]).unwrap_or_default(),
        open: state == "OPEN",
        merged: state == "MERGED",
        merge_commit: text(v, &["merge_commit", "hash"]),
        head_commit: text(v, &["source", "commit", "hash"]),
    })
}

/// `pr` with its merge commit's full hash (Bitbucket answers with 12 characters).
async fn full_hash(repo: &Repo, mut pr: PullRequest) -> Outcome<PullRequest> {
    if let Some(short) = pr.merge_commit.as_deref().filter(|h| h.len() < 40) {
        let short = short.to_string();
        let answer = repo
            .get(
                under(repo, &["commit", &short]),
                &format!("read commit {short}"),
            )
            .await?;
        pr.merge_commit = text(&answer, &["hash"]);
    }
    Ok(pr)
}

pub(super) async fn list(repo: &Repo, source: &str, target: &str) -> Outcome<Vec<PullRequest>> {
    let mut found = Vec::new();
    for page in 1..=MAX_PAGES {
        let mut url = under(repo, &["pullrequests"]);
        url.query_pairs_mut()
            .append_pair("state", "OPEN")
            .append_pair("pagelen", "50")
            .append_pair("page", &page.to_string());
        let answer = repo.get(url, "list pull requests").await?;
        let more = answer.get("next").is_some_and(|n| !n.is_null());
        found.extend(items(answer, Some("values"))?.iter().filter_map(|v| {
            let same = text(v, &["source", "branch", "name"]).as_deref() == Some(source)
                && text(v, &["destination", "branch", "name"]).as_deref() == Some(target);
            pull_request(v).filter(|_| same)
        }));
        if !more {
            break;
        }
    }
    Ok(found)
}

pub(super) async fn create(repo: &Repo, new: &NewPullRequest) -> Outcome<PullRequest> {
    let body = json!({
        "type": "pullrequest",
        "title": new.title,
        "description": new.description,
        "source": {"branch": {"name": new.source}},
        "destination": {"branch": {"name": new.target}},
    });
    let (_, answer) = repo
        .call(
            Method::POST,
            under(repo, &["pullrequests"]),
            Some(&body),
            "open a pull request",
        )
        .await?;
    required(pull_request(&answer), "opening a pull request")
}

pub(super) async fn get(repo: &Repo, number: u64) -> Outcome<(PullRequest, Value)> {
    let n = number.to_string();
    let answer = repo
        .get(
            under(repo, &["pullrequests", &n]),
            &format!("read pull request {number}"),
        )
        .await?;
    let pr = required(pull_request(&answer), "reading a pull request")?;
    Ok((full_hash(repo, pr).await?, answer))
}

pub(super) async fn merge(repo: &Repo, number: u64, method: Option<&str>) -> Outcome<MergeOutcome> {
    const METHODS: &[&str] = &[
        "merge_commit",
        "squash",
        "fast_forward",
        "squash_fast_forward",
        "rebase_fast_forward",
        "rebase_merge",
    ];
    super::check_method(method, METHODS, "Bitbucket")?;
    let (pr, answer) = get(repo, number).await?;
    if pr.merged {
        return Ok(MergeOutcome::Merged(pr));
    }
    if !pr.open {
        return Err(GitError::Rejected(format!(
            "pull request {number} was closed without being merged ({})",
            text(&answer, &["state"]).unwrap_or_default()
        )));
    }
    if answer.get("draft").and_then(Value::as_bool) == Some(true) {
        return Ok(MergeOutcome::NotReady("it is a draft".into()));
    }
    let mut body = json!({"type": "pullrequestMergeParameters"});
    if let Some(m) = method {
        body["merge_strategy"] = json!(m);
    }
    let n = number.to_string();
    let (status, answer) = repo
        .call(
            Method::POST,
            under(repo, &["pullrequests", &n, "merge"]),
            Some(&body),
            &format!("merge pull request {number}"),
        )
        .await?;
    if status == StatusCode::ACCEPTED {
        return Err(GitError::Failed(format!(
            "Bitbucket accepted the merge of pull request {number} to finish later; wait for it with git-wait-for-pr"
        )));
    }
    let pr = required(pull_request(&answer), "merging a pull request")?;
    if !pr.merged {
        return Err(GitError::Rejected(format!(
            "Bitbucket did not merge pull request {number}"
        )));
    }
    Ok(MergeOutcome::Merged(full_hash(repo, pr).await?))
}
