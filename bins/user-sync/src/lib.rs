//! user-sync: normalized Clerk events (users, organizations, memberships, sessions) from
//! Kafka into MongoDB, exactly once in effect and whatever the delivery order.
//!
//! # Rooms, and what each may import
//!
//! Each folder is one subsystem. A room imports only the rooms its row names (through
//! `crate::…`); `lib.rs` and `main.rs` wire them together. A test
//! (`the_rooms_import_only_what_the_rule_allows`, in `dependency_rule.rs`) reads this table
//! and every `crate::` path in the sources, and fails on an import the table doesn't allow.
//! What a room offers the others is what its `mod.rs` makes visible (a `pub(crate) use`, or
//! a `pub(crate) mod`); the rest is private, and the compiler holds the other rooms to it.
//!
//! | room | what it holds | may import |
//! |---|---|---|
//! | `domain` | what each event means for the documents and the order rules, as a plan of conditional writes computed without I/O (`entity/`, `plan`, `payload`, `Outcome`) | |
//! | `error` | the error every layer returns | |
//! | `config` | the contract's variables, validated once | `domain` |
//! | `store` | MongoDB: collections and indexes, bulk write commands, running a plan's statements, the `webhook_events` records, linking | `domain`, `config`, `error` |
//! | `broker` | Kafka beyond the consumer: the dead-letter contract and its producer | `domain`, `config`, `error` |
//! | `consumer` | the service: start-up, the worker loop, applying a batch, `/health` `/ready` `/metrics` | `domain`, `config`, `error`, `store`, `broker` |
//! | `ops` | the operator's commands: `show-user`, `status`, `dlq list` and `dlq replay`, `backfill` and `reconcile` over Clerk's Backend API (`clerk/`) | `domain`, `config`, `error`, `store`, `broker` |
//!
//! So the order rules can be read (and tested) without a server, configuration never
//! depends on what it configures, and the consumer and the tools change independently.

mod broker;
mod config;
mod consumer;
mod domain;
mod error;
mod ops;
mod store;

pub use config::{
    ClerkConfig, Config, MongoConfig, PublishConfig, QueueConfig, DEFAULT_HEALTH_PORT,
};
pub use consumer::{run, run_until, Applied, Applier, Incoming};
pub use domain::{payload, Entity, Outcome};
pub use error::{Error, Result, WriteFailure};
pub use ops::{backfill, dlq, reconcile, show_user, status};
pub use ops::{
    ApiError, ClerkApi, Progress, PublishError, Publisher, RetryPolicy, Sink, MAX_PAGE_SIZE,
};
pub use store::{audit, Store};

#[cfg(test)]
mod dependency_rule;
