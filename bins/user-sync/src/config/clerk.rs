//! The tools' settings: Clerk's Backend API, and the topics `backfill` and `reconcile`
//! publish to.

use common::kafka::KafkaSettings;
use common::{ConfigError, ExposeSecret, SecretString};
use serde::Deserialize;

use super::env::Env;

/// Clerk's Backend API, for `backfill` and `reconcile`.
#[derive(Debug, Clone)]
pub struct ClerkConfig {
    /// `CLERK_SECRET_KEY` (never printed).
    pub secret_key: SecretString,
    /// `CLERK_API_URL`, without a trailing slash.
    pub api_url: String,
}

/// Clerk's production Backend API.
pub(crate) const DEFAULT_CLERK_API_URL: &str = "https://api.clerk.com/v1";

#[derive(Debug, Deserialize)]
struct ClerkEnv {
    clerk_secret_key: Option<SecretString>,
    clerk_api_url: Option<String>,
}

impl ClerkConfig {
    /// Reads `CLERK_SECRET_KEY` (required, trimmed: mounted secret files end with a newline)
    /// and `CLERK_API_URL`.
    pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let env: ClerkEnv = common::config::from_iter(vars)?;
        let key = env
            .clerk_secret_key
            .map(|k| k.expose_secret().trim().to_string())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                ConfigError::new(
                    "CLERK_SECRET_KEY",
                    "is required: the instance's secret key (Clerk dashboard, API keys)",
                )
            })?;
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::new(
                "CLERK_SECRET_KEY",
                "contains spaces or control characters",
            ));
        }
        let api_url = env
            .clerk_api_url
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_CLERK_API_URL.to_string());
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err(ConfigError::new(
                "CLERK_API_URL",
                "must start with https:// (or http:// for a local test server)",
            ));
        }
        Ok(ClerkConfig {
            secret_key: SecretString::from(key),
            api_url,
        })
    }
}

/// Where `backfill` and `reconcile` publish: the topics clerk-sync publishes to.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// Broker connection and topic creation.
    pub(crate) kafka: KafkaSettings,
    /// `KAFKA_TOPIC_USERS`
    pub(crate) users_topic: String,
    /// `KAFKA_TOPIC_ORGANIZATIONS` (organizations, memberships and invitations)
    pub(crate) organizations_topic: String,
    /// `KAFKA_TOPIC_SESSIONS`
    pub(crate) sessions_topic: String,
    /// `KAFKA_TOPIC_BILLING`
    pub(crate) billing_topic: String,
}

impl PublishConfig {
    /// Reads the Kafka variables and the topics, whatever `SYNC_ENTITIES` says.
    pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let env: Env = common::config::from_iter(vars.clone())?;
        Ok(PublishConfig {
            kafka: KafkaSettings::from_raw(common::config::from_iter(vars)?)?,
            users_topic: env.kafka_topic_users,
            organizations_topic: env.kafka_topic_organizations,
            sessions_topic: env.kafka_topic_sessions,
            billing_topic: env.kafka_topic_billing,
        })
    }
}
