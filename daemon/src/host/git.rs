//! The `dray:plugin/git` interface: Git on the host, with libgit2 (`git2`), for plugins
//! granted `git`.
//!
//! The guest names repositories by URL and work trees by paths inside its work directory; the
//! host resolves credentials for the URL ([`GitCredentials`]) and never hands them to the guest.
//!
//! **The repository itself is never in the guest's reach.** A clone's Git directory (objects,
//! refs, index, config) lives beside the work directory, in [`repositories_dir`], and the work
//! tree in the work directory has no `.git` at all. Everything libgit2 follows from a Git
//! directory (`core.worktree`, gitfiles, `commondir`, `objects/info/alternates`, `include.path`,
//! `url.*.insteadOf`, `remote.*.pushurl`, proxies, symlinks inside `.git`) is therefore written
//! by the host only, so a guest cannot send the host's commits, reads or credentials elsewhere.
//! A `.git` entry anywhere in a work tree is refused before any Git work on the work tree
//! (commit, rebase, tag, push), since libgit2 would open it as a nested repository; `head` and
//! `inspect` read only the host's repository and skip that walk.
//!
//! Paths are checked before any Git work: no `..`, and no symlink anywhere on the way (a guest
//! could plant one pointing out of the work directory). Local repositories (`file://` URLs and
//! plain paths) are refused unless the operator lists a directory that holds them
//! ([`GitAccess::local_roots`]): otherwise a step could copy any repository on the host into its
//! work directory. Credentials are looked up for the origin URL the host recorded at clone time,
//! the only URL the host ever contacts for that work tree. libgit2 blocks, so every call runs on
//! tokio's blocking pool.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use git2::{
    AutotagOption, BranchType, Cred, CredentialType, ErrorCode, FetchOptions, IndexAddOption,
    PushOptions, RemoteCallbacks, Repository, Signature,
};
use wasmtime::component::{HasSelf, Linker};

use crate::runtime::bindings::dray::plugin::git::{
    self, CloneOptions, CloneScope, GitError, MergeOutcome, Opened, PullRequest,
    PullRequestOptions, PushTarget, Signature as GuestSignature, WorkTree,
};
use crate::runtime::log::Source;
use crate::runtime::log::StepLog;

/// A credential for one repository, found by its URL.
#[derive(Clone, PartialEq, Eq)]
pub enum GitCredential {
    /// HTTPS basic auth (a password or a token); `from` names where it came from (e.g.
    /// `Secret shop/app-git`), for messages.
    Password {
        username: String,
        password: String,
        from: String,
    },
    /// An SSH private key (PEM or OpenSSH format).
    SshKey {
        username: String,
        key: String,
        from: String,
    },
}

impl GitCredential {
    /// Where the credential came from and whose it is, for messages (never the secret).
    fn describe(&self) -> String {
        match self {
            GitCredential::Password { username, from, .. }
            | GitCredential::SshKey { username, from, .. } => {
                format!("{from} (username {username})")
            }
        }
    }
}

impl std::fmt::Debug for GitCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitCredential::Password { username, .. } => write!(f, "Password({username}, ***)"),
            GitCredential::SshKey { username, .. } => write!(f, "SshKey({username}, ***)"),
        }
    }
}

/// Finds the credential for a repository URL (the daemon: `git` Secrets of the project, then
/// the shared namespace; tests: a fixed map).
pub trait GitCredentials: Send + Sync {
    fn lookup(&self, repo_url: &str) -> Option<GitCredential>;
}

/// What one step call may do with Git.
#[derive(Clone)]
pub struct GitAccess {
    pub credentials: Option<Arc<dyn GitCredentials>>,
    /// Directories under which local repositories (`file://` URLs, plain paths) may be cloned.
    pub local_roots: Vec<PathBuf>,
    /// The committer when the step names none (Kargo's default is `Kargo <no-reply@kargo.io>`).
    pub default_author: (String, String),
    /// The known-hosts file SSH remotes' host keys are checked against; `None`: libgit2 checks
    /// the daemon user's `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// The operator's self-hosted Git services (`[git-hosts]`), for pull requests.
    pub hosts: Arc<super::forge::Hosts>,
    /// Where clones share the objects of a repository ([`GitCache`]); `None`: each clone
    /// fetches everything itself.
    pub cache: Option<GitCache>,
    /// How a rejected push's work tree takes in the branch's new commits (`rebase`).
    pub push_integration: PushIntegration,
}

/// How `rebase` integrates a branch that moved on since the clone, before a push is tried
/// again: Kargo's push integration policy (its names, its default from 1.12), the operator's
/// `git-push-integration` setting. Kargo tells its rebase policies apart by whether replaying
/// would drop commit signatures; Dray signs no commits, so `AlwaysRebase` and `RebaseOrFail`
/// behave alike, and `RebaseOrMerge` falls back to merging where a commit conflicts when
/// replayed on its own but the whole of the work does not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub enum PushIntegration {
    /// Replay the local commits on top of the branch; a conflict rejects the push.
    AlwaysRebase,
    /// Replay them; where that conflicts, merge; where that conflicts too, reject.
    #[default]
    RebaseOrMerge,
    /// As `AlwaysRebase` (see above).
    RebaseOrFail,
    /// Never rewrite the local commits: a merge commit joins them to the branch.
    AlwaysMerge,
}

/// Copies of the repositories steps clone, kept across Promotions (the daemon's
/// `DATA_DIR/git-cache`): one bare repository per URL and credential. A clone first fetches
/// into the copy (only what it lacks travels, and always with the caller's credential, so a
/// caller that may not read the repository fails there whatever the copy holds), then borrows
/// its objects through `objects/info/alternates` (written by the host) and takes its branches
/// and tags: ten Stages cloning one GitOps repository download it once, and each clone writes
/// only its work tree. Objects are only ever added, never pruned, so a borrowing clone never
/// loses one; the directory may be removed while the daemon is stopped.
#[derive(Clone, Debug)]
pub struct GitCache {
    pub dir: PathBuf,
    /// The most one fetch into a copy may download (the work-directory quota's bytes): a clone
    /// that would pass it fails, as it would filling its work directory.
    pub max_fetch_bytes: u64,
}

impl Default for GitAccess {
    fn default() -> Self {
        GitAccess {
            credentials: None,
            local_roots: Vec::new(),
            default_author: ("Dray".into(), "no-reply@dray.dev".into()),
            known_hosts: None,
            hosts: Arc::default(),
            cache: None,
            push_integration: PushIntegration::default(),
        }
    }
}

impl std::fmt::Debug for GitAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAccess")
            .field("credentials", &self.credentials.is_some())
            .field("local_roots", &self.local_roots)
            .field("default_author", &self.default_author)
            .field("known_hosts", &self.known_hosts)
            .field("cache", &self.cache)
            .field("push_integration", &self.push_integration)
            .finish()
    }
}

type Outcome<T> = Result<T, GitError>;

/// Resolves a guest path (relative, or absolute in the guest's view where `/` is the work
/// directory) to a host path inside `workdir`, refusing `..` and symlinks on the way.
pub fn resolve(workdir: &Path, guest: &str) -> Outcome<PathBuf> {
    let invalid = |why: &str| GitError::Invalid(format!("path {guest:?} {why}"));
    let mut out = workdir.to_path_buf();
    for component in Path::new(guest).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => {
                out.push(part);
                if let Ok(meta) = std::fs::symlink_metadata(&out)
                    && meta.file_type().is_symlink()
                {
                    return Err(invalid(
                        "goes through a symbolic link, which git steps do not follow",
                    ));
                }
            }
            Component::ParentDir => {
                return Err(invalid(
                    "contains `..`; use a path inside the work directory",
                ));
            }
            Component::Prefix(_) => return Err(invalid("is not a work directory path")),
        }
    }
    if out == workdir {
        return Err(invalid(
            "is the work directory itself; name a directory inside it",
        ));
    }
    Ok(out)
}

/// The local directory a `file://` URL or plain path names, if it is one.
fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Some(PathBuf::from(rest));
    }
    if url.contains("://") || (url.contains('@') && url.contains(':')) {
        return None;
    }
    Some(PathBuf::from(url))
}

pub(crate) fn check_url(access: &GitAccess, url: &str) -> Outcome<()> {
    let Some(path) = local_path(url) else {
        return Ok(());
    };
    let canonical = std::fs::canonicalize(&path)
        .map_err(|_| GitError::NotFound(format!("repository {url:?} does not exist")))?;
    let allowed = access
        .local_roots
        .iter()
        .any(|root| std::fs::canonicalize(root).is_ok_and(|root| canonical.starts_with(root)));
    if allowed {
        Ok(())
    } else {
        Err(GitError::Denied(format!(
            "{url:?} is a repository on the host's file system, which steps may not read unless the operator allows its directory (git.local_roots in the daemon config)"
        )))
    }
}

/// Callbacks that answer libgit2's credential questions once with what [`GitAccess`] found,
/// and check an SSH remote's host key against `known_hosts` (if the operator named one).
pub(crate) fn callbacks<'a>(
    credential: Option<GitCredential>,
    url: &'a str,
    known_hosts: Option<&'a Path>,
) -> RemoteCallbacks<'a> {
    let mut asked = false;
    let mut cb = RemoteCallbacks::new();
    if let Some(file) = known_hosts {
        cb.certificate_check(move |cert, host| {
            // TLS certificates keep libgit2's own checks.
            let Some(hostkey) = cert.as_hostkey() else {
                return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
            };
            let key = hostkey
                .hostkey()
                .ok_or_else(|| git2::Error::from_str(&format!("{host} sent no SSH host key")))?;
            if super::known_hosts::verify(file, host, super::known_hosts::ssh_port(url), key) {
                Ok(git2::CertificateCheckStatus::CertificateOk)
            } else {
                Err(git2::Error::from_str("the SSH host key was refused"))
            }
        });
    }
    cb.credentials(move |_url, from_url, allowed| {
        if asked {
            let which = credential
                .as_ref()
                .map_or_else(|| "no credentials".to_string(), GitCredential::describe);
            return Err(git2::Error::from_str(&format!(
                "the remote refused the credentials for {url}: they came from {which}; check its username and password"
            )));
        }
        asked = true;
        match &credential {
            Some(GitCredential::Password {
                username, password, ..
            })
                if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
            {
                Cred::userpass_plaintext(username, password)
            }
            Some(GitCredential::SshKey { username, key, .. })
                if allowed.contains(CredentialType::SSH_KEY) =>
            {
                Cred::ssh_key_from_memory(from_url.unwrap_or(username), None, key, None)
            }
            _ if allowed.contains(CredentialType::USERNAME) => {
                Cred::username(from_url.unwrap_or("git"))
            }
            _ => Err(git2::Error::from_str(&format!(
                "{url} needs credentials and none match it: add a Secret labelled kargo.akuity.io/cred-type: git with repoURL, username and password"
            ))),
        }
    });
    cb
}

