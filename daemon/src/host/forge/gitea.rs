//! Gitea's REST API (`/api/v1`, also Forgejo's): pulls, labels by ID, merges.

use reqwest::Method;
use serde_json::{Value, json};

use super::{
    GitError, MAX_PAGES, MergeOutcome, NewPullRequest, Outcome, PullRequest, Repo, items, number,
    required, text,
};

fn under<'a>(repo: &'a Repo, rest: &[&'a str]) -> reqwest::Url {
    let mut segments = vec!["repos", &repo.segments[0], &repo.segments[1]];
    segments.extend_from_slice(rest);
    repo.url(&segments)
}

fn pull_request(v: &Value) -> Option<PullRequest> {
    let merged = v.get("merged").and_then(Value::as_bool) == Some(true);
    Some(PullRequest {
        number: number(v, "number")?,
        url: text(v, &["html_url"]).unwrap_or_default(),
        open: text(v, &["state"]).as_deref() == Some("open"),
        merged,
        merge_commit: text(v, &["merge_commit_sha"]).filter(|_| merged),
        head_commit: text(v, &["head", "sha"]),
    })
}

/// Every open pull request, `page` by `page`.
async fn open(repo: &Repo) -> Outcome<Vec<Value>> {
    let mut all = Vec::new();
    for page in 1..=MAX_PAGES {
        let mut url = under(repo, &["pulls"]);
        url.query_pairs_mut()
            .append_pair("state", "open")
            .append_pair("limit", "50")
            .append_pair("page", &page.to_string());
        let list = items(repo.get(url, "list pull requests").await?, None)?;
        let full = list.len() == 50;
        all.extend(list);
        if !full {
            break;
        }
    }
    Ok(all)
}

pub(super) async fn list(repo: &Repo, source: &str, target: &str) -> Outcome<Vec<PullRequest>> {
    Ok(open(repo)
        .await?
        .iter()
        .filter(|v| {
            text(v, &["head", "ref"]).as_deref() == Some(source)
                && text(v, &["base", "ref"]).as_deref() == Some(target)
        })
        .filter_map(pull_request)
        .collect())
}

/// Gitea labels pull requests by label ID: the repository's labels, by name.
async fn label_ids(repo: &Repo, names: &[String]) -> Outcome<Vec<u64>> {
    let mut known = Vec::new();
    for page in 1..=MAX_PAGES {
        let mut url = under(repo, &["labels"]);
        url.query_pairs_mut()
            .append_pair("limit", "50")
            .append_pair("page", &page.to_string());
        let list = items(repo.get(url, "list labels").await?, None)?;
        let full = list.len() == 50;
        known.extend(
            list.iter()
                .filter_map(|l| Some((text(l, &["name"])?, number(l, "id")?))),
        );
        if !full {
            break;
        }
    }
    names
        .iter()
        .map(|name| {
            known
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, id)| *id)
                .ok_or_else(|| {
                    GitError::Invalid(format!(
                        "the repository has no label {name:?}; Gitea labels pull requests only with labels that exist"
                    ))
                })
        })
        .collect()
}

pub(super) async fn create(repo: &Repo, new: &NewPullRequest) -> Outcome<PullRequest> {
    let labels = if new.labels.is_empty() {
        Vec::new()
    } else {
        label_ids(repo, &new.labels).await?
    };
    let body = json!({
        "title": new.title,
        "head": new.source,
        "base": new.target,
        "body": new.description,
        "labels": labels,
    });
    let (_, answer) = repo
        .call(
            Method::POST,
            under(repo, &["pulls"]),
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
            under(repo, &["pulls", &n]),
            &format!("read pull request {number}"),
        )
        .await?;
    let pr = required(pull_request(&answer), "reading a pull request")?;
    Ok((pr, answer))
}

pub(super) async fn merge(repo: &Repo, number: u64, method: Option<&str>) -> Outcome<MergeOutcome> {
    const METHODS: &[&str] = &[
        "merge",
        "rebase",
        "rebase-merge",
        "squash",
        "fast-forward-only",
    ];
    super::check_method(method, METHODS, "Gitea")?;
    let (pr, answer) = get(repo, number).await?;
    if pr.merged {
        return Ok(MergeOutcome::Merged(pr));
    }
    if !pr.open {
        return Err(GitError::Rejected(format!(
            "pull request {number} was closed without being merged"
        )));
    }
    let draft = answer.get("draft").and_then(Value::as_bool) == Some(true);
    let mergeable = answer.get("mergeable").and_then(Value::as_bool) == Some(true);
    if draft || !mergeable {
        return Ok(MergeOutcome::NotReady(
            if draft {
                "it is a draft"
            } else {
                "Gitea says it is not mergeable"
            }
            .into(),
        ));
    }
    let n = number.to_string();
    repo.call(
        Method::POST,
        under(repo, &["pulls", &n, "merge"]),
        Some(&json!({"Do": method.unwrap_or("merge")})),
        &format!("merge pull request {number}"),
    )
    .await?;
    let (pr, _) = get(repo, number).await?;
    if pr.merged {
        Ok(MergeOutcome::Merged(pr))
    } else {
        Err(GitError::Rejected(format!(
            "Gitea did not merge pull request {number}"
        )))
    }
}
