//! user-sync's settings: the contract's variable table, validated once at start-up.

use common::kafka::KafkaSettings;
use common::{ConfigError, ExposeSecret, LogFormat, SecretString};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Env {
    #[serde(default = "default_group_id")]
    kafka_group_id: String,
    #[serde(default = "default_topic_users")]
    kafka_topic_users: String,
    kafka_dlq_topic: Option<String>,
    #[serde(default = "default_health_port")]
    health_port: u16,
    log_format: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MongoEnv {
    mongodb_uri: Option<SecretString>,
    database_url_online: Option<SecretString>,
    mongodb_database: Option<String>,
    #[serde(default = "default_users_collection")]
    mongodb_users_collection: String,
}

fn default_group_id() -> String {
    "user-sync".into()
}
fn default_topic_users() -> String {
    "clerk-user-events".into()
}
fn default_users_collection() -> String {
    "users".into()
}
fn default_health_port() -> u16 {
    8789
}

/// The database used when neither `MONGODB_DATABASE` nor the URI names one.
pub const DEFAULT_DATABASE: &str = "clerk_sync";

/// Where user documents live.
#[derive(Debug, Clone)]
pub struct MongoConfig {
    /// `MONGODB_URI` (may hold a password: never printed).
    pub uri: SecretString,
    /// `MONGODB_DATABASE`, else the URI's, else [`DEFAULT_DATABASE`].
    pub database: String,
    /// `MONGODB_USERS_COLLECTION`
    pub users_collection: String,
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
        if env.mongodb_users_collection.is_empty()
            || env.mongodb_users_collection.starts_with("system.")
        {
            return Err(ConfigError::new(
                "MONGODB_USERS_COLLECTION",
                "is not a valid collection name",
            ));
        }
        Ok(MongoConfig {
            uri,
            database,
            users_collection: env.mongodb_users_collection,
        })
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Broker connection and topic creation.
    pub kafka: KafkaSettings,
    /// `KAFKA_GROUP_ID`
    pub group_id: String,
    /// `KAFKA_TOPIC_USERS`, the topic consumed.
    pub topic: String,
    /// `KAFKA_DLQ_TOPIC`
    pub dlq_topic: String,
    /// MongoDB.
    pub mongo: MongoConfig,
    /// `HEALTH_PORT`
    pub health_port: u16,
    /// `LOG_FORMAT`
    pub log_format: LogFormat,
}

impl Config {
    /// Reads and validates the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads and validates explicit variables (tests).
    pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let env: Env = common::config::from_iter(vars.clone())?;
        let kafka = KafkaSettings::from_raw(common::config::from_iter(vars.clone())?)?;

        let mongo = MongoConfig::from_vars(vars.clone())?;
        let dlq_topic = env
            .kafka_dlq_topic
            .unwrap_or_else(|| format!("{}.dlq", env.kafka_topic_users));
        if env.kafka_group_id.trim().is_empty() {
            return Err(ConfigError::new("KAFKA_GROUP_ID", "must not be empty"));
        }

        Ok(Config {
            kafka,
            group_id: env.kafka_group_id,
            topic: env.kafka_topic_users,
            dlq_topic,
            mongo,
            health_port: env.health_port,
            log_format: LogFormat::parse(env.log_format.as_deref())?,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = config(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("MONGODB_URI", "mongodb://m:27017"),
        ])
        .unwrap();
        assert_eq!(c.group_id, "user-sync");
        assert_eq!(c.topic, "clerk-user-events");
        assert_eq!(c.dlq_topic, "clerk-user-events.dlq");
        assert_eq!(c.mongo.database, "clerk_sync");
        assert_eq!(c.mongo.users_collection, "users");
        assert_eq!(c.health_port, 8789);
    }

    #[test]
    fn database_from_uri_or_variable() {
        let c = config(&[
            ("KAFKA_BROKERS", "k"),
            ("MONGODB_URI", "mongodb://u:p@m1,m2/app?replicaSet=rs"),
        ])
        .unwrap();
        assert_eq!(c.mongo.database, "app");
        let c = config(&[
            ("KAFKA_BROKERS", "k"),
            (
                "DATABASE_URL_ONLINE",
                "mongodb+srv://u:p@cluster.example/app",
            ),
            ("MONGODB_DATABASE", "other"),
        ])
        .unwrap();
        assert_eq!(c.mongo.database, "other");
    }

    #[test]
    fn missing_and_bad_values_name_the_variable() {
        assert_eq!(
            config(&[("KAFKA_BROKERS", "k")]).unwrap_err().variable,
            "MONGODB_URI"
        );
        assert_eq!(
            config(&[("MONGODB_URI", "mongodb://m")])
                .unwrap_err()
                .variable,
            "KAFKA_BROKERS"
        );
        let err = config(&[
            ("KAFKA_BROKERS", "k"),
            ("MONGODB_URI", "postgres://u:hunter2@h/db"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "MONGODB_URI");
        assert!(!err.to_string().contains("hunter2"));
        let err = config(&[
            ("KAFKA_BROKERS", "k"),
            ("MONGODB_URI", "mongodb://m"),
            ("HEALTH_PORT", "x"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "HEALTH_PORT");
    }

    #[test]
    fn uri_password_is_not_printed() {
        let c = config(&[
            ("KAFKA_BROKERS", "k"),
            ("MONGODB_URI", "mongodb://u:hunter2@m/db"),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
