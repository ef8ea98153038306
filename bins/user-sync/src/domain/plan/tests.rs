//! The order rules against a document store in memory: every delivery order, every
//! batching, refusals, crashes between write and record.

use std::collections::{HashMap, HashSet};

use bson::{Bson, DateTime, Document};
use events::EventMessage;
use serde_json::{json, Value};

use super::*;
use crate::domain::entity::{self, Entity};
use crate::domain::payload::Stored;

/// Documents, and the audit records (outcome, redeliveries).
#[derive(Default, Clone)]
struct Memory {
    docs: HashMap<(Entity, String), Document>,
    records: HashMap<String, (Outcome, u32)>,
    /// Statements that landed.
    writes: usize,
    /// Statements sent.
    sent: usize,
    /// No read before each batch: only the filters decide.
    blind: bool,
    /// The read before each batch sees no document (as if another writer wrote them all
    /// between that read and the batch's writes).
    stale_read: bool,
    /// No read before each batch but of the documents two of its events write (what
    /// user-sync does while nothing is stale).
    shared_only: bool,
}

/// Which writes the "database" refuses: those that set `email` to this.
const REFUSED_EMAIL: &str = "taken@example.com";

impl Memory {
    fn exec(&mut self, statements: &[Statement], now: DateTime) -> Vec<Written> {
        self.sent += statements.len();
        statements
            .iter()
            .map(|s| {
                let pointer_refused =
                    |s: &Statement| s.set.get_str("lastEventId") == Ok("pointer-refused");
                if pointer_refused(s) || s.pointer.as_deref().is_some_and(pointer_refused) {
                    return Written::Refused("document failed validation".into());
                }
                if s.set.get_str("email") == Ok(REFUSED_EMAIL) {
                    return Written::Refused("E11000 duplicate key (email)".into());
                }
                let key = (s.entity, s.id.clone());
                if !s.admits(self.docs.get(&key)) {
                    return Written::NotApplied;
                }
                let doc = self.docs.entry(key).or_insert_with(|| {
                    let mut d = s.on_insert(now);
                    d.insert("clerkId", s.id.clone());
                    d
                });
                doc.extend(s.fields(now));
                for f in s.unsets() {
                    doc.remove(f);
                }
                self.writes += 1;
                Written::Applied
            })
            .collect()
    }

    /// What user-sync does with one batch (consumption order), minus the I/O.
    fn batch(&mut self, messages: &[EventMessage]) {
        let enabled = Entity::ALL;
        let now = DateTime::from_millis(1);
        let mut seen = HashSet::new();
        let firsts: Vec<&EventMessage> = messages
            .iter()
            .filter(|m| seen.insert(m.event_id.clone()))
            .collect();
        let changes: Vec<Change> = firsts.iter().map(|m| entity::change(m, &enabled)).collect();
        let payloads: Vec<Stored> = firsts.iter().map(|m| Stored::of(&m.data)).collect();
        let inputs: Vec<Input<'_>> = firsts
            .iter()
            .zip(&changes)
            .zip(&payloads)
            .map(|((m, change), payload)| Input {
                event_id: &m.event_id,
                event_time: m.event_time,
                change,
                payload,
                raw: m.data.get(),
            })
            .collect();
        let read = if self.blind {
            Vec::new()
        } else if self.shared_only {
            Batch::shared_documents(&inputs)
        } else {
            Batch::documents(&inputs)
        };
        let known: Known = read
            .into_iter()
            .map(|k| {
                let doc = self.docs.get(&k).filter(|_| !self.stale_read).cloned();
                (k, doc)
            })
            .collect();
        let mut batch = Batch::new(&inputs, now, &known);
        while let Some(statements) = batch.round() {
            let results = self.exec(statements, now);
            batch.learn(&results);
        }
        let current: HashMap<(Entity, String), Document> = batch
            .to_read()
            .into_iter()
            .filter_map(|k| self.docs.get(&k).map(|d| (k, d.clone())))
            .collect();
        let outcomes = batch.outcomes(&current);
        let mut recorded_now = HashSet::new();
        for m in messages {
            let i = firsts
                .iter()
                .position(|f| f.event_id == m.event_id)
                .unwrap();
            let first_time = recorded_now.insert(m.event_id.clone());
            match self.records.get_mut(&m.event_id) {
                Some(record) if first_time && record.0 == Outcome::DeadLettered => {
                    *record = (outcomes[i], 0)
                }
                Some(record) => record.1 += 1,
                None => {
                    self.records.insert(m.event_id.clone(), (outcomes[i], 0));
                }
            }
        }
    }

    /// Documents without the fields that say when user-sync wrote.
    fn documents(&self) -> Vec<((Entity, String), Document)> {
        let mut docs: Vec<_> = self
            .docs
            .iter()
            .map(|(k, d)| {
                let mut d = d.clone();
                for f in ["createdAt", "updatedAt", "lastSyncAttempt"] {
                    d.remove(f);
                }
                // Field order is not part of a document's meaning.
                let mut fields: Vec<(String, Bson)> = d.into_iter().collect();
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                (k.clone(), fields.into_iter().collect())
            })
            .collect();
        docs.sort_by(|a, b| a.0.cmp(&b.0));
        docs
    }

