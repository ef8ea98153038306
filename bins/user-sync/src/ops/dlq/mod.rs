//! `user-sync dlq list` and `user-sync dlq replay`: what the dead-letter topics hold, and
//! sending chosen messages back to the topics they came from once their cause is fixed.
//!
//! Both read each DLQ partition up to the end it had when the command started (the high
//! watermark then), so a replay never chases the messages it sends back and that fail
//! again. `list` reads without a consumer group and changes nothing. `replay` keeps its
//! progress in a consumer group on the DLQ topics (`<KAFKA_GROUP_ID>-dlq-replay`): offsets are committed
//! only after the broker acknowledged every message replayed before them, so an
//! interrupted replay resends at most a batch, and a second replay of the same selection
//! sends only what arrived since. A message sent twice is harmless: its event id makes
//! the second one a duplicate.
//!
//! The decisions (which message is chosen, the headers it goes back with, the summary)
//! are plain functions over a `Letter` (`letter.rs`), tested without a broker.

use std::collections::HashMap;

use common::kafka;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::broker::dlq;
use crate::config::QueueConfig;

mod error;
mod letter;
mod read;

pub use error::DlqError;

pub(crate) use letter::time_text;
pub use letter::{parse_since, render_list, ReplayReport, Selection, TopicSummary};
use letter::{replay_group, replay_headers, Letter};
use read::{chosen, extents, progress, read_until_end, reader, TIMEOUT};

/// Messages replayed between commits (each batch is acknowledged before its commit)...
const BATCH: usize = 500;

/// ...or fewer, once they hold this many bytes: a batch is what replay keeps in memory.
const BATCH_BYTES: usize = 32 * 1024 * 1024;

/// `dlq list`: every chosen DLQ topic, read to its end, summarized.
pub fn list(config: &QueueConfig, topic: Option<&str>) -> Result<Vec<TopicSummary>, DlqError> {
    // Reading needs no group; the all-codes replay group is asked how far it got.
    let consumer = reader(&config.kafka, &replay_group(&config.group_id, None))?;
    let mut out = Vec::new();
    for t in chosen(config, topic)? {
        let extents = extents(&consumer, &t.dlq)?;
        let replayed = kafka::committed(&consumer, &t.dlq, &extents, TIMEOUT)?;
        let mut summary = TopicSummary {
            topic: t.dlq.clone(),
            source: t.topic.clone(),
            not_replayed: extents
                .iter()
                .map(|e| e.behind(replayed[&e.partition]))
                .sum(),
            ..TopicSummary::default()
        };
        // Everything retention kept.
        let from = HashMap::new();
        read_until_end(&consumer, &t.dlq, &extents, &from, |m| {
            summary.add(&Letter::of(m));
            Ok(())
        })?;
        out.push(summary);
    }
    Ok(out)
}

/// `dlq replay`: sends the chosen messages of every chosen DLQ topic back to the topics
/// they came from, from where the selection's group got to, and moves the group on.
/// Blocking (a command's whole work): run it on a blocking thread.
pub fn replay(
    config: &QueueConfig,
    topic: Option<&str>,
    selection: &Selection,
    dry_run: bool,
) -> Result<ReplayReport, DlqError> {
    let group = replay_group(&config.group_id, selection.code.as_deref());
    let consumer = reader(&config.kafka, &group)?;
    let producer = dlq::copier(&config.kafka, "user-sync-dlq-replay")?;
    let mut report = ReplayReport {
        group,
        dry_run,
        ..ReplayReport::default()
    };
    for t in chosen(config, topic)? {
        let extents = extents(&consumer, &t.dlq)?;
        let from = progress(&consumer, &t.dlq, &extents)?;
        // A batch at a time: sent, acknowledged, and only then is the position after it
        // committed. Memory holds one batch, whatever the DLQ's size.
        let mut batch: Vec<(Letter, OwnedMessage)> = Vec::new();
        let mut bytes = 0;
        let mut reached: HashMap<i32, i64> = HashMap::new();
        let flush = |batch: &mut Vec<(Letter, OwnedMessage)>,
                     reached: &HashMap<i32, i64>,
                     report: &mut ReplayReport|
         -> Result<(), DlqError> {
            for (letter, _) in batch.iter() {
                let target = target(letter, &t.topic);
                *report.replayed.entry(target).or_default() += 1;
            }
            if !dry_run {
                futures::executor::block_on(send(&producer, &t.topic, batch))?;
                commit(&consumer, &t.dlq, reached)?;
            }
            batch.clear();
            Ok(())
        };
        read_until_end(&consumer, &t.dlq, &extents, &from, |m| {
            report.read += 1;
            reached.insert(m.partition(), m.offset() + 1);
            let letter = Letter::of(m);
            if selection.matches(&letter) {
                bytes += m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len);
                batch.push((letter, m.clone()));
            } else {
                report.passed_over += 1;
            }
            if batch.len() >= BATCH || bytes >= BATCH_BYTES {
                flush(&mut batch, &reached, &mut report)?;
                bytes = 0;
            }
            Ok(())
        })?;
        flush(&mut batch, &reached, &mut report)?;
    }
    Ok(report)
}

/// The topic `letter` goes back to: its `dlq-source-topic`, else the topic of its DLQ.
fn target(letter: &Letter, dlq_source: &str) -> String {
    letter
        .source_topic
        .clone()
        .unwrap_or_else(|| dlq_source.to_string())
}

/// Sends `batch` back and waits until the broker acknowledged all of it.
async fn send(
    producer: &FutureProducer,
    dlq_source: &str,
    batch: &[(Letter, OwnedMessage)],
) -> Result<(), DlqError> {
    let sends = batch.iter().map(|(letter, message)| {
        let target = target(letter, dlq_source);
        let original = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect::<Vec<_>>())
            .unwrap_or_default();
        let headers = replay_headers(original, &letter.position()).iter().fold(
            OwnedHeaders::new(),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: value.as_deref(),
                })
            },
        );
        async move {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&target).headers(headers);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            let sent = producer
                .send(record, Timeout::After(dlq::SEND_TIMEOUT))
                .await;
            sent.map(|_| ()).map_err(|(error, _)| DlqError::Replay {
                from: letter.position(),
                to: target.clone(),
                error: error.to_string(),
            })
        }
    });
    for result in futures::future::join_all(sends).await {
        result?;
    }
    Ok(())
}

fn commit(
    consumer: &BaseConsumer,
    topic: &str,
    reached: &HashMap<i32, i64>,
) -> Result<(), DlqError> {
    if reached.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (p, offset) in reached {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*offset))?;
    }
    consumer.commit(&tpl, CommitMode::Sync)?;
    Ok(())
}
