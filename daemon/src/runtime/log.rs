//! A step's log: what the plugin printed (stdout, stderr) and what it logged through the `log`
//! interface, in order, bounded in size so a flood cannot exhaust the daemon's memory.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::resource::now;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Stdout,
    Stderr,
    /// The `log` interface.
    Log,
    /// The host, about the step (e.g. "output truncated").
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// RFC 3339 with milliseconds.
    pub time: String,
    pub source: Source,
    /// `trace`..`error` for `log` lines, `info` for printed ones.
    pub level: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
}

impl Line {
    /// This line with every secret value `redactor` knows hidden.
    pub fn redacted(&self, redactor: &crate::credentials::Redactor) -> Line {
        Line {
            message: redactor.redact(&self.message),
            fields: self
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), redactor.redact(v)))
                .collect(),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match self.source {
            Source::Stdout => "stdout",
            Source::Stderr => "stderr",
            Source::Log => self.level.as_str(),
            Source::Host => "dray",
        };
        write!(f, "{} {source:>6} {}", self.time, self.message)?;
        for (k, v) in &self.fields {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// What a line costs besides its text (time, source, level, the vector slot), counted against
/// the capacity so that a flood of empty lines is bounded like any other.
const LINE_OVERHEAD: usize = 64;
/// Longest printed line kept whole; a longer one (or one without a newline) is cut in pieces.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Inner {
    lines: Vec<Line>,
    /// Bytes kept so far (messages and fields, plus [`LINE_OVERHEAD`] a line).
    kept: usize,
    /// Bytes refused because the log was full.
    dropped: usize,
    /// An unfinished printed line per stream.
    partial_stdout: Vec<u8>,
    partial_stderr: Vec<u8>,
}

impl Inner {
    fn is_full(&self, capacity: usize) -> bool {
        self.kept + LINE_OVERHEAD > capacity
    }
}

/// `text` cut to at most `limit` bytes (at a character boundary), saying how much was cut: for
/// everything a guest says that the host keeps (messages, errors, log lines).
pub fn cut(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let total = text.len();
    let mut at = limit;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.truncate(at);
    text.push_str(&format!(" [cut: {} more bytes]", total - at));
    text
}

/// The shared, bounded log of one step call.
#[derive(Debug, Clone)]
pub struct StepLog {
    inner: Arc<Mutex<Inner>>,
    capacity: usize,
}

