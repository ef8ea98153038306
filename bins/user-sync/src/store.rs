//! The MongoDB side: collections, the indexes user-sync relies on, and health.

use std::time::Duration;

use bson::{doc, Document};
use common::ExposeSecret;
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Collection, IndexModel};

use crate::config::MongoConfig;
use crate::Result;

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
        let client = mongodb::Client::with_options(options)?;
        let db = client.database(&config.database);
        Ok(Store {
            users: db.collection(&config.users_collection),
            events: db.collection(EVENTS_COLLECTION),
            client,
        })
    }

    /// Creates the unique `clerkId` index (one document per user, even when two consumers
    /// race on a new user). Idempotent.
    pub async fn ensure_indexes(&self) -> Result<()> {
        self.users
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
            .await?;
        Ok(())
    }

    /// Whether the server answers a `ping` within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let admin = self.client.database("admin");
        let ping = admin.run_command(doc! {"ping": 1});
        matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
    }

    /// The driver client.
    pub fn client(&self) -> &mongodb::Client {
        &self.client
    }
}

/// Whether `err` is MongoDB's duplicate-key error (E11000).
pub fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().all(|e| e.code == 11000)),
        _ => false,
    }
}
