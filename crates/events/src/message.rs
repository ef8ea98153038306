//! The normalized Kafka message, version [`SCHEMA_VERSION`].
//!
//! Value: one JSON [`EventMessage`]. Key: [`EventMessage::subject_id`]. Headers:
//! [`HEADER_EVENT_ID`], [`HEADER_EVENT_TYPE`], [`HEADER_SCHEMA_VERSION`]. A consumer checks
//! `schema_version` before anything else, so a future version is refused, never misread.
//!
//! The value's JSON Schema is generated from these types ([`EventMessage::json_schema`]) and
//! checked in as `schema/message.v1.schema.json` (tests/schema.rs keeps the two equal);
//! `schema/asyncapi.yaml` describes the topics, keys and headers around it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The version of [`EventMessage`] this crate writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Kafka header carrying the event id (the `svix-id`).
pub const HEADER_EVENT_ID: &str = "event-id";
/// Kafka header carrying the Clerk event type.
pub const HEADER_EVENT_TYPE: &str = "event-type";
/// Kafka header carrying [`SCHEMA_VERSION`] as decimal text.
pub const HEADER_SCHEMA_VERSION: &str = "schema-version";
/// Kafka header carrying the message's [`Origin`] (`webhook`, `backfill`, `reconcile`).
pub const HEADER_EVENT_ORIGIN: &str = "event-origin";

/// CloudEvents' Kafka binary-mode headers (CloudEvents 1.0, Kafka protocol binding), beside
/// ours, so tools that speak CloudEvents read the messages as events: `ce_id` (the event
/// id), `ce_type` (Clerk's type), `ce_source` (`urn:clerk:instance:<instance_id>`, or
/// `…:unknown`), `ce_subject` (the subject id), `ce_time` (the event time, RFC 3339),
/// `ce_dataschema` ([`SCHEMA_ID`], the JSON Schema of the value), `ce_specversion` (`1.0`)
/// and `content-type` (`application/json`: the value, our message, is the event's data).
pub const CLOUDEVENTS_HEADERS: [&str; 8] = [
    "ce_specversion",
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_subject",
    "ce_time",
    "ce_dataschema",
    "content-type",
];

/// The `$id` of the message's JSON Schema ([`EventMessage::json_schema`], checked in as
/// `schema/message.v1.schema.json`), and the CloudEvents `dataschema` of every message.
/// Version 1's: additive fields keep it, a new `schema_version` gets a new file and id.
pub const SCHEMA_ID: &str =
    "https://raw.githubusercontent.com/clerk-sync/clerk-sync/main/schema/message.v1.schema.json";

/// Where a message came from. Every origin goes through the same order rules; the origin
/// is there for people reading `webhook_events` and the topics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A Svix-signed webhook, through clerk-sync. Messages written before this field existed
    /// read as webhooks.
    #[default]
    Webhook,
    /// A snapshot of an object read from Clerk's Backend API by `user-sync backfill`.
    Backfill,
    /// A deletion published by `user-sync reconcile` for an object Clerk no longer has.
    Reconcile,
}

impl Origin {
    /// The name used in the message, the header and `webhook_events`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Webhook => "webhook",
            Origin::Backfill => "backfill",
            Origin::Reconcile => "reconcile",
        }
    }

    /// The origin named `name` (as [`Origin::as_str`] writes it).
    pub fn from_name(name: &str) -> Option<Origin> {
        [Origin::Webhook, Origin::Backfill, Origin::Reconcile]
            .into_iter()
            .find(|o| o.as_str() == name)
    }
}

