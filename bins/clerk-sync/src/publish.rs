//! Writing normalized events to Kafka, and answering only once the broker has them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kafka::{broker_reachable, KafkaSettings};
use events::{EventMessage, Family, HEADER_EVENT_ID, HEADER_EVENT_TYPE, HEADER_SCHEMA_VERSION};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use crate::config::Topics;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// The idempotent producer and where each family goes.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topics: Arc<Topics>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Publisher {
    /// Creates the producer: `acks=all`, idempotent (no duplicates or reordering from its own
    /// retries), giving up after `timeout` so a request never outlives it by much.
    pub fn new(
        kafka: &KafkaSettings,
        topics: Topics,
        timeout: Duration,
        max_body_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KafkaError> {
        let timeout_ms = timeout.as_millis().clamp(1, i32::MAX as u128).to_string();
        // librdkafka checks the uncompressed size against this before sending, and a
        // message holds the body's `data` plus the normalized record: leave room for both.
        let max_message = common::kafka::max_message_bytes(max_body_bytes);
        let producer: FutureProducer = kafka
            .client_config()
            .set("client.id", "clerk-sync")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", &timeout_ms)
            .set("request.timeout.ms", &timeout_ms)
            .set("linger.ms", "2")
            // JSON compresses well; the broker's limit (1 MB by default) applies to the
            // compressed batch.
            .set("compression.type", "lz4")
            .set("socket.keepalive.enable", "true")
            .set("message.max.bytes", max_message.to_string())
            .create()?;
        Ok(Publisher {
            producer,
            topics: Arc::new(topics),
            timeout,
            metrics,
        })
    }

    /// Publishes `message` to its family's topic, keyed by subject, with the id/type/schema
    /// headers, and returns the topic once the broker acknowledged it.
    pub async fn publish(&self, message: &EventMessage) -> Result<String, ApiError> {
        let topic = self
            .topics
            .for_family(Family::of(&message.event_type))
            .to_string();
        let payload = message.to_json();
        let schema = message.schema_version.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_EVENT_ID,
                value: Some(message.event_id.as_bytes()),
            })
            .insert(Header {
                key: HEADER_EVENT_TYPE,
                value: Some(message.event_type.as_bytes()),
            })
            .insert(Header {
                key: HEADER_SCHEMA_VERSION,
                value: Some(schema.as_bytes()),
            });
        let record = FutureRecord::to(&topic)
            .key(message.subject_id.as_bytes())
            .payload(&payload)
            .headers(headers);

        let started = Instant::now();
        // message.timeout.ms bounds librdkafka's own wait; this bounds ours, whatever
        // happens inside it (a full local queue, a stuck metadata request).
        let result = tokio::time::timeout(
            self.timeout,
            self.producer.send(record, Timeout::After(self.timeout)),
        )
        .await;
        let elapsed = started.elapsed().as_secs_f64();
        let outcome = match result {
            Ok(Ok(delivery)) => {
                tracing::debug!(
                    topic,
                    partition = delivery.partition,
                    offset = delivery.offset,
                    "published"
                );
                Ok(topic.clone())
            }
            Ok(Err((e, _))) => Err(classify(&topic, e)),
            Err(_) => Err(ApiError::BrokerUnavailable(format!(
                "no acknowledgement from {topic} within {:?}",
                self.timeout
            ))),
        };
        self.metrics.publish(&topic, outcome.is_ok(), elapsed);
        outcome
    }

    /// Whether a broker answers a metadata request within `timeout`.
    pub async fn broker_reachable(&self, timeout: Duration) -> bool {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || broker_reachable(producer.client(), timeout))
            .await
            .unwrap_or(false)
    }

    /// Waits for messages still queued to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::error!(error = %e, "producer flush failed; undelivered requests were answered 503");
        }
    }
}

fn classify(topic: &str, e: KafkaError) -> ApiError {
    match e.rdkafka_error_code() {
        // Retrying the same request can never succeed: say so plainly (Svix will still
        // retry a 500, and the log tells the operator what to change).
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
            ApiError::Internal(format!("{topic} refused the message as too large: {e}"))
        }
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            ApiError::BrokerUnavailable(format!("topic {topic} does not exist: {e}"))
        }
        _ => ApiError::BrokerUnavailable(format!("publishing to {topic} failed: {e}")),
    }
}
