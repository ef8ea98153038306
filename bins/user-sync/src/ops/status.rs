//! `user-sync status`: one screen for the person on call. Documents per collection, what
//! happened to events over the last hour and day, the DLQ depths, the consumer group's lag
//! per partition and the last error.
//!
//! Everything comes from MongoDB and the broker, not from a running user-sync, so it works
//! when user-sync is down (which is when it is needed most). The lag is the broker's view:
//! the group's committed offsets against each partition's end.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::time::Duration;

use bson::{doc, Document};
use common::kafka;
use futures::TryStreamExt;
use rdkafka::consumer::BaseConsumer;
use serde::Serialize;

use super::dlq::time_text;
use crate::config::QueueConfig;
use crate::domain::entity::Entity;
use crate::domain::EVENTS_COLLECTION;
use crate::store::{integer, Store};

const HOUR_MS: i64 = 3_600_000;

/// How long the server may spend on one of `status`'s counts (`maxTimeMS`): the deleted
/// and failed counts have no index to serve them, and on a large collection a scan would
/// load the primary for as long as it takes. Past it, the count shows as not taken.
const MOST_PER_COUNT: std::time::Duration = std::time::Duration::from_secs(10);
const DAY_MS: i64 = 24 * HOUR_MS;

/// MongoDB's code for an operation stopped by its `maxTimeMS`.
const MAX_TIME_EXPIRED: i32 = 50;

/// Everything `status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    /// When it was taken (Unix ms).
    pub(crate) at: i64,
    pub(crate) database: String,
    pub(crate) group: String,
    /// One row per collection kept.
    pub(crate) collections: Vec<Collection>,
    /// `webhook_events` outcomes over the last hour.
    last_hour: BTreeMap<String, u64>,
    /// And over the last day.
    last_day: BTreeMap<String, u64>,
    /// The windows whose outcomes took longer than [`MOST_PER_COUNT`] (left empty).
    not_counted: Vec<&'static str>,
    /// Messages in each DLQ topic.
    pub(crate) dlq: BTreeMap<String, u64>,
    /// Per partition of the consumed topics.
    pub(crate) lag: Vec<PartitionLag>,
    /// The sum of [`PartitionLag::lag`].
    total_lag: u64,
    /// The newest `webhook_events` record of the last week that says `dead_lettered`.
    last_error: Option<LastError>,
    /// How big `webhook_events` is, and how long it keeps a record.
    events: EventsSize,
}

/// `webhook_events`' size (`collStats`; `None` where the server doesn't say) and the TTL
/// of its `processedAt` index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct EventsSize {
    pub(crate) records: Option<u64>,
    /// The records' size, uncompressed (`size`).
    pub(crate) bytes: Option<u64>,
    /// What they take on disk (`storageSize`).
    pub(crate) storage_bytes: Option<u64>,
    /// `expireAfterSeconds` of the index on `processedAt`, when it has one.
    pub(crate) ttl_seconds: Option<u64>,
}

/// A collection's documents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Collection {
    pub(crate) name: String,
    /// All documents (the server's count from its metadata: no scan).
    pub(crate) total: u64,
    /// `isDeleted: true` (a scan on a large collection: no index serves it); `None`: not
    /// counted within [`MOST_PER_COUNT`].
    pub(crate) deleted: Option<u64>,
    /// `syncStatus: "failed"`; `None` likewise.
    pub(crate) failed: Option<u64>,
}

/// One partition's lag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct PartitionLag {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// The group's committed offset, if it has one.
    pub(crate) committed: Option<i64>,
    /// The partition's end (high watermark).
    pub(crate) end: i64,
    /// Messages after the committed offset (all that retention kept, without one).
    pub(crate) lag: u64,
}

/// The last event that couldn't be applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
struct LastError {
    pub(crate) event_id: String,
    pub(crate) event_type: Option<String>,
    /// When it was processed (Unix ms).
    pub(crate) at: Option<i64>,
    pub(crate) error: String,
}

