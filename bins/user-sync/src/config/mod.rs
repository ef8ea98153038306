//! user-sync's settings: the contract's variable table, validated once at start-up.

use std::collections::HashMap;

use common::kafka::KafkaSettings;
use common::{ConfigError, LogFormat};

use crate::domain::Entity;

mod clerk;
mod env;
mod link;
mod mongo;

pub use clerk::{ClerkConfig, PublishConfig};
pub(crate) use link::LinkConfig;
pub use mongo::MongoConfig;

use env::Env;
pub use env::DEFAULT_HEALTH_PORT;
use link::link_config;

/// One topic user-sync consumes, and where its poison goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicConfig {
    pub(crate) topic: String,
    pub(crate) dlq: String,
}

/// What `SYNC_ENTITIES` names: a topic each, and the kinds of document it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Users,
    /// Organizations, their memberships and their invitations.
    Organizations,
    Sessions,
    /// Clerk Billing: subscriptions, their items and payment attempts.
    Billing,
}

impl Stream {
    /// Every stream, in `SYNC_ENTITIES` order.
    const ALL: [Stream; 4] = [
        Stream::Users,
        Stream::Organizations,
        Stream::Sessions,
        Stream::Billing,
    ];

    /// The streams kept when `SYNC_ENTITIES` is unset (billing is opt-in: an instance
    /// without Clerk Billing has no use for its topic).
    const DEFAULT: [Stream; 3] = [Stream::Users, Stream::Organizations, Stream::Sessions];

    fn name(self) -> &'static str {
        match self {
            Stream::Users => "users",
            Stream::Organizations => "organizations",
            Stream::Sessions => "sessions",
            Stream::Billing => "billing",
        }
    }

    /// The kinds of document its topic writes.
    fn kinds(self) -> &'static [Entity] {
        match self {
            Stream::Users => &[Entity::User],
            Stream::Organizations => {
                &[Entity::Organization, Entity::Membership, Entity::Invitation]
            }
            Stream::Sessions => &[Entity::Session],
            Stream::Billing => &[
                Entity::Subscription,
                Entity::SubscriptionItem,
                Entity::PaymentAttempt,
            ],
        }
    }
}

/// Default batch size: what one poll hands over at most.
const DEFAULT_BATCH_SIZE: usize = 500;

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The broker, the group, the topics and the kinds of document kept.
    pub(crate) queue: QueueConfig,
    /// `SYNC_BATCH_SIZE`: most messages applied together.
    pub(crate) batch_size: usize,
    /// MongoDB.
    pub mongo: MongoConfig,
    /// `HEALTH_PORT`
    pub health_port: u16,
    /// `LOG_FORMAT`
    pub log_format: LogFormat,
    /// `LINK_COLLECTION` and the fields: linking pre-registered records (off when unset).
    pub(crate) link: Option<LinkConfig>,
}

impl Config {
    /// Each consumed topic with its DLQ.
    pub(crate) fn dlqs(&self) -> HashMap<String, String> {
        self.queue
            .topics
            .iter()
            .map(|t| (t.topic.clone(), t.dlq.clone()))
            .collect()
    }

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
        let queue = QueueConfig::from_vars(vars.clone())?;
        let mongo = MongoConfig::from_vars(vars)?;
        let batch_size = match env.sync_batch_size.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_BATCH_SIZE,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=10_000).contains(&n) => n,
                _ => {
                    return Err(ConfigError::new(
                        "SYNC_BATCH_SIZE",
                        "must be a whole number from 1 to 10000",
                    ))
                }
            },
        };

        let link = link_config(&env, &mongo)?;
        Ok(Config {
            link,
            queue,
            batch_size,
            mongo,
            health_port: env.health_port,
            log_format: LogFormat::parse(env.log_format.as_deref())?,
        })
    }
}

