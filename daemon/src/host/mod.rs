//! Host capabilities offered to plugins, one file each. A plugin reaches a capability only if it
//! imports it and the operator granted it (see `runtime::Runtime::load`).
//!
//! - [`log`]: levelled, structured lines into the step's log (always available).
//! - [`http`]: outbound `wasi:http`, to the step's allowed hosts only (capability `http`).
//! - [`credentials`]: one generic secret by name (capability `credentials`).
//!
//! `git` is declared in `wit/plugin.wit`; its host side arrives with the built-in git steps, and
//! until then a plugin importing it is refused at load.

pub mod credentials;
pub mod http;
pub mod log;
