//! The Kafka variables of the contract, validated, and what the services do with them.

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::{default_true, ConfigError};

/// Partitions for topics the services create, unless `KAFKA_TOPIC_PARTITIONS` says otherwise.
pub const DEFAULT_TOPIC_PARTITIONS: i32 = 6;

/// `KAFKA_TOPIC_USERS` when unset: where clerk-sync publishes `user.*` and user-sync reads
/// them (one name for both services, so their defaults can't drift apart).
pub const DEFAULT_TOPIC_USERS: &str = "clerk-user-events";
/// `KAFKA_TOPIC_ORGANIZATIONS` when unset: organizations, memberships, invitations.
pub const DEFAULT_TOPIC_ORGANIZATIONS: &str = "clerk-organization-events";
/// `KAFKA_TOPIC_SESSIONS` when unset.
pub const DEFAULT_TOPIC_SESSIONS: &str = "clerk-session-events";
/// `KAFKA_TOPIC_OTHER` when unset: the event types no other topic takes.
pub const DEFAULT_TOPIC_OTHER: &str = "clerk-other-events";
/// `KAFKA_TOPIC_BILLING` when unset.
pub const DEFAULT_TOPIC_BILLING: &str = "clerk-billing-events";

/// The largest message the services produce for a body of `max_body_bytes`: the body's
/// `data` plus the normalized record and envelope, with room to spare. Used for the
/// producer's `message.max.bytes` and the `max.message.bytes` of created topics.
pub fn max_message_bytes(max_body_bytes: usize) -> usize {
    (max_body_bytes.saturating_mul(2) + 65_536).clamp(1_000_000, 1_000_000_000)
}

/// `MAX_BODY_BYTES`' default, which user-sync (which doesn't read it) assumes for its DLQ.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1_048_576;

/// The Kafka variables exactly as the environment gives them.
#[derive(Debug, Deserialize)]
pub struct KafkaEnv {
    kafka_brokers: Option<String>,
    kafka_service_uri: Option<String>,
    kafka_username: Option<String>,
    kafka_password: Option<SecretString>,
    kafka_sasl_mechanism: Option<String>,
    kafka_ca_cert: Option<String>,
    #[serde(default = "default_true")]
    kafka_create_topics: bool,
    kafka_topic_partitions: Option<i32>,
    kafka_replication_factor: Option<i32>,
}

/// SASL mechanisms managed Kafka services offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `SCRAM-SHA-256` (the default)
    ScramSha256,
    /// `SCRAM-SHA-512`
    ScramSha512,
    /// `PLAIN` (only sensible with TLS)
    Plain,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::Plain => "PLAIN",
        }
    }
}

/// Where the CA certificate comes from (`KAFKA_CA_CERT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaCert {
    /// PEM text given inline.
    Pem(String),
    /// A PEM file.
    Path(PathBuf),
}

/// SASL credentials.
#[derive(Debug, Clone)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// `KAFKA_USERNAME`
    pub username: String,
    /// `KAFKA_PASSWORD`; never printed.
    pub password: SecretString,
}

/// Validated Kafka settings, shared by both services.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port,…`.
    pub brokers: String,
    /// SASL, when a username is set.
    pub sasl: Option<Sasl>,
    /// TLS trust anchor; when set, TLS is on.
    pub ca_cert: Option<CaCert>,
    /// Whether to create missing topics at start-up.
    pub create_topics: bool,
    /// Partitions of created topics.
    pub topic_partitions: i32,
    /// Replication factor of created topics; `None` lets the broker choose.
    pub replication_factor: Option<i32>,
}

