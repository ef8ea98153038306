//! The `webhook_events` collection: one record per event id, written after the documents
//! and the DLQ, so a record never claims a change that isn't durable.
//!
//! The records of events that changed something are inserted first; one that turns out to
//! exist (duplicate `_id`: a crash between the write and its record, or another consumer
//! in a race) is counted instead. The events that changed nothing this time (a
//! redelivery's usual outcome) are then counted on their records in one command, each
//! only where its record exists, isn't dead-lettered and hasn't counted this delivery;
//! when fewer matched than were sent, their records are read by `_id`, and only what that
//! read shows is written: absent records inserted, present ones counted, a dead-lettered
//! one replaced if its event passed now. Each consumption of a message carries a delivery
//! id, kept in the record's `deliveries`, so a batch retried after a failure doesn't count
//! its own events as redeliveries.

use std::collections::HashMap;

use bson::{doc, Bson, DateTime, Document, RawDocumentBuf};

use super::command::{self, Order, Verb};
use super::{classify_write_error, Store, WriteErrorClass};
use crate::domain::payload::Stored;
use crate::domain::Outcome;
use crate::domain::EVENTS_COLLECTION;
use crate::error::WriteFailure;
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
    /// The envelope's `event_attributes` (the request that caused the event: client IP,
    /// user agent), when the message carries them.
    pub attributes: Option<Bson>,
    /// Clerk's `data` as stored, when the message could be read.
    pub payload: Stored,
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
    /// The record as stored, with `payload` unless `None` (`WEBHOOK_EVENTS_PAYLOAD`).
    fn document(
        &self,
        now: DateTime,
        processing_ms: i64,
        payload: Option<&Stored>,
    ) -> Result<RawDocumentBuf> {
        let text = |v: &Option<String>| v.clone().map_or(Bson::Null, Bson::String);
        let mut d = doc! {
            "_id": &self.id,
            "type": text(&self.event_type),
            "subject": text(&self.subject),
            "eventTime": self.event_time.map_or(Bson::Null, |t| Bson::DateTime(DateTime::from_millis(t))),
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
        if let Some(attributes) = &self.attributes {
            d.insert("eventAttributes", attributes.clone());
        }
        if let Some(error) = &self.error {
            d.insert("error", error);
        }
        let mut raw = RawDocumentBuf::from_document(&d).map_err(WriteFailure::Encode)?;
        if let Some(payload) = payload {
            raw.append("payload", payload.raw().clone());
        }
        Ok(raw)
    }

    /// The payload its record keeps, if the store keeps payloads.
    fn kept_payload(&self, store: &Store) -> Option<&Stored> {
        store.keeps_event_payload().then_some(&self.payload)
    }
}

/// Records a batch: inserts first deliveries, counts redeliveries once each, and replaces
/// the record of an event that was dead-lettered and now passed (a replay after a fix).
pub async fn record(store: &Store, records: &[Record], processing_ms: i64) -> Result<()> {
    let now = DateTime::now();
    let (likely_seen, others): (Vec<&Record>, Vec<&Record>) = records
        .iter()
        .partition(|r| !r.repeat && r.outcome.changed_nothing());
    // First deliveries first: a batch's new events are recorded before its redeliveries
    // are counted, which can take long on a slow store (FerretDB scans for each count).
    let (repeats, new): (Vec<&Record>, Vec<&Record>) = others.into_iter().partition(|r| r.repeat);
    let mut redelivered = insert(store, &new, now, processing_ms).await?;
    redelivered.extend(repeats);
    // The usual redelivery (every record there, none dead-lettered, this delivery not yet
    // counted) is settled by its counts alone, without reading the records first.
    let rest = if count_at_once(store, &likely_seen, now).await? {
        Vec::new()
    } else {
        likely_seen
    };
    let ids: Vec<&str> = rest.iter().map(|r| r.id.as_str()).collect();
    let existing = read(store, &ids).await?;
    let (firsts, seen) = sort_out(&rest, &existing);
    redelivered.extend(insert(store, &firsts, now, processing_ms).await?);
    redelivered.extend(seen);
    count_redeliveries(store, &redelivered, &existing, now, processing_ms).await
}

/// Inserts the records of `firsts`; returns those whose record was already there (a
/// duplicate `_id`: a crash between the write and its record, or another consumer in a
/// race), to be counted instead.
async fn insert<'r>(
    store: &Store,
    firsts: &[&'r Record],
    now: DateTime,
    processing_ms: i64,
) -> Result<Vec<&'r Record>> {
    let mut there = Vec::new();
    if firsts.is_empty() {
        return Ok(there);
    }
    let documents = firsts
        .iter()
        .map(|r| r.document(now, processing_ms, r.kept_payload(store)))
        .collect::<Result<Vec<_>>>()?;
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
            (11000, _) => there.push(record),
            (_, WriteErrorClass::Permanent) => {
                insert_smaller(store, record, now, processing_ms).await?
            }
            _ => return Err(e.transient().into()),
        }
    }
    Ok(there)
}