/// libgit2's message, with what to do when it refused an unknown SSH host key (it checked the
/// daemon user's `~/.ssh/known_hosts` because no `ssh-known-hosts` file is configured).
pub(crate) fn message(e: &git2::Error) -> String {
    let text = e.message();
    // Taken whatever the error, so a refusal never outlives the call that made it.
    let refusal = super::known_hosts::take_refusal();
    if !text.contains("unknown remote ssh hostkey") {
        text.to_string()
    } else if let Some(refusal) = refusal {
        refusal
    } else {
        format!(
            "{text}: the remote's SSH host key is not in the daemon user's ~/.ssh/known_hosts; add it there (`ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts`, after checking it) or name a known-hosts file with ssh-known-hosts in the config"
        )
    }
}

/// Maps a libgit2 error onto the guest's variants.
fn classify(what: &str, e: git2::Error) -> GitError {
    let message = format!("{what}: {}", message(&e));
    let text = e.message().to_lowercase();
    if e.code() == ErrorCode::Auth
        || text.contains("credentials")
        || text.contains("401")
        || text.contains("authentication")
    {
        GitError::Denied(message)
    } else if e.code() == ErrorCode::NotFastForward {
        GitError::Rejected(message)
    } else if e.code() == ErrorCode::NotFound || text.contains("404") {
        GitError::NotFound(message)
    } else {
        GitError::Failed(message)
    }
}

/// Where the host keeps the Git directories of the work trees in `workdir`: beside it (never
/// inside, where the guest could edit them). Whoever removes a work directory removes this too.
pub fn repositories_dir(workdir: &Path) -> PathBuf {
    // Resolved first: a work directory named `.` (or ending in `..`) must not put its
    // repositories inside itself.
    let workdir = std::fs::canonicalize(workdir)
        .or_else(|_| std::path::absolute(workdir))
        .unwrap_or_else(|_| workdir.to_path_buf());
    match workdir.file_name() {
        Some(name) => workdir.with_file_name(format!("{}.git-repos", name.to_string_lossy())),
        // The work directory is `/` (only `dray plugin run --workdir /` can ask for that).
        None => std::env::temp_dir().join("dray-root.git-repos"),
    }
}

/// The Git directory of the work tree at `relative` (a path inside `workdir`), in
/// [`repositories_dir`].
pub fn git_dir(workdir: &Path, relative: &Path) -> PathBuf {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(relative.to_string_lossy().as_bytes());
    repositories_dir(workdir).join(hex::encode(&digest[..16]))
}

/// Refuses a work tree that holds a `.git` entry (file, directory or link) anywhere: libgit2
/// would open it as a nested repository, which the guest controls.
fn check_tree(root: &Path, guest: &str) -> Outcome<()> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| GitError::Failed(format!("cannot read the work tree {guest:?}: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| {
                GitError::Failed(format!("cannot read the work tree {guest:?}: {e}"))
            })?;
            let name = entry.file_name();
            if name.to_string_lossy().eq_ignore_ascii_case(".git") {
                let at = entry.path();
                let at = at.strip_prefix(root).unwrap_or(&at);
                return Err(GitError::Invalid(format!(
                    "the work tree {guest:?} holds a .git entry at {}: the host keeps each clone's repository outside the work directory, and a .git inside it is refused; remove it",
                    at.display()
                )));
            }
            // A link is recorded as a link, never followed.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
        }
    }
    Ok(())
}

/// Whether an operation reads or writes the work tree (then it is checked first for `.git`
/// entries, a walk of the whole tree) or only the host's repository.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tree {
    Used,
    Untouched,
}

/// Opens the clone whose work tree is at `guest` (or the nearest enclosing clone, as `git`
/// finds a repository from a subdirectory), with the work tree pinned to that directory.
fn open(workdir: &Path, guest: &str, use_of_tree: Tree) -> Outcome<Repository> {
    let dir = resolve(workdir, guest)?;
    let mut relative = dir.strip_prefix(workdir).unwrap_or(&dir).to_path_buf();
    loop {
        let git_dir = git_dir(workdir, &relative);
        if git_dir.is_dir() {
            let tree = workdir.join(&relative);
            if !tree.is_dir() {
                return Err(GitError::NotFound(format!(
                    "the work tree of {guest:?} ({}) is gone",
                    relative.display()
                )));
            }
            if use_of_tree == Tree::Used {
                check_tree(&tree, guest)?;
            }
            let repo = Repository::open_bare(&git_dir)
                .map_err(|e| classify("cannot open the clone's repository", e))?;
            repo.set_workdir(&tree, false)
                .map_err(|e| classify("cannot open the clone's work tree", e))?;
            return Ok(repo);
        }
        if !relative.pop() || relative.as_os_str().is_empty() {
            return Err(GitError::NotFound(format!(
                "{guest:?} is not a Git work tree: clone into it first (git-clone)"
            )));
        }
    }
}

fn origin_credential(
    repo: &Repository,
    access: &GitAccess,
) -> Outcome<(String, Option<GitCredential>)> {
    let remote = repo
        .find_remote("origin")
        .map_err(|e| classify("the work tree has no origin", e))?;
    let url = remote.url().unwrap_or_default().to_string();
    let credential = access.credentials.as_ref().and_then(|c| c.lookup(&url));
    Ok((url, credential))
}

fn fetch(
    repo: &Repository,
    access: &GitAccess,
    url: &str,
    credential: Option<GitCredential>,
    refspecs: &[&str],
) -> Outcome<()> {
    fetch_bounded(repo, access, url, credential, refspecs, None, Depth::Keep)
}

/// How much history a fetch asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Depth {
    /// What the repository's shallowness implies: everything new since what it has.
    Keep,
    /// Only the newest N commits of each ref (a shallow fetch).
    Newest(u32),
    /// Everything, making a shallow repository whole.
    Unshallow,
}

/// libgit2's `GIT_FETCH_DEPTH_UNSHALLOW`.
const UNSHALLOW: i32 = i32::MAX;

/// [`fetch`], stopped once it has downloaded more than `limit` bytes; it also prunes the refs
/// the remote no longer has when a limit is given (a cache's copy follows the remote).
fn fetch_bounded(
    repo: &Repository,
    access: &GitAccess,
    url: &str,
    credential: Option<GitCredential>,
    refspecs: &[&str],
    limit: Option<u64>,
    depth: Depth,
) -> Outcome<()> {
    // An anonymous remote of the URL the credential was looked up for: nothing in the
    // repository's config (a push URL, say) can send the credential elsewhere.
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| classify(&format!("{url:?} is not a usable remote URL"), e))?;
    let mut callbacks = callbacks(credential, url, access.known_hosts.as_deref());
    let passed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(limit) = limit {
        let passed = passed.clone();
        callbacks.transfer_progress(move |progress| {
            let over = progress.received_bytes() as u64 > limit;
            passed.store(over, std::sync::atomic::Ordering::Relaxed);
            !over
        });
    }
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks)
        .download_tags(AutotagOption::All);
    if limit.is_some() {
        options.prune(git2::FetchPrune::On);
    }
    match depth {
        Depth::Keep => {}
        Depth::Newest(n) => {
            options.depth(i32::try_from(n).unwrap_or(UNSHALLOW - 1).min(UNSHALLOW - 1));
        }
        Depth::Unshallow => {
            options.depth(UNSHALLOW);
        }
    }
    remote
        .fetch(refspecs, Some(&mut options), None)
        .map_err(|e| {
            if passed.load(std::sync::atomic::Ordering::Relaxed) {
                GitError::Failed(format!(
                    "fetching {url} passed {} bytes (the work directory's quota) and was stopped",
                    limit.unwrap_or_default()
                ))
            } else {
                classify(&format!("cannot fetch from {url}"), e)
            }
        })
}

/// The directory of `url`'s copy in the cache, for the credential it is fetched with: copies
/// are not shared across credentials (two projects' Secrets), only among their users.
fn cache_dir(cache: &GitCache, url: &str, credential: Option<&GitCredential>) -> PathBuf {
    use sha2::Digest;
    let who = credential.map_or_else(|| "anonymous".to_string(), GitCredential::describe);
    let digest = sha2::Sha256::digest(format!("{url}\n{who}").as_bytes());
    cache
        .dir
        .join(format!("{}.git", hex::encode(&digest[..16])))
}

/// One lock per copy in the cache: one fetch into it at a time (readers need none: a fetch
/// only adds objects).
fn cache_lock(dir: &Path) -> Arc<std::sync::Mutex<()>> {
    static LOCKS: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<PathBuf, Arc<std::sync::Mutex<()>>>>,
    > = std::sync::LazyLock::new(Default::default);
    LOCKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(dir.to_path_buf())
        .or_default()
        .clone()
}

/// Brings `url`'s branches (as `origin/*`) and tags into the new clone `repo` through the
/// cache ([`GitCache`]).
fn fetch_through_cache(
    repo: &Repository,
    access: &GitAccess,
    cache: &GitCache,
    url: &str,
    credential: Option<GitCredential>,
    depth: Option<u32>,
) -> Outcome<()> {
    let dir = cache_dir(cache, url, credential.as_ref());
    let lock = cache_lock(&dir);
    let _held = lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let copy = match Repository::open_bare(&dir) {
        Ok(copy) => copy,
        Err(_) => {
            // Absent, or not a repository any more: started again.
            let _ = std::fs::remove_dir_all(&dir);
            Repository::init_bare(&dir)
                .map_err(|e| classify("cannot create the repository's copy in the cache", e))?
        }
    };
    // A shallow clone keeps a new (or shallow) copy shallow; a copy with the whole history
    // already has what any depth needs; a full clone makes a shallow copy whole.
    let new = copy.references().map_or(true, |mut r| r.next().is_none());
    let depth = match depth {
        Some(n) if new || copy.is_shallow() => Depth::Newest(n),
        Some(_) => Depth::Keep,
        None if copy.is_shallow() => Depth::Unshallow,
        None => Depth::Keep,
    };
    fetch_bounded(
        &copy,
        access,
        url,
        credential,
        &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
        Some(cache.max_fetch_bytes),
        depth,
    )?;
    // The clone shares the copy's history, and so where it is cut.
    let shallow = repo.path().join("shallow");
    match std::fs::read(dir.join("shallow")) {
        Ok(cut) if copy.is_shallow() => std::fs::write(&shallow, cut),
        _ => std::fs::remove_file(&shallow).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        }),
    }
    .map_err(|e| GitError::Failed(format!("cannot record the clone's shallow history: {e}")))?;
    let objects = dir.join("objects");
    let alternates = repo.path().join("objects/info/alternates");
    std::fs::create_dir_all(repo.path().join("objects/info"))
        .and_then(|()| std::fs::write(&alternates, format!("{}\n", objects.display())))
        .map_err(|e| GitError::Failed(format!("cannot link the clone to the cache: {e}")))?;
    repo.odb()
        .and_then(|odb| odb.add_disk_alternate(&objects.to_string_lossy()))
        .map_err(|e| classify("cannot link the clone to the cache", e))?;
    let references = copy
        .references()
        .map_err(|e| classify("cannot read the cache's copy", e))?;
    for reference in references {
        let reference = reference.map_err(|e| classify("cannot read the cache's copy", e))?;
        let (Some(name), Some(target)) = (reference.name(), reference.target()) else {
            continue; // HEAD and other symbolic refs
        };
        let local = if let Some(branch) = name.strip_prefix("refs/heads/") {
            format!("refs/remotes/origin/{branch}")
        } else if name.starts_with("refs/tags/") {
            name.to_string()
        } else {
            continue;
        };
        repo.reference(&local, target, true, "clone through the cache")
            .map_err(|e| classify("cannot write the clone's refs", e))?;
    }
    Ok(())
}

