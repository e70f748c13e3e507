//! The rules: what Dray decides, as pure functions of typed values and a `now`. Nothing here
//! reads the store, the clock or the network, so every rule is tested without a daemon.
//!
//! - [`availability`]: which Freight a Stage may take (approval, direct, verified upstream,
//!   soak), with the reasons `dray explain` shows;
//! - [`steps`]: how a Promotion's steps follow each other (`if`, `continueOnError`, retries,
//!   timeouts) and how it ends;
//! - [`analysis`]: how a verification decides (conditions, tally, limits, the worst metric);
//! - [`expr`]: the `${{ }}` expression language of step config, vars and conditions;
//! - [`health`]: a Stage's health from the Argo CD apps its last Promotion synced;
//! - [`windows`]: promotion windows, which open and close Stages to promotions by the clock;
//! - [`layout`]: where the web UI's pipeline view draws each Warehouse and Stage.
//!
//! The store users sit above: `engine::decisions` turns these into transactions, and
//! `engine::run` executes steps and measurements; `discovery`, `admission` and `api` use the
//! rules too, without depending on the engine.

pub mod analysis;
pub mod availability;
pub mod expr;
pub mod health;
pub mod layout;
pub mod steps;
pub mod windows;
