//! clerk-sync's settings: the contract's variable table, validated once at start-up.

use std::time::Duration;

use common::kafka::KafkaSettings;
use common::{ConfigError, ExposeSecret, LogFormat, SecretString};
use events::Family;
use serde::Deserialize;

/// Variables specific to clerk-sync, as the environment gives them.
#[derive(Debug, Deserialize)]
struct Env {
    clerk_webhook_secret: SecretString,
    #[serde(default = "default_topic_users")]
    kafka_topic_users: String,
    #[serde(default = "default_topic_organizations")]
    kafka_topic_organizations: String,
    #[serde(default = "default_topic_sessions")]
    kafka_topic_sessions: String,
    #[serde(default = "default_topic_billing")]
    kafka_topic_billing: String,
    #[serde(default = "default_topic_other")]
    kafka_topic_other: String,
    #[serde(default)]
    publish_message_bodies: bool,
    #[serde(default = "default_port")]
    port: u16,
    webhook_query_secret: Option<SecretString>,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    #[serde(default = "default_publish_timeout_ms")]
    publish_timeout_ms: u64,
    #[serde(default = "default_header_timeout_ms")]
    header_timeout_ms: u64,
    #[serde(default = "default_request_timeout_ms")]
    request_timeout_ms: u64,
    #[serde(default = "default_max_in_flight")]
    max_in_flight: usize,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    log_format: Option<String>,
}

fn default_topic_users() -> String {
    common::kafka::DEFAULT_TOPIC_USERS.into()
}
fn default_topic_organizations() -> String {
    common::kafka::DEFAULT_TOPIC_ORGANIZATIONS.into()
}
fn default_topic_sessions() -> String {
    common::kafka::DEFAULT_TOPIC_SESSIONS.into()
}
fn default_topic_billing() -> String {
    common::kafka::DEFAULT_TOPIC_BILLING.into()
}
fn default_topic_other() -> String {
    common::kafka::DEFAULT_TOPIC_OTHER.into()
}
fn default_port() -> u16 {
    DEFAULT_PORT
}

/// `PORT` when unset.
pub const DEFAULT_PORT: u16 = 8788;
fn default_max_body_bytes() -> usize {
    common::kafka::DEFAULT_MAX_BODY_BYTES
}
fn default_publish_timeout_ms() -> u64 {
    5000
}
fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
/// 32 bodies of the default 1 MiB, each held about twice while it is published, stay well
/// inside the 256 MiB the Kubernetes manifests give clerk-sync.
fn default_max_in_flight() -> usize {
    32
}
fn default_max_connections() -> usize {
    2048
}

/// The topic of each event family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `KAFKA_TOPIC_USERS`
    pub users: String,
    /// `KAFKA_TOPIC_ORGANIZATIONS`
    pub organizations: String,
    /// `KAFKA_TOPIC_SESSIONS`
    pub sessions: String,
    /// `KAFKA_TOPIC_BILLING`
    pub billing: String,
    /// `KAFKA_TOPIC_OTHER`
    pub other: String,
}

impl Topics {
    /// Where events of `family` go.
    pub fn for_family(&self, family: Family) -> &str {
        match family {
            Family::Users => &self.users,
            Family::Organizations => &self.organizations,
            Family::Sessions => &self.sessions,
            Family::Billing => &self.billing,
            Family::Other => &self.other,
        }
    }

    /// Every topic clerk-sync writes.
    pub fn all(&self) -> Vec<&str> {
        Family::ALL.iter().map(|f| self.for_family(*f)).collect()
    }
}

