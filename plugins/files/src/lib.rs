//! File steps, as Kargo's: `copy`, `delete`, `file-write`, `tar` and `untar`. Every path is
//! relative to the promotion's work directory, the only directory the sandbox lets this component
//! see; `..` and absolute paths that leave it fail in the sandbox whatever this code does.
//!
//! Symbolic links are not followed or recreated: a link found while copying or archiving, or a
//! link entry in an archive, is skipped with a warning (a link could point anywhere; Kargo's
//! `untar` skips them too).

mod archive;

use std::fs;
use std::path::{Path, PathBuf};

use dray_sdk::{Step, StepContext, StepError, StepKind, StepResult};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::Deserialize;
use serde_json::json;

/// The plugin's step kinds (or verifiers): exported by `plugins/steps` with the other built-ins.
pub struct Files;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CopyConfig {
    in_path: String,
    out_path: String,
    #[serde(default)]
    ignore: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeleteConfig {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    paths_are_globs: bool,
    #[serde(default)]
    strict: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WriteConfig {
    path: String,
    contents: String,
    #[serde(default)]
    permissions: Option<String>,
    #[serde(default)]
    overwrite: bool,
}

/// What a step failed on, as the error the engine expects: the file system outside a step's
/// control (a full disk) is retryable; everything else here is the promotion's input, terminal.
fn io_error(what: &str, path: &Path, e: std::io::Error) -> StepError {
    let message = format!("{what} {}: {e}", path.display());
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::Interrupted => {
            StepError::Retryable(message)
        }
        _ => StepError::Terminal(message),
    }
}

/// Builds the matcher for an `ignore` text (gitignore syntax), rooted at `root`.
fn ignore_matcher(root: &Path, text: Option<&str>) -> Result<Option<Gitignore>, StepError> {
    let Some(text) = text else { return Ok(None) };
    let mut builder = GitignoreBuilder::new(root);
    for (n, line) in text.lines().enumerate() {
        builder
            .add_line(None, line)
            .map_err(|e| StepError::InvalidConfig(format!("ignore, line {}: {e}", n + 1)))?;
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| StepError::InvalidConfig(format!("ignore: {e}")))
}

fn ignored(matcher: &Option<Gitignore>, path: &Path, is_dir: bool) -> bool {
    matcher
        .as_ref()
        .is_some_and(|m| m.matched_path_or_any_parents(path, is_dir).is_ignore())
}

/// Copies a file, or a directory's contents into `out` (merging with what is there, as Kargo's
/// copy does), skipping what `ignore` matches; returns how many files it copied.
fn copy_tree(
    from: &Path,
    to: &Path,
    root: &Path,
    matcher: &Option<Gitignore>,
) -> Result<usize, StepError> {
    let meta = fs::symlink_metadata(from).map_err(|e| io_error("cannot read", from, e))?;
    if meta.file_type().is_symlink() {
        dray_sdk::warn!("skipped the symbolic link {}", from.display());
        return Ok(0);
    }
    let relative = from.strip_prefix(root).unwrap_or(from);
    if relative != Path::new("") && ignored(matcher, relative, meta.is_dir()) {
        return Ok(0);
    }
    if meta.is_dir() {
        fs::create_dir_all(to).map_err(|e| io_error("cannot create", to, e))?;
        let mut entries: Vec<_> = fs::read_dir(from)
            .map_err(|e| io_error("cannot list", from, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        let mut copied = 0;
        for entry in entries {
            let name = entry.file_name().expect("a directory entry has a name");
            copied += copy_tree(&entry, &to.join(name), root, matcher)?;
        }
        Ok(copied)
    } else {
        if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| io_error("cannot create", parent, e))?;
        }
        fs::copy(from, to).map_err(|e| io_error("cannot copy to", to, e))?;
        Ok(1)
    }
}

fn copy(config: CopyConfig) -> Result<StepResult, StepError> {
    let (from, to) = (
        PathBuf::from(&config.in_path),
        PathBuf::from(&config.out_path),
    );
    if !from.exists() {
        return Err(StepError::Terminal(format!(
            "inPath {} does not exist",
            config.in_path
        )));
    }
    let matcher = ignore_matcher(&from, config.ignore.as_deref())?;
    let copied = copy_tree(&from, &to, &from, &matcher)?;
    dray_sdk::info!(
        "copied {copied} file(s) from {} to {}",
        config.in_path,
        config.out_path
    );
    Ok(dray_sdk::succeeded(json!({})))
}

/// Every path under `dir` (files and directories), relative to the work directory, sorted.
fn walk(dir: &Path, into: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        into.push(path.clone());
        if is_dir {
            walk(&path, into);
        }
    }
}

