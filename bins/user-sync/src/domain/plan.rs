//! The order rules, as a plan computed without I/O.
//!
//! Every document field belongs to a [`Slot`], and each slot is decided by one rule over
//! the event *version*, `(event time, event id)`, kept in a hidden stamp field:
//!
//! | slot | stamp | a write lands when |
//! |---|---|---|
//! | `Profile` | `profileVersion` | the stamp is missing or older |
//! | `Final` (deletion, session end) | `finalVersion` | the stamp is newer, or missing and the document is not deleted |
//! | `Status` (session, non-terminal) | `statusVersion` | the stamp is missing or older, and there is no `finalVersion` |
//! | `Activity` (user `lastActiveAt`) | the field itself | it is missing or earlier |
//! | `Pointer` (`lastEvent*`, sync status) | `eventVersion` | the stamp is missing, older or the same |
//!
//! A null stamp counts as a missing one (an application's document can hold nulls), and so
//! does a stamp of another BSON type than the rule's (a string where a date belongs, a
//! number where a version string does): MongoDB compares only values of one type
//! (`$lt` on a date never matches a string, "type bracketing"), so such a document would
//! otherwise refuse every event for good, silently.
//!
//! Each rule is a conditional upsert: the database enforces it in the write's own filter,
//! so concurrent consumers can't reorder anything. The plan decides which writes a batch
//! needs, in arrival order, leaving out those an earlier event of the same batch already
//! beat: the statements that remain are what the events would do one at a time, so
//! documents *and* audit outcomes don't depend on how the events were batched. A write the
//! database refuses for good dead-letters its event only: the batch is planned again
//! without it ([`Batch`] runs these rounds).
//!
//! `Statement::admits` states each rule over a document in memory; [`Statement::filter`]
//! is the same rule as a MongoDB filter. The unit tests run the plan against the former,
//! the integration tests against real servers.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use bson::{doc, Bson, DateTime, Document, RawDocumentBuf};

use super::payload::Stored;

use super::entity::{Change, Entity, Slot};
use super::Outcome;

/// An event's version stamp: sorts like (event time, event id).
pub(crate) fn version(event_time: i64, event_id: &str) -> String {
    format!("{:015}:{event_id}", event_time.max(0))
}

impl Slot {
    /// The field whose value the slot's rule compares.
    pub(crate) fn stamp_field(self) -> &'static str {
        match self {
            Slot::Profile => "profileVersion",
            Slot::Final => "finalVersion",
            Slot::Status => "statusVersion",
            Slot::Activity => "lastActiveAt",
            Slot::Pointer => "eventVersion",
        }
    }

    /// The BSON type of the slot's stamps, as `$type` names it: dates for `lastActiveAt`,
    /// version strings for the others.
    fn stamp_type(self) -> &'static str {
        match self {
            Slot::Activity => "date",
            _ => "string",
        }
    }

    /// Whether `value` is a stamp of this slot's type (anything else counts as none).
    fn is_stamp(self, value: &Bson) -> bool {
        let found = match value {
            Bson::String(_) => "string",
            Bson::DateTime(_) => "date",
            _ => return false,
        };
        found == self.stamp_type()
    }

    /// Whether a write stamped `new` still lands after one stamped `old` (same document).
    fn beats(self, new: &Bson, old: &Bson) -> bool {
        match compare(new, old) {
            Some(Ordering::Greater) => matches!(
                self,
                Slot::Profile | Slot::Status | Slot::Activity | Slot::Pointer
            ),
            Some(Ordering::Less) => self == Slot::Final,
            // (A pointer's equal stamp is decided in `admits_alone`.)
            Some(Ordering::Equal) => false,
            None => true,
        }
    }
}

