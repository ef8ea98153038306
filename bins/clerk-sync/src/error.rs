//! clerk-sync's errors: [`Error`] for start-up and the process, [`ApiError`] for HTTP
//! answers. Each layer has its own error ([`VerifyError`], [`NormalizeError`],
//! [`PublishError`]); this is where they become the contract's statuses and codes.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::ConfigError;
use events::NormalizeError;
use rdkafka::error::KafkaError;
use serde::Serialize;

use crate::publish::PublishError;
use crate::verify::VerifyError;

/// What can stop clerk-sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Topic set-up at start-up failed (the message says why, from librdkafka).
    #[error(transparent)]
    KafkaSetup(#[from] common::kafka::SetupError),
    /// A missing or malformed variable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Kafka client could not be created, or topics could not be created.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Listening or serving failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The producer failed for good (the server stopped; a restart builds a new one).
    #[error("kafka producer: fatal error {code:?}: {reason}")]
    FatalProducer {
        /// librdkafka's code.
        code: rdkafka::types::RDKafkaErrorCode,
        /// librdkafka's explanation.
        reason: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A request that can't be accepted. The answer is the contract's
/// `{"error": "<sentence>", "code": "<CODE>"}`; the source goes to the log only, and
/// neither ever holds a secret or a header value.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The query secret, the Svix headers or the signature.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The body passed verification but is not a Clerk event we can read.
    #[error(transparent)]
    Normalize(#[from] NormalizeError),
    /// Kafka did not take the event.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The body is larger than `MAX_BODY_BYTES`.
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// `MAX_IN_FLIGHT` requests are being handled; the sender should retry shortly.
    #[error("too many requests in flight; retry shortly")]
    Overloaded,
    /// The request took longer than `REQUEST_TIMEOUT_MS` to arrive.
    #[error("the request body did not arrive within {0:?}")]
    RequestTimeout(Duration),
    /// The connection failed while the body was arriving.
    #[error("the request body could not be read")]
    BodyRead(#[source] axum::Error),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    code: &'a str,
}

/// `Retry-After` of an `OVERLOADED` answer, in seconds.
const RETRY_AFTER_SECONDS: &str = "1";

impl ApiError {
    /// The HTTP status of the contract.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    /// The machine-readable code of the contract.
    pub fn code(&self) -> &'static str {
        self.status_and_code().1
    }

    /// Status and code together, so one can't drift from the other.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::Verify(e) => match e {
                VerifyError::MissingHeaders(_) | VerifyError::InvalidHeader { .. } => {
                    (S::BAD_REQUEST, "MISSING_HEADERS")
                }
                VerifyError::InvalidSignature => (S::UNAUTHORIZED, "INVALID_SIGNATURE"),
                VerifyError::TimestampOutOfTolerance => {
                    (S::UNAUTHORIZED, "TIMESTAMP_OUT_OF_TOLERANCE")
                }
                VerifyError::InvalidQuerySecret => (S::UNAUTHORIZED, "INVALID_QUERY_SECRET"),
            },
            ApiError::Normalize(NormalizeError::InvalidJson(_)) => (S::BAD_REQUEST, "INVALID_JSON"),
            ApiError::Normalize(NormalizeError::InvalidPayload(_)) | ApiError::BodyRead(_) => {
                (S::BAD_REQUEST, "INVALID_PAYLOAD")
            }
            ApiError::Publish(e) if e.is_retriable() => {
                (S::SERVICE_UNAVAILABLE, "BROKER_UNAVAILABLE")
            }
            ApiError::Publish(_) => (S::INTERNAL_SERVER_ERROR, "INTERNAL"),
            ApiError::PayloadTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            ApiError::Overloaded => (S::SERVICE_UNAVAILABLE, "OVERLOADED"),
            ApiError::RequestTimeout(_) => (S::REQUEST_TIMEOUT, "REQUEST_TIMEOUT"),
        }
    }

    /// The sentence for the sender: what went wrong on their side, or that it's ours.
    fn sentence(&self) -> String {
        match self {
            ApiError::Publish(e) if e.is_retriable() => {
                "the event could not be written to Kafka; retry later".into()
            }
            ApiError::Publish(_) => "internal error".into(),
            other => other.to_string(),
        }
    }

    /// Logs the refusal once: server errors with their cause at `error`, the sender's
    /// mistakes at `warn`.
    pub fn log(&self) {
        let code = self.code();
        if self.status().is_server_error() {
            tracing::error!(code, error = %ErrorChain(self), "request refused");
        } else {
            tracing::warn!(code, error = %ErrorChain(self), "request refused");
        }
    }
}

/// An error and its sources, `: `-separated, for one log field.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: self.sentence(),
            code: self.code(),
        });
        let mut response = (self.status(), body).into_response();
        if matches!(self, ApiError::Overloaded) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}
