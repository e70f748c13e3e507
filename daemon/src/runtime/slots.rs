//! Who may take one of the instance pool's slots, and when: every step call, measurement and
//! `describe` holds a slot while its instance lives. A call that finds none free waits for one
//! (it never fails with wasmtime's "maximum concurrent instances" trap), and one project may
//! hold at most its share, so a project with hundreds of slow steps cannot starve the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots of one runtime's pool.
#[derive(Debug)]
pub struct Slots {
    /// One permit per pool slot.
    all: Arc<Semaphore>,
    /// The most slots one project may hold at once.
    share: usize,
    /// Each project's share, made on first use. A std mutex: held only to find or insert.
    projects: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A slot held for one call; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _project: Option<OwnedSemaphorePermit>,
    _pool: OwnedSemaphorePermit,
}

impl Slots {
    /// `total` slots, at most `share` of them for one project.
    pub fn new(total: usize, share: usize) -> Slots {
        Slots {
            all: Arc::new(Semaphore::new(total)),
            share: share.clamp(1, total.max(1)),
            projects: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a slot for a call of `project` (empty: a call of no project, such as
    /// `describe`, which takes from the pool only).
    pub async fn acquire(&self, project: &str) -> Slot {
        let project_permit = if project.is_empty() {
            None
        } else {
            let share = {
                let mut projects = self
                    .projects
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                projects
                    .entry(project.to_string())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.share)))
                    .clone()
            };
            // The project's share first: a project over its share waits without holding a
            // pool slot another project could use.
            Some(share.acquire_owned().await.expect("never closed"))
        };
        let pool = self
            .all
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        Slot {
            _project: project_permit,
            _pool: pool,
        }
    }

    /// Slots free in the pool now (for tests and metrics).
    pub fn available(&self) -> usize {
        self.all.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_project_over_its_share_waits_while_others_run() {
        let slots = Arc::new(Slots::new(4, 2));
        let a1 = slots.acquire("a").await;
        let _a2 = slots.acquire("a").await;
        // A third call of project a waits for one of a's slots...
        let waiting = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire("a").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        // ...while project b still gets the pool's other two.
        let _b1 = slots.acquire("b").await;
        let _b2 = slots.acquire("b").await;
        assert_eq!(slots.available(), 0);
        drop(a1);
        let _a3 = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a's slot came back")
            .expect("joined");
    }
}
