//! The MongoDB side: collections, the indexes user-sync relies on, and health; the bulk
//! write commands ([`command`]), running a plan's statements ([`write`](mod@write)), the
//! `webhook_events` records ([`audit`]) and linking pre-registered records ([`link`]).

pub mod audit;
mod command;
mod indexes;
mod link;
mod traffic;
pub(crate) mod write;

pub use traffic::Traffic;

pub(crate) use command::bounded;
pub(crate) use link::link_users;

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use bson::{doc, Bson, Document};
use common::ExposeSecret;
use futures::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{
    Acknowledgment, ClientOptions, CollectionOptions, IndexOptions, ReadConcern, ReadPreference,
    SelectionCriteria, WriteConcern,
};
use mongodb::{Collection, IndexModel};

use crate::config::{LinkConfig, MongoConfig};
use crate::domain::entity::Entity;
use crate::domain::EVENTS_COLLECTION;
use crate::{Error, Result};

/// Handles to the collections user-sync writes.
#[derive(Clone, Debug)]
pub struct Store {
    client: mongodb::Client,
    db: mongodb::Database,
    collections: HashMap<Entity, (String, Collection<Document>)>,
    /// One document per consumed event.
    pub(crate) events: Collection<Document>,
    /// The write concern every write carries (commands run by name don't inherit it).
    write_concern: Document,
    /// Whether the server is FerretDB (learnt at start-up; see [`Store::is_ferretdb`]).
    ferretdb: Arc<OnceLock<bool>>,
    /// The name of each collection's unique `clerkId` index (learnt at start-up: it may be
    /// the application's own).
    clerk_id_indexes: Arc<RwLock<HashMap<Entity, String>>>,
    /// What this store has been asked, counted.
    traffic: Traffic,
    /// How linking finds records by address (learnt at start-up, and from a server that
    /// refuses collations).
    link_matching: Arc<RwLock<Option<link::Matching>>>,
    /// `WEBHOOK_EVENTS_PAYLOAD`.
    events_payload: bool,
    /// `WEBHOOK_EVENTS_TTL_DAYS`.
    events_ttl_days: Option<u32>,
}

impl Store {
    /// Connects (lazily: the driver reconnects by itself after an outage).
    pub async fn connect(config: &MongoConfig) -> Result<Self> {
        let mut options = ClientOptions::parse(config.uri.expose_secret()).await?;
        options
            .app_name
            .get_or_insert_with(|| "user-sync".to_string());
        // Fail an operation after 5 s without a server, so the consumer retries with
        // backoff (and /ready reports it) instead of hanging for the driver's 30 s.
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        options
            .connect_timeout
            .get_or_insert(Duration::from_secs(5));
        // An offset is committed once its writes are acknowledged: make that acknowledgement
        // mean durable (a majority, journaled) unless the URI says otherwise, and bounded in
        // time, so a missing majority becomes a retried failure instead of a hang.
        let wc = options
            .write_concern
            .get_or_insert_with(WriteConcern::default);
        wc.w.get_or_insert(Acknowledgment::Majority);
        wc.journal.get_or_insert(true);
        wc.w_timeout.get_or_insert(Duration::from_secs(10));
        let write_concern = write_concern_document(wc);
        let client = mongodb::Client::with_options(options)?;
        let db = client.database(&config.database);
        let collections = Entity::ALL
            .iter()
            .map(|&e| {
                let name = config.collection(e).to_string();
                (e, (name.clone(), primary_collection(&db, &name)))
            })
            .collect();
        Ok(Store {
            events: primary_collection(&db, EVENTS_COLLECTION),
            collections,
            write_concern,
            db,
            client,
            ferretdb: Arc::new(OnceLock::new()),
            clerk_id_indexes: Arc::default(),
            traffic: Traffic::default(),
            link_matching: Arc::default(),
            events_payload: config.events_payload,
            events_ttl_days: config.events_ttl_days,
        })
    }

