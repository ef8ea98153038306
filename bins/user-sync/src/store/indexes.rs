//! Which of a collection's existing indexes user-sync uses as they are, which it creates,
//! and which stop it, decided without I/O from `listIndexes`.
//!
//! MongoDB refuses a second index on the same keys under another name (IndexOptionsConflict,
//! 85), so an index user-sync wants that an application (an ORM: Prisma's
//! `Session_userId_idx`) already made with the same keys is used, whatever its name.

use bson::{Bson, Document};
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
    // MongoDB allows several indexes on one key pattern when their collations differ (a
    // case-blind one for the application's searches, say): one usable is enough.
    let verdicts: Vec<Result<String, String>> = existing
        .iter()
        .filter(|i| same_keys(&i.keys, &keys))
        .map(|i| usable_clerk_id_index(collection, i))
        .collect();
    match verdicts.iter().find_map(|v| v.as_ref().ok()) {
        Some(name) => Ok(Some(name.clone())),
        None => match verdicts.into_iter().next() {
            Some(Err(problem)) => Err(problem),
            _ => Ok(None),
        },
    }
}

/// `index` (on `{clerkId: 1}`) as user-sync's one-document-per-id guarantee: its name, or
/// why it can't be.
fn usable_clerk_id_index(collection: &str, index: &IndexModel) -> Result<String, String> {
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
    Ok(index_name)
}

/// The application's unique indexes on `collection` that would refuse documents user-sync
/// must be able to write, each with what to change: the message of start-up's refusal.
///
/// A unique index holds one document per key, and MongoDB counts a missing field as null
/// (the manual's "Unique Index and Missing Field"): user-sync writes documents without an
/// email (the tombstone of a user it never saw, a phone-only user, one known so far only
/// from its sessions), and the second such document would be refused. A partial index
/// whose filter leaves out null on one of its fields (`$type`, a comparison: not
/// `$exists: true`, which holds a null) leaves those out; a sparse one skips a missing
/// field but holds a null one, so it serves only fields user-sync never writes (`nullable`
/// lists those it writes, null included). An index that includes `clerkId` is unique by
/// it: it refuses nothing more.
pub(super) fn nullable_unique(
    collection: &str,
    existing: &[IndexModel],
    nullable: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    for index in existing {
        let options = index.options.as_ref();
        let fields: Vec<&str> = index.keys.keys().map(String::as_str).collect();
        if !options.and_then(|o| o.unique).unwrap_or(false)
            || fields.iter().any(|f| *f == "_id" || *f == "clerkId")
        {
            continue;
        }
        let partial = options.and_then(|o| o.partial_filter_expression.as_ref());
        let sparse = options.and_then(|o| o.sparse).unwrap_or(false);
        let written: Vec<&str> = fields
            .iter()
            .copied()
            .filter(|f| nullable.contains(&f.split('.').next().unwrap_or(f)))
            .collect();
        let fine = match partial {
            Some(filter) => conditions(filter).any(|(field, condition)| {
                fields.contains(&field.as_str())
                    && excludes_null(condition, !written.contains(&field.as_str()))
            }),
            None => sparse && written.is_empty(),
        };
        if fine {
            continue;
        }
        let keys = &index.keys;
        let name = name(index);
        let filter: Vec<String> = fields
            .iter()
            .map(|f| format!("{f}: {{$type: \"string\"}}"))
            .collect();
        problems.push(format!(
            "the unique index {name} on {collection} ({keys}) counts every document without \
             {fields} as the same value (null), and user-sync writes such documents \
             (a deleted user it never saw, a user without an email): the second would be \
             refused. Recreate it partial, so that it holds only documents that have a value \
             (with the type your values have): db.{collection}.dropIndex(\"{name}\"); \
             db.{collection}.createIndex({keys}, {{unique: true, partialFilterExpression: \
             {{{}}}}})",
            filter.join(", "),
            fields = fields.join(", "),
        ));
    }
    problems
}

/// Why `collection`, created with the default collation `collation`, can't be synced into,
/// if it can't. A collection's collation applies to every query and update that names none:
/// ICU order differs from byte order (so `$lt` on version stamps could disagree with the
/// order rules), and at strength 1 or 2 ids that differ only in case compare equal. It
/// can't be changed once the collection exists.
pub(super) fn collection_collation(collection: &str, locale: Option<&str>) -> Result<(), String> {
    match locale {
        None | Some("simple") => Ok(()),
        Some(locale) => Err(format!(
            "the collection {collection} has the default collation {locale}: user-sync compares \
             Clerk ids and its version stamps byte for byte, and a collection's collation \
             applies to every query on it (and can't be changed). Point its MONGODB_*_COLLECTION \
             variable at a collection created without a collation (or with {{locale: \
             \"simple\"}}), copying the documents over if they matter"
        )),
    }
}

