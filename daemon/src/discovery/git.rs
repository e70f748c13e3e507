//! Git discovery: which commits of a subscribed repository are candidates for Freight, newest
//! (or best) first, as Kargo's `NewestFromBranch`, `SemVer`, `Lexical` and `NewestTag`.
//!
//! An unchanged repository costs one round trip: the remote's refs are listed first (the
//! `git ls-remote` equivalent) and compared with what the last discovery observed; only when they
//! moved is the repository's bare mirror under the data dir fetched (incrementally) and walked.
//! This is blocking libgit2 work: callers run it on a blocking thread.

use std::path::{Path, PathBuf};

use git2::{Direction, FetchOptions, Oid, Repository, Sort};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha1::{Digest, Sha1};

use crate::host::git::{GitAccess, callbacks, check_url, error_text, message};
use crate::resource::semver::{Constraint, parse_version};
use crate::resource::urls::normalize_git;
use crate::resource::{CommitSelectionStrategy, GitSubscription};
use crate::rules::expr::{self, Scope};

/// One candidate commit, as Kargo's `DiscoveredCommit`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredCommit {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The first line of the message.
    pub subject: String,
    pub author: String,
    pub committer: String,
    /// The tag's date (annotated tags) or the commit's, RFC 3339.
    pub creator_date: String,
}

/// What one subscription's discovery found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitResult {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    /// The remote refs the selection depended on (`ref=id`), to skip the next fetch when they
    /// have not moved.
    #[serde(default)]
    pub observed_refs: Vec<String>,
    pub commits: Vec<DiscoveredCommit>,
}

fn time(t: git2::Time) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.seconds().max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn person(sig: git2::Signature<'_>) -> String {
    format!(
        "{} <{}>",
        sig.name().unwrap_or(""),
        sig.email().unwrap_or("")
    )
}

fn subject(text: Option<&str>) -> String {
    text.unwrap_or("").lines().next().unwrap_or("").to_string()
}

/// The bare mirrors of Git repositories under the data dir, one per normalised URL, reused
/// between discoveries; owned by the Discovery and shared with its blocking threads.
#[derive(Debug)]
pub struct Mirrors {
    root: PathBuf,
    /// One lock per mirror directory (a std mutex: taken on blocking threads, held for a fetch
    /// and walk).
    locks:
        std::sync::Mutex<std::collections::HashMap<PathBuf, std::sync::Arc<std::sync::Mutex<()>>>>,
}

impl Mirrors {
    pub fn new(root: PathBuf) -> Mirrors {
        Mirrors {
            root,
            locks: Default::default(),
        }
    }

    /// Where a repository's mirror lives.
    fn path(&self, url: &str) -> PathBuf {
        let digest = Sha1::digest(normalize_git(url).as_bytes());
        let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
        self.root.join(format!("{hex}.git"))
    }

    /// The lock of the mirror at `path`.
    fn lock(&self, path: &Path) -> std::sync::Arc<std::sync::Mutex<()>> {
        let mut table = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table.entry(path.to_path_buf()).or_default().clone()
    }
}

/// A path filter: exact path (a directory covers what is below it), `glob:` or `regex:`.
pub(crate) struct PathFilter(Vec<regex::Regex>);

impl PathFilter {
    pub(crate) fn new(patterns: &[String]) -> Result<PathFilter, String> {
        let mut out = Vec::new();
        for p in patterns {
            let re = if let Some(re) = p
                .strip_prefix("regex:")
                .or_else(|| p.strip_prefix("regexp:"))
            {
                regex::Regex::new(re).map_err(|e| format!("path filter {p:?}: {e}"))?
            } else if let Some(glob) = p.strip_prefix("glob:") {
                crate::resource::glob_to_regex(glob)?
            } else {
                let plain = p.trim_start_matches("./").trim_end_matches('/');
                regex::Regex::new(&format!("^{}(/.*)?$", regex::escape(plain)))
                    .expect("an escaped path is a regex")
            };
            out.push(re);
        }
        Ok(PathFilter(out))
    }