    fn doc(&self, entity: Entity, id: &str) -> &Document {
        &self.docs[&(entity, id.to_string())]
    }

    fn outcome(&self, event_id: &str) -> Outcome {
        self.records[event_id].0
    }
}

/// Event times in tests are small numbers of ms after this (Clerk times are milliseconds).
const T0: i64 = 1_700_000_000_000;

/// A Clerk webhook, normalized as clerk-sync does.
fn event(id: &str, event_type: &str, data: Value) -> EventMessage {
    let body = json!({"type": event_type, "object": "event", "data": data, "timestamp": 1_700_000_000_000_i64});
    events::normalize(id, body.to_string().as_bytes()).unwrap()
}

fn user(id: &str, event_type: &str, t: i64, name: &str, email: &str) -> EventMessage {
    if event_type == "user.deleted" {
        return event(
            &format!("{event_type}-{t}"),
            event_type,
            json!({"id": "user_1", "object": "user", "deleted": true, "updated_at": T0 + t}),
        );
    }
    event(
        id,
        event_type,
        json!({
            "id": "user_1", "object": "user", "first_name": name, "updated_at": T0 + t, "created_at": 1_000,
            "primary_email_address_id": "idn_1",
            "email_addresses": [{"id": "idn_1", "email_address": email, "verification": {"status": "verified"}}],
        }),
    )
}

fn organization(event_type: &str, t: i64, name: &str) -> EventMessage {
    let data = if event_type == "organization.deleted" {
        json!({"id": "org_1", "object": "organization", "deleted": true})
    } else {
        json!({"id": "org_1", "object": "organization", "name": name, "slug": name, "members_count": t % 7, "updated_at": T0 + t, "created_at": 5})
    };
    let mut m = event(&format!("{event_type}-{t}"), event_type, data);
    m.event_time = T0 + t;
    m
}

fn membership(event_type: &str, t: i64, role: &str) -> EventMessage {
    event(
        &format!("{event_type}-{t}"),
        event_type,
        json!({
            "id": "orgmem_1", "object": "organization_membership", "role": role, "permissions": ["org:read"],
            "organization": {"id": "org_1", "name": "Acme"},
            "public_user_data": {"user_id": "user_1", "identifier": "a@example.com"},
            "updated_at": T0 + t, "created_at": 5,
        }),
    )
}

fn session(event_type: &str, t: i64, status: &str, active: i64) -> EventMessage {
    event(
        &format!("{event_type}-{t}"),
        event_type,
        json!({
            "id": "sess_1", "object": "session", "user_id": "user_1", "client_id": "client_1",
            "status": status, "last_active_at": active, "expire_at": 9_000, "abandon_at": 9_500,
            "updated_at": T0 + t, "created_at": 5,
        }),
    )
}

fn invitation(event_type: &str, t: i64, status: &str, role: &str) -> EventMessage {
    let mut data = json!({
        "id": "orginv_1", "object": "organization_invitation", "email_address": "jane@example.com",
        "role": role, "organization_id": "org_1", "status": status, "public_metadata": {},
        "expires_at": 9_000, "updated_at": T0 + t, "created_at": 5,
    });
    if status == "accepted" {
        data["user_id"] = json!("user_2");
    }
    event(&format!("{event_type}-{t}"), event_type, data)
}

/// Clerk's payer of a user: `""` for the organization.
fn payer() -> Value {
    json!({"object": "commerce_payer", "id": "cpayer_1", "user_id": "user_1", "organization_id": "", "organization_name": ""})
}

fn subscription_item(event_type: &str, t: i64, status: &str, plan: &str) -> EventMessage {
    event(
        &format!("{event_type}-{t}"),
        event_type,
        json!({
            "object": "subscription_item", "id": "csub_item_1", "status": status,
            "is_free_trial": false, "period_start": T0, "period_end": null, "interval": "month",
            "plan_id": format!("cplan_{plan}"),
            "plan": {"id": format!("cplan_{plan}"), "slug": plan, "name": plan, "amount": 2000, "currency": "USD"},
            "seats": {"quantity": 5}, "payer": payer(), "subscription_id": "csub_1",
            "updated_at": T0 + t, "created_at": 5,
        }),
    )
}

fn subscription(event_type: &str, t: i64, status: &str) -> EventMessage {
    event(
        &format!("{event_type}-{t}"),
        event_type,
        json!({
            "object": "commerce_subscription", "id": "csub_1", "status": status,
            "active_at": T0, "past_due_at": null, "canceled_at": null, "ended_at": null,
            "payer_id": "cpayer_1", "payer": payer(), "latest_payment_id": format!("cpa_{t}"),
            "items": [{"id": "csub_item_1", "status": status, "subscription_id": null}],
            "updated_at": T0 + t, "created_at": 5,
        }),
    )
}

