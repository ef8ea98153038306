//! Multi-statement write commands (`update`, `insert`) with a result per statement, on any
//! MongoDB-wire server.
//!
//! Statements whose order doesn't matter ([`Order::Any`]: each touches its own document)
//! go `ordered: false`: MongoDB then runs them all, whatever fails, in one round trip. In
//! order (`ordered: true`), MongoDB stops at the first write error (the manual's `update`
//! command, "ordered"; `write_ops_exec.cpp`), so a batch with many refusals, a fully
//! redelivered one, would take a round trip (and a majority acknowledgement) per refusal.
//!
//! Commands in order resume after the statement that failed. FerretDB stops at the first
//! error even when asked not to, and says nothing about the statements it skipped, so "no
//! error reported" would not mean "done": there every command runs in order, and every
//! statement before the first error is done, and the rest are sent again.
//! mongo-java-server does the opposite (it goes on past an error even when ordered); its
//! `n` says so, and then nothing is sent again.

use std::future::IntoFuture;

use bson::{Bson, Document, RawArrayBuf, RawDocumentBuf};
use futures::TryStreamExt;

use super::{classify_write_error, integer, Store, WriteErrorClass};
use crate::error::WriteFailure;
use crate::Result;

/// Most bytes of statements in one command: well under MongoDB's 16 MiB message limit,
/// whatever the payloads.
const MAX_COMMAND_BYTES: usize = 8 * 1024 * 1024;

/// Most statements in one command: MongoDB's `maxWriteBatchSize`.
const MAX_STATEMENTS: usize = 100_000;

/// Most statements in one `update` command on FerretDB. FerretDB 1.24 opens a query per
/// statement and closes them all only when the command ends, and its SQLite backend
/// allows 100 connections per database: an `update` of 100 statements or more waits
/// for a connection that only its own end would free, and the database hangs (every
/// command on it, from any client) until the client disconnects. Seen as a test's count
/// that never returned (three CI runs); FerretDB's goroutines then showed 100 open
/// queries and the `update` that held them waiting for a connection. Well under 100, so
/// that several commands in flight at once can't add up to it either.
const FERRETDB_MAX_STATEMENTS: usize = 10;

/// A statement's write error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WriteError {
    pub(crate) code: i32,
    pub(crate) message: String,
    /// The keys of the unique index a duplicate-key error is on, when the server says
    /// (MongoDB does; DocumentDB and FerretDB name the index in the message only).
    pub(crate) key_pattern: Option<Document>,
}

impl WriteError {
    /// What this error means, in a collection whose unique `clerkId` index is named
    /// `clerk_id_index`: from the index's keys when the server gives them, otherwise from
    /// the index name in the message ([`classify_write_error`]).
    pub(crate) fn class(&self, clerk_id_index: &str) -> WriteErrorClass {
        match &self.key_pattern {
            Some(keys) if self.code == 11000 => {
                if keys.keys().eq(["clerkId"]) {
                    WriteErrorClass::ClerkIdConflict { named: true }
                } else {
                    WriteErrorClass::Permanent
                }
            }
            _ => classify_write_error(self.code, &self.message, clerk_id_index),
        }
    }

    /// This error, failing the batch (retried).
    pub(crate) fn transient(&self) -> WriteFailure {
        WriteFailure::Statement {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// What a run of statements did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Per statement: done, or the error.
    pub(crate) results: Vec<Result<(), WriteError>>,
    /// Documents matched by `update` statements (not counting upserts), when the server
    /// said (FerretDB doesn't when a statement fails).
    pub(crate) matched: Option<i64>,
}

/// Whether the statements of a command must run in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// As given: a later statement relies on an earlier one's effect.
    Given,
    /// Any: each statement touches its own document.
    Any,
}

impl Order {
    /// The command's `ordered` field. FerretDB stops at the first error whatever it is
    /// told (and says nothing of what it skipped): there, always in order.
    fn ordered(self, ferretdb: bool) -> bool {
        self == Order::Given || ferretdb
    }
}

/// Which write command.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Verb {
    /// `update`, statements `{q, u, upsert}`.
    Update,
    /// `insert`, statements are documents.
    Insert,
}

/// Statements as the commands send them, serialized once: a batch's statements carry its
/// payloads, and serializing them again (to measure, then in the driver) was a good part
/// of user-sync's CPU per event.
pub(crate) fn serialized(statements: &[Document]) -> Result<Vec<RawDocumentBuf>> {
    Ok(statements
        .iter()
        .map(RawDocumentBuf::from_document)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(WriteFailure::Encode)?)
}