impl KafkaSettings {
    /// Reads and validates the Kafka variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_raw(crate::config::from_env()?)
    }

    /// Validates raw variables.
    pub fn from_raw(env: KafkaEnv) -> Result<Self, ConfigError> {
        let brokers = env
            .kafka_brokers
            .or(env.kafka_service_uri)
            .map(|b| b.trim().to_string())
            .ok_or_else(|| {
                ConfigError::new(
                    "KAFKA_BROKERS",
                    "is required (or its other name KAFKA_SERVICE_URI)",
                )
            })?;
        if brokers.split(',').any(|b| b.trim().is_empty()) {
            return Err(ConfigError::new(
                "KAFKA_BROKERS",
                "must be host:port[,host:port…]",
            ));
        }

        let sasl = match (env.kafka_username, env.kafka_password) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "KAFKA_PASSWORD",
                    "is required when KAFKA_USERNAME is set",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "KAFKA_USERNAME",
                    "is required when KAFKA_PASSWORD is set",
                ))
            }
            (Some(username), Some(password)) => Some(Sasl {
                mechanism: parse_mechanism(env.kafka_sasl_mechanism.as_deref())?,
                username,
                password,
            }),
        };
        if sasl.is_none() && env.kafka_sasl_mechanism.is_some() {
            parse_mechanism(env.kafka_sasl_mechanism.as_deref())?;
        }

        let ca_cert = env.kafka_ca_cert.map(parse_ca_cert).transpose()?;

        let topic_partitions = env
            .kafka_topic_partitions
            .unwrap_or(DEFAULT_TOPIC_PARTITIONS);
        if topic_partitions < 1 {
            return Err(ConfigError::new(
                "KAFKA_TOPIC_PARTITIONS",
                "must be at least 1",
            ));
        }
        if env.kafka_replication_factor.is_some_and(|r| r < 1) {
            return Err(ConfigError::new(
                "KAFKA_REPLICATION_FACTOR",
                "must be at least 1",
            ));
        }

        Ok(KafkaSettings {
            brokers,
            sasl,
            ca_cert,
            create_topics: env.kafka_create_topics,
            topic_partitions,
            replication_factor: env.kafka_replication_factor,
        })
    }

    /// Settings for a plain local broker, for tests.
    pub fn plaintext(brokers: impl Into<String>) -> Self {
        KafkaSettings {
            brokers: brokers.into(),
            sasl: None,
            ca_cert: None,
            create_topics: true,
            topic_partitions: DEFAULT_TOPIC_PARTITIONS,
            replication_factor: None,
        }
    }

    /// The librdkafka configuration every client of ours starts from: brokers, security
    /// protocol, SASL and TLS.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        let protocol = match (&self.sasl, &self.ca_cert) {
            (None, None) => "plaintext",
            (None, Some(_)) => "ssl",
            (Some(_), None) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose_secret());
        }
        match &self.ca_cert {
            Some(CaCert::Pem(pem)) => {
                config.set("ssl.ca.pem", pem);
            }
            Some(CaCert::Path(path)) => {
                config.set("ssl.ca.location", path.to_string_lossy());
            }
            None => {}
        }
        config
    }

    /// [`KafkaSettings::client_config`] for a producer that neither loses nor duplicates an
    /// acknowledged message: every in-sync replica acknowledges (`acks=all`), and a retried
    /// send can't be written twice (idempotence). Messages up to `max_message_bytes` (see
    /// [`max_message_bytes`]); one unacknowledged after `timeout` fails. Every producer of
    /// ours starts from this, and adds its own batching.
    pub fn reliable_producer_config(
        &self,
        client_id: &str,
        timeout: Duration,
        max_message_bytes: usize,
    ) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("client.id", client_id)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                timeout.as_millis().clamp(1, i32::MAX as u128).to_string(),
            )
            .set("message.max.bytes", max_message_bytes.to_string());
        config
    }

    /// When `KAFKA_CREATE_TOPICS` allows it, describes the topics (which also checks that the
    /// brokers take our credentials and certificate) and creates those that don't exist, with
    /// `max.message.bytes` = `max_message_bytes` (the broker's 1 MB default is too small
    /// for a webhook body near 1 MiB plus its normalized record). The topics are described
    /// first and only the missing ones are created, so a principal without CREATE rights
    /// starts where the topics exist. Any other failure is returned.
    pub async fn ensure_topics(
        &self,
        topics: &[&str],
        max_message_bytes: usize,
    ) -> Result<(), SetupError> {
        if !self.create_topics {
            // Nothing is asked of the brokers then: clerk-sync starts (and answers 503) while
            // they are unreachable, and a refused password shows in /ready and the log.
            return Ok(());
        }
        let wanted: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let mut config = self.client_config();
        // A metadata request must never create what it asks about.
        config.set("allow.auto.create.topics", "false");
        // librdkafka's metadata call blocks: off the async threads.
        let brokers = self.brokers.clone();
        let described = tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::Consumer;
            let consumer: rdkafka::consumer::BaseConsumer<Diagnosing> =
                config.create_with_context(Diagnosing::default())?;
            describe(&consumer, &wanted).map_err(|error| {
                let context = consumer.context();
                // What librdkafka said on the way (a refused password, a certificate that
                // doesn't verify) says more than the request's own failure.
                match context.last() {
                    Some(reason) if context.hopeless() => SetupError::Refused { brokers, reason },
                    Some(reason) => SetupError::Unreachable { brokers, reason },
                    None => SetupError::Kafka(error),
                }
            })
        })
        .await
        .map_err(|_| KafkaError::AdminOpCreation("describing topics panicked".into()))??;
        let missing = missing_topics(topics, &described);
        if missing.is_empty() {
            return Ok(());
        }
        let admin: AdminClient<_> = self.client_config().create()?;
        // -1: the broker's default.replication.factor (KIP-464).
        let replication = self.replication_factor.unwrap_or(-1);
        let max_message_bytes = max_message_bytes.to_string();
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.topic_partitions,
                    TopicReplication::Fixed(replication),
                )
                .set("max.message.bytes", &max_message_bytes)
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics(new.iter(), &options).await? {
            match result {
                Ok(topic) => {
                    tracing::info!(topic, partitions = self.topic_partitions, "created topic")
                }
                // Another replica created it between our look and our request.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    tracing::error!(topic, error = %code, "cannot create topic");
                    return Err(KafkaError::AdminOp(code).into());
                }
            }
        }
        Ok(())
    }
}

