//! From a verified Clerk webhook body to an [`EventMessage`].
//!
//! Event time: `data.updated_at` where the object has one, else the envelope's `timestamp`;
//! a value below 10^12 is taken as seconds and converted to milliseconds. Deletion payloads
//! (`{"id","object","deleted"}`) have no `updated_at`, so a deletion is timed by the envelope.
//!
//! The body is parsed once: the envelope's fields, and `data` as the exact bytes received
//! (which the message carries unchanged); then the typed fields of `data` are read from
//! those bytes. Nothing is built for the parts of `data` we don't read, and nothing limits
//! how deeply they nest.

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::clerk::{self, Envelope, Loose};
use crate::message::{EmailAddress, EventMessage, PayerType, Record, UserRecord, SCHEMA_VERSION};

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
    /// Clerk Billing: `subscription.*`, `subscriptionItem.*`, `paymentAttempt.*`.
    Billing,
    /// Every other type.
    Other,
}

impl Family {
    /// Every family, in a stable order.
    pub const ALL: [Family; 5] = [
        Family::Users,
        Family::Organizations,
        Family::Sessions,
        Family::Billing,
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
            "subscription" | "subscriptionItem" | "paymentAttempt" => Family::Billing,
            _ => Family::Other,
        }
    }

    /// A short lowercase name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Users => "users",
            Family::Organizations => "organizations",
            Family::Sessions => "sessions",
            Family::Billing => "billing",
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
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|e| match e.classify() {
        Category::Data => NormalizeError::InvalidPayload(format!("envelope: {e}")),
        Category::Syntax | Category::Eof | Category::Io => NormalizeError::InvalidJson(e),
    })?;
    if envelope.event_type.is_empty() {
        return Err(invalid("`type` is empty"));
    }
    let data = envelope.data.get();
    if !data.starts_with('{') {
        return Err(invalid("`data` is not an object"));
    }

    let Normalized {
        mut subject_id,
        record,
        updated_at,
    } = record_of(&envelope.event_type, data)?;
    if subject_id.is_empty() {
        // An empty id in a non-user payload (user ids are checked): key by type instead,
        // as for events without one.
        subject_id.clone_from(&envelope.event_type);
    }
    let event_time = event_time(&envelope.event_type, updated_at, envelope.timestamp)
        .ok_or_else(|| invalid("neither data.updated_at nor timestamp is present"))?;

    Ok(EventMessage {
        schema_version: SCHEMA_VERSION,
        event_id: event_id.to_string(),
        event_type: envelope.event_type,
        event_time,
        instance_id: envelope.instance_id,
        subject_id,
        record,
        data: envelope.data.to_owned(),
        origin: crate::Origin::Webhook,
        event_attributes: envelope.event_attributes.map(ToOwned::to_owned),
    })
}

/// The contract's rule: `data.updated_at`, else the envelope's `timestamp`. Except for a
/// deletion: `organizationMembership.deleted` carries the whole membership, whose
/// `updated_at` is its last edit, not the deletion, so a deletion is timed by the later
/// of the two (the envelope's `timestamp` is when Clerk emitted the deletion; the later
/// one also keeps a deletion from ordering before the edit it follows when the
/// timestamp is in whole seconds).
fn event_time(event_type: &str, updated_at: Option<i64>, timestamp: Option<i64>) -> Option<i64> {
    let (updated_at, timestamp) = (updated_at.map(to_millis), timestamp.map(to_millis));
    if event_type.ends_with(".deleted") {
        return updated_at.max(timestamp);
    }
    updated_at.or(timestamp)
}

/// What the typed fields of `data` give: the key, the record and `data.updated_at`.
struct Normalized {
    subject_id: String,
    record: Record,
    updated_at: Option<i64>,
}

fn invalid(why: impl Into<String>) -> NormalizeError {
    NormalizeError::InvalidPayload(why.into())
}

fn parse<T: DeserializeOwned>(event_type: &str, data: &str) -> Result<T, NormalizeError> {
    serde_json::from_str(data).map_err(|e| invalid(format!("data of {event_type}: {e}")))
}

fn record_of(event_type: &str, data: &str) -> Result<Normalized, NormalizeError> {
    let family = Family::of(event_type);
    match family_record(family, event_type, data) {
        Ok(normalized) => Ok(normalized),
        // Only user events must have their shape: they change documents. Any other verified
        // event is kept (nothing verified is dropped), as an `other` record.
        Err(_) if family != Family::Users => {
            let loose = Loose::read(data);
            // Keep the subject's key when the payload has it, so its events stay in one
            // partition.
            let key = match family {
                Family::Sessions => loose.user_id.clone(),
                _ => loose.organization_id.clone().or(loose.organization.clone()),
            };
            let mut normalized = other_record(event_type, loose);
            if let Some(key) = key {
                normalized.subject_id = key;
            }
            Ok(normalized)
        }
        Err(e) => Err(e),
    }
}