    /// Whether a `webhook_events` record keeps its event's payload (`WEBHOOK_EVENTS_PAYLOAD`).
    pub(crate) fn keeps_event_payload(&self) -> bool {
        self.events_payload
    }

    /// The counters of what this store has been asked (see [`Traffic`]).
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// The collection of one kind of document.
    pub fn collection(&self, entity: Entity) -> &Collection<Document> {
        &self.collections[&entity].1
    }

    pub(crate) fn collection_name(&self, entity: Entity) -> &str {
        &self.collections[&entity].0
    }

    /// A collection of the database whose reads go to the primary, like those of
    /// [`Store::collection`]: for the application's collection that linking reads.
    pub(crate) fn primary_collection(&self, name: &str) -> Collection<Document> {
        primary_collection(&self.db, name)
    }

    /// Collection `name` for the reads a batch plans from (its documents, its records):
    /// from the primary, and only what a majority holds. A write an earlier attempt made
    /// but a majority never acknowledged (a write concern that timed out before a
    /// failover) may yet be rolled back: seen here, it would make the plan leave out a
    /// statement that still has to be sent. An older snapshot only lets more statements
    /// through, and their filters decide.
    pub(crate) fn committed_collection(&self, name: &str) -> Collection<Document> {
        self.db.collection_with_options(
            name,
            CollectionOptions::builder()
                .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
                .read_concern(ReadConcern::majority())
                .build(),
        )
    }

    pub(crate) fn database(&self) -> &mongodb::Database {
        &self.db
    }

    /// The `writeConcern` field of the commands user-sync runs.
    pub(crate) fn write_concern(&self) -> Document {
        self.write_concern.clone()
    }

    /// Whether the server is FerretDB, whose conditional upserts sometimes write *and*
    /// report a duplicate key, so their replies can't say what a statement did (see
    /// [`self::write`]). Learnt by [`Store::ensure_indexes`]; false before.
    pub(crate) fn is_ferretdb(&self) -> bool {
        self.ferretdb.get().copied().unwrap_or(false)
    }

    /// Makes sure the indexes of `entities` exist: a unique one on `clerkId` per collection
    /// (one document per Clerk object, even when two consumers race on a new one), created
    /// as `clerkId_unique` when there is none, plus each kind's lookup indexes. An existing
    /// unique index on `{clerkId: 1}` (an ORM's, say) is used as it is. Problems that
    /// waiting can't fix are [`Error::Startup`].
    pub async fn ensure_indexes(&self, entities: &[Entity]) -> Result<()> {
        let admin = self.client.database("admin");
        let info = bounded(admin.run_command(doc! {"buildInfo": 1}).into_future()).await??;
        // FerretDB 1.x can't make a partial index (2.x runs on DocumentDB, and can).
        let ferretdb_v1 = info
            .get_str("ferretdbVersion")
            .is_ok_and(|v| v.trim_start_matches('v').starts_with("1."));
        let _ = self.ferretdb.set(info.contains_key("ferretdbVersion"));
        // Every check of every collection first: a refusal leaves the database as it was.
        let mut checked = Vec::with_capacity(entities.len());
        for &entity in entities {
            checked.push((entity, self.check(entity, ferretdb_v1).await?));
        }
        for (entity, (clerk_id, existing)) in checked {
            self.create_indexes(entity, clerk_id, &existing).await?;
        }
        self.ensure_events_index().await
    }