fn remove(path: &Path) -> Result<(), StepError> {
    let meta = fs::symlink_metadata(path).map_err(|e| io_error("cannot read", path, e))?;
    if meta.is_dir() {
        fs::remove_dir_all(path).map_err(|e| io_error("cannot delete", path, e))
    } else {
        fs::remove_file(path).map_err(|e| io_error("cannot delete", path, e))
    }
}

fn delete(config: DeleteConfig) -> Result<StepResult, StepError> {
    let patterns: Vec<String> = match (config.path, config.paths.is_empty()) {
        (Some(path), true) => vec![path],
        (None, false) => config.paths,
        _ => return Err(StepError::InvalidConfig("give either path or paths".into())),
    };
    let mut targets: Vec<PathBuf> = Vec::new();
    for pattern in &patterns {
        let pattern = pattern.trim_start_matches("./");
        if !config.paths_are_globs {
            let path = PathBuf::from(pattern);
            if fs::symlink_metadata(&path).is_ok() {
                targets.push(path);
            } else if config.strict {
                return Err(StepError::Terminal(format!(
                    "{pattern} does not exist (strict is set)"
                )));
            }
            continue;
        }
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| {
                StepError::InvalidConfig(format!("paths: {pattern:?} is not a glob: {e}"))
            })?
            .compile_matcher();
        let mut all = Vec::new();
        walk(Path::new("."), &mut all);
        let before = targets.len();
        targets.extend(
            all.into_iter()
                .filter(|p| glob.is_match(p.strip_prefix(".").unwrap_or(p)))
                .map(|p| p.strip_prefix(".").unwrap_or(&p).to_path_buf()),
        );
        if config.strict && targets.len() == before {
            return Err(StepError::Terminal(format!(
                "{pattern} matches nothing (strict is set)"
            )));
        }
    }
    // Parents first, so that deleting a directory makes its matched children go with it.
    targets.sort();
    targets.dedup();
    let mut deleted = 0;
    let mut done: Vec<PathBuf> = Vec::new();
    for target in targets {
        if done.iter().any(|d| target.starts_with(d)) {
            continue;
        }
        remove(&target)?;
        dray_sdk::debug!("deleted {}", target.display());
        done.push(target);
        deleted += 1;
    }
    dray_sdk::info!("deleted {deleted} path(s)");
    Ok(dray_sdk::succeeded(json!({})))
}

fn write(config: WriteConfig) -> Result<StepResult, StepError> {
    let path = PathBuf::from(&config.path);
    if let Some(mode) = &config.permissions {
        // WASI has no file modes: a sandboxed step cannot set them. Say so rather than pretend.
        dray_sdk::warn!(
            "permissions {mode} ignored: files written by a sandboxed step get the daemon's default mode"
        );
    }
    if fs::symlink_metadata(&path).is_ok() && !config.overwrite {
        return Err(StepError::Terminal(format!(
            "{} already exists; set overwrite: true to replace it",
            config.path
        )));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| io_error("cannot create", parent, e))?;
    }
    fs::write(&path, config.contents.as_bytes()).map_err(|e| io_error("cannot write", &path, e))?;
    dray_sdk::info!("wrote {} bytes to {}", config.contents.len(), config.path);
    Ok(dray_sdk::succeeded(json!({})))
}

