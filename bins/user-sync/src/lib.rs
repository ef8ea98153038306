//! user-sync: normalized Clerk user events from Kafka into MongoDB, exactly once in effect
//! and whatever the delivery order.
//!
//! - [`consume`]: the group consumer, batches, backoff, offsets stored after the writes.
//! - [`apply`]: the conditional writes and the order rules.
//! - [`dlq`]: the dead-letter topic.
//! - [`store`]: MongoDB collections and indexes.
//! - [`http`]: `/health`, `/ready`, `/metrics`.

pub mod apply;
pub mod config;
pub mod consume;
pub mod dlq;
pub mod error;
pub mod http;
pub mod metrics;
pub mod store;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::{Error, Result};

/// Runs until SIGTERM/SIGINT: then finishes the batch in hand, commits, leaves the group.
pub async fn run(config: Config, listener: TcpListener) -> Result<()> {
    run_until(config, listener, common::shutdown::shutdown_signal()).await
}

/// [`run`], stopping when `shutdown` resolves (tests pass their own).
pub async fn run_until<F>(config: Config, listener: TcpListener, shutdown: F) -> Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.cancel();
    });

    let metrics = Arc::new(metrics::Metrics::new());
    // Parsing a mongodb+srv:// URI resolves DNS: wait for it like for the servers below.
    let mut delay = Duration::from_millis(500);
    let store = loop {
        match store::Store::connect(&config.mongo).await {
            Ok(store) => break store,
            // A malformed URI won't get better by waiting.
            // (Its message may quote the URI, password included: not repeated.)
            Err(Error::Mongo(e))
                if matches!(*e.kind, mongodb::error::ErrorKind::InvalidArgument { .. }) =>
            {
                stop.cancel();
                let reason = "is not a valid MongoDB connection string";
                return Err(common::ConfigError::new("MONGODB_URI", reason).into());
            }
            Err(e) => {
                tracing::warn!(error = %e, "start-up: cannot set up the MongoDB client yet");
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(15));
            }
        }
    };
    let consumer = consume::consumer(&config.kafka, &config.group_id, metrics.clone())?;
    let consuming = Arc::new(AtomicBool::new(false));

    // Health answers from the start, so an orchestrator sees "alive, not ready" while
    // MongoDB or Kafka are still coming up.
    let health = http::router(http::HealthState {
        store: store.clone(),
        consumer: consumer.clone(),
        metrics: metrics.clone(),
        consuming: consuming.clone(),
    });
    let http_stop = stop.clone();
    tracing::info!(address = %listener.local_addr()?, "health endpoints listening");
    let server = tokio::spawn(async move {
        axum::serve(listener, health)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await
    });

    // Start-up needs both servers; wait for them rather than crash-loop.
    let mut delay = Duration::from_millis(500);
    loop {
        let attempt = async {
            store.ensure_indexes().await?;
            config
                .kafka
                .ensure_topics(
                    &[&config.topic, &config.dlq_topic],
                    common::kafka::max_message_bytes(common::kafka::DEFAULT_MAX_BODY_BYTES),
                )
                .await?;
            Ok::<_, Error>(())
        };
        match attempt.await {
            Ok(()) => break,
            Err(e @ Error::Startup(_)) => {
                stop.cancel();
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(error = %e, "start-up: waiting for MongoDB and Kafka");
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(15));
            }
        }
    }

    tracing::info!(
        topic = config.topic,
        group = config.group_id,
        database = config.mongo.database,
        collection = config.mongo.users_collection,
        "user-sync consuming"
    );
    let worker = consume::Worker {
        consumer,
        applier: apply::Applier::new(store),
        dlq: dlq::Dlq::new(&config.kafka, config.dlq_topic.clone())?,
        metrics,
    };
    consuming.store(true, Ordering::Release);
    let result = worker.run(&config.topic, stop.clone()).await;
    stop.cancel();
    server.await.map_err(std::io::Error::other)??;
    tracing::info!("user-sync stopped");
    result
}
