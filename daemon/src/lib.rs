//! Dray: a promotion daemon for GitOps delivery.
//!
//! A tour of the crate, in the order data flows:
//! - [`manifest`] reads YAML/JSON streams and remembers where each field was written;
//! - [`resource`] is the resource model (Kargo's kinds) and the typed gate every document passes;
//! - [`admission`] checks a batch against the store and writes it in one transaction;
//! - [`store`] keeps resources in redb, with resource versions and an event log for watches;
//! - [`discovery`] watches Warehouses' Git, image and chart subscriptions and makes Freight;
//! - [`rules`] are the decisions as pure functions (availability and soak, step sequencing and
//!   retries, the verification tally, expressions);
//! - [`engine`] applies them: `engine::decisions` writes transactions (creating Promotions,
//!   auto-promotion, a Promotion's end on its Stage, garbage collection), `engine::run` executes
//!   Promotions and verifications, and the scheduler in between runs one Promotion per Stage;
//! - [`api`] is the HTTP API (`/v1`, webhook receivers), [`auth`] who may call it (roles,
//!   tokens), [`service`] the daemon around it (`run`, config, bootstrap token);
//! - [`oci`] publishes plugins to OCI registries and pulls them by digest (`uses: oci://…`);
//! - [`runtime`] runs promotion steps as WebAssembly components (engine, compile cache, and the
//!   sandbox in `runtime/sandbox.rs`); [`host`] holds the capabilities plugins may be granted,
//!   and [`credentials`] finds the Secrets they use on a plugin's behalf;
//! - [`cli`] is the `dray` command line, a client of the API (and `dray plugin`, which needs no
//!   daemon).
//!
//! Start at [`run`] for the daemon, at [`runtime::Runtime`] for plugins and at [`cli::main`] for
//! the command line.

pub mod admission;
pub mod alloc;
pub mod api;
pub mod auth;
pub mod cli;
pub mod clusters;
pub mod credentials;
pub mod discovery;
pub mod engine;
pub mod host;
pub mod manifest;
pub mod metrics;
pub mod oci;
pub mod resource;
pub mod rules;
pub mod runtime;
pub mod service;
pub mod store;
pub mod tls;

pub use service::{Config, run};
