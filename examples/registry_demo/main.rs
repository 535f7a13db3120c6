//! The example registry (being written).
fn main() {}
