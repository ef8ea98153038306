//! `organizationMembership.*` → `organizationMemberships`: one document per membership id
//! (the topic keys them by organization, so one organization's events stay in order).

use bson::{doc, Document};
use events::{EventMessage, Record};

use super::{deletion, nulls, profile, Data, Entity, Intent};

const FIELDS: [&str; 6] = [
    "organizationId",
    "userId",
    "role",
    "permissions",
    "clerkCreatedAt",
    "clerkUpdatedAt",
];

pub(super) fn change(message: &EventMessage, data: &Data) -> Result<Option<Vec<Intent>>, String> {
    let id = match &message.record {
        Record::OrganizationMembership { id, .. } => id.as_str(),
        Record::Other { id: Some(id) } => id.as_str(),
        _ => return Err(format!("{} without a membership id", message.event_type)),
    };
    if message.event_type == "organizationMembership.deleted" {
        return Ok(Some(vec![deletion(Entity::Membership, id, message)]));
    }
    if !matches!(
        message.event_type.as_str(),
        "organizationMembership.created" | "organizationMembership.updated"
    ) {
        return Ok(None);
    }
    let Record::OrganizationMembership {
        organization_id, ..
    } = &message.record
    else {
        return Err(format!(
            "{}: data.organization.id is missing",
            message.event_type
        ));
    };
    let mut set = Document::new();
    set.insert("organizationId", organization_id.as_str());
    set.insert("userId", data.text(&["public_user_data", "user_id"]));
    set.insert("role", data.text(&["role"]));
    set.insert("permissions", data.any(&["permissions"]));
    set.insert("clerkCreatedAt", data.date(&["created_at"]));
    set.insert("clerkUpdatedAt", data.date(&["updated_at"]));
    Ok(Some(vec![profile(Entity::Membership, id, set)]))
}

pub(super) fn defaults() -> Document {
    nulls(&FIELDS)
}

/// "The memberships of user X" and "is X a member of O".
pub(super) fn indexes() -> Vec<(&'static str, Document)> {
    vec![
        ("userId_1", doc! {"userId": 1}),
        (
            "organizationId_1_userId_1",
            doc! {"organizationId": 1, "userId": 1},
        ),
    ]
}