fn payment_attempt(event_type: &str, t: i64, status: &str) -> EventMessage {
    let failed = status == "failed";
    event(
        &format!("{event_type}-{t}"),
        event_type,
        json!({
            "id": "pa_1", "payment_id": "cpa_1", "status": status, "charge_type": "recurring",
            "failed_at": if failed { json!(T0 + t) } else { Value::Null },
            "failed_reason": if failed { json!({"code": "card_declined", "decline_code": "insufficient_funds"}) } else { Value::Null },
            "payer": {"id": "cpayer_1", "user_id": "user_1"},
            "totals": {"grand_total": {"amount": 2200, "currency": "USD"}},
            "subscription_items": [{"id": "csub_item_1", "status": "active"}],
            "billing_date": T0, "updated_at": T0 + t, "created_at": 5,
        }),
    )
}

/// Every distinct order of `items` (duplicates in `items` give each order once).
fn orders(items: &[usize]) -> Vec<Vec<usize>> {
    let mut all = HashSet::new();
    fn go(rest: &mut Vec<usize>, prefix: &mut Vec<usize>, all: &mut HashSet<Vec<usize>>) {
        if rest.is_empty() {
            all.insert(prefix.clone());
            return;
        }
        let mut tried = HashSet::new();
        for i in 0..rest.len() {
            if !tried.insert(rest[i]) {
                continue;
            }
            let x = rest.remove(i);
            prefix.push(x);
            go(rest, prefix, all);
            prefix.pop();
            rest.insert(i, x);
        }
    }
    go(&mut items.to_vec(), &mut Vec::new(), &mut all);
    let mut all: Vec<_> = all.into_iter().collect();
    all.sort();
    all
}

/// Runs `messages` in `order`, `size` at a time (0: all in one batch).
fn run(messages: &[EventMessage], order: &[usize], size: usize) -> Memory {
    run_with(Memory::default(), messages, order, size)
}

fn run_with(mut memory: Memory, messages: &[EventMessage], order: &[usize], size: usize) -> Memory {
    let delivered: Vec<EventMessage> = order.iter().map(|&i| messages[i].clone()).collect();
    let size = if size == 0 { delivered.len() } else { size };
    for chunk in delivered.chunks(size) {
        memory.batch(chunk);
    }
    memory
}

/// Every order of the events, each delivered twice, at batch sizes 1, 3 and unlimited:
/// the same documents; the same audit outcomes at every batch size for one order, and the
/// same again without a read before each batch (only the filters decide) or with a read of
/// the documents several of its events write only (user-sync while nothing is stale); and
/// the same documents when that read sees nothing (another writer got there between the
/// read and the writes).
fn converges(messages: &[EventMessage]) -> Memory {
    let twice: Vec<usize> = (0..messages.len()).flat_map(|i| [i, i]).collect();
    let mut expected: Option<Vec<((Entity, String), Document)>> = None;
    let mut last = None;
    let blind = || Memory {
        blind: true,
        ..Memory::default()
    };
    let shared_only = || Memory {
        shared_only: true,
        ..Memory::default()
    };
    let stale_read = || Memory {
        stale_read: true,
        ..Memory::default()
    };
    for order in orders(&twice) {
        let one = run(messages, &order, 1);
        let variants = [
            (3, run(messages, &order, 3)),
            (0, run(messages, &order, 0)),
            (1, run_with(blind(), messages, &order, 1)),
            (0, run_with(blind(), messages, &order, 0)),
            (1, run_with(shared_only(), messages, &order, 1)),
            (0, run_with(shared_only(), messages, &order, 0)),
        ];
        // A read that another writer made stale can't change the documents (its folded
        // events may read `applied` where, one at a time, they would have been `stale`).
        for size in [1, 0] {
            let raced = run_with(stale_read(), messages, &order, size);
            assert_eq!(
                raced.documents(),
                one.documents(),
                "order {order:?}, batch size {size}, stale read"
            );
        }
        for (size, batched) in variants {
            assert_eq!(
                batched.documents(),
                one.documents(),
                "order {order:?}, batch size {size}"
            );
            let outcomes = |m: &Memory| {
                let mut r: Vec<_> = m.records.iter().map(|(k, v)| (k.clone(), *v)).collect();
                r.sort_by(|a, b| a.0.cmp(&b.0));
                r
            };
            assert_eq!(
                outcomes(&batched),
                outcomes(&one),
                "order {order:?}, batch size {size}"
            );
        }
        let docs = one.documents();
        match &expected {
            None => expected = Some(docs),
            Some(e) => assert_eq!(&docs, e, "order {order:?}"),
        }
        for (id, (_, duplicates)) in &one.records {
            assert_eq!(
                *duplicates, 1,
                "{id} is delivered twice: one record, one redelivery"
            );
        }
        last = Some(one);
    }
    last.unwrap()
}

