//! Runs a round of [`Statement`]s: one multi-statement `update` command per collection
//! (chunked under the server's message size), and tells what each statement did.
//!
//! Every statement is an upsert whose filter holds its rule. So a statement either
//! matched (applied), inserted (applied), or failed on the unique `clerkId` index: the
//! document exists and the rule didn't admit the write, or another writer created it
//! between our filter and our insert. Those are run again without upsert to tell which.

use std::collections::HashMap;

use bson::{doc, Bson, DateTime, Document};
use futures::TryStreamExt;

use crate::entity::{Entity, Slot};
use crate::plan::{Statement, Written};
use crate::store::{classify_write_error, Store, WriteErrorClass};
use crate::{Error, Result};

/// Most bytes of statements in one command: well under MongoDB's 16 MiB message limit,
/// whatever the payloads.
const MAX_COMMAND_BYTES: usize = 8 * 1024 * 1024;

/// Runs `statements` (in their order within each collection) and returns what each did.
pub async fn execute(store: &Store, statements: &[Statement], now: DateTime) -> Result<Vec<Written>> {
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

/// What happened to each statement of one `update` command.
enum Reply {
    Done,
    /// Failed on the unique `clerkId` index. `named`: the server said which index.
    Conflict { named: bool },
    Refused(String),
}

async fn execute_in(
    store: &Store,
    entity: Entity,
    statements: &[&Statement],
    now: DateTime,
) -> Result<Vec<Written>> {
    let updates: Vec<Document> = statements
        .iter()
        .map(|s| doc! {"q": s.filter(), "u": s.update(now), "upsert": true})
        .collect();
    let (replies, _) = update_command(store, entity, updates).await?;
    let mut results = Vec::with_capacity(statements.len());
    let mut conflicts = Vec::new();
    let mut unnamed = false;
    for (i, reply) in replies.into_iter().enumerate() {
        results.push(match reply {
            Reply::Done => Written::Applied,
            Reply::Refused(reason) => Written::Refused(reason),
            Reply::Conflict { named } => {
                unnamed |= !named;
                conflicts.push(i);
                Written::NotApplied
            }
        });
    }
    if conflicts.is_empty() {
        return Ok(results);
    }

    // The same statements without upsert. Almost always none matches: the rule said no.
    let updates: Vec<Document> = conflicts
        .iter()
        .map(|&i| doc! {"q": statements[i].filter(), "u": statements[i].update(now)})
        .collect();
    let (replies, matched) = update_command(store, entity, updates).await?;
    for (&i, reply) in conflicts.iter().zip(replies) {
        match reply {
            Reply::Done => {}
            Reply::Refused(reason) => results[i] = Written::Refused(reason),
            // Without upsert nothing can conflict on clerkId: another unique index did.
            Reply::Conflict { .. } => {
                results[i] = Written::Refused("duplicate key on a unique index".into())
            }
        }
    }
    if matched == 0 && !unnamed {
        return Ok(results);
    }
    // A race with another writer (some matched now), or a server that doesn't name the
    // index in its duplicate-key errors (FerretDB), whose conflict may have come from
    // another unique index on an insert: the documents tell.
    let ids: Vec<&str> = conflicts.iter().map(|&i| statements[i].id.as_str()).collect();
    let docs = read(store, entity, &ids).await?;
    for &i in &conflicts {
        let s = statements[i];
        if results[i] != Written::NotApplied {
            continue;
        }
        match docs.get(&s.id) {
            // A conditional upsert of a missing document can only fail on another index.
            None => results[i] = Written::Refused("duplicate key on a unique index".into()),
            Some(d) if matched > 0 && stamped(d, s) => results[i] = Written::Applied,
            Some(_) => {}
        }
    }
    Ok(results)
}

/// Whether `doc` holds `s`'s stamp.
fn stamped(doc: &Document, s: &Statement) -> bool {
    doc.get(s.slot.stamp_field()) == Some(&s.stamp) && s.slot != Slot::Pointer
}

/// Runs `update` commands for `updates` (chunked), returning each statement's reply and
/// how many documents matched in all.
async fn update_command(
    store: &Store,
    entity: Entity,
    updates: Vec<Document>,
) -> Result<(Vec<Reply>, i64)> {
    let mut replies = Vec::with_capacity(updates.len());
    let mut matched = 0;
    for chunk in chunks(updates) {
        let count = chunk.len();
        let command = doc! {
            "update": store.collection_name(entity),
            "updates": chunk,
            "ordered": false,
            "writeConcern": store.write_concern(),
        };
        let reply = store.database().run_command(command).await?;
        let (mut chunk_replies, n) = parse_reply(&reply, count)?;
        replies.append(&mut chunk_replies);
        matched += n;
    }
    Ok((replies, matched))
}

/// Splits statements into commands of at most [`MAX_COMMAND_BYTES`].
fn chunks(updates: Vec<Document>) -> Vec<Vec<Document>> {
    let mut chunks = vec![Vec::new()];
    let mut bytes = 0;
    for u in updates {
        let size = bson::to_vec(&u).map_or(0, |v| v.len());
        let last = chunks.last_mut().expect("one chunk");
        if !last.is_empty() && bytes + size > MAX_COMMAND_BYTES {
            chunks.push(vec![u]);
            bytes = size;
        } else {
            last.push(u);
            bytes += size;
        }
    }
    chunks
}

/// Reads an `update` reply: per-statement errors, and the matched count (`n` minus upserts).
fn parse_reply(reply: &Document, count: usize) -> Result<(Vec<Reply>, i64)> {
    if let Ok(wce) = reply.get_document("writeConcernError") {
        // The writes may not be durable: the batch is retried, and its offsets not committed.
        return Err(Error::Write(
            wce.get_str("errmsg").unwrap_or("write concern failed").to_string(),
        ));
    }
    let number = |key: &str| match reply.get(key) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    };
    let upserted = reply.get_array("upserted").map_or(0, |a| a.len() as i64);
    let mut replies: Vec<Reply> = (0..count).map(|_| Reply::Done).collect();
    if let Ok(errors) = reply.get_array("writeErrors") {
        for e in errors.iter().filter_map(Bson::as_document) {
            let index = match e.get("index") {
                Some(Bson::Int32(n)) => *n as usize,
                Some(Bson::Int64(n)) => *n as usize,
                _ => continue,
            };
            let code = e.get_i32("code").unwrap_or_default();
            let message = e.get_str("errmsg").unwrap_or_default();
            let Some(slot) = replies.get_mut(index) else { continue };
            *slot = match classify_write_error(code, message) {
                WriteErrorClass::ClerkIdConflict { named } => Reply::Conflict { named },
                WriteErrorClass::Permanent => Reply::Refused(format!("{message} (code {code})")),
                WriteErrorClass::Transient => {
                    return Err(Error::Write(format!("write error {code}: {message}")))
                }
            };
        }
    }
    Ok((replies, number("n") - upserted))
}

