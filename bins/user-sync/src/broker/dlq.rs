//! The dead-letter topic: messages that can never be applied, with headers saying why and
//! where they came from.

use std::collections::HashMap;
use std::time::Duration;

use common::kafka::KafkaSettings;
use common::traces::KeyValue;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use tracing::Instrument;

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

/// How long a copy waits for the broker's acknowledgement.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a header tells of a failure (ours, `dlq-*`, or Kafka Connect's,
/// `__connect.errors.*`) rather than of the event. A message dead-lettered again, or
/// replayed, loses these: an earlier failure's headers would be read first and name the
/// old reason.
pub(crate) fn is_failure_header(key: &str) -> bool {
    key.starts_with("dlq-") || key.starts_with(CONNECT_PREFIX)
}

/// The prefix of Kafka Connect's DLQ context headers.
const CONNECT_PREFIX: &str = "__connect.errors.";

/// An idempotent, `acks=all` producer that copies messages between our topics (into a DLQ,
/// or back out of one), whatever their size.
pub(crate) fn copier(kafka: &KafkaSettings, client_id: &str) -> Result<FutureProducer, KafkaError> {
    let max_message = common::kafka::max_message_bytes(common::kafka::DEFAULT_MAX_BODY_BYTES);
    kafka
        .reliable_producer_config(client_id, SEND_TIMEOUT, max_message)
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
    pub(crate) fn new(
        kafka: &KafkaSettings,
        topics: HashMap<String, String>,
    ) -> Result<Self, KafkaError> {
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
        let value_dropped = payload.is_none() && message.payload().is_some();
        let headers = failure_headers(message, code, error, value_dropped);
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
        // A child of the batch's span, linked to the message's own trace. The copy keeps
        // the message's `traceparent`, so a replay is linked to the webhook's trace too.
        let span = tracing::info_span!("dead_letter", otel.name = %format!("send {dlq}"), otel.kind = "producer");
        if common::traces::enabled() {
            common::traces::set_attributes(
                &span,
                [
                    KeyValue::new("messaging.system", "kafka"),
                    KeyValue::new("messaging.operation.type", "send"),
                    KeyValue::new("messaging.destination.name", dlq.clone()),
                    KeyValue::new("error.type", code.to_string()),
                ],
            );
            common::traces::link_message(&span, message, Vec::new());
        }
        let sent = self
            .producer
            .send(record, Timeout::After(SEND_TIMEOUT))
            .instrument(span.clone())
            .await
            .map(|_| ())
            .map_err(|(e, _)| e);
        if let Err(e) = &sent {
            common::traces::set_error(&span, e.to_string());
        }
        sent
    }
}

/// The headers a dead-lettered message goes with: its own (not an earlier failure's), then
/// ours and Kafka Connect's saying why and where from.
fn failure_headers(
    message: &OwnedMessage,
    code: &str,
    error: &str,
    value_dropped: bool,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for h in original.iter().filter(|h| !is_failure_header(h.key)) {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let [c_topic, c_partition, c_offset, c_connector, c_class, c_message] = CONNECT_HEADERS;
    for (key, value) in [
        (HEADER_ERROR_CODE, Some(code)),
        (HEADER_ERROR, Some(error)),
        (HEADER_SOURCE_TOPIC, Some(message.topic())),
        (HEADER_SOURCE_PARTITION, Some(partition.as_str())),
        (HEADER_SOURCE_OFFSET, Some(offset.as_str())),
        (HEADER_VALUE_DROPPED, value_dropped.then_some("true")),
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
    headers
}
