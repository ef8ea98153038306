//! The MongoDB side: collections, the indexes user-sync relies on, and health.

use std::time::Duration;

use bson::{doc, Bson, Document};
use common::ExposeSecret;
use futures::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions, WriteConcern};
use mongodb::{Collection, IndexModel};

use crate::config::MongoConfig;
use crate::{Error, Result};

/// The audit collection of the contract.
pub const EVENTS_COLLECTION: &str = "webhook_events";

/// Handles to the two collections user-sync writes.
#[derive(Clone, Debug)]
pub struct Store {
    client: mongodb::Client,
    /// One document per Clerk user.
    pub users: Collection<Document>,
    /// One document per consumed event.
    pub events: Collection<Document>,
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
        let client = mongodb::Client::with_options(options)?;
        let db = client.database(&config.database);
        Ok(Store {
            users: db.collection(&config.users_collection),
            events: db.collection(EVENTS_COLLECTION),
            client,
        })
    }

    /// Makes sure a unique index on `clerkId` exists (one document per user, even when two
    /// consumers race on a new user), creating `clerkId_unique` when there is none. An
    /// existing unique index on `{clerkId: 1}` (an ORM's, say) is used as it is.
    /// Problems that waiting can't fix are [`Error::Startup`].
    pub async fn ensure_indexes(&self) -> Result<()> {
        let existing: Vec<IndexModel> = match self.users.list_indexes().await {
            Ok(cursor) => cursor.try_collect().await?,
            // NamespaceNotFound: the collection doesn't exist yet.
            Err(e) if command_code(&e) == Some(26) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        // `{clerkId: 1}`, whatever number type the key was created with (1, 1.0, 1L).
        let on_clerk_id = |i: &&IndexModel| {
            i.keys.len() == 1
                && i.keys.get("clerkId").and_then(|v| match v {
                    Bson::Int32(n) => Some(f64::from(*n)),
                    Bson::Int64(n) => Some(*n as f64),
                    Bson::Double(n) => Some(*n),
                    _ => None,
                }) == Some(1.0)
        };
        if let Some(index) = existing.iter().find(on_clerk_id) {
            let unique = index
                .options
                .as_ref()
                .and_then(|o| o.unique)
                .unwrap_or(false);
            let name = index
                .options
                .as_ref()
                .and_then(|o| o.name.clone())
                .unwrap_or_default();
            if unique {
                return Ok(());
            }
            return Err(Error::Startup(format!(
                "the index {name} on clerkId is not unique; drop it or make it unique \
                 (user-sync needs one document per clerkId)"
            )));
        }
        let created = self
            .users
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"clerkId": 1})
                    .options(
                        IndexOptions::builder()
                            .unique(true)
                            .name("clerkId_unique".to_string())
                            .build(),
                    )
                    .build(),
            )
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Err(Error::Startup(format!(
                "cannot create the unique index on clerkId: the collection holds documents with \
                 the same (or no) clerkId; fix them first ({e})"
            ))),
            // IndexOptionsConflict, IndexKeySpecsConflict: another index has this name.
            Err(e) if matches!(command_code(&e), Some(85 | 86)) => Err(Error::Startup(format!(
                "cannot create the index clerkId_unique: {e}"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the server answers a `ping` within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
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

/// Whether `err` is MongoDB's duplicate-key error (E11000), and only that: a write-concern
/// failure alongside it means the other writes may not be durable.
pub fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        ErrorKind::InsertMany(e) => {
            e.write_concern_error.is_none()
                && e.write_errors
                    .as_ref()
                    .is_some_and(|errors| errors.iter().all(|e| e.code == 11000))
        }
        _ => false,
    }
}

/// Whether a duplicate-key error comes from the unique `clerkId` index. MongoDB names the
/// index in the message; FerretDB's message names none, so there any E11000 on the users
/// collection counts as one.
pub fn is_clerk_id_conflict(err: &mongodb::error::Error) -> bool {
    let message = match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == 11000 => &e.message,
        ErrorKind::Command(e) if e.code == 11000 => &e.message,
        _ => return false,
    };
    !message.contains("index:") || message.contains("clerkId")
}

/// Whether the server refused the document itself, so retrying can never succeed (as
/// opposed to a server, network or write-concern failure, which can pass).
pub fn is_permanent(err: &mongodb::error::Error) -> bool {
    // BadValue, FailedToParse, TypeMismatch, DollarPrefixedFieldName, EmptyFieldName,
    // DottedFieldName, ImmutableField, DocumentValidationFailure, BSONObjectTooLarge,
    // document too large after update.
    const DOCUMENT_ERRORS: [i32; 10] = [2, 9, 14, 52, 56, 57, 66, 121, 10334, 17419];
    let document_error = |code: i32, message: &str| {
        DOCUMENT_ERRORS.contains(&code)
            // Another unique index than clerkId's (an ORM's `email`): retrying won't help.
            || (code == 11000 && message.contains("index:") && !message.contains("clerkId"))
    };
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => document_error(e.code, &e.message),
        ErrorKind::Command(e) => document_error(e.code, &e.message),
        ErrorKind::InsertMany(e) => {
            e.write_concern_error.is_none()
                && e.write_errors
                    .as_ref()
                    .is_some_and(|errors| errors.iter().any(|e| DOCUMENT_ERRORS.contains(&e.code)))
        }
        ErrorKind::BsonSerialization(_) => true,
        _ => false,
    }
}