/// One statement of an `update` command, `{q, u, upsert}`, serialized: `u` already is (it
/// may carry a payload's bytes).
pub(crate) fn update_statement(
    q: &Document,
    u: RawDocumentBuf,
    upsert: bool,
) -> Result<RawDocumentBuf> {
    let mut statement = RawDocumentBuf::new();
    statement.append(
        "q",
        RawDocumentBuf::from_document(q).map_err(WriteFailure::Encode)?,
    );
    statement.append("u", u);
    if upsert {
        statement.append("upsert", true);
    }
    Ok(statement)
}

/// Runs `statements` against `collection`, each in order, until every one is done or failed.
pub(crate) async fn run(
    store: &Store,
    verb: Verb,
    order: Order,
    collection: &str,
    statements: &[RawDocumentBuf],
) -> Result<Outcome> {
    let write_concern =
        RawDocumentBuf::from_document(&store.write_concern()).map_err(WriteFailure::Encode)?;
    let most = match verb {
        Verb::Update if store.is_ferretdb() => FERRETDB_MAX_STATEMENTS,
        _ => MAX_STATEMENTS,
    };
    let mut outcome = Outcome {
        results: Vec::with_capacity(statements.len()),
        matched: Some(0),
    };
    let ordered = order.ordered(store.is_ferretdb());
    let mut rest = statements;
    while !rest.is_empty() {
        let chunk = chunk(rest, most);
        let reply = send(store, verb, ordered, collection, chunk, &write_concern).await?;
        rest = &rest[outcome.take(&reply, chunk.len(), ordered)..];
    }
    Ok(outcome)
}

/// Sends one command of `chunk`'s statements; a reply whose writes may not be durable is
/// an error (the batch is retried, its offsets not stored).
async fn send(
    store: &Store,
    verb: Verb,
    ordered: bool,
    collection: &str,
    chunk: &[RawDocumentBuf],
    write_concern: &RawDocumentBuf,
) -> Result<Document> {
    let (field, name) = match verb {
        Verb::Update => ("updates", "update"),
        Verb::Insert => ("documents", "insert"),
    };
    let mut command = RawDocumentBuf::new();
    command.append(name, collection);
    command.append(field, chunk.iter().cloned().collect::<RawArrayBuf>());
    command.append("ordered", ordered);
    command.append("writeConcern", write_concern.clone());
    store.traffic().count(name, collection, chunk.len());
    let started = std::time::Instant::now();
    let reply = bounded(store.database().run_raw_command(command).into_future()).await??;
    if started.elapsed() > std::time::Duration::from_secs(5) {
        tracing::warn!(
            command = name,
            collection,
            statements = chunk.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "slow write command"
        );
    }
    if let Ok(wce) = reply.get_document("writeConcernError") {
        return Err(WriteFailure::NotDurable {
            code: wce.get_i32("code").unwrap_or_default(),
            message: wce
                .get_str("errmsg")
                .unwrap_or("write concern failed")
                .to_string(),
        }
        .into());
    }
    Ok(reply)
}

impl Outcome {
    /// Takes the reply to a command of `count` statements (sent `ordered` or not): what
    /// each statement that ran did. Returns how many statements are settled; the rest are
    /// sent again.
    fn take(&mut self, reply: &Document, count: usize, ordered: bool) -> usize {
        let errors = write_errors(reply, count);
        let n = reply.get("n").and_then(integer);
        // Unordered, every statement ran. In order, mongo-java-server goes on past a failed
        // statement even when asked to stop: its `n` then counts every other statement
        // (each writes one document), and all of them ran. Otherwise the server stopped at
        // the first error.
        let went_on =
            !ordered || !errors.is_empty() && n.is_some_and(|n| n == (count - errors.len()) as i64);
        let done = match errors.first() {
            Some((index, _)) if !went_on => *index,
            _ => count,
        };
        self.matched = match (self.matched, n) {
            (Some(m), Some(n)) => {
                let upserted = reply.get_array("upserted").map_or(0, |a| a.len() as i64);
                Some(m + n - upserted)
            }
            _ => None,
        };
        let mut errors = errors.into_iter().peekable();
        for index in 0..done {
            match errors.next_if(|(i, _)| *i == index) {
                Some((_, error)) => self.results.push(Err(error)),
                None => self.results.push(Ok(())),
            }
        }
        match errors.next() {
            Some((index, error)) if index == done => {
                self.results.push(Err(error));
                done + 1
            }
            _ => done,
        }
    }
}

