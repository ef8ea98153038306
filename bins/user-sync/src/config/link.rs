//! Linking pre-registered records: `LINK_*`.

use common::ConfigError;

use super::env::Env;
use super::mongo::MongoConfig;
use crate::domain::EVENTS_COLLECTION;

/// The `LINK_*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkConfig {
    /// `LINK_COLLECTION`: the application's collection of pre-registered records.
    pub(crate) collection: String,
    /// `LINK_EMAIL_FIELD` (default `email`): the field holding the address.
    pub(crate) email_field: String,
    /// `LINK_CLERK_ID_FIELD` (default `clerkId`): the field that gets the Clerk user id.
    pub(crate) id_field: String,
}

/// The `LINK_*` settings: `None` without `LINK_COLLECTION`.
pub(super) fn link_config(
    env: &Env,
    mongo: &MongoConfig,
) -> Result<Option<LinkConfig>, ConfigError> {
    let text = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let Some(collection) = text(&env.link_collection) else {
        for (name, value) in [
            ("LINK_EMAIL_FIELD", &env.link_email_field),
            ("LINK_CLERK_ID_FIELD", &env.link_clerk_id_field),
        ] {
            if text(value).is_some() {
                return Err(ConfigError::new(name, "needs LINK_COLLECTION"));
            }
        }
        return Ok(None);
    };
    let ours = [
        mongo.users_collection.as_str(),
        mongo.organizations_collection.as_str(),
        mongo.memberships_collection.as_str(),
        mongo.sessions_collection.as_str(),
        EVENTS_COLLECTION,
    ];
    if ours.contains(&collection.as_str()) || collection.starts_with("system.") {
        return Err(ConfigError::new(
            "LINK_COLLECTION",
            "must be the application's own collection, not one user-sync keeps",
        ));
    }
    let field = |name: &str, value: &Option<String>, default: &str| {
        let field = text(value).unwrap_or_else(|| default.to_string());
        if field.starts_with('$') || field.split('.').any(str::is_empty) {
            return Err(ConfigError::new(
                name,
                "is not a field name (a.b.c, no leading $)",
            ));
        }
        Ok(field)
    };
    let email_field = field("LINK_EMAIL_FIELD", &env.link_email_field, "email")?;
    let id_field = field("LINK_CLERK_ID_FIELD", &env.link_clerk_id_field, "clerkId")?;
    if email_field == id_field {
        return Err(ConfigError::new(
            "LINK_CLERK_ID_FIELD",
            "must differ from LINK_EMAIL_FIELD",
        ));
    }
    Ok(Some(LinkConfig {
        collection,
        email_field,
        id_field,
    }))
}
