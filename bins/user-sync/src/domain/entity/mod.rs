//! What each Clerk event means for the documents user-sync keeps: one short module per
//! kind of document, saying which fields it maps, which events delete (or end) it, and
//! which indexes it needs. The order rules themselves live in [`crate::domain::plan`], once for all.
//!
//! Adding a kind of document (as organization invitations and Clerk Billing were) is one
//! module here: an [`Entity`] variant, its `change`, its `defaults` and its indexes.

mod billing;
mod invitation;
mod membership;
mod organization;
mod session;
mod user;

use bson::{doc, Bson, DateTime, Document};
use events::EventMessage;

use crate::domain::payload::storable_value;

/// A kind of document, one collection each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    /// `user.*` → `users`.
    User,
    /// `organization.*` → `organizations`.
    Organization,
    /// `organizationMembership.*` → `organizationMemberships`.
    Membership,
    /// `session.*` → `sessions`.
    Session,
    /// `organizationInvitation.*` → `organizationInvitations`.
    Invitation,
    /// `subscription.*` → `subscriptions`.
    Subscription,
    /// `subscriptionItem.*` → `subscriptionItems`.
    SubscriptionItem,
    /// `paymentAttempt.*` → `paymentAttempts`.
    PaymentAttempt,
}

impl Entity {
    /// Every kind, in a stable order.
    pub const ALL: [Entity; 8] = [
        Entity::User,
        Entity::Organization,
        Entity::Membership,
        Entity::Session,
        Entity::Invitation,
        Entity::Subscription,
        Entity::SubscriptionItem,
        Entity::PaymentAttempt,
    ];

    /// The kind an event type is about, if user-sync keeps it (`email.*`,
    /// `organizationDomain.*`, … are not kept).
    pub(crate) fn of(event_type: &str) -> Option<Entity> {
        match event_type.split_once('.').map(|(family, _)| family) {
            Some("user") => Some(Entity::User),
            Some("organization") => Some(Entity::Organization),
            Some("organizationMembership") => Some(Entity::Membership),
            Some("organizationInvitation") => Some(Entity::Invitation),
            Some("session") => Some(Entity::Session),
            _ => billing::kind(event_type),
        }
    }

    /// The kind's name on the command line and in output: `users`, `organizations`,
    /// `memberships`, `sessions`, `invitations`, `subscriptions`, `subscription_items`,
    /// `payment_attempts`.
    pub fn name(self) -> &'static str {
        match self {
            Entity::User => "users",
            Entity::Organization => "organizations",
            Entity::Membership => "memberships",
            Entity::Session => "sessions",
            Entity::Invitation => "invitations",
            Entity::Subscription => "subscriptions",
            Entity::SubscriptionItem => "subscription_items",
            Entity::PaymentAttempt => "payment_attempts",
        }
    }

    /// The kind named `name` (see [`Entity::name`]).
    pub fn from_name(name: &str) -> Option<Entity> {
        Entity::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The contract's default collection name.
    pub(crate) fn default_collection(self) -> &'static str {
        match self {
            Entity::User => "users",
            Entity::Organization => "organizations",
            Entity::Membership => "organizationMemberships",
            Entity::Session => "sessions",
            Entity::Invitation => "organizationInvitations",
            Entity::Subscription => "subscriptions",
            Entity::SubscriptionItem => "subscriptionItems",
            Entity::PaymentAttempt => "paymentAttempts",
        }
    }

    /// Fields a document gets when an event creates it, besides what the event sets: every
    /// mapped field null, not deleted. (A tombstone, or a user known so far only from its
    /// session activity, looks like this.)
    pub(crate) fn defaults(self) -> Document {
        let mut fields = match self {
            Entity::User => user::defaults(),
            Entity::Organization => organization::defaults(),
            Entity::Membership => membership::defaults(),
            Entity::Session => session::defaults(),
            Entity::Invitation => invitation::defaults(),
            Entity::Subscription | Entity::SubscriptionItem | Entity::PaymentAttempt => {
                billing::defaults(self)
            }
        };
        fields.insert("isDeleted", false);
        fields.insert("deletedAt", Bson::Null);
        fields
    }

    /// Indexes besides the unique one on `clerkId`: (name, keys).
    pub(crate) fn indexes(self) -> Vec<(&'static str, Document)> {
        match self {
            Entity::User | Entity::Organization => Vec::new(),
            Entity::Membership => membership::indexes(),
            Entity::Session => session::indexes(),
            Entity::Invitation => invitation::indexes(),
            Entity::Subscription | Entity::SubscriptionItem | Entity::PaymentAttempt => {
                billing::indexes(self)
            }
        }
    }
}

/// A part of a document that events decide under one order rule (see [`crate::domain::plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Slot {
    /// The mapped fields: the newest create/update by version holds them.
    Profile,
    /// Deletion (or a session's end): the earliest such event decides, and it is final.
    Final,
    /// A session's non-terminal status: the newest, unless the session has ended.
    Status,
    /// The user's `lastActiveAt`: only ever moves forward.
    Activity,
    /// `lastEventId`, `lastEventAt`, `webhookPayload`, sync status: the newest event of
    /// any type. Written by the plan, never by an entity.
    Pointer,
}

/// What an event asks of one document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Intent {
    pub(crate) entity: Entity,
    /// The document's `clerkId`.
    pub(crate) id: String,
    /// Under which rule.
    pub(crate) slot: Slot,
    pub(crate) set: Document,
    /// For [`Slot::Activity`]: the time the rule compares (ms). Others compare versions.
    pub(crate) at: Option<i64>,
}

