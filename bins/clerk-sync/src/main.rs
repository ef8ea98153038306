//! clerk-sync (work in progress).

fn main() {}
