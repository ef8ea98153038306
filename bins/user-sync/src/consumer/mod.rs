//! The consumer: the service user-sync runs by default. [`run`] starts it: health
//! endpoints at once, then the MongoDB client, the indexes and the topics (waiting for
//! the servers), then the [`worker`] loop until SIGTERM.

mod apply;
mod http;
mod metrics;
mod worker;

pub use apply::{Applied, Applier, Incoming};

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::backoff::Backoff;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::http::HealthState;
use self::metrics::Metrics;
use self::worker::Worker;
use crate::broker::Dlq;

use crate::config::Config;
use crate::store::Store;
use crate::{Error, Result};

/// Runs `attempt` until it succeeds, waiting with exponential backoff after failures that
/// can pass. `None` when `stop` is cancelled first; configuration and [`Error::Startup`]
/// errors, and brokers that refuse our credentials or certificate, which waiting can't
/// fix, are returned (the process exits with the reason).
async fn until_ready<T, F, Fut>(
    stop: &CancellationToken,
    what: &str,
    mut attempt: F,
) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
    let mut failures = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(Some(value)),
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "start-up: waiting for {what}");
                failures += 1;
                tokio::select! {
                    () = stop.cancelled() => return Ok(None),
                    () = tokio::time::sleep(backoff.delay(failures)) => {}
                }
            }
        }
    }
}

/// Runs until SIGTERM/SIGINT: then finishes the batch in hand, commits, leaves the group.
pub async fn run(config: Config, listener: TcpListener) -> Result<()> {
    run_until(config, listener, common::shutdown::shutdown_signal()).await
}

/// [`run`], stopping when `shutdown` resolves (tests pass their own).
pub async fn run_until<F>(config: Config, listener: TcpListener, shutdown: F) -> Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let stop = common::shutdown::cancel_on(shutdown);
    // Parsing a mongodb+srv:// URI resolves DNS: wait for it like for the servers below.
    let connect = || connect(&config);
    let Some(store) = until_ready(&stop, "the MongoDB client", connect).await? else {
        return Ok(());
    };
    let metrics = Arc::new(Metrics::new(store.traffic()));
    let consumer = worker::consumer(&config.queue.kafka, &config.queue.group_id, metrics.clone())?;
    let consuming = Arc::new(AtomicBool::new(false));

    // Health answers from the start, so an orchestrator sees "alive, not ready" while
    // MongoDB or Kafka are still coming up.
    let health = HealthState {
        store: store.clone(),
        consumer: consumer.clone(),
        metrics: metrics.clone(),
        consuming: consuming.clone(),
    };
    let server = serve_health(listener, health, stop.clone())?;

    // Start-up needs both servers; wait for them rather than crash-loop.
    let prepare = || prepare(&config, &store);
    match until_ready(&stop, "MongoDB and Kafka", prepare).await {
        Ok(Some(())) => {}
        Ok(None) => return Ok(()),
        Err(e) => {
            stop.cancel();
            return Err(e);
        }
    }

    let topics: Vec<&str> = config
        .queue
        .topics
        .iter()
        .map(|t| t.topic.as_str())
        .collect();
    tracing::info!(
        topics = ?topics,
        group = config.queue.group_id,
        database = config.mongo.database,
        batch_size = config.batch_size,
        "user-sync consuming"
    );
    let worker = Worker {
        consumer,
        applier: Applier::new(store, config.queue.entities.clone()),
        dlq: Dlq::new(&config.queue.kafka, config.dlqs())?,
        metrics,
        batch_size: config.batch_size,
        link: config.link.clone(),
    };
    consuming.store(true, Ordering::Release);
    let result = worker.run(&topics, stop.clone()).await;
    stop.cancel();
    server.await.map_err(std::io::Error::other)??;
    tracing::info!("user-sync stopped");
    result
}

/// The MongoDB client. A malformed URI is a configuration error: it won't get better by
/// waiting. (The driver's message may quote the URI, password included: not repeated.)
async fn connect(config: &Config) -> Result<Store> {
    Store::connect(&config.mongo).await.map_err(|e| match e {
        Error::Mongo(e) if matches!(*e.kind, mongodb::error::ErrorKind::InvalidArgument { .. }) => {
            common::ConfigError::new("MONGODB_URI", "is not a valid MongoDB connection string")
                .into()
        }
        e => e,
    })
}

/// Serves `/health`, `/ready` and `/metrics` on `listener` until `stop`.
fn serve_health(
    listener: TcpListener,
    state: HealthState,
    stop: CancellationToken,
) -> Result<JoinHandle<std::io::Result<()>>> {
    tracing::info!(address = %listener.local_addr()?, "health endpoints listening");
    Ok(tokio::spawn(async move {
        axum::serve(listener, http::router(state))
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    }))
}

/// What consuming needs of the servers: the indexes, the topics and their DLQs.
async fn prepare(config: &Config, store: &Store) -> Result<()> {
    store.ensure_indexes(&config.queue.entities).await?;
    if let Some(link) = &config.link {
        store.prepare_link(link).await?;
    }
    let max_message = common::kafka::max_message_bytes(common::kafka::DEFAULT_MAX_BODY_BYTES);
    let topics: Vec<&str> = config
        .queue
        .topics
        .iter()
        .flat_map(|t| [t.topic.as_str(), t.dlq.as_str()])
        .collect();
    config
        .queue
        .kafka
        .ensure_topics(&topics, max_message)
        .await?;
    Ok(())
}
