//! The `webhook_events` collection: one record per event id, written after the documents
//! and the DLQ, so a record never claims a change that isn't durable.
//!
//! Redeliveries are found by inserting: a record that already exists (duplicate `_id`)
//! means the event was consumed before, so no read of the collection is needed, whatever
//! its size. Each consumption of a message carries a delivery id, kept in the record's
//! `deliveries`, so a batch retried after a failure doesn't count its own events as
//! redeliveries.

use bson::{doc, Bson, DateTime, Document};

use super::command::{self, Order, Verb};
use super::{classify_write_error, Store, WriteErrorClass};
use crate::domain::Outcome;
use crate::domain::EVENTS_COLLECTION;
use crate::Result;

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// One consumed message's record.
#[derive(Debug, Clone)]
pub struct Record {
    /// The event id (`_id`): when the message couldn't be read, its `event-id` header or
    /// `dlq:<topic>:<partition>:<offset>`.
    pub id: String,
    /// The event type, when known.
    pub event_type: Option<String>,
    /// The subject (Kafka key), when known.
    pub subject: Option<String>,
    /// The event time (ms), when known.
    pub event_time: Option<i64>,
    /// Where the event came from (`webhook`, `backfill`, `reconcile`), when known.
    pub origin: Option<&'static str>,
    /// Clerk's `data` as stored, when the message could be read.
    pub payload: Bson,
    /// The same as JSON text, for a server that refuses `payload`.
    pub raw: Option<String>,
    /// What happened.
    pub outcome: Outcome,
    /// Why it was dead-lettered.
    pub error: Option<String>,
    /// Its position.
    pub source: Source,
    /// This consumption of the message.
    pub delivery: String,
    /// A second copy of an event already in this batch: only counted.
    pub repeat: bool,
}

impl Record {
    fn document(&self, now: DateTime, processing_ms: i64) -> Document {
        let text = |v: &Option<String>| v.clone().map_or(Bson::Null, Bson::String);
        let mut d = doc! {
            "_id": &self.id,
            "type": text(&self.event_type),
            "subject": text(&self.subject),
            "eventTime": self.event_time.map_or(Bson::Null, |t| Bson::DateTime(DateTime::from_millis(t))),
            "payload": self.payload.clone(),
            "outcome": self.outcome.as_str(),
            "processedAt": now,
            "processingMs": processing_ms,
            "source": {"topic": &self.source.topic, "partition": self.source.partition, "offset": self.source.offset},
            "duplicates": 0,
            "deliveries": [&self.delivery],
        };
        if let Some(origin) = self.origin {
            d.insert("origin", origin);
        }
        if let Some(error) = &self.error {
            d.insert("error", error);
        }
        d
    }
}

/// Records a batch: inserts first deliveries, counts redeliveries once each, and replaces
/// the record of an event that was dead-lettered and now passed (a replay after a fix).
pub async fn record(store: &Store, records: &[Record], processing_ms: i64) -> Result<()> {
    let now = DateTime::now();
    let firsts: Vec<&Record> = records.iter().filter(|r| !r.repeat).collect();
    let documents: Vec<Document> = firsts
        .iter()
        .map(|r| r.document(now, processing_ms))
        .collect();
    let mut redelivered: Vec<&Record> = records.iter().filter(|r| r.repeat).collect();
    if !documents.is_empty() {
        let outcome = command::run(
            store,
            Verb::Insert,
            Order::Any,
            EVENTS_COLLECTION,
            &documents,
        )
        .await?;
        for (index, result) in outcome.results.into_iter().enumerate() {
            let Err(e) = result else { continue };
            let record = firsts[index];
            match (e.code, classify_write_error(e.code, &e.message, "")) {
                (11000, _) => redelivered.push(record),
                (_, WriteErrorClass::Permanent) => {
                    insert_smaller(store, &documents[index], record).await?
                }
                _ => return Err(e.transient().into()),
            }
        }
    }
    count_redeliveries(store, &redelivered, now, processing_ms).await
}

/// A record the server refused for its payload: again with the payload as JSON text, then
/// without it.
async fn insert_smaller(store: &Store, document: &Document, record: &Record) -> Result<()> {
    for payload in [
        record.raw.clone().map_or(Bson::Null, Bson::String),
        Bson::Null,
    ] {
        let mut d = document.clone();
        d.insert("payload", payload);
        match store.events.insert_one(d).await {
            Ok(_) => return Ok(()),
            Err(e) if matches!(super::error_code(&e), Some(11000)) => return Ok(()),
            Err(e)
                if super::error_code(&e).is_some_and(|c| {
                    classify_write_error(c, "", "") == WriteErrorClass::Permanent
                }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// One `update` command: `duplicates` + 1 for each delivery not counted yet, then the
/// replacement of dead-lettered records whose event passed this time.
async fn count_redeliveries(
    store: &Store,
    redelivered: &[&Record],
    now: DateTime,
    processing_ms: i64,
) -> Result<()> {
    if redelivered.is_empty() {
        return Ok(());
    }
    let dead = Outcome::DeadLettered.as_str();
    let mut updates = Vec::new();
    for r in redelivered {
        let mut q = doc! {"_id": &r.id, "deliveries": {"$ne": &r.delivery}};
        if r.outcome != Outcome::DeadLettered {
            q.insert("outcome", doc! {"$ne": dead});
        }
        updates.push(doc! {"q": q, "u": {
            "$inc": {"duplicates": 1},
            "$set": {"lastDuplicateAt": now},
            "$addToSet": {"deliveries": &r.delivery},
        }});
    }
    // After the counts, so a replaced record isn't counted as its own redelivery.
    for r in redelivered
        .iter()
        .filter(|r| r.outcome != Outcome::DeadLettered)
    {
        updates.push(doc! {
            "q": {"_id": &r.id, "outcome": dead},
            "u": r.document(now, processing_ms),
        });
    }
    let outcome = // In order: the counts before the replacements (see above).
    command::run(store, Verb::Update, Order::Given, EVENTS_COLLECTION, &updates).await?;
    if let Some(Err(e)) = outcome.results.into_iter().find(Result::is_err) {
        return Err(e.transient().into());
    }
    Ok(())
}
