//! `user.*` → `users`: one document per Clerk user, fields from the normalized record.

use bson::{doc, Bson, DateTime, Document};
use events::{EventMessage, Record, UserRecord};

use super::{deletion, profile, Entity, Intent};

pub(super) fn change(message: &EventMessage) -> Result<Option<Vec<Intent>>, String> {
    let Record::User(user) = &message.record else {
        return Err(format!("{} without a user record", message.event_type));
    };
    if user.deleted || message.event_type == "user.deleted" {
        return Ok(Some(vec![deletion(Entity::User, &user.id, message)]));
    }
    if !matches!(message.event_type.as_str(), "user.created" | "user.updated") {
        return Ok(None);
    }
    Ok(Some(vec![profile(Entity::User, &user.id, fields(user))]))
}

pub(super) fn defaults() -> Document {
    fields(&UserRecord::default())
}

/// The contract's user fields.
fn fields(user: &UserRecord) -> Document {
    let text = |v: &Option<String>| v.clone().map_or(Bson::Null, Bson::String);
    let date =
        |ms: Option<i64>| ms.map_or(Bson::Null, |ms| Bson::DateTime(DateTime::from_millis(ms)));
    doc! {
        "email": text(&user.primary_email),
        "emailVerified": user.email_verified,
        "firstName": text(&user.first_name),
        "lastName": text(&user.last_name),
        "username": text(&user.username),
        "imageUrl": text(&user.image_url),
        "lastSignInAt": date(user.last_sign_in_at),
        "clerkCreatedAt": date(user.created_at),
        "clerkUpdatedAt": date(user.updated_at),
    }
}