/// The top-level conditions of a partial filter, `$and` flattened: (field, condition).
fn conditions(filter: &Document) -> impl Iterator<Item = (&String, &Bson)> {
    filter
        .iter()
        .flat_map(|(key, value)| match (key.as_str(), value) {
            ("$and", Bson::Array(all)) => all
                .iter()
                .filter_map(Bson::as_document)
                .flat_map(|d| d.iter())
                .collect::<Vec<_>>(),
            _ => vec![(key, value)],
        })
}

/// Whether a partial filter's `condition` on a field leaves out the documents user-sync
/// writes: those where the field is null, and (`missing_only`: a field user-sync never
/// writes) those without it. `$exists: true` leaves out a missing field but not a null one;
/// `$type` (but "null"), a comparison, or an equality to a value leave out both.
fn excludes_null(condition: &Bson, missing_only: bool) -> bool {
    let Bson::Document(operators) = condition else {
        return !matches!(condition, Bson::Null);
    };
    operators.iter().any(|(op, value)| match op.as_str() {
        "$exists" => missing_only && value.as_bool() == Some(true),
        "$type" => !matches!(value, Bson::String(t) if t == "null") && *value != Bson::Int32(10),
        "$gt" | "$gte" | "$lt" | "$lte" => true,
        "$eq" => !matches!(value, Bson::Null),
        _ => false,
    })
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
    fn a_unique_index_that_would_count_nulls_as_one_value_is_named_with_its_fix() {
        let unique = |keys: Document, more: IndexOptions| {
            let mut o = more;
            o.unique = Some(true);
            o.name = Some("idx".into());
            index(keys, o)
        };
        let nullable = ["email", "firstName"];
        let problems = |indexes: Vec<IndexModel>| nullable_unique("users", &indexes, &nullable);
        // An ORM's `email @unique`.
        let plain = problems(vec![unique(doc! {"email": 1}, IndexOptions::default())]);
        assert_eq!(plain.len(), 1);
        assert!(
            plain[0].contains("idx") && plain[0].contains("partialFilterExpression"),
            "{}",
            plain[0]
        );
        // `$exists: true` still holds the nulls user-sync writes (Mongoose's recipe).
        let exists = IndexOptions::builder()
            .partial_filter_expression(doc! {"email": {"$exists": true}})
            .build();
        assert_eq!(problems(vec![unique(doc! {"email": 1}, exists)]).len(), 1);
        // One null-excluding condition on one of the fields is enough, under $and too.
        let compound = IndexOptions::builder()
            .partial_filter_expression(doc! {"$and": [{"email": {"$type": "string"}}]})
            .build();
        assert!(problems(vec![unique(doc! {"tenantId": 1, "email": 1}, compound)]).is_empty());
        // Partial on the field: fine. Partial on something else (soft delete): not.
        let on_email = IndexOptions::builder()
            .partial_filter_expression(doc! {"email": {"$type": "string"}})
            .build();
        assert!(problems(vec![unique(doc! {"email": 1}, on_email)]).is_empty());
        let soft_delete = IndexOptions::builder()
            .partial_filter_expression(doc! {"isDeleted": false})
            .build();
        assert_eq!(
            problems(vec![unique(doc! {"email": 1}, soft_delete)]).len(),
            1
        );
        // Sparse: fine on a field user-sync never writes, not on one it writes null.
        let sparse = || IndexOptions::builder().sparse(true).build();
        assert!(problems(vec![unique(doc! {"slug": 1}, sparse())]).is_empty());
        assert_eq!(problems(vec![unique(doc! {"email": 1}, sparse())]).len(), 1);
        // A field of the application's own: every document user-sync creates lacks it.
        assert_eq!(
            problems(vec![unique(doc! {"slug": 1}, IndexOptions::default())]).len(),
            1
        );
        // Not unique, or unique by clerkId or _id: nothing to say.
        let plain_index = index(doc! {"email": 1}, named("email_1"));
        let with_clerk_id = unique(doc! {"clerkId": 1, "email": 1}, IndexOptions::default());
        let id = unique(doc! {"_id": 1}, IndexOptions::default());
        assert!(problems(vec![plain_index, with_clerk_id, id]).is_empty());
    }

    #[test]
    fn a_collection_with_a_default_collation_other_than_simple_is_refused() {
        assert!(collection_collation("users", None).is_ok());
        assert!(collection_collation("users", Some("simple")).is_ok());
        let e = collection_collation("users", Some("en")).unwrap_err();
        assert!(e.contains("users") && e.contains("collation en"), "{e}");
        assert!(e.contains("MONGODB_*_COLLECTION"), "{e}");
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
        // A case-blind index for searches beside a good one: the good one serves.
        let case_blind = {
            let mut o = collated("en");
            o.name = Some("search".into());
            index(doc! {"clerkId": 1}, o)
        };
        let mut both = vec![case_blind];
        both.extend(unique(IndexOptions::default()));
        assert_eq!(
            clerk_id_index("users", &both),
            Ok(Some("User_clerkId_key".into()))
        );
        // A compound index that starts with clerkId is not the one.
        let compound = vec![index(doc! {"clerkId": 1, "x": 1}, named("cx"))];
        assert_eq!(clerk_id_index("users", &compound), Ok(None));
    }
}