/// The MongoDB half (documents, outcomes, last error), at `now` (Unix ms).
pub async fn from_store(store: &Store, entities: &[Entity], now: i64) -> crate::Result<Status> {
    let mut status = Status {
        at: now,
        database: store.database().name().to_string(),
        ..Status::default()
    };
    for &entity in entities {
        // As the URI says (a secondary, if it prefers one): the counts decide nothing.
        let c = store
            .database()
            .collection::<Document>(store.collection_name(entity));
        let c = &c;
        let total = crate::store::bounded(c.estimated_document_count().into_future())
            .await?
            .map_err(crate::Error::from)?;
        let count = |filter: Document| async move {
            let count = c.count_documents(filter).max_time(MOST_PER_COUNT);
            match crate::store::bounded(count.into_future()).await? {
                Ok(n) => Ok(Some(n)),
                Err(e) if crate::store::error_code(&e) == Some(MAX_TIME_EXPIRED) => Ok(None),
                Err(e) => Err(crate::Error::from(e)),
            }
        };
        status.collections.push(Collection {
            name: store.collection_name(entity).to_string(),
            total,
            deleted: count(doc! {"isDeleted": true}).await?,
            failed: count(doc! {"syncStatus": "failed"}).await?,
        });
    }
    let events = store.database().collection::<Document>(EVENTS_COLLECTION);
    for (window, name, into) in [
        (HOUR_MS, "last hour", &mut status.last_hour),
        (DAY_MS, "last day", &mut status.last_day),
    ] {
        let since = bson::DateTime::from_millis(now - window);
        let pipeline = [
            doc! {"$match": {"processedAt": {"$gte": since}}},
            doc! {"$group": {"_id": "$outcome", "n": {"$sum": 1}}},
        ];
        let aggregate = async {
            events
                .aggregate(pipeline)
                .max_time(MOST_PER_COUNT)
                .await?
                .try_collect()
                .await
        };
        let rows: Vec<Document> = match crate::store::bounded(aggregate).await? {
            Ok(rows) => rows,
            Err(e) if crate::store::error_code(&e) == Some(MAX_TIME_EXPIRED) => {
                status.not_counted.push(name);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for row in rows {
            let outcome = row.get_str("_id").unwrap_or("(none)").to_string();
            let n = row
                .get("n")
                .and_then(integer)
                .map_or(0, |n| n.max(0) as u64);
            into.insert(outcome, n);
        }
    }
    let last = crate::store::bounded(
        events
            // Within the last week, newest first: the processedAt index bounds the walk.
            .find_one(doc! {
                "outcome": "dead_lettered",
                "processedAt": {"$gte": bson::DateTime::from_millis(now - 7 * DAY_MS)},
            })
            .sort(doc! {"processedAt": -1})
            .max_time(MOST_PER_COUNT)
            .into_future(),
    )
    .await?;
    let last = match last {
        Ok(last) => last,
        Err(e) if crate::store::error_code(&e) == Some(MAX_TIME_EXPIRED) => {
            status.not_counted.push("last error");
            None
        }
        Err(e) => return Err(e.into()),
    };
    status.events = events_size(store).await?;
    status.last_error = last.map(|d| LastError {
        event_id: d.get_str("_id").unwrap_or_default().to_string(),
        event_type: d.get_str("type").ok().map(str::to_string),
        at: d
            .get_datetime("processedAt")
            .ok()
            .map(|t| t.timestamp_millis()),
        error: d.get_str("error").unwrap_or_default().to_string(),
    });
    Ok(status)
}

/// `webhook_events`' size and TTL. Best effort: a server that refuses `collStats` (or
/// lists no indexes) leaves the figures out.
async fn events_size(store: &Store) -> crate::Result<EventsSize> {
    let db = store.database();
    let stats = crate::store::bounded(
        db.run_command(doc! {"collStats": EVENTS_COLLECTION})
            .into_future(),
    )
    .await?
    .ok();
    let number = |key: &str| {
        stats
            .as_ref()
            .and_then(|s| s.get(key))
            .and_then(integer)
            .map(|n| n.max(0) as u64)
    };
    let events = db.collection::<Document>(EVENTS_COLLECTION);
    let indexes: Vec<mongodb::IndexModel> =
        match crate::store::bounded(events.list_indexes().into_future()).await? {
            Ok(cursor) => cursor.try_collect().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
    let ttl_seconds = indexes
        .iter()
        .filter(|i| i.keys == doc! {"processedAt": 1})
        .find_map(|i| i.options.as_ref()?.expire_after)
        .map(|d| d.as_secs());
    Ok(EventsSize {
        records: number("count"),
        bytes: number("size"),
        storage_bytes: number("storageSize"),
        ttl_seconds,
    })
}

/// The broker half: DLQ depths and the group's lag. Blocking: run it on a blocking thread.
pub fn fill_from_broker(
    status: &mut Status,
    config: &QueueConfig,
) -> Result<(), rdkafka::error::KafkaError> {
    // The group's own id, to read its committed offsets; this client never subscribes, so
    // it doesn't join the group or disturb its members.
    let consumer: BaseConsumer = config
        .kafka
        .client_config()
        .set("group.id", &config.group_id)
        .set("client.id", "user-sync-status")
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    status.group = config.group_id.clone();
    for t in &config.topics {
        let depth = kafka::extents(&consumer, &t.dlq, timeout)?
            .iter()
            .map(|e| e.behind(None))
            .sum();
        status.dlq.insert(t.dlq.clone(), depth);

        let extents = kafka::extents(&consumer, &t.topic, timeout)?;
        let committed = kafka::committed(&consumer, &t.topic, &extents, timeout)?;
        for e in extents {
            let offset = committed.get(&e.partition).copied().flatten();
            status.lag.push(PartitionLag {
                topic: t.topic.clone(),
                partition: e.partition,
                committed: offset,
                end: e.high,
                lag: e.behind(offset),
            });
        }
    }
    status.total_lag = status.lag.iter().map(|l| l.lag).sum();
    Ok(())
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "user-sync status at {} (database {}, group {})",
            time_text(Some(self.at)),
            self.database,
            self.group
        )?;
        for section in [
            Status::documents,
            Status::outcomes,
            Status::dead_letters,
            Status::lag,
            Status::last_error,
        ] {
            writeln!(f)?;
            section(self, f)?;
        }
        Ok(())
    }
}

/// The table's sections.
impl Status {
    fn documents(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<34} {:>10} {:>10} {:>10}",
            "documents", "total", "deleted", "failed"
        )?;
        let shown = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
        for c in &self.collections {
            writeln!(
                f,
                "  {:<32} {:>10} {:>10} {:>10}",
                c.name,
                c.total,
                shown(c.deleted),
                shown(c.failed)
            )?;
        }
        if self
            .collections
            .iter()
            .any(|c| c.deleted.is_none() || c.failed.is_none())
        {
            writeln!(
                f,
                "  (-: not counted within {} s; no index serves these counts)",
                MOST_PER_COUNT.as_secs()
            )?;
        }
        Ok(())
    }

    fn outcomes(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<34} {:>10} {:>10}",
            "webhook_events", "last hour", "last day"
        )?;
        let outcomes: std::collections::BTreeSet<&String> =
            self.last_hour.keys().chain(self.last_day.keys()).collect();
        if outcomes.is_empty() && self.not_counted.is_empty() {
            writeln!(f, "  (none in the last day)")?;
        }
        let cell = |window: &str, counts: &BTreeMap<String, u64>, o: &String| {
            if self.not_counted.contains(&window) {
                "-".to_string()
            } else {
                counts.get(o).copied().unwrap_or(0).to_string()
            }
        };
        for o in outcomes {
            writeln!(
                f,
                "  {:<32} {:>10} {:>10}",
                o,
                cell("last hour", &self.last_hour, o),
                cell("last day", &self.last_day, o)
            )?;
        }
        if !self.not_counted.is_empty() {
            writeln!(
                f,
                "  (not counted within {} s: {}; is the processedAt index there?)",
                MOST_PER_COUNT.as_secs(),
                self.not_counted.join(", ")
            )?;
        }
        let e = &self.events;
        let mib = |b: Option<u64>| {
            b.map_or("-".to_string(), |b| {
                format!("{:.1} MiB", b as f64 / 1_048_576.0)
            })
        };
        let kept = match e.ttl_seconds {
            Some(s) if s % 86_400 == 0 => format!("kept {} days (TTL)", s / 86_400),
            Some(s) => format!("kept {s} s (TTL)"),
            None => "kept for good (no TTL: WEBHOOK_EVENTS_TTL_DAYS)".to_string(),
        };
        writeln!(
            f,
            "  {} records, {} ({} on disk), {kept}",
            e.records.map_or("-".to_string(), |n| n.to_string()),
            mib(e.bytes),
            mib(e.storage_bytes),
        )?;
        Ok(())
    }

    fn dead_letters(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{:<34} {:>10}", "dead-letter topics", "messages")?;
        for (topic, n) in &self.dlq {
            writeln!(f, "  {topic:<32} {n:>10}")?;
        }
        Ok(())
    }

    fn lag(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "consumer lag: {} in all", self.total_lag)?;
        writeln!(
            f,
            "  {:<28} {:>9} {:>10} {:>10} {:>10}",
            "topic", "partition", "committed", "end", "lag"
        )?;
        // Partitions that never held a message say nothing (the JSON keeps them).
        for l in self
            .lag
            .iter()
            .filter(|l| l.end > 0 || l.committed.is_some())
        {
            let committed = l.committed.map_or("-".to_string(), |c| c.to_string());
            writeln!(
                f,
                "  {:<28} {:>9} {:>10} {:>10} {:>10}",
                l.topic, l.partition, committed, l.end, l.lag
            )?;
        }
        Ok(())
    }

    fn last_error(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.last_error {
            None if self.not_counted.contains(&"last error") => writeln!(
                f,
                "last error: not found within {} s",
                MOST_PER_COUNT.as_secs()
            ),
            None => writeln!(f, "last error: none recorded"),
            Some(e) => writeln!(
                f,
                "last error: {} {} ({}): {}",
                time_text(e.at),
                e.event_id,
                e.event_type.as_deref().unwrap_or("unknown type"),
                e.error
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_every_section() {
        let status = Status {
            at: 0,
            database: "clerk_sync".into(),
            group: "user-sync".into(),
            collections: vec![Collection {
                name: "users".into(),
                total: 12,
                deleted: Some(1),
                failed: Some(2),
            }],
            last_hour: [("applied".to_string(), 3)].into(),
            last_day: [("applied".to_string(), 9), ("stale".to_string(), 1)].into(),
            not_counted: vec![],
            dlq: [("users.dlq".to_string(), 4)].into(),
            lag: vec![PartitionLag {
                topic: "users".into(),
                partition: 0,
                committed: None,
                end: 5,
                lag: 5,
            }],
            total_lag: 5,
            last_error: Some(LastError {
                event_id: "evt_1".into(),
                event_type: Some("user.created".into()),
                at: Some(0),
                error: "E11000".into(),
            }),
            events: EventsSize {
                records: Some(10),
                bytes: Some(3 * 1_048_576 + 104_858),
                storage_bytes: Some(1_048_576),
                ttl_seconds: Some(30 * 86_400),
            },
        };
        let text = status.to_string();
        for line in [
            "  10 records, 3.1 MiB (1.0 MiB on disk), kept 30 days (TTL)",
            "  users                                    12          1          2",
            "  stale                                     0          1",
            "  users.dlq                                 4",
            "consumer lag: 5 in all",
            "last error: 1970-01-01T00:00:00.000Z evt_1 (user.created): E11000",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert!(!text.contains("not counted"), "{text}");

        // Counts the server gave up on (maxTimeMS) show as such, not as zero.
        let mut slow = status.clone();
        slow.collections[0].deleted = None;
        slow.not_counted = vec!["last day"];
        slow.events = EventsSize::default();
        let text = slow.to_string();
        for line in [
            "  - records, - (- on disk), kept for good (no TTL: WEBHOOK_EVENTS_TTL_DAYS)",
            "  users                                    12          -          2",
            "  (-: not counted within 10 s; no index serves these counts)",
            "  stale                                     0          -",
            "  (not counted within 10 s: last day; is the processedAt index there?)",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
