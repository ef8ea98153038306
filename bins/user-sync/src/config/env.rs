//! The variables of the table that `Config`, `QueueConfig` and `PublishConfig` read,
//! with the contract's defaults.

use serde::Deserialize;

/// `HEALTH_PORT` when unset.
pub const DEFAULT_HEALTH_PORT: u16 = 8789;

/// The raw variables, before validation.
#[derive(Debug, Deserialize)]
pub(super) struct Env {
    #[serde(default = "default_group_id")]
    pub(super) kafka_group_id: String,
    #[serde(default = "default_topic_users")]
    pub(super) kafka_topic_users: String,
    #[serde(default = "default_topic_organizations")]
    pub(super) kafka_topic_organizations: String,
    #[serde(default = "default_topic_sessions")]
    pub(super) kafka_topic_sessions: String,
    pub(super) kafka_dlq_topic: Option<String>,
    pub(super) kafka_dlq_topic_organizations: Option<String>,
    pub(super) kafka_dlq_topic_sessions: Option<String>,
    #[serde(default = "default_topic_billing")]
    pub(super) kafka_topic_billing: String,
    pub(super) kafka_dlq_topic_billing: Option<String>,
    pub(super) sync_entities: Option<String>,
    pub(super) sync_batch_size: Option<String>,
    pub(super) link_collection: Option<String>,
    pub(super) link_email_field: Option<String>,
    pub(super) link_clerk_id_field: Option<String>,
    #[serde(default = "default_health_port")]
    pub(super) health_port: u16,
    pub(super) log_format: Option<String>,
}

fn default_group_id() -> String {
    "user-sync".into()
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
fn default_health_port() -> u16 {
    DEFAULT_HEALTH_PORT
}
