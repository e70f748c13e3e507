//! The decisions that write: each function takes a store transaction, decides with the
//! [`crate::rules`], and writes every object the decision touches in that one transaction, so
//! a reader never sees half of it.
//!
//! - [`promotion`]: a Promotion created from a Stage's template and a Freight;
//! - [`stage`]: a Promotion's start and end on its Stage (history, holds, verification);
//! - [`analysis`]: AnalysisRuns made, started again, and their end recorded;
//! - [`freight`]: the Freight's `currentlyIn`, `verifiedIn` and `approvedFor`;
//! - [`auto`]: one auto-promotion pass over a project;
//! - [`gc`]: one garbage-collection pass;
//! - [`events`]: what happened, for `dray get events`.

pub mod analysis;
pub mod auto;
pub mod events;
pub mod freight;
pub mod gc;
pub mod promotion;
pub mod stage;
