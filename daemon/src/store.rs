//! The store: resources in an embedded redb file, with resource versions and an event log.
//!
//! Every change gets the next sequence number of the event log; that number is also the new
//! `metadata.resourceVersion` of the object (as etcd's mod revision is in Kubernetes), so a
//! watch from sequence N sees exactly the changes after N. A batch of changes is one redb write
//! transaction: all land, durably, or none do.
//!
//! redb calls block, so async callers use [`Store::read_async`] / [`Store::write_async`], which
//! run them on tokio's blocking pool.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::resource::{Kind, LabelSelector, Object};

pub mod kubernetes;

/// The layout version of the database file this binary writes and understands.
pub const SCHEMA_VERSION: u64 = 1;

/// How many events the log keeps; a watch that starts further back must list again.
const EVENTS_KEPT: u64 = 100_000;
/// The most of the database file redb keeps in memory.
const CACHE_BYTES: usize = 16 << 20;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Below this much free space on the data file's disk, the store reports itself unready.
const MIN_FREE_BYTES: u64 = 4 << 20;

/// `Kind/project/name` → object JSON.
const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// sequence → event JSON.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// SHA-256 of an API token (hex) → the token's record as JSON (never the token itself). Not
/// resources: they are not in the event log and no watch sees them.
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// The Freight of each project and origin, newest first: `project \0 origin \0 age \0 name`,
/// where `age` counts down as the Freight's time goes up (see [`freight_order_key`]). Kept in
/// the transaction of every Freight write, so a pass that wants an origin's newest available
/// Freight reads a few of them, not the project's 100,000.
const FREIGHT_ORDER: TableDefinition<&str, ()> = TableDefinition::new("freight_by_origin");
/// The Freight of each project by alias: `project \0 alias \0 name` (admission keeps an alias
/// to one Freight; the name in the key keeps the index right even if a file breaks that). A
/// lookup by alias (`dray promote --freight ALIAS`, admission's check that a new alias is free)
/// reads one row, not the project's every Freight.
const FREIGHT_ALIAS: TableDefinition<&str, ()> = TableDefinition::new("freight_by_alias");
/// In META: the sequence up to which [`FREIGHT_ORDER`] and [`FREIGHT_ALIAS`] are known to be in
/// step with the objects. Written with `last_seq` at every commit; a file whose two differ (one
/// an older Dray wrote, which knows the key of its own indexes only) has the indexes rebuilt when
/// it opens.
const FREIGHT_INDEXES_SEQ: &str = "freight_indexes_seq";

/// What can go wrong in the store; callers branch on `Conflict`, `NotFound` and `Gone`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file was written by a newer Dray with a layout this binary does not know.
    #[error(
        "the data file {path} has schema version {found}, newer than the {SCHEMA_VERSION} this dray understands: upgrade dray, or point --data-dir elsewhere"
    )]
    NewerSchema { path: String, found: u64 },
    /// Another Dray (or another copy of this one) has the file open.
    #[error(
        "the data file {path} is in use by another process (is another `dray serve` running on this data dir?)"
    )]
    InUse { path: String },
    /// Compare-and-set failed: the object changed since the caller read it.
    #[error(
        "{kind} {name:?} was changed by someone else (resource version {found}, expected {expected}): read it again and retry"
    )]
    Conflict {
        kind: Kind,
        name: String,
        expected: String,
        found: String,
    },
    /// On Kubernetes: the mirror held an older version than the API server (its watch had not
    /// brought the newer one yet), so a write based on it was refused. The store reads the
    /// object again; [`Store::write_retrying`] then tries again by itself.
    #[error(
        "{kind} {project}/{name} changed in the cluster since this replica last saw it: read it again and retry"
    )]
    Stale {
        kind: Kind,
        project: String,
        name: String,
    },
    #[error("{kind} {name:?} not found in project {project:?}")]
    NotFound {
        kind: Kind,
        project: String,
        name: String,
    },
    /// A watch asked for events older than the log keeps.
    #[error(
        "events before sequence {oldest} are no longer kept: list again and watch from the list's sequence"
    )]
    Gone { oldest: u64 },
    #[error("database error: {0}")]
    Database(String),
    /// Reading or writing the file failed (a full disk, an I/O error). The store reopens the
    /// file by itself once it can; nothing committed is lost.
    #[error(
        "the data file cannot be written or read ({0}); is the disk full? Dray retries by itself once there is room"
    )]
    Unavailable(String),
    #[error("stored object {key} is unreadable: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
}

impl From<crate::resource::status::StatusError> for StoreError {
    /// A status or spec that does not read as its type is an unreadable stored object.
    fn from(e: crate::resource::status::StatusError) -> StoreError {
        StoreError::Corrupt {
            key: format!("{}/{}/{} ({})", e.kind, e.project, e.name, e.part),
            source: e.source,
        }
    }
}

impl StoreError {
    /// Whether the file itself failed (a full disk, an I/O error): the store is then reopened,
    /// and writers that must not lose their change wait for it ([`Store::write_retrying`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// A redb storage error as a store error: the file's failures apart from the rest.
fn storage(e: redb::StorageError) -> StoreError {
    match e {
        redb::StorageError::Io(_)
        | redb::StorageError::PreviousIo
        | redb::StorageError::DatabaseClosed => StoreError::Unavailable(e.to_string()),
        other => StoreError::Database(other.to_string()),
    }
}

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        storage(e)
    }
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        match e {
            redb::TransactionError::Storage(s) => storage(s),
            other => StoreError::Database(other.to_string()),
        }
    }
}

impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        match e {
            redb::TableError::Storage(s) => storage(s),
            other => StoreError::Database(other.to_string()),
        }
    }
}

impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        match e {
            redb::CommitError::Storage(s) => storage(s),
            other => StoreError::Database(other.to_string()),
        }
    }
}

/// One entry of the event log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The object after the change (before it, for a deletion).
    pub object: Object,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Created,
    Configured,
    Unchanged,
}

/// How a put treats the stored object's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMode {
    /// Keep the stored status (a user's apply: status belongs to the server).
    Keep,
    /// Replace it with the one given (the engine writing status).
    Replace,
}

fn key(kind: Kind, project: &str, name: &str) -> String {
    format!("{}/{project}/{name}", kind.as_str())
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The store handle: cheap to clone, shared by the API and the engine.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The open file; `None` after the file failed, until it is reopened. A std lock: held
    /// only to clone or replace the handle, never across a transaction.
    db: std::sync::RwLock<Option<Arc<Database>>>,
    path: std::path::PathBuf,
    /// The last committed sequence; watchers wait on it instead of polling the file.
    changes: watch::Sender<u64>,
    /// Group commit ([`Store::write`]): how many writes have committed (without waiting for
    /// the disk), and how many of them a durable commit has covered.
    committed: std::sync::atomic::AtomicU64,
    durable: std::sync::Mutex<u64>,
    /// On Kubernetes: the API server every write goes to first; the database is then a mirror
    /// of the cluster kept in memory ([`kubernetes`]).
    remote: Option<Arc<kubernetes::remote::Remote>>,
}

