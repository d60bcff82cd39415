//! An in-process emulator of the Kubernetes API server, for tests, benchmarks and demos.

pub mod fixtures;