/// Topic set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A request failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The brokers refused us for a reason waiting can't fix: authentication or TLS (a
    /// wrong password, a CA that didn't sign the broker's certificate).
    #[error("the Kafka brokers {brokers} (KAFKA_BROKERS) refused the connection: {reason}")]
    Refused {
        /// `KAFKA_BROKERS`.
        brokers: String,
        /// librdkafka's report.
        reason: String,
    },
    /// No broker could be used, and librdkafka said why.
    #[error("cannot use the Kafka brokers {brokers} (KAFKA_BROKERS): {reason}")]
    Unreachable {
        /// `KAFKA_BROKERS`.
        brokers: String,
        /// librdkafka's last error report (authentication, TLS, connection).
        reason: String,
    },
}

/// A client context that keeps librdkafka's last error report, so that a request that
/// failed can say why (a wrong password, a CA that doesn't sign the broker's certificate)
/// instead of only that it timed out.
#[derive(Debug, Default)]
pub struct Diagnosing {
    last: std::sync::Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl Diagnosing {
    /// The last report, as text.
    pub fn last(&self) -> Option<String> {
        self.lock().as_ref().map(|(_, reason)| reason.clone())
    }

    /// Whether the last report is one that waiting can't fix: authentication or TLS.
    pub fn hopeless(&self) -> bool {
        self.lock().as_ref().is_some_and(|(code, _)| {
            matches!(
                code,
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::SSL
            )
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(RDKafkaErrorCode, String)>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for Diagnosing {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!("librdkafka: {error}: {reason}");
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        *self.lock() = Some((code, reason.to_string()));
    }
}

impl rdkafka::consumer::ConsumerContext for Diagnosing {}

/// What the cluster says of each wanted topic: whether it exists. Asks in 5-second
/// attempts for up to 30 s, and stops early once librdkafka reported a failure waiting
/// can't fix (authentication, TLS).
fn describe(
    consumer: &rdkafka::consumer::BaseConsumer<Diagnosing>,
    topics: &[String],
) -> Result<Vec<(String, bool)>, KafkaError> {
    use rdkafka::consumer::Consumer;
    let client = consumer.client();
    let fetch = |topic: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match client.fetch_metadata(Some(topic), Duration::from_secs(5)) {
                Ok(metadata) => return Ok(metadata),
                Err(e) => {
                    // librdkafka hands its error reports over when the client is polled
                    // (the consumer has no assignment: this only serves events).
                    let _ = consumer.poll(Duration::from_millis(200));
                    if client.context().hopeless() || std::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                }
            }
        }
    };
    topics
        .iter()
        .map(|topic| {
            let metadata = fetch(topic)?;
            let exists = metadata
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
            Ok((topic.clone(), exists))
        })
        .collect()
}

/// The wanted topics the description doesn't show as existing, each once, in order.
fn missing_topics<'a>(wanted: &[&'a str], described: &[(String, bool)]) -> Vec<&'a str> {
    let mut missing: Vec<&str> = Vec::new();
    for topic in wanted {
        let exists = described.iter().any(|(t, e)| t == topic && *e);
        if !exists && !missing.contains(topic) {
            missing.push(topic);
        }
    }
    missing
}

