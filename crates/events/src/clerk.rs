//! Clerk's webhook payloads, as documented at <https://clerk.com/docs/webhooks/overview>.
//!
//! Only the fields we read are typed; everything else stays in the raw `data` object, which
//! travels unchanged in the message. Unknown fields are ignored, so Clerk adding fields never
//! breaks parsing.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The envelope of every Clerk webhook: `{"data":…, "object":"event", "type":…, …}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    /// The event type, such as `user.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The object the event is about, as Clerk sent it.
    pub data: Map<String, Value>,
    /// Always `"event"` for Clerk webhooks.
    #[serde(default)]
    pub object: Option<String>,
    /// When Clerk emitted the event (milliseconds since the epoch).
    #[serde(default)]
    pub timestamp: Option<i64>,
    /// The Clerk instance (`ins_…`) the event comes from.
    #[serde(default)]
    pub instance_id: Option<String>,
}

/// A Clerk user object (`user.created`, `user.updated`).
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    /// `user_…`
    pub id: String,
    /// The id of the primary entry of `email_addresses`, if any.
    #[serde(default)]
    pub primary_email_address_id: Option<String>,
    /// Every email address of the user.
    #[serde(default)]
    pub email_addresses: Vec<ClerkEmailAddress>,
    /// Given name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Family name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// Username, when the instance uses them.
    #[serde(default)]
    pub username: Option<String>,
    /// The user's avatar.
    #[serde(default)]
    pub image_url: Option<String>,
    /// Older payloads carry only this one.
    #[serde(default)]
    pub profile_image_url: Option<String>,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub last_sign_in_at: Option<i64>,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub created_at: Option<i64>,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub updated_at: Option<i64>,
    /// The application's own id for the user.
    #[serde(default)]
    pub external_id: Option<String>,
}

/// One entry of a user's `email_addresses`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClerkEmailAddress {
    /// `idn_…`
    pub id: String,
    /// The address itself.
    pub email_address: String,
    /// Verification state; `status` is `verified` once verified.
    #[serde(default)]
    pub verification: Option<Verification>,
}

/// A verification attempt attached to an email address.
#[derive(Debug, Clone, Deserialize)]
pub struct Verification {
    /// `verified`, `unverified`, `expired`, …
    #[serde(default)]
    pub status: Option<String>,
}

/// The object of a `*.deleted` event: `{"id":…, "object":…, "deleted":true}`.
#[derive(Debug, Clone, Deserialize)]
pub struct DeletedObject {
    /// The id of what was deleted.
    pub id: String,
    /// `user`, `session`, …
    #[serde(default)]
    pub object: Option<String>,
    /// Always true.
    #[serde(default)]
    pub deleted: bool,
}

/// A Clerk organization membership (`organizationMembership.*`).
#[derive(Debug, Clone, Deserialize)]
pub struct OrganizationMembership {
    /// `orgmem_…`
    pub id: String,
    /// The organization, embedded.
    pub organization: IdOnly,
    /// The member.
    #[serde(default)]
    pub public_user_data: Option<PublicUserData>,
    /// `org:admin`, `org:member`, …
    #[serde(default)]
    pub role: Option<String>,
}

/// Any object of which we only need the id.
#[derive(Debug, Clone, Deserialize)]
pub struct IdOnly {
    /// The object's id.
    pub id: String,
}

/// The public part of a user embedded in other objects.
#[derive(Debug, Clone, Deserialize)]
pub struct PublicUserData {
    /// `user_…`
    pub user_id: String,
}

/// A Clerk session (`session.*`).
#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    /// `sess_…`
    pub id: String,
    /// The user the session belongs to.
    pub user_id: String,
    /// `active`, `ended`, `revoked`, …
    #[serde(default)]
    pub status: Option<String>,
}

/// An object that belongs to an organization by id (`organizationInvitation.*`,
/// `organizationDomain.*`).
#[derive(Debug, Clone, Deserialize)]
pub struct OrganizationChild {
    /// The object's own id.
    pub id: String,
    /// `org_…`
    pub organization_id: String,
}

/// Reads `updated_at` from a Clerk object, when it is a number.
pub fn updated_at(data: &Map<String, Value>) -> Option<i64> {
    data.get("updated_at").and_then(Value::as_i64)
}
