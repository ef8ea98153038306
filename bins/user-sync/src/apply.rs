//! Applying user events to MongoDB: conditional, idempotent writes that converge whatever
//! the delivery order, batched per poll.
//!
//! Each user document carries two hidden version stamps, `"<event time, 15 digits>:<event
//! id>"` strings that order events totally (ties in time broken by id):
//! - `profileVersion`: the newest `user.created`/`user.updated` whose fields the document
//!   holds. A profile event is written only if it is newer (`$lt` in the filter).
//! - `eventVersion`: the newest event applied of any type; `lastEventId`, `lastEventAt`,
//!   `webhookPayload` and the sync fields follow it.
//!
//! A deletion sets `isDeleted`/`deletedAt` only where `isDeleted` is not already true, and
//! creates the document when it doesn't exist; nothing ever sets `isDeleted` back to false
//! on an existing document. So a deletion is final, yet profile data older than the
//! deletion still lands (it does not undo anything), and every order of the same events
//! ends in the same document.
//!
//! Every decision is made by the write's own filter, never by a read followed by a write,
//! so two consumers briefly processing the same partition cannot reorder anything. An
//! upsert whose filter doesn't match an existing document hits the unique `clerkId` index
//! (E11000): that means "not newer" or "another writer created it first", and the write is
//! retried once without upsert to tell which.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use bson::{doc, Bson, DateTime, Document};
use events::{EventMessage, UserRecord};
use futures::{StreamExt, TryStreamExt};
use mongodb::options::InsertManyOptions;

use crate::store::{is_clerk_id_conflict, is_duplicate_key, is_permanent, Store};
use crate::{Error, Result};

/// How many users of one batch are written concurrently.
const USER_CONCURRENCY: usize = 16;

/// What happened to one consumed event (the `outcome` of its `webhook_events` record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Its change is in the user document.
    Applied,
    /// A newer event (or a deletion) already decided what it would have changed.
    Stale,
    /// This event id was processed before (a redelivery).
    Duplicate,
    /// It can never be applied and went to the DLQ.
    DeadLettered,
}

/// What [`Applier::apply_batch`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Each event's outcome, in the batch's order. Rejected events are `DeadLettered`.
    pub outcomes: Vec<Outcome>,
    /// Events the database refused for good (index into the batch, reason): the caller
    /// dead-letters them. Their audit records are not written here.
    pub rejected: Vec<(usize, String)>,
}

impl Outcome {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLettered => "dead_lettered",
        }
    }
}

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

/// A decoded event and where it came from.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The message.
    pub message: EventMessage,
    /// Its position.
    pub source: Source,
}

/// A message that went to the DLQ, for its audit record.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The event id when known, else `dlq:<topic>:<partition>:<offset>`.
    pub id: String,
    /// The event type when known.
    pub event_type: Option<String>,
    /// The subject when known.
    pub subject: Option<String>,
    /// The event's version stamp when known (see [`version`]).
    pub version: Option<String>,
    /// Why it can't be applied.
    pub reason: String,
    /// Its position.
    pub source: Source,
}

/// The version stamp of an event: sorts like (event time, event id).
pub fn version(message: &EventMessage) -> String {
    format!("{:015}:{}", message.event_time.max(0), message.event_id)
}

fn date(ms: Option<i64>) -> Bson {
    ms.map_or(Bson::Null, |ms| Bson::DateTime(DateTime::from_millis(ms)))
}

fn text(value: &Option<String>) -> Bson {
    value
        .as_ref()
        .map_or(Bson::Null, |s| Bson::String(s.clone()))
}

fn source_doc(source: &Source) -> Document {
    doc! {"topic": &source.topic, "partition": source.partition, "offset": source.offset}
}

/// Writes batches of user events.
#[derive(Clone, Debug)]
pub struct Applier {
    store: Store,
}

impl Applier {
    /// An applier over `store`.
    pub fn new(store: Store) -> Self {
        Applier { store }
    }