fn parse_mechanism(value: Option<&str>) -> Result<SaslMechanism, ConfigError> {
    match value.map(|v| v.trim().to_ascii_uppercase()).as_deref() {
        None | Some("SCRAM-SHA-256") => Ok(SaslMechanism::ScramSha256),
        Some("SCRAM-SHA-512") => Ok(SaslMechanism::ScramSha512),
        Some("PLAIN") => Ok(SaslMechanism::Plain),
        Some(other) => Err(ConfigError::new(
            "KAFKA_SASL_MECHANISM",
            format!("`{other}` is not one of SCRAM-SHA-256, SCRAM-SHA-512, PLAIN"),
        )),
    }
}

fn parse_ca_cert(value: String) -> Result<CaCert, ConfigError> {
    let value = value.trim();
    if value.contains("-----BEGIN") {
        // Platforms often flatten newlines in variables to a literal `\n`.
        return Ok(CaCert::Pem(value.replace("\\n", "\n")));
    }
    let path = PathBuf::from(value);
    match std::fs::read_to_string(&path) {
        Ok(text) if text.contains("-----BEGIN") => Ok(CaCert::Path(path)),
        Ok(_) => Err(ConfigError::new(
            "KAFKA_CA_CERT",
            format!("{} holds no PEM certificate", path.display()),
        )),
        Err(e) => Err(ConfigError::new(
            "KAFKA_CA_CERT",
            format!(
                "is neither PEM text nor a readable file ({}: {e})",
                path.display()
            ),
        )),
    }
}

/// Kafka headers from name/value pairs (what `EventMessage::headers` gives).
pub fn owned_headers(pairs: &[(&str, String)]) -> rdkafka::message::OwnedHeaders {
    pairs.iter().fold(
        rdkafka::message::OwnedHeaders::new_with_capacity(pairs.len()),
        |headers, (key, value)| {
            headers.insert(rdkafka::message::Header {
                key,
                value: Some(value.as_bytes()),
            })
        },
    )
}

/// A message header's value as text.
pub fn header<M: rdkafka::Message + ?Sized>(message: &M, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A message header's value as text, borrowed; `None` when absent or not UTF-8.
pub fn header_str<'m, M: rdkafka::Message + ?Sized>(message: &'m M, name: &str) -> Option<&'m str> {
    use rdkafka::message::Headers;
    let value = message.headers()?.iter().find(|h| h.key == name)?.value?;
    std::str::from_utf8(value).ok()
}

/// One partition of a topic and the offsets it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// The partition.
    pub partition: i32,
    /// Its low watermark: the oldest offset retention kept.
    pub low: i64,
    /// Its high watermark: the offset the next message will get.
    pub high: i64,
}

impl Extent {
    /// Where a consumer at `committed` reads next: the low watermark without a committed
    /// offset (`auto.offset.reset=earliest`) or past one retention already removed.
    pub fn position(&self, committed: Option<i64>) -> i64 {
        committed.unwrap_or(self.low).max(self.low)
    }

    /// Messages a consumer at `committed` has yet to read.
    pub fn behind(&self, committed: Option<i64>) -> u64 {
        (self.high - self.position(committed)).max(0) as u64
    }
}

