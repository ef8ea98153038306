//! clerk-sync: Clerk's Svix-signed webhooks in, acknowledged Kafka events out.
//!
//! `POST /webhook` verifies the signature over the raw body, normalizes the Clerk event
//! into the shared [`events::EventMessage`], publishes it keyed by its subject, and answers
//! 200 only after the broker has acknowledged the write; otherwise it answers an error
//! status, so Svix retries and nothing is lost.

pub mod config;
pub mod error;
pub mod metrics;
pub mod publish;
pub mod routes;
pub mod sign;
pub mod verify;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub use config::Config;
pub use error::{ApiError, Error, Result};

use metrics::Metrics;
use publish::Publisher;
use verify::Verifier;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Signature and query-secret checks.
    pub verifier: Arc<Verifier>,
    /// The Kafka producer.
    pub publisher: Publisher,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// `MAX_BODY_BYTES`, for the 413 message.
    pub max_body_bytes: usize,
}

impl AppState {
    /// Creates the producer and, when `KAFKA_CREATE_TOPICS` is on, the missing topics.
    pub async fn build(config: &Config) -> Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let verifier = Verifier::new(&config.webhook_secrets, config.query_secret.clone())?;
        let publisher = Publisher::new(
            &config.kafka,
            config.topics.clone(),
            config.publish_timeout,
            config.max_body_bytes,
            metrics.clone(),
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
            max_body_bytes: config.max_body_bytes,
        })
    }
}

/// The routes of the contract, apart from serving them.
pub fn router(state: AppState) -> Router {
    let webhook = post(routes::webhook).layer(DefaultBodyLimit::max(state.max_body_bytes));
    Router::new()
        .route("/webhook", webhook)
        .route("/health", get(routes::health))
        .route("/ready", get(routes::ready))
        .route("/metrics", get(routes::metrics))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                // The path only: the query may carry WEBHOOK_QUERY_SECRET.
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = request.uri().path(),
                    svix_id = request
                        .headers()
                        .get("svix-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default(),
                )
            }),
        )
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
    let state = tokio::select! {
        state = AppState::build(&config) => state?,
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
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await?;
    // Every request was answered after its acknowledgement, so this only matters for
    // sends that timed out; it bounds shutdown at the publish timeout.
    publisher.flush(config.publish_timeout.max(Duration::from_secs(1)));
    tracing::info!("clerk-sync stopped");
    Ok(())
}
