//! From a verified Clerk webhook body to an [`EventMessage`].
//!
//! Event time: `data.updated_at` where the object has one, else the envelope's `timestamp`;
//! a value below 10^12 is taken as seconds and converted to milliseconds. Deletion payloads
//! (`{"id","object","deleted"}`) have no `updated_at`, so a deletion is timed by the envelope.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::clerk::{self, Envelope};
use crate::message::{EmailAddress, EventMessage, Record, UserRecord, SCHEMA_VERSION};

/// Why a webhook body can't be normalized. The sender gets a 400 with the matching code.
#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    /// The body is not JSON (`INVALID_JSON`).
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    /// JSON, but not a Clerk event we can normalize (`INVALID_PAYLOAD`).
    #[error("the body is not a valid Clerk event: {0}")]
    InvalidPayload(String),
}

/// The topic family an event type is routed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `user.*`
    Users,
    /// `organization.*`, `organizationMembership.*`, `organizationInvitation.*`,
    /// `organizationDomain.*`
    Organizations,
    /// `session.*`
    Sessions,
    /// Every other type.
    Other,
}

impl Family {
    /// Every family, in a stable order.
    pub const ALL: [Family; 4] = [
        Family::Users,
        Family::Organizations,
        Family::Sessions,
        Family::Other,
    ];

    /// The family of a Clerk event type, by the part before the first dot.
    pub fn of(event_type: &str) -> Family {
        match event_type.split('.').next().unwrap_or_default() {
            "user" => Family::Users,
            "organization"
            | "organizationMembership"
            | "organizationInvitation"
            | "organizationDomain" => Family::Organizations,
            "session" => Family::Sessions,
            _ => Family::Other,
        }
    }

    /// A short lowercase name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Users => "users",
            Family::Organizations => "organizations",
            Family::Sessions => "sessions",
            Family::Other => "other",
        }
    }
}

/// Clerk times are milliseconds, but a value below 10^12 (before 2001-09-09 in ms) can only
/// be seconds: convert it.
pub fn to_millis(t: i64) -> i64 {
    if t.abs() < 1_000_000_000_000 {
        t.saturating_mul(1000)
    } else {
        t
    }
}

/// Normalizes a verified webhook body. `event_id` is the delivery's `svix-id`.
pub fn normalize(event_id: &str, body: &[u8]) -> Result<EventMessage, NormalizeError> {
    let value: Value = serde_json::from_slice(body).map_err(NormalizeError::InvalidJson)?;
    let envelope: Envelope = serde_json::from_value(value)
        .map_err(|e| NormalizeError::InvalidPayload(format!("envelope: {e}")))?;
    if envelope.event_type.is_empty() {
        return Err(invalid("`type` is empty"));
    }

    let event_time = clerk::updated_at(&envelope.data)
        .or(envelope.timestamp)
        .map(to_millis)
        .ok_or_else(|| invalid("neither data.updated_at nor timestamp is present"))?;

    let (subject_id, record) = record_of(&envelope.event_type, &envelope.data)?;

    Ok(EventMessage {
        schema_version: SCHEMA_VERSION,
        event_id: event_id.to_string(),
        event_type: envelope.event_type,
        event_time,
        instance_id: envelope.instance_id,
        subject_id,
        record,
        data: Value::Object(envelope.data),
    })
}

fn invalid(why: impl Into<String>) -> NormalizeError {
    NormalizeError::InvalidPayload(why.into())
}

fn parse<T: DeserializeOwned>(
    event_type: &str,
    data: &Map<String, Value>,
) -> Result<T, NormalizeError> {
    // `Map` is cheap enough to clone at webhook rates, and keeps `data` intact for the message.
    serde_json::from_value(Value::Object(data.clone()))
        .map_err(|e| invalid(format!("data of {event_type}: {e}")))
}

fn is_deletion(data: &Map<String, Value>) -> bool {
    data.get("deleted").and_then(Value::as_bool) == Some(true)
}

fn record_of(
    event_type: &str,
    data: &Map<String, Value>,
) -> Result<(String, Record), NormalizeError> {
    let family = Family::of(event_type);
    match family_record(family, event_type, data) {
        Ok(normalized) => Ok(normalized),
        // Only user events must have their shape: they change documents. Any other verified
        // event is kept (nothing verified is dropped), as an `other` record.
        Err(_) if family != Family::Users => {
            let (subject, record) = other_record(event_type, data);
            // Keep the subject's key when the payload has it, so its events stay in one
            // partition.
            let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
            let key = match family {
                Family::Sessions => text(data.get("user_id")),
                _ => text(data.get("organization_id"))
                    .or_else(|| text(data.get("organization").and_then(|o| o.get("id")))),
            };
            Ok((key.unwrap_or(subject), record))
        }
        Err(e) => Err(e),
    }
}

