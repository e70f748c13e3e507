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

/// The largest a Promotion's (or AnalysisRun's) log file grows: each step call's log is
/// bounded, but a polling step may be called thousands of times.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Kept free below [`MAX_FILE_BYTES`] for the line that says lines were dropped.
const NOTE_ROOM: u64 = 4096;

/// How often the lines a running call logs reach its log file.
pub const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs `call`, handing `write` what `log` (the call's own) gains every [`FOLLOW_EVERY`], so a
/// follower (`dray logs … -f`) sees a long call's lines as they come, not at its end. Returns
/// the call's end and how many lines `write` got: the rest of the final log is the caller's.
pub async fn followed<T>(
    log: &crate::runtime::log::StepLog,
    mut write: impl FnMut(&[Line]),
    call: impl std::future::Future<Output = T>,
) -> (T, usize) {
    let mut call = std::pin::pin!(call);
    let mut written = 0;
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            done = &mut call => return (done, written),
            _ = tick.tick() => {
                let new = log.lines_from(written);
                if !new.is_empty() {
                    write(&new);
                    written += new.len();
                }
            }
        }
    }
}

/// Appends lines; a failure to write is logged by the daemon, never fails the step. Past
/// [`MAX_FILE_BYTES`], lines are dropped and one line says so.
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
        let len = out.metadata()?.len();
        if len + buffer.len() as u64 > MAX_FILE_BYTES - NOTE_ROOM {
            if len > MAX_FILE_BYTES - NOTE_ROOM {
                return Ok(());
            }
            buffer.clear();
            let note = Entry {
                step: step.to_string(),
                line: Line {
                    time: crate::resource::now(),
                    source: crate::runtime::log::Source::Host,
                    level: "warn".into(),
                    message: format!(
                        "{} lines dropped: this log is limited to {} MiB",
                        lines.len(),
                        MAX_FILE_BYTES >> 20
                    ),
                    fields: Vec::new(),
                },
            };
            serde_json::to_writer(&mut buffer, &note)?;
            buffer.push(b'\n');
        }
        out.write_all(&buffer)
    })();
    if let Err(e) = written {
        tracing::warn!(file = %file.display(), error = %e, "cannot write the promotion log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_file_stops_growing_at_its_limit_and_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let line = Line {
            time: "2026-01-01T00:00:00.000Z".into(),
            source: crate::runtime::log::Source::Stdout,
            level: "info".into(),
            message: "x".repeat(1 << 20),
            fields: Vec::new(),
        };
        for _ in 0..80 {
            append(dir.path(), "p", "run", "step", std::slice::from_ref(&line));
        }
        let file = path(dir.path(), "p", "run");
        let len = std::fs::metadata(&file).expect("file").len();
        assert!(len <= MAX_FILE_BYTES, "{len}");
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(text.contains("lines dropped: this log is limited to 64 MiB"));
    }
}