    /// Applies a batch (in consumption order) and records every event in `webhook_events`.
    /// Safe to call again with the same batch after an error: every write is conditional on
    /// versions.
    pub async fn apply_batch(&self, batch: &[Incoming]) -> Result<Applied> {
        let started = Instant::now();
        let mut outcomes = vec![Outcome::Stale; batch.len()];

        // Redeliveries: event ids with an audit record already, or twice in this batch. An
        // event recorded as dead-lettered is not one: it is being replayed from the DLQ
        // after a fix, and its record is replaced below.
        let ids: Vec<&str> = batch.iter().map(|e| e.message.event_id.as_str()).collect();
        let records: Vec<Document> = self
            .store
            .events
            .find(doc! {"_id": {"$in": &ids}})
            .projection(doc! {"_id": 1, "outcome": 1})
            .await?
            .try_collect()
            .await?;
        let mut recorded = HashSet::new();
        let mut replayed = Vec::new();
        for r in &records {
            let Ok(id) = r.get_str("_id") else { continue };
            if r.get_str("outcome") == Ok(Outcome::DeadLettered.as_str()) {
                replayed.push(id.to_string());
            } else {
                recorded.insert(id.to_string());
            }
        }
        let mut first = HashSet::new();
        // Redeliveries are only counted on the existing record; every first delivery gets
        // a record, whatever its outcome.
        let mut redelivered = vec![false; batch.len()];
        let mut by_user: Vec<(String, Vec<usize>)> = Vec::new();
        let mut user_slot: HashMap<String, usize> = HashMap::new();
        let mut duplicates: HashMap<&str, i32> = HashMap::new();
        for (i, e) in batch.iter().enumerate() {
            let id = e.message.event_id.as_str();
            if recorded.contains(id) || !first.insert(id) {
                outcomes[i] = Outcome::Duplicate;
                redelivered[i] = true;
                *duplicates.entry(id).or_default() += 1;
                continue;
            }
            let subject = e.message.subject_id.clone();
            let slot = *user_slot.entry(subject.clone()).or_insert_with(|| {
                by_user.push((subject, Vec::new()));
                by_user.len() - 1
            });
            by_user[slot].1.push(i);
        }

        // Users are independent: write them concurrently, each user's writes in order.
        let per_user: Vec<UserResult> = futures::stream::iter(by_user)
            .map(|(subject, indexes)| async move {
                match self.apply_user(&subject, &indexes, batch).await {
                    Ok(outcomes) => Ok(UserResult::Done(outcomes)),
                    // The database refuses this user's data (a key it can't store, a
                    // document too large): retrying would block the partition forever.
                    Err(Error::Mongo(e)) if is_permanent(&e) => {
                        tracing::error!(subject, error = %e, "the database refused this user's events");
                        Ok(UserResult::Rejected(indexes, e.to_string()))
                    }
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(USER_CONCURRENCY)
            .try_collect()
            .await?;
        let mut rejected = Vec::new();
        for result in per_user {
            match result {
                UserResult::Done(done) => {
                    for (i, outcome) in done {
                        outcomes[i] = outcome;
                    }
                }
                UserResult::Rejected(indexes, reason) => {
                    for i in indexes {
                        outcomes[i] = Outcome::DeadLettered;
                        rejected.push((i, reason.clone()));
                    }
                }
            }
        }

        let elapsed_ms = started.elapsed().as_millis() as i64;
        self.record(batch, &outcomes, &redelivered, &replayed, elapsed_ms)
            .await?;
        self.count_duplicates(duplicates).await?;
        Ok(Applied { outcomes, rejected })
    }

    async fn apply_user(
        &self,
        subject: &str,
        indexes: &[usize],
        batch: &[Incoming],
    ) -> Result<Vec<(usize, Outcome)>> {
        let user = |i: &usize| batch[*i].message.user().map(|u| u.deleted);
        let by_version = |i: &&usize| version(&batch[**i].message);
        // Coalescing: only the newest profile event and the first deletion need a write;
        // the older events of the batch are superseded (stale) by them.
        let newest_profile = indexes
            .iter()
            .filter(|i| user(i) == Some(false))
            .max_by_key(by_version);
        let deletion = indexes
            .iter()
            .filter(|i| user(i) == Some(true))
            .min_by_key(by_version);
        let newest = indexes.iter().max_by_key(by_version);

        let mut outcomes: Vec<(usize, Outcome)> =
            indexes.iter().map(|i| (*i, Outcome::Stale)).collect();
        let mut set = |i: usize, o: Outcome| {
            if let Some(slot) = outcomes.iter_mut().find(|(j, _)| *j == i) {
                slot.1 = o;
            }
        };
        // The deletion first: were the process to stop between the two writes, the user is
        // never left looking alive. (Either order converges.)
        if let Some(&i) = deletion {
            set(i, self.write_deletion(subject, &batch[i].message).await?);
        }
        if let Some(&i) = newest_profile {
            set(i, self.write_profile(subject, &batch[i].message).await?);
        }
        if let Some(&i) = newest {
            // Even when nothing above applied: a previous attempt may have stopped between
            // the writes.
            self.write_pointer(subject, &batch[i].message).await?;
        }
        Ok(outcomes)
    }

    /// Upserts the profile fields if this event is newer than the ones the document holds.
    async fn write_profile(&self, subject: &str, message: &EventMessage) -> Result<Outcome> {
        let v = version(message);
        let user = message.user().cloned().unwrap_or_default();
        let filter = doc! {
            "clerkId": subject,
            "$or": [{"profileVersion": {"$lt": &v}}, {"profileVersion": {"$exists": false}}],
        };
        let now = DateTime::now();
        let mut set = profile_fields(&user);
        set.insert("profileVersion", &v);
        set.insert("updatedAt", now);
        let update = doc! {
            "$set": set,
            "$setOnInsert": {"createdAt": now, "isDeleted": false, "deletedAt": Bson::Null},
        };
        if self.conditional_upsert(filter, update).await? {
            return Ok(Outcome::Applied);
        }
        let current = self.store.users.find_one(doc! {"clerkId": subject}).await?;
        let same = current
            .as_ref()
            .and_then(|d| d.get_str("profileVersion").ok())
            == Some(v.as_str());
        Ok(if same {
            Outcome::Duplicate
        } else {
            Outcome::Stale
        })
    }

    /// Marks the user deleted (creating a tombstone for an unknown user) unless it already is.
    async fn write_deletion(&self, subject: &str, message: &EventMessage) -> Result<Outcome> {
        let deleted_at = DateTime::from_millis(message.event_time);
        let now = DateTime::now();
        let mut on_insert = profile_fields(&UserRecord::default());
        on_insert.insert("createdAt", now);
        let filter = doc! {"clerkId": subject, "isDeleted": {"$ne": true}};
        let update = doc! {
            "$set": {"isDeleted": true, "deletedAt": deleted_at, "updatedAt": now},
            "$setOnInsert": on_insert,
        };
        if self.conditional_upsert(filter, update).await? {
            return Ok(Outcome::Applied);
        }
        let current = self.store.users.find_one(doc! {"clerkId": subject}).await?;
        let same = current
            .as_ref()
            .and_then(|d| d.get_datetime("deletedAt").ok())
            == Some(&deleted_at);
        Ok(if same {
            Outcome::Duplicate
        } else {
            Outcome::Stale
        })
    }

    /// Moves `lastEventId`/`lastEventAt`/`webhookPayload`/sync fields to this event if it is
    /// the newest the document has seen.
    async fn write_pointer(&self, subject: &str, message: &EventMessage) -> Result<()> {
        let v = version(message);
        let filter = doc! {
            "clerkId": subject,
            "$or": [{"eventVersion": {"$lt": &v}}, {"eventVersion": {"$exists": false}}],
        };
        let update = |payload: Bson| {
            let now = DateTime::now();
            doc! {"$set": {
                "eventVersion": &v,
                "lastEventId": &message.event_id,
                "lastEventAt": DateTime::from_millis(message.event_time),
                "webhookPayload": payload,
                "syncStatus": "synced",
                "syncError": Bson::Null,
                "lastSyncAttempt": now,
                "updatedAt": now,
            }}
        };
        let users = &self.store.users;
        match users
            .update_one(filter.clone(), update(storable(&message.data)))
            .await
        {
            Ok(_) => Ok(()),
            // The server refuses the object itself (FerretDB: nested arrays): keep the
            // change, with the payload as JSON text.
            Err(e) if is_permanent(&e) => {
                users
                    .update_one(filter, update(as_text(&message.data)))
                    .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs an upsert whose filter holds a condition. Returns whether it wrote.
    async fn conditional_upsert(&self, filter: Document, update: Document) -> Result<bool> {
        match self
            .store
            .users
            .update_one(filter.clone(), update.clone())
            .upsert(true)
            .await
        {
            Ok(r) => Ok(r.matched_count > 0 || r.upserted_id.is_some()),
            // The document exists but the condition failed, or another writer inserted it
            // between our filter and our insert: the same write without upsert tells which.
            // (A conflict on another unique index, an ORM's `email` say, is not this: it
            // is permanent, see `is_permanent`.)
            Err(e) if is_clerk_id_conflict(&e) => {
                let r = self.store.users.update_one(filter, update).await?;
                Ok(r.matched_count > 0)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Records first deliveries. A record that says `dead_lettered` (an event replayed
    /// from the DLQ) is replaced in one step, so a failure can't leave the event unrecorded.
    async fn record(
        &self,
        batch: &[Incoming],
        outcomes: &[Outcome],
        redelivered: &[bool],
        replayed: &[String],
        elapsed_ms: i64,
    ) -> Result<()> {
        let now = DateTime::now();
        let mut records = Vec::new();
        for ((e, o), redelivered) in batch.iter().zip(outcomes).zip(redelivered) {
            // Rejected events are recorded by the caller, with the DLQ send.
            if *redelivered || *o == Outcome::DeadLettered {
                continue;
            }
            let m = &e.message;
            let record = doc! {
                "_id": &m.event_id,
                "type": &m.event_type,
                "subject": &m.subject_id,
                "eventTime": DateTime::from_millis(m.event_time),
                "payload": storable(&m.data),
                "outcome": o.as_str(),
                "processedAt": now,
                "processingMs": elapsed_ms,
                "source": source_doc(&e.source),
                "duplicates": 0,
            };
            if replayed.contains(&m.event_id) {
                let filter = doc! {"_id": &m.event_id, "outcome": Outcome::DeadLettered.as_str()};
                match self.store.events.replace_one(filter, record).await {
                    Ok(_) => {}
                    Err(e) if is_duplicate_key(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            } else {
                records.push(record);
            }
        }
        self.insert_records(records).await
    }

    /// Records messages sent to the DLQ.
    pub async fn record_dead_letters(&self, letters: &[DeadLetter]) -> Result<()> {
        let now = DateTime::now();
        let records = letters
            .iter()
            .map(|l| {
                doc! {
                    "_id": &l.id,
                    "type": text(&l.event_type),
                    "subject": text(&l.subject),
                    "outcome": Outcome::DeadLettered.as_str(),
                    "error": &l.reason,
                    "processedAt": now,
                    "source": source_doc(&l.source),
                    "duplicates": 0,
                }
            })
            .collect();
        self.insert_records(records).await?;
        // A user we know of gets told its newest event failed (not an older one: the
        // outcome must not depend on arrival order).
        for l in letters {
            if let (Some(subject), Some(version)) = (&l.subject, &l.version) {
                self.store
                    .users
                    .update_one(
                        doc! {
                            "clerkId": subject,
                            "$or": [{"eventVersion": {"$lt": version}}, {"eventVersion": {"$exists": false}}],
                        },
                        doc! {"$set": {"syncStatus": "failed", "syncError": &l.reason, "lastSyncAttempt": now}},
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn insert_records(&self, records: Vec<Document>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let options = InsertManyOptions::builder().ordered(false).build();
        let events = &self.store.events;
        match events
            .insert_many(records.clone())
            .with_options(options)
            .await
        {
            Ok(_) => Ok(()),
            // Already recorded by an earlier attempt or a concurrent consumer.
            Err(e) if is_duplicate_key(&e) => Ok(()),
            // Some payload the server won't store as an object: one by one, those with
            // their payload as JSON text.
            Err(e) if is_permanent(&e) => {
                for mut record in records {
                    let result = match events.insert_one(record.clone()).await {
                        Err(e) if is_permanent(&e) => {
                            let text = record
                                .get("payload")
                                .map(|p| Bson::String(p.clone().into_relaxed_extjson().to_string()))
                                .unwrap_or(Bson::Null);
                            record.insert("payload", text);
                            events.insert_one(record).await.map(|_| ())
                        }
                        other => other.map(|_| ()),
                    };
                    match result {
                        Ok(()) => {}
                        Err(e) if is_duplicate_key(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn count_duplicates(&self, duplicates: HashMap<&str, i32>) -> Result<()> {
        // One update per distinct count (almost always just 1).
        let mut by_count: HashMap<i32, Vec<&str>> = HashMap::new();
        for (id, n) in duplicates {
            by_count.entry(n).or_default().push(id);
        }
        let now = DateTime::now();
        for (n, ids) in by_count {
            self.store
                .events
                .update_many(
                    doc! {"_id": {"$in": ids}},
                    doc! {"$inc": {"duplicates": n}, "$set": {"lastDuplicateAt": now}},
                )
                .await?;
        }
        Ok(())
    }
}

enum UserResult {
    Done(Vec<(usize, Outcome)>),
    Rejected(Vec<usize>, String),
}

/// Deepest `data` kept as a document: MongoDB refuses documents nested more than 100 levels,
/// and the payload sits one or two levels down in ours.
const MAX_STORED_DEPTH: usize = 90;

/// A Clerk object as BSON that any server stores: keys starting with `$` or holding `.` are
/// refused by MongoDB in some places and by FerretDB everywhere, and Clerk metadata is
/// partly user-controlled. Such keys get the full-width look-alikes (`＄`, `．`), the
/// replacement MongoDB's documentation suggests. An object nested deeper than a server
/// accepts (user metadata can be) is kept as its JSON text.
pub fn storable(raw: &serde_json::value::RawValue) -> Bson {
    match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(value) if depth(&value) <= MAX_STORED_DEPTH => storable_value(&value),
        _ => Bson::String(raw.get().to_string()),
    }
}

/// How deeply `value` nests (a scalar is 0). Values come from serde_json, which stops at
/// 128 levels, so the recursion is bounded.
fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn storable_value(value: &serde_json::Value) -> Bson {
    fn clean(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    let key = match k.strip_prefix('$') {
                        Some(rest) => format!("\u{FF04}{rest}"),
                        None => k.clone(),
                    }
                    .replace('.', "\u{FF0E}")
                    // BSON keys are C strings.
                    .replace('\0', "\u{2400}");
                    (key, clean(v))
                })
                .collect(),
            serde_json::Value::Array(items) => items.iter().map(clean).collect(),
            other => other.clone(),
        }
    }
    // A number BSON can't hold (an integer beyond i64): the whole object as JSON text.
    bson::to_bson(&clean(value)).unwrap_or_else(|_| Bson::String(value.to_string()))
}

/// A Clerk object as JSON text, for a server that refuses it as a document.
fn as_text(value: &serde_json::value::RawValue) -> Bson {
    Bson::String(value.get().to_string())
}

/// The user fields of the contract's document, from a normalized record.
fn profile_fields(user: &UserRecord) -> Document {
    doc! {
        "email": text(&user.primary_email),
        "emailVerified": user.email_verified,
        "firstName": text(&user.first_name),
        "lastName": text(&user.last_name),
        "username": text(&user.username),
        "imageUrl": text(&user.image_url),
        "lastSignInAt": date(user.last_sign_in_at),
        "clerkCreatedAt": date(user.created_at),
        "clerkUpdatedAt": date(user.updated_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn storable_rewrites_keys_servers_refuse() {
        let stored = storable(&raw(
            json!({"$where": 1, "a.b": {"$gt": [1]}, "nul\u{0}key": true, "plain": "x"}),
        ));
        let doc = stored.as_document().unwrap();
        assert_eq!(doc.get_i64("\u{FF04}where").unwrap(), 1);
        let inner = doc.get_document("a\u{FF0E}b").unwrap();
        assert!(inner.contains_key("\u{FF04}gt"));
        assert!(doc.get_bool("nul\u{2400}key").unwrap());
        assert_eq!(doc.get_str("plain").unwrap(), "x");
    }

    #[test]
    fn storable_falls_back_to_text_for_numbers_bson_cannot_hold() {
        let value = json!({"big": u64::MAX});
        assert_eq!(
            storable(&raw(value.clone())),
            Bson::String(value.to_string())
        );
    }

    #[test]
    fn storable_keeps_objects_too_deep_for_a_server_as_text() {
        let text = format!("{{\"m\": {}{}}}", "[".repeat(1000), "]".repeat(1000));
        let deep = serde_json::value::RawValue::from_string(text.clone()).unwrap();
        assert_eq!(storable(&deep), Bson::String(text));
        let text = format!("{{\"m\": {}{}}}", "[".repeat(80), "]".repeat(80));
        let nested = serde_json::value::RawValue::from_string(text).unwrap();
        assert!(storable(&nested).as_document().is_some());
    }

    fn raw(value: serde_json::Value) -> Box<serde_json::value::RawValue> {
        serde_json::value::to_raw_value(&value).unwrap()
    }

    #[test]
    fn versions_order_by_time_then_id() {
        let at = |t: i64, id: &str| {
            let mut m = EventMessage {
                schema_version: 1,
                event_id: id.into(),
                event_type: "user.updated".into(),
                event_time: t,
                instance_id: None,
                subject_id: "user_1".into(),
                record: events::Record::User(UserRecord::default()),
                data: raw(json!({})),
            };
            m.event_time = t;
            version(&m)
        };
        assert!(
            at(999, "msg_b") < at(1000, "msg_a"),
            "time first, numerically"
        );
        assert!(at(1000, "msg_a") < at(1000, "msg_b"), "then id");
        assert!(
            at(-5, "msg_a") < at(0, "msg_b"),
            "negative times clamp to 0"
        );
    }
}