    fn any(&self, path: &str) -> bool {
        self.0.iter().any(|re| re.is_match(path))
    }

    /// Whether `path` counts under these includes (all paths, when there are none) and
    /// `exclude`.
    pub(crate) fn admits(&self, exclude: &PathFilter, path: &str) -> bool {
        (self.0.is_empty() || self.any(path)) && !exclude.any(path)
    }
}

/// Whether a commit changes a path that is included (everything, without includes) and not
/// excluded.
fn touches(
    repo: &Repository,
    commit: &git2::Commit<'_>,
    include: &PathFilter,
    exclude: &PathFilter,
) -> Result<bool, git2::Error> {
    if include.0.is_empty() && exclude.0.is_empty() {
        return Ok(true);
    }
    let tree = commit.tree()?;
    let parent = commit.parents().next().map(|p| p.tree()).transpose()?;
    let diff = repo.diff_tree_to_tree(parent.as_ref(), Some(&tree), None)?;
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            let Some(path) = file.path().and_then(|p| p.to_str()) else {
                continue;
            };
            if (include.0.is_empty() || include.any(path)) && !exclude.any(path) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn filter_expression(code: &str, variables: Map<String, Value>) -> Result<bool, String> {
    let scope = Scope {
        variables,
        // Dates are dates, as in Kargo: `commitDate.After(date('2025-01-01'))`.
        dates: &["commitDate", "creatorDate"],
        ..Scope::default()
    };
    match expr::eval_expression(expr::condition_code(code), &scope) {
        Ok(Value::Bool(b)) => Ok(b),
        Ok(Value::Null) => Ok(false),
        Ok(Value::String(s)) => Ok(!s.is_empty() && s != "false"),
        Ok(Value::Number(n)) => Ok(n.as_f64() != Some(0.0)),
        Ok(other) => Ok(!other.is_null()),
        Err(e) => Err(format!("expressionFilter {code:?}: {e}")),
    }
}

/// A remote's refs, `(name, id)`, and its default branch.
struct RemoteRefs {
    refs: Vec<(String, Oid)>,
    default_branch: Option<String>,
}

/// Lists the remote's refs (one round trip).
fn list_remote(url: &str, access: &GitAccess) -> Result<RemoteRefs, String> {
    let credential = access.credentials.as_ref().and_then(|c| c.lookup(url));
    let mut remote =
        git2::Remote::create_detached(url).map_err(|e| format!("{url}: {}", e.message()))?;
    let connection = remote
        .connect_auth(
            Direction::Fetch,
            Some(callbacks(credential, url, access.known_hosts.as_deref())),
            None,
        )
        .map_err(|e| format!("cannot list the refs of {url}: {}", message(&e)))?;
    let refs = connection
        .list()
        .map_err(|e| format!("cannot list the refs of {url}: {}", message(&e)))?
        .iter()
        .map(|h| (h.name().to_string(), h.oid()))
        .collect();
    let default = connection.default_branch().ok().and_then(|b| {
        b.as_str()
            .map(|s| s.trim_start_matches("refs/heads/").to_string())
    });
    Ok(RemoteRefs {
        refs,
        default_branch: default,
    })
}

fn fetch(
    mirror: &Path,
    url: &str,
    refspecs: &[String],
    access: &GitAccess,
) -> Result<Repository, String> {
    let repo = match Repository::open_bare(mirror) {
        Ok(repo) => repo,
        Err(_) => {
            std::fs::create_dir_all(mirror)
                .map_err(|e| format!("cannot create {}: {e}", mirror.display()))?;
            Repository::init_bare(mirror)
                .map_err(|e| format!("cannot create {}: {}", mirror.display(), e.message()))?
        }
    };
    let credential = access.credentials.as_ref().and_then(|c| c.lookup(url));
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks(credential, url, access.known_hosts.as_deref()));
    options.download_tags(git2::AutotagOption::None);
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| e.message().to_string())?;
    remote
        .fetch(refspecs, Some(&mut options), None)
        .map_err(|e| format!("cannot fetch {url}: {}", message(&e)))?;
    drop(remote);
    Ok(repo)
}

