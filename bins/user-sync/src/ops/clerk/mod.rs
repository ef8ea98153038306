//! Clerk's Backend API, for `backfill` and `reconcile`: the client with its retry policy
//! and pager, and the events made from what it returns.

pub(crate) mod api;
pub(crate) mod snapshot;

pub use api::{ClerkApi, RetryPolicy, MAX_PAGE_SIZE};
