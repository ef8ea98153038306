//! user-sync's errors.

use common::ConfigError;

/// What can stop user-sync, or fail one attempt at a batch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Topic set-up at start-up failed (the message says why, from librdkafka).
    #[error(transparent)]
    KafkaSetup(#[from] common::kafka::SetupError),
    /// A missing or malformed variable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Kafka client creation, consuming, committing or the DLQ.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A MongoDB operation.
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    /// A write the server didn't make (or didn't make durable) for a reason that can pass.
    #[error("mongodb write: {0}")]
    Write(String),
    /// A start-up problem that waiting won't fix (an index conflict, say).
    #[error("start-up: {0}")]
    Startup(String),
    /// Listening or serving.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