/// Opens the work tree at `guest` for a push or an integration, whole: libgit2 walks history
/// past a shallow clone's cut for those (it has no shallow push), so a shallow clone first
/// fetches the history it lacks, into the cache's copy when there is one (once for all later
/// clones). A shallow clone that only reads and commits never pays this.
fn open_whole(access: &GitAccess, workdir: &Path, guest: &str) -> Outcome<Repository> {
    let repo = open(workdir, guest, Tree::Used)?;
    if !repo.is_shallow() {
        return Ok(repo);
    }
    let (url, credential) = origin_credential(&repo, access)?;
    let everything = [
        "+refs/heads/*:refs/remotes/origin/*",
        "+refs/tags/*:refs/tags/*",
    ];
    match &access.cache {
        Some(cache) if repo.path().join("objects/info/alternates").is_file() => {
            let dir = cache_dir(cache, &url, credential.as_ref());
            let lock = cache_lock(&dir);
            let _held = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let copy = Repository::open_bare(&dir)
                .map_err(|e| classify("cannot open the repository's copy in the cache", e))?;
            if copy.is_shallow() {
                fetch_bounded(
                    &copy,
                    access,
                    &url,
                    credential,
                    &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                    Some(cache.max_fetch_bytes),
                    Depth::Unshallow,
                )?;
            }
        }
        _ => fetch_bounded(
            &repo,
            access,
            &url,
            credential,
            &everything,
            None,
            Depth::Unshallow,
        )?,
    }
    match std::fs::remove_file(repo.path().join("shallow")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(GitError::Failed(format!(
                "cannot make the clone whole: {e}"
            )));
        }
    }
    drop(repo);
    open(workdir, guest, Tree::Untouched)
}

fn set_author(
    repo: &Repository,
    author: &Option<GuestSignature>,
    access: &GitAccess,
) -> Outcome<()> {
    let (name, email) = match author {
        Some(a) => (a.name.clone(), a.email.clone()),
        None => access.default_author.clone(),
    };
    let mut config = repo
        .config()
        .map_err(|e| classify("cannot write the clone's config", e))?;
    config
        .set_str("user.name", &name)
        .and_then(|_| config.set_str("user.email", &email))
        .map_err(|e| classify("cannot write the clone's config", e))
}

/// The most paths a sparse clone may name.
const MAX_SPARSE_PATHS: usize = 256;

/// The file in a clone's Git directory (the host's) that lists its sparse paths.
const SPARSE_FILE: &str = "dray-sparse";

/// `paths` of a [`CloneScope`], checked and made plain (`./a/b/` → `a/b`): relative directories
/// or files inside the repository, taken literally (a pattern's characters are refused, not
/// matched, so what is checked out is exactly what was named).
fn sparse_paths(paths: &[String]) -> Outcome<Vec<String>> {
    if paths.len() > MAX_SPARSE_PATHS {
        return Err(GitError::Invalid(format!(
            "{} sparse paths: at most {MAX_SPARSE_PATHS}",
            paths.len()
        )));
    }
    let mut plain = Vec::with_capacity(paths.len());
    for path in paths {
        let invalid = |why: &str| GitError::Invalid(format!("sparse path {path:?} {why}"));
        if path.len() > 4096 {
            return Err(invalid("is longer than 4096 bytes"));
        }
        if let Some(c) = path
            .chars()
            .find(|c| c.is_control() || matches!(c, '*' | '?' | '[' | ']' | '\\' | ':' | '!'))
        {
            return Err(invalid(&format!(
                "has {c:?}: name directories or files, not patterns"
            )));
        }
        let mut parts = Vec::new();
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(invalid("leaves the repository (`..`)")),
                ".git" => return Err(invalid("names `.git`")),
                part => parts.push(part),
            }
        }
        if path.starts_with('/') {
            return Err(invalid("is absolute: name it from the repository's root"));
        }
        if parts.is_empty() {
            return Err(invalid(
                "names the whole repository: leave `sparse` out instead",
            ));
        }
        plain.push(parts.join("/"));
    }
    Ok(plain)
}

/// The sparse paths of the clone `repo` (none: the whole tree is checked out).
fn sparse_of(repo: &Repository) -> Outcome<Vec<String>> {
    match std::fs::read_to_string(repo.path().join(SPARSE_FILE)) {
        Ok(text) => Ok(text.lines().map(str::to_string).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(GitError::Failed(format!(
            "cannot read the clone's sparse paths: {e}"
        ))),
    }
}

/// Brings the work tree from what HEAD has to `commit`'s files: all of them, or only the
/// sparse paths (the index then still holds the whole tree, so commits keep every other file).
fn check_out(repo: &Repository, commit: &git2::Commit<'_>, sparse: &[String]) -> Outcome<()> {
    let mut checkout = git2::build::CheckoutBuilder::new();
    checkout.force();
    if !sparse.is_empty() {
        checkout.disable_pathspec_match(true);
        for path in sparse {
            checkout.path(path);
        }
    }
    repo.checkout_tree(commit.as_object(), Some(&mut checkout))
        .map_err(|e| classify("cannot check out", e))?;
    if !sparse.is_empty() {
        let tree = commit
            .tree()
            .map_err(|e| classify("cannot read the commit's tree", e))?;
        repo.index()
            .and_then(|mut index| {
                index.read_tree(&tree)?;
                index.write()
            })
            .map_err(|e| classify("cannot write the index", e))?;
    }
    Ok(())
}

fn checkout_commit(repo: &Repository, id: git2::Oid, branch: Option<&str>) -> Outcome<()> {
    let commit = repo
        .find_commit(id)
        .map_err(|e| classify("cannot read the commit", e))?;
    check_out(repo, &commit, &sparse_of(repo)?)?;
    match branch {
        Some(branch) => {
            let mut local = repo
                .branch(branch, &commit, true)
                .map_err(|e| classify(&format!("cannot create branch {branch}"), e))?;
            local
                .set_upstream(Some(&format!("origin/{branch}")))
                .map_err(|e| classify("cannot set the upstream", e))?;
            repo.set_head(&format!("refs/heads/{branch}"))
        }
        None => repo.set_head_detached(id),
    }
    .map_err(|e| classify("cannot move HEAD", e))
}

pub fn clone(
    access: &GitAccess,
    workdir: &Path,
    url: &str,
    guest: &str,
    options: &CloneOptions,
    scope: &CloneScope,
) -> Outcome<String> {
    check_url(access, url)?;
    if scope.depth == Some(0) {
        return Err(GitError::Invalid(
            "depth 0: a clone needs at least the newest commit (leave depth out for all of the history)".into(),
        ));
    }
    let sparse = sparse_paths(&scope.paths)?;
    let dir = resolve(workdir, guest)?;
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(GitError::Invalid(format!(
            "cannot clone into {guest:?}: it exists and is not an empty directory"
        )));
    }
    let git_dir = git_dir(workdir, dir.strip_prefix(workdir).unwrap_or(&dir));
    let existed = dir.exists();
    // A clone earlier into the same path (then emptied by the guest) is replaced.
    let _ = std::fs::remove_dir_all(&git_dir);
    let cloned = std::fs::create_dir_all(&dir)
        .map_err(|e| GitError::Failed(format!("cannot create {guest:?}: {e}")))
        .and_then(|()| {
            // libgit2 has no shallow fetch from a local path (nothing travels there anyway).
            let depth = scope.depth.filter(|_| local_path(url).is_none());
            clone_into(access, &git_dir, &dir, url, options, depth, &sparse)
        });
    if cloned.is_err() {
        // Leave nothing half-cloned behind, so that a retry starts clean.
        let _ = std::fs::remove_dir_all(&git_dir);
        let _ = if existed {
            std::fs::read_dir(&dir).map(|entries| {
                for entry in entries.flatten() {
                    let _ = std::fs::remove_dir_all(entry.path())
                        .or_else(|_| std::fs::remove_file(entry.path()));
                }
            })
        } else {
            std::fs::remove_dir_all(&dir)
        };
    }
    cloned
}