impl Store {
    /// Opens (or creates) the database file, checking its schema version.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let (db, last_seq) = Store::open_file(path)?;
        let (changes, _) = watch::channel(last_seq);
        Ok(Store {
            inner: Arc::new(Inner {
                db: std::sync::RwLock::new(Some(Arc::new(db))),
                path: path.to_path_buf(),
                changes,
                committed: std::sync::atomic::AtomicU64::new(0),
                durable: std::sync::Mutex::new(0),
                remote: None,
            }),
        })
    }

    /// A store whose database is a mirror in memory of a Kubernetes cluster's objects: every
    /// write goes to `remote` (the API server) first; [`kubernetes::mirror`] fills it and keeps
    /// it current from watches.
    pub fn open_mirror(remote: Arc<kubernetes::remote::Remote>) -> Result<Store, StoreError> {
        let db = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| StoreError::Database(format!("cannot make the mirror: {e}")))?;
        let tx = db.begin_write()?;
        {
            tx.open_table(META)?
                .insert("schema_version", SCHEMA_VERSION)?;
            tx.open_table(OBJECTS)?;
            tx.open_table(EVENTS)?;
            tx.open_table(TOKENS)?;
            tx.open_table(FREIGHT_ORDER)?;
            tx.open_table(FREIGHT_ALIAS)?;
        }
        tx.commit()?;
        let (changes, _) = watch::channel(0);
        Ok(Store {
            inner: Arc::new(Inner {
                db: std::sync::RwLock::new(Some(Arc::new(db))),
                path: std::path::PathBuf::from("(mirror of a Kubernetes cluster)"),
                changes,
                committed: std::sync::atomic::AtomicU64::new(0),
                durable: std::sync::Mutex::new(0),
                remote: Some(remote),
            }),
        })
    }

    /// Writes what a watch of the cluster brought into the mirror, without sending anything to
    /// the API server (`f` calls [`WriteTx::mirror_put`] and [`WriteTx::mirror_delete`]).
    pub fn mirror_write<T>(
        &self,
        f: impl FnOnce(&mut WriteTx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.db()?;
        let mut failure = None;
        let written = self.write_on(&db, None, f, &mut failure);
        if let Some(e) = failure {
            self.failed(&db, &e);
        }
        written
    }

    /// Opens the file and checks its schema; returns it with its last sequence.
    fn open_file(path: &Path) -> Result<(Database, u64), StoreError> {
        let shown = path.display().to_string();
        // redb caches up to 1 GiB of pages by default; a daemon that reads every Freight now
        // and then (garbage collection) would keep them all in memory. 16 MiB holds the hot set
        // (Stages, Promotions); see the scale benchmark in BENCHMARKS.md.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                    path: shown.clone(),
                },
                other => StoreError::Database(format!("cannot open {shown}: {other}")),
            })?;
        // Secrets live here: readable by the daemon's user only, also when an older Dray
        // created the file with the umask's mode.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| StoreError::Database(format!("cannot make {shown} private (mode 0600): {e}")),
            )?;
        }
        let tx = db.begin_write()?;
        let last_seq = {
            let mut meta = tx.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path: shown,
                        found: v,
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
            }
            tx.open_table(OBJECTS)?;
            tx.open_table(EVENTS)?;
            tx.open_table(TOKENS)?;
            tx.open_table(FREIGHT_ORDER)?;
            tx.open_table(FREIGHT_ALIAS)?;
            let last_seq = meta.get("last_seq")?.map_or(0, |v| v.value());
            if meta.get(FREIGHT_INDEXES_SEQ)?.map(|v| v.value()) != Some(last_seq) {
                let indexed = index_freight(&tx)?;
                tracing::info!(path = %shown, freight = indexed, "indexed the Freight by origin and alias");
                meta.insert(FREIGHT_INDEXES_SEQ, last_seq)?;
            }
            last_seq
        };
        tx.commit()?;
        Ok((db, last_seq))
    }

    /// The open file, reopening it if it failed earlier (which works once every transaction
    /// of the failed handle has ended and the disk takes writes again).
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        let slot = self
            .inner
            .db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        drop(slot);
        let mut slot = self
            .inner
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        match Store::open_file(&self.inner.path) {
            Ok((db, _)) => {
                tracing::warn!(path = %self.inner.path.display(), "the data file is open again");
                let db = Arc::new(db);
                *slot = Some(db.clone());
                Ok(db)
            }
            Err(StoreError::InUse { .. }) => Err(StoreError::Unavailable(
                "it failed and is being reopened".into(),
            )),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }

    /// After `failed` (the handle a transaction used) reported an I/O error: drops it, so the
    /// file is reopened (redb refuses every later write on a handle that saw one).
    fn failed(&self, failed: &Arc<Database>, error: &StoreError) {
        // A mirror lives in memory: no file to reopen, and the API server being unreachable
        // says nothing about it.
        if self.inner.remote.is_some() {
            return;
        }
        let mut slot = self
            .inner
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.as_ref().is_some_and(|db| Arc::ptr_eq(db, failed)) {
            tracing::error!(path = %self.inner.path.display(), %error, "the data file failed; it will be reopened");
            *slot = None;
        }
    }

    /// Whether the store can be used now: the file opens (reopening it if it failed) and reads,
    /// and its disk has room for a commit. For `/readyz`.
    pub fn check(&self) -> Result<(), StoreError> {
        let dir = self.inner.path.parent().unwrap_or(Path::new("."));
        if self.inner.remote.is_none()
            && let Ok(fs) = rustix::fs::statvfs(dir)
        {
            let free = fs.f_bavail.saturating_mul(fs.f_frsize);
            if free < MIN_FREE_BYTES {
                return Err(StoreError::Unavailable(format!(
                    "{} has {} KiB free",
                    dir.display(),
                    free >> 10
                )));
            }
        }
        let db = self.db()?;
        let checked = db
            .begin_read()
            .map_err(StoreError::from)
            .and_then(|tx| tx.open_table(META).map(|_| ()).map_err(StoreError::from));
        if let Err(e) = &checked
            && e.is_unavailable()
        {
            self.failed(&db, e);
        }
        checked
    }

    /// Waits (up to `limit`) until this is the last handle of the database, so that dropping it
    /// closes the file: work cancelled at shutdown may still be finishing a read or write on
    /// the blocking pool. True if it is the last one.
    pub async fn wait_until_last(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while Arc::strong_count(&self.inner) > 1 {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }

    /// The sequence of the last committed change.
    pub fn last_seq(&self) -> u64 {
        *self.inner.changes.borrow()
    }

    /// Writes a copy of the whole store, as of one moment, to a new file at `path` (mode 0600),
    /// while readers and writers go on: one read transaction is copied table by table. The copy
    /// opens with [`Store::open`] like the original; it holds the Secrets and the tokens'
    /// hashes, so it is as private as the data file.
    pub fn backup(&self, path: &Path) -> Result<(), StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let shown = path.display().to_string();
        let cannot = |e: std::io::Error| StoreError::Database(format!("cannot write {shown}: {e}"));
        // Created (not truncated) private first; redb then writes into it.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(cannot)?;
        let copy = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| StoreError::Database(format!("cannot create {shown}: {e}")))?;
        self.read(|r| {
            let w = copy.begin_write()?;
            {
                copy_table(&r.tx.open_table(META)?, &mut w.open_table(META)?)?;
                copy_table(&r.tx.open_table(OBJECTS)?, &mut w.open_table(OBJECTS)?)?;
                copy_table(&r.tx.open_table(EVENTS)?, &mut w.open_table(EVENTS)?)?;
                copy_table(&r.tx.open_table(TOKENS)?, &mut w.open_table(TOKENS)?)?;
                copy_table(
                    &r.tx.open_table(FREIGHT_ORDER)?,
                    &mut w.open_table(FREIGHT_ORDER)?,
                )?;
                copy_table(
                    &r.tx.open_table(FREIGHT_ALIAS)?,
                    &mut w.open_table(FREIGHT_ALIAS)?,
                )?;
            }
            w.commit()?;
            Ok(())
        })
    }

    /// The data file's size in bytes (0 if it cannot be read).
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.inner.path).map_or(0, |m| m.len())
    }

    /// A receiver that changes whenever a batch commits.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Runs `f` over a consistent snapshot.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&ReadTx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.db()?;
        let read = db
            .begin_read()
            .map_err(StoreError::from)
            .and_then(|tx| f(&ReadTx { tx }));
        if let Err(e) = &read
            && e.is_unavailable()
        {
            self.failed(&db, e);
        }
        read
    }

    /// Runs `f` in one write transaction, committed (durably) only if `f` returns `Ok`.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut WriteTx) -> Result<T, E>,
    ) -> Result<T, E> {
        let db = self.db()?;
        let mut failure = None;
        let written = self.write_on(&db, self.inner.remote.clone(), f, &mut failure);
        if let Some(e) = failure {
            self.failed(&db, &e);
        }
        written
    }

    /// [`Store::write`] on one handle; a file failure is also left in `failure`.
    fn write_on<T, E: From<StoreError>>(
        &self,
        db: &Database,
        remote: Option<Arc<kubernetes::remote::Remote>>,
        f: impl FnOnce(&mut WriteTx) -> Result<T, E>,
        failure: &mut Option<StoreError>,
    ) -> Result<T, E> {
        // Notes a file failure on its way out.
        let mut seen = |e: StoreError| {
            if e.is_unavailable() {
                *failure = Some(StoreError::Unavailable(e.to_string()));
            }
            E::from(e)
        };
        let tx = db.begin_write().map_err(|e| seen(e.into()))?;
        // The sequence comes from the file, inside this transaction: the in-memory copy is
        // updated only after the previous writer's commit, so a writer that starts in between
        // would reuse its numbers (and overwrite its events).
        let last_seq = tx
            .open_table(META)
            .map_err(|e| seen(e.into()))?
            .get("last_seq")
            .map_err(|e| seen(e.into()))?
            .map_or(0, |v| v.value());
        let mut w = WriteTx {
            tx,
            seq: last_seq,
            tokens_changed: false,
            remote,
        };
        let out = f(&mut w)?;
        let seq = w.seq;
        if seq != last_seq || w.tokens_changed {
            {
                let mut meta = w.tx.open_table(META).map_err(|e| seen(e.into()))?;
                meta.insert("last_seq", seq).map_err(|e| seen(e.into()))?;
                meta.insert(FREIGHT_INDEXES_SEQ, seq)
                    .map_err(|e| seen(e.into()))?;
                if seq / 1024 != last_seq / 1024 && seq > EVENTS_KEPT {
                    let mut events = w.tx.open_table(EVENTS).map_err(|e| seen(e.into()))?;
                    events
                        .retain_in(..seq - EVENTS_KEPT, |_, _| false)
                        .map_err(|e| seen(e.into()))?;
                }
            }
            // Group commit: the transaction commits without waiting for the disk, then one
            // durable commit covers it and every other that committed meanwhile, so concurrent
            // writers (a dozen Promotions recording their steps) share a disk flush instead of
            // queueing for one each. A write returns only once it is on disk.
            w.tx.set_durability(redb::Durability::None)
                .map_err(|e| seen(StoreError::Database(e.to_string())))?;
            w.tx.commit().map_err(|e| seen(e.into()))?;
            let ticket = self
                .inner
                .committed
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1;
            self.make_durable(db, ticket).map_err(seen)?;
            // Two writers may get here in either order; the watched value never goes back.
            self.inner.changes.send_if_modified(|last| {
                let newer = seq > *last;
                if newer {
                    *last = seq;
                }
                newer
            });
        } else {
            w.tx.abort().map_err(|e| seen(e.into()))?;
        }
        Ok(out)
    }

    /// Returns once write `ticket` (counted in `committed`) is on disk: a durable commit made
    /// after it covers it. One caller at a time makes that commit, for every write committed
    /// before it; the others find theirs covered and return. If the disk fails, the writes not
    /// yet durable are lost with the handle the store drops (redb keeps a non-durable commit
    /// in memory only), as a failed write should be.
    fn make_durable(&self, db: &Database, ticket: u64) -> Result<(), StoreError> {
        let mut durable = self
            .inner
            .durable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *durable >= ticket {
            return Ok(());
        }
        // Writes counted up to here committed before this durable commit begins.
        let covers = self
            .inner
            .committed
            .load(std::sync::atomic::Ordering::SeqCst);
        let tx = db.begin_write()?;
        tx.commit()?;
        *durable = covers;
        Ok(())
    }

    /// [`Store::write_async`] for a change that must not be lost (a Promotion's or an
    /// AnalysisRun's progress): while the file is unavailable (a full disk), waits and tries
    /// again, 1 s at first, doubling up to 30 s. Other errors come back at once.
    pub async fn write_retrying<T: Send + 'static>(
        &self,
        f: impl Fn(&mut WriteTx) -> Result<T, StoreError> + Send + Sync + 'static,
    ) -> Result<T, StoreError> {
        let f = Arc::new(f);
        let mut wait = std::time::Duration::from_secs(1);
        let mut stale_retries = 10;
        loop {
            let attempt = f.clone();
            match self.write_async(move |tx| attempt(tx)).await {
                Err(StoreError::Stale {
                    kind,
                    project,
                    name,
                }) if stale_retries > 0 => {
                    stale_retries -= 1;
                    self.refresh(kind, &project, &name).await?;
                }
                Err(e) if e.is_unavailable() => {
                    tracing::warn!(error = %e, retry_in = ?wait, "a change waits for the data file");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(30));
                }
                other => return other,
            }
        }
    }

    /// On Kubernetes: reads `kind` `project`/`name` from the API server into the mirror (after a
    /// [`StoreError::Stale`]); elsewhere nothing to do.
    pub async fn refresh(&self, kind: Kind, project: &str, name: &str) -> Result<(), StoreError> {
        let Some(remote) = self.inner.remote.clone() else {
            return Ok(());
        };
        let fresh = remote.get(kind, project, name).await?;
        let store = self.clone();
        let (project, name) = (project.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || {
            store.mirror_write(|tx| {
                match &fresh {
                    Some(object) => tx.mirror_put(object)?,
                    None => tx.mirror_delete(kind, &project, &name, None)?,
                };
                Ok(())
            })
        })
        .await
        .map_err(|e| StoreError::Database(format!("store task failed: {e}")))?
    }

    pub async fn read_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTx) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read(f))
            .await
            .map_err(|e| StoreError::Database(format!("store task failed: {e}")))?
    }

    pub async fn write_async<T: Send + 'static, E: From<StoreError> + Send + 'static>(
        &self,
        f: impl FnOnce(&mut WriteTx) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write(f))
            .await
            .map_err(|e| E::from(StoreError::Database(format!("store task failed: {e}"))))?
    }
}

