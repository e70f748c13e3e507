//! `tar` and `untar`. Extraction refuses entries that would leave the output directory, skips
//! links and device files, and stops at size and entry limits, so an archive cannot fill the
//! disk or overwrite another checkout of the same promotion.

use std::fs;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use dray_sdk::{StepError, StepResult};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::Deserialize;
use serde_json::json;

use crate::{ignore_matcher, ignored, io_error};

/// The most an archive may expand to. A promotion's work directory holds manifests and charts,
/// not disk images; more than this is a mistake or an attack.
const MAX_EXTRACTED_BYTES: u64 = 2 << 30;
/// The most entries an archive may hold.
const MAX_ENTRIES: usize = 200_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TarConfig {
    in_path: String,
    out_path: String,
    #[serde(default)]
    ignore: Option<String>,
    #[serde(default)]
    gzip: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UntarConfig {
    in_path: String,
    out_path: String,
    #[serde(default)]
    strip_components: usize,
    #[serde(default)]
    ignore: Option<String>,
}

/// A header with fixed owner, mode and time: WASI has no file modes or owners to copy, and a
/// fixed time makes the same tree give the same archive (deterministic, as `git archive`).
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// Adds `path` (named `name` in the archive) and, for a directory, everything under it.
fn append<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
    root: &Path,
    matcher: &Option<ignore::gitignore::Gitignore>,
    count: &mut usize,
) -> Result<(), StepError> {
    let meta = fs::symlink_metadata(path).map_err(|e| io_error("cannot read", path, e))?;
    if meta.file_type().is_symlink() {
        dray_sdk::warn!("skipped the symbolic link {}", path.display());
        return Ok(());
    }
    let relative = path.strip_prefix(root).unwrap_or(path);
    if relative != Path::new("") && ignored(matcher, relative, meta.is_dir()) {
        return Ok(());
    }
    if meta.is_dir() {
        if name != Path::new("") {
            let mut header = header(tar::EntryType::Directory, 0o755, 0);
            builder
                .append_data(&mut header, name, std::io::empty())
                .map_err(|e| io_error("cannot archive", path, e))?;
        }
        let mut entries: Vec<_> = fs::read_dir(path)
            .map_err(|e| io_error("cannot list", path, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for entry in entries {
            let file = entry
                .file_name()
                .expect("a directory entry has a name")
                .to_owned();
            append(builder, &entry, &name.join(file), root, matcher, count)?;
        }
    } else {
        let file = fs::File::open(path).map_err(|e| io_error("cannot open", path, e))?;
        let mut header = header(tar::EntryType::Regular, 0o644, meta.len());
        builder
            .append_data(&mut header, name, file)
            .map_err(|e| io_error("cannot archive", path, e))?;
        *count += 1;
    }
    Ok(())
}

pub fn tar(config: TarConfig) -> Result<StepResult, StepError> {
    let from = PathBuf::from(&config.in_path);
    if !from.exists() {
        return Err(StepError::Terminal(format!(
            "inPath {} does not exist",
            config.in_path
        )));
    }
    let out = PathBuf::from(&config.out_path);
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| io_error("cannot create", parent, e))?;
    }
    let file = fs::File::create(&out).map_err(|e| io_error("cannot create", &out, e))?;
    let matcher = ignore_matcher(&from, config.ignore.as_deref())?;
    // A directory's contents go in at the archive's top level, a file under its own name.
    let name = if from.is_dir() {
        PathBuf::new()
    } else {
        PathBuf::from(from.file_name().unwrap_or_default())
    };
    let mut count = 0;
    let finish = |e: std::io::Error| io_error("cannot finish", &out, e);
    if config.gzip {
        let mut builder = tar::Builder::new(GzEncoder::new(file, Compression::default()));
        append(&mut builder, &from, &name, &from, &matcher, &mut count)?;
        builder
            .into_inner()
            .map_err(finish)?
            .finish()
            .map_err(finish)?;
    } else {
        let mut builder = tar::Builder::new(file);
        append(&mut builder, &from, &name, &from, &matcher, &mut count)?;
        builder.into_inner().map_err(finish)?;
    }
    dray_sdk::info!(
        "archived {count} file(s) from {} into {}",
        config.in_path,
        config.out_path
    );
    Ok(dray_sdk::succeeded(json!({})))
}

/// The entry's path with `strip` leading components dropped, or `None` when nothing is left; an
/// error when the path is absolute or climbs out with `..`.
fn entry_path(raw: &Path, strip: usize) -> Result<Option<PathBuf>, String> {
    let mut parts = Vec::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "the entry {} leaves the output directory",
                    raw.display()
                ));
            }
        }
    }
    if parts.len() <= strip {
        return Ok(None);
    }
    Ok(Some(parts[strip..].iter().collect()))
}

pub fn untar(config: UntarConfig) -> Result<StepResult, StepError> {
    let from = PathBuf::from(&config.in_path);
    let mut file =
        BufReader::new(fs::File::open(&from).map_err(|e| io_error("cannot open", &from, e))?);
    let mut magic = [0u8; 2];
    let gzipped = {
        use std::io::BufRead;
        let head = file
            .fill_buf()
            .map_err(|e| io_error("cannot read", &from, e))?;
        head.len() >= 2 && {
            magic.copy_from_slice(&head[..2]);
            magic == [0x1f, 0x8b]
        }
    };
    let reader: Box<dyn Read> = if gzipped {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let out = PathBuf::from(&config.out_path);
    if out.exists() {
        fs::remove_dir_all(&out).map_err(|e| io_error("cannot replace", &out, e))?;
    }
    fs::create_dir_all(&out).map_err(|e| io_error("cannot create", &out, e))?;
    let matcher = ignore_matcher(&out, config.ignore.as_deref())?;
    let mut archive = tar::Archive::new(reader);
    let bad = |e: std::io::Error| {
        StepError::Terminal(format!(
            "{} is not a readable tar archive: {e}",
            config.in_path
        ))
    };
    let (mut files, mut bytes) = (0usize, 0u64);
    for (n, entry) in archive.entries().map_err(bad)?.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(StepError::Terminal(format!(
                "{} has more than {MAX_ENTRIES} entries",
                config.in_path
            )));
        }
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path().map_err(bad)?.into_owned();
        let Some(relative) =
            entry_path(&raw, config.strip_components).map_err(StepError::Terminal)?
        else {
            continue;
        };
        let kind = entry.header().entry_type();
        if ignored(&matcher, &relative, kind.is_dir()) {
            continue;
        }
        let target = out.join(&relative);
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(|e| io_error("cannot create", &target, e))?;
        } else if kind.is_file() {
            bytes += entry.size();
            if bytes > MAX_EXTRACTED_BYTES {
                return Err(StepError::Terminal(format!(
                    "{} expands to more than {} MiB; refusing to extract it",
                    config.in_path,
                    MAX_EXTRACTED_BYTES >> 20
                )));
            }
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| io_error("cannot create", parent, e))?;
            }
            let mut written =
                fs::File::create(&target).map_err(|e| io_error("cannot create", &target, e))?;
            std::io::copy(&mut entry, &mut written)
                .map_err(|e| io_error("cannot extract", &target, e))?;
            files += 1;
        } else {
            dray_sdk::warn!("skipped {} (a link or special file)", raw.display());
        }
    }
    dray_sdk::info!(
        "extracted {files} file(s) from {} into {}",
        config.in_path,
        config.out_path
    );
    Ok(dray_sdk::succeeded(json!({})))
}
