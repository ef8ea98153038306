//! Publishing the events `backfill` and `reconcile` make, into the topics clerk-sync
//! publishes to, with the same key and headers (see [`events::EventMessage::headers`]).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::PublishConfig;
use crate::domain::Entity;

/// Messages awaiting the broker's acknowledgement at most.
pub(crate) const MAX_IN_FLIGHT: usize = 1000;

/// Why a message was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The producer could not be created.
    #[error("cannot create the Kafka producer: {0}")]
    Producer(#[source] KafkaError),
    /// The topics could not be checked or created.
    #[error("cannot prepare the topics: {0}")]
    Topics(#[source] common::kafka::SetupError),
    /// The broker refused or never acknowledged a message.
    #[error(
        "the broker did not take {event_id} for {topic}: {source} ({published} published \
         before; running the command again is safe: its event ids are deterministic)"
    )]
    Delivery {
        /// The event not taken.
        event_id: String,
        /// The topic it was for.
        topic: String,
        /// What the broker or librdkafka said.
        source: KafkaError,
        /// Messages the broker acknowledged before it.
        published: u64,
    },
}

/// Where events go: nowhere (a dry run counts them) or Kafka.
pub enum Sink {
    /// Counts what would be published.
    DryRun(BTreeMap<Entity, u64>),
    /// Publishes to the topics clerk-sync publishes to.
    Kafka(Publisher),
}

impl Sink {
    /// A dry run.
    pub fn dry_run() -> Self {
        Sink::DryRun(BTreeMap::new())
    }

    /// True for a dry run.
    pub(crate) fn is_dry_run(&self) -> bool {
        matches!(self, Sink::DryRun(_))
    }

    /// Sends `message`, waiting only when [`MAX_IN_FLIGHT`] are unacknowledged.
    pub(crate) async fn send(
        &mut self,
        kind: Entity,
        message: &events::EventMessage,
    ) -> Result<(), PublishError> {
        match self {
            Sink::DryRun(counts) => {
                *counts.entry(kind).or_default() += 1;
                Ok(())
            }
            Sink::Kafka(publisher) => publisher.send(kind, message).await,
        }
    }

    /// Waits until every message sent is acknowledged.
    pub async fn flush(&mut self) -> Result<(), PublishError> {
        match self {
            Sink::DryRun(_) => Ok(()),
            Sink::Kafka(publisher) => publisher.flush().await,
        }
    }

    /// Acknowledged (or counted) so far, by kind.
    pub(crate) fn published(&self) -> &BTreeMap<Entity, u64> {
        match self {
            Sink::DryRun(counts) => counts,
            Sink::Kafka(publisher) => &publisher.published,
        }
    }

    /// Acknowledged (or counted) so far.
    pub fn published_total(&self) -> u64 {
        self.published().values().sum()
    }
}

/// An idempotent, `acks=all` producer with a bounded number of messages in flight.
pub struct Publisher {
    producer: FutureProducer,
    users_topic: String,
    organizations_topic: String,
    sessions_topic: String,
    billing_topic: String,
    in_flight: FuturesUnordered<Pending>,
    published: BTreeMap<Entity, u64>,
}

/// One message awaiting its acknowledgement.
type Pending =
    futures::future::BoxFuture<'static, (Entity, String, String, Result<(), KafkaError>)>;

impl Publisher {
    /// The producer, after creating the topics that are missing (when
    /// `KAFKA_CREATE_TOPICS` allows it).
    pub async fn new(config: &PublishConfig) -> Result<Self, PublishError> {
        let max_message = common::kafka::max_message_bytes(common::kafka::DEFAULT_MAX_BODY_BYTES);
        config
            .kafka
            .ensure_topics(
                &[
                    &config.users_topic,
                    &config.organizations_topic,
                    &config.billing_topic,
                ],
                max_message,
            )
            .await
            .map_err(PublishError::Topics)?;
        let producer: FutureProducer = config
            .kafka
            .reliable_producer_config("user-sync-backfill", Duration::from_secs(60), max_message)
            .set("linger.ms", "20")
            .set("compression.type", "lz4")
            .create()
            .map_err(PublishError::Producer)?;
        Ok(Publisher {
            producer,
            users_topic: config.users_topic.clone(),
            organizations_topic: config.organizations_topic.clone(),
            sessions_topic: config.sessions_topic.clone(),
            billing_topic: config.billing_topic.clone(),
            in_flight: FuturesUnordered::new(),
            published: BTreeMap::new(),
        })
    }

    async fn send(
        &mut self,
        kind: Entity,
        message: &events::EventMessage,
    ) -> Result<(), PublishError> {
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.settle_one().await?;
        }
        let topic = match kind {
            Entity::User => self.users_topic.clone(),
            Entity::Organization | Entity::Membership | Entity::Invitation => {
                self.organizations_topic.clone()
            }
            Entity::Session => self.sessions_topic.clone(),
            Entity::Subscription | Entity::SubscriptionItem | Entity::PaymentAttempt => {
                self.billing_topic.clone()
            }
        };
        let pairs = message.headers();
        let headers = common::kafka::owned_headers(&pairs);
        let payload = message.to_json();
        let delivery: DeliveryFuture = loop {
            let record = FutureRecord::to(&topic)
                .key(message.subject_id.as_bytes())
                .payload(&payload)
                .headers(headers.clone());
            match self.producer.send_result(record) {
                Ok(delivery) => break delivery,
                // librdkafka's local queue is full: it drains as the broker acknowledges.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if self.in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    } else {
                        self.settle_one().await?;
                    }
                }
                Err((source, _)) => {
                    return Err(PublishError::Delivery {
                        event_id: message.event_id.clone(),
                        topic,
                        source,
                        published: self.published.values().sum(),
                    })
                }
            }
        };
        let event_id = message.event_id.clone();
        self.in_flight.push(Box::pin(async move {
            let result = match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(e),
                Err(_) => Err(KafkaError::Canceled),
            };
            (kind, event_id, topic, result)
        }));
        Ok(())
    }

    async fn settle_one(&mut self) -> Result<(), PublishError> {
        let Some((kind, event_id, topic, result)) = self.in_flight.next().await else {
            return Ok(());
        };
        match result {
            Ok(()) => {
                *self.published.entry(kind).or_default() += 1;
                Ok(())
            }
            Err(source) => Err(PublishError::Delivery {
                event_id,
                topic,
                source,
                published: self.published.values().sum(),
            }),
        }
    }

    async fn flush(&mut self) -> Result<(), PublishError> {
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        Ok(())
    }
}
