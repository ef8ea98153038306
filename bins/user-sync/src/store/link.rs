//! Linking pre-registered records: an application that kept people in a collection of its
//! own before they had a Clerk account (mentees signed up by a coordinator, say) gets the
//! Clerk user id written into each such record once that person's Clerk account has the
//! same email address, verified.
//!
//! Off unless `LINK_COLLECTION` is set. After each batch, for every user it touched, the
//! user's *current* document decides (so the order events arrived in can't link with an
//! address the user no longer has): a verified primary email on a user not deleted links
//! every record in the collection whose email field equals it, ignoring case, and whose id
//! field is missing or null. A record that already holds an id, this one or another, is
//! never touched, so linking twice changes nothing. Each link is recorded in
//! `webhook_events` (`_id` `link:<collection>:<record _id>`, type `user.linked`, outcome
//! `linked`). A record added after its user is linked on that user's next event (or at
//! once with `user-sync backfill --user <id>`, whose snapshot is such an event).

use std::future::IntoFuture;

use bson::{doc, Bson, DateTime, Document};
use futures::TryStreamExt;

use super::command::{self, bounded, Order, Verb};
use super::Store;
use crate::config::LinkConfig;
use crate::domain::{Entity, EVENTS_COLLECTION};
use crate::Result;

/// Most records linked to one user in one batch: a guard against an email field shared by
/// a whole collection (an import that put one address everywhere).
const MOST_PER_USER: i64 = 100;

/// One record linked to one user.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Link {
    /// The Clerk user id written.
    pub(crate) clerk_id: String,
    /// The record's `_id`.
    pub(crate) record: Bson,
    /// The address they share (the user's).
    pub(crate) email: String,
}

/// The filter of records with `email` (any case) and no user id yet.
fn unlinked(config: &LinkConfig, email: &str) -> Document {
    let mut filter = Document::new();
    filter.insert(
        config.email_field.clone(),
        doc! {"$regex": format!("^{}$", escape(email)), "$options": "i"},
    );
    filter.insert(config.id_field.clone(), Bson::Null);
    filter
}

/// `text` with every regular-expression character escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if "\\^$.|?*+()[]{}/-".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The address a user's document links with: its primary email, when verified and the
/// user isn't deleted.
pub(crate) fn address(user: &Document) -> Option<&str> {
    let verified = user.get_bool("emailVerified").unwrap_or(false);
    let deleted = user.get_bool("isDeleted").unwrap_or(false);
    let email = user
        .get_str("email")
        .ok()
        .map(str::trim)
        .filter(|e| !e.is_empty())?;
    (verified && !deleted).then_some(email)
}

/// Links the records of the users `clerk_ids` (those a batch touched) and records each link.
pub(crate) async fn link_users(
    store: &Store,
    config: &LinkConfig,
    clerk_ids: &[&str],
) -> Result<Vec<Link>> {
    if clerk_ids.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<Document> = bounded(async {
        store
            .collection(Entity::User)
            .find(doc! {"clerkId": {"$in": clerk_ids}})
            .projection(doc! {"clerkId": 1, "email": 1, "emailVerified": 1, "isDeleted": 1})
            .await?
            .try_collect()
            .await
    })
    .await??;
    let records = store.primary_collection(&config.collection);
    let mut links = Vec::new();
    for user in &users {
        let (Ok(clerk_id), Some(email)) = (user.get_str("clerkId"), address(user)) else {
            continue;
        };
        let candidates: Vec<Document> = bounded(async {
            records
                .find(unlinked(config, email))
                .projection(doc! {"_id": 1})
                .limit(MOST_PER_USER)
                .await?
                .try_collect()
                .await
        })
        .await??;
        for id in candidates.into_iter().filter_map(|c| c.get("_id").cloned()) {
            if link(&records, config, clerk_id, &id).await? {
                links.push(Link {
                    clerk_id: clerk_id.to_string(),
                    record: id,
                    email: email.to_string(),
                });
            }
        }
    }
    if !links.is_empty() {
        record(store, config, &links).await?;
    }
    Ok(links)
}

