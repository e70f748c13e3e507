//! Host capabilities offered to plugins, one file each. A plugin reaches a capability only if it
//! imports it and the operator granted it (see `runtime::Runtime::load`).
//!
//! - [`log`]: levelled, structured lines into the step's log (always available).
//!
//! `git`, `credentials` and outbound `wasi:http` are declared in `wit/plugin.wit`; their host
//! side arrives with the built-in steps that need them, and until then a plugin importing them
//! is refused at load time.

pub mod log;
