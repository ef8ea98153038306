//! Clerk's Backend API, for `backfill` and `reconcile`: the client with its retry policy
//! and pager, and the events made from what it returns.

pub(crate) mod api;
mod pager;
mod retry;
pub(crate) mod snapshot;

pub use api::{ApiError, ClerkApi};
pub use pager::MAX_PAGE_SIZE;
pub use retry::RetryPolicy;