/// Counts the redeliveries `seen` at once, each only where its record exists, isn't
/// dead-lettered and hasn't counted this delivery (the statements of
/// [`count_redeliveries`]); true when every one was counted. Otherwise some record is
/// missing, dead-lettered or already counted, and which one isn't said: the caller reads
/// them all and goes on as if this hadn't run (a count made here holds its delivery, so
/// it isn't made twice).
async fn count_at_once(store: &Store, seen: &[&Record], now: DateTime) -> Result<bool> {
    if seen.is_empty() {
        return Ok(false);
    }
    let updates = command::serialized(&seen.iter().map(|r| count(r, now)).collect::<Vec<_>>())?;
    // In order, though each touches its own record: a count fails only with the batch
    // (see below), so order changes nothing on MongoDB, and mongo-java-server ran a
    // redelivered batch's counts 1.4x faster ordered than not (scripts/bench-store.sh).
    let outcome = command::run(
        store,
        Verb::Update,
        Order::Given,
        EVENTS_COLLECTION,
        &updates,
    )
    .await?;
    if let Some(Err(e)) = outcome.results.into_iter().find(Result::is_err) {
        return Err(e.transient().into());
    }
    Ok(outcome.matched == Some(seen.len() as i64))
}

/// The statement that counts `r` as a redelivery of its record: once per delivery, and
/// not on a dead-lettered record unless `r` is dead-lettered too (a record whose event
/// passed this time is replaced instead).
fn count(r: &Record, now: DateTime) -> Document {
    let mut q = doc! {"_id": &r.id, "deliveries": {"$ne": &r.delivery}};
    if r.outcome != Outcome::DeadLettered {
        q.insert("outcome", doc! {"$ne": Outcome::DeadLettered.as_str()});
    }
    doc! {"q": q, "u": {
        "$inc": {"duplicates": 1},
        "$set": {"lastDuplicateAt": now},
        "$addToSet": {"deliveries": &r.delivery},
    }}
}

/// What a record read before writing says: its outcome, and the deliveries it counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Seen {
    pub(crate) outcome: String,
    pub(crate) deliveries: Vec<String>,
}

/// The records with these ids, by id.
async fn read(store: &Store, ids: &[&str]) -> Result<HashMap<String, Seen>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let records = store.committed_collection(EVENTS_COLLECTION);
    let find = records
        .find(doc! {"_id": {"$in": ids}})
        .projection(doc! {"outcome": 1, "deliveries": 1});
    let docs = command::find_all(store, EVENTS_COLLECTION, find).await??;
    Ok(docs
        .into_iter()
        .filter_map(|d| {
            let id = d.get_str("_id").ok()?.to_string();
            let outcome = d.get_str("outcome").unwrap_or_default().to_string();
            let deliveries = d
                .get_array("deliveries")
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            Some((
                id,
                Seen {
                    outcome,
                    deliveries,
                },
            ))
        })
        .collect())
}

/// The records to insert (first copies not seen) and the redeliveries to count (repeats
/// in the batch, and first copies whose record exists).
fn sort_out<'r>(
    records: &[&'r Record],
    existing: &HashMap<String, Seen>,
) -> (Vec<&'r Record>, Vec<&'r Record>) {
    records
        .iter()
        .partition(|r| !r.repeat && !existing.contains_key(&r.id))
}

/// A record the server refused for its payload: again with the payload as JSON text, then
/// without it.
async fn insert_smaller(
    store: &Store,
    record: &Record,
    now: DateTime,
    processing_ms: i64,
) -> Result<()> {
    if !store.keeps_event_payload() {
        // Nothing smaller to try: the record is refused for something else.
        tracing::warn!(
            event_id = record.id,
            "the database refused this event's record"
        );
        return Ok(());
    }
    let text = record
        .raw
        .as_deref()
        .map_or_else(Stored::none, Stored::text);
    for payload in [text, Stored::none()] {
        let document = record.document(now, processing_ms, Some(&payload))?;
        let outcome = command::run(
            store,
            Verb::Insert,
            Order::Any,
            EVENTS_COLLECTION,
            &[document],
        )
        .await?;
        match outcome.results.into_iter().next() {
            Some(Err(e)) if e.code == 11000 => return Ok(()),
            Some(Err(e))
                if classify_write_error(e.code, &e.message, "") == WriteErrorClass::Permanent => {}
            Some(Err(e)) => return Err(e.transient().into()),
            _ => return Ok(()),
        }
    }
    tracing::warn!(
        event_id = record.id,
        "the database refused this event's record, even without its payload"
    );
    Ok(())
}