#[test]
fn users_every_order_every_batching_converges() {
    let events = [
        user("c", "user.created", 1_000, "Ada", "a@example.com"),
        user("u1", "user.updated", 2_000, "Ada L.", "a@example.com"),
        user(
            "u2",
            "user.updated",
            3_000,
            "Ada Lovelace",
            "ada@example.com",
        ),
        user("d", "user.deleted", 4_000, "", ""),
    ];
    let m = converges(&events);
    let doc = m.doc(Entity::User, "user_1");
    assert_eq!(doc.get_str("firstName").unwrap(), "Ada Lovelace");
    assert_eq!(doc.get_str("email").unwrap(), "ada@example.com");
    assert!(doc.get_bool("isDeleted").unwrap());
    assert_eq!(
        doc.get_datetime("deletedAt").unwrap().timestamp_millis(),
        T0 + 4_000
    );
    assert_eq!(doc.get_str("lastEventId").unwrap(), "user.deleted-4000");
    assert_eq!(doc.get_str("syncStatus").unwrap(), "synced");
}

#[test]
fn organizations_every_order_every_batching_converges() {
    let events = [
        organization("organization.created", 1_000, "acme"),
        organization("organization.updated", 2_000, "acme-2"),
        organization("organization.updated", 3_000, "acme-3"),
        organization("organization.deleted", 4_000, ""),
    ];
    let m = converges(&events);
    let doc = m.doc(Entity::Organization, "org_1");
    assert_eq!(doc.get_str("name").unwrap(), "acme-3");
    assert_eq!(doc.get_i64("membersCount").unwrap(), 3_000 % 7);
    assert!(doc.get_bool("isDeleted").unwrap());
}

#[test]
fn memberships_every_order_every_batching_converges() {
    let events = [
        membership("organizationMembership.created", 1_000, "org:member"),
        membership("organizationMembership.updated", 2_000, "org:admin"),
        membership("organizationMembership.updated", 3_000, "org:billing"),
        membership("organizationMembership.deleted", 4_000, "org:billing"),
    ];
    let m = converges(&events);
    let doc = m.doc(Entity::Membership, "orgmem_1");
    assert_eq!(doc.get_str("role").unwrap(), "org:billing");
    assert_eq!(doc.get_str("organizationId").unwrap(), "org_1");
    assert_eq!(doc.get_str("userId").unwrap(), "user_1");
    assert!(doc.get_bool("isDeleted").unwrap());
}

#[test]
fn sessions_every_order_every_batching_converges_and_an_end_is_final() {
    let events = [
        session("session.created", 1_000, "active", 900),
        session("session.ended", 2_000, "ended", 1_900),
        session("session.removed", 3_000, "removed", 1_800),
    ];
    let m = converges(&events);
    let doc = m.doc(Entity::Session, "sess_1");
    assert_eq!(
        doc.get_str("status").unwrap(),
        "ended",
        "the earliest end decides"
    );
    assert_eq!(
        doc.get_datetime("endedAt").unwrap().timestamp_millis(),
        T0 + 2_000
    );
    assert!(!doc.get_bool("isDeleted").unwrap());
    assert_eq!(doc.get_str("clientId").unwrap(), "client_1");
    // The user's last activity is the newest seen, whichever event carried it.
    let user = m.doc(Entity::User, "user_1");
    assert_eq!(
        user.get_datetime("lastActiveAt")
            .unwrap()
            .timestamp_millis(),
        1_900
    );
    assert!(!user.get_bool("isDeleted").unwrap());
}

#[test]
fn invitations_every_order_every_batching_converges_and_acceptance_is_final() {
    let events = [
        invitation(
            "organizationInvitation.created",
            1_000,
            "pending",
            "org:member",
        ),
        invitation(
            "organizationInvitation.accepted",
            2_000,
            "accepted",
            "org:member",
        ),
        invitation(
            "organizationInvitation.revoked",
            3_000,
            "revoked",
            "org:member",
        ),
    ];
    let m = converges(&events);
    let doc = m.doc(Entity::Invitation, "orginv_1");
    assert_eq!(
        doc.get_str("status").unwrap(),
        "accepted",
        "the earliest end"
    );
    assert_eq!(doc.get_str("userId").unwrap(), "user_2");
    assert_eq!(doc.get_str("organizationId").unwrap(), "org_1");
    assert_eq!(doc.get_str("emailAddress").unwrap(), "jane@example.com");
    assert!(!doc.get_bool("isDeleted").unwrap());

    // A "pending" newer by version than the acceptance (clocks disagree) doesn't reopen it.
    let late = [
        invitation(
            "organizationInvitation.accepted",
            2_000,
            "accepted",
            "org:member",
        ),
        invitation(
            "organizationInvitation.created",
            3_000,
            "pending",
            "org:admin",
        ),
    ];
    let m = converges(&late);
    let doc = m.doc(Entity::Invitation, "orginv_1");
    assert_eq!(doc.get_str("status").unwrap(), "accepted");
    assert_eq!(
        doc.get_str("role").unwrap(),
        "org:admin",
        "profile: the newest"
    );

    // A backfill snapshot of the accepted invitation (the Backend API names no user), the
    // same `updated_at` as the acceptance webhook, so earlier by version: in every order,
    // the webhook's end lands and says who accepted.
    let mut snapshot = invitation(
        "organizationInvitation.updated",
        2_000,
        "accepted",
        "org:member",
    );
    snapshot.event_id = format!("backfill:orginv_1:{}", T0 + 2_000);
    let mut data: Value = serde_json::from_str(snapshot.data.get()).unwrap();
    data.as_object_mut().unwrap().remove("user_id");
    snapshot.data = serde_json::value::to_raw_value(&data).unwrap();
    let mixed = [
        invitation(
            "organizationInvitation.created",
            1_000,
            "pending",
            "org:member",
        ),
        snapshot,
        invitation(
            "organizationInvitation.accepted",
            2_000,
            "accepted",
            "org:member",
        ),
    ];
    let m = converges(&mixed);
    let doc = m.doc(Entity::Invitation, "orginv_1");
    assert_eq!(doc.get_str("status").unwrap(), "accepted");
    assert_eq!(doc.get_str("userId").unwrap(), "user_2");
}