impl StepLog {
    pub fn new(capacity: usize) -> StepLog {
        StepLog {
            inner: Arc::new(Mutex::new(Inner::default())),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another writer panicked mid-push; the lines are still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends a line unless the log is full (then only counts it).
    pub fn push(
        &self,
        source: Source,
        level: &str,
        message: String,
        fields: Vec<(String, String)>,
    ) {
        let mut inner = self.lock();
        Self::push_locked(&mut inner, self.capacity, source, level, message, fields);
    }

    fn push_locked(
        inner: &mut Inner,
        capacity: usize,
        source: Source,
        level: &str,
        message: String,
        fields: Vec<(String, String)>,
    ) {
        let size = LINE_OVERHEAD
            + message.len()
            + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if inner.kept + size > capacity {
            inner.dropped += size - LINE_OVERHEAD;
            return;
        }
        inner.kept += size;
        inner.lines.push(Line {
            time: now(),
            source,
            level: level.into(),
            message,
            fields,
        });
    }

    /// Splits printed bytes into lines. Once the log is full, bytes are only counted: a
    /// flood costs no memory beyond the capacity, however it is cut into lines.
    fn write_bytes(&self, source: Source, bytes: &[u8]) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.is_full(self.capacity) {
            inner.dropped += bytes.len();
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let partial = match source {
                Source::Stderr => &mut inner.partial_stderr,
                _ => &mut inner.partial_stdout,
            };
            let room = MAX_LINE - partial.len();
            let (line, complete) = match rest.iter().take(room).position(|b| *b == b'\n') {
                Some(end) => {
                    partial.extend_from_slice(&rest[..end]);
                    rest = &rest[end + 1..];
                    (std::mem::take(partial), true)
                }
                None if rest.len() >= room => {
                    // An endless line without a newline is cut into pieces rather than held.
                    partial.extend_from_slice(&rest[..room]);
                    rest = &rest[room..];
                    (std::mem::take(partial), true)
                }
                None => {
                    partial.extend_from_slice(rest);
                    rest = &[];
                    (Vec::new(), false)
                }
            };
            if complete {
                let text = String::from_utf8_lossy(&line).into_owned();
                Self::push_locked(inner, self.capacity, source, "info", text, Vec::new());
                if inner.is_full(self.capacity) {
                    inner.dropped += rest.len();
                    return;
                }
            }
        }
    }

    /// The complete lines kept so far from the `from`-th on (a follower's next batch: lines are
    /// only ever appended, so a line's place never changes).
    pub fn lines_from(&self, from: usize) -> Vec<Line> {
        self.lock()
            .lines
            .get(from..)
            .map(<[Line]>::to_vec)
            .unwrap_or_default()
    }

    /// The lines so far, plus a closing note when some were dropped.
    pub fn finish(&self) -> Vec<Line> {
        let (stdout, stderr) = {
            let mut inner = self.lock();
            (
                std::mem::take(&mut inner.partial_stdout),
                std::mem::take(&mut inner.partial_stderr),
            )
        };
        for (source, rest) in [(Source::Stdout, stdout), (Source::Stderr, stderr)] {
            if !rest.is_empty() {
                self.push(
                    source,
                    "info",
                    String::from_utf8_lossy(&rest).into_owned(),
                    Vec::new(),
                );
            }
        }
        let mut inner = self.lock();
        let mut lines = inner.lines.clone();
        if inner.dropped > 0 {
            lines.push(Line {
                time: now(),
                source: Source::Host,
                level: "warn".into(),
                message: format!(
                    "the step's log is limited to {} bytes: {} more bytes of output were dropped",
                    self.capacity, inner.dropped
                ),
                fields: Vec::new(),
            });
            inner.dropped = 0;
        }
        lines
    }

    /// A stdout or stderr for the guest that writes into this log.
    pub fn pipe(&self, source: Source) -> LogPipe {
        LogPipe {
            log: self.clone(),
            source,
        }
    }
}

/// The guest's stdout or stderr. Accepts every byte (so a chatty plugin is never broken by a
/// full log); the log keeps what fits.
#[derive(Clone)]
pub struct LogPipe {
    log: StepLog,
    source: Source,
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.log.write_bytes(self.source, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_printed_output_into_lines_and_keeps_the_tail() {
        let log = StepLog::new(1024);
        log.write_bytes(Source::Stdout, b"one\ntw");
        log.write_bytes(Source::Stdout, b"o\nthree");
        let lines = log.finish();
        let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["one", "two", "three"]);
    }

    #[test]
    fn a_flood_of_empty_lines_is_bounded_like_any_other() {
        let log = StepLog::new(64 * 1024);
        // 16 MiB of newlines in writes of 1 MiB: every line is empty.
        let newlines = vec![b'\n'; 1 << 20];
        for _ in 0..16 {
            log.write_bytes(Source::Stdout, &newlines);
        }
        let lines = log.finish();
        assert!(
            lines.len() <= 64 * 1024 / LINE_OVERHEAD + 1,
            "{}",
            lines.len()
        );
        let note = lines.last().expect("a note");
        assert_eq!(note.source, Source::Host);
        assert!(note.message.contains("more bytes"), "{}", note.message);
    }

    #[test]
    fn a_line_without_an_end_is_cut_in_pieces() {
        let log = StepLog::new(1 << 20);
        log.write_bytes(Source::Stderr, &vec![b'y'; MAX_LINE * 2 + 10]);
        let lines = log.finish();
        let sizes: Vec<usize> = lines.iter().map(|l| l.message.len()).collect();
        assert_eq!(sizes, [MAX_LINE, MAX_LINE, 10]);
    }

    #[test]
    fn a_flood_is_cut_at_the_capacity_and_said_so() {
        let log = StepLog::new(10 * (LINE_OVERHEAD + 10));
        for _ in 0..50 {
            log.write_bytes(Source::Stdout, b"0123456789\n");
        }
        let lines = log.finish();
        assert_eq!(
            lines.iter().filter(|l| l.source == Source::Stdout).count(),
            10
        );
        let note = lines.last().expect("a note");
        assert_eq!(note.source, Source::Host);
        // The 40 lines refused, and the 40 newlines of the writes that came once it was full.
        assert!(note.message.contains("440 more bytes"), "{}", note.message);
    }
}
