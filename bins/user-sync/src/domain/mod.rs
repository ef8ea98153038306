//! What the events mean for the documents, and the order rules: pure, no I/O, nothing of
//! the rest of the crate.

pub(crate) mod entity;
mod outcome;
pub mod payload;
pub(crate) mod plan;

pub use entity::Entity;
pub use outcome::Outcome;

/// The contract's audit collection: one record per consumed event.
pub(crate) const EVENTS_COLLECTION: &str = "webhook_events";
