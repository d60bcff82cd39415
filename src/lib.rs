//! k8s-snap: snapshot every resource of a Kubernetes cluster into a git mirror, push it to an
//! object store, and restore it create-only onto any cluster.
//!
//! The data flow is `cluster → tree → git → store → plan → cluster`; see `ARCHITECTURE.md` at
//! the repository root for the map of modules and the invariants they keep.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod controller;
pub mod crypt;
pub mod discovery;
pub mod duration;
pub mod glob;
pub mod import;
pub mod mirror;
mod packcodec;
pub mod rekey;
pub mod restore;
pub mod retention;
pub mod snapshot;
pub mod store;
pub mod tree;
pub mod watch;