/// One Clerk event, normalized. This is the Kafka message value.
// The schema also says what `decode` checks beyond the shape: the version, non-empty ids,
// and a user record for `user.*` (not that its id is the subject's: JSON Schema can't).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(extend(
    "$id" = SCHEMA_ID,
    "if" = {"properties": {"type": {"type": "string", "pattern": "^user\\."}}},
    "then" = {"properties": {"record": {"properties": {"kind": {"const": "user"}}}}}
))]
pub struct EventMessage {
    /// The format's version: [`SCHEMA_VERSION`] for messages written by this crate. A reader
    /// refuses a version it doesn't know.
    #[schemars(extend("const" = SCHEMA_VERSION))]
    pub schema_version: u32,
    /// The `svix-id` of the delivery: the same for every retry, so it is the idempotency key.
    #[schemars(length(min = 1))]
    pub event_id: String,
    /// The Clerk event type, such as `user.updated`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the change happened, in milliseconds since the epoch (see
    /// [`crate::normalize`] for the rule).
    pub event_time: i64,
    /// The Clerk instance (`ins_…`), when the envelope names it.
    pub instance_id: Option<String>,
    /// What the event is about, and the Kafka key: the user id for `user.*` and `session.*`,
    /// the organization id for organization events, the payer's user or organization id for
    /// billing events.
    #[schemars(length(min = 1))]
    pub subject_id: String,
    /// The fields consumers use, in one shape whatever Clerk's payload version.
    pub record: Record,
    /// The Clerk `data` object exactly as received: the same bytes, whatever its size or
    /// nesting depth (a parsed tree would refuse some and reorder keys). The one exception:
    /// `email.created`/`sms.created` with their one-time codes redacted
    /// ([`crate::redact`]).
    pub data: Box<RawValue>,
    /// Where the message came from (absent in messages written before it existed: webhook).
    #[serde(default)]
    pub origin: Origin,
    /// The envelope's `event_attributes` exactly as received (Clerk's
    /// `{"http_request":{"client_ip","user_agent"}}` for events a request caused), when it
    /// has them. Absent from snapshots and from messages written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_attributes: Option<Box<RawValue>>,
}

impl PartialEq for EventMessage {
    fn eq(&self, other: &Self) -> bool {
        self.schema_version == other.schema_version
            && self.event_id == other.event_id
            && self.event_type == other.event_type
            && self.event_time == other.event_time
            && self.instance_id == other.instance_id
            && self.subject_id == other.subject_id
            && self.record == other.record
            && self.data.get() == other.data.get()
            && self.origin == other.origin
            && self.event_attributes.as_deref().map(RawValue::get)
                == other.event_attributes.as_deref().map(RawValue::get)
    }
}

/// The normalized part of a message, by kind of object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// `user.*`, including `user.deleted` (then `deleted` is true and only `id` is known).
    User(UserRecord),
    /// `session.*`.
    Session {
        /// `sess_…`
        id: String,
        /// `user_…`
        user_id: String,
        /// `active`, `ended`, `revoked`, … when present.
        status: Option<String>,
    },
    /// `organizationMembership.*`.
    OrganizationMembership {
        /// `orgmem_…`
        id: String,
        /// `org_…`
        organization_id: String,
        /// The member, when present.
        user_id: Option<String>,
        /// `org:admin`, … when present.
        role: Option<String>,
    },
    /// `organization.*`, `organizationInvitation.*`, `organizationDomain.*`.
    Organization {
        /// The object's own id.
        id: String,
        /// `org_…`
        organization_id: String,
        /// True for `*.deleted`.
        deleted: bool,
    },
    /// Clerk Billing: `subscription.*`, `subscriptionItem.*`, `paymentAttempt.*`. Keyed by
    /// the payer (the user or organization that pays), so one customer's events keep their
    /// order.
    Billing {
        /// The object's own id (`csub_…`, `csub_item_…`, `pa_…`).
        id: String,
        /// The paying user's or organization's Clerk id (`user_…` or `org_…`), when the
        /// payer names one (Clerk sends `""` for the one that doesn't apply).
        payer_id: Option<String>,
        /// `user` or `organization`, with `payer_id`.
        payer_type: Option<PayerType>,
        /// The payer's billing id (`cpayer_…`), when present.
        clerk_payer_id: Option<String>,
    },
    /// An event type we don't know; everything is in `data`.
    Other {
        /// `data.id`, when it is a string.
        id: Option<String>,
    },
}

/// Who pays for a Clerk Billing subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayerType {
    /// A user (`payer.user_id`).
    User,
    /// An organization (`payer.organization_id`).
    Organization,
}

impl PayerType {
    /// `user` or `organization`, as the message and the documents write it.
    pub fn as_str(self) -> &'static str {
        match self {
            PayerType::User => "user",
            PayerType::Organization => "organization",
        }
    }
}