/// Copies every row of `from` into `to`.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &impl ReadableTable<K, V>,
    to: &mut redb::Table<K, V>,
) -> Result<(), StoreError>
where
    for<'a> K::SelfType<'a>: std::borrow::Borrow<K::SelfType<'a>>,
    for<'a> V::SelfType<'a>: std::borrow::Borrow<V::SelfType<'a>>,
{
    for row in from.iter()? {
        let (k, v) = row?;
        to.insert(k.value(), v.value())?;
    }
    Ok(())
}

/// Reads shared by read and write transactions.
pub trait Reader {
    fn get(&self, kind: Kind, project: &str, name: &str) -> Result<Option<Object>, StoreError>;
    /// Objects of `kind` in `project` (all projects when `None`), in name order, that match
    /// `selector` when one is given.
    fn list(
        &self,
        kind: Kind,
        project: Option<&str>,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Object>, StoreError>;
    /// Objects of `kind` in `project` whose names start with `name_prefix`, in name order, that
    /// match `selector`: a range of the store, not the project's every object (a Stage's
    /// Promotions are named `STAGE.ULID.FREIGHT`).
    fn list_prefixed(
        &self,
        kind: Kind,
        project: &str,
        name_prefix: &str,
        selector: Option<&LabelSelector>,
    ) -> Result<Vec<Object>, StoreError>;
    /// Calls `f` with each object of `kind` in `project` (all projects when `None`), in name
    /// order, one at a time: for passes over many objects that keep little of each.
    fn visit(
        &self,
        kind: Kind,
        project: Option<&str>,
        f: &mut dyn FnMut(Object),
    ) -> Result<(), StoreError>;
    /// Calls `f` with the stored JSON of each object of `kind` in `project`, in name order: for
    /// passes that read a few fields of many objects into a type of their own, without
    /// building the objects.
    fn visit_json(
        &self,
        kind: Kind,
        project: &str,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), StoreError>;
    /// The Freight of `origin` (as [`crate::rules::availability::origin_key`] writes it) in
    /// `project`, newest first (equal times by name): `skip` of them passed over, then at most
    /// `limit`. Read through an index, so the cost is what is returned, not the project's size.
    fn freight_newest_first(
        &self,
        project: &str,
        origin: &str,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<Object>, StoreError>;

    /// The names of the Freight of `project` with alias `alias` (one, unless a file breaks
    /// admission's rule), through the store's index.
    fn freight_named_by_alias(&self, project: &str, alias: &str)
    -> Result<Vec<String>, StoreError>;
}

/// Where Freight `object` sits in [`FREIGHT_ORDER`]. Its time is the one availability sorts by
/// (`discoveredAt`, else the creation time), written as the nanoseconds left until `u64::MAX`
/// in fixed-width hex, so that the newest comes first in byte order.
fn freight_order_key(object: &Object) -> String {
    use crate::rules::availability::{freight_origin, freight_time, origin_key};
    let nanos = freight_time(object)
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    format!(
        "{}\0{}\0{:016x}\0{}",
        object.project(),
        origin_key(&freight_origin(object)),
        u64::MAX - nanos,
        object.name()
    )
}

/// Where Freight `object` sits in [`FREIGHT_ALIAS`], if it has an alias.
fn freight_alias_key(object: &Object) -> Option<String> {
    let alias = object
        .metadata
        .labels
        .get(crate::resource::freight::ALIAS_LABEL)?;
    Some(alias_prefix(object.project(), alias) + object.name())
}

fn alias_prefix(project: &str, alias: &str) -> String {
    format!("{project}\0{alias}\0")
}

/// Builds [`FREIGHT_ORDER`] and [`FREIGHT_ALIAS`] anew from the stored Freight; returns how
/// many Freight there are.
fn index_freight(tx: &redb::WriteTransaction) -> Result<usize, StoreError> {
    tx.delete_table(FREIGHT_ORDER)?;
    tx.delete_table(FREIGHT_ALIAS)?;
    let mut order = tx.open_table(FREIGHT_ORDER)?;
    let mut aliases = tx.open_table(FREIGHT_ALIAS)?;
    let mut count = 0;
    let mut failed = None;
    scan_each(
        &tx.open_table(OBJECTS)?,
        Kind::Freight,
        None,
        &mut |freight| {
            let indexed = order
                .insert(freight_order_key(&freight).as_str(), ())
                .and_then(|_| match freight_alias_key(&freight) {
                    Some(k) => aliases.insert(k.as_str(), ()).map(|_| ()),
                    None => Ok(()),
                });
            match indexed {
                Ok(()) => count += 1,
                Err(e) => failed = Some(e),
            }
        },
    )?;
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(count),
    }
}

fn freight_in_order<O, T>(
    order: &O,
    objects: &T,
    (project, origin): (&str, &str),
    skip: usize,
    limit: usize,
) -> Result<Vec<Object>, StoreError>
where
    O: ReadableTable<&'static str, ()>,
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let prefix = format!("{project}\0{origin}\0");
    let mut out = Vec::new();
    for entry in order.range(prefix.as_str()..)?.skip(skip) {
        let (k, _) = entry?;
        let Some(rest) = k.value().strip_prefix(&prefix) else {
            break;
        };
        if out.len() == limit {
            break;
        }
        let name = rest.rsplit('\0').next().unwrap_or_default();
        // The index is written with the objects; a row without one would be a bug, and is
        // passed over rather than failing every pass.
        if let Some(freight) = lookup(objects, Kind::Freight, project, name)? {
            out.push(freight);
        }
    }
    Ok(out)
}