/// Orders two stamps of the same kind (version strings, or dates).
fn compare(a: &Bson, b: &Bson) -> Option<Ordering> {
    match (a, b) {
        (Bson::String(a), Bson::String(b)) => Some(a.cmp(b)),
        (Bson::DateTime(a), Bson::DateTime(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// One conditional upsert of one document, on behalf of one event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Statement {
    pub(crate) entity: Entity,
    /// The document's `clerkId`.
    pub(crate) id: String,
    pub(crate) slot: Slot,
    /// The value the rule compares and stores (a version, or a date for `Activity`).
    pub(crate) stamp: Bson,
    pub(crate) set: Document,
    /// The event's index in the batch.
    pub(crate) event: usize,
    /// What a pointer writes to `webhookPayload` (kept apart from `set`: it is the biggest
    /// part of a statement, and copied as bytes).
    pub(crate) payload: Option<Stored>,
    /// Earlier events of the batch whose statement of the same document and slot this one
    /// replaces (see [`Batch`]): it lands, and so would they have, one at a time.
    pub(crate) folded: Vec<usize>,
    /// The same document's pointer, when this event is also the newest of its document:
    /// written together when both rules admit it (one write instead of two, the usual
    /// case); otherwise the next round writes them apart.
    pub(crate) pointer: Option<Box<Statement>>,
}

impl Statement {
    /// The rule, over the document as it is now (`None`: there is none, so the write
    /// creates it). The statement of the rule the unit tests hold [`Statement::filter`] to.
    #[cfg(test)]
    pub(crate) fn admits(&self, current: Option<&Document>) -> bool {
        self.admits_alone(current) && self.pointer.as_ref().is_none_or(|p| p.admits(current))
    }

    /// The rule of this statement alone (not its pointer's): also what the plan asks of
    /// the documents read before a batch.
    fn admits_alone(&self, current: Option<&Document>) -> bool {
        let Some(current) = current else { return true };
        // A null stamp, or one of another type, is a missing one, as in the filters, where
        // `{field: {$not: {$type: …}}}` matches all three.
        let stamp_of = |slot: Slot| current.get(slot.stamp_field()).filter(|v| slot.is_stamp(v));
        let stamp = stamp_of(self.slot);
        match (self.slot, stamp) {
            (Slot::Status, _) if stamp_of(Slot::Final).is_some() => false,
            (Slot::Final, None) => current.get_bool("isDeleted") != Ok(true),
            (_, None) => true,
            // The same event again: only to change what it says of the event (synced
            // after a replay that follows a fix; failed when the database refused it after
            // its pointer landed). A plain redelivery changes nothing, not even
            // `lastSyncAttempt`.
            (Slot::Pointer, Some(old)) if compare(&self.stamp, old) == Some(Ordering::Equal) => {
                current.get("syncStatus") != self.set.get("syncStatus")
            }
            (slot, Some(old)) => slot.beats(&self.stamp, old),
        }
    }

    /// `Statement::admits` as a MongoDB filter.
    pub(crate) fn filter(&self) -> Document {
        let mut filter = doc! {"clerkId": &self.id};
        match &self.pointer {
            None => filter.extend(self.condition()),
            Some(pointer) => {
                filter.insert("$and", vec![self.condition(), pointer.condition()]);
            }
        }
        filter
    }

    /// The rule's condition, without the `clerkId`.
    fn condition(&self) -> Document {
        let field = self.slot.stamp_field();
        let stamp = &self.stamp;
        // "No stamp": missing, null, or of another type (which `$lt` would never match):
        // `admits_alone` treats all three alike. (An upsert seeds the document it creates
        // from a filter's equalities only, and these are none, so nothing is seeded.)
        let none = |slot: Slot| doc! {"$not": {"$type": slot.stamp_type()}};
        let final_field = Slot::Final.stamp_field();
        let either = match self.slot {
            Slot::Profile | Slot::Activity => {
                vec![doc! {field: {"$lt": stamp}}, doc! {field: none(self.slot)}]
            }
            // And no final stamp, in each branch.
            Slot::Status => vec![
                doc! {field: {"$lt": stamp}, final_field: none(Slot::Final)},
                doc! {field: none(self.slot), final_field: none(Slot::Final)},
            ],
            Slot::Pointer => {
                // Every pointer sets `syncStatus` (see `pointer`), so `$ne` here is exactly
                // `admits_alone`'s inequality.
                let status = self.set.get("syncStatus").cloned().unwrap_or_default();
                vec![
                    doc! {field: {"$lt": stamp}},
                    doc! {field: none(self.slot)},
                    doc! {field: stamp, "syncStatus": {"$ne": status}},
                ]
            }
            Slot::Final => vec![
                doc! {field: {"$gt": stamp}},
                doc! {field: none(self.slot), "isDeleted": {"$ne": true}},
            ],
        };
        doc! {"$or": either}
    }

    /// The fields this statement sets, stamp included (and its pointer's), but for the
    /// payload ([`Statement::payload`]).
    fn plain_fields(&self, now: DateTime) -> Document {
        let mut set = self.set.clone();
        if self.slot != Slot::Activity {
            set.insert(self.slot.stamp_field(), self.stamp.clone());
        }
        if let Some(pointer) = &self.pointer {
            set.extend(pointer.plain_fields(now));
        }
        set.insert("updatedAt", now);
        set
    }

    /// What this statement (or its pointer) writes to `webhookPayload`.
    fn written_payload(&self) -> Option<&Stored> {
        self.payload
            .as_ref()
            .or_else(|| self.pointer.as_ref()?.payload.as_ref())
    }

    /// The fields this statement sets, stamp and payload included (and its pointer's).
    #[cfg(test)]
    pub(crate) fn fields(&self, now: DateTime) -> Document {
        let mut set = self.plain_fields(now);
        if let Some(payload) = self.written_payload() {
            set.insert("webhookPayload", payload.to_bson());
        }
        set
    }

    /// The fields a document created by this statement gets besides those it sets.
    pub(crate) fn on_insert(&self, now: DateTime) -> Document {
        let mut insert: Document = self
            .entity
            .defaults()
            .into_iter()
            .filter(|(k, _)| !self.sets(k))
            .collect();
        insert.insert("createdAt", now);
        insert
    }

    /// Whether this statement sets `key` (without building its fields: the pointer's
    /// payload is the biggest part of a statement).
    fn sets(&self, key: &str) -> bool {
        key == "updatedAt"
            || self.set.contains_key(key)
            || (key == "webhookPayload" && self.payload.is_some())
            || (self.slot != Slot::Activity && key == self.slot.stamp_field())
            || self.pointer.as_ref().is_some_and(|p| p.sets(key))
    }

    /// Stamps this statement removes: once a session has ended, the status of its
    /// non-terminal events no longer counts, so whether one was written before doesn't
    /// show (every order ends in the same document, hidden fields included).
    pub(crate) fn unsets(&self) -> &'static [&'static str] {
        match self.slot {
            Slot::Final => &["statusVersion"],
            _ => &[],
        }
    }

    /// The update document, serialized: the payload's bytes are copied in, not rebuilt.
    pub(crate) fn update(&self, now: DateTime) -> bson::raw::Result<RawDocumentBuf> {
        let mut set = RawDocumentBuf::from_document(&self.plain_fields(now))?;
        if let Some(payload) = self.written_payload() {
            set.append("webhookPayload", payload.raw().clone());
        }
        let mut update = RawDocumentBuf::new();
        update.append("$set", set);
        update.append(
            "$setOnInsert",
            RawDocumentBuf::from_document(&self.on_insert(now))?,
        );
        if !self.unsets().is_empty() {
            let unset: Document = self
                .unsets()
                .iter()
                .map(|f| (f.to_string(), Bson::String(String::new())))
                .collect();
            update.append("$unset", RawDocumentBuf::from_document(&unset)?);
        }
        Ok(update)
    }
}

/// One event as the plan sees it.
#[derive(Debug, Clone)]
pub(crate) struct Input<'a> {
    /// Its id.
    pub(crate) event_id: &'a str,
    /// Its event time (ms).
    pub(crate) event_time: i64,
    /// What it means for the documents.
    pub(crate) change: &'a Change,
    /// Its Clerk `data` as stored (see [`super::payload`]), for `webhookPayload`.
    pub(crate) payload: &'a Stored,
    /// Its Clerk `data` as JSON text, for a server that refuses `payload`.
    pub(crate) raw: &'a str,
}

impl Input<'_> {
    fn version(&self) -> String {
        version(self.event_time, self.event_id)
    }

    /// The document whose pointer follows this event, if it names one.
    fn document(&self) -> Option<(Entity, &str)> {
        match self.change {
            Change::Writes(intents) => intents.first().map(|i| (i.entity, i.id.as_str())),
            Change::Invalid {
                key: Some((entity, id)),
                ..
            } => Some((*entity, id.as_str())),
            _ => None,
        }
    }

    fn writes(&self) -> &[super::entity::Intent] {
        match self.change {
            Change::Writes(intents) => intents,
            _ => &[],
        }
    }
}

