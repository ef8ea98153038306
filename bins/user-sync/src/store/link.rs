//! Linking pre-registered records: an application that kept people in a collection of its
//! own before they had a Clerk account (mentees signed up by a coordinator, say) gets the
//! Clerk user id written into each such record once that person's Clerk account has the
//! same email address, verified.
//!
//! Off unless `LINK_COLLECTION` is set. After each batch, for every user it touched, the
//! user's *current* document decides (so the order events arrived in can't link with an
//! address the user no longer has): a verified primary email on a user not deleted links
//! every record in the collection whose email field equals it, ignoring case, and whose id
//! field is missing or null. (Ignoring case the MongoDB way: an equality under a
//! case-insensitive collation, which an index with that collation serves; a server without
//! collations gets an anchored case-insensitive pattern, which scans.) A record that
//! already holds an id, this one or another, is
//! never touched, so linking twice changes nothing. Each link is recorded in
//! `webhook_events` (`_id` `link:<collection>:<record _id>`, type `user.linked`, outcome
//! `linked`). A record added after its user is linked on that user's next event (or at
//! once with `user-sync backfill --user <id>`, whose snapshot is such an event).

use std::future::IntoFuture;

use bson::{doc, Bson, DateTime, Document};
use mongodb::options::{Collation, CollationStrength};
use mongodb::IndexModel;

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

/// How records are found by address, whatever its case.
#[derive(Debug, Clone)]
pub(crate) enum Matching {
    /// An equality under a case-insensitive collation: the collation of an index on the
    /// email field when there is one (a query uses an index only under the index's own
    /// collation), else [`case_insensitive`].
    Collation(Collation),
    /// An anchored case-insensitive regular expression, for a server without collations
    /// (FerretDB, DocumentDB). It can't use tight index bounds: a scan per user.
    Pattern,
}

impl Default for Matching {
    /// Under [`case_insensitive`], until start-up says otherwise.
    fn default() -> Self {
        Matching::Collation(case_insensitive())
    }
}

/// English, ignoring case but not accents (strength 2).
fn case_insensitive() -> Collation {
    Collation::builder()
        .locale("en")
        .strength(CollationStrength::Secondary)
        .build()
}

/// Whether `collation` ignores case: strength 1 or 2, without a case level, and not a
/// Turkic locale (where `I` doesn't fold to `i`, so it would miss addresses). A collation
/// that also equates more (accents at strength 1, punctuation with `alternate: shifted`)
/// only finds more candidates: [`same_address`] keeps those that differ by case alone.
fn ignores_case(collation: &Collation) -> bool {
    let turkic = matches!(collation.locale.split(['_', '@']).next(), Some("tr" | "az"));
    matches!(
        collation.strength,
        Some(CollationStrength::Primary | CollationStrength::Secondary)
    ) && collation.case_level != Some(true)
        && !turkic
}

/// Whether the record holds `email` at `field` (a dotted path, through arrays), ignoring
/// case only: a collation also equates `ß` and `ss`, or full-width and plain letters, and
/// a record linked by mistake gives someone else's account to a person.
fn same_address(record: &Document, field: &str, email: &str) -> bool {
    let wanted = email.to_lowercase();
    let mut parts = field.split('.');
    let mut level: Vec<&Bson> = parts
        .next()
        .and_then(|first| record.get(first))
        .into_iter()
        .collect();
    // Through the documents of an array, as MongoDB reads a dotted path.
    for part in parts {
        level = level
            .into_iter()
            .flat_map(elements)
            .filter_map(|v| v.as_document()?.get(part))
            .collect();
    }
    level
        .into_iter()
        .flat_map(elements)
        .any(|v| v.as_str().is_some_and(|s| s.to_lowercase() == wanted))
}

/// An array's elements, or the value itself.
fn elements(value: &Bson) -> Vec<&Bson> {
    match value {
        Bson::Array(items) => items.iter().collect(),
        value => vec![value],
    }
}

