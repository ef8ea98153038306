//! `user-sync show-user <clerk id>`: one user's document, as the application reads it.

use crate::domain::Entity;
use crate::store::Store;
use crate::Result;

/// The user's document as relaxed extended JSON (dates as ISO strings), if there is one.
pub async fn document(store: &Store, clerk_id: &str) -> Result<Option<serde_json::Value>> {
    let user = store
        .collection(Entity::User)
        .find_one(bson::doc! {"clerkId": clerk_id})
        .await?;
    Ok(user.map(|user| bson::Bson::Document(user).into_relaxed_extjson()))
}
