//! What the benchmark examples share: their servers from the environment, a topic of
//! their own, an acknowledging producer. (Each example uses part of it.)
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::kafka::KafkaSettings;
use events::EventMessage;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The servers of scripts/services.sh, and a name for this run's topic and database.
pub struct Servers {
    pub brokers: String,
    pub uri: String,
    pub kafka: KafkaSettings,
    /// Unique to this process: for topic and database names.
    pub run: String,
}

impl Servers {
    /// `KAFKA_BROKERS` and `MONGODB_URI`.
    pub fn from_env() -> anyhow::Result<Self> {
        let brokers = std::env::var("KAFKA_BROKERS")?;
        Ok(Servers {
            kafka: KafkaSettings::plaintext(&brokers),
            brokers,
            uri: std::env::var("MONGODB_URI")?,
            run: format!("{:x}", std::process::id()),
        })
    }

    /// Creates `topic` with `partitions`; the admin client, to delete it at the end.
    pub async fn topic(
        &self,
        topic: &str,
        partitions: i32,
    ) -> anyhow::Result<AdminClient<DefaultClientContext>> {
        let admin: AdminClient<DefaultClientContext> = self.kafka.client_config().create()?;
        admin
            .create_topics(
                [&NewTopic::new(
                    topic,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new(),
            )
            .await?;
        Ok(admin)
    }

    /// An idempotent producer whose sends are acknowledged by every replica.
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        Ok(self
            .kafka
            .client_config()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()?)
    }
}

/// user-sync's own log on stderr, filtered by `RUST_LOG` (the scripts set `warn`).
pub fn log_to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
}

/// The first command-line argument as a count, or `default`.
pub fn count_arg(default: usize) -> anyhow::Result<usize> {
    Ok(std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(default))
}

/// Sends `events` one after another, keyed by subject, each acknowledged.
pub async fn send_all(
    producer: &FutureProducer,
    topic: &str,
    events: &[EventMessage],
) -> anyhow::Result<()> {
    for m in events {
        producer
            .send(
                FutureRecord::to(topic)
                    .key(&m.subject_id)
                    .payload(&m.to_json()),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// A run of user-sync in this process, until it had finished with every event asked for.
pub struct Finished {
    /// Its metrics at the end, as (name with labels, value); they start at zero with each
    /// run, and count the consumer's work only (not start-up's index checks).
    pub metrics: BTreeMap<String, f64>,
    /// When its metrics first showed an event finished, and when they showed all.
    pub first: Instant,
    pub last: Instant,
}

impl Finished {
    /// The sum of the metrics whose name (labels included) starts with `prefix`.
    pub fn sum(&self, prefix: &str) -> f64 {
        self.metrics
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Runs user-sync with `vars` (from its group's committed position) until it has finished
/// with `n` events, or fails after `limit`.
pub async fn run_user_sync(
    vars: &[(String, String)],
    n: usize,
    limit: Duration,
) -> anyhow::Result<Finished> {
    let config = user_sync::Config::from_vars(vars.iter().cloned())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = tokio::spawn(user_sync::run_until(config, listener, async {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();
    let deadline = Instant::now() + limit;
    let mut first = None;
    loop {
        let metrics = match http.get(&url).send().await {
            Ok(r) => parse_metrics(&r.text().await.unwrap_or_default()),
            Err(_) => BTreeMap::new(),
        };
        let finished = Finished {
            metrics,
            first: first.unwrap_or_else(Instant::now),
            last: Instant::now(),
        };
        let events = finished.sum("user_sync_events_total") as usize;
        if events > 0 {
            first.get_or_insert(finished.last);
        }
        if events >= n {
            let _ = stop_tx.send(());
            app.await??;
            return Ok(finished);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "user-sync finished {events} of {n} events in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prometheus text as (name with labels, value).
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}
