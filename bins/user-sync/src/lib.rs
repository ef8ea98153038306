//! user-sync library.