/// How long one command may take. The driver bounds connecting and server selection but
/// not a reply that never comes (a hung server): past this, the batch fails and is retried.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `future`, or [`WriteFailure::NoReply`] after [`COMMAND_TIMEOUT`].
pub(crate) async fn bounded<T>(future: impl std::future::Future<Output = T>) -> Result<T> {
    tokio::time::timeout(COMMAND_TIMEOUT, future)
        .await
        .map_err(|_| WriteFailure::NoReply(COMMAND_TIMEOUT).into())
}

/// Every document `find` answers (a `find` on `collection`), within [`COMMAND_TIMEOUT`],
/// counted in the store's [`super::Traffic`]. The outer error is the bound; the inner one
/// the server's, for a caller that reads its code.
pub(crate) async fn find_all(
    store: &Store,
    collection: &str,
    find: impl IntoFuture<Output = mongodb::error::Result<mongodb::Cursor<Document>>>,
) -> Result<mongodb::error::Result<Vec<Document>>> {
    let documents = bounded(async { find.await?.try_collect::<Vec<Document>>().await }).await?;
    if let Ok(documents) = &documents {
        store.traffic().count("find", collection, documents.len());
    }
    Ok(documents)
}

/// The longest prefix of `statements` under [`MAX_COMMAND_BYTES`] and of at most `most`
/// statements (at least one).
fn chunk(statements: &[RawDocumentBuf], most: usize) -> &[RawDocumentBuf] {
    let statements = &statements[..statements.len().min(most.max(1))];
    let mut bytes = 0;
    for (i, s) in statements.iter().enumerate() {
        bytes += s.as_bytes().len();
        if i > 0 && bytes > MAX_COMMAND_BYTES {
            return &statements[..i];
        }
    }
    statements
}

