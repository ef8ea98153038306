//! Writing normalized events to Kafka, and answering only once the broker has them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kafka::{broker_reachable, KafkaSettings};
use common::traces::KeyValue;
use events::{EventMessage, Family};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use tracing::Instrument;

use crate::config::Topics;
use crate::metrics::Metrics;

/// Why an event is not in Kafka.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    /// No acknowledgement in time; a retry may pass.
    #[error("no acknowledgement from {topic} within {waited:?}")]
    TimedOut {
        /// Destination.
        topic: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The broker or the network failed in a way that passes with time.
    #[error("publishing to {topic} failed for now: {source}")]
    Unavailable {
        /// Destination.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The cluster refuses this write (authorization, policy, size): retrying the same
    /// request can't pass until an operator changes something.
    #[error("{topic} refused the event: {source}")]
    Refused {
        /// Destination.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The producer is unusable for good (librdkafka's fatal idempotence errors); the
    /// process stops so its orchestrator restarts it with a new one.
    #[error("the Kafka producer failed for good ({code:?}): {reason}")]
    Fatal {
        /// librdkafka's fatal error code.
        code: RDKafkaErrorCode,
        /// librdkafka's explanation.
        reason: String,
    },
}

impl PublishError {
    /// Whether the same request may pass later without anyone changing anything.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            PublishError::TimedOut { .. } | PublishError::Unavailable { .. }
        )
    }
}

/// The idempotent producer and where each family goes.
#[derive(Clone)]
pub(crate) struct Publisher {
    producer: FutureProducer,
    topics: Arc<Topics>,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// Cancelled on a fatal producer error: the server then stops, and the process exits
    /// with an error.
    on_fatal: tokio_util::sync::CancellationToken,
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
        on_fatal: tokio_util::sync::CancellationToken,
    ) -> Result<Self, KafkaError> {
        let timeout_ms = timeout.as_millis().clamp(1, i32::MAX as u128).to_string();
        // librdkafka checks the uncompressed size against this before sending, and a
        // message holds the body's `data` plus the normalized record: leave room for both.
        let max_message = common::kafka::max_message_bytes(max_body_bytes);
        let producer: FutureProducer = kafka
            .reliable_producer_config("clerk-sync", timeout, max_message)
            .set("request.timeout.ms", &timeout_ms)
            .set("linger.ms", "2")
            // JSON compresses well; the broker's limit (1 MB by default) applies to the
            // compressed batch.
            .set("compression.type", "lz4")
            .set("socket.keepalive.enable", "true")
            .create()?;
        Ok(Publisher {
            producer,
            topics: Arc::new(topics),
            timeout,
            metrics,
            on_fatal,
        })
    }

    /// Publishes `message` to its family's topic, keyed by subject, with the id/type/schema
    /// headers, and returns the topic once the broker acknowledged it. Waits at most the
    /// publish timeout, and never past `deadline`.
    pub async fn publish(
        &self,
        message: &EventMessage,
        deadline: Instant,
    ) -> Result<&str, PublishError> {
        let topic = self.topics.for_family(Family::of(&message.event_type));
        let span = tracing::info_span!("publish", otel.name = %format!("send {topic}"), otel.kind = "producer");
        if common::traces::enabled() {
            common::traces::set_attributes(
                &span,
                [
                    KeyValue::new("messaging.system", "kafka"),
                    KeyValue::new("messaging.operation.type", "send"),
                    KeyValue::new("messaging.destination.name", topic.to_string()),
                    KeyValue::new("messaging.message.id", message.event_id.clone()),
                    KeyValue::new("messaging.kafka.message.key", message.subject_id.clone()),
                ],
            );
        }
        let payload = message.to_json();
        let mut pairs = message.headers();
        // The message carries this span's context: user-sync links the batch that applies
        // it (and its DLQ copy, and a replay of that) to this trace.
        common::traces::inject(&span, &mut pairs);
        let headers = common::kafka::owned_headers(&pairs);
        let record = FutureRecord::to(topic)
            .key(message.subject_id.as_bytes())
            .payload(&payload)
            .headers(headers);

        let started = Instant::now();
        let wait = self
            .timeout
            .min(deadline.saturating_duration_since(started));
        // message.timeout.ms bounds librdkafka's own wait; this bounds ours, whatever
        // happens inside it (a full local queue, a stuck metadata request).
        let result = tokio::time::timeout(wait, self.producer.send(record, Timeout::After(wait)))
            .instrument(span.clone())
            .await;
        let outcome = match result {
            Ok(Ok(delivery)) => {
                tracing::debug!(
                    topic,
                    partition = delivery.partition,
                    offset = delivery.offset,
                    "published"
                );
                Ok(topic)
            }
            Ok(Err((e, _))) => Err(self.classify(topic, e)),
            Err(_) => Err(PublishError::TimedOut {
                topic: topic.to_string(),
                waited: wait,
            }),
        };
        self.metrics
            .publish(topic, outcome.is_ok(), started.elapsed().as_secs_f64());
        if let Err(e) = &outcome {
            common::traces::set_error(&span, e.to_string());
        }
        outcome
    }

    /// Names the failure; a fatal one also stops the server.
    fn classify(&self, topic: &str, e: KafkaError) -> PublishError {
        if let Some((code, reason)) = self.fatal_error() {
            return PublishError::Fatal { code, reason };
        }
        let topic = topic.to_string();
        match e.rdkafka_error_code().map(class_of) {
            Some(Class::Refused) => PublishError::Refused { topic, source: e },
            _ => PublishError::Unavailable { topic, source: e },
        }
    }

    /// The token cancelled on a fatal error (or when the process stops).
    pub fn on_fatal(&self) -> tokio_util::sync::CancellationToken {
        self.on_fatal.clone()
    }

    /// librdkafka's fatal error, once the producer has one. It never recovers from it, so
    /// finding one also stops the server, whoever looks (a failed publish, `/ready`): the
    /// process then exits and is restarted rather than staying unready.
    pub fn fatal_error(&self) -> Option<(RDKafkaErrorCode, String)> {
        let fatal = self.producer.client().fatal_error();
        if fatal.is_some() {
            self.on_fatal.cancel();
        }
        fatal
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

/// What a produce error says about retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// The cluster refuses the write as configured: only an operator can change that.
    Refused,
    /// Anything else: brokers, leaders, the network, queues (librdkafka's own errors are
    /// mostly of this kind), which pass with time.
    Transient,
}

