//! What can stop a `dlq` command.

use std::time::Duration;

use rdkafka::error::KafkaError;

/// A `dlq` command's failure.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The broker refused or didn't answer.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A DLQ topic the broker doesn't have.
    #[error("topic {0} does not exist")]
    NoTopic(String),
    /// `--topic` names neither a consumed topic nor a DLQ.
    #[error("--topic {0}: not one of the DLQ topics ({1}) nor the topics they belong to")]
    UnknownTopic(String, String),
    /// No message arrived while a partition wasn't at its end yet.
    #[error("no message from {topic} partition {partition} within {waited:?} (at offset {at}, end {end})")]
    Stalled {
        /// The DLQ topic.
        topic: String,
        /// The partition that stalled.
        partition: i32,
        /// The next offset wanted.
        at: i64,
        /// Its end when the command started.
        end: i64,
        /// How long no message came.
        waited: Duration,
    },
    /// A replayed message the broker didn't acknowledge: nothing after it was committed.
    #[error("replaying {from} to {to}: {error} (progress kept up to the last acknowledged batch; run the replay again)")]
    Replay {
        /// Where the message was in the DLQ.
        from: String,
        /// The topic it was sent to.
        to: String,
        /// The broker's error, as text.
        error: String,
    },
}