/// How to find records, given the link collection's indexes: under the collation of an
/// index that leads with the email field and ignores case; else under the default one, with
/// the warning that names the index to create.
pub(crate) fn matching(config: &LinkConfig, indexes: &[IndexModel]) -> (Matching, Option<String>) {
    let serving = indexes.iter().find_map(|index| {
        let first = index.keys.keys().next()?;
        let collation = index.options.as_ref()?.collation.as_ref()?;
        (first == &config.email_field && ignores_case(collation)).then(|| collation.clone())
    });
    match serving {
        Some(collation) => (Matching::Collation(collation), None),
        None => (
            Matching::Collation(case_insensitive()),
            Some(format!(
                "{collection} has no index on {field} with a case-insensitive collation: each \
                 linked user's lookup reads the whole collection. Create one: \
                 db.{collection}.createIndex({{\"{field}\": 1}}, {{collation: {{locale: \"en\", strength: 2}}}})",
                collection = config.collection,
                field = config.email_field,
            )),
        ),
    }
}

/// The filter of records with `email` (any case, as `matching` says) and no user id yet.
fn unlinked(config: &LinkConfig, email: &str, matching: &Matching) -> Document {
    let mut filter = Document::new();
    let address = match matching {
        Matching::Collation(_) => Bson::String(email.to_string()),
        // `\z`, not `$`: `$` also matches before a final newline.
        Matching::Pattern => {
            Bson::Document(doc! {"$regex": format!("^{}\\z", escape(email)), "$options": "i"})
        }
    };
    filter.insert(config.email_field.clone(), address);
    filter.insert(config.id_field.clone(), Bson::Null);
    filter
}