/// The partitions of `topic` with their watermarks (none when the cluster doesn't have
/// the topic). Blocks: call it from a blocking thread.
pub fn extents<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<Extent>, KafkaError> {
    use rdkafka::consumer::Consumer;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions
        .into_iter()
        .map(|partition| {
            let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
            Ok(Extent {
                partition,
                low,
                high,
            })
        })
        .collect()
}

/// The consumer group's committed offset in each of `partitions` of `topic` (`None` where
/// it has none). The consumer needn't join the group: this is a plain offset fetch.
/// Blocks: call it from a blocking thread.
pub fn committed<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
    partitions: &[Extent],
    timeout: Duration,
) -> Result<std::collections::HashMap<i32, Option<i64>>, KafkaError> {
    use rdkafka::consumer::Consumer;
    let mut list = rdkafka::TopicPartitionList::new();
    for e in partitions {
        list.add_partition(topic, e.partition);
    }
    let committed = consumer.committed_offsets(list, timeout)?;
    Ok(partitions
        .iter()
        .map(|e| {
            let offset =
                committed
                    .find_partition(topic, e.partition)
                    .and_then(|p| match p.offset() {
                        rdkafka::Offset::Offset(o) => Some(o),
                        _ => None,
                    });
            (e.partition, offset)
        })
        .collect())
}

