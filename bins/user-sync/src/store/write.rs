//! Runs a round of [`Statement`]s: multi-statement `update` commands per collection (see
//! [`super::command`]), and tells what each statement did.
//!
//! Every statement is an upsert whose filter holds its rule. So a statement either
//! matched (applied), inserted (applied), or failed on the unique `clerkId` index: the
//! document exists and the rule didn't admit the write, or another writer created it
//! between our filter and our insert. Those are run again without upsert to tell which.
//!
//! A duplicate key on *another* unique index (an application's `email`) during an upsert
//! is no verdict either: an insert that collides with both indexes is reported for
//! whichever the server checks first (the one created first, on MongoDB), so a statement
//! the rule simply didn't admit can read as a refusal by `email_1`. Those go the same way:
//! without upsert, then the documents tell. Only a duplicate key without upsert (which
//! can't collide on `clerkId`) or on a document that doesn't exist is a refusal.

use std::collections::HashMap;

use bson::{doc, DateTime, Document, RawDocumentBuf};

use super::command::{self, Order, Verb};
use super::{classify_write_error, Store, WriteErrorClass};
use crate::domain::entity::{Entity, Slot};
use crate::domain::plan::{Statement, Written};
use crate::error::WriteFailure;
use crate::Result;

/// Runs `statements` (in their order within each collection) and returns what each did.
pub(crate) async fn execute(
    store: &Store,
    statements: &[Statement],
    now: DateTime,
) -> Result<Vec<Written>> {
    let mut results = vec![Written::NotApplied; statements.len()];
    // One command per collection; statements of one document keep their order.
    let mut by_entity: Vec<(Entity, Vec<usize>)> = Vec::new();
    for (i, s) in statements.iter().enumerate() {
        match by_entity.iter_mut().find(|(e, _)| *e == s.entity) {
            Some((_, indexes)) => indexes.push(i),
            None => by_entity.push((s.entity, vec![i])),
        }
    }
    for (entity, indexes) in by_entity {
        let chosen: Vec<&Statement> = indexes.iter().map(|&i| &statements[i]).collect();
        let written = execute_in(store, entity, &chosen, now).await?;
        for (i, w) in indexes.into_iter().zip(written) {
            results[i] = w;
        }
    }
    Ok(results)
}

/// What happened to one statement of an `update` command.
#[derive(Debug)]
enum Reply {
    Done,
    /// A duplicate key during an upsert. `named`: the server said it was the `clerkId`
    /// index; otherwise it named none, or another index (`refusal`: its message, the
    /// refusal to report if the documents say the event was refused).
    Conflict {
        named: bool,
        refusal: Option<String>,
    },
    Refused(String),
}

/// The statements whose conditional upsert hit a duplicate key.
#[derive(Default)]
struct Conflicts {
    /// Their indexes.
    indexes: Vec<usize>,
    /// Why the server would refuse each, should the key be another unique index's.
    refusals: HashMap<usize, String>,
    /// Whether a duplicate-key error didn't name its index.
    unnamed: bool,
}

/// The first replies, read: done, refused, or a conflict to look into.
fn first_pass(replies: Vec<Reply>) -> (Vec<Written>, Conflicts) {
    let mut conflicts = Conflicts::default();
    let results = replies
        .into_iter()
        .enumerate()
        .map(|(i, reply)| match reply {
            Reply::Done => Written::Applied,
            Reply::Refused(reason) => Written::Refused(reason),
            Reply::Conflict { named, refusal } => {
                conflicts.unnamed |= !named;
                conflicts.indexes.push(i);
                if let Some(refusal) = refusal {
                    conflicts.refusals.insert(i, refusal);
                }
                Written::NotApplied
            }
        })
        .collect();
    (results, conflicts)
}

/// What the documents say of the conflicts still open: a missing document means another
/// unique index refused the upsert; a document holding the statement's stamp after a race
/// (some statement `matched`) means it landed.
fn settle(
    results: &mut [Written],
    mut conflicts: Conflicts,
    statements: &[&Statement],
    docs: &HashMap<String, Document>,
    matched: Option<i64>,
) {
    for &i in &conflicts.indexes {
        let s = statements[i];
        if results[i] != Written::NotApplied {
            continue;
        }
        match docs.get(&s.id) {
            // A conditional upsert of a missing document can only fail on another index.
            None => {
                results[i] = Written::Refused(
                    conflicts
                        .refusals
                        .remove(&i)
                        .unwrap_or_else(|| "duplicate key on a unique index".into()),
                )
            }
            Some(d) if matched.is_some_and(|m| m > 0) && stamped(d, s) => {
                results[i] = Written::Applied
            }
            Some(_) => {}
        }
    }
}

