//! The one integration-test binary of k8s-snap: a module per topic.

mod cli;
mod compat;
mod controller;
mod controller_deploy;
mod controller_events;
mod controller_schema;
mod failures;
mod fuzz;
mod mirror;
mod restore;
mod snapshot;
mod snapshot_faults;
mod store;
mod store_support;
mod support;
mod tidy;
mod tree;
mod watch;
mod watch_loop;
