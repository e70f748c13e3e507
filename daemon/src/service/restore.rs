//! `dray restore FILE`: a backup (`dray backup`) put back as a stopped daemon's data file.
//!
//! The backup is copied into the data dir and opened there first (a file that is not a Dray
//! store, or one of a newer schema, is refused before anything changes); the data file in use is
//! kept beside it as `dray.redb.before-restore-TIME`, and the restored one takes its place by a
//! rename. A running daemon holds the data file: restore says to stop it first.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::resource::Kind;
use crate::store::{Reader, Store, StoreError};

/// What was restored, for the CLI to say.
#[derive(Debug)]
pub struct Restored {
    pub projects: usize,
    pub last_sequence: u64,
    /// Where the data file that was replaced now is, if there was one.
    pub previous: Option<PathBuf>,
}

pub fn restore(data_dir: &Path, backup: &Path) -> anyhow::Result<Restored> {
    super::private_data_dir(data_dir)?;
    let target = data_dir.join(super::DATABASE_FILE);
    // A daemon serving on this data dir keeps its file open: refuse before copying anything.
    if target.exists() {
        match Store::open(&target) {
            Ok(store) => drop(store),
            Err(StoreError::InUse { .. }) => anyhow::bail!(
                "a daemon is running on {} (its data file is in use): stop it first (systemctl stop dray), then restore",
                data_dir.display()
            ),
            Err(e) => tracing::warn!(error = %e, "the data file being replaced does not open"),
        }
    }
    let staged = data_dir.join(format!("{}.restoring", super::DATABASE_FILE));
    let _ = std::fs::remove_file(&staged);
    std::fs::copy(backup, &staged)
        .with_context(|| format!("cannot read the backup {}", backup.display()))?;
    let checked = Store::open(&staged).and_then(|store| {
        let projects = store.read(|r| r.list(Kind::Project, None, None))?.len();
        Ok((projects, store.last_seq()))
    });
    let (projects, last_sequence) = match checked {
        Ok(found) => found,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(anyhow::anyhow!(
                "{} is not a backup this dray can restore: {e}; nothing was changed",
                backup.display()
            ));
        }
    };
    let previous = if target.exists() {
        let stamp = crate::resource::now().replace(':', "-");
        let kept = data_dir.join(format!("{}.before-restore-{stamp}", super::DATABASE_FILE));
        std::fs::rename(&target, &kept)
            .with_context(|| format!("cannot move {} aside", target.display()))?;
        Some(kept)
    } else {
        None
    };
    std::fs::rename(&staged, &target)
        .with_context(|| format!("cannot put the backup in place as {}", target.display()))?;
    Ok(Restored {
        projects,
        last_sequence,
        previous,
    })
}