/// The Kafka side of the settings: the broker, the consumer group and the topics consumed
/// with their DLQs. All that `user-sync dlq` needs (it doesn't touch MongoDB).
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Broker connection and topic creation.
    pub(crate) kafka: KafkaSettings,
    /// `KAFKA_GROUP_ID`
    pub(crate) group_id: String,
    /// The topics consumed (`SYNC_ENTITIES`), each with its DLQ.
    pub(crate) topics: Vec<TopicConfig>,
    /// The kinds of document kept.
    pub entities: Vec<Entity>,
}

impl QueueConfig {
    /// Reads and validates the Kafka variables, `KAFKA_GROUP_ID` and `SYNC_ENTITIES`.
    pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let env: Env = common::config::from_iter(vars.clone())?;
        let kafka = KafkaSettings::from_raw(common::config::from_iter(vars)?)?;
        if env.kafka_group_id.trim().is_empty() {
            return Err(ConfigError::new("KAFKA_GROUP_ID", "must not be empty"));
        }
        let mut topics = Vec::new();
        let mut entities = Vec::new();
        for named in synced(env.sync_entities.as_deref())? {
            let (topic, dlq) = match named {
                Stream::Users => (&env.kafka_topic_users, &env.kafka_dlq_topic),
                Stream::Organizations => (
                    &env.kafka_topic_organizations,
                    &env.kafka_dlq_topic_organizations,
                ),
                Stream::Sessions => (&env.kafka_topic_sessions, &env.kafka_dlq_topic_sessions),
                Stream::Billing => (&env.kafka_topic_billing, &env.kafka_dlq_topic_billing),
            };
            topics.push(TopicConfig {
                topic: topic.clone(),
                dlq: dlq.clone().unwrap_or_else(|| format!("{topic}.dlq")),
            });
            entities.extend_from_slice(named.kinds());
        }
        let mut names: Vec<&str> = topics
            .iter()
            .flat_map(|t| [t.topic.as_str(), t.dlq.as_str()])
            .collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(ConfigError::new(
                "SYNC_ENTITIES",
                "needs a different topic (and DLQ topic) for each of users, organizations, \
                 sessions and billing (see KAFKA_TOPIC_* and KAFKA_DLQ_TOPIC*)",
            ));
        }
        Ok(QueueConfig {
            kafka,
            group_id: env.kafka_group_id,
            topics,
            entities,
        })
    }
}

/// Reads `SYNC_ENTITIES` (default: users, organizations, sessions), in the order given,
/// each once.
fn synced(value: Option<&str>) -> Result<Vec<Stream>, ConfigError> {
    let value = value.map(str::trim).filter(|v| !v.is_empty());
    let Some(value) = value else {
        return Ok(Stream::DEFAULT.to_vec());
    };
    let mut named = Vec::new();
    for name in value.split(',').map(str::trim) {
        let Some(stream) = Stream::ALL.into_iter().find(|s| s.name() == name) else {
            return Err(ConfigError::new(
                "SYNC_ENTITIES",
                format!("`{name}` is not one of users, organizations, sessions, billing"),
            ));
        };
        if !named.contains(&stream) {
            named.push(stream);
        }
    }
    Ok(named)
}

#[cfg(test)]
mod tests {
    use common::ExposeSecret;

    use super::clerk::DEFAULT_CLERK_API_URL;
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn webhook_events_keep_their_payload_unless_told_not_to() {
        let uri = ("MONGODB_URI", "mongodb://127.0.0.1:27017/");
        let keeps = |value: Option<&str>| {
            let mut vars = vec![uri];
            vars.extend(value.map(|v| ("WEBHOOK_EVENTS_PAYLOAD", v)));
            MongoConfig::from_vars(pairs(&vars)).map(|c| c.events_payload)
        };
        assert!(keeps(None).unwrap());
        assert!(keeps(Some("true")).unwrap());
        assert!(!keeps(Some("false")).unwrap());
        let e = keeps(Some("no")).unwrap_err();
        assert!(e.to_string().contains("WEBHOOK_EVENTS_PAYLOAD"), "{e}");
    }