    /// `status` counts the outcomes of the last hour and day, and finds the last error, by
    /// processing time: without an index on `processedAt`, each of those reads every
    /// record. With `WEBHOOK_EVENTS_TTL_DAYS` it is a TTL index, so MongoDB removes records
    /// that many days after they were processed; our existing `processedAt_1` gets the TTL
    /// (or its new value) with `collMod` (MongoDB 5.1+), or, where the server can't add a
    /// TTL to an index that has none (DocumentDB), is made again with it. Without the
    /// setting, an index there is used as it is, a TTL an operator set included.
    async fn ensure_events_index(&self) -> Result<()> {
        let ttl = self
            .events_ttl_days
            .map(|days| Duration::from_secs(u64::from(days) * 86_400));
        let created = build(
            EVENTS_COLLECTION,
            EVENTS_TIME_INDEX,
            self.events.create_index(events_time_index(ttl)),
        )
        .await?;
        match (created, ttl) {
            (Ok(_), _) => Ok(()),
            // One on processedAt exists with other options (a TTL index that caps the
            // collection, say): it serves the same reads.
            (Err(e), None) if matches!(command_code(&e), Some(85 | 86)) => {
                tracing::info!(error = %e, "webhook_events has its own index on processedAt; using it");
                Ok(())
            }
            (Err(e), Some(ttl)) if matches!(command_code(&e), Some(85 | 86)) => {
                let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
                let command = doc! {
                    "collMod": EVENTS_COLLECTION,
                    "index": {"name": EVENTS_TIME_INDEX, "expireAfterSeconds": seconds},
                };
                let refused = match bounded(self.db.run_command(command).into_future()).await? {
                    Ok(_) => {
                        tracing::info!(
                            expire_after_seconds = seconds,
                            "webhook_events: the TTL of the processedAt index set"
                        );
                        return Ok(());
                    }
                    Err(refused) => refused,
                };
                // Made again with the TTL: for a moment `status` reads without it.
                tracing::info!(error = %refused, "webhook_events: processedAt_1 made again with the TTL");
                let remade = async {
                    self.events.drop_index(EVENTS_TIME_INDEX).await?;
                    self.events.create_index(events_time_index(Some(ttl))).await
                };
                match build(EVENTS_COLLECTION, EVENTS_TIME_INDEX, remade).await? {
                    Ok(_) => Ok(()),
                    Err(e) => Err(Error::Startup(format!(
                        "WEBHOOK_EVENTS_TTL_DAYS: the server refused to put a TTL on \
                         webhook_events' index on processedAt ({refused}; then {e}); drop \
                         that index and start user-sync again to have it made with the TTL, \
                         or unset WEBHOOK_EVENTS_TTL_DAYS"
                    ))),
                }
            }
            // FerretDB 1.x: "Index option expireAfterSeconds is not implemented yet".
            (Err(e), Some(_)) if matches!(command_code(&e), Some(59 | 115 | 238)) => {
                Err(Error::Startup(format!(
                    "WEBHOOK_EVENTS_TTL_DAYS: this server has no TTL indexes ({e}); unset \
                     WEBHOOK_EVENTS_TTL_DAYS, or bound webhook_events another way"
                )))
            }
            (Err(e), _) => Err(e.into()),
        }
    }

    /// What start-up can't live with in `entity`'s collection ([`Error::Startup`]), else
    /// its unique `clerkId` index (`None`: none yet) and its indexes.
    async fn check(
        &self,
        entity: Entity,
        ferretdb_v1: bool,
    ) -> Result<(Option<String>, Vec<IndexModel>)> {
        let (name, collection) = &self.collections[&entity];
        let collation = self.collation_of(name).await?;
        indexes::collection_collation(name, collation.as_deref()).map_err(Error::Startup)?;
        let existing = list_indexes(collection).await?;
        let clerk_id = indexes::clerk_id_index(name, &existing).map_err(Error::Startup)?;
        let defaults = entity.defaults();
        let nullable: Vec<&str> = defaults.keys().map(String::as_str).collect();
        let problems = indexes::nullable_unique(name, &existing, &nullable);
        if !problems.is_empty() && ferretdb_v1 {
            // FerretDB 1.x can't make the partial index that fixes it (and doesn't index a
            // missing field): a development server, so start, and say so.
            for problem in &problems {
                tracing::warn!("{problem} (FerretDB 1.x can't make partial indexes: on MongoDB user-sync stops here)");
            }
        } else if let Some(problem) = problems.into_iter().next() {
            return Err(Error::Startup(problem));
        }
        Ok((clerk_id, existing))
    }

