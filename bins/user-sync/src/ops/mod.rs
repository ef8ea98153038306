//! The operator's commands around the consumer. Each reads the configuration it needs and
//! nothing else: `dlq` works without MongoDB, `status` while the consumer is down.

pub mod backfill;
mod clerk;
pub mod dlq;
mod progress;
mod publish;
pub mod reconcile;
pub mod show_user;
pub mod status;

pub use clerk::{ApiError, ClerkApi, RetryPolicy, MAX_PAGE_SIZE};
pub use progress::Progress;
pub use publish::{PublishError, Publisher, Sink};