#[test]
fn subscription_items_every_order_every_batching_converge_to_the_newest_status() {
    // Clerk's lifecycle of one paid item: past due, active again, canceled, ended. (Four
    // events, each twice: 2,520 orders.)
    let events = [
        subscription_item("subscriptionItem.pastDue", 2_000, "past_due", "pro"),
        subscription_item("subscriptionItem.active", 3_000, "active", "pro"),
        subscription_item("subscriptionItem.canceled", 4_000, "canceled", "pro"),
        subscription_item("subscriptionItem.ended", 5_000, "ended", "pro"),
    ];
    let m = converges(&events);
    let doc = m.doc(Entity::SubscriptionItem, "csub_item_1");
    assert_eq!(doc.get_str("status").unwrap(), "ended");
    assert_eq!(doc.get_str("payerId").unwrap(), "user_1");
    assert_eq!(doc.get_str("payerType").unwrap(), "user");
    assert_eq!(doc.get_str("clerkPayerId").unwrap(), "cpayer_1");
    assert_eq!(doc.get_str("planSlug").unwrap(), "pro");
    assert_eq!(doc.get_i64("planAmount").unwrap(), 2000);
    assert_eq!(doc.get_i64("seats").unwrap(), 5);
    assert!(!doc.get_bool("isFreeTrial").unwrap());
    assert_eq!(doc.get("periodEnd"), Some(&Bson::Null));

    // No billing status is final: the default plan's item keeps its id through `ended`
    // and comes back `active` (Clerk's documentation).
    let back = [
        subscription_item("subscriptionItem.ended", 1_000, "ended", "free"),
        subscription_item("subscriptionItem.upcoming", 2_000, "upcoming", "free"),
        subscription_item("subscriptionItem.active", 3_000, "active", "free"),
    ];
    let m = converges(&back);
    assert_eq!(
        m.doc(Entity::SubscriptionItem, "csub_item_1")
            .get_str("status")
            .unwrap(),
        "active"
    );
}

#[test]
fn subscriptions_and_payment_attempts_every_order_every_batching_converge() {
    let events = [
        subscription("subscription.pastDue", 2_000, "past_due"),
        subscription("subscription.active", 3_000, "active"),
        payment_attempt("paymentAttempt.updated", 2_500, "failed"),
    ];
    let m = converges(&events);
    let doc = m.doc(Entity::Subscription, "csub_1");
    assert_eq!(doc.get_str("status").unwrap(), "active");
    assert_eq!(doc.get_str("payerId").unwrap(), "user_1");
    assert_eq!(doc.get_str("latestPaymentId").unwrap(), "cpa_3000");
    let attempt = m.doc(Entity::PaymentAttempt, "pa_1");
    assert_eq!(attempt.get_str("status").unwrap(), "failed");
    assert_eq!(attempt.get_i64("amount").unwrap(), 2200);
    assert_eq!(
        attempt
            .get_document("failedReason")
            .unwrap()
            .get_str("code")
            .unwrap(),
        "card_declined"
    );
    assert_eq!(
        attempt.get_array("subscriptionItemIds").unwrap(),
        &vec![Bson::String("csub_item_1".into())]
    );
    // The items nested in a subscription event are not written from it: their own events
    // carry them whole, with their payer.
    assert!(!m
        .docs
        .contains_key(&(Entity::SubscriptionItem, "csub_item_1".into())));

    // A payment's outcome, the newest event, holds when its `pending` arrives late.
    let m = converges(&[
        payment_attempt("paymentAttempt.updated", 2_500, "failed"),
        payment_attempt("paymentAttempt.created", 1_500, "pending"),
    ]);
    let attempt = m.doc(Entity::PaymentAttempt, "pa_1");
    assert_eq!(attempt.get_str("status").unwrap(), "failed", "the newest");
}

#[test]
fn a_session_never_becomes_active_again() {
    // An "active" event newer by version than the end (clocks disagree): the end stays.
    let events = [
        session("session.ended", 2_000, "ended", 1_000),
        session("session.touched", 3_000, "active", 2_500),
    ];
    let m = converges(&events);
    let doc = m.doc(Entity::Session, "sess_1");
    assert_eq!(doc.get_str("status").unwrap(), "ended");
    // Its other fields still follow the newest event.
    assert_eq!(
        doc.get_datetime("lastActiveAt").unwrap().timestamp_millis(),
        2_500
    );
}