/// What the database did with one statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Written {
    /// It wrote (or created) the document.
    Applied,
    /// The rule didn't admit it.
    NotApplied,
    /// The database refuses it for good (reason).
    Refused(String),
}

/// How `webhookPayload` is written for an event: as a document, as JSON text when the
/// server refuses the document, or not at all when it refuses that too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PayloadForm {
    Document,
    Text,
    Omitted,
}

/// The batch's documents read before it, by kind and `clerkId`: `None` for one that didn't
/// exist. A document not in it wasn't read.
pub(crate) type Known = HashMap<(Entity, String), Option<Document>>;

/// The rounds of writes of one batch: [`Batch::round`] gives the statements to run,
/// [`Batch::learn`] takes what the database did; until a round refuses nothing new.
///
/// The plan starts from the batch's documents as read before it ([`Batch::documents`]):
/// a statement those documents don't admit is not sent. Stamps only move forward (and a
/// final stamp only back, towards the earliest), so a statement the rule refuses now, it
/// refuses for good, whoever writes in between; what is sent is still guarded by its
/// filter. One exception, handled: a pointer admits its own event again to change the
/// sync status, which an earlier round of this batch may have just changed, so a document
/// whose pointer this batch wrote is left to its filter. A redelivered or stale batch then
/// costs one indexed read per collection, not a refused write per statement.
///
/// A document that wasn't read is left to the filters alone. And several statements of one
/// document and slot that the read admitted fold into the last one (see [`fold`]).
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    inputs: &'a [Input<'a>],
    now: DateTime,
    /// The batch's documents read before it (see [`Known`]).
    known: &'a Known,
    /// Events with a statement left unsent because the documents read before the batch
    /// already hold its stamp: their change was made before (a redelivery).
    made_before: HashSet<usize>,
    /// Documents whose pointer a round of this batch wrote.
    pointer_written: HashSet<(Entity, String)>,
    /// Events the database refused, with the reason.
    refused: HashMap<usize, String>,
    /// Events with a write applied in some round.
    applied: HashSet<usize>,
    /// Statements whose write wasn't admitted, in the last round.
    not_applied: Vec<Statement>,
    payload: Vec<PayloadForm>,
    /// The statements of the current round, until learnt.
    pending: Option<Vec<Statement>>,
    /// Documents whose profile and pointer are written apart (a combined write didn't land).
    apart: HashSet<(Entity, String)>,
    finished: bool,
}

