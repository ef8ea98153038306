//! Reading the DLQ topics: which ones a command chose, their extents, and every message
//! up to the end each partition had when the command started.

use std::collections::HashMap;
use std::time::Duration;

use common::kafka::{self, Extent, KafkaSettings};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::error::DlqError;
use crate::config::{QueueConfig, TopicConfig};

/// How long one metadata, watermark or offset request may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// How long a read may go without a message while the partition isn't at its end.
pub(crate) const READ_STALL: Duration = Duration::from_secs(30);

/// The DLQ topics `topic` selects (all without it): a DLQ's name or its source topic's.
pub(crate) fn chosen<'a>(
    config: &'a QueueConfig,
    topic: Option<&str>,
) -> Result<Vec<&'a TopicConfig>, DlqError> {
    let Some(topic) = topic else {
        return Ok(config.topics.iter().collect());
    };
    let found: Vec<&TopicConfig> = config
        .topics
        .iter()
        .filter(|t| t.dlq == topic || t.topic == topic)
        .collect();
    if found.is_empty() {
        let known: Vec<&str> = config.topics.iter().map(|t| t.dlq.as_str()).collect();
        return Err(DlqError::UnknownTopic(topic.to_string(), known.join(", ")));
    }
    Ok(found)
}

/// The partitions of DLQ `topic` with their watermarks; a topic the cluster lacks is an
/// error here (a DLQ is never created by reading it).
pub(crate) fn extents(consumer: &BaseConsumer, topic: &str) -> Result<Vec<Extent>, DlqError> {
    let extents = kafka::extents(consumer, topic, TIMEOUT)?;
    if extents.is_empty() {
        return Err(DlqError::NoTopic(topic.to_string()));
    }
    Ok(extents)
}

/// Where `group` got to in each partition of `topic` (see [`Extent::position`]).
pub(crate) fn progress(
    consumer: &BaseConsumer,
    topic: &str,
    extents: &[Extent],
) -> Result<HashMap<i32, i64>, DlqError> {
    let committed = kafka::committed(consumer, topic, extents, TIMEOUT)?;
    Ok(extents
        .iter()
        .map(|e| (e.partition, e.position(committed[&e.partition])))
        .collect())
}

/// Reads `topic` from `from` (per partition) to the high watermarks in `extents`, handing
/// each message to `each`, in offset order within a partition.
pub(crate) fn read_until_end(
    consumer: &BaseConsumer,
    topic: &str,
    extents: &[Extent],
    from: &HashMap<i32, i64>,
    mut each: impl FnMut(&OwnedMessage) -> Result<(), DlqError>,
) -> Result<(), DlqError> {
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for e in extents {
        let start = from.get(&e.partition).copied().unwrap_or(e.low);
        if start < e.high {
            tpl.add_partition_offset(topic, e.partition, Offset::Offset(start))?;
            next.insert(e.partition, start);
            ends.insert(e.partition, e.high);
        }
    }
    if next.is_empty() {
        return Ok(());
    }
    consumer.assign(&tpl)?;
    let mut last = std::time::Instant::now();
    while !next.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                last = std::time::Instant::now();
                let p = message.partition();
                let (Some(at), Some(end)) = (next.get(&p).copied(), ends.get(&p).copied()) else {
                    continue;
                };
                if message.offset() < at {
                    continue;
                }
                if message.offset() < end {
                    each(&message.detach())?;
                }
                if message.offset() + 1 >= end {
                    next.remove(&p);
                } else {
                    next.insert(p, message.offset() + 1);
                }
            }
            // librdkafka reports passing trouble here too (a managed cluster closing an
            // idle connection): a real stall is one with no message for READ_STALL.
            Some(Err(e)) => tracing::warn!(topic, error = %e, "reading the DLQ"),
            None if last.elapsed() > READ_STALL => {
                let (&partition, &at) = next.iter().next().expect("a partition left");
                return Err(DlqError::Stalled {
                    topic: topic.to_string(),
                    partition,
                    at,
                    end: ends[&partition],
                    waited: READ_STALL,
                });
            }
            None => {}
        }
    }
    consumer.unassign()?;
    Ok(())
}

pub(crate) fn reader(kafka: &KafkaSettings, group: &str) -> Result<BaseConsumer, DlqError> {
    Ok(kafka
        .client_config()
        .set("group.id", group)
        .set("client.id", "user-sync-dlq-tool")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.message.max.bytes", "4194304")
        .create()?)
}