#[test]
fn a_deletion_of_an_unknown_id_leaves_a_tombstone_a_late_create_cannot_revive() {
    let deleted = user("d", "user.deleted", 5_000, "", "");
    let created = user("c", "user.created", 1_000, "Ada", "a@example.com");
    let m = run(&[deleted, created], &[0, 1], 1);
    let doc = m.doc(Entity::User, "user_1");
    assert!(doc.get_bool("isDeleted").unwrap());
    assert_eq!(
        doc.get_str("firstName").unwrap(),
        "Ada",
        "older data still fills fields"
    );
    assert_eq!(m.outcome("c"), Outcome::Applied);
    assert_eq!(doc.get_str("lastEventId").unwrap(), "user.deleted-5000");
}

#[test]
fn deleted_at_is_the_earliest_deletion_whatever_the_batching() {
    let a = user("", "user.deleted", 5_000, "", "");
    let b = user("", "user.deleted", 4_000, "", "");
    for order in [[0, 1], [1, 0]] {
        for size in [1, 0] {
            let m = run(&[a.clone(), b.clone()], &order, size);
            let doc = m.doc(Entity::User, "user_1");
            assert_eq!(
                doc.get_datetime("deletedAt").unwrap().timestamp_millis(),
                T0 + 4_000
            );
            assert_eq!(m.outcome("user.deleted-4000"), Outcome::Applied);
            let later = if order == [0, 1] {
                Outcome::Applied
            } else {
                Outcome::Stale
            };
            assert_eq!(m.outcome("user.deleted-5000"), later, "{order:?} {size}");
        }
    }
}

#[test]
fn a_refused_event_is_the_only_one_dead_lettered() {
    let p1 = user("p1", "user.updated", 1_000, "One", "one@example.com");
    let p3 = user("p3", "user.updated", 3_000, "Three", REFUSED_EMAIL);
    let p2 = user("p2", "user.updated", 2_000, "Two", "two@example.com");
    let events = [p1, p3, p2];
    for order in orders(&[0, 1, 2]) {
        let one = run(&events, &order, 1);
        let all = run(&events, &order, 0);
        assert_eq!(all.documents(), one.documents(), "{order:?}");
        let doc = one.doc(Entity::User, "user_1");
        assert_eq!(doc.get_str("firstName").unwrap(), "Two", "{order:?}");
        assert_eq!(one.outcome("p3"), Outcome::DeadLettered);
        assert_eq!(all.outcome("p3"), Outcome::DeadLettered);
        assert_eq!(all.outcome("p2"), Outcome::Applied, "{order:?}");
        // The newest event failed: the document says so, whatever arrived last.
        assert_eq!(doc.get_str("syncStatus").unwrap(), "failed");
        assert_eq!(doc.get_str("lastEventId").unwrap(), "p3");
    }
}

#[test]
fn a_change_made_before_a_crash_is_recorded_as_a_duplicate() {
    let p = user("p", "user.updated", 1_000, "Ada", "a@example.com");
    let mut m = run(std::slice::from_ref(&p), &[0], 1);
    m.records.clear(); // the write landed, the record didn't
    m.batch(std::slice::from_ref(&p));
    assert_eq!(m.outcome("p"), Outcome::Duplicate);
    let older = user("o", "user.updated", 500, "Old", "o@example.com");
    m.batch(&[older]);
    assert_eq!(m.outcome("o"), Outcome::Stale);
}

#[test]
fn a_redelivery_writes_nothing_not_even_the_sync_time() {
    // The pointer's rule admits its own event again only to change what it says of it
    // (failed → synced after a replay): a second backfill must leave documents untouched.
    for events in [
        vec![user("p", "user.updated", 1_000, "Ada", "a@example.com")],
        vec![organization("organization.updated", 1_000, "Acme")],
        vec![session("session.created", 1_000, "active", 5_000)],
    ] {
        let mut m = run(&events, &[0], 1);
        let writes = m.writes;
        m.batch(&events);
        m.records.clear();
        m.batch(&events);
        assert_eq!(m.writes, writes, "{:?}", events[0].event_type);
    }
}

#[test]
fn types_not_kept_are_ignored_and_invalid_ones_dead_lettered() {
    let invitation = event(
        "inv",
        "organizationDomain.created",
        json!({"id": "orgdmn_1", "organization_id": "org_1", "updated_at": 1}),
    );
    let membership_without_org = event(
        "bad",
        "organizationMembership.created",
        json!({"id": "orgmem_2", "updated_at": 1}),
    );
    let mut m = Memory::default();
    m.batch(&[invitation, membership_without_org]);
    assert_eq!(m.outcome("inv"), Outcome::Ignored);
    assert_eq!(m.outcome("bad"), Outcome::DeadLettered);
    // The invalid event names its membership: that document says it failed.
    assert_eq!(m.docs.len(), 1);
    let doc = m.doc(Entity::Membership, "orgmem_2");
    assert_eq!(doc.get_str("syncStatus").unwrap(), "failed");
    assert!(doc.get_str("syncError").unwrap().contains("organization"));
    assert_eq!(doc.get_str("lastEventId").unwrap(), "bad");
}

