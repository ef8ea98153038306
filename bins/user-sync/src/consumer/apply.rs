//! Applying a batch of events to MongoDB: the plan's rounds of conditional writes
//! ([`crate::domain::plan`], [`crate::store::write`]), then the outcomes.
//!
//! Nothing here decides an order rule: that is the plan's job, unit-tested without a
//! database. This module reads the batch's documents, runs the rounds, and reads again
//! what the plan needs to tell a `duplicate` from a `stale` event after a race.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bson::{DateTime, Document};
use events::{EventMessage, Origin};

use crate::domain::entity::{self, Change, Entity};
use crate::domain::payload::Stored;
use crate::domain::plan::{Batch, Input, Known};
use crate::domain::Outcome;
use crate::store::audit::Source;
use crate::store::write::{self, Snapshot};
use crate::store::Store;
use crate::Result;

/// A decoded event and where it came from.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The message.
    pub message: EventMessage,
    /// Its position.
    pub source: Source,
    /// This consumption of it (see [`crate::store::audit`]).
    pub delivery: String,
    /// Its Clerk `data` as stored ([`crate::domain::payload::Stored`]), made once for both the
    /// document's `webhookPayload` and the audit record.
    pub payload: Stored,
}

impl Incoming {
    /// What the plan reads of this event, with its `change`.
    fn input<'a>(&'a self, change: &'a Change) -> Input<'a> {
        Input {
            event_id: &self.message.event_id,
            event_time: self.message.event_time,
            change,
            payload: &self.payload,
            raw: self.message.data.get(),
        }
    }
}

/// What [`Applier::apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Each event's outcome, in the batch's order (a repeat of an event earlier in the
    /// batch: its first copy's).
    pub outcomes: Vec<Outcome>,
    /// Events that can never be applied (index, short code, reason): the caller
    /// dead-letters them.
    pub(crate) rejected: Vec<(usize, &'static str, String)>,
    /// Whether the event at each index repeats one earlier in the batch.
    pub(crate) repeats: Vec<bool>,
}

/// Writes batches of events.
#[derive(Clone, Debug)]
pub struct Applier {
    store: Store,
    entities: Vec<Entity>,
    /// Whether the next batch reads its documents before writing (see [`reads_first`]).
    read_first: Arc<AtomicBool>,
}

