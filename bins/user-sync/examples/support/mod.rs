//! What the benchmark examples share: their servers from the environment, a topic of
//! their own, an acknowledging producer. (Each example uses part of it.)
#![allow(dead_code)]

use std::time::Duration;

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