#[test]
fn last_active_at_only_moves_forward() {
    let a = session("session.created", 1_000, "active", 5_000);
    let b = session("session.touched", 2_000, "active", 4_000);
    for order in [[0, 1], [1, 0]] {
        let m = run(&[a.clone(), b.clone()], &order, 1);
        let user = m.doc(Entity::User, "user_1");
        assert_eq!(
            user.get_datetime("lastActiveAt")
                .unwrap()
                .timestamp_millis(),
            5_000
        );
    }
}

#[test]
fn filters_say_what_admits_says() {
    // The MongoDB filter of each rule names the stamp and the condition admits checks.
    let s = Statement {
        entity: Entity::User,
        id: "user_1".into(),
        slot: Slot::Final,
        stamp: Bson::String(version(5, "e")),
        set: Document::new(),
        event: 0,
        payload: None,
        folded: Vec::new(),
        pointer: None,
    };
    let filter = s.filter();
    assert_eq!(filter.get_str("clerkId").unwrap(), "user_1");
    let either = filter.get_array("$or").unwrap();
    assert_eq!(
        either[0]
            .as_document()
            .unwrap()
            .get_document("finalVersion")
            .unwrap()
            .get("$gt"),
        Some(&s.stamp)
    );
    let on_insert = s.on_insert(DateTime::from_millis(0));
    assert!(on_insert.contains_key("email") && on_insert.contains_key("isDeleted"));
    let mut deleting = s.clone();
    deleting.set = bson::doc! {"isDeleted": true};
    assert!(!deleting
        .on_insert(DateTime::from_millis(0))
        .contains_key("isDeleted"));
}

#[test]
fn versions_order_by_time_then_id() {
    assert!(
        version(999, "msg_b") < version(1000, "msg_a"),
        "time first, numerically"
    );
    assert!(version(1000, "msg_a") < version(1000, "msg_b"), "then id");
    assert!(
        version(-5, "msg_a") < version(0, "msg_b"),
        "negative times clamp to 0"
    );
}

#[test]
fn an_in_order_event_is_one_write_and_a_late_one_is_split() {
    let p1 = user("p1", "user.updated", 1_000, "One", "one@example.com");
    let p2 = user("p2", "user.updated", 2_000, "Two", "two@example.com");
    let enabled = Entity::ALL;
    let plan_of = |m: &EventMessage| {
        let change = entity::change(m, &enabled);
        let none = Stored::none();
        let inputs = vec![Input {
            event_id: &m.event_id,
            event_time: m.event_time,
            change: &change,
            payload: &none,
            raw: "{}",
        }];
        let known = Known::new();
        let mut batch = Batch::new(&inputs, DateTime::from_millis(1), &known);
        batch.round().unwrap().to_vec()
    };
    // The usual case: the profile and the pointer in one statement.
    let statements = plan_of(&p2);
    assert_eq!(statements.len(), 1);
    assert!(statements[0].pointer.is_some());
    assert!(statements[0].filter().contains_key("$and"));

    // A late profile event after a newer deletion: the combined write doesn't land, and
    // the next round writes the two apart, so the profile still applies.
    let mut m = Memory::default();
    m.batch(&[user("d", "user.deleted", 5_000, "", "")]);
    m.batch(std::slice::from_ref(&p1));
    assert_eq!(m.outcome("p1"), Outcome::Applied);
    let doc = m.doc(Entity::User, "user_1");
    assert_eq!(doc.get_str("firstName").unwrap(), "One");
    assert_eq!(doc.get_str("lastEventId").unwrap(), "user.deleted-5000");
}

#[test]
fn a_pointer_refused_whatever_its_payload_is_given_up_not_retried_forever() {
    let p = user(
        "pointer-refused",
        "user.updated",
        1_000,
        "Ada",
        "a@example.com",
    );
    let mut m = Memory::default();
    m.batch(std::slice::from_ref(&p));
    assert_eq!(m.outcome("pointer-refused"), Outcome::Applied);
    let doc = m.doc(Entity::User, "user_1");
    assert_eq!(doc.get_str("firstName").unwrap(), "Ada");
    assert!(!doc.contains_key("lastEventId"));
}

#[test]
fn a_null_stamp_counts_as_missing() {
    let statement = |slot: Slot| Statement {
        entity: Entity::Session,
        id: "sess_1".into(),
        slot,
        stamp: Bson::String(version(5, "e")),
        set: bson::doc! {"syncStatus": "synced"},
        event: 0,
        payload: None,
        folded: Vec::new(),
        pointer: None,
    };
    let nulls = bson::doc! {
        "isDeleted": false, "profileVersion": Bson::Null, "statusVersion": Bson::Null,
        "finalVersion": Bson::Null, "eventVersion": Bson::Null,
    };
    for slot in [Slot::Profile, Slot::Status, Slot::Final, Slot::Pointer] {
        assert!(statement(slot).admits(Some(&nulls)), "{slot:?}");
    }
    // A final stamp that is set still stops a non-terminal status.
    let mut ended = nulls.clone();
    ended.insert("finalVersion", version(9, "x"));
    assert!(!statement(Slot::Status).admits(Some(&ended)));
}