/// How long and how many: what keeps `/webhook` bounded in time and memory whatever
/// strangers send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `HEADER_TIMEOUT_MS`: longest wait for a request's head, idle keep-alive included.
    pub header_timeout: Duration,
    /// `REQUEST_TIMEOUT_MS`: longest a `/webhook` request may take once its head is in,
    /// body read and publishing included.
    pub request_timeout: Duration,
    /// `MAX_IN_FLIGHT`: `/webhook` requests handled at once.
    pub max_in_flight: usize,
    /// `MAX_CONNECTIONS`: open connections; beyond it new ones wait in the listen backlog.
    pub max_connections: usize,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Signing secrets (`whsec_…`); a request passes when any verifies it.
    pub webhook_secrets: Vec<SecretString>,
    /// Broker connection and topic creation.
    pub kafka: KafkaSettings,
    /// Topics by family.
    pub topics: Topics,
    /// Listen port (all interfaces).
    pub port: u16,
    /// When set, `/webhook` also requires `?secret=<value>`.
    pub query_secret: Option<SecretString>,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Longest wait for the broker's acknowledgement.
    pub publish_timeout: Duration,
    /// Connection and request bounds.
    pub limits: Limits,
    /// `LOG_FORMAT`
    pub log_format: LogFormat,
    /// `PUBLISH_MESSAGE_BODIES`: publish `email.created`/`sms.created` with their
    /// code-bearing fields as received (off: replaced by `[redacted]`).
    pub publish_message_bodies: bool,
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
        let kafka = KafkaSettings::from_raw(common::config::from_iter(vars)?)?;

        let webhook_secrets = split_secrets(env.clerk_webhook_secret.expose_secret());
        if webhook_secrets.is_empty() {
            return Err(ConfigError::new("CLERK_WEBHOOK_SECRET", "is required"));
        }
        // Decodes every secret once, so a bad one stops start-up (the error names its
        // position, never its value).
        crate::verify::Verifier::new(&webhook_secrets, None)?;

        let topics = Topics {
            users: topic("KAFKA_TOPIC_USERS", env.kafka_topic_users)?,
            organizations: topic("KAFKA_TOPIC_ORGANIZATIONS", env.kafka_topic_organizations)?,
            sessions: topic("KAFKA_TOPIC_SESSIONS", env.kafka_topic_sessions)?,
            billing: topic("KAFKA_TOPIC_BILLING", env.kafka_topic_billing)?,
            other: topic("KAFKA_TOPIC_OTHER", env.kafka_topic_other)?,
        };
        if env.max_body_bytes == 0 {
            return Err(ConfigError::new("MAX_BODY_BYTES", "must be at least 1"));
        }
        if env.publish_timeout_ms == 0 {
            return Err(ConfigError::new("PUBLISH_TIMEOUT_MS", "must be at least 1"));
        }
        // Trimmed: a secret mounted from a file usually ends with a newline.
        let query_secret = env
            .webhook_query_secret
            .map(|s| s.expose_secret().trim().to_string())
            .filter(|s| !s.is_empty())
            .map(SecretString::from);
        let limits = Limits {
            header_timeout: millis("HEADER_TIMEOUT_MS", env.header_timeout_ms)?,
            request_timeout: millis("REQUEST_TIMEOUT_MS", env.request_timeout_ms)?,
            max_in_flight: at_least_one("MAX_IN_FLIGHT", env.max_in_flight)?,
            max_connections: at_least_one("MAX_CONNECTIONS", env.max_connections)?,
        };

        Ok(Config {
            webhook_secrets,
            kafka,
            topics,
            port: env.port,
            query_secret,
            max_body_bytes: env.max_body_bytes,
            publish_timeout: Duration::from_millis(env.publish_timeout_ms),
            limits,
            log_format: LogFormat::parse(env.log_format.as_deref())?,
            publish_message_bodies: env.publish_message_bodies,
        })
    }
}

fn at_least_one(variable: &str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(variable, "must be at least 1"));
    }
    Ok(value)
}

fn millis(variable: &str, value: u64) -> Result<Duration, ConfigError> {
    at_least_one(variable, value as usize).map(|ms| Duration::from_millis(ms as u64))
}

/// Secrets are separated by commas or whitespace.
fn split_secrets(value: &str) -> Vec<SecretString> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| SecretString::from(s.to_string()))
        .collect()
}