impl Applier {
    /// An applier over `store`, keeping the kinds in `entities`.
    pub fn new(store: Store, entities: Vec<Entity>) -> Self {
        Applier {
            store,
            entities,
            // A start is when redeliveries come: what the last run didn't commit.
            read_first: Arc::new(AtomicBool::new(true)),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Applies a batch (in consumption order). Safe to call again with the same batch after
    /// an error: every write is conditional. `applied_before` carries, across such
    /// attempts, the events whose change an earlier attempt made, so that a retry doesn't
    /// take them for duplicates.
    pub async fn apply(
        &self,
        batch: &[Incoming],
        applied_before: &mut HashSet<String>,
    ) -> Result<Applied> {
        // A second copy of an event in the same batch is a redelivery: only counted.
        let first_of = first_copies(batch);
        let firsts: Vec<usize> = (0..batch.len()).filter(|&i| first_of[i] == i).collect();
        let changes: Vec<Change> = firsts
            .iter()
            .map(|&i| entity::change(&batch[i].message, &self.entities))
            .collect();
        let inputs: Vec<Input<'_>> = firsts
            .iter()
            .zip(&changes)
            .map(|(&i, change)| batch[i].input(change))
            .collect();

        // The documents first, when redeliveries are likely: what they show stale is never
        // sent (see `Batch`). Otherwise only those several events write, so that their
        // statements fold into one; every other statement goes, guarded by its filter.
        let origins = firsts.iter().map(|&i| batch[i].message.origin);
        let wanted = if reads_all(self.read_first.load(Ordering::Relaxed), origins) {
            Batch::documents(&inputs)
        } else {
            Batch::shared_documents(&inputs)
        };
        let mut found = self.read(&wanted, Snapshot::Committed).await?;
        let known: Known = wanted
            .into_iter()
            .map(|k| {
                let doc = found.remove(&k);
                (k, doc)
            })
            .collect();
        let now = DateTime::now();
        let mut plan = Batch::new(&inputs, now, &known);
        while let Some(statements) = plan.round() {
            let results = write::execute(&self.store, statements, now).await?;
            plan.learn(&results);
            // Remembered at once: should a later step of this attempt fail, the retry
            // still knows these changes were this delivery's.
            for &k in plan.applied() {
                applied_before.insert(batch[firsts[k]].message.event_id.clone());
            }
        }
        let current = self.read(&plan.to_read(), Snapshot::Latest).await?;
        let planned = plan.outcomes(&current);

        let mut applied = Applied {
            outcomes: vec![Outcome::Duplicate; batch.len()],
            rejected: Vec::new(),
            repeats: first_of.iter().enumerate().map(|(i, &f)| f != i).collect(),
        };
        for (k, &i) in firsts.iter().enumerate() {
            let id = &batch[i].message.event_id;
            let mut outcome = planned[k];
            if matches!(outcome, Outcome::Duplicate | Outcome::Stale) && applied_before.contains(id)
            {
                // An earlier attempt at this batch made the change (a later event of the
                // batch may since have moved the stamp on).
                outcome = Outcome::Applied;
            }
            applied.outcomes[i] = outcome;
            if let Change::Invalid { reason, .. } = &changes[k] {
                applied.rejected.push((i, "invalid_record", reason.clone()));
            } else if let Some(reason) = plan.refused().get(&k) {
                tracing::error!(event_id = id, error = %reason, "the database refused this event");
                applied
                    .rejected
                    .push((i, "rejected_by_database", reason.clone()));
            }
        }
        // A repeat in the batch is recorded as a redelivery of its first copy, with that
        // copy's outcome (so a dead-lettered record stays dead-lettered and is counted).
        for (i, &first) in first_of.iter().enumerate() {
            applied.outcomes[i] = applied.outcomes[first];
        }
        self.read_first
            .store(reads_first(&applied.outcomes), Ordering::Relaxed);
        Ok(applied)
    }

    /// The current documents the plan asks for, by kind and `clerkId`.
    async fn read(
        &self,
        wanted: &[(Entity, String)],
        snapshot: Snapshot,
    ) -> Result<HashMap<(Entity, String), Document>> {
        let mut current = HashMap::new();
        for entity in Entity::ALL {
            let ids: Vec<&str> = wanted
                .iter()
                .filter(|(e, _)| *e == entity)
                .map(|(_, id)| id.as_str())
                .collect();
            for (id, doc) in write::read(&self.store, entity, &ids, snapshot).await? {
                current.insert((entity, id), doc);
            }
        }
        Ok(current)
    }
}

/// Whether the batch after one with these outcomes should read its documents before
/// writing (see [`reads_all`]): if any of its events changed nothing. Redeliveries come in
/// runs (after a restart, a rebalance), so the last batch tells.
fn reads_first(outcomes: &[Outcome]) -> bool {
    outcomes.iter().any(|o| o.changed_nothing())
}

/// Whether a batch reads all its documents before writing. Reading first makes a
/// redelivered or stale event cost a read instead of a refused write (and, on a new
/// document, a duplicate key and a second statement; on FerretDB, where statements go one
/// at a time, three commands), but costs a read of every document when nothing is stale,
/// the usual case of a stream of webhooks. So: when the batch before it held an event that
/// changed nothing (`redeliveries`, see [`reads_first`]), or when the batch holds a
/// snapshot (`backfill`, `reconcile`), which is often older than what webhooks already
/// wrote, or a second backfill's copy of what the first one did.
fn reads_all(redeliveries: bool, mut origins: impl Iterator<Item = Origin>) -> bool {
    redeliveries || origins.any(|o| o != Origin::Webhook)
}

/// For each event of the batch, the index of its first copy (itself, unless it repeats an
/// event earlier in the batch).
fn first_copies(batch: &[Incoming]) -> Vec<usize> {
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    batch
        .iter()
        .enumerate()
        .map(|(i, e)| *first_index.entry(e.message.event_id.as_str()).or_insert(i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reads_first_after_one_that_held_a_stale_or_repeated_event() {
        assert!(!reads_first(&[Outcome::Applied, Outcome::Ignored]));
        assert!(!reads_first(&[Outcome::DeadLettered]));
        assert!(reads_first(&[Outcome::Applied, Outcome::Stale]));
        assert!(reads_first(&[Outcome::Duplicate]));
        assert!(!reads_first(&[]));
    }

    #[test]
    fn a_batch_of_snapshots_reads_first_and_one_of_webhooks_only_after_redeliveries() {
        use Origin::*;
        assert!(!reads_all(false, [Webhook, Webhook].into_iter()));
        assert!(reads_all(true, [Webhook].into_iter()));
        assert!(reads_all(false, [Webhook, Backfill].into_iter()));
        assert!(reads_all(false, [Reconcile].into_iter()));
    }
}
