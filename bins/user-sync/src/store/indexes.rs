//! Which of a collection's existing indexes user-sync uses as they are, which it creates,
//! and which stop it, decided without I/O from `listIndexes`.
//!
//! MongoDB refuses a second index on the same keys under another name (IndexOptionsConflict,
//! 85), so an index user-sync wants that an application (an ORM: Prisma's
//! `Session_userId_idx`) already made with the same keys is used, whatever its name.

use bson::Document;
use mongodb::IndexModel;

use super::integer;

/// The name of an index (empty if the server gave none).
fn name(index: &IndexModel) -> String {
    index
        .options
        .as_ref()
        .and_then(|o| o.name.clone())
        .unwrap_or_default()
}

/// Whether two key patterns are the same index: the same fields in the same order, each in
/// the same direction (1, 1.0 and 1L alike) or of the same kind (`"text"`, `"hashed"`).
fn same_keys(a: &Document, b: &Document) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, va), (kb, vb))| {
            ka == kb
                && match (integer(va), integer(vb)) {
                    (Some(x), Some(y)) => x == y,
                    _ => va == vb,
                }
        })
}

/// What to do about the unique index on `{clerkId: 1}` of `collection`, given its indexes:
/// `Ok(Some(name))` use that one, `Ok(None)` create `clerkId_unique`, `Err` why start-up
/// stops (the message says what to change).
pub(super) fn clerk_id_index(
    collection: &str,
    existing: &[IndexModel],
) -> Result<Option<String>, String> {
    let keys = bson::doc! {"clerkId": 1};
    let Some(index) = existing.iter().find(|i| same_keys(&i.keys, &keys)) else {
        return Ok(None);
    };
    let index_name = name(index);
    let options = index.options.as_ref();
    if !options.and_then(|o| o.unique).unwrap_or(false) {
        return Err(format!(
            "the index {index_name} on {collection}.clerkId is not unique; drop it or make it \
             unique (user-sync needs one document per clerkId)"
        ));
    }
    // A partial unique index (a soft-delete filter such as {isDeleted: false}) holds only
    // some documents: an upsert whose filter misses the one that exists, outside the index,
    // inserts a second document for the same Clerk id.
    if let Some(filter) = options.and_then(|o| o.partial_filter_expression.as_ref()) {
        return Err(format!(
            "the unique index {index_name} on {collection}.clerkId is partial \
             (partialFilterExpression {filter}): a document outside it (a deleted one, say) \
             doesn't count, and user-sync would insert a second document for the same \
             clerkId. Drop it and create it without partialFilterExpression: \
             db.{collection}.createIndex({{clerkId: 1}}, {{unique: true}})"
        ));
    }
    // A collation other than the simple one compares ids by ICU rules (at strength 1 or 2,
    // ids that differ only in case are equal).
    if let Some(locale) = options
        .and_then(|o| o.collation.as_ref())
        .map(|c| c.locale.as_str())
        .filter(|l| *l != "simple")
    {
        return Err(format!(
            "the unique index {index_name} on {collection}.clerkId has the collation \
             {locale}: Clerk ids are compared byte for byte. Drop it and create it with the \
             simple collation: db.{collection}.createIndex({{clerkId: 1}}, {{unique: true, \
             collation: {{locale: \"simple\"}}}})"
        ));
    }
    Ok(Some(index_name))
}

/// The indexes of `wanted` (name, keys) that no existing index serves: one with the same
/// keys serves, whatever its name.
pub(super) fn missing<'a>(
    existing: &[IndexModel],
    wanted: &'a [(&'static str, Document)],
) -> Vec<&'a (&'static str, Document)> {
    wanted
        .iter()
        .filter(|(_, keys)| !existing.iter().any(|i| same_keys(&i.keys, keys)))
        .collect()
}

#[cfg(test)]
mod tests {
    use bson::doc;
    use mongodb::options::{Collation, IndexOptions};

    use super::*;

    fn index(keys: Document, options: IndexOptions) -> IndexModel {
        IndexModel::builder().keys(keys).options(options).build()
    }

    fn named(name: &str) -> IndexOptions {
        IndexOptions::builder().name(name.to_string()).build()
    }

    #[test]
    fn an_index_with_the_same_keys_serves_whatever_its_name() {
        let wanted = vec![
            ("userId_1", doc! {"userId": 1}),
            (
                "organizationId_1_userId_1",
                doc! {"organizationId": 1, "userId": 1},
            ),
        ];
        let existing = vec![
            index(doc! {"userId": 1.0}, named("Session_userId_idx")),
            // Same fields, other order: another index.
            index(doc! {"userId": 1, "organizationId": 1}, named("x")),
        ];
        let absent: Vec<&str> = missing(&existing, &wanted).iter().map(|w| w.0).collect();
        assert_eq!(absent, ["organizationId_1_userId_1"]);
        let descending = vec![index(doc! {"userId": -1}, named("d"))];
        assert_eq!(missing(&descending, &wanted).len(), 2, "direction counts");
    }

    #[test]
    fn a_clerk_id_index_is_used_only_if_unique_whole_and_simple() {
        let unique = |more: IndexOptions| {
            let mut o = more;
            o.unique = Some(true);
            o.name = Some("User_clerkId_key".into());
            vec![index(doc! {"clerkId": 1_i64}, o)]
        };
        assert_eq!(clerk_id_index("users", &[]), Ok(None));
        assert_eq!(
            clerk_id_index("users", &unique(IndexOptions::default())),
            Ok(Some("User_clerkId_key".into()))
        );
        let not_unique = vec![index(doc! {"clerkId": 1}, named("c"))];
        assert!(clerk_id_index("users", &not_unique)
            .unwrap_err()
            .contains("not unique"));
        let partial = IndexOptions::builder()
            .partial_filter_expression(doc! {"isDeleted": false})
            .build();
        let e = clerk_id_index("users", &unique(partial)).unwrap_err();
        assert!(
            e.contains("partial") && e.contains("User_clerkId_key"),
            "{e}"
        );
        let collated = |locale: &str| {
            IndexOptions::builder()
                .collation(Collation::builder().locale(locale).build())
                .build()
        };
        let e = clerk_id_index("users", &unique(collated("en"))).unwrap_err();
        assert!(e.contains("collation en"), "{e}");
        assert!(clerk_id_index("users", &unique(collated("simple"))).is_ok());
        // A compound index that starts with clerkId is not the one.
        let compound = vec![index(doc! {"clerkId": 1, "x": 1}, named("cx"))];
        assert_eq!(clerk_id_index("users", &compound), Ok(None));
    }
}
