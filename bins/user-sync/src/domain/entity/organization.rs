//! `organization.*` → `organizations`.

use bson::Document;
use events::{EventMessage, Record};

use super::{deletion, nulls, profile, Data, Entity, Intent};

const FIELDS: [&str; 8] = [
    "name",
    "slug",
    "imageUrl",
    "membersCount",
    "publicMetadata",
    "createdBy",
    "clerkCreatedAt",
    "clerkUpdatedAt",
];

pub(super) fn change(message: &EventMessage, data: &Data) -> Result<Option<Vec<Intent>>, String> {
    let (id, deleted) = match &message.record {
        Record::Organization { id, deleted, .. } => (id.as_str(), *deleted),
        // A payload whose shape surprised the normalizer: its id still names the document.
        Record::Other { id: Some(id) } => (id.as_str(), false),
        _ => return Err(format!("{} without an organization id", message.event_type)),
    };
    if deleted || message.event_type == "organization.deleted" {
        return Ok(Some(vec![deletion(Entity::Organization, id, message)]));
    }
    if !matches!(
        message.event_type.as_str(),
        "organization.created" | "organization.updated"
    ) {
        return Ok(None);
    }
    let mut set = Document::new();
    set.insert("name", data.text(&["name"]));
    set.insert("slug", data.text(&["slug"]));
    set.insert("imageUrl", data.text(&["image_url"]));
    set.insert("membersCount", data.int(&["members_count"]));
    set.insert("publicMetadata", data.any(&["public_metadata"]));
    set.insert("createdBy", data.text(&["created_by"]));
    set.insert("clerkCreatedAt", data.date(&["created_at"]));
    set.insert("clerkUpdatedAt", data.date(&["updated_at"]));
    Ok(Some(vec![profile(Entity::Organization, id, set)]))
}

pub(super) fn defaults() -> Document {
    nulls(&FIELDS)
}