/// One `update` command: `duplicates` + 1 for each delivery not counted yet, then the
/// replacement of dead-lettered records whose event passed this time.
async fn count_redeliveries(
    store: &Store,
    redelivered: &[&Record],
    existing: &HashMap<String, Seen>,
    now: DateTime,
    processing_ms: i64,
) -> Result<()> {
    let dead = Outcome::DeadLettered.as_str();
    let counts: Vec<Document> = redelivered
        .iter()
        .filter(|r| needs_count(r, existing))
        .map(|r| count(r, now))
        .collect();
    let mut updates = command::serialized(&counts)?;
    // After the counts, so a replaced record isn't counted as its own redelivery.
    for r in redelivered
        .iter()
        .filter(|r| needs_replacement(r, existing))
    {
        let q = doc! {"_id": &r.id, "outcome": dead};
        let u = r.document(now, processing_ms, r.kept_payload(store))?;
        updates.push(command::update_statement(&q, u, false)?);
    }
    if updates.is_empty() {
        return Ok(());
    }
    let outcome = // In order: the counts before the replacements (see above).
    command::run(store, Verb::Update, Order::Given, EVENTS_COLLECTION, &updates).await?;
    if let Some(Err(e)) = outcome.results.into_iter().find(Result::is_err) {
        return Err(e.transient().into());
    }
    Ok(())
}

/// Whether a redelivery's count is still to make: not when the record read before
/// already holds this delivery (a retried batch counted it). The statement's own filter
/// decides the rest: a record still dead-lettered when it runs is replaced, not counted;
/// one another consumer replaced after the read is counted.
fn needs_count(r: &Record, existing: &HashMap<String, Seen>) -> bool {
    existing
        .get(&r.id)
        .is_none_or(|seen| !seen.deliveries.contains(&r.delivery))
}

/// Whether a dead-lettered record is to be replaced: its event passed this time. Only
/// when the read showed it dead-lettered, or when nothing was read (a record found by a
/// duplicate `_id`): the statement's filter then decides.
fn needs_replacement(r: &Record, existing: &HashMap<String, Seen>) -> bool {
    r.outcome != Outcome::DeadLettered
        && existing
            .get(&r.id)
            .is_none_or(|seen| seen.outcome == Outcome::DeadLettered.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, outcome: Outcome, delivery: &str, repeat: bool) -> Record {
        Record {
            id: id.into(),
            event_type: None,
            subject: None,
            event_time: None,
            origin: None,
            attributes: None,
            payload: Stored::none(),
            raw: None,
            outcome,
            error: None,
            source: Source {
                topic: "t".into(),
                partition: 0,
                offset: 0,
            },
            delivery: delivery.into(),
            repeat,
        }
    }

    fn seen(outcome: Outcome, deliveries: &[&str]) -> Seen {
        Seen {
            outcome: outcome.as_str().into(),
            deliveries: deliveries.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn what_the_records_read_before_show_is_all_that_is_written() {
        let existing = HashMap::from([
            ("counted".to_string(), seen(Outcome::Applied, &["d1", "d2"])),
            ("again".to_string(), seen(Outcome::Applied, &["d1"])),
            ("dead".to_string(), seen(Outcome::DeadLettered, &["d1"])),
        ]);
        let records = [
            record("new", Outcome::Applied, "d2", false),
            record("counted", Outcome::Duplicate, "d2", false),
            record("again", Outcome::Duplicate, "d2", false),
            record("again", Outcome::Duplicate, "d3", true),
            record("dead", Outcome::Applied, "d2", false),
        ];
        let all: Vec<&Record> = records.iter().collect();
        let (insert, redelivered) = sort_out(&all, &existing);
        let ids = |v: &[&Record]| v.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&insert), ["new"]);
        assert_eq!(ids(&redelivered), ["counted", "again", "again", "dead"]);
        let counted: Vec<_> = redelivered
            .iter()
            .map(|r| needs_count(r, &existing))
            .collect();
        // A retried batch's count isn't made twice.
        assert_eq!(counted, [false, true, true, true]);
        let replaced: Vec<_> = redelivered
            .iter()
            .map(|r| needs_replacement(r, &existing))
            .collect();
        assert_eq!(replaced, [false, false, false, true]);
        // Not read (found by a duplicate `_id`): both statements go, their filters decide.
        let unknown = record("x", Outcome::Applied, "d2", false);
        assert!(needs_count(&unknown, &HashMap::new()));
        assert!(needs_replacement(&unknown, &HashMap::new()));
    }
}