fn other_record(event_type: &str, data: &Map<String, Value>) -> (String, Record) {
    let id = data.get("id").and_then(Value::as_str).map(str::to_string);
    // Key unknown events by their object id when there is one; otherwise by type, which
    // keeps events of one type in order.
    let subject = id.clone().unwrap_or_else(|| event_type.to_string());
    (subject, Record::Other { id })
}

fn family_record(
    family: Family,
    event_type: &str,
    data: &Map<String, Value>,
) -> Result<(String, Record), NormalizeError> {
    match family {
        Family::Users => {
            let user = if is_deletion(data) {
                let deleted: clerk::DeletedObject = parse(event_type, data)?;
                UserRecord {
                    id: deleted.id,
                    deleted: true,
                    ..UserRecord::default()
                }
            } else {
                user_record(parse(event_type, data)?)
            };
            if user.id.is_empty() {
                return Err(invalid("data.id is empty"));
            }
            Ok((user.id.clone(), Record::User(user)))
        }
        Family::Sessions => {
            let session: clerk::Session = parse(event_type, data)?;
            Ok((
                session.user_id.clone(),
                Record::Session {
                    id: session.id,
                    user_id: session.user_id,
                    status: session.status,
                },
            ))
        }
        Family::Organizations if event_type.starts_with("organizationMembership.") => {
            let membership: clerk::OrganizationMembership = parse(event_type, data)?;
            Ok((
                membership.organization.id.clone(),
                Record::OrganizationMembership {
                    id: membership.id,
                    organization_id: membership.organization.id,
                    user_id: membership.public_user_data.map(|u| u.user_id),
                    role: membership.role,
                },
            ))
        }
        Family::Organizations => {
            let deleted = is_deletion(data);
            let (id, organization_id) = if event_type.starts_with("organization.") {
                let org: clerk::IdOnly = parse(event_type, data)?;
                (org.id.clone(), org.id)
            } else if deleted {
                // Deletion payloads of invitations and domains may carry only their own id.
                let object: clerk::IdOnly = parse(event_type, data)?;
                let org = data
                    .get("organization_id")
                    .and_then(Value::as_str)
                    .map_or_else(|| object.id.clone(), str::to_string);
                (object.id, org)
            } else {
                let child: clerk::OrganizationChild = parse(event_type, data)?;
                (child.id, child.organization_id)
            };
            Ok((
                organization_id.clone(),
                Record::Organization {
                    id,
                    organization_id,
                    deleted,
                },
            ))
        }
        Family::Other => Ok(other_record(event_type, data)),
    }
}

fn user_record(user: clerk::User) -> UserRecord {
    let primary = user
        .primary_email_address_id
        .as_deref()
        .and_then(|primary_id| user.email_addresses.iter().find(|e| e.id == primary_id));
    let primary_email = primary.map(|e| e.email_address.clone());
    let email_verified = primary.is_some_and(verified);

    let mut email_addresses: Vec<EmailAddress> = user
        .email_addresses
        .iter()
        .map(|e| EmailAddress {
            id: e.id.clone(),
            email: e.email_address.clone(),
            verified: verified(e),
        })
        .collect();
    // Primary first; the others keep Clerk's order.
    if let Some(primary_id) = user.primary_email_address_id.as_deref() {
        email_addresses.sort_by_key(|e| e.id != primary_id);
    }

    UserRecord {
        id: user.id,
        primary_email,
        email_verified,
        email_addresses,
        first_name: user.first_name,
        last_name: user.last_name,
        username: user.username,
        image_url: user.image_url.or(user.profile_image_url),
        last_sign_in_at: user.last_sign_in_at.map(to_millis),
        created_at: user.created_at.map(to_millis),
        updated_at: user.updated_at.map(to_millis),
        external_id: user.external_id,
        deleted: false,
    }
}

fn verified(email: &clerk::ClerkEmailAddress) -> bool {
    email
        .verification
        .as_ref()
        .and_then(|v| v.status.as_deref())
        == Some("verified")
}