#[test]
fn a_stamp_of_another_type_counts_as_none() {
    let statement = |slot: Slot, stamp: Bson| Statement {
        entity: Entity::Session,
        id: "sess_1".into(),
        slot,
        stamp,
        set: Document::new(),
        event: 0,
        payload: None,
        folded: Vec::new(),
        pointer: None,
    };
    let version = Bson::String(version(5, "e"));
    // A number where a version string belongs: no final stamp, so the status may land.
    let current = bson::doc! {"finalVersion": 3_i64, "statusVersion": "zzz-but-a-string"};
    assert!(!statement(Slot::Status, version.clone()).admits(Some(&current)));
    let current = bson::doc! {"finalVersion": 3_i64, "statusVersion": 1.5};
    assert!(statement(Slot::Status, version.clone()).admits(Some(&current)));
    // A typed-wrong final stamp on a deleted document: missing, and deleted, so no.
    let deleted = bson::doc! {"finalVersion": 3_i64, "isDeleted": true};
    assert!(!statement(Slot::Final, version).admits(Some(&deleted)));
    // A string where a date belongs: lastActiveAt moves.
    let at = Bson::DateTime(DateTime::from_millis(5));
    let current = bson::doc! {"lastActiveAt": "2024-01-01"};
    assert!(statement(Slot::Activity, at).admits(Some(&current)));
}

#[test]
fn a_batch_the_documents_already_refuse_sends_nothing() {
    let events = [
        user("c", "user.created", 1_000, "Ada", "a@example.com"),
        user("u1", "user.updated", 2_000, "Ada L.", "a@example.com"),
        user("d", "user.deleted", 3_000, "", ""),
    ];
    for blind in [false, true] {
        let mut m = Memory {
            blind,
            ..Memory::default()
        };
        m.batch(&events);
        let first = m.sent;
        let docs = m.documents();
        // Redelivered whole, then an older event: nothing to send, same outcomes.
        m.batch(&events);
        m.batch(&[user("u0", "user.updated", 500, "Old", "o@example.com")]);
        let again = m.sent - first;
        assert_eq!(m.documents(), docs);
        for id in ["c", "u1", "user.deleted-3000"] {
            assert_eq!(m.records[id], (Outcome::Applied, 1), "{id}");
        }
        assert_eq!(m.outcome("u0"), Outcome::Stale);
        if blind {
            // Only the filters decide: every statement is sent and refused.
            assert!(again >= 4, "{again} statements sent again");
        } else {
            assert_eq!(again, 0, "{again} statements sent again");
        }
    }
}

#[test]
fn a_redelivered_refused_event_leaves_its_document_failed() {
    let c = user("c", "user.created", 1_000, "Ada", "a@example.com");
    let p = user("p", "user.updated", 2_000, "Ada", REFUSED_EMAIL);
    let mut m = Memory::default();
    m.batch(std::slice::from_ref(&c));
    m.batch(std::slice::from_ref(&p));
    assert_eq!(
        m.doc(Entity::User, "user_1").get_str("syncStatus"),
        Ok("failed")
    );
    // Again: a round writes the pointer `synced` before the refusal is known, and the
    // next round `failed` again, which the document read before the batch already said.
    m.batch(std::slice::from_ref(&p));
    let doc = m.doc(Entity::User, "user_1");
    assert_eq!(doc.get_str("syncStatus"), Ok("failed"), "{doc}");
    assert_eq!(doc.get_str("lastEventId"), Ok("p"));
    assert_eq!(m.outcome("p"), Outcome::DeadLettered);
}

#[test]
fn a_users_events_in_one_batch_make_one_write() {
    let updates: Vec<EventMessage> = (1..=5)
        .map(|k| {
            user(
                &format!("u{k}"),
                "user.updated",
                k * 1_000,
                &format!("Name {k}"),
                "a@example.com",
            )
        })
        .collect();
    for shared_only in [false, true] {
        let mut m = Memory {
            shared_only,
            ..Memory::default()
        };
        m.batch(&updates);
        // One statement: the newest profile, its pointer riding along.
        assert_eq!(m.sent, 1, "shared_only {shared_only}");
        for k in 1..=5 {
            assert_eq!(m.outcome(&format!("u{k}")), Outcome::Applied);
        }
        assert_eq!(
            m.doc(Entity::User, "user_1").get_str("firstName"),
            Ok("Name 5")
        );
    }
    // Not read: each statement goes, as its filter may refuse it.
    let mut m = Memory {
        blind: true,
        ..Memory::default()
    };
    m.batch(&updates);
    assert_eq!(m.sent, 5);
}