fn clone_into(
    access: &GitAccess,
    git_dir: &Path,
    dir: &Path,
    url: &str,
    options: &CloneOptions,
    depth: Option<u32>,
    sparse: &[String],
) -> Outcome<String> {
    let repo =
        Repository::init_bare(git_dir).map_err(|e| classify("cannot create the repository", e))?;
    if !sparse.is_empty() {
        let mut list = sparse.join("\n");
        list.push('\n');
        std::fs::write(git_dir.join(SPARSE_FILE), list)
            .map_err(|e| GitError::Failed(format!("cannot record the sparse paths: {e}")))?;
    }
    repo.config()
        .and_then(|mut c| c.set_bool("core.bare", false))
        .map_err(|e| classify("cannot write the clone's config", e))?;
    repo.set_workdir(dir, false)
        .map_err(|e| classify("cannot create the work tree", e))?;
    repo.remote("origin", url)
        .map_err(|e| classify(&format!("{url:?} is not a usable remote URL"), e))?;
    set_author(&repo, &options.author, access)?;
    let credential = access.credentials.as_ref().and_then(|c| c.lookup(url));
    let fetch_all = |depth: Option<u32>| match &access.cache {
        Some(cache) => fetch_through_cache(&repo, access, cache, url, credential.clone(), depth),
        None => fetch_bounded(
            &repo,
            access,
            url,
            credential.clone(),
            &[
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
            None,
            match depth {
                Some(n) => Depth::Newest(n),
                None if repo.is_shallow() => Depth::Unshallow,
                None => Depth::Keep,
            },
        ),
    };
    fetch_all(depth)?;
    if let Some(commit) = options.commit.as_deref().filter(|_| depth.is_some())
        && repo.revparse_single(commit).is_err()
    {
        // A commit older than the depth (a rollback, say): the clone takes the whole history.
        fetch_all(None)?;
    }

    let described;
    if let Some(commit) = &options.commit {
        let id = repo
            .revparse_single(commit)
            .and_then(|o| o.peel_to_commit())
            .map_err(|_| GitError::NotFound(format!("{url} has no commit {commit}")))?
            .id();
        checkout_commit(&repo, id, None)?;
        described = format!("commit {id}");
    } else if let Some(tag) = &options.tag {
        let id = repo
            .revparse_single(&format!("refs/tags/{tag}"))
            .and_then(|o| o.peel_to_commit())
            .map_err(|_| GitError::NotFound(format!("{url} has no tag {tag}")))?
            .id();
        checkout_commit(&repo, id, None)?;
        described = format!("tag {tag} ({id})");
    } else {
        let branch = match &options.branch {
            Some(b) => b.clone(),
            None => default_branch(&repo),
        };
        let remote_ref = repo.find_branch(&format!("origin/{branch}"), BranchType::Remote);
        match remote_ref {
            Ok(r) => {
                let id = r
                    .get()
                    .peel_to_commit()
                    .map_err(|e| classify("cannot read the branch", e))?
                    .id();
                checkout_commit(&repo, id, Some(&branch))?;
                described = format!("branch {branch} ({id})");
            }
            Err(_)
                if options.create
                    || repo
                        .branches(Some(BranchType::Remote))
                        .map(|b| b.count() == 0)
                        .unwrap_or(false)
                        && options.branch.is_none() =>
            {
                // A new orphan branch: no history, an empty work tree (as Kargo's `create`).
                repo.set_head(&format!("refs/heads/{branch}"))
                    .map_err(|e| classify("cannot start the branch", e))?;
                repo.config()
                    .and_then(|mut c| {
                        c.set_str(&format!("branch.{branch}.remote"), "origin")?;
                        c.set_str(
                            &format!("branch.{branch}.merge"),
                            &format!("refs/heads/{branch}"),
                        )
                    })
                    .map_err(|e| classify("cannot write the clone's config", e))?;
                described = format!("new branch {branch}");
            }
            Err(_) => {
                return Err(GitError::NotFound(format!(
                    "{url} has no branch {branch} (set `create: true` to start it)"
                )));
            }
        }
    }
    Ok(described)
}

/// The remote's default branch as the fetch saw it, else `main`.
fn default_branch(repo: &Repository) -> String {
    let names = ["main", "master"];
    for name in names {
        if repo
            .find_branch(&format!("origin/{name}"), BranchType::Remote)
            .is_ok()
        {
            return name.into();
        }
    }
    repo.branches(Some(BranchType::Remote))
        .ok()
        .and_then(|mut b| b.find_map(|b| b.ok()?.0.name().ok().flatten().map(str::to_string)))
        .and_then(|n| n.strip_prefix("origin/").map(str::to_string))
        .unwrap_or_else(|| "main".into())
}

pub fn head(workdir: &Path, guest: &str) -> Outcome<String> {
    let repo = open(workdir, guest, Tree::Untouched)?;
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|_| GitError::NotFound(format!("{guest:?} has no commit yet")))?;
    Ok(head.id().to_string())
}

pub fn inspect(workdir: &Path, guest: &str) -> Outcome<WorkTree> {
    let repo = open(workdir, guest, Tree::Untouched)?;
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .ok()
        .map(|c| c.id().to_string());
    // An unborn branch has no HEAD commit yet, but HEAD names it.
    let branch = repo.find_reference("HEAD").ok().and_then(|h| {
        h.symbolic_target()
            .and_then(|t| t.strip_prefix("refs/heads/"))
            .map(str::to_string)
    });
    let origin = repo
        .find_remote("origin")
        .map_err(|e| classify("the work tree has no origin", e))?
        .url()
        .unwrap_or_default()
        .to_string();
    Ok(WorkTree {
        head,
        branch,
        origin,
    })
}

fn signature(repo: &Repository, access: &GitAccess) -> Outcome<Signature<'static>> {
    repo.signature()
        .or_else(|_| Signature::now(&access.default_author.0, &access.default_author.1))
        .map_err(|e| classify("cannot make a signature", e))
}