fn other_record(event_type: &str, loose: Loose) -> Normalized {
    // Key unknown events by their object id when there is one; otherwise by type, which
    // keeps events of one type in order.
    let subject_id = loose.id.clone().unwrap_or_else(|| event_type.to_string());
    Normalized {
        subject_id,
        record: Record::Other { id: loose.id },
        updated_at: loose.updated_at,
    }
}

fn family_record(
    family: Family,
    event_type: &str,
    data: &str,
) -> Result<Normalized, NormalizeError> {
    match family {
        Family::Users => {
            let user: clerk::User = parse(event_type, data)?;
            if user.id.is_empty() {
                return Err(invalid("data.id is empty"));
            }
            let updated_at = user.updated_at;
            let user = if user.deleted {
                // A deletion carries the id, and the external id when Clerk sends it: an
                // application keyed on its own ids needs it to find what to delete.
                UserRecord {
                    id: user.id,
                    external_id: user.external_id,
                    deleted: true,
                    ..UserRecord::default()
                }
            } else {
                user_record(user)
            };
            Ok(Normalized {
                subject_id: user.id.clone(),
                record: Record::User(user),
                updated_at,
            })
        }
        Family::Sessions => {
            let session: clerk::Session = parse(event_type, data)?;
            Ok(Normalized {
                subject_id: session.user_id.clone(),
                record: Record::Session {
                    id: session.id,
                    user_id: session.user_id,
                    status: session.status,
                },
                updated_at: session.updated_at,
            })
        }
        Family::Organizations if event_type.starts_with("organizationMembership.") => {
            let membership: clerk::OrganizationMembership = parse(event_type, data)?;
            Ok(Normalized {
                subject_id: membership.organization.id.clone(),
                record: Record::OrganizationMembership {
                    id: membership.id,
                    organization_id: membership.organization.id,
                    user_id: membership.public_user_data.map(|u| u.user_id),
                    role: membership.role,
                },
                updated_at: membership.updated_at,
            })
        }
        Family::Organizations => {
            let object: clerk::OrganizationObject = parse(event_type, data)?;
            let organization_id = if event_type.starts_with("organization.") {
                object.id.clone()
            } else if let Some(org) = object.organization_id {
                org
            } else if object.deleted {
                // Deletion payloads of invitations and domains may carry only their own id.
                object.id.clone()
            } else {
                return Err(invalid(format!(
                    "data of {event_type}: missing field `organization_id`"
                )));
            };
            Ok(Normalized {
                subject_id: organization_id.clone(),
                record: Record::Organization {
                    id: object.id,
                    organization_id,
                    deleted: object.deleted,
                },
                updated_at: object.updated_at,
            })
        }
        Family::Billing => {
            let object: clerk::BillingObject = parse(event_type, data)?;
            let payer = object.payer.unwrap_or_default();
            let filled = |v: Option<String>| v.filter(|v| !v.is_empty());
            // An organization payer wins when both are filled: it is the narrower claim.
            let (payer_id, payer_type) =
                match (filled(payer.organization_id), filled(payer.user_id)) {
                    (Some(org), _) => (Some(org), Some(PayerType::Organization)),
                    (None, Some(user)) => (Some(user), Some(PayerType::User)),
                    (None, None) => (None, None),
                };
            let clerk_payer_id = filled(payer.id).or(filled(object.payer_id));
            // Keyed by the payer so a customer's subscription, item and payment events stay
            // in one partition; by its billing id, or the object's own, when it isn't named.
            let subject_id = payer_id
                .clone()
                .or_else(|| clerk_payer_id.clone())
                .unwrap_or_else(|| object.id.clone());
            Ok(Normalized {
                subject_id,
                record: Record::Billing {
                    id: object.id,
                    payer_id,
                    payer_type,
                    clerk_payer_id,
                },
                updated_at: object.updated_at,
            })
        }
        Family::Other => Ok(other_record(event_type, Loose::read(data))),
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
        // Clerk sends milliseconds; only the event time gets the seconds rule (a user
        // imported with a 1999 creation date is below 10^12 ms and must stay in 1999).
        last_sign_in_at: user.last_sign_in_at,
        created_at: user.created_at,
        updated_at: user.updated_at,
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