fn scan_each<T: ReadableTable<&'static str, &'static [u8]>>(
    table: &T,
    kind: Kind,
    project: Option<&str>,
    f: &mut dyn FnMut(Object),
) -> Result<(), StoreError> {
    let prefix = match project {
        Some(p) => format!("{}/{p}/", kind.as_str()),
        None => format!("{}/", kind.as_str()),
    };
    for entry in table.range(prefix.as_str()..)? {
        let (k, v) = entry?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        f(decode(k.value(), v.value())?);
    }
    Ok(())
}

fn scan_json<T: ReadableTable<&'static str, &'static [u8]>>(
    table: &T,
    kind: Kind,
    project: &str,
    f: &mut dyn FnMut(&[u8]),
) -> Result<(), StoreError> {
    let prefix = format!("{}/{project}/", kind.as_str());
    for entry in table.range(prefix.as_str()..)? {
        let (k, v) = entry?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        f(v.value());
    }
    Ok(())
}

fn scan<T: ReadableTable<&'static str, &'static [u8]>>(
    table: &T,
    kind: Kind,
    project: Option<&str>,
    name_prefix: &str,
    selector: Option<&LabelSelector>,
) -> Result<Vec<Object>, StoreError> {
    let prefix = match project {
        Some(p) => format!("{}/{p}/{name_prefix}", kind.as_str()),
        None => format!("{}/", kind.as_str()),
    };
    let mut out = Vec::new();
    for entry in table.range(prefix.as_str()..)? {
        let (k, v) = entry?;
        if !k.value().starts_with(&prefix) {
            break;
        }
        // With a selector, the labels are read first and only a match is decoded whole: a
        // Stage's queue is a few Promotions among the project's thousands.
        if let Some(selector) = selector
            && let Ok(labels) = serde_json::from_slice::<LabelsOnly>(v.value())
            && !selector.matches(&labels.metadata.labels)
        {
            continue;
        }
        let object = decode(k.value(), v.value())?;
        if selector.is_none_or(|s| s.matches(&object.metadata.labels)) {
            out.push(object);
        }
    }
    Ok(out)
}

/// An object's labels and nothing else: the rest of its JSON is skipped, not built.
#[derive(Deserialize)]
struct LabelsOnly {
    #[serde(default)]
    metadata: LabelsOf,
}

#[derive(Deserialize, Default)]
struct LabelsOf {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

fn lookup<T: ReadableTable<&'static str, &'static [u8]>>(
    table: &T,
    kind: Kind,
    project: &str,
    name: &str,
) -> Result<Option<Object>, StoreError> {
    let k = key(kind, project, name);
    let found = table.get(k.as_str())?;
    found.map(|v| decode(&k, v.value())).transpose()
}

fn decode(key: &str, bytes: &[u8]) -> Result<Object, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: key.to_string(),
        source,
    })
}

pub struct ReadTx {
    tx: redb::ReadTransaction,
}

fn decode_token(key: &str, bytes: &[u8]) -> Result<crate::auth::tokens::Token, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: format!("token {}", &key[..key.len().min(8)]),
        source,
    })
}