/// Errors the broker returns for a write that will be refused again until an operator acts.
/// Unknown topics are not among them: a topic being created or replicated answers so for
/// a moment, and Svix's retries then carry the event through.
fn class_of(code: RDKafkaErrorCode) -> Class {
    use RDKafkaErrorCode as C;
    match code {
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::PolicyViolation
        | C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::InvalidRecord
        | C::InvalidTopic
        | C::InvalidRequiredAcks
        | C::UnsupportedVersion
        | C::UnsupportedCompressionType
        | C::Fatal => Class::Refused,
        _ => Class::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_from_passing_failures() {
        use RDKafkaErrorCode as C;
        for code in [
            C::TopicAuthorizationFailed,
            C::ClusterAuthorizationFailed,
            C::PolicyViolation,
            C::MessageSizeTooLarge,
            C::Fatal,
        ] {
            assert_eq!(class_of(code), Class::Refused, "{code:?}");
        }
        for code in [
            C::MessageTimedOut,
            C::QueueFull,
            C::AllBrokersDown,
            C::BrokerTransportFailure,
            C::NotEnoughReplicas,
            C::NotLeaderForPartition,
            C::LeaderNotAvailable,
            C::RequestTimedOut,
            C::UnknownTopicOrPartition,
        ] {
            assert_eq!(class_of(code), Class::Transient, "{code:?}");
        }
    }

    #[test]
    fn only_passing_failures_are_retriable() {
        let topic = "t".to_string();
        let timed_out = PublishError::TimedOut {
            topic: topic.clone(),
            waited: Duration::from_secs(1),
        };
        assert!(timed_out.is_retriable());
        let refused = PublishError::Refused {
            topic,
            source: KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
        };
        assert!(!refused.is_retriable());
        let fatal = PublishError::Fatal {
            code: RDKafkaErrorCode::OutOfOrderSequenceNumber,
            reason: "gap".into(),
        };
        assert!(!fatal.is_retriable());
    }
}