/// The documents with these `clerkId`s, by `clerkId`.
pub async fn read(store: &Store, entity: Entity, ids: &[&str]) -> Result<HashMap<String, Document>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let projection = doc! {
        "clerkId": 1, "isDeleted": 1,
        "profileVersion": 1, "finalVersion": 1, "statusVersion": 1, "eventVersion": 1, "lastActiveAt": 1,
    };
    let docs: Vec<Document> = store
        .collection(entity)
        .find(doc! {"clerkId": {"$in": ids}})
        .projection(projection)
        .await?
        .try_collect()
        .await?;
    Ok(docs
        .into_iter()
        .filter_map(|d| Some((d.get_str("clerkId").ok()?.to_string(), d)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_say_which_statement_failed_and_how() {
        let reply = doc! {
            "n": 3, "nModified": 1, "ok": 1.0,
            "upserted": [{"index": 0, "_id": 1}],
            "writeErrors": [
                {"index": 1, "code": 11000, "errmsg": "E11000 duplicate key error collection: db.users index: clerkId_unique dup key"},
                {"index": 3, "code": 11000, "errmsg": "E11000 duplicate key error collection: db.users index: email_1 dup key"},
                {"index": 4, "code": 17419, "errmsg": "Resulting document after update is larger than 16777216"},
            ],
        };
        let (replies, matched) = parse_reply(&reply, 5).unwrap();
        assert!(matches!(replies[0], Reply::Done));
        assert!(matches!(replies[1], Reply::Conflict { named: true }));
        assert!(matches!(replies[2], Reply::Done));
        assert!(matches!(replies[3], Reply::Refused(_)));
        assert!(matches!(replies[4], Reply::Refused(_)));
        assert_eq!(matched, 2);
    }

    #[test]
    fn a_write_concern_error_fails_the_whole_command() {
        let reply = doc! {"n": 1, "ok": 1.0, "writeConcernError": {"code": 64, "errmsg": "waiting for replication timed out"}};
        assert!(matches!(parse_reply(&reply, 1), Err(Error::Write(_))));
    }

    #[test]
    fn a_server_error_per_statement_is_retried_not_dead_lettered() {
        // NotWritablePrimary: the batch is retried.
        let reply = doc! {"n": 0, "ok": 1.0, "writeErrors": [{"index": 0, "code": 10107, "errmsg": "not primary"}]};
        assert!(parse_reply(&reply, 1).is_err());
    }

    #[test]
    fn commands_are_chunked_by_size() {
        let big = "x".repeat(3 * 1024 * 1024);
        let updates: Vec<Document> = (0..5).map(|_| doc! {"u": &big}).collect();
        let chunks = chunks(updates);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1]);
    }
}
