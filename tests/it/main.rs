//! The one integration-test binary of k8s-snap: a module per topic.

mod mirror;
mod restore;
mod snapshot;
mod snapshot_faults;
mod support;
mod tree;
