//! clerk-sync library.
