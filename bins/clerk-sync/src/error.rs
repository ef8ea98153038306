//! clerk-sync's errors: [`Error`] for start-up and the process, [`ApiError`] for HTTP answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::ConfigError;
use rdkafka::error::KafkaError;
use serde::Serialize;

/// What can stop clerk-sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A missing or malformed variable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Kafka client could not be created, or topics could not be created.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Listening or serving failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A request that can't be accepted. The answer is the contract's
/// `{"error": "<sentence>", "code": "<CODE>"}`; the detail is logged, and neither ever
/// holds a secret or a header value.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// One or more of `svix-id`, `svix-timestamp`, `svix-signature` is absent.
    #[error("missing required header(s): {0}")]
    MissingHeaders(String),
    /// The body passed verification but is not JSON.
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON but not a Clerk event we can read.
    #[error("{0}")]
    InvalidPayload(String),
    /// No configured secret produced the signature.
    #[error("the webhook signature does not match any configured signing secret")]
    InvalidSignature,
    /// `svix-timestamp` is more than 5 minutes away from now.
    #[error("the webhook timestamp is outside the 5 minute tolerance")]
    TimestampOutOfTolerance,
    /// `?secret=` is missing or wrong.
    #[error("the `secret` query parameter is missing or wrong")]
    InvalidQuerySecret,
    /// The body is larger than `MAX_BODY_BYTES`.
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The broker did not acknowledge the write in time; the sender should retry.
    #[error("the event could not be written to Kafka; retry later")]
    BrokerUnavailable(String),
    /// Anything else.
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    code: &'a str,
}

impl ApiError {
    /// The HTTP status of the contract.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingHeaders(_)
            | ApiError::InvalidJson(_)
            | ApiError::InvalidPayload(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidSignature
            | ApiError::TimestampOutOfTolerance
            | ApiError::InvalidQuerySecret => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BrokerUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code of the contract.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingHeaders(_) => "MISSING_HEADERS",
            ApiError::InvalidJson(_) => "INVALID_JSON",
            ApiError::InvalidPayload(_) => "INVALID_PAYLOAD",
            ApiError::InvalidSignature => "INVALID_SIGNATURE",
            ApiError::TimestampOutOfTolerance => "TIMESTAMP_OUT_OF_TOLERANCE",
            ApiError::InvalidQuerySecret => "INVALID_QUERY_SECRET",
            ApiError::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            ApiError::BrokerUnavailable(_) => "BROKER_UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL",
        }
    }

    /// The detail that goes to the log only.
    fn detail(&self) -> Option<&str> {
        match self {
            ApiError::BrokerUnavailable(d) | ApiError::Internal(d) => Some(d),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        if status.is_server_error() {
            tracing::error!(code, detail = self.detail(), "{self}");
        } else {
            tracing::warn!(code, "{self}");
        }
        let body = ErrorBody {
            error: self.to_string(),
            code,
        };
        (status, Json(body)).into_response()
    }
}