fn all_tokens<T: ReadableTable<&'static str, &'static [u8]>>(
    table: &T,
) -> Result<Vec<(String, crate::auth::tokens::Token)>, StoreError> {
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        out.push((k.value().to_string(), decode_token(k.value(), v.value())?));
    }
    Ok(out)
}

impl ReadTx {
    /// The token stored under `hash`.
    pub fn token(&self, hash: &str) -> Result<Option<crate::auth::tokens::Token>, StoreError> {
        let table = self.tx.open_table(TOKENS)?;
        let found = table.get(hash)?;
        found.map(|v| decode_token(hash, v.value())).transpose()
    }

    /// Every token with its hash.
    pub fn tokens(&self) -> Result<Vec<(String, crate::auth::tokens::Token)>, StoreError> {
        all_tokens(&self.tx.open_table(TOKENS)?)
    }

    /// Events after `seq`, at most `limit`; `Gone` if the log no longer reaches back that far.
    pub fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let events = self.tx.open_table(EVENTS)?;
        if let Some((first, _)) = events.first()?
            && seq + 1 < first.value()
        {
            return Err(StoreError::Gone {
                oldest: first.value(),
            });
        }
        let mut out = Vec::new();
        for entry in events.range(seq + 1..)?.take(limit) {
            let (k, v) = entry?;
            let event: Event =
                serde_json::from_slice(v.value()).map_err(|source| StoreError::Corrupt {
                    key: format!("event {}", k.value()),
                    source,
                })?;
            out.push(event);
        }
        Ok(out)
    }
}

/// The [`Reader`] of a transaction: read and write transactions read alike (redb's read-only
/// and writable tables are both `ReadableTable`s).
macro_rules! reader_of_transaction {
    ($tx:ty) => {
        impl Reader for $tx {
            fn get(
                &self,
                kind: Kind,
                project: &str,
                name: &str,
            ) -> Result<Option<Object>, StoreError> {
                lookup(&self.tx.open_table(OBJECTS)?, kind, project, name)
            }

            fn list(
                &self,
                kind: Kind,
                project: Option<&str>,
                selector: Option<&LabelSelector>,
            ) -> Result<Vec<Object>, StoreError> {
                scan(&self.tx.open_table(OBJECTS)?, kind, project, "", selector)
            }

            fn list_prefixed(
                &self,
                kind: Kind,
                project: &str,
                name_prefix: &str,
                selector: Option<&LabelSelector>,
            ) -> Result<Vec<Object>, StoreError> {
                scan(
                    &self.tx.open_table(OBJECTS)?,
                    kind,
                    Some(project),
                    name_prefix,
                    selector,
                )
            }

            fn visit(
                &self,
                kind: Kind,
                project: Option<&str>,
                f: &mut dyn FnMut(Object),
            ) -> Result<(), StoreError> {
                scan_each(&self.tx.open_table(OBJECTS)?, kind, project, f)
            }

            fn visit_json(
                &self,
                kind: Kind,
                project: &str,
                f: &mut dyn FnMut(&[u8]),
            ) -> Result<(), StoreError> {
                scan_json(&self.tx.open_table(OBJECTS)?, kind, project, f)
            }

            fn freight_newest_first(
                &self,
                project: &str,
                origin: &str,
                skip: usize,
                limit: usize,
            ) -> Result<Vec<Object>, StoreError> {
                freight_in_order(
                    &self.tx.open_table(FREIGHT_ORDER)?,
                    &self.tx.open_table(OBJECTS)?,
                    (project, origin),
                    skip,
                    limit,
                )
            }

            fn freight_named_by_alias(
                &self,
                project: &str,
                alias: &str,
            ) -> Result<Vec<String>, StoreError> {
                let prefix = alias_prefix(project, alias);
                let mut names = Vec::new();
                for entry in self
                    .tx
                    .open_table(FREIGHT_ALIAS)?
                    .range(prefix.as_str()..)?
                {
                    let (k, _) = entry?;
                    match k.value().strip_prefix(&prefix) {
                        Some(name) => names.push(name.to_string()),
                        None => break,
                    }
                }
                Ok(names)
            }
        }
    };
}

reader_of_transaction!(ReadTx);
reader_of_transaction!(WriteTx);

pub struct WriteTx {
    tx: redb::WriteTransaction,
    /// The last sequence used in this transaction.
    seq: u64,
    /// Whether a token was written: a change to commit though no sequence was used.
    tokens_changed: bool,
    /// On Kubernetes: where puts and deletes go first.
    remote: Option<Arc<kubernetes::remote::Remote>>,
}

impl WriteTx {
    /// Every token with its hash.
    pub fn tokens(&self) -> Result<Vec<(String, crate::auth::tokens::Token)>, StoreError> {
        all_tokens(&self.tx.open_table(TOKENS)?)
    }

    /// Stores `token` under `hash`.
    pub fn put_token(
        &mut self,
        hash: &str,
        token: &crate::auth::tokens::Token,
    ) -> Result<(), StoreError> {
        self.tokens_kept_here()?;
        let bytes = serde_json::to_vec(token)
            .map_err(|e| StoreError::Database(format!("cannot encode a token: {e}")))?;
        self.tx.open_table(TOKENS)?.insert(hash, bytes.as_slice())?;
        self.tokens_changed = true;
        Ok(())
    }

    /// API tokens are kept in the embedded store only, so far.
    fn tokens_kept_here(&self) -> Result<(), StoreError> {
        match self.remote {
            Some(_) => Err(StoreError::Database(
                "API tokens are not kept in a Kubernetes cluster yet: use the bootstrap token or OpenID Connect".into(),
            )),
            None => Ok(()),
        }
    }

    /// Removes the token stored under `hash`.
    pub fn delete_token(&mut self, hash: &str) -> Result<(), StoreError> {
        self.tokens_kept_here()?;
        self.tx.open_table(TOKENS)?.remove(hash)?;
        self.tokens_changed = true;
        Ok(())
    }

    /// Creates or updates `object`. With `expected_version`, fails with `Conflict` unless the
    /// stored object has exactly that resource version (`"0"` or `""` means "must not exist").
    /// Returns the object as stored and what happened: an identical put is a no-op that writes
    /// nothing and keeps its resource version.
    pub fn put(
        &mut self,
        mut object: Object,
        expected_version: Option<&str>,
        status: StatusMode,
    ) -> Result<(Object, Change), StoreError> {
        let (kind, project, name) = (
            object.kind,
            object.project().to_string(),
            object.name().to_string(),
        );
        let existing = self.get(kind, &project, &name)?;
        let found = existing
            .as_ref()
            .and_then(|o| o.metadata.resource_version.clone())
            .unwrap_or_default();
        if let Some(expected) = expected_version {
            let expected = if expected == "0" { "" } else { expected };
            if expected != found {
                return Err(StoreError::Conflict {
                    kind,
                    name,
                    expected: expected.into(),
                    found,
                });
            }
        }
        let event = match &existing {
            Some(old) => {
                object.metadata.uid.clone_from(&old.metadata.uid);
                object
                    .metadata
                    .creation_timestamp
                    .clone_from(&old.metadata.creation_timestamp);
                object
                    .metadata
                    .resource_version
                    .clone_from(&old.metadata.resource_version);
                let spec_changed = strip_status(&old.body) != strip_status(&object.body);
                let generation = old.metadata.generation.unwrap_or(1);
                object.metadata.generation = Some(if spec_changed {
                    generation + 1
                } else {
                    generation
                });
                if status == StatusMode::Keep {
                    match old.body.get("status") {
                        Some(s) => object.body.insert("status".into(), s.clone()),
                        None => object.body.remove("status"),
                    };
                }
                if &object == old {
                    return Ok((object, Change::Unchanged));
                }
                EventType::Modified
            }
            None => {
                object.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
                object.metadata.creation_timestamp = Some(now());
                object.metadata.generation = Some(1);
                if status == StatusMode::Keep {
                    object.body.remove("status");
                }
                EventType::Added
            }
        };
        if let Some(remote) = self.remote.clone() {
            // On Kubernetes the API server writes first (its version is the precondition and
            // the new version); the mirror keeps what it answered.
            let stored = remote
                .put(&object, existing.as_ref(), status)
                .map_err(|e| stale_unless_expected(e, expected_version, &object))?;
            self.store_mirrored(&stored, existing.as_ref(), event)?;
            let change = if event == EventType::Added {
                Change::Created
            } else {
                Change::Configured
            };
            return Ok((stored, change));
        }
        self.seq += 1;
        object.metadata.resource_version = Some(self.seq.to_string());
        self.store_object(&object, existing.as_ref(), event)?;
        let change = if event == EventType::Added {
            Change::Created
        } else {
            Change::Configured
        };
        Ok((object, change))
    }