impl<'a> Batch<'a> {
    /// The batch, in consumption order, and those of its documents that were read before
    /// it ([`Batch::documents`], [`Batch::shared_documents`], or none). Repeats of an event
    /// id must already be left out.
    pub(crate) fn new(inputs: &'a [Input<'a>], now: DateTime, known: &'a Known) -> Self {
        Batch {
            inputs,
            now,
            known,
            made_before: HashSet::new(),
            pointer_written: HashSet::new(),
            refused: HashMap::new(),
            applied: HashSet::new(),
            not_applied: Vec::new(),
            payload: vec![PayloadForm::Document; inputs.len()],
            pending: None,
            apart: HashSet::new(),
            finished: false,
        }
    }

    /// The documents the batch's events write (kind, `clerkId`), to read before planning.
    pub(crate) fn documents(inputs: &[Input<'_>]) -> Vec<(Entity, String)> {
        let mut keys: Vec<(Entity, String)> = inputs
            .iter()
            .flat_map(|input| {
                let writes = input.writes().iter().map(|i| (i.entity, i.id.clone()));
                let pointer = input.document().map(|(e, id)| (e, id.to_string()));
                writes.chain(pointer)
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The documents two or more events of the batch write: reading them first lets their
    /// statements fold into one (see [`fold`]).
    pub(crate) fn shared_documents(inputs: &[Input<'_>]) -> Vec<(Entity, String)> {
        let mut writers: HashMap<(Entity, &str), HashSet<usize>> = HashMap::new();
        for (i, input) in inputs.iter().enumerate() {
            for intent in input.writes() {
                writers
                    .entry((intent.entity, intent.id.as_str()))
                    .or_default()
                    .insert(i);
            }
        }
        let mut keys: Vec<(Entity, String)> = writers
            .into_iter()
            .filter(|(_, events)| events.len() > 1)
            .map(|((entity, id), _)| (entity, id.to_string()))
            .collect();
        keys.sort();
        keys
    }

    /// The statements to run next, in this order; `None` once the batch is done.
    pub(crate) fn round(&mut self) -> Option<&[Statement]> {
        if self.finished {
            return None;
        }
        let (statements, made_before) = self.plan();
        self.made_before = made_before;
        Some(self.pending.insert(statements))
    }

    /// What the database did with each statement of the last round.
    pub(crate) fn learn(&mut self, results: &[Written]) {
        let statements = self.pending.take().expect("learn after round");
        assert_eq!(statements.len(), results.len(), "one result per statement");
        let mut again = false;
        self.not_applied.clear();
        for (s, r) in statements.into_iter().zip(results) {
            if r == &Written::Applied && (s.slot == Slot::Pointer || s.pointer.is_some()) {
                self.pointer_written.insert((s.entity, s.id.clone()));
            }
            if s.pointer.is_some() {
                match r {
                    Written::Applied => {
                        self.applied.insert(s.event);
                        self.applied.extend(&s.folded);
                    }
                    // Which rule said no (or which part the server refused) is unknown:
                    // the next round writes the two apart.
                    _ => {
                        self.apart.insert((s.entity, s.id.clone()));
                        again = true;
                    }
                }
                continue;
            }
            match (r, s.slot) {
                (Written::Applied, Slot::Pointer) => {}
                (Written::Applied, _) => {
                    self.applied.insert(s.event);
                    self.applied.extend(&s.folded);
                }
                (Written::NotApplied, Slot::Pointer | Slot::Activity) => {}
                (Written::NotApplied, _) => self.not_applied.push(s),
                // The payload is what a server refuses in a pointer: less of it next time.
                // Without any payload and still refused (the document itself is, say a
                // unique index on another field): the pointer is given up, the event isn't.
                (Written::Refused(_), Slot::Pointer) => {
                    let form = &mut self.payload[s.event];
                    let less = match form {
                        PayloadForm::Document => Some(PayloadForm::Text),
                        PayloadForm::Text => Some(PayloadForm::Omitted),
                        PayloadForm::Omitted => None,
                    };
                    if let Some(less) = less {
                        *form = less;
                        again = true;
                    }
                }
                (Written::Refused(reason), _) => {
                    if let std::collections::hash_map::Entry::Vacant(e) =
                        self.refused.entry(s.event)
                    {
                        e.insert(reason.clone());
                        again = true;
                    }
                }
            }
        }
        self.finished = !again;
    }

    /// Events with a write applied so far (indexes into the batch).
    pub(crate) fn applied(&self) -> &HashSet<usize> {
        &self.applied
    }

    /// Events the database refused (index, reason): to dead-letter.
    pub(crate) fn refused(&self) -> &HashMap<usize, String> {
        &self.refused
    }

    /// Documents to read before [`Batch::outcomes`] can tell `duplicate` from `stale`.
    pub(crate) fn to_read(&self) -> Vec<(Entity, String)> {
        let mut keys: Vec<(Entity, String)> = self
            .not_applied
            .iter()
            .filter(|s| !self.applied.contains(&s.event))
            .map(|s| (s.entity, s.id.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Each event's outcome, given the documents read for [`Batch::to_read`].
    pub(crate) fn outcomes(&self, current: &HashMap<(Entity, String), Document>) -> Vec<Outcome> {
        let mut outcomes: Vec<Outcome> = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, input)| match input.change {
                Change::Ignored => Outcome::Ignored,
                Change::Invalid { .. } => Outcome::DeadLettered,
                Change::Writes(_) if self.refused.contains_key(&i) => Outcome::DeadLettered,
                Change::Writes(_) if self.applied.contains(&i) => Outcome::Applied,
                Change::Writes(_) if self.made_before.contains(&i) => Outcome::Duplicate,
                Change::Writes(_) => Outcome::Stale,
            })
            .collect();
        // Not admitted, yet the document holds exactly its stamp: its change was made
        // before (by an attempt that stopped before recording it).
        for s in &self.not_applied {
            if outcomes[s.event] != Outcome::Stale {
                continue;
            }
            let stamp = current
                .get(&(s.entity, s.id.clone()))
                .and_then(|d| d.get(s.slot.stamp_field()));
            if stamp == Some(&s.stamp) {
                outcomes[s.event] = Outcome::Duplicate;
            }
        }
        outcomes
    }

    /// The document as read before the batch: `None` when it wasn't read, `Some(None)` when
    /// it didn't exist.
    fn known(&self, entity: Entity, id: &str) -> Option<Option<&Document>> {
        self.known
            .get(&(entity, id.to_string()))
            .map(Option::as_ref)
    }

    /// The statements the events need now, in arrival order, then one pointer per document;
    /// and the events whose change the documents read before the batch already hold.
    fn plan(&self) -> (Vec<Statement>, HashSet<usize>) {
        let mut statements = Vec::new();
        // Whether each statement was admitted by its document as read before the batch.
        let mut read = Vec::new();
        let mut made_before = HashSet::new();
        // The stamp of the last statement planned per (document, slot): a later-arriving
        // event that doesn't beat it can't land, one at a time or batched.
        let mut planned: HashMap<(Entity, &str, Slot), Bson> = HashMap::new();
        // The newest event per document, for its pointer.
        let mut newest: HashMap<(Entity, &str), usize> = HashMap::new();
        let mut order: Vec<(Entity, &str)> = Vec::new();
        for (i, input) in self.inputs.iter().enumerate() {
            let version = input.version();
            let writes = input.writes();
            if let Some(key) = input.document() {
                match newest.get(&key) {
                    None => {
                        order.push(key);
                        newest.insert(key, i);
                    }
                    Some(&j) if self.inputs[j].version() < version => {
                        newest.insert(key, i);
                    }
                    Some(_) => {}
                }
            }
            if self.refused.contains_key(&i) {
                continue;
            }
            for intent in writes {
                let stamp = match intent.at {
                    Some(ms) => Bson::DateTime(DateTime::from_millis(ms)),
                    None => Bson::String(version.clone()),
                };
                let key = (intent.entity, intent.id.as_str(), intent.slot);
                if planned
                    .get(&key)
                    .is_some_and(|old| !intent.slot.beats(&stamp, old))
                {
                    continue;
                }
                planned.insert(key, stamp.clone());
                let statement = Statement {
                    entity: intent.entity,
                    id: intent.id.clone(),
                    slot: intent.slot,
                    stamp,
                    set: intent.set.clone(),
                    event: i,
                    payload: None,
                    folded: Vec::new(),
                    pointer: None,
                };
                let known = self.known(intent.entity, &intent.id);
                // Not read: sent, and its filter decides.
                if known.is_none_or(|doc| statement.admits_alone(doc)) {
                    statements.push(statement);
                    read.push(known.is_some());
                } else if known
                    .flatten()
                    .and_then(|d| d.get(intent.slot.stamp_field()))
                    == Some(&statement.stamp)
                    && intent.slot != Slot::Activity
                {
                    made_before.insert(i);
                }
            }
        }
        let mut statements = fold(statements, &read);
        for key in order {
            let i = newest[&key];
            let pointer = self.pointer(key.0, key.1, i);
            let written = self.pointer_written.contains(&(key.0, key.1.to_string()));
            let refused = self
                .known(key.0, key.1)
                .is_some_and(|doc| !pointer.admits_alone(doc));
            if !written && refused {
                continue;
            }
            // The newest event's profile statement, if it has one, is the document's last
            // (it beats every other): the pointer can ride along.
            let together = !self.apart.contains(&(key.0, key.1.to_string()));
            let carrier = statements.iter_mut().rev().find(|s| {
                together
                    && s.event == i
                    && s.slot == Slot::Profile
                    && s.entity == key.0
                    && s.id == key.1
            });
            match carrier {
                Some(s) => s.pointer = Some(Box::new(pointer)),
                None => statements.push(pointer),
            }
        }
        (statements, made_before)
    }

    /// `lastEventId`, `lastEventAt`, `webhookPayload` and the sync fields, for event `i`.
    fn pointer(&self, entity: Entity, id: &str, i: usize) -> Statement {
        let input = &self.inputs[i];
        let payload = match self.payload[i] {
            PayloadForm::Document => input.payload.clone(),
            PayloadForm::Text => Stored::text(input.raw),
            PayloadForm::Omitted => Stored::none(),
        };
        let failure = match (self.refused.get(&i), input.change) {
            (Some(reason), _) | (None, Change::Invalid { reason, .. }) => Some(reason),
            _ => None,
        };
        let (status, error) = match failure {
            Some(reason) => ("failed", Bson::String(reason.clone())),
            None => ("synced", Bson::Null),
        };
        Statement {
            entity,
            id: id.to_string(),
            slot: Slot::Pointer,
            stamp: Bson::String(input.version()),
            set: doc! {
                "lastEventId": input.event_id,
                "lastEventAt": DateTime::from_millis(input.event_time),
                "syncStatus": status,
                "syncError": error,
                "lastSyncAttempt": self.now,
            },
            event: i,
            payload: Some(payload),
            folded: Vec::new(),
            pointer: None,
        }
    }
}

/// A batch's statements with each one that a later statement of the same document and
/// slot overwrites folded into that later one: one write per document and slot instead of
/// one per event, when a user's events come together.
///
/// The statements are planned in arrival order, each beating the one before it on its
/// document and slot, so the last one is what the document ends with. An earlier one that
/// its document as read before the batch admitted (`read`) would, one at a time, have
/// landed and been overwritten by the next: the last one's landing is its own (and if the
/// last doesn't land, another writer got ahead of all of them). One whose document wasn't
/// read might have been refused, so it is sent, as is one that sets a field the later one
/// doesn't (the later one wouldn't overwrite it).
fn fold(statements: Vec<Statement>, read: &[bool]) -> Vec<Statement> {
    // Each statement's carrier: the last of its run, the statements of its document and
    // slot with no statement of the same document in another slot between them (the rules
    // of some slots read another's stamp: a session's status is refused once it has a
    // final stamp, so a status write can't move past a final one, nor the reverse).
    let mut carrier: Vec<usize> = (0..statements.len()).collect();
    let mut run_of: HashMap<(Entity, &str), Vec<usize>> = HashMap::new();
    for (i, s) in statements.iter().enumerate() {
        let run = run_of.entry((s.entity, s.id.as_str())).or_default();
        if run.last().is_some_and(|&j| statements[j].slot != s.slot) {
            run.clear();
        }
        for &j in run.iter() {
            carrier[j] = i;
        }
        run.push(i);
    }
    let mut into: HashMap<usize, Vec<usize>> = HashMap::new();
    let kept: Vec<bool> = statements
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let j = carrier[i];
            let covered = s.set.keys().all(|k| statements[j].set.contains_key(k));
            if j != i && read[i] && covered {
                into.entry(j).or_default().push(s.event);
                false
            } else {
                true
            }
        })
        .collect();
    statements
        .into_iter()
        .enumerate()
        .filter(|(i, _)| kept[*i])
        .map(|(i, mut s)| {
            s.folded = into.remove(&i).unwrap_or_default();
            s
        })
        .collect()
}

#[cfg(test)]
mod tests;