async fn execute_in(
    store: &Store,
    entity: Entity,
    statements: &[&Statement],
    now: DateTime,
) -> Result<Vec<Written>> {
    if store.is_ferretdb() {
        return one_by_one(store, entity, statements, now).await;
    }
    let updates = statements
        .iter()
        .map(|s| statement(s, now, true))
        .collect::<Result<Vec<_>>>()?;
    let order = order_of(statements);
    let (replies, _) = update(store, entity, order, updates, true).await?;
    let (mut results, conflicts) = first_pass(replies);
    if conflicts.indexes.is_empty() {
        return Ok(results);
    }

    // The same statements without upsert. Almost always none matches: the rule said no.
    let updates = conflicts
        .indexes
        .iter()
        .map(|&i| statement(statements[i], now, false))
        .collect::<Result<Vec<_>>>()?;
    let (replies, matched) = update(store, entity, order, updates, false).await?;
    for (&i, reply) in conflicts.indexes.iter().zip(replies) {
        match reply {
            Reply::Done => {}
            Reply::Refused(reason) => results[i] = Written::Refused(reason),
            // Without upsert nothing can conflict on clerkId: another unique index did.
            Reply::Conflict { .. } => {
                results[i] = Written::Refused("duplicate key on a unique index".into())
            }
        }
    }
    let raced = matched != Some(0);
    if !raced && !conflicts.unnamed {
        return Ok(results);
    }
    // A race with another writer (some matched now, or the server didn't say), or a server
    // that doesn't name the index in its duplicate-key errors (FerretDB), whose conflict
    // may have come from another unique index on an insert: the documents tell.
    let ids: Vec<&str> = conflicts
        .indexes
        .iter()
        .map(|&i| statements[i].id.as_str())
        .collect();
    let docs = read(store, entity, &ids, Snapshot::Latest).await?;
    settle(&mut results, conflicts, statements, &docs, matched);
    Ok(results)
}

/// FerretDB: each statement on its own, first as a plain update (which says exactly
/// whether it matched), then, if it didn't, as an upsert that can only insert; a
/// duplicate key then means the document exists and the rule said no, unless no document
/// exists (another unique index refused the insert). Slow, and exact: FerretDB is a
/// stand-in for tests, not a production store.
async fn one_by_one(
    store: &Store,
    entity: Entity,
    statements: &[&Statement],
    now: DateTime,
) -> Result<Vec<Written>> {
    let name = store.collection_name(entity);
    let mut results = Vec::with_capacity(statements.len());
    for s in statements {
        let plain = statement(s, now, false)?;
        let outcome = command::run(store, Verb::Update, Order::Any, name, &[plain]).await?;
        let written = match (outcome.results.into_iter().next(), outcome.matched) {
            // Without upsert nothing can conflict on clerkId: another unique index did.
            (Some(Err(e)), _) if e.code == 11000 => {
                Written::Refused(format!("{} (code 11000)", e.message))
            }
            (Some(Err(e)), _) => Written::Refused(refusal(&e)?),
            (_, Some(n)) if n > 0 => Written::Applied,
            _ => {
                let upsert = statement(s, now, true)?;
                match command::run(store, Verb::Update, Order::Any, name, &[upsert])
                    .await?
                    .results
                    .into_iter()
                    .next()
                {
                    Some(Err(e)) if e.code == 11000 => {
                        let exists = !read(store, entity, &[s.id.as_str()], Snapshot::Latest)
                            .await?
                            .is_empty();
                        if exists {
                            Written::NotApplied
                        } else {
                            Written::Refused(format!("{} (code 11000)", e.message))
                        }
                    }
                    Some(Err(e)) => Written::Refused(refusal(&e)?),
                    _ => Written::Applied,
                }
            }
        };
        results.push(written);
    }
    Ok(results)
}

/// A statement's write error other than a `clerkId` conflict: why the server refuses the
/// statement for good, or an error that fails the whole batch (retried).
fn refusal(e: &command::WriteError) -> Result<String> {
    // (Not a clerkId conflict, whichever index a duplicate key names: the callers read
    // those first.)
    match classify_write_error(e.code, &e.message, "") {
        WriteErrorClass::Permanent => Ok(format!("{} (code {})", e.message, e.code)),
        _ => Err(e.transient().into()),
    }
}