/// Asks the cluster for its metadata and reports whether at least one broker answered
/// within `timeout`. This blocks (librdkafka's call is synchronous): call it from
/// `spawn_blocking`.
pub fn broker_reachable<C: ClientContext>(client: &Client<C>, timeout: Duration) -> bool {
    client
        .fetch_metadata(None, timeout)
        .map(|m| !m.brokers().is_empty())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<KafkaSettings, ConfigError> {
        let vars = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        KafkaSettings::from_raw(crate::config::from_iter(vars)?)
    }

    #[test]
    fn plaintext_by_default() {
        let s = settings(&[("KAFKA_BROKERS", "a:9092,b:9092")]).unwrap();
        let c = s.client_config();
        assert_eq!(c.get("bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(c.get("security.protocol"), Some("plaintext"));
        assert_eq!(c.get("sasl.mechanism"), None);
        assert!(s.create_topics);
        assert_eq!(s.topic_partitions, 6);
        assert_eq!(s.replication_factor, None);
    }

    #[test]
    fn reliable_producers_wait_for_every_replica_and_never_write_twice() {
        let s = settings(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("KAFKA_USERNAME", "u"),
            ("KAFKA_PASSWORD", "p"),
        ])
        .unwrap();
        let c = s.reliable_producer_config("me", Duration::from_secs(30), 2_000_000);
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("client.id"), Some("me"));
        assert_eq!(c.get("message.timeout.ms"), Some("30000"));
        assert_eq!(c.get("message.max.bytes"), Some("2000000"));
        // On top of the connection settings, not instead of them.
        assert_eq!(c.get("sasl.username"), Some("u"));
    }

    #[test]
    fn service_uri_is_the_other_name() {
        let s = settings(&[("KAFKA_SERVICE_URI", "kafka.example:25073")]).unwrap();
        assert_eq!(s.brokers, "kafka.example:25073");
        let err = settings(&[]).unwrap_err();
        assert_eq!(err.variable, "KAFKA_BROKERS");
    }

    #[test]
    fn sasl_scram_over_tls_with_inline_pem() {
        let pem = "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----";
        let s = settings(&[
            ("KAFKA_BROKERS", "k:25073"),
            ("KAFKA_USERNAME", "doadmin"),
            ("KAFKA_PASSWORD", "s3cr3t-pw"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("KAFKA_CA_CERT", pem),
        ])
        .unwrap();
        let c = s.client_config();
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.username"), Some("doadmin"));
        assert_eq!(c.get("sasl.password"), Some("s3cr3t-pw"));
        assert_eq!(
            c.get("ssl.ca.pem"),
            Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----")
        );
        // Neither the settings nor the client config print the password.
        assert!(!format!("{s:?}").contains("s3cr3t-pw"));
        assert!(!format!("{c:?}").contains("s3cr3t-pw"));
    }

    #[test]
    fn sasl_defaults_to_scram_sha_256_without_tls() {
        let s = settings(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("KAFKA_USERNAME", "u"),
            ("KAFKA_PASSWORD", "p"),
        ])
        .unwrap();
        let c = s.client_config();
        assert_eq!(c.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
    }

    #[test]
    fn plain_mechanism_and_ca_file() {
        let dir = std::env::temp_dir().join(format!("ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let s = settings(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("KAFKA_USERNAME", "u"),
            ("KAFKA_PASSWORD", "p"),
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
            ("KAFKA_CA_CERT", path.to_str().unwrap()),
        ])
        .unwrap();
        let c = s.client_config();
        assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(c.get("ssl.ca.location"), path.to_str());
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tls_without_sasl() {
        let s = settings(&[
            ("KAFKA_BROKERS", "k:9093"),
            (
                "KAFKA_CA_CERT",
                "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----",
            ),
        ])
        .unwrap();
        assert_eq!(s.client_config().get("security.protocol"), Some("ssl"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("KAFKA_BROKERS", "k:9092"), ("KAFKA_USERNAME", "u")],
                "KAFKA_PASSWORD",
            ),
            (
                &[("KAFKA_BROKERS", "k:9092"), ("KAFKA_PASSWORD", "p")],
                "KAFKA_USERNAME",
            ),
            (
                &[
                    ("KAFKA_BROKERS", "k:9092"),
                    ("KAFKA_SASL_MECHANISM", "GSSAPI"),
                ],
                "KAFKA_SASL_MECHANISM",
            ),
            (
                &[
                    ("KAFKA_BROKERS", "k:9092"),
                    ("KAFKA_CA_CERT", "/nonexistent/ca.pem"),
                ],
                "KAFKA_CA_CERT",
            ),
            (
                &[("KAFKA_BROKERS", "k:9092"), ("KAFKA_TOPIC_PARTITIONS", "0")],
                "KAFKA_TOPIC_PARTITIONS",
            ),
            (
                &[
                    ("KAFKA_BROKERS", "k:9092"),
                    ("KAFKA_TOPIC_PARTITIONS", "six"),
                ],
                "KAFKA_TOPIC_PARTITIONS",
            ),
            (
                &[
                    ("KAFKA_BROKERS", "k:9092"),
                    ("KAFKA_REPLICATION_FACTOR", "0"),
                ],
                "KAFKA_REPLICATION_FACTOR",
            ),
            (
                &[
                    ("KAFKA_BROKERS", "k:9092"),
                    ("KAFKA_CREATE_TOPICS", "maybe"),
                ],
                "KAFKA_CREATE_TOPICS",
            ),
            (&[("KAFKA_BROKERS", "k:9092,")], "KAFKA_BROKERS"),
        ];
        for (vars, variable) in cases {
            let err = settings(vars).unwrap_err();
            assert_eq!(&err.variable, variable, "{vars:?}: {err}");
        }
    }

    #[test]
    fn a_consumer_reads_on_from_its_offset_or_from_what_retention_kept() {
        let e = Extent {
            partition: 0,
            low: 4,
            high: 10,
        };
        assert_eq!((e.position(Some(7)), e.behind(Some(7))), (7, 3));
        assert_eq!((e.position(Some(10)), e.behind(Some(10))), (10, 0));
        // No committed offset: everything retention kept.
        assert_eq!((e.position(None), e.behind(None)), (4, 6));
        // An offset retention already removed counts from what is left.
        assert_eq!((e.position(Some(2)), e.behind(Some(2))), (4, 6));
        assert_eq!(e.behind(Some(12)), 0);
    }

    #[test]
    fn only_topics_not_described_as_existing_are_created() {
        let described = vec![("a".to_string(), true), ("b".to_string(), false)];
        assert_eq!(
            missing_topics(&["a", "b", "c", "b"], &described),
            ["b", "c"]
        );
        assert!(missing_topics(&["a"], &described).is_empty());
    }

    #[test]
    fn password_never_in_errors() {
        let err =
            settings(&[("KAFKA_BROKERS", "k:9092"), ("KAFKA_PASSWORD", "topsecret")]).unwrap_err();
        assert!(!err.to_string().contains("topsecret"));
    }
}
