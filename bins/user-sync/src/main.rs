//! user-sync (work in progress).

fn main() {}