/// In what order a round's statements must run: in any, when each touches its own
/// document; as planned when two touch one (the later one may rely on the earlier one's
/// stamp, and its audit outcome with it).
fn order_of(statements: &[&Statement]) -> Order {
    let mut seen = std::collections::HashSet::new();
    if statements.iter().all(|s| seen.insert(s.id.as_str())) {
        Order::Any
    } else {
        Order::Given
    }
}

/// Whether `doc` holds `s`'s stamp.
fn stamped(doc: &Document, s: &Statement) -> bool {
    doc.get(s.slot.stamp_field()) == Some(&s.stamp) && s.slot != Slot::Pointer
}

/// Runs `update` statements, returning each one's reply and how many documents matched
/// in all (when the server said).
async fn update(
    store: &Store,
    entity: Entity,
    order: Order,
    updates: Vec<RawDocumentBuf>,
    upsert: bool,
) -> Result<(Vec<Reply>, Option<i64>)> {
    let outcome = command::run(
        store,
        Verb::Update,
        order,
        store.collection_name(entity),
        &updates,
    )
    .await?;
    let clerk_id_index = store.clerk_id_index(entity);
    let mut replies = Vec::with_capacity(outcome.results.len());
    for result in outcome.results {
        replies.push(match result {
            Ok(()) => Reply::Done,
            Err(e) => match e.class(&clerk_id_index) {
                WriteErrorClass::ClerkIdConflict { named } => Reply::Conflict {
                    named,
                    refusal: None,
                },
                // Another index named during an upsert: maybe only the first checked.
                _ if upsert && e.code == 11000 => Reply::Conflict {
                    named: false,
                    refusal: Some(format!("{} (code 11000)", e.message)),
                },
                _ => Reply::Refused(refusal(&e)?),
            },
        });
    }
    Ok((replies, outcome.matched))
}

/// `s` as a statement of an `update` command: `{q, u, upsert}`.
fn statement(s: &Statement, now: DateTime, upsert: bool) -> Result<RawDocumentBuf> {
    let u = s.update(now).map_err(WriteFailure::Encode)?;
    command::update_statement(&s.filter(), u, upsert)
}

/// Which writes a read sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Snapshot {
    /// Only those a majority holds: what a batch plans from (see
    /// [`Store::committed_collection`]).
    Committed,
    /// The primary's latest, a racing writer's included: what settles a conflict (a
    /// document another writer just created must be seen, or the conflict would look
    /// like a refusal by another index).
    Latest,
}

/// The documents with these `clerkId`s, by `clerkId`.
pub(crate) async fn read(
    store: &Store,
    entity: Entity,
    ids: &[&str],
    snapshot: Snapshot,
) -> Result<HashMap<String, Document>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let projection = doc! {
        "clerkId": 1, "isDeleted": 1, "syncStatus": 1,
        "profileVersion": 1, "finalVersion": 1, "statusVersion": 1, "eventVersion": 1, "lastActiveAt": 1,
    };
    let collection = match snapshot {
        Snapshot::Committed => store.committed_collection(store.collection_name(entity)),
        Snapshot::Latest => store.collection(entity).clone(),
    };
    let find = collection
        .find(doc! {"clerkId": {"$in": ids}})
        .projection(projection);
    let docs = command::find_all(store, store.collection_name(entity), find).await??;
    Ok(docs
        .into_iter()
        .filter_map(|d| Some((d.get_str("clerkId").ok()?.to_string(), d)))
        .collect())
}

#[cfg(test)]
mod tests {
    use bson::Bson;

    use super::*;

    fn statement(id: &str, slot: Slot) -> Statement {
        Statement {
            entity: Entity::User,
            id: id.to_string(),
            slot,
            stamp: Bson::String("000000000000001:e".into()),
            set: Document::new(),
            event: 0,
            payload: None,
            folded: Vec::new(),
            pointer: None,
        }
    }

    #[test]
    fn a_round_runs_unordered_only_when_each_statement_has_its_own_document() {
        let (a, b) = (statement("a", Slot::Profile), statement("b", Slot::Profile));
        assert_eq!(order_of(&[&a, &b]), Order::Any);
        // Two events of one user in a batch: the second's filter relies on the first's stamp.
        let a_final = statement("a", Slot::Final);
        assert_eq!(order_of(&[&a, &b, &a_final]), Order::Given);
    }
}