    #[test]
    fn webhook_events_are_kept_for_good_unless_a_ttl_in_days_is_set() {
        let ttl = |value: Option<&str>| {
            let mut vars = vec![("MONGODB_URI", "mongodb://127.0.0.1:27017/")];
            vars.extend(value.map(|v| ("WEBHOOK_EVENTS_TTL_DAYS", v)));
            MongoConfig::from_vars(pairs(&vars)).map(|c| c.events_ttl_days)
        };
        assert_eq!(ttl(None).unwrap(), None);
        assert_eq!(ttl(Some("")).unwrap(), None);
        assert_eq!(ttl(Some(" 30 ")).unwrap(), Some(30));
        assert_eq!(ttl(Some("24855")).unwrap(), Some(24_855));
        for bad in ["0", "-1", "1.5", "30d", "24856"] {
            let e = ttl(Some(bad)).unwrap_err();
            assert_eq!(e.variable, "WEBHOOK_EVENTS_TTL_DAYS", "{bad}: {e}");
        }
    }

    #[test]
    fn the_clerk_key_is_required_trimmed_and_never_shown() {
        let e = ClerkConfig::from_vars(pairs(&[])).unwrap_err();
        assert!(e.to_string().contains("CLERK_SECRET_KEY"), "{e}");
        let c = ClerkConfig::from_vars(pairs(&[("CLERK_SECRET_KEY", "sk_test_abc\n")])).unwrap();
        assert_eq!(c.secret_key.expose_secret(), "sk_test_abc");
        assert_eq!(c.api_url, DEFAULT_CLERK_API_URL);
        let e = ClerkConfig::from_vars(pairs(&[("CLERK_SECRET_KEY", "sk_test a\tb")])).unwrap_err();
        assert!(!e.to_string().contains("sk_test"), "{e}");
        let c = ClerkConfig::from_vars(pairs(&[
            ("CLERK_SECRET_KEY", "sk_test_abc"),
            ("CLERK_API_URL", "http://127.0.0.1:9/v1/"),
        ]))
        .unwrap();
        assert_eq!(c.api_url, "http://127.0.0.1:9/v1");
        let e = ClerkConfig::from_vars(pairs(&[
            ("CLERK_SECRET_KEY", "sk_test_abc"),
            ("CLERK_API_URL", "api.clerk.com"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("CLERK_API_URL"), "{e}");
    }

    #[test]
    fn linking_is_off_unless_a_collection_is_named_and_checks_its_fields() {
        let base = [("KAFKA_BROKERS", "k:9092"), ("MONGODB_URI", "mongodb://m")];
        let with = |extra: &[(&str, &str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            config(&all)
        };
        assert_eq!(with(&[]).unwrap().link, None);
        let c = with(&[("LINK_COLLECTION", "mentorados")]).unwrap();
        assert_eq!(
            c.link,
            Some(LinkConfig {
                collection: "mentorados".into(),
                email_field: "email".into(),
                id_field: "clerkId".into(),
            })
        );
        for (extra, variable) in [
            (&[("LINK_EMAIL_FIELD", "mail")][..], "LINK_EMAIL_FIELD"),
            (&[("LINK_COLLECTION", "users")][..], "LINK_COLLECTION"),
            (
                &[("LINK_COLLECTION", "webhook_events")][..],
                "LINK_COLLECTION",
            ),
            (
                &[("LINK_COLLECTION", "m"), ("LINK_EMAIL_FIELD", "$where")][..],
                "LINK_EMAIL_FIELD",
            ),
            (
                &[("LINK_COLLECTION", "m"), ("LINK_CLERK_ID_FIELD", "a..b")][..],
                "LINK_CLERK_ID_FIELD",
            ),
            (
                &[("LINK_COLLECTION", "m"), ("LINK_CLERK_ID_FIELD", "email")][..],
                "LINK_CLERK_ID_FIELD",
            ),
        ] {
            let e = with(extra).unwrap_err();
            assert_eq!(e.variable, variable, "{extra:?}: {e}");
        }
    }

    #[test]
    fn backfill_publishes_to_the_consumed_topics_whatever_sync_entities_says() {
        let c = PublishConfig::from_vars(pairs(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("SYNC_ENTITIES", "users"),
            ("KAFKA_TOPIC_ORGANIZATIONS", "orgs"),
        ]))
        .unwrap();
        assert_eq!(
            (c.users_topic.as_str(), c.organizations_topic.as_str()),
            ("clerk-user-events", "orgs")
        );
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = config(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("MONGODB_URI", "mongodb://m:27017"),
        ])
        .unwrap();
        assert_eq!(c.queue.group_id, "user-sync");
        let topic = |t: &str, d: &str| TopicConfig {
            topic: t.into(),
            dlq: d.into(),
        };
        assert_eq!(
            c.queue.topics,
            vec![
                topic("clerk-user-events", "clerk-user-events.dlq"),
                topic("clerk-organization-events", "clerk-organization-events.dlq"),
                topic("clerk-session-events", "clerk-session-events.dlq"),
            ]
        );
        assert_eq!(
            c.queue.entities,
            [
                Entity::User,
                Entity::Organization,
                Entity::Membership,
                Entity::Invitation,
                Entity::Session
            ],
            "billing is opt-in"
        );
        assert_eq!(c.batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(c.mongo.memberships_collection, "organizationMemberships");
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
    fn sync_entities_picks_the_topics() {
        let c = config(&[
            ("KAFKA_BROKERS", "k"),
            ("MONGODB_URI", "mongodb://m"),
            ("SYNC_ENTITIES", " sessions ,users"),
            ("KAFKA_DLQ_TOPIC_SESSIONS", "s-dlq"),
        ])
        .unwrap();
        let names: Vec<&str> = c.queue.topics.iter().map(|t| t.dlq.as_str()).collect();
        assert_eq!(names, ["s-dlq", "clerk-user-events.dlq"]);
        assert_eq!(c.queue.entities, [Entity::Session, Entity::User]);
        let c = config(&[
            ("KAFKA_BROKERS", "k"),
            ("MONGODB_URI", "mongodb://m"),
            ("SYNC_ENTITIES", "billing"),
            ("KAFKA_TOPIC_BILLING", "b"),
        ])
        .unwrap();
        assert_eq!(
            c.queue.topics,
            [TopicConfig {
                topic: "b".into(),
                dlq: "b.dlq".into()
            }]
        );
        assert_eq!(
            c.queue.entities,
            [
                Entity::Subscription,
                Entity::SubscriptionItem,
                Entity::PaymentAttempt
            ]
        );
        let err = config(&[
            ("KAFKA_BROKERS", "k"),
            ("MONGODB_URI", "mongodb://m"),
            ("SYNC_ENTITIES", "users,invitations"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "SYNC_ENTITIES");
        assert!(err.to_string().contains("invitations"));
        let err = config(&[
            ("KAFKA_BROKERS", "k"),
            ("MONGODB_URI", "mongodb://m"),
            ("KAFKA_TOPIC_SESSIONS", "clerk-user-events"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "SYNC_ENTITIES");
        for bad in ["0", "x", "20000"] {
            let err = config(&[
                ("KAFKA_BROKERS", "k"),
                ("MONGODB_URI", "mongodb://m"),
                ("SYNC_BATCH_SIZE", bad),
            ])
            .unwrap_err();
            assert_eq!(err.variable, "SYNC_BATCH_SIZE");
        }
        let err = config(&[
            ("KAFKA_BROKERS", "k"),
            ("MONGODB_URI", "mongodb://m"),
            ("MONGODB_SESSIONS_COLLECTION", "users"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("different collections"));
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
