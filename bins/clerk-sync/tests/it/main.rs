//! clerk-sync's integration tests, one file per feature.
#![allow(missing_docs, clippy::unwrap_used)]

mod helpers;
mod hostile;
mod kafka_rights;
mod managed_kafka;
mod message_bodies;
mod process;
mod rows;
mod webhook;
