//! Where the documents live: `MONGODB_*`.

use common::{ConfigError, ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::{Entity, EVENTS_COLLECTION};

#[derive(Debug, Deserialize)]
struct MongoEnv {
    mongodb_uri: Option<SecretString>,
    database_url_online: Option<SecretString>,
    mongodb_database: Option<String>,
    #[serde(default = "default_users_collection")]
    mongodb_users_collection: String,
    mongodb_organizations_collection: Option<String>,
    mongodb_memberships_collection: Option<String>,
    mongodb_sessions_collection: Option<String>,
    mongodb_invitations_collection: Option<String>,
    mongodb_subscriptions_collection: Option<String>,
    mongodb_subscription_items_collection: Option<String>,
    mongodb_payment_attempts_collection: Option<String>,
    #[serde(default = "keep_payload")]
    webhook_events_payload: bool,
    webhook_events_ttl_days: Option<String>,
}

/// The longest `WEBHOOK_EVENTS_TTL_DAYS` (MongoDB's `expireAfterSeconds` is a 32-bit int).
const MOST_TTL_DAYS: u32 = 24_855;

fn keep_payload() -> bool {
    true
}

fn default_users_collection() -> String {
    "users".into()
}
/// The database used when neither `MONGODB_DATABASE` nor the URI names one.
const DEFAULT_DATABASE: &str = "clerk_sync";

/// Where user documents live.
#[derive(Debug, Clone)]
pub struct MongoConfig {
    /// `MONGODB_URI` (may hold a password: never printed).
    pub(crate) uri: SecretString,
    /// `MONGODB_DATABASE`, else the URI's, else [`DEFAULT_DATABASE`].
    pub(crate) database: String,
    /// `MONGODB_USERS_COLLECTION`
    pub(crate) users_collection: String,
    /// `MONGODB_ORGANIZATIONS_COLLECTION`
    pub(crate) organizations_collection: String,
    /// `MONGODB_MEMBERSHIPS_COLLECTION`
    pub(crate) memberships_collection: String,
    /// `MONGODB_SESSIONS_COLLECTION`
    pub(crate) sessions_collection: String,
    /// `MONGODB_INVITATIONS_COLLECTION`
    pub(crate) invitations_collection: String,
    /// `MONGODB_SUBSCRIPTIONS_COLLECTION`
    pub(crate) subscriptions_collection: String,
    /// `MONGODB_SUBSCRIPTION_ITEMS_COLLECTION`
    pub(crate) subscription_items_collection: String,
    /// `MONGODB_PAYMENT_ATTEMPTS_COLLECTION`
    pub(crate) payment_attempts_collection: String,
    /// `WEBHOOK_EVENTS_PAYLOAD`: whether each `webhook_events` record keeps a copy of its
    /// event's Clerk `data`.
    pub(crate) events_payload: bool,
    /// `WEBHOOK_EVENTS_TTL_DAYS`: how long a `webhook_events` record is kept after
    /// `processedAt` (`None`: for good).
    pub(crate) events_ttl_days: Option<u32>,
}

impl MongoConfig {
    /// Reads and validates the MongoDB variables only.
    pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let env: MongoEnv = common::config::from_iter(vars)?;
        let uri = env.mongodb_uri.or(env.database_url_online).ok_or_else(|| {
            ConfigError::new(
                "MONGODB_URI",
                "is required (or its other name DATABASE_URL_ONLINE)",
            )
        })?;
        let text = uri.expose_secret();
        if !(text.starts_with("mongodb://") || text.starts_with("mongodb+srv://")) {
            return Err(ConfigError::new(
                "MONGODB_URI",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        let database = env
            .mongodb_database
            .or_else(|| database_in_uri(text))
            .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
        if database.is_empty() || database.contains(['/', '\\', '.', ' ', '"', '$']) {
            return Err(ConfigError::new(
                "MONGODB_DATABASE",
                format!("`{database}` is not a valid database name"),
            ));
        }
        let collection = |variable: &'static str, value: Option<String>, entity: Entity| {
            let name = value.unwrap_or_else(|| entity.default_collection().to_string());
            if name.is_empty() || name.starts_with("system.") || name.contains('$') {
                return Err(ConfigError::new(variable, "is not a valid collection name"));
            }
            Ok(name)
        };
        let config = MongoConfig {
            uri,
            database,
            users_collection: collection(
                "MONGODB_USERS_COLLECTION",
                Some(env.mongodb_users_collection),
                Entity::User,
            )?,
            organizations_collection: collection(
                "MONGODB_ORGANIZATIONS_COLLECTION",
                env.mongodb_organizations_collection,
                Entity::Organization,
            )?,
            memberships_collection: collection(
                "MONGODB_MEMBERSHIPS_COLLECTION",
                env.mongodb_memberships_collection,
                Entity::Membership,
            )?,
            sessions_collection: collection(
                "MONGODB_SESSIONS_COLLECTION",
                env.mongodb_sessions_collection,
                Entity::Session,
            )?,
            invitations_collection: collection(
                "MONGODB_INVITATIONS_COLLECTION",
                env.mongodb_invitations_collection,
                Entity::Invitation,
            )?,
            subscriptions_collection: collection(
                "MONGODB_SUBSCRIPTIONS_COLLECTION",
                env.mongodb_subscriptions_collection,
                Entity::Subscription,
            )?,
            subscription_items_collection: collection(
                "MONGODB_SUBSCRIPTION_ITEMS_COLLECTION",
                env.mongodb_subscription_items_collection,
                Entity::SubscriptionItem,
            )?,
            payment_attempts_collection: collection(
                "MONGODB_PAYMENT_ATTEMPTS_COLLECTION",
                env.mongodb_payment_attempts_collection,
                Entity::PaymentAttempt,
            )?,
            events_payload: env.webhook_events_payload,
            events_ttl_days: ttl_days(env.webhook_events_ttl_days.as_deref())?,
        };
        let mut names: Vec<&str> = Entity::ALL.iter().map(|&e| config.collection(e)).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) || names.contains(&EVENTS_COLLECTION) {
            return Err(ConfigError::new(
                "MONGODB_USERS_COLLECTION",
                "and the other MONGODB_*_COLLECTION variables must name different collections, \
                 none of them webhook_events",
            ));
        }
        Ok(config)
    }

    /// The collection of one kind of document.
    pub(crate) fn collection(&self, entity: Entity) -> &str {
        match entity {
            Entity::User => &self.users_collection,
            Entity::Organization => &self.organizations_collection,
            Entity::Membership => &self.memberships_collection,
            Entity::Session => &self.sessions_collection,
            Entity::Invitation => &self.invitations_collection,
            Entity::Subscription => &self.subscriptions_collection,
            Entity::SubscriptionItem => &self.subscription_items_collection,
            Entity::PaymentAttempt => &self.payment_attempts_collection,
        }
    }
}

/// `WEBHOOK_EVENTS_TTL_DAYS`: unset or empty, none; else whole days, 1 to [`MOST_TTL_DAYS`].
fn ttl_days(value: Option<&str>) -> Result<Option<u32>, ConfigError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => match text.parse::<u32>() {
            Ok(days @ 1..=MOST_TTL_DAYS) => Ok(Some(days)),
            _ => Err(ConfigError::new(
                "WEBHOOK_EVENTS_TTL_DAYS",
                format!("must be a whole number of days from 1 to {MOST_TTL_DAYS}"),
            )),
        },
    }
}

/// The path part of `mongodb://user:pw@host/db?opts`, when there is one.
fn database_in_uri(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    let path = rest.split_once('/')?.1;
    let db = path.split('?').next().unwrap_or_default();
    (!db.is_empty()).then(|| db.to_string())
}
