//! The one integration-test binary of k8s-snap: a module per topic.

mod cli;
mod controller;
mod controller_deploy;
mod mirror;
mod restore;
mod snapshot;
mod snapshot_faults;
mod store;
mod store_support;
mod support;
mod tree;
mod versions;
mod watch;
mod watch_loop;