    /// Writes `object` (replacing `existing`) into the objects, the Freight indexes and the
    /// event log, under the transaction's current sequence.
    fn store_object(
        &mut self,
        object: &Object,
        existing: Option<&Object>,
        event: EventType,
    ) -> Result<(), StoreError> {
        let (kind, project, name) = (object.kind, object.project(), object.name());
        let bytes = serde_json::to_vec(object).map_err(|e| StoreError::Database(e.to_string()))?;
        self.tx
            .open_table(OBJECTS)?
            .insert(key(kind, project, name).as_str(), bytes.as_slice())?;
        if kind == Kind::Freight {
            let placed = freight_order_key(object);
            let mut order = self.tx.open_table(FREIGHT_ORDER)?;
            if let Some(old) = existing {
                let was = freight_order_key(old);
                if was != placed {
                    order.remove(was.as_str())?;
                }
            }
            order.insert(placed.as_str(), ())?;
            let aliased = freight_alias_key(object);
            let mut aliases = self.tx.open_table(FREIGHT_ALIAS)?;
            if let Some(was) = existing.and_then(freight_alias_key)
                && Some(&was) != aliased.as_ref()
            {
                aliases.remove(was.as_str())?;
            }
            if let Some(k) = aliased {
                aliases.insert(k.as_str(), ())?;
            }
        }
        self.log(event, object)
    }

    /// The sequence of a change the API server made at `resource_version`: that version (one
    /// counter for the whole cluster), unless the log is already past it (watches of different
    /// kinds deliver in their own order), then the next one.
    fn mirrored_seq(&mut self, resource_version: Option<&str>) -> u64 {
        let version = resource_version
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        self.seq = version.max(self.seq + 1);
        self.seq
    }

    /// Keeps `object` as the API server answered it (its version is the cluster's).
    fn store_mirrored(
        &mut self,
        object: &Object,
        existing: Option<&Object>,
        event: EventType,
    ) -> Result<(), StoreError> {
        self.mirrored_seq(object.metadata.resource_version.as_deref());
        self.store_object(object, existing, event)
    }