    /// Creates what `entity`'s collection lacks, given what [`Store::check`] found: the
    /// unique `clerkId` index, and the indexes user-sync reads by.
    async fn create_indexes(
        &self,
        entity: Entity,
        clerk_id: Option<String>,
        existing: &[IndexModel],
    ) -> Result<()> {
        let (name, collection) = &self.collections[&entity];
        let index = match clerk_id {
            Some(index) => index,
            None => {
                create_clerk_id_index(name, collection).await?;
                CLERK_ID_INDEX.to_string()
            }
        };
        tracing::debug!(collection = name, index, "clerkId index");
        self.clerk_id_indexes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entity, index);
        let wanted = entity.indexes();
        for (index, keys) in indexes::missing(existing, &wanted) {
            let model = IndexModel::builder()
                .keys(keys.clone())
                .options(IndexOptions::builder().name(index.to_string()).build())
                .build();
            match build(name, index, collection.create_index(model)).await? {
                Ok(_) => {}
                Err(e) if matches!(command_code(&e), Some(85 | 86)) => {
                    return Err(Error::Startup(format!(
                        "cannot create the index {index} on {name}: {e}"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The locale of the default collation collection `name` was created with, if it
    /// exists and has one. (Read from the raw reply: a server's reply needn't hold every
    /// field the driver's typed specification requires.) A role that may not list
    /// collections can't be checked: said in the log, and start-up goes on.
    async fn collation_of(&self, name: &str) -> Result<Option<String>> {
        let command = doc! {"listCollections": 1, "filter": {"name": name}, "nameOnly": false};
        let reply = match bounded(self.db.run_command(command).into_future()).await? {
            Ok(reply) => reply,
            Err(e) if command_code(&e) == Some(13) => {
                tracing::warn!(collection = name, error = %e, "cannot check the collection's collation");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let locale = reply
            .get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .ok()
            .and_then(|batch| batch.first()?.as_document()?.get_document("options").ok())
            .and_then(|options| options.get_document("collation").ok())
            .and_then(|collation| collation.get_str("locale").ok())
            .map(str::to_string);
        Ok(locale)
    }

    /// Learns how linking finds records in `config`'s collection: under the collation of
    /// an index that serves it, else the default one (saying which index to create); by
    /// pattern on FerretDB, which has no collations.
    pub(crate) async fn prepare_link(&self, config: &LinkConfig) -> Result<()> {
        let matching = if self.is_ferretdb() || !self.honours_collations().await? {
            tracing::info!(
                collection = config.collection,
                "the server ignores or refuses collations: records are matched by a case-insensitive pattern, which no index serves"
            );
            link::Matching::Pattern
        } else {
            let collection = self.primary_collection(&config.collection);
            let indexes = match list_indexes(&collection).await {
                Ok(indexes) => indexes,
                // A role that may read and write the records but not list their indexes.
                Err(Error::Mongo(e)) if command_code(&e) == Some(13) => {
                    tracing::warn!(collection = config.collection, error = %e, "cannot list the indexes of the linked collection");
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            let (matching, warning) = link::matching(config, &indexes);
            if let Some(warning) = warning {
                tracing::warn!("{warning}");
            }
            matching
        };
        tracing::debug!(?matching, collection = config.collection, "linking");
        self.set_link_matching(matching);
        Ok(())
    }

    /// Whether the server compares under a collation it is given: "A" equals "a" at
    /// strength 2. (mongo-java-server accepts a collation and ignores it; a server without
    /// `$documents`, MongoDB before 5.1, counts as one without collations: linking then
    /// still finds every record, by pattern.)
    async fn honours_collations(&self) -> Result<bool> {
        let probe = doc! {
            "aggregate": 1,
            "pipeline": [{"$documents": [{"e": "A"}]}, {"$match": {"e": "a"}}],
            "cursor": {},
            "collation": {"locale": "en", "strength": 2},
        };
        Ok(
            match bounded(self.db.run_command(probe).into_future()).await? {
                Ok(reply) => reply
                    .get_document("cursor")
                    .and_then(|c| c.get_array("firstBatch"))
                    .is_ok_and(|batch| batch.len() == 1),
                Err(e) if command_code(&e).is_some() => false,
                Err(e) => return Err(e.into()),
            },
        )
    }

    /// How linking finds records (see [`Store::prepare_link`]).
    pub(crate) fn link_matching(&self) -> link::Matching {
        let known = self.link_matching.read().unwrap_or_else(|e| e.into_inner());
        known.clone().unwrap_or_default()
    }

    pub(crate) fn set_link_matching(&self, matching: link::Matching) {
        *self
            .link_matching
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(matching);
    }

    /// The name of `entity`'s unique `clerkId` index: the one found at start-up, else the
    /// one user-sync creates.
    pub(crate) fn clerk_id_index(&self, entity: Entity) -> String {
        self.clerk_id_indexes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&entity)
            .cloned()
            .unwrap_or_else(|| CLERK_ID_INDEX.to_string())
    }

    /// Whether the server answers a `ping` within `timeout`.
    pub(crate) async fn ping(&self, timeout: Duration) -> bool {
        let admin = self.client.database("admin");
        let ping = admin.run_command(doc! {"ping": 1});
        matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
    }
}

fn command_code(err: &mongodb::error::Error) -> Option<i32> {
    match err.kind.as_ref() {
        ErrorKind::Command(e) => Some(e.code),
        _ => None,
    }
}

/// The server's code for a failed command or a failed single write.
pub(crate) fn error_code(err: &mongodb::error::Error) -> Option<i32> {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        _ => command_code(err),
    }
}

/// `name` in `db`, its reads sent to the primary whatever the URI's read preference: the
/// reads that decide a write (a document's stamps after a conflict, a user's address
/// before a link) must see the writes before them, and a secondary may lag behind. (The
/// URI may be the application's own, `secondaryPreferred` for its dashboards.)
fn primary_collection(db: &mongodb::Database, name: &str) -> Collection<Document> {
    db.collection_with_options(
        name,
        CollectionOptions::builder()
            .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
            .build(),
    )
}

/// The indexes of `collection` (none when it doesn't exist yet).
async fn list_indexes(collection: &Collection<Document>) -> Result<Vec<IndexModel>> {
    let list = async { collection.list_indexes().await?.try_collect().await };
    match bounded(list).await? {
        Ok(indexes) => Ok(indexes),
        // NamespaceNotFound: the collection doesn't exist yet.
        Err(e) if command_code(&e) == Some(26) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Creates `clerkId_unique` on `collection` (named `name`).
async fn create_clerk_id_index(name: &str, collection: &Collection<Document>) -> Result<()> {
    let created = collection.create_index(
        IndexModel::builder()
            .keys(doc! {"clerkId": 1})
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name(CLERK_ID_INDEX.to_string())
                    .build(),
            )
            .build(),
    );
    match build(name, CLERK_ID_INDEX, created).await? {
        Ok(_) => Ok(()),
        Err(e) if error_code(&e) == Some(11000) => Err(Error::Startup(format!(
            "cannot create the unique index on {name}.clerkId: the collection holds documents \
             with the same (or no) clerkId; fix them first ({e})"
        ))),
        // IndexOptionsConflict, IndexKeySpecsConflict: another index has this name.
        Err(e) if matches!(command_code(&e), Some(85 | 86)) => Err(Error::Startup(format!(
            "cannot create the index {CLERK_ID_INDEX} on {name}: {e}"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// How long start-up waits for one index build. A build on a large collection can take
/// longer: then start-up asks again (joining the same build), and says why it waits.
const INDEX_BUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// `create`, the build of `index` on `collection`, within [`INDEX_BUILD_TIMEOUT`].
async fn build<T>(collection: &str, index: &str, create: impl IntoFuture<Output = T>) -> Result<T> {
    tokio::time::timeout(INDEX_BUILD_TIMEOUT, create.into_future())
        .await
        .map_err(|_| Error::IndexBuild {
            index: index.to_string(),
            collection: collection.to_string(),
            after: INDEX_BUILD_TIMEOUT,
        })
}

/// The index on `webhook_events.processedAt` (a TTL index with `WEBHOOK_EVENTS_TTL_DAYS`).
const EVENTS_TIME_INDEX: &str = "processedAt_1";

/// [`EVENTS_TIME_INDEX`], with `ttl` when there is one.
fn events_time_index(ttl: Option<Duration>) -> IndexModel {
    IndexModel::builder()
        .keys(doc! {"processedAt": 1})
        .options(
            IndexOptions::builder()
                .name(EVENTS_TIME_INDEX.to_string())
                .expire_after(ttl)
                .build(),
        )
        .build()
}

/// The unique `clerkId` index user-sync creates where there is none.
const CLERK_ID_INDEX: &str = "clerkId_unique";

/// The index a duplicate-key message names: MongoDB's `… index: <name> dup key: …`, or
/// DocumentDB's `… Index '<name>'`. (FerretDB names none.)
fn duplicate_index(message: &str) -> Option<&str> {
    if let Some((_, rest)) = message.split_once("index: ") {
        return rest.split_whitespace().next();
    }
    let (_, rest) = message.split_once("Index '")?;
    rest.split_once('\'').map(|(name, _)| name)
}

/// A whole number as a server may send it: int, long, or a double without a fraction
/// (servers and drivers differ in which they use for counts, indexes and index keys).
pub(crate) fn integer(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Some(*n as i64),
        _ => None,
    }
}

/// The write concern as a command's `writeConcern` field.
fn write_concern_document(wc: &WriteConcern) -> Document {
    let mut d = Document::new();
    match &wc.w {
        Some(Acknowledgment::Majority) => d.insert("w", "majority"),
        Some(Acknowledgment::Nodes(n)) => d.insert("w", i64::from(*n)),
        Some(Acknowledgment::Custom(tag)) => d.insert("w", tag.as_str()),
        _ => None,
    };
    if let Some(j) = wc.journal {
        d.insert("j", j);
    }
    if let Some(t) = wc.w_timeout {
        d.insert("wtimeout", t.as_millis() as i64);
    }
    d
}

/// How a per-statement write error reads.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteErrorClass {
    /// A duplicate key on the unique `clerkId` index (`named`: the message says so; FerretDB
    /// names no index, so there any duplicate key may be one).
    ClerkIdConflict {
        /// Whether the server named the index.
        named: bool,
    },
    /// The server refuses this document for good: retrying can't help.
    Permanent,
    /// Anything else: the batch is retried.
    Transient,
}

/// Codes of a document the server refuses, which retrying can't change: BadValue,
/// FailedToParse, TypeMismatch, Overflow (a document nested too deeply), PathNotViable (a
/// dotted `LINK_CLERK_ID_FIELD` through a string), DollarPrefixedFieldName, EmptyFieldName,
/// DottedFieldName, ImmutableField, DocumentValidationFailure, BSONObjectTooLarge,
/// document too large after update, document to upsert too large (17420,
/// `src/mongo/db/exec/upsert_stage.cpp`). The names are `src/mongo/base/error_codes.yml`'s.
/// Only ever read from one statement's write error: a command-level error (a write
/// concern the server rejects, say) is never taken for a refusal of the data.
const DOCUMENT_ERRORS: [i32; 13] = [2, 9, 14, 15, 28, 52, 56, 57, 66, 121, 10334, 17419, 17420];

/// Reads one statement's write error, in a collection whose unique `clerkId` index is
/// named `clerk_id_index` (the name, not a field in the message: DocumentDB's message names
/// no key, and an application's index may be named anything).
pub(crate) fn classify_write_error(
    code: i32,
    message: &str,
    clerk_id_index: &str,
) -> WriteErrorClass {
    match (code, duplicate_index(message)) {
        (11000, None) => WriteErrorClass::ClerkIdConflict { named: false },
        (11000, Some(index)) if index == clerk_id_index => {
            WriteErrorClass::ClerkIdConflict { named: true }
        }
        // Another unique index (an ORM's `email`).
        (11000, Some(_)) => WriteErrorClass::Permanent,
        (code, _) if DOCUMENT_ERRORS.contains(&code) => WriteErrorClass::Permanent,
        _ => WriteErrorClass::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_index_build_that_never_ends_stops_waiting_and_says_why() {
        let started = tokio::time::Instant::now();
        let err = build("users", "clerkId_unique", std::future::pending::<()>())
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), INDEX_BUILD_TIMEOUT);
        let text = err.to_string();
        assert!(text.contains("clerkId_unique on users"), "{text}");
        assert!(text.contains("commitQuorum"), "{text}");
        // Retried, not fatal: asking again joins the build.
        assert!(!err.is_permanent());
    }

    #[test]
    fn write_errors_are_classified() {
        use WriteErrorClass::*;
        let clerk =
            "E11000 duplicate key error collection: app.users index: clerkId_unique dup key";
        let email = "E11000 duplicate key error collection: app.users index: email_1 dup key";
        let ours = "clerkId_unique";
        assert_eq!(
            classify_write_error(11000, clerk, ours),
            ClerkIdConflict { named: true }
        );
        assert_eq!(
            classify_write_error(11000, "E11000 duplicate key", ours),
            ClerkIdConflict { named: false }
        );
        assert_eq!(classify_write_error(11000, email, ours), Permanent);
        // DocumentDB names the index its own way, and no key.
        let documentdb = "Duplicate key violation on the requested collection: Index 'email_1'";
        assert_eq!(classify_write_error(11000, documentdb, ours), Permanent);
        let orm = "Duplicate key violation on the requested collection: Index 'users_ck_idx'";
        assert_eq!(
            classify_write_error(11000, orm, "users_ck_idx"),
            ClerkIdConflict { named: true }
        );
        assert_eq!(classify_write_error(17419, "too large", ours), Permanent);
        // Found retried for ever before (a partition blocked): an upsert too large, a
        // document too deep, a link through a string.
        for code in [17420, 15, 28] {
            assert_eq!(
                classify_write_error(code, "refused", ours),
                Permanent,
                "{code}"
            );
        }
        assert_eq!(classify_write_error(91, "shutting down", ours), Transient);
    }

    #[test]
    fn whole_numbers_read_alike_whatever_their_bson_type() {
        for value in [Bson::Int32(1), Bson::Int64(1), Bson::Double(1.0)] {
            assert_eq!(integer(&value), Some(1), "{value:?}");
        }
        assert_eq!(integer(&Bson::Double(1.5)), None);
        assert_eq!(integer(&Bson::String("1".into())), None);
    }

    #[tokio::test]
    async fn reads_go_to_the_primary_whatever_the_uri_says() {
        let config = MongoConfig::from_vars([(
            "MONGODB_URI".to_string(),
            "mongodb://127.0.0.1:1/app?readPreference=secondaryPreferred".to_string(),
        )])
        .unwrap();
        // Connecting is lazy: nothing is asked of a server here.
        let store = Store::connect(&config).await.unwrap();
        let primary = Some(SelectionCriteria::ReadPreference(ReadPreference::Primary));
        for entity in Entity::ALL {
            assert_eq!(
                store.collection(entity).selection_criteria(),
                primary.as_ref()
            );
        }
        assert_eq!(store.events.selection_criteria(), primary.as_ref());
        let records = store.primary_collection("mentees");
        assert_eq!(records.selection_criteria(), primary.as_ref());
        // What the URI says still holds for everything else.
        assert!(matches!(
            store.database().selection_criteria(),
            Some(SelectionCriteria::ReadPreference(
                ReadPreference::SecondaryPreferred { .. }
            ))
        ));
    }

    #[test]
    fn the_write_concern_travels_with_commands() {
        let wc = WriteConcern::builder()
            .w(Acknowledgment::Majority)
            .journal(true)
            .w_timeout(Duration::from_secs(10))
            .build();
        assert_eq!(
            write_concern_document(&wc),
            doc! {"w": "majority", "j": true, "wtimeout": 10_000_i64}
        );
    }
}
