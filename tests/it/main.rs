//! The one integration-test binary of the root crate: a module per topic.

mod tree;

fn main() {}