/// The write errors of a reply about `count` statements, by index.
fn write_errors(reply: &Document, count: usize) -> Vec<(usize, WriteError)> {
    let Ok(errors) = reply.get_array("writeErrors") else {
        return Vec::new();
    };
    let mut errors: Vec<(usize, WriteError)> = errors
        .iter()
        .filter_map(Bson::as_document)
        .filter_map(|e| {
            let index = usize::try_from(integer(e.get("index")?)?).ok()?;
            let error = WriteError {
                code: e.get_i32("code").unwrap_or_default(),
                message: e.get_str("errmsg").unwrap_or_default().to_string(),
                key_pattern: e.get_document("keyPattern").ok().cloned(),
            };
            Some((index, error))
        })
        .filter(|(index, _)| *index < count)
        .collect();
    errors.sort_by_key(|(index, _)| *index);
    errors.dedup_by_key(|(index, _)| *index);
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn raw(documents: Vec<Document>) -> Vec<RawDocumentBuf> {
        documents
            .iter()
            .map(|d| RawDocumentBuf::from_document(d).unwrap())
            .collect()
    }

    #[test]
    fn a_duplicate_key_is_placed_by_the_index_keys_when_the_server_gives_them() {
        use WriteErrorClass::*;
        let reply = doc! {"ok": 1.0, "writeErrors": [
            // The message names an index whose name says nothing of its keys.
            {"index": 0, "code": 11000, "errmsg": "E11000 … index: ix_7 dup key",
             "keyPattern": {"clerkId": 1}, "keyValue": {"clerkId": "user_1"}},
            {"index": 1, "code": 11000, "errmsg": "E11000 … index: ix_8 dup key",
             "keyPattern": {"email": 1}, "keyValue": {"email": null}},
            // No keys (DocumentDB): the index name decides.
            {"index": 2, "code": 11000, "errmsg": "Duplicate key violation on the requested collection: Index 'ix_7'"},
        ]};
        let errors = write_errors(&reply, 3);
        let classes: Vec<_> = errors.iter().map(|(_, e)| e.class("ix_7")).collect();
        assert_eq!(
            classes,
            [
                ClerkIdConflict { named: true },
                Permanent,
                ClerkIdConflict { named: true }
            ]
        );
        // Keys win over a name: an index named like ours on other keys is not ours.
        assert_eq!(errors[1].1.class("ix_8"), Permanent);
    }

    #[test]
    fn write_errors_come_sorted_by_index() {
        let reply = doc! {"ok": 1.0, "writeErrors": [
            {"index": 3, "code": 2, "errmsg": "b"},
            {"index": 1, "code": 11000, "errmsg": "E11000"},
            {"index": 9, "code": 2, "errmsg": "beyond the chunk"},
        ]};
        let errors = write_errors(&reply, 5);
        assert_eq!(errors.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(errors[0].1.code, 11000);
        assert!(write_errors(&doc! {"ok": 1.0, "n": 2}, 2).is_empty());
    }

    #[test]
    fn a_server_that_stops_at_an_error_gets_the_rest_again() {
        let mut outcome = Outcome {
            matched: Some(0),
            ..Outcome::default()
        };
        // FerretDB and MongoDB (ordered): statement 1 failed, 2 and 3 never ran.
        let reply =
            doc! {"ok": 1.0, "n": 1, "writeErrors": [{"index": 1, "code": 2, "errmsg": "b"}]};
        assert_eq!(
            outcome.take(&reply, 4, true),
            2,
            "0 done, 1 failed; 2 and 3 go again"
        );
        assert_eq!(outcome.results.len(), 2);
        assert!(outcome.results[0].is_ok() && outcome.results[1].is_err());
        assert_eq!(outcome.matched, Some(1));
    }

    #[test]
    fn a_server_that_goes_on_past_an_error_settles_everything() {
        let mut outcome = Outcome {
            matched: Some(0),
            ..Outcome::default()
        };
        // mongo-java-server: statement 1 failed, the three others ran (`n` counts them).
        let reply = doc! {"ok": 1.0, "n": 3, "upserted": [{"index": 3, "_id": 1}],
        "writeErrors": [{"index": 1, "code": 2, "errmsg": "b"}]};
        assert_eq!(outcome.take(&reply, 4, true), 4);
        let failed: Vec<bool> = outcome.results.iter().map(Result::is_err).collect();
        assert_eq!(failed, [false, true, false, false]);
        assert_eq!(outcome.matched, Some(2), "upserts are not matches");
    }

    #[test]
    fn an_unordered_command_settles_every_statement() {
        let mut outcome = Outcome {
            matched: Some(0),
            ..Outcome::default()
        };
        // MongoDB, ordered: false: statement 1 refused, 0 matched nothing (no upsert), 2
        // and 3 matched; `n` (2) can't say whether the server went on, the order can.
        let reply =
            doc! {"ok": 1.0, "n": 2, "writeErrors": [{"index": 1, "code": 2, "errmsg": "b"}]};
        assert_eq!(outcome.take(&reply, 4, false), 4);
        let failed: Vec<bool> = outcome.results.iter().map(Result::is_err).collect();
        assert_eq!(failed, [false, true, false, false]);
        // The same reply to a command in order: 2 and 3 go again.
        let mut ordered = Outcome::default();
        assert_eq!(ordered.take(&reply, 4, true), 2);
    }

    #[test]
    fn statements_go_unordered_except_where_order_matters_or_on_ferretdb() {
        assert!(!Order::Any.ordered(false));
        assert!(
            Order::Any.ordered(true),
            "FerretDB stops at the first error anyway"
        );
        assert!(Order::Given.ordered(false));
    }

    #[test]
    fn chunks_stay_under_the_message_limit() {
        let big = "x".repeat(3 * 1024 * 1024);
        let statements = raw((0..5).map(|_| doc! {"u": &big}).collect());
        assert_eq!(chunk(&statements, MAX_STATEMENTS).len(), 2);
        assert_eq!(chunk(&statements[4..], MAX_STATEMENTS).len(), 1);
        let huge = raw(vec![doc! {"u": "x".repeat(9 * 1024 * 1024)}]);
        assert_eq!(
            chunk(&huge, MAX_STATEMENTS).len(),
            1,
            "one statement always goes"
        );
    }

    #[test]
    fn chunks_hold_at_most_the_statements_allowed() {
        let statements = raw((0..25).map(|i| doc! {"q": {"_id": i}}).collect());
        assert_eq!(chunk(&statements, FERRETDB_MAX_STATEMENTS).len(), 10);
        assert_eq!(chunk(&statements[20..], FERRETDB_MAX_STATEMENTS).len(), 5);
        assert_eq!(chunk(&statements, MAX_STATEMENTS).len(), 25);
        assert_eq!(chunk(&statements, 0).len(), 1, "one statement always goes");
    }
}