/// Discovers the candidate commits of one subscription. `previous` is the last result: when the
/// remote's relevant refs have not moved, it is returned as it is, without a fetch.
pub fn discover(
    sub: &GitSubscription,
    access: &GitAccess,
    mirrors: &Mirrors,
    previous: Option<&GitResult>,
) -> Result<GitResult, String> {
    let url = sub.repo_url.as_str();
    check_url(access, url).map_err(|e| error_text(&e).to_string())?;
    let RemoteRefs {
        refs,
        default_branch,
    } = list_remote(url, access)?;
    let limit = sub.discovery_limit.clamp(1, 100) as usize;
    let allow: Vec<regex::Regex> = sub
        .allow_tags_regexes
        .iter()
        .filter_map(|r| regex::Regex::new(r).ok())
        .collect();
    let ignore: Vec<regex::Regex> = sub
        .ignore_tags_regexes
        .iter()
        .filter_map(|r| regex::Regex::new(r).ok())
        .collect();
    let tag_wanted = |tag: &str| {
        (allow.is_empty() || allow.iter().any(|r| r.is_match(tag)))
            && !ignore.iter().any(|r| r.is_match(tag))
    };

    let by_branch = sub.commit_selection_strategy == CommitSelectionStrategy::NewestFromBranch;
    let branch = match (&sub.branch, by_branch) {
        (Some(b), _) => b.clone(),
        (None, _) => default_branch.clone().unwrap_or_else(|| "main".into()),
    };
    let mut observed: Vec<String> = if by_branch {
        let name = format!("refs/heads/{branch}");
        let Some((_, id)) = refs.iter().find(|(n, _)| *n == name) else {
            return Err(format!("{url} has no branch {branch}"));
        };
        vec![format!("{name}={id}")]
    } else {
        refs.iter()
            .filter(|(n, _)| n.starts_with("refs/tags/") && !n.ends_with("^{}"))
            .filter(|(n, _)| tag_wanted(n.trim_start_matches("refs/tags/")))
            .map(|(n, id)| format!("{n}={id}"))
            .collect()
    };
    observed.sort();
    if let Some(previous) =
        previous.filter(|p| p.observed_refs == observed && p.repo_url == sub.repo_url)
    {
        return Ok(previous.clone());
    }

    let mirror = mirrors.path(url);
    // Warehouses that subscribe to the same repository share its mirror: one fetch and walk at
    // a time (concurrent fetches collide on Git's ref lock files).
    let lock = mirrors.lock(&mirror);
    let _held = lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let refspecs = if by_branch {
        vec![format!("+refs/heads/{branch}:refs/heads/{branch}")]
    } else {
        vec!["+refs/tags/*:refs/tags/*".to_string()]
    };
    let repo = fetch(&mirror, url, &refspecs, access)?;
    let include = PathFilter::new(&sub.include_paths)?;
    let exclude = PathFilter::new(&sub.exclude_paths)?;
    let git = |e: git2::Error| format!("{url}: {}", e.message());
    let mut commits = Vec::new();
    if by_branch {
        let since = match &sub.since {
            Some(s) => Some(
                humantime::parse_rfc3339_weak(s)
                    .map_err(|e| format!("since {s:?}: {e}"))?
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
            ),
            None => None,
        };
        let head = repo
            .refname_to_id(&format!("refs/heads/{branch}"))
            .map_err(git)?;
        let mut walk = repo.revwalk().map_err(git)?;
        walk.set_sorting(Sort::TIME | Sort::TOPOLOGICAL)
            .map_err(git)?;
        walk.push(head).map_err(git)?;
        for id in walk {
            let commit = repo.find_commit(id.map_err(git)?).map_err(git)?;
            if since.is_some_and(|s| commit.time().seconds() < s) {
                break;
            }
            if !touches(&repo, &commit, &include, &exclude).map_err(git)? {
                continue;
            }
            let found = DiscoveredCommit {
                id: commit.id().to_string(),
                branch: Some(branch.clone()),
                tag: None,
                subject: subject(commit.message()),
                author: person(commit.author()),
                committer: person(commit.committer()),
                creator_date: time(commit.time()),
            };
            if let Some(code) = &sub.expression_filter {
                let vars = json!({"id": found.id, "commitDate": found.creator_date, "author": found.author,
                    "committer": found.committer, "subject": found.subject});
                if !filter_expression(code, vars.as_object().cloned().unwrap_or_default())? {
                    continue;
                }
            }
            commits.push(found);
            if commits.len() >= limit {
                break;
            }
        }
    } else {
        let constraint = match (&sub.semver_constraint, sub.commit_selection_strategy) {
            (Some(c), CommitSelectionStrategy::SemVer) if !c.is_empty() => {
                Some(Constraint::parse(c).map_err(|e| format!("semverConstraint {c:?}: {}", e.0))?)
            }
            _ => None,
        };
        let mut tags = Vec::new();
        for name in repo.tag_names(None).map_err(git)?.iter().flatten() {
            if !tag_wanted(name) {
                continue;
            }
            let version = match sub.commit_selection_strategy {
                CommitSelectionStrategy::SemVer => match parse_version(name, sub.strict_semvers) {
                    Some(v) if constraint.as_ref().is_none_or(|c| c.matches(&v)) => Some(v),
                    _ => continue,
                },
                _ => None,
            };
            let object = repo
                .revparse_single(&format!("refs/tags/{name}"))
                .map_err(git)?;
            let commit = object.peel_to_commit().map_err(git)?;
            let (tagger, date, annotation) = match object.as_tag() {
                Some(tag) => (
                    tag.tagger().map(person).unwrap_or_default(),
                    tag.tagger().map_or(commit.time(), |t| t.when()),
                    tag.message().unwrap_or("").trim_end().to_string(),
                ),
                None => (String::new(), commit.time(), String::new()),
            };
            let found = DiscoveredCommit {
                id: commit.id().to_string(),
                branch: None,
                tag: Some(name.to_string()),
                subject: subject(commit.message()),
                author: person(commit.author()),
                committer: person(commit.committer()),
                creator_date: time(date),
            };
            if let Some(code) = &sub.expression_filter {
                let vars = json!({"tag": name, "id": found.id, "creatorDate": found.creator_date, "author": found.author,
                    "committer": found.committer, "subject": found.subject, "tagger": tagger, "annotation": annotation});
                if !filter_expression(code, vars.as_object().cloned().unwrap_or_default())? {
                    continue;
                }
            }
            tags.push((version, date.seconds(), found));
        }
        match sub.commit_selection_strategy {
            CommitSelectionStrategy::SemVer => tags.sort_by(|a, b| b.0.cmp(&a.0)),
            CommitSelectionStrategy::Lexical => tags.sort_by(|a, b| b.2.tag.cmp(&a.2.tag)),
            _ => tags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.2.tag.cmp(&a.2.tag))),
        }
        commits = tags.into_iter().take(limit).map(|(_, _, c)| c).collect();
    }
    Ok(GitResult {
        repo_url: sub.repo_url.clone(),
        observed_refs: observed,
        commits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expression_filters_read_commit_and_tag_dates_as_dates() {
        let vars = |date: &str| {
            json!({"commitDate": date, "creatorDate": date, "subject": "fix"})
                .as_object()
                .cloned()
                .unwrap()
        };
        let newer = "commitDate.After(date('2025-01-01')) && creatorDate.Year() == 2025";
        assert_eq!(
            filter_expression(newer, vars("2025-06-01T00:00:00Z")),
            Ok(true)
        );
        assert_eq!(
            filter_expression(newer, vars("2024-12-31T23:59:59Z")),
            Ok(false)
        );
        let err =
            filter_expression("subject.Year() > 1", vars("2025-06-01T00:00:00Z")).unwrap_err();
        assert!(
            err.starts_with("expressionFilter \"subject.Year() > 1\""),
            "{err}"
        );
    }
}