/// Writes `clerk_id` into record `id`, conditional on its id field still being empty: a
/// record another replica (or another user with the same address) linked meanwhile stays
/// as it is. Whether it was written.
async fn link(
    records: &mongodb::Collection<Document>,
    config: &LinkConfig,
    clerk_id: &str,
    id: &Bson,
) -> Result<bool> {
    let mut filter = doc! {"_id": id.clone()};
    filter.insert(config.id_field.clone(), Bson::Null);
    let mut set = Document::new();
    set.insert(config.id_field.clone(), clerk_id);
    match bounded(records.update_one(filter, doc! {"$set": set}).into_future()).await? {
        Ok(result) => Ok(result.modified_count == 1),
        // The application's collection refuses this record for good (its own unique index
        // on the id field, a validator, no write right): the record stays unlinked, and
        // the stream goes on. A transient error retries the batch, like any other write.
        Err(e) if permanent(&e) => {
            tracing::warn!(
                clerk_id,
                record = %id,
                collection = config.collection,
                error = %e,
                "cannot link a pre-registered record; left unlinked"
            );
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the database refused a link for good (a write error other than a transient one).
fn permanent(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => {
            super::classify_write_error(w.code, &w.message, "") != super::WriteErrorClass::Transient
        }
        // Unauthorized: a role without write rights on the application's collection.
        mongodb::error::ErrorKind::Command(c) => c.code == 13,
        _ => false,
    }
}

/// The `webhook_events` record of a link.
fn audit_record(config: &LinkConfig, link: &Link, now: DateTime) -> Document {
    let record_id = match &link.record {
        Bson::ObjectId(id) => id.to_hex(),
        Bson::String(s) => s.clone(),
        other => other.to_string(),
    };
    doc! {
        "_id": format!("link:{}:{record_id}", config.collection),
        "type": "user.linked",
        "subject": &link.clerk_id,
        "outcome": "linked",
        "processedAt": now,
        "payload": {
            "collection": &config.collection,
            "recordId": link.record.clone(),
            "email": &link.email,
        },
    }
}

async fn record(store: &Store, config: &LinkConfig, links: &[Link]) -> Result<()> {
    let now = DateTime::now();
    let documents: Vec<Document> = links.iter().map(|l| audit_record(config, l, now)).collect();
    let outcome = command::run(
        store,
        Verb::Insert,
        Order::Any,
        EVENTS_COLLECTION,
        &documents,
    )
    .await?;
    // A record already there (the same link seen by a retried batch) is fine.
    for result in outcome.results {
        if let Err(e) = result {
            if e.code != 11000 {
                tracing::warn!(code = e.code, error = %e.message, "cannot record a link");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LinkConfig {
        LinkConfig {
            collection: "mentorados".into(),
            email_field: "contact.email".into(),
            id_field: "clerkUserId".into(),
        }
    }

    #[test]
    fn the_filter_matches_the_whole_address_in_any_case_and_only_unlinked_records() {
        let filter = unlinked(&config(), "a.b+tag@example.com");
        assert_eq!(
            filter,
            doc! {
                "contact.email": {"$regex": "^a\\.b\\+tag@example\\.com$", "$options": "i"},
                "clerkUserId": Bson::Null,
            }
        );
    }

    #[test]
    fn only_a_verified_address_of_a_live_user_links() {
        let user = |email: Bson, verified: bool, deleted: bool| {
            doc! {"clerkId": "user_1", "email": email, "emailVerified": verified, "isDeleted": deleted}
        };
        assert_eq!(address(&user("a@x.io".into(), true, false)), Some("a@x.io"));
        assert_eq!(address(&user("a@x.io".into(), false, false)), None);
        assert_eq!(address(&user("a@x.io".into(), true, true)), None);
        assert_eq!(address(&user(Bson::Null, true, false)), None);
        assert_eq!(address(&user(" ".into(), true, false)), None);
    }

    #[test]
    fn a_link_is_recorded_under_an_id_of_its_own() {
        let link = Link {
            clerk_id: "user_1".into(),
            record: Bson::ObjectId(bson::oid::ObjectId::from_bytes([1; 12])),
            email: "a@x.io".into(),
        };
        let record = audit_record(&config(), &link, DateTime::from_millis(0));
        assert_eq!(
            record.get_str("_id").unwrap(),
            "link:mentorados:010101010101010101010101"
        );
        assert_eq!(record.get_str("outcome").unwrap(), "linked");
        assert_eq!(record.get_str("subject").unwrap(), "user_1");
    }
}