/// A Clerk user, normalized.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserRecord {
    /// `user_…`
    pub id: String,
    /// The primary email address, if the user has one.
    pub primary_email: Option<String>,
    /// Whether the primary email address is verified.
    pub email_verified: bool,
    /// Every email address, primary first.
    pub email_addresses: Vec<EmailAddress>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Username.
    pub username: Option<String>,
    /// Avatar URL.
    pub image_url: Option<String>,
    /// Milliseconds since the epoch.
    pub last_sign_in_at: Option<i64>,
    /// Milliseconds since the epoch.
    pub created_at: Option<i64>,
    /// Milliseconds since the epoch.
    pub updated_at: Option<i64>,
    /// The application's own id for the user.
    pub external_id: Option<String>,
    /// True for `user.deleted`.
    pub deleted: bool,
}

/// One email address of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EmailAddress {
    /// `idn_…`
    pub id: String,
    /// The address.
    pub email: String,
    /// Whether its verification status is `verified`.
    pub verified: bool,
}

/// Why a Kafka message value can't be read as an [`EventMessage`]. None of these can pass
/// on a retry: a consumer sends such a message to its dead-letter topic.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or not a JSON object.
    #[error("message is not a JSON object: {0}")]
    Undecodable(String),
    /// `schema_version` is missing or one this build doesn't know (the value as JSON text).
    #[error("unsupported schema_version {0:?} (this build reads {SCHEMA_VERSION})")]
    UnsupportedSchemaVersion(Option<String>),
    /// The right version, but fields are missing, mistyped or inconsistent.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
}

impl DecodeError {
    /// A short, stable name for the error, for headers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Undecodable(_) => "undecodable",
            DecodeError::UnsupportedSchemaVersion(_) => "unsupported_schema_version",
            DecodeError::InvalidRecord(_) => "invalid_record",
        }
    }
}

impl EventMessage {
    /// Serializes the message value.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing these types can't fail: every map key is a string.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a message value, checking the schema version first, then the shape, then
    /// that the message is consistent (ids present, user events carry a user record).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        /// Only the version, so a future format is refused before its shape is judged.
        #[derive(Deserialize)]
        struct Version<'a> {
            #[serde(borrow)]
            schema_version: Option<&'a RawValue>,
        }
        // A struct also deserializes from an array: insist on an object first.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(DecodeError::Undecodable("not a JSON object".into()));
        }
        let version: Version<'_> =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Undecodable(e.to_string()))?;
        match version.schema_version.map(RawValue::get) {
            Some(v) if v.parse::<u32>() == Ok(SCHEMA_VERSION) => {}
            other => {
                // Capped: the value is whatever the producer wrote, and goes to headers.
                let shown = other.map(|v| v.chars().take(64).collect());
                return Err(DecodeError::UnsupportedSchemaVersion(shown));
            }
        }
        let message: EventMessage =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::InvalidRecord(e.to_string()))?;
        message.validate()?;
        Ok(message)
    }

    fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |why: &str| Err(DecodeError::InvalidRecord(why.to_string()));
        if self.event_id.is_empty() {
            return invalid("event_id is empty");
        }
        if self.subject_id.is_empty() {
            return invalid("subject_id is empty");
        }
        if self.event_type.starts_with("user.") {
            match &self.record {
                Record::User(user) if user.id == self.subject_id => {}
                Record::User(_) => return invalid("record.id differs from subject_id"),
                _ => return invalid("a user event must carry a user record"),
            }
        }
        Ok(())
    }

    /// The Kafka headers of the message: event id, type, schema version and origin, and the
    /// same event as CloudEvents binary-mode headers ([`CLOUDEVENTS_HEADERS`]; `ce_time` is
    /// left out for an event time RFC 3339 can't write, outside years 0 to 9999).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let [spec, id, kind, source, subject, time, dataschema, content_type] = CLOUDEVENTS_HEADERS;
        let mut headers = vec![
            (HEADER_EVENT_ID, self.event_id.clone()),
            (HEADER_EVENT_TYPE, self.event_type.clone()),
            (HEADER_SCHEMA_VERSION, self.schema_version.to_string()),
            (HEADER_EVENT_ORIGIN, self.origin.as_str().to_string()),
            (spec, "1.0".to_string()),
            (id, self.event_id.clone()),
            (kind, self.event_type.clone()),
            (
                source,
                format!(
                    "urn:clerk:instance:{}",
                    self.instance_id.as_deref().unwrap_or("unknown")
                ),
            ),
            (subject, self.subject_id.clone()),
        ];
        if let Some(at) = rfc3339_millis(self.event_time) {
            headers.push((time, at));
        }
        headers.push((dataschema, SCHEMA_ID.to_string()));
        headers.push((content_type, "application/json".to_string()));
        headers
    }

    /// The JSON Schema of the message value (draft-07, `$id` [`SCHEMA_ID`]), as a v1
    /// reader takes it: what [`EventMessage::decode`] accepts, so a field a reader fills
    /// in when missing (`origin`, the nullable ones) isn't required, though this crate
    /// always writes it. Checked in as `schema/message.v1.schema.json`.
    ///
    /// Draft-07, not 2020-12: AsyncAPI 3's parsers take draft-07 payload schemas. Keys are
    /// sorted (after the keywords schemars writes first, `$id`, `title`, `type`, …), so
    /// the text is the same whether or not another crate of the build turns on serde_json's
    /// `preserve_order`, which would keep the order they were made in.
    pub fn json_schema() -> schemars::Schema {
        let schema = schemars::generate::SchemaSettings::draft07()
            .for_deserialize()
            .with_transform(schemars::transform::RecursiveTransform(for_readers))
            .into_generator()
            .into_root_schema_for::<EventMessage>();
        schemars::Schema::try_from(sorted(schema.as_value().clone())).unwrap_or(schema)
    }

    /// The user record, for `user.*` messages.
    pub fn user(&self) -> Option<&UserRecord> {
        match &self.record {
            Record::User(user) => Some(user),
            _ => None,
        }
    }
}

