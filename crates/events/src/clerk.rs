//! Clerk's webhook payloads, as documented at <https://clerk.com/docs/webhooks/overview>.
//!
//! Only the fields we read are typed; everything else is skipped while parsing and stays in
//! the raw `data`, which travels unchanged in the message. Unknown fields are ignored, so
//! Clerk adding fields never breaks parsing, and skipping has no nesting limit, so a user
//! who nests `unsafe_metadata` a thousand levels deep doesn't stop their events.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The envelope of every Clerk webhook: `{"data":…, "object":"event", "type":…, …}`.
/// `data` is kept as the exact bytes received.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope<'a> {
    /// The event type, such as `user.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The object the event is about, exactly as Clerk sent it.
    #[serde(borrow)]
    pub data: &'a RawValue,
    /// When Clerk emitted the event (milliseconds since the epoch).
    #[serde(default)]
    pub timestamp: Option<i64>,
    /// The Clerk instance (`ins_…`) the event comes from.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// What caused the event (`{"http_request":{"client_ip","user_agent"}}`), as received;
    /// `None` when absent or null.
    #[serde(default, borrow)]
    pub event_attributes: Option<&'a RawValue>,
}

/// A Clerk user object (`user.created`, `user.updated`), or the `{"id","object","deleted"}`
/// of `user.deleted`.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    /// `user_…`
    pub id: String,
    /// True for a deletion payload.
    #[serde(default, deserialize_with = "lenient::flag")]
    pub deleted: bool,
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
    #[serde(default, deserialize_with = "lenient::int")]
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
    /// Milliseconds since the epoch.
    #[serde(default, deserialize_with = "lenient::int")]
    pub updated_at: Option<i64>,
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
    /// Milliseconds since the epoch.
    #[serde(default, deserialize_with = "lenient::int")]
    pub updated_at: Option<i64>,
}

/// An organization (`organization.*`), or an object that belongs to one
/// (`organizationInvitation.*`, `organizationDomain.*`, whose deletion payloads may carry
/// only their own id).
#[derive(Debug, Clone, Deserialize)]
pub struct OrganizationObject {
    /// The object's own id.
    pub id: String,
    /// `org_…`, for objects that belong to an organization.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// True for a deletion payload.
    #[serde(default, deserialize_with = "lenient::flag")]
    pub deleted: bool,
    /// Milliseconds since the epoch.
    #[serde(default, deserialize_with = "lenient::int")]
    pub updated_at: Option<i64>,
}

/// A Clerk Billing object (`subscription.*`, `subscriptionItem.*`, `paymentAttempt.*`):
/// what keys and times it. Read leniently: billing payloads vary between Clerk's schema
/// and its examples.
#[derive(Debug, Clone, Deserialize)]
pub struct BillingObject {
    /// `csub_…`, `csub_item_…`, `pa_…`
    pub id: String,
    /// Who pays (absent on items nested in a subscription, present on standalone events):
    /// its `id` (`cpayer_…`), `user_id` and `organization_id`, read leniently. Clerk sends
    /// `""` for whichever of the last two doesn't apply.
    #[serde(default)]
    pub payer: Option<Loose>,
    /// The payer's billing id, on subscriptions.
    #[serde(default, deserialize_with = "lenient::text")]
    pub payer_id: Option<String>,
    /// Milliseconds since the epoch.
    #[serde(default, deserialize_with = "lenient::int")]
    pub updated_at: Option<i64>,
}

/// What can be read from any JSON object, whatever its shape: the fields that key and time
/// an event we have no type for (or whose shape surprised us). Never fails on an object.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Loose {
    /// `data.id`, when it is a string.
    #[serde(default, deserialize_with = "lenient::text")]
    pub id: Option<String>,
    /// `data.user_id`, when it is a string.
    #[serde(default, deserialize_with = "lenient::text")]
    pub user_id: Option<String>,
    /// `data.organization_id`, when it is a string.
    #[serde(default, deserialize_with = "lenient::text")]
    pub organization_id: Option<String>,
    /// `data.organization.id`, when it is a string.
    #[serde(default, deserialize_with = "lenient::object_id")]
    pub organization: Option<String>,
    /// `data.updated_at`, when it is an integer.
    #[serde(default, deserialize_with = "lenient::int")]
    pub updated_at: Option<i64>,
}

impl Loose {
    /// Reads any object; one that repeats a key (or isn't an object) reads as empty.
    pub fn read(data: &str) -> Loose {
        serde_json::from_str(data).unwrap_or_default()
    }
}

/// Deserializers that read a value when it has the expected type and skip it otherwise
/// (any depth, without a recursion limit), instead of failing the whole event.
mod lenient {
    use super::*;

    struct Lenient;

    /// What [`Lenient`] found.
    enum Found {
        Int(i64),
        Text(String),
        /// The string `id` of an object.
        Id(String),
        Flag(bool),
        Nothing,
    }

    impl<'de> Visitor<'de> for Lenient {
        type Value = Found;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Found, E> {
            Ok(Found::Flag(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Found, E> {
            Ok(Found::Int(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Found, E> {
            Ok(i64::try_from(v).map_or(Found::Nothing, Found::Int))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Found, E> {
            Ok(Found::Nothing)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Found, E> {
            Ok(Found::Text(v.to_string()))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Found, E> {
            Ok(Found::Nothing)
        }
        fn visit_none<E: de::Error>(self) -> Result<Found, E> {
            Ok(Found::Nothing)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
            d.deserialize_any(Lenient)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Found::Nothing)
        }
        /// An object: its `id` when that is a string (`organization: {"id": …}`).
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
            let mut id = Found::Nothing;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "id" {
                    if let Found::Text(text) = map.next_value_seed(Seed)? {
                        id = Found::Id(text);
                    }
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(id)
        }
    }

    /// The `id` inside an object is read flat: no `{"id": {"id": …}}`.
    struct Seed;

    impl<'de> de::DeserializeSeed<'de> for Seed {
        type Value = Found;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
            match d.deserialize_any(Lenient)? {
                text @ Found::Text(_) => Ok(text),
                _ => Ok(Found::Nothing),
            }
        }
    }

    /// An integer, else `None`.
    pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Ok(match d.deserialize_any(Lenient)? {
            Found::Int(v) => Some(v),
            _ => None,
        })
    }

    /// A string, else `None`.
    pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(match d.deserialize_any(Lenient)? {
            Found::Text(v) => Some(v),
            _ => None,
        })
    }

    /// The string `id` of an object, else `None`.
    pub fn object_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(match d.deserialize_any(Lenient)? {
            Found::Id(v) => Some(v),
            _ => None,
        })
    }

    /// `true`, else `false`.
    pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        Ok(matches!(d.deserialize_any(Lenient)?, Found::Flag(true)))
    }
}
