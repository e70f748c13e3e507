//! Dray on Kubernetes: the resources as custom resources in a cluster (Kargo's CRDs or the
//! compatible ones Dray ships, [`crds`]), read from a mirror in memory ([`mirror`]) and written
//! to the API server first ([`remote`]), and one leader per shard elected with a Lease
//! ([`lease`]). See `docs/ARCHITECTURE.md`, "On Kubernetes", for the design of the store
//! backend built on them.

pub mod crds;
pub mod lease;
pub mod mirror;
pub mod remote;

/// The client the store, the mirror and the election take (kube's).
pub use kube::Client;
