//! Plumbing both services share, so they configure Kafka, log and stop the same way.
//!
//! - [`config`]: reading typed settings from the environment with errors that name the
//!   variable.
//! - [`kafka`]: the Kafka variables of the contract (brokers, SASL, TLS, topic creation),
//!   mapped to a librdkafka configuration, and topic creation at start-up.
//! - [`telemetry`]: `LOG_FORMAT`/`RUST_LOG` logging.
//! - [`shutdown`]: the SIGTERM/SIGINT future.
//! - [`metrics`]: the `build_info` and `ready` metrics both services export.
//! - [`healthcheck`]: the `healthcheck` subcommand's probe of `/ready`.

pub mod config;
pub mod healthcheck;
pub mod kafka;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigError, LogFormat};
pub use secrecy::{ExposeSecret, SecretString};