/// The schema for its readers, people and validators: a description from a doc comment
/// with one line per paragraph and `[`X`]` links as plain `X` (not rustdoc's), and no
/// `format` naming an integer width (`int64`, `uint32`: schemars' words, not JSON
/// Schema's formats; Ajv in its default strict mode refuses a schema with a format it
/// doesn't know).
fn for_readers(schema: &mut schemars::Schema) {
    let width = schema
        .get("format")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|f| f.starts_with("int") || f.starts_with("uint"));
    if width {
        schema.remove("format");
    }
    if let Some(serde_json::Value::String(text)) = schema.get_mut("description") {
        *text = text
            .split("\n\n")
            .map(|paragraph| paragraph.split('\n').collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n\n")
            .replace("[`", "`")
            .replace("`]", "`");
    }
}

/// `value` with every object's keys in order.
fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds (`2024-11-24T16:00:00.000Z`);
/// `None` outside what RFC 3339 can write (years 0 to 9999).
fn rfc3339_millis(ms: i64) -> Option<String> {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    (0..=9999)
        .contains(&t.year())
        .then(|| t.format(&format).ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_also_travels_as_cloudevents_headers() {
        let body = br#"{"type":"user.updated","object":"event","instance_id":"ins_2abc","timestamp":1732464000,
            "data":{"id":"user_1","object":"user","updated_at":1732464000123,"email_addresses":[]}}"#;
        let message = crate::normalize("msg_1", body).unwrap();
        let headers: std::collections::HashMap<&str, String> =
            message.headers().into_iter().collect();
        assert_eq!(headers["ce_specversion"], "1.0");
        assert_eq!(headers["ce_id"], "msg_1");
        assert_eq!(headers["ce_id"], headers[HEADER_EVENT_ID]);
        assert_eq!(headers["ce_type"], "user.updated");
        assert_eq!(headers["ce_source"], "urn:clerk:instance:ins_2abc");
        assert_eq!(headers["ce_subject"], "user_1");
        assert_eq!(headers["ce_time"], "2024-11-24T16:00:00.123Z");
        assert_eq!(headers["ce_dataschema"], SCHEMA_ID);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers.len(), 12, "no name twice");
    }

    #[test]
    fn times_rfc3339_cannot_write_leave_ce_time_out() {
        assert_eq!(
            rfc3339_millis(0).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            rfc3339_millis(-1).as_deref(),
            Some("1969-12-31T23:59:59.999Z")
        );
        assert_eq!(rfc3339_millis(i64::MAX), None);
        assert_eq!(rfc3339_millis(-62_167_219_200_001), None, "before year 0");
    }
}