    /// Keeps what a watch of the API server brought: `object` created or changed, unless the
    /// mirror already holds that version or a newer one (a change this replica made and kept
    /// when the API server answered it). Returns whether anything changed.
    pub fn mirror_put(&mut self, object: &Object) -> Result<bool, StoreError> {
        let existing = self.get(object.kind, object.project(), object.name())?;
        let version = |o: &Object| {
            o.metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let Some(old) = &existing
            && version(old) >= version(object)
        {
            return Ok(false);
        }
        let event = if existing.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.store_mirrored(object, existing.as_ref(), event)?;
        Ok(true)
    }

    /// Forgets what a watch said the API server deleted (at `resource_version`). Returns
    /// whether the mirror held it.
    pub fn mirror_delete(
        &mut self,
        kind: Kind,
        project: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<bool, StoreError> {
        let Some(object) = self.remove_object(kind, project, name)? else {
            return Ok(false);
        };
        self.mirrored_seq(resource_version);
        self.log(EventType::Deleted, &object)?;
        Ok(true)
    }

    /// Removes an object and its index rows; the object, if it was there.
    fn remove_object(
        &mut self,
        kind: Kind,
        project: &str,
        name: &str,
    ) -> Result<Option<Object>, StoreError> {
        let k = key(kind, project, name);
        let removed = self
            .tx
            .open_table(OBJECTS)?
            .remove(k.as_str())?
            .map(|v| decode(&k, v.value()));
        let Some(object) = removed.transpose()? else {
            return Ok(None);
        };
        if kind == Kind::Freight {
            self.tx
                .open_table(FREIGHT_ORDER)?
                .remove(freight_order_key(&object).as_str())?;
            if let Some(k) = freight_alias_key(&object) {
                self.tx.open_table(FREIGHT_ALIAS)?.remove(k.as_str())?;
            }
        }
        Ok(Some(object))
    }

    /// Deletes an object; `NotFound` if it is not there.
    pub fn delete(&mut self, kind: Kind, project: &str, name: &str) -> Result<Object, StoreError> {
        let not_found = || StoreError::NotFound {
            kind,
            project: project.into(),
            name: name.into(),
        };
        if let Some(remote) = self.remote.clone() {
            let object = self.get(kind, project, name)?.ok_or_else(not_found)?;
            remote
                .delete(&object)
                .map_err(|e| stale_unless_expected(e, None, &object))?;
            self.mirror_delete(kind, project, name, None)?;
            return Ok(object);
        }
        let object = self
            .remove_object(kind, project, name)?
            .ok_or_else(not_found)?;
        self.seq += 1;
        self.log(EventType::Deleted, &object)?;
        Ok(object)
    }

    fn log(&mut self, kind: EventType, object: &Object) -> Result<(), StoreError> {
        let event = Event {
            seq: self.seq,
            kind,
            object: object.clone(),
        };
        let bytes = serde_json::to_vec(&event).map_err(|e| StoreError::Database(e.to_string()))?;
        self.tx
            .open_table(EVENTS)?
            .insert(self.seq, bytes.as_slice())?;
        Ok(())
    }
}

/// A conflict the API server answered for a write the caller made without a version of its
/// own: the mirror was behind, not the caller.
fn stale_unless_expected(
    error: StoreError,
    expected_version: Option<&str>,
    object: &Object,
) -> StoreError {
    match error {
        StoreError::Conflict { .. } if expected_version.is_none() => StoreError::Stale {
            kind: object.kind,
            project: object.project().to_string(),
            name: object.name().to_string(),
        },
        other => other,
    }
}

fn strip_status(
    body: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut b = body.clone();
    b.remove("status");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ObjectMeta;

    fn stage(project: &str, name: &str, spec: serde_json::Value) -> Object {
        let mut body = serde_json::Map::new();
        body.insert("spec".into(), spec);
        Object {
            api_version: "kargo.akuity.io/v1alpha1".into(),
            kind: Kind::Stage,
            metadata: ObjectMeta {
                name: name.into(),
                namespace: Some(project.into()),
                ..Default::default()
            },
            body,
        }
    }

    fn put(
        store: &Store,
        name: &str,
        spec: serde_json::Value,
        expected: Option<&str>,
    ) -> Result<(Object, Change), StoreError> {
        store.write(|tx| tx.put(stage("p", name, spec), expected, StatusMode::Keep))
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("dray.redb")).expect("open");
        (dir, store)
    }

    #[test]
    fn concurrent_writers_never_share_a_sequence_number() {
        let (_dir, store) = open();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        put(
                            &store,
                            &format!("w{w}-{i}"),
                            serde_json::json!({}),
                            Some("0"),
                        )
                        .expect("write");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        let events = store.read(|r| r.events_after(0, 1000)).expect("events");
        assert_eq!(events.len(), 200, "every write kept its own event");
        assert_eq!(store.last_seq(), 200);
        let objects = store
            .read(|r| r.list(Kind::Stage, Some("p"), None))
            .expect("list");
        let versions: std::collections::BTreeSet<_> = objects
            .iter()
            .map(|o| o.metadata.resource_version.clone())
            .collect();
        assert_eq!(versions.len(), 200, "resource versions are unique");
    }

    /// Writes commit in groups ([`Store::make_durable`]), and each is on disk when `write`
    /// returns: a process that aborts right after its writers return (no clean close, which
    /// would persist everything anyway) leaves all of them in the file. The test runs itself
    /// as that process.
    #[test]
    fn every_write_is_on_disk_when_it_returns_though_commits_are_grouped() {
        const CHILD: &str = "DRAY_STORE_TEST_ABORT_AFTER_WRITES";
        if let Some(path) = std::env::var_os(CHILD) {
            let store = Store::open(Path::new(&path)).expect("open");
            let writers: Vec<_> = (0..4)
                .map(|w| {
                    let store = store.clone();
                    std::thread::spawn(move || {
                        for i in 0..25 {
                            put(&store, &format!("w{w}-{i}"), serde_json::json!({}), None)
                                .expect("write");
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().expect("writer");
            }
            std::process::abort();
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dray.redb");
        let child = std::process::Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "store::tests::every_write_is_on_disk_when_it_returns_though_commits_are_grouped",
                "--test-threads=1",
            ])
            .env(CHILD, &path)
            .output()
            .expect("the child runs");
        assert!(!child.status.success(), "the child aborts: {child:?}");
        let store = Store::open(&path).expect("reopen");
        let objects = store
            .read(|r| r.list(Kind::Stage, Some("p"), None))
            .expect("list");
        assert_eq!(objects.len(), 100, "{child:?}");
        assert_eq!(store.last_seq(), 100);
    }

    #[test]
    fn versions_come_from_the_event_sequence_and_compare_and_set_holds() {
        let (_dir, store) = open();
        let created = put(&store, "test", serde_json::json!({"a": 1}), Some("0")).expect("create");
        assert_eq!(created.0.metadata.resource_version.as_deref(), Some("1"));
        assert_eq!(created.0.metadata.generation, Some(1));
        let err =
            put(&store, "test", serde_json::json!({"a": 2}), Some("7")).expect_err("stale version");
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        let updated = put(&store, "test", serde_json::json!({"a": 2}), Some("1")).expect("update");
        assert_eq!(updated.0.metadata.resource_version.as_deref(), Some("2"));
        assert_eq!(updated.0.metadata.generation, Some(2));
        assert_eq!(updated.0.metadata.uid, created.0.metadata.uid);
        let same = put(&store, "test", serde_json::json!({"a": 2}), None).expect("no-op");
        assert_eq!(
            same.1,
            Change::Unchanged,
            "an identical put changes nothing"
        );
        assert_eq!(store.last_seq(), 2);
    }

    #[test]
    fn a_failed_batch_leaves_nothing_behind() {
        let (_dir, store) = open();
        let result: Result<(), StoreError> = store.write(|tx| {
            tx.put(
                stage("p", "a", serde_json::json!({})),
                None,
                StatusMode::Keep,
            )?;
            tx.delete(Kind::Stage, "p", "missing")?;
            Ok(())
        });
        assert!(matches!(result, Err(StoreError::NotFound { .. })));
        assert_eq!(
            store
                .read(|r| r.list(Kind::Stage, None, None))
                .expect("list")
                .len(),
            0
        );
        assert_eq!(store.last_seq(), 0);
    }

    #[test]
    fn lists_by_project_and_label_and_replays_events() {
        let (_dir, store) = open();
        store
            .write(|tx| {
                for (p, n) in [("p", "a"), ("p", "b"), ("q", "a")] {
                    let mut s = stage(p, n, serde_json::json!({}));
                    s.metadata.labels.insert("tier".into(), n.into());
                    tx.put(s, None, StatusMode::Keep)?;
                }
                tx.delete(Kind::Stage, "q", "a")
            })
            .expect("batch");
        let in_p = store
            .read(|r| r.list(Kind::Stage, Some("p"), None))
            .expect("list");
        assert_eq!(
            in_p.iter().map(|o| o.name()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let selector = LabelSelector {
            match_labels: [("tier".into(), "b".into())].into(),
            ..Default::default()
        };
        assert_eq!(
            store
                .read(|r| r.list(Kind::Stage, None, Some(&selector)))
                .expect("list")
                .len(),
            1
        );
        let events = store.read(|r| r.events_after(1, 10)).expect("events");
        let kinds: Vec<EventType> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [EventType::Added, EventType::Added, EventType::Deleted]
        );
        assert_eq!(events[0].seq, 2);
    }

    #[test]
    fn survives_reopening_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dray.redb");
        {
            let store = Store::open(&path).expect("open");
            put(&store, "a", serde_json::json!({}), None).expect("put");
        }
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.last_seq(), 1);
        assert!(
            store
                .read(|r| r.get(Kind::Stage, "p", "a"))
                .expect("get")
                .is_some()
        );
        let next = put(&store, "b", serde_json::json!({}), None).expect("put");
        assert_eq!(
            next.0.metadata.resource_version.as_deref(),
            Some("2"),
            "the sequence continues"
        );
        drop(store);
        {
            let db = Database::create(&path).expect("raw open");
            let tx = db.begin_write().expect("tx");
            tx.open_table(META)
                .expect("meta")
                .insert("schema_version", SCHEMA_VERSION + 1)
                .expect("insert");
            tx.commit().expect("commit");
        }
        let err = Store::open(&path).err().expect("newer schema is refused");
        assert!(err.to_string().contains("upgrade dray"), "{err}");
    }

    fn freight(project: &str, name: &str, warehouse: &str, discovered: Option<&str>) -> Object {
        let mut body = serde_json::Map::new();
        body.insert(
            "origin".into(),
            serde_json::json!({"kind": "Warehouse", "name": warehouse}),
        );
        if let Some(at) = discovered {
            body.insert("discoveredAt".into(), at.into());
        }
        Object {
            api_version: "kargo.akuity.io/v1alpha1".into(),
            kind: Kind::Freight,
            metadata: ObjectMeta {
                name: name.into(),
                namespace: Some(project.into()),
                ..Default::default()
            },
            body,
        }
    }

    /// The names `freight_newest_first` gives for an origin, read in pages of `page`.
    fn newest_first(store: &Store, project: &str, warehouse: &str, page: usize) -> Vec<String> {
        let origin = format!("Warehouse/{warehouse}");
        let mut names = Vec::new();
        loop {
            let more = store
                .read(|r| r.freight_newest_first(project, &origin, names.len(), page))
                .expect("read");
            let done = more.len() < page;
            names.extend(more.iter().map(|f| f.name().to_string()));
            if done {
                return names;
            }
        }
    }

    /// What the index must agree with: every Freight of the origin, sorted as availability
    /// sorts them.
    fn sorted_by_availability(store: &Store, project: &str, warehouse: &str) -> Vec<String> {
        use crate::rules::availability::{FreightFacts, sort_newest_first};
        let mut facts: Vec<FreightFacts> = store
            .read(|r| r.list(Kind::Freight, Some(project), None))
            .expect("list")
            .iter()
            .filter(|f| f.body["origin"]["name"] == warehouse)
            .map(|f| FreightFacts::of(f).expect("facts"))
            .collect();
        sort_newest_first(&mut facts);
        facts.into_iter().map(|f| f.name).collect()
    }

    #[test]
    fn freight_is_indexed_newest_first_per_origin_through_puts_and_deletes() {
        let (_dir, store) = open();
        // Out of order, equal times (sorted by name), a Freight with no discoveredAt (its
        // creation time, now: the newest), two origins and a second project.
        store
            .write(|tx| {
                for (project, name, warehouse, at) in [
                    ("p", "c", "w", Some("2026-01-02T00:00:00Z")),
                    ("p", "a", "w", Some("2026-01-03T00:00:00Z")),
                    ("p", "b", "w", Some("2026-01-03T00:00:00Z")),
                    ("p", "d", "w", Some("2025-12-31T23:59:59.5Z")),
                    ("p", "e", "w", None),
                    ("p", "x", "w2", Some("2026-01-05T00:00:00Z")),
                    ("q", "y", "w", Some("2026-01-09T00:00:00Z")),
                ] {
                    tx.put(
                        freight(project, name, warehouse, at),
                        None,
                        StatusMode::Keep,
                    )?;
                }
                Ok::<_, StoreError>(())
            })
            .expect("write");
        assert_eq!(newest_first(&store, "p", "w", 2), ["e", "a", "b", "c", "d"]);
        assert_eq!(
            newest_first(&store, "p", "w", 100),
            sorted_by_availability(&store, "p", "w")
        );
        assert_eq!(newest_first(&store, "p", "w2", 1), ["x"]);
        assert_eq!(newest_first(&store, "q", "w", 1), ["y"]);
        assert!(newest_first(&store, "p", "none", 1).is_empty());
        // A status write keeps its place; a changed time moves it; a delete removes it.
        store
            .write(|tx| {
                let mut c = tx.get(Kind::Freight, "p", "c")?.expect("c");
                c.set_status(&serde_json::json!({"verifiedIn": {"dev": {}}}));
                tx.put(c, None, StatusMode::Replace)?;
                let mut d = tx.get(Kind::Freight, "p", "d")?.expect("d");
                d.body
                    .insert("discoveredAt".into(), "2026-01-04T00:00:00Z".into());
                tx.put(d, None, StatusMode::Keep)?;
                tx.delete(Kind::Freight, "p", "a")?;
                Ok::<_, StoreError>(())
            })
            .expect("write");
        assert_eq!(newest_first(&store, "p", "w", 3), ["e", "d", "b", "c"]);
        assert_eq!(
            newest_first(&store, "p", "w", 3),
            sorted_by_availability(&store, "p", "w")
        );
        // A failed transaction leaves the index as it was.
        let failed: Result<(), StoreError> = store.write(|tx| {
            tx.delete(Kind::Freight, "p", "b")?;
            tx.delete(Kind::Freight, "p", "missing")?;
            Ok(())
        });
        assert!(failed.is_err());
        assert_eq!(newest_first(&store, "p", "w", 3), ["e", "d", "b", "c"]);
    }

    #[test]
    fn freight_is_indexed_by_alias_through_puts_renames_and_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dray.redb");
        let store = Store::open(&path).expect("open");
        let aliased = |project: &str, name: &str, alias: &str| {
            let mut f = freight(project, name, "w", None);
            f.metadata
                .labels
                .insert(crate::resource::freight::ALIAS_LABEL.into(), alias.into());
            f
        };
        let named = |store: &Store, project: &str, alias: &str| {
            store
                .read(|r| r.freight_named_by_alias(project, alias))
                .expect("read")
        };
        store
            .write(|tx| {
                tx.put(aliased("p", "f1", "red-fox"), None, StatusMode::Keep)?;
                tx.put(aliased("p", "f2", "red"), None, StatusMode::Keep)?;
                tx.put(aliased("q", "f3", "red-fox"), None, StatusMode::Keep)?;
                tx.put(freight("p", "f4", "w", None), None, StatusMode::Keep)?;
                Ok::<_, StoreError>(())
            })
            .expect("write");
        assert_eq!(named(&store, "p", "red-fox"), ["f1"]);
        assert_eq!(named(&store, "p", "red"), ["f2"], "not a prefix match");
        assert_eq!(named(&store, "q", "red-fox"), ["f3"]);
        assert!(named(&store, "p", "blue").is_empty());
        let found = store
            .read(|r| crate::resource::freight::find(r, "p", "red-fox"))
            .expect("find");
        assert_eq!(found.map(|f| f.name().to_string()).as_deref(), Some("f1"));
        // A new alias moves it; a delete removes it.
        store
            .write(|tx| {
                tx.put(aliased("p", "f1", "blue-jay"), None, StatusMode::Keep)?;
                tx.delete(Kind::Freight, "p", "f2")?;
                Ok::<_, StoreError>(())
            })
            .expect("write");
        assert!(named(&store, "p", "red-fox").is_empty());
        assert_eq!(named(&store, "p", "blue-jay"), ["f1"]);
        assert!(named(&store, "p", "red").is_empty());
        // A file from before the alias index (the older index key in step, no alias rows)
        // gets it built when it opens.
        drop(store);
        {
            let db = redb::Database::create(&path).expect("raw open");
            let tx = db.begin_write().expect("tx");
            {
                tx.delete_table(FREIGHT_ALIAS).expect("drop");
                let mut meta = tx.open_table(META).expect("meta");
                meta.remove(FREIGHT_INDEXES_SEQ).expect("older file");
                let last = meta.get("last_seq").expect("get").map(|v| v.value());
                meta.insert("freight_index_seq", last.unwrap_or(0))
                    .expect("older key");
            }
            tx.commit().expect("commit");
        }
        let store = Store::open(&path).expect("reopen");
        assert_eq!(named(&store, "p", "blue-jay"), ["f1"]);
        assert_eq!(named(&store, "q", "red-fox"), ["f3"]);
    }

    #[test]
    fn an_index_out_of_step_is_rebuilt_when_the_file_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dray.redb");
        let store = Store::open(&path).expect("open");
        store
            .write(|tx| {
                for (i, name) in ["old", "mid", "new"].iter().enumerate() {
                    let at = format!("2026-01-0{}T00:00:00Z", i + 1);
                    tx.put(freight("p", name, "w", Some(&at)), None, StatusMode::Keep)?;
                }
                Ok::<_, StoreError>(())
            })
            .expect("write");
        drop(store);
        // What a Dray from before the index leaves: Freight written, no row for it, and the
        // index's sequence behind the file's (here: a row of a Freight long gone, too).
        {
            let db = redb::Database::create(&path).expect("raw open");
            let tx = db.begin_write().expect("tx");
            {
                let mut order = tx.open_table(FREIGHT_ORDER).expect("table");
                order.retain(|_, _| false).expect("clear");
                order
                    .insert("p\0Warehouse/w\x000000000000000000\x00ghost", ())
                    .expect("ghost");
                let mut meta = tx.open_table(META).expect("meta");
                meta.insert(FREIGHT_INDEXES_SEQ, 1).expect("behind");
            }
            tx.commit().expect("commit");
        }
        let store = Store::open(&path).expect("reopen");
        assert_eq!(newest_first(&store, "p", "w", 2), ["new", "mid", "old"]);
        // In step again: a further open leaves it be, and writes keep it so.
        drop(store);
        let store = Store::open(&path).expect("reopen");
        store
            .write(|tx| tx.delete(Kind::Freight, "p", "mid").map(drop))
            .expect("delete");
        assert_eq!(newest_first(&store, "p", "w", 2), ["new", "old"]);
    }
}