pub fn commit(
    access: &GitAccess,
    workdir: &Path,
    guest: &str,
    message: &str,
) -> Outcome<Option<String>> {
    let repo = open(workdir, guest, Tree::Used)?;
    let mut index = repo
        .index()
        .map_err(|e| classify("cannot read the index", e))?;
    // A sparse work tree lacks the files outside its paths: only inside them does a missing
    // file mean a deletion. libgit2 calls back for each path it would stage (or unstage): 0
    // goes ahead, 1 leaves the index's entry as it is.
    let sparse = sparse_of(&repo)?;
    let tree = repo.workdir().map(Path::to_path_buf).unwrap_or_default();
    let mut kept_unless_seen = |path: &Path, _: &[u8]| -> i32 {
        let outside = !sparse.iter().any(|p| path.starts_with(p));
        i32::from(outside && std::fs::symlink_metadata(tree.join(path)).is_err())
    };
    let sparse_tree = !sparse.is_empty();
    index
        .add_all(
            ["*"],
            IndexAddOption::DEFAULT,
            sparse_tree.then_some(&mut kept_unless_seen as &mut git2::IndexMatchedPath<'_>),
        )
        .and_then(|_| {
            index.update_all(
                ["*"],
                sparse_tree.then_some(&mut kept_unless_seen as &mut git2::IndexMatchedPath<'_>),
            )
        })
        .and_then(|_| index.write())
        .map_err(|e| classify("cannot stage the changes", e))?;
    let tree_id = index
        .write_tree()
        .map_err(|e| classify("cannot write the tree", e))?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    if parent.as_ref().is_some_and(|p| p.tree_id() == tree_id) {
        return Ok(None);
    }
    let tree = repo
        .find_tree(tree_id)
        .map_err(|e| classify("cannot read the tree", e))?;
    let sig = signature(&repo, access)?;
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let id = repo
        .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .map_err(|e| classify("cannot commit", e))?;
    Ok(Some(id.to_string()))
}

pub fn tag(
    access: &GitAccess,
    workdir: &Path,
    guest: &str,
    name: &str,
    message: Option<&str>,
    force: bool,
) -> Outcome<()> {
    let repo = open(workdir, guest, Tree::Used)?;
    let target = repo
        .head()
        .and_then(|h| h.peel(git2::ObjectType::Commit))
        .map_err(|_| GitError::NotFound(format!("{guest:?} has no commit to tag")))?;
    let made = match message {
        Some(m) => repo.tag(name, &target, &signature(&repo, access)?, m, force),
        None => repo.tag_lightweight(name, &target, force),
    };
    made.map(|_| ()).map_err(|e| match e.code() {
        ErrorCode::Exists => {
            GitError::Rejected(format!("tag {name} already exists (set force to move it)"))
        }
        _ => classify(&format!("cannot create tag {name}"), e),
    })
}

pub fn rebase(access: &GitAccess, workdir: &Path, guest: &str, branch: &str) -> Outcome<()> {
    integrate(access, workdir, guest, branch, access.push_integration)
}

/// Fetches `branch` of origin and integrates HEAD's commits with it as `policy` says
/// ([`PushIntegration`]); on a conflict nothing changes and the error names the files.
fn integrate(
    access: &GitAccess,
    workdir: &Path,
    guest: &str,
    branch: &str,
    policy: PushIntegration,
) -> Outcome<()> {
    let repo = open_whole(access, workdir, guest)?;
    let (url, credential) = origin_credential(&repo, access)?;
    let spec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
    fetch(&repo, access, &url, credential, &[spec.as_str()])?;
    let Ok(upstream) = repo
        .find_reference(&format!("refs/remotes/origin/{branch}"))
        .and_then(|r| r.peel_to_commit())
    else {
        return Ok(()); // the branch is not on the remote yet: nothing to integrate
    };
    let Ok(head) = repo.head().and_then(|h| h.peel_to_commit()) else {
        return Ok(()); // nothing committed: nothing to integrate
    };
    let contains =
        |a: git2::Oid, b: git2::Oid| a == b || repo.graph_descendant_of(a, b).unwrap_or(false);
    let onto = if contains(head.id(), upstream.id()) {
        return Ok(()); // the remote has nothing HEAD lacks
    } else if contains(upstream.id(), head.id()) {
        upstream.id() // HEAD is behind: fast-forward
    } else {
        let sig = signature(&repo, access)?;
        let conflict = |how: &str, files: Vec<String>| {
            GitError::Rejected(format!(
                "the local commits conflict with {branch} of {url} ({how}) in {}; the work tree is unchanged",
                list_files(&files)
            ))
        };
        let merge = |replay: Option<Vec<String>>| {
            merge_commit(&repo, &head, &upstream, branch, &sig).map_err(|files| match replay {
                Some(_) => conflict("replayed and merged", files),
                None => conflict("merged", files),
            })
        };
        match policy {
            PushIntegration::AlwaysMerge => merge(None)?,
            PushIntegration::RebaseOrMerge => match replay(&repo, &head, &upstream, &sig)? {
                Ok(id) => id,
                Err(files) => merge(Some(files))?,
            },
            PushIntegration::AlwaysRebase | PushIntegration::RebaseOrFail => {
                replay(&repo, &head, &upstream, &sig)?
                    .map_err(|files| conflict("replayed", files))?
            }
        }
    };
    move_head(&repo, onto)
}

/// At most this many conflicting files are named in a message.
const NAMED_CONFLICTS: usize = 10;

fn list_files(files: &[String]) -> String {
    let mut text = files
        .iter()
        .take(NAMED_CONFLICTS)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > NAMED_CONFLICTS {
        text.push_str(&format!(" and {} more", files.len() - NAMED_CONFLICTS));
    }
    text
}

/// The files an index holds in conflict.
fn conflicted_files(index: &git2::Index) -> Vec<String> {
    let mut files: Vec<String> = index
        .conflicts()
        .map(|conflicts| {
            conflicts
                .flatten()
                .filter_map(|c| c.our.or(c.their).or(c.ancestor))
                .map(|entry| String::from_utf8_lossy(&entry.path).into_owned())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.dedup();
    files
}

/// Replays `head`'s commits beyond `upstream` on top of it, in memory (neither the work tree
/// nor a ref moves): the new tip, or the files of the first commit that conflicts.
fn replay(
    repo: &Repository,
    head: &git2::Commit<'_>,
    upstream: &git2::Commit<'_>,
    sig: &Signature<'_>,
) -> Outcome<Result<git2::Oid, Vec<String>>> {
    let local = repo
        .find_annotated_commit(head.id())
        .map_err(|e| classify("cannot read HEAD", e))?;
    let onto = repo
        .find_annotated_commit(upstream.id())
        .map_err(|e| classify("cannot read the remote branch", e))?;
    let mut options = git2::RebaseOptions::new();
    options.inmemory(true);
    let mut rebase = repo
        .rebase(Some(&local), Some(&onto), None, Some(&mut options))
        .map_err(|e| classify("cannot start the rebase", e))?;
    let mut tip = upstream.id();
    while let Some(op) = rebase.next() {
        let index = rebase
            .inmemory_index()
            .map_err(|e| classify("cannot replay the commits", e))?;
        if op.is_err() || index.has_conflicts() {
            let files = conflicted_files(&index);
            let _ = rebase.abort();
            return Ok(Err(files));
        }
        match rebase.commit(None, sig, None) {
            Ok(id) => tip = id,
            // Nothing left of this commit after the remote's changes: skip it.
            Err(e) if e.code() == ErrorCode::Applied => {}
            Err(e) => {
                let _ = rebase.abort();
                return Err(classify("cannot replay the commits", e));
            }
        }
    }
    rebase
        .finish(Some(sig))
        .map_err(|e| classify("cannot finish the rebase", e))?;
    Ok(Ok(tip))
}

/// A merge commit of `head` and `upstream` (`git pull --no-rebase`), made without touching the
/// work tree; the conflicting files when they do not merge cleanly.
fn merge_commit(
    repo: &Repository,
    head: &git2::Commit<'_>,
    upstream: &git2::Commit<'_>,
    branch: &str,
    sig: &Signature<'_>,
) -> Result<git2::Oid, Vec<String>> {
    let failed = |e: git2::Error| vec![format!("(cannot merge: {})", message(&e))];
    let mut index = repo.merge_commits(head, upstream, None).map_err(failed)?;
    if index.has_conflicts() {
        return Err(conflicted_files(&index));
    }
    let tree = index
        .write_tree_to(repo)
        .and_then(|id| repo.find_tree(id))
        .map_err(failed)?;
    repo.commit(
        None,
        sig,
        sig,
        &format!("Merge remote-tracking branch 'origin/{branch}'"),
        &tree,
        &[head, upstream],
    )
    .map_err(failed)
}

/// Moves HEAD (its branch, or HEAD itself when detached) to `id`, files and all.
fn move_head(repo: &Repository, id: git2::Oid) -> Outcome<()> {
    let commit = repo
        .find_commit(id)
        .map_err(|e| classify("cannot read the integrated commit", e))?;
    check_out(repo, &commit, &sparse_of(repo)?)?;
    let head = repo.head().map_err(|e| classify("cannot read HEAD", e))?;
    if head.is_branch() {
        let name = head.name().unwrap_or("HEAD").to_string();
        repo.reference(&name, id, true, "dray: integrate the remote branch")
            .map(|_| ())
    } else {
        repo.set_head_detached(id)
    }
    .map_err(|e| classify("cannot move HEAD", e))
}

pub fn push(
    access: &GitAccess,
    workdir: &Path,
    guest: &str,
    target: &PushTarget,
    force: bool,
) -> Outcome<String> {
    let repo = open_whole(access, workdir, guest)?;
    let (url, credential) = origin_credential(&repo, access)?;
    let plus = if force { "+" } else { "" };
    let (source, destination, id) = match target {
        PushTarget::Branch(branch) => {
            let head = repo
                .head()
                .map_err(|_| GitError::NotFound(format!("{guest:?} has no commit to push")))?;
            let id = head
                .peel_to_commit()
                .map_err(|e| classify("cannot read HEAD", e))?
                .id();
            // libgit2 pushes references, not HEAD: name the commit with a scratch reference.
            repo.reference("refs/dray/push", id, true, "dray push")
                .map_err(|e| classify("cannot prepare the push", e))?;
            (
                "refs/dray/push".to_string(),
                format!("refs/heads/{branch}"),
                id,
            )
        }
        PushTarget::Tag(tag) => {
            let name = format!("refs/tags/{tag}");
            let id = repo
                .revparse_single(&name)
                .and_then(|o| o.peel_to_commit())
                .map_err(|_| GitError::NotFound(format!("{guest:?} has no tag {tag}")))?
                .id();
            (name.clone(), name, id)
        }
    };
    let pushed = push_refspec(
        &repo,
        access,
        &url,
        credential,
        &format!("{plus}{source}:{destination}"),
    );
    let _ = repo
        .find_reference("refs/dray/push")
        .and_then(|mut r| r.delete());
    pushed?;
    if let PushTarget::Branch(branch) = target {
        let _ = repo.reference(
            &format!("refs/remotes/origin/{branch}"),
            id,
            true,
            "dray push",
        );
    }
    Ok(id.to_string())
}

/// Pushes one refspec to `url` with `credential`.
fn push_refspec(
    repo: &Repository,
    access: &GitAccess,
    url: &str,
    credential: Option<GitCredential>,
    refspec: &str,
) -> Outcome<()> {
    let destination = refspec.rsplit(':').next().unwrap_or(refspec);
    let mut refused: Option<String> = None;
    let outcome = {
        let mut cb = callbacks(credential, url, access.known_hosts.as_deref());
        cb.push_update_reference(|reference, status| {
            if let Some(status) = status {
                refused = Some(format!("{reference}: {status}"));
            }
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(cb);
        // The URL the credential was looked up for, never a configured push URL.
        let mut remote = repo
            .remote_anonymous(url)
            .map_err(|e| classify(&format!("{url:?} is not a usable remote URL"), e))?;
        remote.push(&[refspec], Some(&mut options))
    };
    match (outcome, refused) {
        (Err(e), _)
            if e.code() == ErrorCode::NotFastForward
                || e.message().contains("non-fast")
                || e.message().contains("fastforward") =>
        {
            Err(GitError::Rejected(format!(
                "{url} refused the push to {destination}: the remote has commits this work tree lacks ({})",
                e.message()
            )))
        }
        (Err(e), _) => Err(classify(&format!("cannot push to {url}"), e)),
        (Ok(()), Some(status)) => Err(GitError::Rejected(format!(
            "{url} refused the push ({status}); the remote has moved on"
        ))),
        (Ok(()), None) => Ok(()),
    }
}

/// What `github-push` needs of a work tree: its origin, the token for it, and its branch.
fn github_origin(
    access: &GitAccess,
    workdir: &Path,
    guest: &str,
) -> Outcome<(String, String, Option<String>)> {
    let repo = open(workdir, guest, Tree::Used)?;
    let (url, credential) = origin_credential(&repo, access)?;
    let token = match credential {
        Some(GitCredential::Password { password, .. }) => password,
        Some(GitCredential::SshKey { from, .. }) => {
            return Err(GitError::Denied(format!(
                "github-push calls GitHub's API, which takes a token, not the SSH key of {from}: use a Secret with a token as its password"
            )));
        }
        None => {
            return Err(GitError::Denied(format!(
                "no credentials match {url}: github-push needs a cred-type: git Secret with a GitHub token as its password"
            )));
        }
    };
    let branch = repo
        .head()
        .ok()
        .filter(|h| h.is_branch())
        .and_then(|h| h.shorthand().map(str::to_string));
    Ok((url, token, branch))
}

/// Pushes HEAD of the work tree to `reference` of its origin (forced); returns HEAD.
fn push_head_to(
    access: &GitAccess,
    workdir: &Path,
    guest: &str,
    reference: &str,
) -> Outcome<String> {
    let repo = open_whole(access, workdir, guest)?;
    let (url, credential) = origin_credential(&repo, access)?;
    let id = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(|_| GitError::NotFound(format!("{guest:?} has no commit to push")))?
        .id();
    push_refspec(
        &repo,
        access,
        &url,
        credential,
        &format!("+{}:{reference}", "HEAD"),
    )?;
    Ok(id.to_string())
}

/// Moves the work tree's branch onto `commit` of origin's `branch` (fetched), files and all.
fn follow_remote(
    access: &GitAccess,
    workdir: &Path,
    guest: &str,
    branch: &str,
    commit: &str,
) -> Outcome<()> {
    let repo = open(workdir, guest, Tree::Used)?;
    let (url, credential) = origin_credential(&repo, access)?;
    let spec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
    fetch(&repo, access, &url, credential, &[spec.as_str()])?;
    let id = git2::Oid::from_str(commit).map_err(|e| classify("GitHub named no commit", e))?;
    let on_branch = repo
        .head()
        .ok()
        .is_some_and(|h| h.is_branch() && h.shorthand() == Some(branch));
    if on_branch {
        move_head(&repo, id)
    } else {
        checkout_commit(&repo, id, Some(branch))
    }
}

/// Runs blocking Git work on tokio's blocking pool.
async fn on_pool<T: Send + 'static>(
    work: impl FnOnce() -> Outcome<T> + Send + 'static,
) -> Outcome<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| GitError::Failed(format!("the Git work failed: {e}")))?
}

/// See `github-push` in wit/plugin.wit.
async fn github_push(
    access: GitAccess,
    workdir: PathBuf,
    guest: String,
    target: Option<String>,
    force: bool,
    attempts: u32,
) -> Outcome<String> {
    use super::forge::github::Replayed;
    let (url, token, current) = {
        let (access, workdir, guest) = (access.clone(), workdir.clone(), guest.clone());
        on_pool(move || github_origin(&access, &workdir, &guest)).await?
    };
    let branch = target.or_else(|| current.clone()).ok_or_else(|| {
        GitError::Invalid(format!(
            "{guest:?} has no branch checked out: set targetBranch"
        ))
    })?;
    let base_branch = current.unwrap_or_else(|| branch.clone());
    let api = super::forge::Repo::locate(&access.hosts, &url, Some("github"), Some(token))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let staging = format!("refs/dray/staging/{}-{nanos}", std::process::id());
    let attempts = attempts.clamp(1, 100);
    let mut outcome = Err(GitError::Failed("github-push made no attempt".into()));
    for attempt in 1..=attempts {
        let step = async {
            if !force {
                let (access, workdir, guest, branch) = (
                    access.clone(),
                    workdir.clone(),
                    guest.clone(),
                    branch.clone(),
                );
                // GitHub replays the commits it is sent: a merge commit is not one it can.
                let policy = PushIntegration::AlwaysRebase;
                on_pool(move || integrate(&access, &workdir, &guest, &branch, policy)).await?;
            }
            let head = {
                let (access, workdir, guest, staging) = (
                    access.clone(),
                    workdir.clone(),
                    guest.clone(),
                    staging.clone(),
                );
                on_pool(move || push_head_to(&access, &workdir, &guest, &staging)).await?
            };
            api.github_replay(&branch, &base_branch, &head, force)
                .await
                .map(|r| (head, r))
        };
        match step.await {
            Ok((head, Replayed::Identical)) => {
                outcome = Ok(head);
                break;
            }
            Ok((_, Replayed::Updated(sha))) => {
                let (access, workdir, guest, branch, commit) = (
                    access.clone(),
                    workdir.clone(),
                    guest.clone(),
                    branch.clone(),
                    sha.clone(),
                );
                outcome =
                    on_pool(move || follow_remote(&access, &workdir, &guest, &branch, &commit))
                        .await
                        .map(|()| sha);
                break;
            }
            Ok((_, Replayed::Behind(why))) => {
                outcome = Err(GitError::Rejected(format!(
                    "{why}; gave up after {attempt} attempt(s)"
                )));
                if force {
                    break;
                }
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    if let Err(e) = api.github_delete_ref(&staging).await {
        tracing::warn!(reference = %staging, error = %error_text(&e), "github-push: cannot delete its staging ref");
    }
    outcome
}

/// What the `git` capability keeps for one call: the operator's policy, the work directory it
/// acts in, and the step's log it writes what it did to.
/// The two branches of a pull request, as the remote has them.
struct Branches {
    /// The head commit of the source branch, and its message.
    source: String,
    message: String,
    /// Whether the two branches' trees differ.
    differ: bool,
}

/// Reads `source` and `target` of `url` into a scratch repository beside the work directory:
/// both must exist.
fn compare_branches(
    access: &GitAccess,
    workdir: &Path,
    url: &str,
    source: &str,
    target: &str,
) -> Outcome<Branches> {
    check_url(access, url)?;
    for branch in [source, target] {
        if !git2::Branch::name_is_valid(branch).unwrap_or(false) {
            return Err(GitError::Invalid(format!(
                "{branch:?} is not a valid branch name"
            )));
        }
    }
    let parent = repositories_dir(workdir);
    std::fs::create_dir_all(&parent)
        .map_err(|e| GitError::Failed(format!("cannot create {}: {e}", parent.display())))?;
    let scratch = tempfile::Builder::new()
        .prefix("pull-request-")
        .tempdir_in(&parent)
        .map_err(|e| GitError::Failed(format!("cannot create a scratch repository: {e}")))?;
    let repo = Repository::init_bare(scratch.path())
        .map_err(|e| classify("cannot create a scratch repository", e))?;
    let credential = access.credentials.as_ref().and_then(|c| c.lookup(url));
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| classify(&format!("{url:?} is not a usable remote URL"), e))?;
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks(credential, url, access.known_hosts.as_deref()))
        .download_tags(AutotagOption::None);
    if local_path(url).is_none() && !url.starts_with("file:") {
        // The heads are all it needs (libgit2's local transport cannot fetch shallow).
        options.depth(1);
    }
    let refspecs = [
        format!("+refs/heads/{source}:refs/remotes/origin/{source}"),
        format!("+refs/heads/{target}:refs/remotes/origin/{target}"),
    ];
    remote
        .fetch(&refspecs, Some(&mut options), None)
        .map_err(|e| classify(&format!("cannot fetch {source} and {target} from {url}"), e))?;
    let tip = |branch: &str| {
        repo.find_reference(&format!("refs/remotes/origin/{branch}"))
            .and_then(|r| r.peel_to_commit())
            .map_err(|_| {
                GitError::NotFound(format!(
                    "{url} has no branch {branch:?}{}",
                    if branch == source {
                        ": push the changes to it first (git-push)"
                    } else {
                        ""
                    }
                ))
            })
    };
    let (head, base) = (tip(source)?, tip(target)?);
    Ok(Branches {
        source: head.id().to_string(),
        message: head.message().unwrap_or_default().to_string(),
        differ: head.tree_id() != base.tree_id(),
    })
}

/// The token for a service's API: the password of the repository's `git` credential.
fn token(access: &GitAccess, url: &str) -> Option<String> {
    match access.credentials.as_ref()?.lookup(url)? {
        GitCredential::Password { password, .. } => Some(password),
        GitCredential::SshKey { .. } => None,
    }
}

/// The repository `url` on its hosting service, with the token of its `git` credential.
fn forge_repo(
    access: &GitAccess,
    url: &str,
    provider: Option<&str>,
) -> Outcome<super::forge::Repo> {
    super::forge::Repo::locate(&access.hosts, url, provider, token(access, url))
}

/// Kargo's title and description from a commit message: its first line, and the rest.
fn title_and_description(
    message: &str,
    title: Option<String>,
    description: Option<String>,
) -> (String, String) {
    let (first, rest) = match message.trim_end().split_once('\n') {
        Some((first, rest)) => (first.trim_end(), rest.trim()),
        None => (message.trim_end(), ""),
    };
    match title {
        Some(title) => (
            title,
            description.unwrap_or_else(|| message.trim_end().to_string()),
        ),
        None => (
            first.to_string(),
            description.unwrap_or_else(|| rest.to_string()),
        ),
    }
}

async fn open_pull_request(
    access: GitAccess,
    workdir: PathBuf,
    url: String,
    options: PullRequestOptions,
) -> Outcome<Opened> {
    let repo = forge_repo(&access, &url, options.provider.as_deref())?;
    let (source, target) = (options.source_branch.clone(), options.target_branch.clone());
    let branches = {
        let (access, url) = (access.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            compare_branches(&access, &workdir, &url, &source, &target)
        })
        .await
        .map_err(|e| GitError::Failed(format!("the comparison of the branches failed: {e}")))??
    };
    let open = repo
        .open_pull_requests(&options.source_branch, &options.target_branch)
        .await?;
    if let Some(existing) = open
        .into_iter()
        .find(|pr| pr.head_commit.as_deref() == Some(branches.source.as_str()))
    {
        return Ok(Opened::Existing(existing));
    }
    if !branches.differ {
        return Ok(Opened::NoChanges);
    }
    let (title, description) =
        title_and_description(&branches.message, options.title, options.description);
    let created = repo
        .create(&super::forge::NewPullRequest {
            source: options.source_branch,
            target: options.target_branch,
            title,
            description,
            labels: options.labels,
        })
        .await?;
    Ok(Opened::Created(created))
}

pub struct GitState {
    pub access: GitAccess,
    pub workdir: PathBuf,
    pub log: StepLog,
}

impl GitState {
    /// Logs what a call did, and how long it took.
    fn log_call(&mut self, started: std::time::Instant, ok: bool, said: String) {
        let level = if ok { "info" } else { "warn" };
        let message = format!("{said} ({} ms)", started.elapsed().as_millis());
        self.log.push(Source::Host, level, message, Vec::new());
    }
}

/// Runs one Git operation on the blocking pool and logs what happened in the step's log.
async fn blocking<T: Send + 'static>(
    state: &mut GitState,
    what: String,
    work: impl FnOnce(GitAccess, PathBuf) -> Outcome<T> + Send + 'static,
) -> wasmtime::Result<Outcome<T>> {
    let (access, workdir) = (state.access.clone(), state.workdir.clone());
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || work(access, workdir)).await?;
    let (level, message) = match &result {
        Ok(_) => (
            "info",
            format!("git {what} ({} ms)", started.elapsed().as_millis()),
        ),
        Err(e) => ("warn", format!("git {what} failed: {}", error_text(e))),
    };
    state.log.push(Source::Host, level, message, Vec::new());
    Ok(result)
}

pub(crate) fn error_text(e: &GitError) -> &str {
    match e {
        GitError::Denied(m)
        | GitError::NotFound(m)
        | GitError::Rejected(m)
        | GitError::Invalid(m)
        | GitError::Failed(m) => m,
    }
}

impl git::Host for GitState {
    async fn clone(
        &mut self,
        repo_url: String,
        path: String,
        options: CloneOptions,
    ) -> wasmtime::Result<Outcome<()>> {
        let whole = CloneScope {
            depth: None,
            paths: Vec::new(),
        };
        self.clone_scoped(repo_url, path, options, whole).await
    }

    async fn clone_scoped(
        &mut self,
        repo_url: String,
        path: String,
        options: CloneOptions,
        scope: CloneScope,
    ) -> wasmtime::Result<Outcome<()>> {
        let mut what = format!("clone {repo_url} into {path}");
        if let Some(depth) = scope.depth {
            what.push_str(&format!(", the newest {depth} commit(s)"));
        }
        if !scope.paths.is_empty() {
            what.push_str(&format!(", {} sparse path(s)", scope.paths.len()));
        }
        let cloned = blocking(self, what, move |access, workdir| {
            clone(&access, &workdir, &repo_url, &path, &options, &scope)
        })
        .await?;
        Ok(cloned.map(|described| {
            self.log.push(
                Source::Host,
                "info",
                format!("checked out {described}"),
                Vec::new(),
            );
        }))
    }

    async fn head(&mut self, path: String) -> wasmtime::Result<Outcome<String>> {
        let workdir = self.workdir.clone();
        Ok(tokio::task::spawn_blocking(move || head(&workdir, &path)).await?)
    }

    async fn inspect(&mut self, path: String) -> wasmtime::Result<Outcome<WorkTree>> {
        let workdir = self.workdir.clone();
        Ok(tokio::task::spawn_blocking(move || inspect(&workdir, &path)).await?)
    }

    async fn commit(
        &mut self,
        path: String,
        message: String,
    ) -> wasmtime::Result<Outcome<Option<String>>> {
        blocking(self, format!("commit in {path}"), move |access, workdir| {
            commit(&access, &workdir, &path, &message)
        })
        .await
    }

    async fn tag(
        &mut self,
        path: String,
        name: String,
        message: Option<String>,
        force: bool,
    ) -> wasmtime::Result<Outcome<()>> {
        blocking(
            self,
            format!("tag {name} in {path}"),
            move |access, workdir| tag(&access, &workdir, &path, &name, message.as_deref(), force),
        )
        .await
    }

    async fn rebase(&mut self, path: String, branch: String) -> wasmtime::Result<Outcome<()>> {
        blocking(
            self,
            format!("rebase {path} onto origin/{branch}"),
            move |access, workdir| rebase(&access, &workdir, &path, &branch),
        )
        .await
    }

    async fn push(
        &mut self,
        path: String,
        target: PushTarget,
        force: bool,
    ) -> wasmtime::Result<Outcome<String>> {
        let to = match &target {
            PushTarget::Branch(b) => format!("branch {b}"),
            PushTarget::Tag(t) => format!("tag {t}"),
        };
        blocking(
            self,
            format!("push {path} to {to}"),
            move |access, workdir| push(&access, &workdir, &path, &target, force),
        )
        .await
    }

    async fn open_pull_request(
        &mut self,
        repo_url: String,
        options: PullRequestOptions,
    ) -> wasmtime::Result<Outcome<Opened>> {
        let what = format!(
            "open a pull request from {} to {} of {repo_url}",
            options.source_branch, options.target_branch
        );
        let started = std::time::Instant::now();
        let result =
            open_pull_request(self.access.clone(), self.workdir.clone(), repo_url, options).await;
        let said = match &result {
            Ok(Opened::Created(pr)) => format!("opened pull request {} ({})", pr.number, pr.url),
            Ok(Opened::Existing(pr)) => {
                format!("pull request {} is already open ({})", pr.number, pr.url)
            }
            Ok(Opened::NoChanges) => "the branches hold the same files; no pull request".into(),
            Err(e) => format!("{what} failed: {}", error_text(e)),
        };
        self.log_call(started, result.is_ok(), said);
        Ok(result)
    }

    async fn github_push(
        &mut self,
        path: String,
        target_branch: Option<String>,
        force: bool,
        max_attempts: u32,
    ) -> wasmtime::Result<Outcome<String>> {
        let started = std::time::Instant::now();
        let result = github_push(
            self.access.clone(),
            self.workdir.clone(),
            path.clone(),
            target_branch,
            force,
            max_attempts,
        )
        .await;
        let said = match &result {
            Ok(id) => format!("pushed {path} through GitHub's API: {id}"),
            Err(e) => format!("github-push of {path} failed: {}", error_text(e)),
        };
        self.log_call(started, result.is_ok(), said);
        Ok(result)
    }

    async fn get_pull_request(
        &mut self,
        repo_url: String,
        provider: Option<String>,
        number: u64,
    ) -> wasmtime::Result<Outcome<PullRequest>> {
        let started = std::time::Instant::now();
        let result = async {
            forge_repo(&self.access, &repo_url, provider.as_deref())?
                .pull_request(number)
                .await
        }
        .await;
        let said = match &result {
            Ok(pr) => format!(
                "pull request {number}: {}",
                if pr.merged {
                    "merged"
                } else if pr.open {
                    "open"
                } else {
                    "closed"
                }
            ),
            Err(e) => format!("reading pull request {number} failed: {}", error_text(e)),
        };
        self.log_call(started, result.is_ok(), said);
        Ok(result)
    }

    async fn merge_pull_request(
        &mut self,
        repo_url: String,
        provider: Option<String>,
        number: u64,
        method: Option<String>,
    ) -> wasmtime::Result<Outcome<MergeOutcome>> {
        let started = std::time::Instant::now();
        let result = async {
            forge_repo(&self.access, &repo_url, provider.as_deref())?
                .merge(number, method.as_deref())
                .await
        }
        .await;
        let said = match &result {
            Ok(MergeOutcome::Merged(pr)) => format!(
                "pull request {number} is merged ({})",
                pr.merge_commit
                    .as_deref()
                    .unwrap_or("no merge commit named")
            ),
            Ok(MergeOutcome::NotReady(why)) => {
                format!("pull request {number} cannot be merged yet: {why}")
            }
            Err(e) => format!("merging pull request {number} failed: {}", error_text(e)),
        };
        self.log_call(started, result.is_ok(), said);
        Ok(result)
    }
}

/// Adds the `git` interface to a plugin's linker; `get` finds the capability's state.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut GitState,
) -> wasmtime::Result<()> {
    git::add_to_linker::<T, HasSelf<GitState>>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_work_dir() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(resolve(root, "out").unwrap(), root.join("out"));
        assert_eq!(resolve(root, "/out/./x").unwrap(), root.join("out/x"));
        assert!(matches!(resolve(root, "../x"), Err(GitError::Invalid(_))));
        assert!(matches!(
            resolve(root, "a/../../x"),
            Err(GitError::Invalid(_))
        ));
        assert!(matches!(resolve(root, "/"), Err(GitError::Invalid(_))));
        std::os::unix::fs::symlink("/tmp", root.join("link")).unwrap();
        assert!(matches!(
            resolve(root, "link/repo"),
            Err(GitError::Invalid(_))
        ));
    }

    #[test]
    fn repositories_are_kept_beside_the_work_dir_never_inside() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("sub")).unwrap();
        let beside = std::fs::canonicalize(dir.path())
            .unwrap()
            .join("work.git-repos");
        assert_eq!(repositories_dir(&work), beside);
        assert_eq!(repositories_dir(&work.join(".")), beside);
        assert_eq!(repositories_dir(&work.join("sub/..")), beside);
        assert_eq!(
            repositories_dir(Path::new("/")),
            std::env::temp_dir().join("dray-root.git-repos")
        );
    }

    #[test]
    fn local_repositories_need_an_allowed_root() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let denied = check_url(&GitAccess::default(), &url);
        assert!(matches!(denied, Err(GitError::Denied(m)) if m.contains("git.local_roots")));
        let access = GitAccess {
            local_roots: vec![dir.path().to_path_buf()],
            ..GitAccess::default()
        };
        assert!(check_url(&access, &url).is_ok());
        assert!(check_url(&GitAccess::default(), "git://127.0.0.1/x.git").is_ok());
        assert!(check_url(&GitAccess::default(), "git@host.example:org/x.git").is_ok());
    }

    /// A bare repository at `dir` (what a server holds) fed by a work tree beside it.
    struct Origin {
        seed: Repository,
        dir: PathBuf,
    }

    impl Origin {
        fn new(dir: &Path) -> Origin {
            Repository::init_bare(dir).unwrap();
            let seed = Repository::init(dir.with_extension("seed")).unwrap();
            Origin {
                seed,
                dir: dir.to_path_buf(),
            }
        }

        /// Commits `files` on `main` and pushes it to the bare repository.
        fn commit(&self, files: &[(&str, &[u8])], message: &str) {
            let work = self.seed.workdir().unwrap().to_path_buf();
            for (name, bytes) in files {
                let file = work.join(name);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(file, bytes).unwrap();
            }
            let mut index = self.seed.index().unwrap();
            index
                .add_all(["*"].iter(), IndexAddOption::DEFAULT, None)
                .unwrap();
            index.write().unwrap();
            let tree = self.seed.find_tree(index.write_tree().unwrap()).unwrap();
            let sig = Signature::now("t", "t@example.com").unwrap();
            let parent = self.main();
            let parents: Vec<&git2::Commit> = parent.iter().collect();
            self.seed
                .commit(
                    Some("refs/heads/main"),
                    &sig,
                    &sig,
                    message,
                    &tree,
                    &parents,
                )
                .unwrap();
            let mut remote = self
                .seed
                .remote_anonymous(&self.dir.to_string_lossy())
                .unwrap();
            remote
                .push(&["+refs/heads/main:refs/heads/main"], None)
                .unwrap();
        }

        fn main(&self) -> Option<git2::Commit<'_>> {
            self.seed
                .find_reference("refs/heads/main")
                .ok()
                .and_then(|r| r.peel_to_commit().ok())
        }
    }

    /// A temporary directory (kept alive by the first value) and its canonical path.
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        (dir, root)
    }

    fn cached_access(root: &Path, max_fetch_bytes: u64) -> GitAccess {
        GitAccess {
            local_roots: vec![root.to_path_buf()],
            cache: Some(GitCache {
                dir: root.join("cache"),
                max_fetch_bytes,
            }),
            ..GitAccess::default()
        }
    }

    fn clone_main(access: &GitAccess, work: &Path, url: &str, path: &str) -> Outcome<String> {
        clone_scoped(access, work, url, path, None, &[])
    }

    fn clone_scoped(
        access: &GitAccess,
        work: &Path,
        url: &str,
        path: &str,
        depth: Option<u32>,
        sparse: &[&str],
    ) -> Outcome<String> {
        let options = CloneOptions {
            branch: Some("main".into()),
            create: false,
            commit: None,
            tag: None,
            author: None,
        };
        let scope = CloneScope {
            depth,
            paths: sparse.iter().map(|p| p.to_string()).collect(),
        };
        clone(access, work, url, path, &options, &scope)
    }

    /// The files of `reference`'s tree in `repo`, with their contents.
    fn tree_files(repo: &Repository, reference: &str) -> Vec<(String, String)> {
        let tree = repo
            .revparse_single(reference)
            .unwrap()
            .peel_to_tree()
            .unwrap();
        let mut files = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if let Ok(blob) = entry.to_object(repo).and_then(|o| o.peel_to_blob()) {
                let text = String::from_utf8_lossy(blob.content()).into_owned();
                files.push((format!("{dir}{}", entry.name().unwrap()), text));
            }
            git2::TreeWalkResult::Ok
        })
        .unwrap();
        files.sort();
        files
    }

    /// The files under `dir`, relative to it.
    fn files_under(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for entry in std::fs::read_dir(&d).unwrap().flatten() {
                if entry.file_type().unwrap().is_dir() {
                    todo.push(entry.path());
                } else {
                    let relative = entry.path().strip_prefix(dir).unwrap().to_path_buf();
                    found.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        found.sort();
        found
    }

    /// An origin with `app.yaml` on main, and two clones of it, `mine` and `theirs`.
    fn two_clones(root: &Path) -> (Origin, GitAccess, PathBuf, String) {
        let origin_dir = root.join("origin.git");
        let origin = Origin::new(&origin_dir);
        origin.commit(
            &[("app.yaml", b"a: 1\nb: 1\nc: 1\nd: 1\ne: 1\nf: 1\n")],
            "first",
        );
        let url = format!("file://{}", origin_dir.display());
        let access = cached_access(root, 1 << 30);
        let work = root.join("work");
        std::fs::create_dir_all(&work).unwrap();
        clone_main(&access, &work, &url, "mine").unwrap();
        clone_main(&access, &work, &url, "theirs").unwrap();
        (origin, access, work, url)
    }

    /// Replaces `from` with `to` in `file` of `tree`, commits and (with `push`) pushes.
    fn change(access: &GitAccess, work: &Path, tree: &str, from: &str, to: &str, push_it: bool) {
        let file = work.join(tree).join("app.yaml");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(from), "{text}");
        std::fs::write(&file, text.replace(from, to)).unwrap();
        commit(access, work, tree, &format!("{from} → {to}")).unwrap();
        if push_it {
            push(
                access,
                work,
                tree,
                &PushTarget::Branch("main".into()),
                false,
            )
            .unwrap();
        }
    }

    fn head_commit(work: &Path, tree: &str) -> (String, usize) {
        let repo = open(work, tree, Tree::Untouched).unwrap();
        let head = repo.head().unwrap().peel_to_commit().unwrap();
        (head.id().to_string(), head.parent_count())
    }

    #[test]
    fn each_push_integration_policy_takes_in_a_branch_that_moved_on() {
        for policy in [
            PushIntegration::AlwaysRebase,
            PushIntegration::RebaseOrFail,
            PushIntegration::RebaseOrMerge,
            PushIntegration::AlwaysMerge,
        ] {
            let root = tempfile::tempdir().unwrap();
            let root = std::fs::canonicalize(root.path()).unwrap();
            let (_origin, mut access, work, _) = two_clones(&root);
            access.push_integration = policy;
            change(&access, &work, "theirs", "a: 1", "a: 2", true);
            change(&access, &work, "mine", "f: 1", "f: 2", false);
            let rejected = push(
                &access,
                &work,
                "mine",
                &PushTarget::Branch("main".into()),
                false,
            );
            assert!(
                matches!(rejected, Err(GitError::Rejected(_))),
                "{rejected:?}"
            );
            rebase(&access, &work, "mine", "main").unwrap();
            let (_, parents) = head_commit(&work, "mine");
            let merged = policy == PushIntegration::AlwaysMerge;
            assert_eq!(parents, if merged { 2 } else { 1 }, "{policy:?}");
            assert_eq!(
                std::fs::read_to_string(work.join("mine/app.yaml")).unwrap(),
                "a: 2\nb: 1\nc: 1\nd: 1\ne: 1\nf: 2\n",
                "{policy:?}: the work tree holds both changes"
            );
            push(
                &access,
                &work,
                "mine",
                &PushTarget::Branch("main".into()),
                false,
            )
            .unwrap_or_else(|e| panic!("{policy:?}: {e:?}"));
            let served = Repository::open_bare(root.join("origin.git")).unwrap();
            let files = tree_files(&served, "refs/heads/main");
            assert_eq!(files[0].1, "a: 2\nb: 1\nc: 1\nd: 1\ne: 1\nf: 2\n");
        }
    }

    #[test]
    fn a_conflict_names_the_file_and_changes_nothing() {
        let (_dir, root) = scratch();
        let (_origin, mut access, work, _) = two_clones(&root);
        change(&access, &work, "theirs", "c: 1", "c: theirs", true);
        change(&access, &work, "mine", "c: 1", "c: mine", false);
        let before = head_commit(&work, "mine");
        for policy in [PushIntegration::RebaseOrMerge, PushIntegration::AlwaysMerge] {
            access.push_integration = policy;
            let conflict = rebase(&access, &work, "mine", "main").expect_err("they conflict");
            assert!(
                matches!(&conflict, GitError::Rejected(m) if m.contains("conflict") && m.contains("in app.yaml")),
                "{policy:?}: {conflict:?}"
            );
            assert_eq!(head_commit(&work, "mine"), before, "{policy:?}");
            let text = std::fs::read_to_string(work.join("mine/app.yaml")).unwrap();
            assert!(text.contains("c: mine") && !text.contains("<<<"), "{text}");
        }
    }

    #[test]
    fn rebase_or_merge_merges_where_replaying_commit_by_commit_conflicts() {
        let (_dir, root) = scratch();
        let (_origin, mut access, work, _) = two_clones(&root);
        change(&access, &work, "theirs", "c: 1", "c: theirs", true);
        // Two local commits that change the line and change it back: the first conflicts when
        // replayed alone, the two together change nothing there.
        change(&access, &work, "mine", "c: 1", "c: mine", false);
        change(&access, &work, "mine", "c: mine", "c: 1", false);
        change(&access, &work, "mine", "f: 1", "f: 2", false);
        access.push_integration = PushIntegration::AlwaysRebase;
        let refused = rebase(&access, &work, "mine", "main").expect_err("replay conflicts");
        assert!(
            matches!(&refused, GitError::Rejected(m) if m.contains("replayed")),
            "{refused:?}"
        );
        access.push_integration = PushIntegration::RebaseOrMerge;
        rebase(&access, &work, "mine", "main").expect("the merge is clean");
        assert_eq!(head_commit(&work, "mine").1, 2, "a merge commit");
        assert_eq!(
            std::fs::read_to_string(work.join("mine/app.yaml")).unwrap(),
            "a: 1\nb: 1\nc: theirs\nd: 1\ne: 1\nf: 2\n"
        );
    }

    #[test]
    fn a_sparse_clone_checks_out_its_paths_and_its_commits_keep_the_rest() {
        let (_dir, root) = scratch();
        let origin_dir = root.join("origin.git");
        let origin = Origin::new(&origin_dir);
        origin.commit(
            &[
                ("README.md", b"repo\n"),
                ("apps/shop/deploy.yaml", b"image: shop:1\n"),
                ("apps/shop/old.yaml", b"old\n"),
                ("apps/shopping/deploy.yaml", b"image: shopping:1\n"),
                ("apps/bank/deploy.yaml", b"image: bank:1\n"),
            ],
            "first",
        );
        let url = format!("file://{}", origin_dir.display());
        let access = cached_access(&root, 1 << 30);
        let work = root.join("work");
        std::fs::create_dir_all(&work).unwrap();
        clone_scoped(
            &access,
            &work,
            &url,
            "src",
            None,
            &["./apps/shop/", "README.md"],
        )
        .unwrap();
        assert_eq!(
            files_under(&work.join("src")),
            ["README.md", "apps/shop/deploy.yaml", "apps/shop/old.yaml"],
            "only the sparse paths, and `apps/shop` is not a prefix of `apps/shopping`"
        );
        // Change, add and delete inside the paths; add a file outside them.
        std::fs::write(work.join("src/apps/shop/deploy.yaml"), "image: shop:2\n").unwrap();
        std::fs::remove_file(work.join("src/apps/shop/old.yaml")).unwrap();
        std::fs::create_dir_all(work.join("src/apps/new")).unwrap();
        std::fs::write(work.join("src/apps/new/deploy.yaml"), "image: new:1\n").unwrap();
        commit(&access, &work, "src", "shop 2")
            .unwrap()
            .expect("a commit");
        // Meanwhile the origin changes a file outside and one inside the paths.
        origin.commit(
            &[
                ("apps/bank/deploy.yaml", b"image: bank:2\n"),
                ("README.md", b"repo, renamed\n"),
            ],
            "bank 2",
        );
        let main = PushTarget::Branch("main".into());
        assert!(push(&access, &work, "src", &main, false).is_err());
        rebase(&access, &work, "src", "main").unwrap();
        push(&access, &work, "src", &main, false).unwrap();
        let served = Repository::open_bare(&origin_dir).unwrap();
        let files = tree_files(&served, "refs/heads/main");
        let expected: Vec<(String, String)> = [
            ("README.md", "repo, renamed\n"),
            ("apps/bank/deploy.yaml", "image: bank:2\n"),
            ("apps/new/deploy.yaml", "image: new:1\n"),
            ("apps/shop/deploy.yaml", "image: shop:2\n"),
            ("apps/shopping/deploy.yaml", "image: shopping:1\n"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(files, expected, "nothing outside the paths is lost");
        // The work tree follows the branch inside its paths, and stays sparse.
        assert_eq!(
            files_under(&work.join("src")),
            ["README.md", "apps/new/deploy.yaml", "apps/shop/deploy.yaml"]
        );
        assert_eq!(
            std::fs::read_to_string(work.join("src/README.md")).unwrap(),
            "repo, renamed\n"
        );
        // Nothing to commit after the push: the missing files are not deletions.
        assert_eq!(commit(&access, &work, "src", "nothing").unwrap(), None);
    }

    #[test]
    fn sparse_paths_name_files_inside_the_repository_only() {
        let ok = sparse_paths(&["./apps//shop/".into(), "README.md".into()]).unwrap();
        assert_eq!(ok, ["apps/shop", "README.md"]);
        for hostile in [
            "../outside",
            "apps/../../x",
            "/etc",
            "apps/*",
            "apps/?",
            "[ab]",
            ":(glob)**",
            "!apps",
            ".git/config",
            "apps/.git",
            "",
            ".",
            "./",
            "a\nb",
            "a\u{0}b",
            "a\\b",
        ] {
            let refused = sparse_paths(&[hostile.to_string()]);
            assert!(
                matches!(refused, Err(GitError::Invalid(_))),
                "{hostile:?}: {refused:?}"
            );
        }
        let many: Vec<String> = (0..=MAX_SPARSE_PATHS).map(|i| format!("d{i}")).collect();
        assert!(matches!(sparse_paths(&many), Err(GitError::Invalid(m)) if m.contains("at most")));
        assert!(sparse_paths(&["x".repeat(5000)]).is_err());
    }

    #[test]
    fn a_local_repository_is_cloned_whole_whatever_the_depth() {
        let (_dir, root) = scratch();
        let origin_dir = root.join("origin.git");
        let origin = Origin::new(&origin_dir);
        for i in 0..20 {
            origin.commit(
                &[("app.yaml", format!("v: {i}\n").as_bytes())],
                &format!("c{i}"),
            );
        }
        let url = format!("file://{}", origin_dir.display());
        let access = cached_access(&root, 1 << 30);
        let work = root.join("work");
        std::fs::create_dir_all(&work).unwrap();
        clone_scoped(&access, &work, &url, "local", Some(2), &[]).unwrap();
        let repo = open(&work, "local", Tree::Untouched).unwrap();
        let mut walk = repo.revwalk().unwrap();
        walk.push_head().unwrap();
        assert_eq!(walk.count(), 20);
        assert!(!repo.is_shallow());
    }

    /// Pack files and loose objects a Git directory holds itself (not through alternates).
    fn own_objects(git_dir: &Path) -> usize {
        std::fs::read_dir(git_dir.join("objects"))
            .unwrap()
            .flatten()
            .filter(|e| !matches!(e.file_name().to_str(), Some("info" | "pack")))
            .count()
            + std::fs::read_dir(git_dir.join("objects/pack")).map_or(0, |d| d.flatten().count())
    }

    #[test]
    fn clones_borrow_the_cached_objects_but_always_ask_the_origin() {
        let (_dir, root) = scratch();
        let origin_dir = root.join("origin.git");
        let origin = Origin::new(&origin_dir);
        origin.commit(&[("app.yaml", b"image: v1\n")], "first");
        let url = format!("file://{}", origin_dir.display());
        let access = cached_access(&root, 1 << 30);
        let work = root.join("work");
        std::fs::create_dir_all(&work).unwrap();

        clone_main(&access, &work, &url, "one").expect("first clone");
        assert_eq!(
            std::fs::read_to_string(work.join("one/app.yaml")).unwrap(),
            "image: v1\n"
        );
        let one = git_dir(&work, Path::new("one"));
        assert_eq!(own_objects(&one), 0, "the clone's objects are the cache's");

        // The origin moves on: the next clone sees it (the copy is fetched, not trusted).
        origin.commit(&[("app.yaml", b"image: v2\n")], "second");
        clone_main(&access, &work, &url, "two").expect("second clone");
        assert_eq!(
            std::fs::read_to_string(work.join("two/app.yaml")).unwrap(),
            "image: v2\n"
        );
        // A clone through the cache commits and pushes like any other.
        std::fs::write(work.join("two/app.yaml"), "image: v3\n").unwrap();
        commit(&access, &work, "two", "three").expect("commit");
        push(
            &access,
            &work,
            "two",
            &PushTarget::Branch("main".into()),
            false,
        )
        .expect("push");
        let served = Repository::open_bare(&origin_dir).unwrap();
        let pushed = served.find_reference("refs/heads/main").unwrap();
        let message = pushed
            .peel_to_commit()
            .unwrap()
            .summary()
            .map(str::to_string);
        assert_eq!(message.as_deref(), Some("three"));

        // With the origin gone the cache does not answer for it.
        std::fs::remove_dir_all(&origin_dir).unwrap();
        let gone = clone_main(&access, &work, &url, "three").expect_err("no origin, no clone");
        assert!(
            matches!(&gone, GitError::NotFound(m) | GitError::Failed(m) if m.contains("origin.git")),
            "{gone:?}"
        );
        assert!(!work.join("three").exists(), "nothing half-cloned is left");
    }

    #[test]
    fn copies_in_the_cache_are_kept_apart_by_credential() {
        let cache = GitCache {
            dir: PathBuf::from("/cache"),
            max_fetch_bytes: 1,
        };
        let secret = |from: &str| GitCredential::Password {
            username: "u".into(),
            password: "p".into(),
            from: from.into(),
        };
        let url = "https://git.example/org/repo.git";
        let shop = cache_dir(&cache, url, Some(&secret("Secret shop/git")));
        let bank = cache_dir(&cache, url, Some(&secret("Secret bank/git")));
        let anonymous = cache_dir(&cache, url, None);
        assert_ne!(shop, bank);
        assert_ne!(shop, anonymous);
        assert_eq!(
            shop,
            cache_dir(&cache, url, Some(&secret("Secret shop/git")))
        );
        assert_ne!(
            anonymous,
            cache_dir(&cache, "https://git.example/org/other.git", None)
        );
    }
}