/// Codes of a server that has no collations: CommandNotSupported (DocumentDB),
/// NotImplemented (FerretDB).
const NO_COLLATIONS: [i32; 2] = [115, 238];

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
    let find = store
        .collection(Entity::User)
        .find(doc! {"clerkId": {"$in": clerk_ids}})
        .projection(doc! {"clerkId": 1, "email": 1, "emailVerified": 1, "isDeleted": 1});
    let users = command::find_all(store, store.collection_name(Entity::User), find).await??;
    let records = store.primary_collection(&config.collection);
    let mut links = Vec::new();
    for user in &users {
        let (Ok(clerk_id), Some(email)) = (user.get_str("clerkId"), address(user)) else {
            continue;
        };
        let candidates = candidates(store, &records, config, email).await?;
        for id in candidates.into_iter().filter_map(|c| c.get("_id").cloned()) {
            if link(store, &records, config, clerk_id, &id).await? {
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

/// The unlinked records with `email`, as the store matches them; a server that turns out
/// to have no collations is matched by pattern from then on.
async fn candidates(
    store: &Store,
    records: &mongodb::Collection<Document>,
    config: &LinkConfig,
    email: &str,
) -> Result<Vec<Document>> {
    let matching = store.link_matching();
    let find = |matching: Matching| async move {
        let mut find = records
            .find(unlinked(config, email, &matching))
            .projection(doc! {"_id": 1, &config.email_field: 1})
            .limit(MOST_PER_USER);
        if let Matching::Collation(collation) = matching {
            find = find.collation(collation);
        }
        command::find_all(store, &config.collection, find).await
    };
    let found = match find(matching.clone()).await? {
        Ok(found) => found,
        Err(e)
            if matches!(matching, Matching::Collation(_))
                && super::error_code(&e).is_some_and(|c| NO_COLLATIONS.contains(&c)) =>
        {
            tracing::warn!(
                collection = config.collection,
                error = %e,
                "the server has no collations: records are matched by a case-insensitive pattern, which reads the whole collection"
            );
            store.set_link_matching(Matching::Pattern);
            find(Matching::Pattern).await??
        }
        Err(e) => return Err(e.into()),
    };
    Ok(found
        .into_iter()
        .filter(|record| same_address(record, &config.email_field, email))
        .collect())
}

/// Writes `clerk_id` into record `id`, conditional on its id field still being empty: a
/// record another replica (or another user with the same address) linked meanwhile stays
/// as it is. Whether it was written.
async fn link(
    store: &Store,
    records: &mongodb::Collection<Document>,
    config: &LinkConfig,
    clerk_id: &str,
    id: &Bson,
) -> Result<bool> {
    let mut filter = doc! {"_id": id.clone()};
    filter.insert(config.id_field.clone(), Bson::Null);
    let mut set = Document::new();
    set.insert(config.id_field.clone(), clerk_id);
    store.traffic().count("update", &config.collection, 1);
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
        &command::serialized(&documents)?,
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
        let collation = Matching::Collation(case_insensitive());
        assert_eq!(
            unlinked(&config(), "a.b+tag@example.com", &collation),
            doc! {"contact.email": "a.b+tag@example.com", "clerkUserId": Bson::Null}
        );
        // Anchored at the very end: `$` would also match "…com\n".
        assert_eq!(
            unlinked(&config(), "a.b+tag@example.com", &Matching::Pattern),
            doc! {
                "contact.email": {"$regex": "^a\\.b\\+tag@example\\.com\\z", "$options": "i"},
                "clerkUserId": Bson::Null,
            }
        );
    }

    #[test]
    fn a_candidate_links_only_if_its_address_differs_by_case_alone() {
        let field = "contact.email";
        let record = |email: Bson| doc! {"_id": 1, "contact": {"email": email}};
        assert!(same_address(
            &record("Ada@Example.COM".into()),
            field,
            "ada@example.com"
        ));
        // What a collation also equates, and the old `$` also matched.
        for (stored, user) in [
            ("ada@exämple.com", "ada@example.com"),
            ("straße@x.io", "strasse@x.io"),
            ("ada@example.com\n", "ada@example.com"),
            ("ａda@example.com", "ada@example.com"),
        ] {
            assert!(
                !same_address(&record(stored.into()), field, user),
                "{stored:?}"
            );
        }
        // Through an array of contacts, or an array of addresses.
        let many = doc! {"contact": [{"email": "x@y.z"}, {"email": "ADA@example.com"}]};
        assert!(same_address(&many, field, "ada@example.com"));
        let list = doc! {"contact": {"email": ["x@y.z", "Ada@example.com"]}};
        assert!(same_address(&list, field, "ada@example.com"));
        assert!(!same_address(
            &doc! {"contact": "ada@example.com"},
            field,
            "ada@example.com"
        ));
    }

    #[test]
    fn records_are_found_under_the_collation_of_an_index_that_ignores_case() {
        let index = |keys: Document, collation: Option<Collation>| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    mongodb::options::IndexOptions::builder()
                        .collation(collation)
                        .build(),
                )
                .build()
        };
        let french = Collation::builder()
            .locale("fr")
            .strength(CollationStrength::Primary)
            .build();
        let case_sensitive = Collation::builder()
            .locale("en")
            .strength(CollationStrength::Tertiary)
            .build();
        let with_case_level = Collation::builder()
            .locale("en")
            .strength(CollationStrength::Secondary)
            .case_level(true)
            .build();
        let turkish = Collation::builder()
            .locale("tr")
            .strength(CollationStrength::Secondary)
            .build();
        let indexes = [
            index(doc! {"contact.email": 1}, None),
            index(doc! {"contact.email": 1}, Some(case_sensitive)),
            index(doc! {"contact.email": 1}, Some(with_case_level)),
            index(doc! {"contact.email": 1}, Some(turkish)),
            index(doc! {"other": 1, "contact.email": 1}, Some(french.clone())),
        ];
        let (m, warning) = matching(&config(), &indexes);
        assert!(matches!(m, Matching::Collation(c) if c.locale == "en"));
        let warning = warning.expect("no index serves it");
        assert!(
            warning.contains(r#"db.mentorados.createIndex({"contact.email": 1}, {collation: {locale: "en", strength: 2}})"#),
            "{warning}"
        );
        let mut with = indexes.to_vec();
        with.push(index(doc! {"contact.email": 1, "name": 1}, Some(french)));
        let (m, warning) = matching(&config(), &with);
        assert!(matches!(m, Matching::Collation(c) if c.locale == "fr"));
        assert_eq!(warning, None);
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
