//! The one integration-test binary of k8s-snap: a module per topic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "tests and their helpers fail loudly and print what they skip"
)]

mod admission;
mod cli;
mod compat;
mod controller;
mod controller_deploy;
mod controller_events;
mod controller_plan;
mod controller_schema;
mod encryption;
mod failures;
mod fuzz;
mod history;
mod import;
/// The binary's command line, compiled into this test binary (it is not part of the library's
/// API) so that tests run commands in-process against exactly this build.
#[path = "../../src/cli/mod.rs"]
#[allow(dead_code, unused_imports)]
mod k8s_snap_cli;
mod live_diff;
mod mirror;
mod plan_file;
mod prune;
mod restore;
mod schedule;
mod selective;
mod snapshot;
mod snapshot_faults;
mod store;
mod store_support;
mod support;
mod tidy;
mod tree;
mod versions;
mod watch;
mod watch_loop;
