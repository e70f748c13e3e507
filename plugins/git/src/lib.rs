//! Git steps, as Kargo's: `git-clone`, `git-clear`, `git-commit`, `git-tag`, `git-push`,
//! `github-push` (through GitHub's API, which signs the commits), and the
//! pull request steps `git-open-pr`, `git-wait-for-pr`, `git-merge-pr` (the hosting service's API
//! is called by the host, with the repository's token).
//!
//! Repository work happens on the host through the `git` capability: credentials never enter
//! the sandbox, and the repository itself (objects, refs, config) stays outside the work
//! directory, so a work tree here has no `.git`. Clearing a work tree is plain file work.

use dray_sdk::git::{
    self, CloneOptions, CloneScope, GitError, MergeOutcome, Opened, PullRequest,
    PullRequestOptions, PushTarget, Signature,
};
use dray_sdk::{Capability, Step, StepContext, StepError, StepKind, StepResult};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The plugin's step kinds (or verifiers): exported by `plugins/steps` with the other built-ins.
pub struct Git;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Author {
    name: String,
    email: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Checkout {
    path: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    commit: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    create: bool,
    #[serde(default)]
    from_freight: bool,
    #[serde(default)]
    from_origin: Option<Origin>,
    #[serde(default, rename = "as")]
    alias: Option<String>,
    #[serde(default)]
    sparse: Vec<String>,
}

#[derive(Deserialize)]
struct Origin {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CloneConfig {
    #[serde(rename = "repoURL")]
    repo_url: String,
    checkout: Vec<Checkout>,
    #[serde(default)]
    author: Option<Author>,
    #[serde(default)]
    depth: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommitConfig {
    path: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    message_from_steps: Vec<String>,
    /// Deprecated in Kargo; the committer comes from `git-clone`'s `author`.
    #[serde(default)]
    author: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TagConfig {
    path: String,
    tag: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushConfig {
    path: String,
    #[serde(default)]
    target_branch: Option<String>,
    #[serde(default)]
    generate_target_branch: bool,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    max_attempts: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenPrConfig {
    #[serde(rename = "repoURL")]
    repo_url: String,
    source_branch: String,
    target_branch: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrConfig {
    #[serde(rename = "repoURL")]
    repo_url: String,
    pr_number: Value,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    poll_interval: Option<String>,
    #[serde(default)]
    merge_method: Option<String>,
    #[serde(default)]
    wait: bool,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

fn path_schema(what: &str) -> Value {
    json!({"type": "string", "minLength": 1, "description": what})
}

fn describe_kinds() -> Vec<StepKind> {
    let author = json!({
        "type": "object",
        "description": "Who commits in this work tree (the daemon's default author otherwise)",
        "required": ["name", "email"],
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "email": {"type": "string"},
            "signingKey": {"type": "string", "description": "Accepted for Kargo compatibility; commits are not signed yet"}
        }
    });
    let one_ref = json!({"enum": [null, ""]});
    let provider = json!({
        "enum": ["azure", "bitbucket", "gitea", "github", "gitlab"],
        "description": "The hosting service; told by the repository's host when omitted"
    });
    let insecure =
        json!({"type": "boolean", "description": "Refused: the host always verifies TLS"});
    let repo_url = json!({"type": "string", "minLength": 1, "description": "The repository; the token is the password of the git Secret matching it"});
    let pr_number = json!({"type": "integer", "minimum": 1, "description": "The pull request's number (GitLab: the merge request's IID)"});
    vec![
        dray_sdk::kind(
            "git-clone",
            "Clones a repository and checks out branches, commits or tags into paths of the work directory",
            json!({
                "type": "object",
                "required": ["repoURL", "checkout"],
                "additionalProperties": false,
                "properties": {
                    "repoURL": {"type": "string", "minLength": 1, "description": "The repository to clone; credentials come from git Secrets matching it"},
                    "author": author,
                    "insecureSkipTLSVerify": {"type": "boolean"},
                    "recurseSubmodules": {"type": "boolean", "description": "Accepted for Kargo's manifests; submodules are not checked out"},
                    "blobless": {"type": "boolean", "description": "Accepted for Kargo's manifests: clones already share one copy of each repository (the daemon's Git cache), fetched once"},
                    "depth": {"type": "integer", "minimum": 1, "maximum": 1000000, "description": "Dray: only the newest N commits of history (a shallow clone); commits, rebases and pushes work as usual"},
                    "checkout": {
                        "type": "array",
                        "minItems": 1,
                        "description": "One work tree per entry",
                        "items": {
                            "type": "object",
                            "required": ["path"],
                            "additionalProperties": false,
                            "properties": {
                                "path": path_schema("Where to check out, inside the work directory"),
                                "branch": {"type": "string", "description": "A branch (the default branch when branch, commit and tag are all absent)"},
                                "commit": {"type": "string", "description": "A commit ID"},
                                "tag": {"type": "string"},
                                "create": {"type": "boolean", "description": "Start an empty orphan branch when the branch does not exist"},
                                "fromFreight": {"type": "boolean", "description": "Check out the commit of this repository that the Freight carries"},
                                "fromOrigin": {"type": "object", "required": ["name"], "properties": {"kind": {"type": "string"}, "name": {"type": "string"}}},
                                "as": {"type": "string", "description": "The key of this checkout in the `commits` output (the path otherwise)"},
                                "sparse": {"type": "array", "maxItems": 256, "items": {"type": "string", "minLength": 1, "maxLength": 4096}, "description": "Check out only these directories or files (from the repository's root; no patterns); commits keep every other file as it was"}
                            },
                            "oneOf": [
                                {"properties": {"branch": one_ref, "commit": one_ref, "tag": one_ref}},
                                {"required": ["branch"], "properties": {"branch": {"minLength": 1}, "commit": one_ref, "tag": one_ref}},
                                {"required": ["commit"], "properties": {"commit": {"minLength": 1}, "branch": one_ref, "tag": one_ref}},
                                {"required": ["tag"], "properties": {"tag": {"minLength": 1}, "branch": one_ref, "commit": one_ref}}
                            ]
                        }
                    }
                }
            }),
            &[Capability::Git],
        ),
        dray_sdk::kind(
            "git-clear",
            "Removes everything in a work tree, to replace its contents",
            json!({
                "type": "object",
                "required": ["path"],
                "additionalProperties": false,
                "properties": {"path": path_schema("The work tree to clear")}
            }),
            &[],
        ),
        dray_sdk::kind(
            "git-commit",
            "Commits every change in a work tree; outputs `commit` (HEAD when there was nothing to commit)",
            json!({
                "type": "object",
                "required": ["path"],
                "additionalProperties": false,
                "properties": {
                    "path": path_schema("The work tree"),
                    "message": {"type": "string", "minLength": 1, "description": "The commit message"},
                    "messageFromSteps": {"type": "array", "items": {"type": "string"}, "description": "Aliases of earlier steps whose `commitMessage` outputs make the message (Kargo's older form)"},
                    "author": author
                },
                "anyOf": [{"required": ["message"]}, {"required": ["messageFromSteps"]}]
            }),
            &[Capability::Git],
        ),
        dray_sdk::kind(
            "git-tag",
            "Tags HEAD of a work tree; outputs `commit`",
            json!({
                "type": "object",
                "required": ["path", "tag"],
                "additionalProperties": false,
                "properties": {
                    "path": path_schema("The work tree"),
                    "tag": {"type": "string", "minLength": 1},
                    "message": {"type": "string", "minLength": 1, "description": "Makes an annotated tag"},
                    "force": {"type": "boolean", "description": "Move an existing tag of that name"}
                }
            }),
            &[Capability::Git],
        ),
        dray_sdk::kind(
            "git-push",
            "Pushes a work tree's HEAD to a branch (or a tag), integrating remote changes when the push is rejected; outputs `branch`, `commit`, `commitURL`",
            json!({
                "type": "object",
                "required": ["path"],
                "additionalProperties": false,
                "properties": {
                    "path": path_schema("The work tree"),
                    "targetBranch": {"type": "string", "description": "The branch to update (the checked-out branch otherwise)"},
                    "generateTargetBranch": {"type": "boolean", "description": "Push to a new branch named after the promotion"},
                    "tag": {"type": "string", "description": "Push this tag instead of a branch"},
                    "force": {"type": "boolean", "description": "Overwrite the remote branch's history"},
                    "maxAttempts": {"type": "integer", "minimum": 1, "maximum": 100, "description": "Pushes tried, each after integrating the remote's new commits (default 10)"},
                    "provider": {"enum": ["azure", "bitbucket", "gitea", "github", "gitlab"]}
                },
                "not": {"anyOf": [
                    {"required": ["targetBranch", "tag"], "properties": {"targetBranch": {"minLength": 1}, "tag": {"minLength": 1}}},
                    {"required": ["generateTargetBranch", "targetBranch"], "properties": {"generateTargetBranch": {"const": true}, "targetBranch": {"minLength": 1}}},
                    {"required": ["generateTargetBranch", "tag"], "properties": {"generateTargetBranch": {"const": true}, "tag": {"minLength": 1}}},
                    {"required": ["force", "tag"], "properties": {"force": {"const": true}, "tag": {"minLength": 1}}}
                ]}
            }),
            &[Capability::Git],
        ),
        dray_sdk::kind(
            "github-push",
            "Pushes a work tree's HEAD to a branch through GitHub's API, which re-creates the commits so GitHub signs them (shown as verified); outputs `branch`, `commit`, `commitURL`",
            json!({
                "type": "object",
                "required": ["path"],
                "additionalProperties": false,
                "properties": {
                    "path": path_schema("The work tree (cloned from GitHub)"),
                    "targetBranch": {"type": "string", "description": "The branch to update (the checked-out branch otherwise)"},
                    "generateTargetBranch": {"type": "boolean", "description": "Push to a new branch named after the promotion (forced)"},
                    "force": {"type": "boolean", "description": "Overwrite the branch's history"},
                    "maxAttempts": {"type": "integer", "minimum": 1, "maximum": 100, "description": "Attempts, each after integrating the branch's new commits (default 10)"},
                    "insecureSkipTLSVerify": insecure
                },
                "not": {"required": ["generateTargetBranch", "targetBranch"], "properties": {"generateTargetBranch": {"const": true}, "targetBranch": {"minLength": 1}}}
            }),
            &[Capability::Git],
        ),
        dray_sdk::kind(
            "git-open-pr",
            "Opens a pull request from sourceBranch to targetBranch on the repository's hosting service (GitHub, GitLab, Gitea, Bitbucket, Azure DevOps), unless one is open for the same head; outputs `pr` {id, url}",
            json!({
                "type": "object",
                "required": ["repoURL", "sourceBranch", "targetBranch"],
                "additionalProperties": false,
                "properties": {
                    "repoURL": repo_url,
                    "sourceBranch": {"type": "string", "minLength": 1, "description": "The branch with the changes (pushed before, e.g. by git-push)"},
                    "targetBranch": {"type": "string", "minLength": 1, "description": "The branch to merge into; it must exist"},
                    "title": {"type": "string", "description": "The first line of the source head's commit message when omitted"},
                    "description": {"type": "string", "description": "The rest of that message when omitted"},
                    "labels": {"type": "array", "items": {"type": "string", "minLength": 1}},
                    "provider": provider,
                    "insecureSkipTLSVerify": insecure,
                    "createTargetBranch": {"type": "boolean", "description": "Deprecated in Kargo; ignored"}
                }
            }),
            &[Capability::Git],
        ),
        dray_sdk::kind(
            "git-wait-for-pr",
            "Waits until a pull request is closed: succeeds when it was merged (outputs `commit`, the merge commit, and `pr` {id, url, open, merged}), fails for good when it was closed without merging",
            json!({
                "type": "object",
                "required": ["repoURL", "prNumber"],
                "additionalProperties": false,
                "properties": {
                    "repoURL": repo_url,
                    "prNumber": pr_number,
                    "provider": provider,
                    "pollInterval": {"type": "string", "description": "How often to look (Go duration, default 30s)"},
                    "insecureSkipTLSVerify": insecure
                }
            }),
            &[Capability::Git],
        ),
        dray_sdk::kind(
            "git-merge-pr",
            "Merges a pull request once it is mergeable; outputs `commit`, the merge commit",
            json!({
                "type": "object",
                "required": ["repoURL", "prNumber"],
                "additionalProperties": false,
                "properties": {
                    "repoURL": repo_url,
                    "prNumber": pr_number,
                    "provider": provider,
                    "mergeMethod": {"type": "string", "minLength": 1, "description": "The service's merge method (GitHub: merge, squash, rebase; GitLab: merge, squash; …); the repository's default when omitted"},
                    "wait": {"type": "boolean", "description": "Wait while it is not mergeable yet, instead of failing"},
                    "pollInterval": {"type": "string", "description": "How often to look while waiting (Go duration, default 10s)"},
                    "insecureSkipTLSVerify": insecure
                }
            }),
            &[Capability::Git],
        ),
    ]
}

fn git_error(e: GitError) -> StepError {
    match e {
        GitError::Denied(m) | GitError::NotFound(m) | GitError::Invalid(m) => {
            StepError::Terminal(m)
        }
        GitError::Rejected(m) | GitError::Failed(m) => StepError::Retryable(m),
    }
}

/// Compares repository URLs as Kargo's `NormalizeGit` does, loosely: case, `.git` and a
/// trailing slash do not matter.
fn same_repo(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s.trim().trim_end_matches('/').to_lowercase();
        s.strip_suffix(".git").map(str::to_string).unwrap_or(s)
    };
    norm(a) == norm(b)
}

/// The commit of `repo_url` carried by the Freight being promoted (or by the Freight from
/// `origin`).
fn freight_commit(
    context: &StepContext,
    repo_url: &str,
    origin: Option<&str>,
) -> Result<String, StepError> {
    context
        .freight
        .iter()
        .filter(|f| origin.is_none_or(|o| f.origin == o))
        .flat_map(|f| f.commits.iter())
        .find(|c| same_repo(&c.repo_url, repo_url))
        .map(|c| c.id.clone())
        .ok_or_else(|| {
            StepError::InvalidConfig(format!(
                "fromFreight: the Freight carries no commit of {repo_url}{}",
                origin.map(|o| format!(" from {o}")).unwrap_or_default()
            ))
        })
}

fn git_clone(context: &StepContext, config: CloneConfig) -> Result<StepResult, StepError> {
    let mut commits = Map::new();
    let author = config.author.map(|a| Signature {
        name: a.name,
        email: a.email,
    });
    for checkout in &config.checkout {
        let mut commit = checkout.commit.clone().filter(|c| !c.is_empty());
        if checkout.from_freight || checkout.from_origin.is_some() {
            let origin = checkout.from_origin.as_ref().map(|o| o.name.as_str());
            commit = Some(freight_commit(context, &config.repo_url, origin)?);
        }
        let options = CloneOptions {
            branch: checkout.branch.clone().filter(|b| !b.is_empty()),
            create: checkout.create,
            commit,
            tag: checkout.tag.clone().filter(|t| !t.is_empty()),
            author: author.clone(),
        };
        let scope = CloneScope {
            depth: config.depth,
            paths: checkout.sparse.clone(),
        };
        git::clone_scoped(&config.repo_url, &checkout.path, &options, &scope).map_err(git_error)?;
        let head = git::head(&checkout.path).ok();
        let key = checkout
            .alias
            .clone()
            .unwrap_or_else(|| checkout.path.clone());
        commits.insert(key, head.map(Value::String).unwrap_or(Value::Null));
    }
    Ok(dray_sdk::succeeded(json!({ "commits": commits })))
}

fn git_clear(path: &str) -> Result<StepResult, StepError> {
    let entries = std::fs::read_dir(path)
        .map_err(|e| StepError::Terminal(format!("cannot read {path}: {e} (clone it first)")))?;
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(dray_sdk::retryable)?;
        let p = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let gone = if is_dir {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        gone.map_err(|e| StepError::Retryable(format!("cannot remove {}: {e}", p.display())))?;
        removed += 1;
    }
    dray_sdk::info!("cleared {path}: removed {removed} entries");
    Ok(dray_sdk::succeeded(json!({})))
}

fn git_commit(context: &StepContext, config: CommitConfig) -> Result<StepResult, StepError> {
    if config.author.is_some() {
        dray_sdk::warn!(
            "git-commit: `author` is deprecated and ignored; set it on git-clone, which configures the work tree"
        );
    }
    let message = match config.message {
        Some(m) => m,
        None => {
            let outputs: Map<String, Value> =
                serde_json::from_str(&context.outputs).unwrap_or_default();
            let parts: Vec<String> = config
                .message_from_steps
                .iter()
                .filter_map(|alias| {
                    outputs
                        .get(alias)?
                        .get("commitMessage")?
                        .as_str()
                        .map(str::to_string)
                })
                .collect();
            if parts.is_empty() {
                return Err(StepError::InvalidConfig(format!(
                    "messageFromSteps: none of {:?} has a commitMessage output",
                    config.message_from_steps
                )));
            }
            parts.join("\n\n")
        }
    };
    match git::commit(&config.path, &message).map_err(git_error)? {
        Some(id) => {
            let mut result = dray_sdk::succeeded(json!({ "commit": id }));
            result.message = Some(format!("committed {}", &id[..id.len().min(7)]));
            Ok(result)
        }
        None => {
            let head = git::head(&config.path).ok();
            dray_sdk::info!("nothing to commit in {}", config.path);
            Ok(dray_sdk::succeeded(json!({ "commit": head })))
        }
    }
}

/// The branch checked out in a work tree (the host keeps the repository; there is no `.git`).
fn current_branch(path: &str) -> Option<String> {
    git::inspect(path).ok()?.branch
}

/// A browsable URL of a commit, for HTTP(S) remotes hosted the usual way.
fn commit_url(repo_url: &str, id: &str) -> Option<String> {
    if !repo_url.starts_with("https://") && !repo_url.starts_with("http://") {
        return None;
    }
    let base = repo_url.trim_end_matches('/');
    let base = base.strip_suffix(".git").unwrap_or(base);
    Some(format!("{base}/commit/{id}"))
}

fn origin_url(path: &str) -> Option<String> {
    Some(git::inspect(path).ok()?.origin)
}

/// `generateTargetBranch`'s branch: named after the promotion (the step, outside one).
fn generated_branch(context: &StepContext) -> String {
    let name = if context.promotion.is_empty() {
        &context.step_alias
    } else {
        &context.promotion
    };
    format!("dray/promotion/{name}")
}

fn git_push(context: &StepContext, config: PushConfig) -> Result<StepResult, StepError> {
    let tag = config.tag.filter(|t| !t.is_empty());
    let branch = match (
        &tag,
        config.target_branch.filter(|b| !b.is_empty()),
        config.generate_target_branch,
    ) {
        (Some(_), _, _) => None,
        (None, Some(b), _) => Some(b),
        (None, None, true) => Some(generated_branch(context)),
        (None, None, false) => Some(current_branch(&config.path).ok_or_else(|| {
            StepError::InvalidConfig(format!(
                "{} has no branch checked out: set targetBranch",
                config.path
            ))
        })?),
    };
    let target = match (&tag, &branch) {
        (Some(t), _) => PushTarget::Tag(t.clone()),
        (None, Some(b)) => PushTarget::Branch(b.clone()),
        (None, None) => unreachable!("a branch is chosen whenever there is no tag"),
    };
    let attempts = config.max_attempts.unwrap_or(10).max(1);
    let mut attempt = 1;
    let id = loop {
        match git::push(&config.path, &target, config.force) {
            Ok(id) => break id,
            Err(GitError::Rejected(why)) if attempt < attempts && branch.is_some() => {
                dray_sdk::warn!(
                    "push {attempt}/{attempts} rejected ({why}); integrating the remote's changes"
                );
                git::rebase(&config.path, branch.as_deref().unwrap_or_default())
                    .map_err(git_error)?;
                attempt += 1;
            }
            Err(e) => return Err(git_error(e)),
        }
    };
    let url = origin_url(&config.path).and_then(|u| commit_url(&u, &id));
    let mut result = dray_sdk::succeeded(json!({
        "branch": branch,
        "tag": tag,
        "commit": id,
        "commitURL": url,
    }));
    result.message = Some(match (&branch, &tag) {
        (Some(b), _) => format!("pushed {} to {b}", &id[..id.len().min(7)]),
        (_, Some(t)) => format!("pushed tag {t}"),
        _ => String::new(),
    });
    Ok(result)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GithubPushConfig {
    path: String,
    #[serde(default)]
    target_branch: Option<String>,
    #[serde(default)]
    generate_target_branch: bool,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

fn github_push(context: &StepContext, config: GithubPushConfig) -> Result<StepResult, StepError> {
    no_insecure(config.insecure_skip_tls_verify)?;
    let (branch, force) = match (
        config.target_branch.filter(|b| !b.is_empty()),
        config.generate_target_branch,
    ) {
        (Some(b), _) => (Some(b), config.force),
        (None, true) => (Some(generated_branch(context)), true),
        (None, false) => (None, config.force),
    };
    let attempts = config.max_attempts.unwrap_or(10).max(1);
    let id =
        git::github_push(&config.path, branch.as_deref(), force, attempts).map_err(git_error)?;
    let branch = branch.or_else(|| current_branch(&config.path));
    let url = origin_url(&config.path).and_then(|u| commit_url(&u, &id));
    let mut result = dray_sdk::succeeded(json!({
        "branch": branch,
        "commit": id,
        "commitURL": url,
    }));
    result.message = Some(format!(
        "pushed {} to {} through GitHub's API",
        &id[..id.len().min(7)],
        branch.as_deref().unwrap_or("its branch")
    ));
    Ok(result)
}

fn no_insecure(insecure: bool) -> Result<(), StepError> {
    if insecure {
        return Err(StepError::InvalidConfig(
            "insecureSkipTLSVerify: the host always verifies TLS; add the service's CA to the host's trust store".into(),
        ));
    }
    Ok(())
}

/// `prNumber`: a number (an expression may make it `3.0` or `"3"`).
fn pr_number(config: &PrConfig) -> Result<u64, StepError> {
    let number = match &config.pr_number {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 1.0 && *f < 9e15)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    number.filter(|n| *n > 0).ok_or_else(|| {
        StepError::InvalidConfig(format!(
            "prNumber: {} is not a pull request number",
            config.pr_number
        ))
    })
}

/// `pollInterval`, or `default`, in whole seconds (at least one).
fn poll_seconds(text: Option<&str>, default: u32) -> Result<u32, StepError> {
    match text {
        None | Some("") => Ok(default),
        Some(t) => {
            let d = dray_sdk::duration(t, "pollInterval")?;
            Ok(u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1))
        }
    }
}

fn pr_output(pr: &PullRequest) -> Value {
    json!({"id": pr.number, "url": pr.url, "open": pr.open, "merged": pr.merged})
}

fn git_open_pr(config: OpenPrConfig) -> Result<StepResult, StepError> {
    no_insecure(config.insecure_skip_tls_verify)?;
    let options = PullRequestOptions {
        provider: config.provider.filter(|p| !p.is_empty()),
        source_branch: config.source_branch,
        target_branch: config.target_branch,
        title: config.title.filter(|t| !t.is_empty()),
        description: config.description.filter(|d| !d.is_empty()),
        labels: config.labels,
    };
    let (pr, how) = match git::open_pull_request(&config.repo_url, &options).map_err(git_error)? {
        Opened::Created(pr) => (pr, "opened"),
        Opened::Existing(pr) => (pr, "already open:"),
        Opened::NoChanges => {
            let mut result = dray_sdk::succeeded(json!({}));
            result.message = Some(format!(
                "{} and {} hold the same files: no pull request",
                options.source_branch, options.target_branch
            ));
            return Ok(result);
        }
    };
    let mut result = dray_sdk::succeeded(json!({"pr": {"id": pr.number, "url": pr.url}}));
    result.message = Some(format!("{how} pull request {} ({})", pr.number, pr.url));
    Ok(result)
}

fn git_wait_for_pr(config: PrConfig) -> Result<StepResult, StepError> {
    no_insecure(config.insecure_skip_tls_verify)?;
    let number = pr_number(&config)?;
    let poll = poll_seconds(config.poll_interval.as_deref(), 30)?;
    let provider = config.provider.filter(|p| !p.is_empty());
    let pr =
        git::get_pull_request(&config.repo_url, provider.as_deref(), number).map_err(git_error)?;
    if pr.open {
        let mut result = dray_sdk::running(
            poll,
            format!(
                "waiting for pull request {number} ({}) to be merged",
                pr.url
            ),
        );
        result.outputs = json!({"pr": pr_output(&pr)}).to_string();
        return Ok(result);
    }
    if !pr.merged {
        return Err(StepError::Terminal(format!(
            "pull request {number} ({}) was closed without being merged",
            pr.url
        )));
    }
    let mut result = dray_sdk::succeeded(json!({"pr": pr_output(&pr), "commit": pr.merge_commit}));
    result.message = Some(format!("pull request {number} was merged"));
    Ok(result)
}

fn git_merge_pr(config: PrConfig) -> Result<StepResult, StepError> {
    no_insecure(config.insecure_skip_tls_verify)?;
    let number = pr_number(&config)?;
    let poll = poll_seconds(config.poll_interval.as_deref(), 10)?;
    let provider = config.provider.filter(|p| !p.is_empty());
    let method = config.merge_method.filter(|m| !m.is_empty());
    let merged = git::merge_pull_request(
        &config.repo_url,
        provider.as_deref(),
        number,
        method.as_deref(),
    );
    match merged {
        Ok(MergeOutcome::Merged(pr)) => {
            let mut result = dray_sdk::succeeded(json!({"commit": pr.merge_commit}));
            result.message = Some(format!("merged pull request {number}"));
            Ok(result)
        }
        Ok(MergeOutcome::NotReady(why)) if config.wait => Ok(dray_sdk::running(
            poll,
            format!("pull request {number} cannot be merged yet: {why}"),
        )),
        Ok(MergeOutcome::NotReady(why)) => Err(StepError::Terminal(format!(
            "pull request {number} cannot be merged yet ({why}) and wait is not set"
        ))),
        // As Kargo: a failed merge is not retried (it may have half happened).
        Err(GitError::Rejected(m) | GitError::Failed(m)) => Err(StepError::Terminal(m)),
        Err(e) => Err(git_error(e)),
    }
}

impl Step for Git {
    fn describe() -> Vec<StepKind> {
        describe_kinds()
    }

    fn run(kind: String, context: StepContext, config: String) -> Result<StepResult, StepError> {
        match kind.as_str() {
            "git-clone" => git_clone(&context, dray_sdk::config(&config)?),
            "git-clear" => {
                #[derive(Deserialize)]
                struct Clear {
                    path: String,
                }
                git_clear(&dray_sdk::config::<Clear>(&config)?.path)
            }
            "git-commit" => git_commit(&context, dray_sdk::config(&config)?),
            "git-tag" => {
                let c: TagConfig = dray_sdk::config(&config)?;
                git::tag(&c.path, &c.tag, c.message.as_deref(), c.force).map_err(git_error)?;
                let head = git::head(&c.path).map_err(git_error)?;
                Ok(dray_sdk::succeeded(json!({ "commit": head })))
            }
            "git-push" => git_push(&context, dray_sdk::config(&config)?),
            "github-push" => github_push(&context, dray_sdk::config(&config)?),
            "git-open-pr" => git_open_pr(dray_sdk::config(&config)?),
            "git-wait-for-pr" => git_wait_for_pr(dray_sdk::config(&config)?),
            "git-merge-pr" => git_merge_pr(dray_sdk::config(&config)?),
            other => Err(StepError::InvalidConfig(format!(
                "the git plugin has no step {other:?}"
            ))),
        }
    }
}
