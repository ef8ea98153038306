//! The dead-letter topic: messages that can never be applied, with headers saying why and
//! where they came from.

use std::collections::HashMap;
use std::time::Duration;

use common::kafka::KafkaSettings;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

/// Header: a short, stable error name (`undecodable`, `unsupported_schema_version`, …).
pub(crate) const HEADER_ERROR_CODE: &str = "dlq-error-code";
/// Header: the error, for a person.
pub(crate) const HEADER_ERROR: &str = "dlq-error";
/// Header: the topic the message was consumed from.
pub(crate) const HEADER_SOURCE_TOPIC: &str = "dlq-source-topic";
/// Header: its partition.
const HEADER_SOURCE_PARTITION: &str = "dlq-source-partition";
/// Header: its offset.
const HEADER_SOURCE_OFFSET: &str = "dlq-source-offset";
/// Header, `true` when the value was too large for the DLQ and was left out.
const HEADER_VALUE_DROPPED: &str = "dlq-value-dropped";

/// Kafka Connect's dead-letter context headers (`errors.deadletterqueue.context.headers`),
/// beside ours, so tools written for Connect's DLQs read these too: the source topic,
/// partition and offset, the connector's name (`user-sync`), and the error as an
/// "exception" (class name: our code; message: the error).
const CONNECT_HEADERS: [&str; 6] = [
    "__connect.errors.topic",
    "__connect.errors.partition",
    "__connect.errors.offset",
    "__connect.errors.connector.name",
    "__connect.errors.exception.class.name",
    "__connect.errors.exception.message",
];

/// An idempotent, `acks=all` producer that copies messages between our topics (into a DLQ,
/// or back out of one), whatever their size.
pub(crate) fn copier(kafka: &KafkaSettings, client_id: &str) -> Result<FutureProducer, KafkaError> {
    kafka
        .client_config()
        .set("client.id", client_id)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .set(
            "message.max.bytes",
            common::kafka::max_message_bytes(common::kafka::DEFAULT_MAX_BODY_BYTES).to_string(),
        )
        .create()
}

/// Produces to the DLQ of each consumed topic.
#[derive(Clone)]
pub(crate) struct Dlq {
    producer: FutureProducer,
    /// Consumed topic → its DLQ.
    topics: HashMap<String, String>,
}

impl Dlq {
    /// An idempotent, `acks=all` producer for the DLQ topics (`topics`: consumed topic →
    /// its DLQ).
    pub(crate) fn new(kafka: &KafkaSettings, topics: HashMap<String, String>) -> Result<Self, KafkaError> {
        let producer = copier(kafka, "user-sync-dlq")?;
        Ok(Dlq { producer, topics })
    }

    /// Sends `message` unchanged (key, value, original headers) plus the reason headers, and
    /// waits for the broker's acknowledgement.
    pub(crate) async fn send(
        &self,
        message: &OwnedMessage,
        code: &str,
        error: &str,
    ) -> Result<(), KafkaError> {
        match self.produce(message, code, error, message.payload()).await {
            // Bigger than this producer or the DLQ topic takes: the value can't be kept, but
            // the where and why can (the source offset still holds the value).
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
                tracing::warn!(error = %e, "message too large for the DLQ; sending it without its value");
                self.produce(message, code, error, None).await
            }
            other => other,
        }
    }

    async fn produce(
        &self,
        message: &OwnedMessage,
        code: &str,
        error: &str,
        payload: Option<&[u8]>,
    ) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            // An earlier failure's headers (a message dead-lettered before, replayed, and
            // failing again) would be read first and name the old reason.
            for h in original
                .iter()
                .filter(|h| !h.key.starts_with("dlq-") && !h.key.starts_with("__connect.errors."))
            {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let truncated = (payload.is_none() && message.payload().is_some()).then_some("true");
        let [c_topic, c_partition, c_offset, c_connector, c_class, c_message] = CONNECT_HEADERS;
        for (key, value) in [
            (HEADER_ERROR_CODE, Some(code)),
            (HEADER_ERROR, Some(error)),
            (HEADER_SOURCE_TOPIC, Some(message.topic())),
            (HEADER_SOURCE_PARTITION, Some(partition.as_str())),
            (HEADER_SOURCE_OFFSET, Some(offset.as_str())),
            (HEADER_VALUE_DROPPED, truncated),
            (c_topic, Some(message.topic())),
            (c_partition, Some(partition.as_str())),
            (c_offset, Some(offset.as_str())),
            (c_connector, Some("user-sync")),
            (c_class, Some(code)),
            (c_message, Some(error)),
        ] {
            if let Some(value) = value {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
        }
        let dlq = self
            .topics
            .get(message.topic())
            .cloned()
            .unwrap_or_else(|| format!("{}.dlq", message.topic()));
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&dlq).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}