/// What an event means for the documents.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// Writes; the first names the event's own document (the one whose `lastEvent*`
    /// follows it).
    Writes(Vec<Intent>),
    /// A type user-sync doesn't keep (or whose kind is not in `SYNC_ENTITIES`): recorded,
    /// nothing else.
    Ignored,
    /// It can never be applied: dead-lettered with this reason. When the event still
    /// names its document, that document says so (`syncStatus: failed`).
    Invalid {
        reason: String,
        /// The document it names, if any.
        key: Option<(Entity, String)>,
    },
}

/// What `message` means, with only the kinds in `enabled` kept.
pub(crate) fn change(message: &EventMessage, enabled: &[Entity]) -> Change {
    let Some(entity) = Entity::of(&message.event_type).filter(|e| enabled.contains(e)) else {
        return Change::Ignored;
    };
    // Users map the normalized record; the others read Clerk's `data` (parsed only then).
    let intents = match entity {
        Entity::User => user::change(message),
        Entity::Organization => organization::change(message, &Data::parse(message)),
        Entity::Membership => membership::change(message, &Data::parse(message)),
        Entity::Session => session::change(message, &Data::parse(message), enabled),
        Entity::Invitation => invitation::change(message, &Data::parse(message)),
        Entity::Subscription | Entity::SubscriptionItem | Entity::PaymentAttempt => {
            billing::change(entity, message, &Data::parse(message))
        }
    };
    match intents {
        Ok(Some(intents)) => Change::Writes(intents),
        Ok(None) => Change::Ignored,
        Err(reason) => Change::Invalid {
            reason,
            key: match &message.record {
                events::Record::Other { id: Some(id) } | events::Record::Billing { id, .. } => {
                    Some((entity, id.clone()))
                }
                _ => None,
            },
        },
    }
}

/// The profile write of a create or update.
fn profile(entity: Entity, id: &str, set: Document) -> Intent {
    Intent {
        entity,
        id: id.to_string(),
        slot: Slot::Profile,
        set,
        at: None,
    }
}

/// The deletion every kind but sessions shares.
fn deletion(entity: Entity, id: &str, message: &EventMessage) -> Intent {
    Intent {
        entity,
        id: id.to_string(),
        slot: Slot::Final,
        set: doc! {"isDeleted": true, "deletedAt": DateTime::from_millis(message.event_time)},
        at: None,
    }
}

/// The Clerk `data` object, read leniently: a field of the wrong type reads as absent. An
/// object nested too deeply for serde_json reads as empty (its fields null); the event
/// still applies, and its payload is kept as text.
struct Data(serde_json::Value);

impl Data {
    fn parse(message: &EventMessage) -> Data {
        Data(serde_json::from_str(message.data.get()).unwrap_or(serde_json::Value::Null))
    }

    fn value(&self, path: &[&str]) -> Option<&serde_json::Value> {
        path.iter()
            .try_fold(&self.0, |v, key| v.get(key))
            .filter(|v| !v.is_null())
    }

    /// A string, or null.
    fn text(&self, path: &[&str]) -> Bson {
        self.value(path)
            .and_then(|v| v.as_str())
            .map_or(Bson::Null, |s| Bson::String(s.to_string()))
    }

    /// Milliseconds since the epoch (as Clerk sends them) as a date, or null.
    fn date(&self, path: &[&str]) -> Bson {
        self.millis(path)
            .map_or(Bson::Null, |ms| Bson::DateTime(DateTime::from_millis(ms)))
    }

    fn millis(&self, path: &[&str]) -> Option<i64> {
        self.value(path).and_then(|v| v.as_i64())
    }

    /// `true` or `false`, or null.
    fn flag(&self, path: &[&str]) -> Bson {
        self.value(path)
            .and_then(|v| v.as_bool())
            .map_or(Bson::Null, Bson::Boolean)
    }

    /// The string `id`s of an array's objects (an empty array when there is none).
    fn ids(&self, path: &[&str]) -> Bson {
        let ids = self.value(path).and_then(|v| v.as_array()).map(|items| {
            items
                .iter()
                .filter_map(|item| item.get("id").and_then(|id| id.as_str()))
                .map(|id| Bson::String(id.to_string()))
                .collect::<Vec<_>>()
        });
        Bson::Array(ids.unwrap_or_default())
    }

    /// An integer, or null.
    fn int(&self, path: &[&str]) -> Bson {
        self.value(path)
            .and_then(|v| v.as_i64())
            .map_or(Bson::Null, Bson::Int64)
    }

    /// Any JSON value as BSON a server stores (see [`crate::domain::payload`]), or null.
    fn any(&self, path: &[&str]) -> Bson {
        self.value(path).map_or(Bson::Null, storable_value)
    }
}

/// Null for each name.
fn nulls(names: &[&str]) -> Document {
    names.iter().map(|n| (n.to_string(), Bson::Null)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_map_to_their_kind() {
        assert_eq!(Entity::of("user.created"), Some(Entity::User));
        assert_eq!(
            Entity::of("organization.deleted"),
            Some(Entity::Organization)
        );
        assert_eq!(
            Entity::of("organizationMembership.updated"),
            Some(Entity::Membership)
        );
        assert_eq!(Entity::of("session.ended"), Some(Entity::Session));
        assert_eq!(
            Entity::of("organizationInvitation.created"),
            Some(Entity::Invitation)
        );
        assert_eq!(
            Entity::of("subscription.pastDue"),
            Some(Entity::Subscription)
        );
        assert_eq!(
            Entity::of("subscriptionItem.freeTrialEnding"),
            Some(Entity::SubscriptionItem)
        );
        assert_eq!(
            Entity::of("paymentAttempt.updated"),
            Some(Entity::PaymentAttempt)
        );
        assert_eq!(Entity::of("email.created"), None);
        assert_eq!(Entity::of("organizationDomain.created"), None);
        assert_eq!(Entity::of("user"), None);
    }
}