/// Kafka topic names: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn topic(variable: &str, name: String) -> Result<String, ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(name)
    } else {
        Err(ConfigError::new(
            variable,
            format!("`{name}` is not a valid Kafka topic name"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SECRET_B: &str = "whsec_dGVzdC1zZWNyZXQtbnVtYmVyLXR3bw==";

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = config(&[
            ("CLERK_WEBHOOK_SECRET", SECRET_A),
            ("KAFKA_BROKERS", "k:9092"),
        ])
        .unwrap();
        assert_eq!(c.webhook_secrets.len(), 1);
        assert_eq!(c.topics.users, "clerk-user-events");
        assert_eq!(c.topics.organizations, "clerk-organization-events");
        assert_eq!(c.topics.sessions, "clerk-session-events");
        assert_eq!(c.topics.billing, "clerk-billing-events");
        assert_eq!(c.topics.other, "clerk-other-events");
        assert!(!c.publish_message_bodies, "one-time codes stay off Kafka");
        assert_eq!(c.port, 8788);
        assert!(c.query_secret.is_none());
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.publish_timeout, Duration::from_secs(5));
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.kafka.create_topics);
        assert_eq!(
            c.limits,
            Limits {
                header_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(30),
                max_in_flight: 32,
                max_connections: 2048,
            }
        );
    }

    #[test]
    fn query_secret_is_trimmed_like_a_mounted_file() {
        let c = config(&[
            ("CLERK_WEBHOOK_SECRET", SECRET_A),
            ("KAFKA_BROKERS", "k:9092"),
            ("WEBHOOK_QUERY_SECRET", "s3cret\n"),
        ])
        .unwrap();
        assert_eq!(c.query_secret.unwrap().expose_secret(), "s3cret");
    }

    #[test]
    fn several_secrets_by_comma_or_space() {
        let both = format!("{SECRET_A}, {SECRET_B}");
        let c = config(&[("CLERK_WEBHOOK_SECRET", &both), ("KAFKA_BROKERS", "k:9092")]).unwrap();
        assert_eq!(c.webhook_secrets.len(), 2);
        let both = format!("{SECRET_A} {SECRET_B}");
        let c = config(&[("CLERK_WEBHOOK_SECRET", &both), ("KAFKA_BROKERS", "k:9092")]).unwrap();
        assert_eq!(c.webhook_secrets.len(), 2);
    }

    #[test]
    fn missing_and_bad_values_name_the_variable_but_not_the_secret() {
        let err = config(&[("KAFKA_BROKERS", "k:9092")]).unwrap_err();
        assert_eq!(err.variable, "CLERK_WEBHOOK_SECRET");
        let err = config(&[("CLERK_WEBHOOK_SECRET", SECRET_A)]).unwrap_err();
        assert_eq!(err.variable, "KAFKA_BROKERS");
        let err = config(&[
            ("CLERK_WEBHOOK_SECRET", "whsec_%%%notbase64"),
            ("KAFKA_BROKERS", "k"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "CLERK_WEBHOOK_SECRET");
        assert!(!err.to_string().contains("notbase64"), "{err}");
        for (var, value) in [
            ("PORT", "http"),
            ("MAX_BODY_BYTES", "0"),
            ("PUBLISH_TIMEOUT_MS", "-5"),
            ("KAFKA_TOPIC_USERS", "no spaces"),
            ("LOG_FORMAT", "xml"),
            ("HEADER_TIMEOUT_MS", "0"),
            ("REQUEST_TIMEOUT_MS", "soon"),
            ("MAX_IN_FLIGHT", "0"),
            ("MAX_CONNECTIONS", "-1"),
        ] {
            let err = config(&[
                ("CLERK_WEBHOOK_SECRET", SECRET_A),
                ("KAFKA_BROKERS", "k"),
                (var, value),
            ])
            .unwrap_err();
            assert_eq!(err.variable, var, "{err}");
        }
    }

    #[test]
    fn config_debug_hides_secrets() {
        let c = config(&[
            ("CLERK_WEBHOOK_SECRET", SECRET_A),
            ("KAFKA_BROKERS", "k:9092"),
            ("WEBHOOK_QUERY_SECRET", "q-secret-value"),
            ("KAFKA_USERNAME", "u"),
            ("KAFKA_PASSWORD", "kafka-pw-value"),
        ])
        .unwrap();
        let printed = format!("{c:?}");
        for secret in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "q-secret-value",
            "kafka-pw-value",
        ] {
            assert!(!printed.contains(secret), "{printed}");
        }
    }
}
