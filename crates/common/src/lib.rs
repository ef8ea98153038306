//! Plumbing both services share, so they configure Kafka, log and stop the same way.
//!
//! - [`backoff`]: the exponential backoff of every retry loop.
//! - [`config`]: reading typed settings from the environment with errors that name the
//!   variable.
//! - [`kafka`]: the Kafka variables of the contract (brokers, SASL, TLS, topic creation),
//!   mapped to a librdkafka configuration, and topic creation at start-up.
//! - [`telemetry`]: `LOG_FORMAT`/`RUST_LOG` logging, and OpenTelemetry traces when the
//!   `OTEL_*` variables ask for them.
//! - [`traces`]: the trace export and the W3C Trace Context headers on Kafka messages.
//! - [`shutdown`]: the SIGTERM/SIGINT future.
//! - [`metrics`]: the `build_info` and `ready` metrics both services export.
//! - [`healthcheck`]: the `healthcheck` subcommand's probe of `/ready`.
//!
//! It also sets the global allocator (mimalloc), for every program that links it.

pub mod backoff;
pub mod config;
pub mod healthcheck;
pub mod kafka;
pub mod metrics;
pub mod process;
pub mod shutdown;
pub mod telemetry;
pub mod traces;

pub use config::{ConfigError, LogFormat};

/// The allocator of every program built on this crate: both services, their tests and
/// their benchmarks (so a benchmark's figure is the binary's). glibc's allocator took
/// about a third of user-sync's CPU at 1,250 events/s (`perf` during
/// `scripts/e2e-bench.sh`: malloc, free and their consolidation), as every event allocates
/// a few hundred small strings and documents across threads. mimalloc, with the payload
/// converted once, brought user-sync from 288 to 148 µs per event (docs/src/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub use secrecy::{ExposeSecret, SecretString};
