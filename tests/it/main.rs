//! The one integration-test binary of the root crate: a module per topic.

mod mirror;
mod tree;
