//! Host capabilities offered to plugins, one file each. A plugin reaches a capability only if it
//! imports it and the operator granted it (see `runtime::Runtime::load`).
//!
//! - [`log`]: levelled, structured lines into the step's log (always available).
//! - [`http`]: outbound `wasi:http`, to the step's allowed hosts only (capability `http`).
//!
//! `git` and `credentials` are declared in `wit/plugin.wit`; their host side arrives with the
//! built-in steps that need them, and until then a plugin importing them is refused at load.

pub mod http;
pub mod log;
