mod mirror;

fn main() {}
