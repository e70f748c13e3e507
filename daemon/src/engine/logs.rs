//! Promotion logs: one JSON-lines file per Promotion under `<data dir>/logs/<project>/`, each
//! line a step's log line with the step's alias. Files, not the database: logs are large,
//! append-only and read in order, and a follower tails the file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::log::Line;

/// One stored line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The step's alias; empty for lines about the whole Promotion.
    pub step: String,
    #[serde(flatten)]
    pub line: Line,
}

pub fn path(data_dir: &Path, project: &str, promotion: &str) -> PathBuf {
    data_dir
        .join("logs")
        .join(project)
        .join(format!("{promotion}.jsonl"))
}

/// Appends lines; a failure to write is logged by the daemon, never fails the step.
pub fn append(data_dir: &Path, project: &str, promotion: &str, step: &str, lines: &[Line]) {
    if lines.is_empty() {
        return;
    }
    let file = path(data_dir, project, promotion);
    let written = (|| -> std::io::Result<()> {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)?;
        let mut buffer = Vec::new();
        for line in lines {
            let entry = Entry {
                step: step.to_string(),
                line: line.clone(),
            };
            serde_json::to_writer(&mut buffer, &entry)?;
            buffer.push(b'\n');
        }
        out.write_all(&buffer)
    })();
    if let Err(e) = written {
        tracing::warn!(file = %file.display(), error = %e, "cannot write the promotion log");
    }
}