fn schemas() -> Vec<StepKind> {
    let ignore = json!({"type": "string", "minLength": 1, "description": "Paths to leave out, in .gitignore syntax (one pattern per line)"});
    vec![
        dray_sdk::kind(
            "copy",
            "Copies a file or a directory's contents within the work directory",
            json!({
                "type": "object", "additionalProperties": false, "required": ["inPath", "outPath"],
                "properties": {
                    "inPath": {"type": "string", "minLength": 1, "description": "The file or directory to copy"},
                    "outPath": {"type": "string", "minLength": 1, "description": "Where to copy it"},
                    "ignore": ignore
                }
            }),
            &[],
        ),
        dray_sdk::kind(
            "delete",
            "Deletes files or directories, by path or glob",
            json!({
                "type": "object", "additionalProperties": false,
                "oneOf": [{"required": ["path"]}, {"required": ["paths"]}],
                "properties": {
                    "path": {"type": "string", "minLength": 1, "description": "A path (a glob with pathsAreGlobs)"},
                    "paths": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}, "description": "Paths (globs with pathsAreGlobs)"},
                    "pathsAreGlobs": {"type": "boolean", "default": false, "description": "Treat path and paths as glob patterns (`*` stays within a directory, `**` crosses them)"},
                    "strict": {"type": "boolean", "default": false, "description": "Fail when a path does not exist or a glob matches nothing"}
                }
            }),
            &[],
        ),
        dray_sdk::kind(
            "file-write",
            "Writes a file with the given contents",
            json!({
                "type": "object", "additionalProperties": false, "required": ["path", "contents"],
                "properties": {
                    "path": {"type": "string", "minLength": 1, "description": "The file to write (parent directories are created)"},
                    "contents": {"type": "string", "description": "What to write"},
                    "permissions": {"type": "string", "pattern": "^0[0-7]{3}$", "description": "Accepted for Kargo compatibility; a sandboxed step cannot set file modes"},
                    "overwrite": {"type": "boolean", "default": false, "description": "Replace the file if it exists"}
                }
            }),
            &[],
        ),
        dray_sdk::kind(
            "tar",
            "Archives a file or directory into a tar file, optionally gzipped",
            json!({
                "type": "object", "additionalProperties": false, "required": ["inPath", "outPath"],
                "properties": {
                    "inPath": {"type": "string", "minLength": 1, "description": "The file or directory to archive"},
                    "outPath": {"type": "string", "minLength": 1, "description": "The tar file to create (replaced if it exists)"},
                    "ignore": ignore,
                    "gzip": {"type": "boolean", "default": false, "description": "Compress with gzip"}
                }
            }),
            &[],
        ),
        dray_sdk::kind(
            "untar",
            "Extracts a tar file (gzipped or not) into a directory",
            json!({
                "type": "object", "additionalProperties": false, "required": ["inPath", "outPath"],
                "properties": {
                    "inPath": {"type": "string", "minLength": 1, "description": "The tar file (gzip is detected)"},
                    "outPath": {"type": "string", "minLength": 1, "description": "The directory to extract into (replaced if it exists)"},
                    "stripComponents": {"type": "integer", "minimum": 0, "description": "Leading path components to drop from every entry"},
                    "ignore": ignore
                }
            }),
            &[],
        ),
    ]
}

impl Step for Files {
    fn describe() -> Vec<StepKind> {
        schemas()
    }

    fn run(kind: String, _context: StepContext, config: String) -> Result<StepResult, StepError> {
        match kind.as_str() {
            "copy" => copy(dray_sdk::config(&config)?),
            "delete" => delete(dray_sdk::config(&config)?),
            "file-write" => write(dray_sdk::config(&config)?),
            "tar" => archive::tar(dray_sdk::config(&config)?),
            "untar" => archive::untar(dray_sdk::config(&config)?),
            other => Err(StepError::InvalidConfig(format!(
                "the files plugin has no step {other:?}"
            ))),
        }
    }
}
