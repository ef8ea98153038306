//! clerk-sync: Clerk's Svix-signed webhooks in, acknowledged Kafka events out.
//!
//! `POST /webhook` verifies the signature over the raw body, normalizes the Clerk event
//! into the shared [`events::EventMessage`], publishes it keyed by its subject, and answers
//! 200 only after the broker has acknowledged the write; otherwise it answers an error
//! status, so Svix retries and nothing is lost.

mod config;
mod error;
mod in_flight;
mod metrics;
mod publish;
mod routes;
mod server;
pub mod sign;
mod verify;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, Limits, Topics, DEFAULT_PORT};
pub use error::{Error, Result};

use in_flight::InFlight;
use metrics::Metrics;
use publish::Publisher;
use verify::Verifier;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    verifier: Arc<Verifier>,
    publisher: Publisher,
    metrics: Arc<Metrics>,
    in_flight: Arc<InFlight>,
    limits: Limits,
    max_body_bytes: usize,
    /// `PUBLISH_MESSAGE_BODIES`
    publish_message_bodies: bool,
}

impl AppState {
    /// Creates the producer and, when `KAFKA_CREATE_TOPICS` is on, the missing topics.
    /// `on_fatal` is cancelled if the producer ever fails for good.
    pub async fn build(config: &Config, on_fatal: CancellationToken) -> Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let verifier = Verifier::new(&config.webhook_secrets, config.query_secret.clone())?;
        let publisher = Publisher::new(
            &config.kafka,
            config.topics.clone(),
            config.publish_timeout,
            config.max_body_bytes,
            metrics.clone(),
            on_fatal,
        )?;
        let max_message = common::kafka::max_message_bytes(config.max_body_bytes);
        config
            .kafka
            .ensure_topics(&config.topics.all(), max_message)
            .await?;
        Ok(AppState {
            verifier: Arc::new(verifier),
            publisher,
            metrics,
            in_flight: InFlight::new(config.limits.max_in_flight),
            limits: config.limits,
            max_body_bytes: config.max_body_bytes,
            publish_message_bodies: config.publish_message_bodies,
        })
    }
}

/// The routes of the contract, apart from serving them. The body limit, timeouts and
/// in-flight cap of `/webhook` are applied by its handler, after the query secret.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhook", post(routes::webhook))
        .route("/health", get(routes::health))
        .route("/ready", get(routes::ready))
        .route("/metrics", get(routes::metrics))
        .with_state(state)
}

/// Serves until SIGTERM/SIGINT, then finishes requests in flight and flushes the producer.
pub async fn run(config: Config, listener: TcpListener) -> Result<()> {
    run_until(config, listener, common::shutdown::shutdown_signal()).await
}

/// [`run`], stopping when `shutdown` resolves (tests pass their own).
pub async fn run_until<F>(config: Config, listener: TcpListener, shutdown: F) -> Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    // A signal during start-up (topic creation can take a while) also ends cleanly.
    let stop = common::shutdown::cancel_on(shutdown);
    // A fatal producer error stops the server too; the process then exits with an error.
    let state = tokio::select! {
        state = AppState::build(&config, stop.child_token()) => state?,
        () = stop.cancelled() => {
            tracing::info!("stopped during start-up");
            return Ok(());
        }
    };
    let publisher = state.publisher.clone();
    tracing::info!(
        address = %listener.local_addr()?,
        users = config.topics.users,
        secrets = config.webhook_secrets.len(),
        "clerk-sync listening"
    );
    // A child of `stop`, also cancelled by a fatal producer error: either stops serving.
    let stopping = publisher.on_fatal();
    server::serve(listener, router(state), config.limits, stopping).await?;
    if let Some((code, reason)) = publisher.fatal_error() {
        tracing::error!(
            ?code,
            reason,
            "clerk-sync stopped: the Kafka producer failed for good"
        );
        return Err(Error::FatalProducer { code, reason });
    }
    // Every request was answered after its acknowledgement, so this only matters for
    // sends that timed out; it bounds shutdown at the publish timeout.
    publisher.flush(config.publish_timeout.max(Duration::from_secs(1)));
    tracing::info!("clerk-sync stopped");
    Ok(())
}
