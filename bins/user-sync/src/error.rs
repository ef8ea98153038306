//! user-sync's errors. The retry decisions and the metric labels are read from the
//! variants, never from a message.

use std::time::Duration;

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
    /// (Its cause is in the message, so it isn't also a `source`: printed as a chain, the
    /// cause would show twice.)
    #[error("mongodb write: {0}")]
    Write(WriteFailure),
    /// A start-up problem that waiting won't fix (an index conflict, say).
    #[error("start-up: {0}")]
    Startup(String),
    /// An index build at start-up not finished in time (retried: asking again joins the
    /// build the server is still running).
    #[error(
        "start-up: the index {index} on {collection} is not built after {after:?}; on a replica \
         set a build waits for a majority of its voting members (commitQuorum), so check that \
         they are up; user-sync asks again, which waits for the same build"
    )]
    IndexBuild {
        /// The index.
        index: String,
        /// Its collection.
        collection: String,
        /// How long it waited.
        after: Duration,
    },
    /// Listening or serving.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a write failed in a way that can pass: the batch is retried, its offsets not stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteFailure {
    /// A statement (or the write concern) couldn't be encoded as BSON.
    #[error("a command can't be encoded as BSON: {0}")]
    Encode(#[source] bson::raw::Error),
    /// The server made the writes but couldn't make them durable as the write concern
    /// asks (`writeConcernError`).
    #[error("write concern not satisfied: {message} (code {code})")]
    NotDurable {
        /// The server's code.
        code: i32,
        /// The server's message.
        message: String,
    },
    /// The server didn't answer in time.
    #[error("no reply within {0:?}")]
    NoReply(Duration),
    /// One statement failed for a reason that isn't the document's (a server stepping
    /// down, say).
    #[error("write error {code}: {message}")]
    Statement {
        /// The server's code.
        code: i32,
        /// The server's message.
        message: String,
    },
}

impl From<WriteFailure> for Error {
    fn from(failure: WriteFailure) -> Self {
        Error::Write(failure)
    }
}

impl Error {
    /// Whether waiting can't help: a configuration error, a start-up problem, or brokers
    /// that refuse our credentials or certificate. The process exits with the reason.
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::Config(_)
                | Error::Startup(_)
                | Error::KafkaSetup(common::kafka::SetupError::Refused { .. })
        )
    }

    /// The `reason` label of `user_sync_transient_failures_total`: which server failed.
    pub(crate) fn server(&self) -> &'static str {
        match self {
            Error::Mongo(_) | Error::Write(_) | Error::IndexBuild { .. } => "mongodb",
            Error::Kafka(_) => "kafka",
            Error::KafkaSetup(_) | Error::Config(_) | Error::Startup(_) | Error::Io(_) => "other",
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
