//! `session.*` → `sessions`, and the user's `lastActiveAt`.
//!
//! A terminal status is final the way a deletion is: the earliest terminal event sets
//! `status` and `endedAt`, and no later non-terminal status replaces it. `isDeleted`
//! stays false.

use bson::{doc, DateTime, Document};
use events::{EventMessage, Record};

use super::{nulls, Data, Entity, Intent, Slot};

/// Statuses after which a session never becomes active again.
const TERMINAL: [&str; 5] = ["ended", "removed", "revoked", "expired", "abandoned"];

const FIELDS: [&str; 9] = [
    "userId",
    "clientId",
    "status",
    "lastActiveAt",
    "expireAt",
    "abandonAt",
    "endedAt",
    "clerkCreatedAt",
    "clerkUpdatedAt",
];

pub(super) fn change(
    message: &EventMessage,
    data: &Data,
    enabled: &[Entity],
) -> Result<Option<Vec<Intent>>, String> {
    let Record::Session {
        id,
        user_id,
        status,
    } = &message.record
    else {
        return Err(format!(
            "{} without a session id and user id",
            message.event_type
        ));
    };
    // The payload's status; an event without one says it by its type.
    let status =
        status
            .clone()
            .unwrap_or_else(|| match message.event_type.strip_prefix("session.") {
                Some("created") => "active".to_string(),
                Some(other) => other.to_string(),
                None => "active".to_string(),
            });
    let mut profile = Document::new();
    profile.insert("userId", user_id.as_str());
    profile.insert("clientId", data.text(&["client_id"]));
    profile.insert("lastActiveAt", data.date(&["last_active_at"]));
    profile.insert("expireAt", data.date(&["expire_at"]));
    profile.insert("abandonAt", data.date(&["abandon_at"]));
    profile.insert("clerkCreatedAt", data.date(&["created_at"]));
    profile.insert("clerkUpdatedAt", data.date(&["updated_at"]));

    let intent = |slot, set| Intent {
        entity: Entity::Session,
        id: id.clone(),
        slot,
        set,
        at: None,
    };
    let mut intents = Vec::new();
    if TERMINAL.contains(&status.as_str()) {
        let ended = DateTime::from_millis(message.event_time);
        intents.push(intent(
            Slot::Final,
            doc! {"status": &status, "endedAt": ended},
        ));
        intents.push(intent(Slot::Profile, profile));
    } else {
        intents.push(intent(Slot::Profile, profile));
        intents.push(intent(Slot::Status, doc! {"status": &status}));
    }
    if enabled.contains(&Entity::User) {
        if let Some(active) = data.millis(&["last_active_at"]) {
            intents.push(Intent {
                entity: Entity::User,
                id: user_id.clone(),
                slot: Slot::Activity,
                set: doc! {"lastActiveAt": DateTime::from_millis(active)},
                at: Some(active),
            });
        }
    }
    Ok(Some(intents))
}

pub(super) fn defaults() -> Document {
    nulls(&FIELDS)
}

/// "The sessions of user X".
pub(super) fn indexes() -> Vec<(&'static str, Document)> {
    vec![("userId_1", doc! {"userId": 1})]
}
