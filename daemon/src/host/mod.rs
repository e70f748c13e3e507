//! Host capabilities offered to plugins, one file each. A plugin reaches a capability only if it
//! imports it and the operator granted it (see `runtime::Runtime::load`).
//!
//! - [`log`]: levelled, structured lines into the step's log (always available).
//! - [`http`]: outbound `wasi:http`, to the step's allowed hosts only (capability `http`).
//! - [`credentials`]: one generic secret by name (capability `credentials`).
//! - [`git`]: clone, commit, tag, rebase and push with host-side credentials (capability `git`).
//! - [`metadata`]: metadata on the promotion's Stage or a Freight (capability `metadata`).
//! - [`oci`]: copy and download OCI artifacts with host-side credentials (capability `oci`).
//! - [`helm`]: list and pull Helm charts with host-side credentials (capability `helm`).
//! - [`kube`]: read and change Kubernetes objects with host-side credentials (capability `kube`).

pub mod credentials;
pub mod forge;
pub mod git;
pub mod helm;
pub mod http;
pub mod known_hosts;
pub mod kube;
pub mod log;
pub mod metadata;
pub mod oci;
