//! `organizationInvitation.*` → `organizationInvitations`: one document per invitation id
//! (the topic keys them by organization, with its memberships).
//!
//! An invitation is `pending` until it is `accepted` or `revoked` (or, in the Backend
//! API's lists, `expired`); those end it the way a terminal status ends a session: the
//! earliest by version sets `status` (and, for an acceptance, the `userId` who accepted),
//! and no later `pending` replaces it.
//!
//! Only the acceptance webhook names who accepted. A Backend API snapshot that says
//! `accepted` without naming the user sets the status under the `Status` rule instead:
//! were it final, a snapshot earlier by version than the webhook (the same `updated_at`,
//! and `backfill:` sorts before `msg_`) would refuse the webhook's end, and `userId` would
//! stay empty in one delivery order and be set in the other. This way the webhook's end
//! lands whenever it comes, and the snapshot's status holds until it does.

use bson::{doc, Document};
use events::{EventMessage, Record};

use super::{deletion, nulls, profile, Data, Entity, Intent, Slot};

/// Statuses after which an invitation is never pending again.
const FINAL: [&str; 3] = ["accepted", "revoked", "expired"];

const FIELDS: [&str; 9] = [
    "organizationId",
    "emailAddress",
    "role",
    "status",
    "userId",
    "expiresAt",
    "publicMetadata",
    "clerkCreatedAt",
    "clerkUpdatedAt",
];

pub(super) fn change(message: &EventMessage, data: &Data) -> Result<Option<Vec<Intent>>, String> {
    let (id, organization_id, deleted) = match &message.record {
        Record::Organization {
            id,
            organization_id,
            deleted,
        } => (id.as_str(), Some(organization_id.as_str()), *deleted),
        Record::Other { id: Some(id) } => (id.as_str(), None, false),
        _ => return Err(format!("{} without an invitation id", message.event_type)),
    };
    if deleted {
        return Ok(Some(vec![deletion(Entity::Invitation, id, message)]));
    }
    // The payload's status; an event without one says it by its type.
    let status = match data.text(&["status"]) {
        bson::Bson::String(status) => status,
        _ => match message.event_type.strip_prefix("organizationInvitation.") {
            Some("created") | None => "pending".to_string(),
            Some(other) => other.to_string(),
        },
    };
    let mut set = Document::new();
    set.insert(
        "organizationId",
        organization_id.map_or_else(|| data.text(&["organization_id"]), Into::into),
    );
    set.insert("emailAddress", data.text(&["email_address"]));
    set.insert("role", data.text(&["role"]));
    set.insert("expiresAt", data.date(&["expires_at"]));
    set.insert("publicMetadata", data.any(&["public_metadata"]));
    set.insert("clerkCreatedAt", data.date(&["created_at"]));
    set.insert("clerkUpdatedAt", data.date(&["updated_at"]));
    let intent = |slot, set| Intent {
        entity: Entity::Invitation,
        id: id.to_string(),
        slot,
        set,
        at: None,
    };
    let unnamed_acceptance = status == "accepted" && data.value(&["user_id"]).is_none();
    Ok(Some(
        if FINAL.contains(&status.as_str()) && !unnamed_acceptance {
            let mut end = doc! {"status": &status};
            if status == "accepted" {
                end.insert("userId", data.text(&["user_id"]));
            }
            vec![
                intent(Slot::Final, end),
                profile(Entity::Invitation, id, set),
            ]
        } else {
            vec![
                profile(Entity::Invitation, id, set),
                intent(Slot::Status, doc! {"status": &status}),
            ]
        },
    ))
}

pub(super) fn defaults() -> Document {
    nulls(&FIELDS)
}

/// "The pending invitations of organization O" and "the invitations sent to this address".
pub(super) fn indexes() -> Vec<(&'static str, Document)> {
    vec![
        (
            "organizationId_1_status_1",
            doc! {"organizationId": 1, "status": 1},
        ),
        ("emailAddress_1", doc! {"emailAddress": 1}),
    ]
}
