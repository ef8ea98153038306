//! The message clerk-sync publishes and user-sync consumes.
//!
//! - [`clerk`]: serde types for the Clerk webhook envelope and the Clerk objects we read.
//! - [`message`]: the normalized, versioned Kafka message ([`EventMessage`]), its headers
//!   and its JSON Schema.
//! - [`redact`]: keeping the one-time codes of `email.created`/`sms.created` off Kafka.
//! - [`normalize`]: turning a verified webhook body into an [`EventMessage`], with the
//!   contract's event-time rule, and the topic family an event type is routed to.
//!
//! No Kafka or MongoDB code lives here: both services depend on this crate, and its types
//! are the wire format between them.

pub mod clerk;
pub mod message;
pub mod normalize;
pub mod redact;

pub use message::{
    DecodeError, EmailAddress, EventMessage, Origin, PayerType, Record, UserRecord,
    HEADER_EVENT_ID, HEADER_EVENT_ORIGIN, HEADER_EVENT_TYPE, HEADER_SCHEMA_VERSION, SCHEMA_ID,
    SCHEMA_VERSION,
};
pub use normalize::{normalize, to_millis, Family, NormalizeError};
