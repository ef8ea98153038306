//! Organizations, memberships, invitations, sessions and Clerk Billing, under the same
//! order rules as users: every delivery order converges, deletions (and session and
//! invitation ends) are final, tombstones hold, and a mixed stream over the three topics
//! survives a SIGKILL.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bson::{doc, Document};
use events::EventMessage;
use futures::TryStreamExt;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use test_support::TestEnv;

use crate::helpers::*;

const T0: i64 = 1_732_464_000_000;

/// One Clerk object's event, as the tests describe it.
#[derive(Clone, Debug)]
struct Spec {
    kind: Kind2,
    id: String,
    event_id: String,
    /// ms after T0
    t: i64,
    /// name, role or status
    value: String,
    /// sessions: last activity (ms after T0); memberships: the member
    extra: i64,
    /// memberships: organization; sessions: user
    parent: String,
    deleted: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind2 {
    User,
    Organization,
    Membership,
    Session,
    Invitation,
    Subscription,
    SubscriptionItem,
}

impl Spec {
    fn message(&self) -> EventMessage {
        let t = T0 + self.t;
        let (event_type, data) = match self.kind {
            Kind2::User if self.deleted => (
                "user.deleted",
                json!({"id": self.id, "object": "user", "deleted": true}),
            ),
            Kind2::User => (
                "user.updated",
                json!({
                    "id": self.id, "object": "user", "first_name": self.value, "updated_at": t, "created_at": T0,
                    "email_addresses": [], "primary_email_address_id": null,
                }),
            ),
            Kind2::Organization if self.deleted => (
                "organization.deleted",
                json!({"id": self.id, "object": "organization", "deleted": true}),
            ),
            Kind2::Organization => (
                "organization.updated",
                json!({
                    "id": self.id, "object": "organization", "name": self.value, "slug": self.value.to_lowercase(),
                    "members_count": 2, "public_metadata": {"plan": self.value}, "created_by": "user_0",
                    "created_at": T0, "updated_at": t,
                }),
            ),
            Kind2::Membership => (
                if self.deleted {
                    "organizationMembership.deleted"
                } else {
                    "organizationMembership.updated"
                },
                json!({
                    "id": self.id, "object": "organization_membership", "role": self.value,
                    "permissions": ["org:sys_memberships:read"],
                    "organization": {"id": self.parent, "name": "Org"},
                    "public_user_data": {"user_id": format!("user_m{}", self.extra), "identifier": "x@example.com"},
                    "created_at": T0, "updated_at": t,
                }),
            ),
            Kind2::Invitation => (
                match self.value.as_str() {
                    "pending" => "organizationInvitation.created",
                    "accepted" => "organizationInvitation.accepted",
                    _ => "organizationInvitation.revoked",
                },
                {
                    let mut data = json!({
                        "id": self.id, "object": "organization_invitation",
                        "email_address": "invitee@example.com", "role": "org:member",
                        "organization_id": "org_shared", "status": self.value,
                        "public_metadata": {}, "expires_at": T0 + 86_400_000,
                        "created_at": T0, "updated_at": t,
                    });
                    if self.value == "accepted" {
                        data["user_id"] = json!("user_accepted");
                    }
                    data
                },
            ),
            // Clerk's payer: the user, and "" for the organization.
            Kind2::SubscriptionItem => (
                match self.value.as_str() {
                    "past_due" => "subscriptionItem.pastDue",
                    "active" => "subscriptionItem.active",
                    _ => "subscriptionItem.ended",
                },
                json!({
                    "object": "subscription_item", "id": self.id, "status": self.value,
                    "is_free_trial": false, "period_start": T0, "period_end": T0 + 86_400_000,
                    "interval": "month", "plan_id": "cplan_pro",
                    "plan": {"id": "cplan_pro", "slug": "pro", "name": "Pro", "amount": 2000, "currency": "USD"},
                    "payer": {"id": "cpayer_1", "user_id": self.parent, "organization_id": ""},
                    "subscription_id": "csub_shared", "created_at": T0, "updated_at": t,
                }),
            ),
            Kind2::Subscription => (
                match self.value.as_str() {
                    "past_due" => "subscription.pastDue",
                    _ => "subscription.active",
                },
                json!({
                    "object": "commerce_subscription", "id": self.id, "status": self.value,
                    "payer_id": "cpayer_1",
                    "payer": {"id": "cpayer_1", "user_id": self.parent, "organization_id": ""},
                    "latest_payment_id": format!("cpa_{}", self.t), "items": [],
                    "created_at": T0, "updated_at": t,
                }),
            ),
            Kind2::Session => (
                match self.value.as_str() {
                    "active" => "session.created",
                    "ended" => "session.ended",
                    "removed" => "session.removed",
                    _ => "session.revoked",
                },
                json!({
                    "id": self.id, "object": "session", "user_id": self.parent, "client_id": "client_1",
                    "status": self.value, "last_active_at": T0 + self.extra, "expire_at": T0 + 86_400_000,
                    "abandon_at": T0 + 2 * 86_400_000, "created_at": T0, "updated_at": t,
                }),
            ),
        };
        clerk_event(&self.event_id, event_type, data, t)
    }

    fn version(&self) -> (i64, &str) {
        (self.t, self.event_id.as_str())
    }
}

fn spec(kind: Kind2, id: &str, tag: &str, t: i64, value: &str, deleted: bool) -> Spec {
    Spec {
        kind,
        id: id.into(),
        event_id: format!("{tag}-{id}"),
        t,
        value: value.into(),
        extra: 0,
        parent: String::new(),
        deleted,
    }
}

fn collection(kind: Kind2) -> &'static str {
    match kind {
        Kind2::User => "users",
        Kind2::Organization => "organizations",
        Kind2::Membership => "organizationMemberships",
        Kind2::Session => "sessions",
        Kind2::Invitation => "organizationInvitations",
        Kind2::Subscription => "subscriptions",
        Kind2::SubscriptionItem => "subscriptionItems",
    }
}

async fn doc_of(db: &mongodb::Database, kind: Kind2, id: &str) -> Document {
    db.collection::<Document>(collection(kind))
        .find_one(doc! {"clerkId": id})
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no {kind:?} document {id}"))
}

/// The fields the order rules decide.
fn decided(kind: Kind2, d: &Document) -> Document {
    let fields: &[&str] = match kind {
        Kind2::User => &["firstName", "isDeleted", "deletedAt", "lastActiveAt"],
        Kind2::Organization => &[
            "name",
            "slug",
            "membersCount",
            "publicMetadata",
            "createdBy",
            "isDeleted",
            "deletedAt",
        ],
        Kind2::Membership => &[
            "role",
            "organizationId",
            "userId",
            "permissions",
            "isDeleted",
            "deletedAt",
        ],
        Kind2::Session => &[
            "status",
            "endedAt",
            "lastActiveAt",
            "clientId",
            "userId",
            "isDeleted",
        ],
        Kind2::Invitation => &[
            "status",
            "userId",
            "role",
            "organizationId",
            "emailAddress",
            "isDeleted",
        ],
        Kind2::Subscription => &["status", "payerId", "payerType", "latestPaymentId"],
        Kind2::SubscriptionItem => &[
            "status",
            "payerId",
            "payerType",
            "clerkPayerId",
            "planSlug",
            "planAmount",
        ],
    };
    let mut out: Document = fields
        .iter()
        .map(|f| {
            (
                f.to_string(),
                d.get(*f).cloned().unwrap_or(bson::Bson::Null),
            )
        })
        .collect();
    out.insert(
        "lastEventAt",
        d.get("lastEventAt").cloned().unwrap_or(bson::Bson::Null),
    );
    out.insert(
        "syncStatus",
        d.get("syncStatus").cloned().unwrap_or(bson::Bson::Null),
    );
    out
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut all = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            all.push(q);
        }
    }
    all
}

/// For organizations and memberships {created, updated, updated, deleted}, for sessions
/// {created, ended, removed}, for invitations {created, accepted, revoked}, for
/// subscription items {pastDue, active, ended} and subscriptions {active, pastDue,
/// active}: every order, each event delivered twice, one object per order; all end in the
/// same document, with one record per event and one redelivery.
#[tokio::test]
async fn every_order_converges_for_organizations_memberships_sessions_invitations_and_billing() {
    every_order(None).await;
}

/// The same, one event per batch (so nothing folds, and each batch reads what the one
/// before it left).
#[tokio::test]
async fn every_order_converges_for_every_kind_but_users_one_event_per_batch() {
    every_order(Some("1")).await;
}

async fn every_order(batch_size: Option<&str>) {
    let env = TestEnv::new().await;
    let names = names(&env);
    let mut extra = vec![ALL_STREAMS];
    extra.extend(batch_size.map(|b| ("SYNC_BATCH_SIZE", b)));
    let app = spawn_app_configured(env, names, &extra).await;
    let p = producer(&app.env);
    let mut objects: Vec<(Kind2, String, Vec<usize>)> = Vec::new();
    let mut sent = 0;
    let kinds = [
        Kind2::Organization,
        Kind2::Membership,
        Kind2::Session,
        Kind2::Invitation,
        Kind2::SubscriptionItem,
        Kind2::Subscription,
    ];
    for kind in kinds {
        let n = if matches!(kind, Kind2::Organization | Kind2::Membership) {
            4
        } else {
            3
        };
        for (o, order) in permutations(n).into_iter().enumerate() {
            let id = format!("{kind:?}-{o}").to_lowercase();
            let lifecycle = |statuses: [&str; 3]| -> Vec<Spec> {
                statuses
                    .iter()
                    .enumerate()
                    .map(|(k, status)| Spec {
                        parent: "user_payer".into(),
                        ..spec(
                            kind,
                            &id,
                            &format!("{k}"),
                            1_000 * (k as i64 + 1),
                            status,
                            false,
                        )
                    })
                    .collect()
            };
            let events: Vec<Spec> = match kind {
                Kind2::Invitation => lifecycle(["pending", "accepted", "revoked"]),
                Kind2::SubscriptionItem => lifecycle(["past_due", "active", "ended"]),
                Kind2::Subscription => lifecycle(["active", "past_due", "active"]),
                Kind2::Session => ["active", "ended", "removed"]
                    .iter()
                    .enumerate()
                    .map(|(k, status)| Spec {
                        extra: [100, 900, 500][k],
                        parent: format!("user_s{o}"),
                        ..spec(kind, &id, status, 1_000 * (k as i64 + 1), status, false)
                    })
                    .collect(),
                _ => ["c", "u1", "u2", "d"]
                    .iter()
                    .enumerate()
                    .map(|(k, tag)| Spec {
                        parent: "org_shared".into(),
                        extra: 7,
                        ..spec(
                            kind,
                            &id,
                            tag,
                            1_000 * (k as i64 + 1),
                            &format!("V{k}"),
                            k == 3,
                        )
                    })
                    .collect(),
            };
            for &k in order.iter().chain(order.iter()) {
                let m = events[k].message();
                produce(&p, topic_of(&app.names, &m), &m).await;
                sent += 1;
            }
            objects.push((kind, id, order));
        }
    }
    wait_records(&app.db, sent / 2, Duration::from_secs(120)).await;
    let events = app.db.collection::<Document>("webhook_events");
    test_support::eventually(
        Duration::from_secs(60),
        "every redelivery counted",
        || async {
            let n = events.count_documents(doc! {"duplicates": 1}).await.ok()?;
            (n == sent / 2).then_some(())
        },
    )
    .await;

    let mut expected: HashMap<Kind2, Document> = HashMap::new();
    for (kind, id, order) in &objects {
        let d = doc_of(&app.db, *kind, id).await;
        let mut got = decided(*kind, &d);
        if *kind == Kind2::Session {
            got.remove("userId"); // one user per session here
        }
        let want = expected.entry(*kind).or_insert_with(|| got.clone());
        assert_eq!(&got, want, "{kind:?} in order {order:?} diverged");
    }
    let org = &expected[&Kind2::Organization];
    assert_eq!(
        org.get_str("name").unwrap(),
        "V2",
        "the newest update's fields"
    );
    assert!(org.get_bool("isDeleted").unwrap());
    assert_eq!(
        org.get_datetime("deletedAt").unwrap().timestamp_millis(),
        T0 + 4_000
    );
    let membership = &expected[&Kind2::Membership];
    assert_eq!(membership.get_str("role").unwrap(), "V2");
    assert_eq!(membership.get_str("userId").unwrap(), "user_m7");
    assert!(membership.get_bool("isDeleted").unwrap());
    let session = &expected[&Kind2::Session];
    assert_eq!(
        session.get_str("status").unwrap(),
        "ended",
        "the first end is final"
    );
    assert_eq!(
        session.get_datetime("endedAt").unwrap().timestamp_millis(),
        T0 + 2_000
    );
    assert!(!session.get_bool("isDeleted").unwrap());
    let invitation = &expected[&Kind2::Invitation];
    assert_eq!(invitation.get_str("status").unwrap(), "accepted", "final");
    assert_eq!(invitation.get_str("userId").unwrap(), "user_accepted");
    let item = &expected[&Kind2::SubscriptionItem];
    assert_eq!(item.get_str("status").unwrap(), "ended", "the newest");
    assert_eq!(item.get_str("payerId").unwrap(), "user_payer");
    assert_eq!(item.get_str("payerType").unwrap(), "user");
    let subscription = &expected[&Kind2::Subscription];
    assert_eq!(subscription.get_str("status").unwrap(), "active");
    assert_eq!(subscription.get_str("latestPaymentId").unwrap(), "cpa_3000");
    // The user's last activity only moves forward: the newest of the three, 900.
    for o in 0..6 {
        let user = doc_of(&app.db, Kind2::User, &format!("user_s{o}")).await;
        assert_eq!(
            user.get_datetime("lastActiveAt")
                .unwrap()
                .timestamp_millis(),
            T0 + 900
        );
    }
    app.stop().await;
}

/// A deletion for an unknown id leaves a tombstone that a late create can't revive, and a
/// late update after the deletion changes nothing it decided.
#[tokio::test]
async fn tombstones_hold_for_every_kind() {
    let app = spawn_app(TestEnv::new().await).await;
    let p = producer(&app.env);
    let kinds = [Kind2::User, Kind2::Organization, Kind2::Membership];
    for kind in kinds {
        let id = format!("tomb-{kind:?}").to_lowercase();
        let delete = Spec {
            parent: "org_t".into(),
            ..spec(kind, &id, "d", 5_000, "", true)
        };
        let m = delete.message();
        produce(&p, topic_of(&app.names, &m), &m).await;
    }
    wait_records(&app.db, 3, Duration::from_secs(30)).await;
    for kind in kinds {
        let id = format!("tomb-{kind:?}").to_lowercase();
        let late = Spec {
            parent: "org_t".into(),
            ..spec(kind, &id, "late", 1_000, "Late", false)
        };
        let m = late.message();
        produce(&p, topic_of(&app.names, &m), &m).await;
    }
    wait_records(&app.db, 6, Duration::from_secs(30)).await;
    for kind in kinds {
        let id = format!("tomb-{kind:?}").to_lowercase();
        let d = doc_of(&app.db, kind, &id).await;
        assert!(d.get_bool("isDeleted").unwrap(), "{kind:?}: {d}");
        assert_eq!(
            d.get_datetime("deletedAt").unwrap().timestamp_millis(),
            T0 + 5_000
        );
        assert_eq!(
            d.get_str("lastEventId").unwrap(),
            format!("d-{id}"),
            "the deletion is the newest event"
        );
        let before = decided(kind, &d);
        // The same late update again (a redelivery) changes nothing.
        let late = Spec {
            parent: "org_t".into(),
            ..spec(kind, &id, "late", 1_000, "Late", false)
        };
        let m = late.message();
        produce(&p, topic_of(&app.names, &m), &m).await;
        let events = app.db.collection::<Document>("webhook_events");
        test_support::eventually(
            Duration::from_secs(30),
            "the redelivery counted",
            || async {
                let r = events
                    .find_one(doc! {"_id": format!("late-{id}")})
                    .await
                    .ok()??;
                (r.get_i32("duplicates").ok()? == 1).then_some(())
            },
        )
        .await;
        assert_eq!(decided(kind, &doc_of(&app.db, kind, &id).await), before);
    }
    app.stop().await;
}

/// The relationship cases of docs/src/mongodb-documents.md: a membership of a deleted
/// organization, a membership of a user who doesn't exist yet, a user deleted while
/// memberships remain. Each document says only what its own events said; the application
/// joins them (the same page, "Reading the organizations of user X").
#[tokio::test]
async fn memberships_outlive_nothing_and_invent_nothing() {
    let app = spawn_app(TestEnv::new().await).await;
    let p = producer(&app.env);
    let org = Spec {
        ..spec(Kind2::Organization, "org_r", "c", 1_000, "Acme", false)
    };
    let org_deleted = spec(Kind2::Organization, "org_r", "d", 3_000, "", true);
    let member = |id: &str, user: i64| Spec {
        parent: "org_r".into(),
        extra: user,
        ..spec(Kind2::Membership, id, "c", 2_000, "org:admin", false)
    };
    let user = spec(Kind2::User, "user_m1", "c", 1_000, "Ada", false);
    let user_deleted = spec(Kind2::User, "user_m1", "d", 4_000, "", true);
    for s in [
        org,
        member("orgmem_a", 1),
        member("orgmem_b", 2),
        user,
        org_deleted,
        user_deleted,
    ] {
        let m = s.message();
        produce(&p, topic_of(&app.names, &m), &m).await;
    }
    wait_records(&app.db, 6, Duration::from_secs(30)).await;
    let a = doc_of(&app.db, Kind2::Membership, "orgmem_a").await;
    assert!(
        !a.get_bool("isDeleted").unwrap(),
        "a membership is deleted by its own event only"
    );
    assert_eq!(a.get_str("userId").unwrap(), "user_m1");
    assert!(doc_of(&app.db, Kind2::Organization, "org_r")
        .await
        .get_bool("isDeleted")
        .unwrap());
    assert!(doc_of(&app.db, Kind2::User, "user_m1")
        .await
        .get_bool("isDeleted")
        .unwrap());
    // A member unknown to the users collection: no user document is invented.
    let b = doc_of(&app.db, Kind2::Membership, "orgmem_b").await;
    assert_eq!(b.get_str("userId").unwrap(), "user_m2");
    let users = app.db.collection::<Document>("users");
    assert_eq!(
        users
            .count_documents(doc! {"clerkId": "user_m2"})
            .await
            .unwrap(),
        0
    );
    // The documented two-query form (FerretDB has no $lookup): the live organizations of a
    // user, with the role. The organization is deleted, so there are none.
    assert!(organizations_of(&app.db, "user_m1").await.is_empty());
    let live = Spec {
        parent: "org_live".into(),
        extra: 1,
        ..spec(
            Kind2::Membership,
            "orgmem_c",
            "c",
            2_000,
            "org:member",
            false,
        )
    };
    let live_org = spec(Kind2::Organization, "org_live", "c", 1_000, "Live", false);
    for s in [live, live_org] {
        let m = s.message();
        produce(&p, topic_of(&app.names, &m), &m).await;
    }
    wait_records(&app.db, 8, Duration::from_secs(30)).await;
    assert_eq!(
        organizations_of(&app.db, "user_m1").await,
        vec![(
            "org_live".to_string(),
            "Live".to_string(),
            "org:member".to_string()
        )]
    );
    app.stop().await;
}

/// "The organizations of user X with their roles" (docs/src/mongodb-documents.md), in two
/// queries:
/// (organization id, name, role).
async fn organizations_of(db: &mongodb::Database, user: &str) -> Vec<(String, String, String)> {
    let memberships: Vec<Document> = db
        .collection::<Document>("organizationMemberships")
        .find(doc! {"userId": user, "isDeleted": false})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let roles: HashMap<String, String> = memberships
        .iter()
        .map(|m| {
            (
                m.get_str("organizationId").unwrap().to_string(),
                m.get_str("role").unwrap().to_string(),
            )
        })
        .collect();
    let ids: Vec<&String> = roles.keys().collect();
    let organizations: Vec<Document> = db
        .collection::<Document>("organizations")
        .find(doc! {"clerkId": {"$in": ids}, "isDeleted": false})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    organizations
        .iter()
        .map(|o| {
            let id = o.get_str("clerkId").unwrap().to_string();
            (
                id.clone(),
                o.get_str("name").unwrap().to_string(),
                roles[&id].clone(),
            )
        })
        .collect()
}

/// What a set of events implies, computed from the rules as the contract states them
/// (not from user-sync's plan): per document, the decided fields.
fn implied(specs: &[Spec]) -> BTreeMap<(Kind2, String), BTreeMap<&'static str, String>> {
    let mut by_doc: BTreeMap<(Kind2, String), Vec<&Spec>> = BTreeMap::new();
    for s in specs {
        by_doc.entry((s.kind, s.id.clone())).or_default().push(s);
    }
    let mut out = BTreeMap::new();
    let mut activity: BTreeMap<String, i64> = BTreeMap::new();
    for ((kind, id), events) in &by_doc {
        let mut fields = BTreeMap::new();
        let newest = events
            .iter()
            .max_by(|a, b| a.version().cmp(&b.version()))
            .unwrap();
        fields.insert("lastEventId", newest.event_id.clone());
        match kind {
            Kind2::Session => {
                let terminal = events
                    .iter()
                    .filter(|e| e.value != "active")
                    .min_by(|a, b| a.version().cmp(&b.version()));
                let status = terminal.map_or(newest.value.clone(), |e| e.value.clone());
                fields.insert("status", status);
                fields.insert("lastActiveAt", (T0 + newest.extra).to_string());
                let best = events.iter().map(|e| e.extra).max().unwrap();
                let user = activity.entry(newest.parent.clone()).or_insert(best);
                *user = (*user).max(best);
            }
            _ => {
                let profile = events
                    .iter()
                    .filter(|e| !e.deleted)
                    .max_by(|a, b| a.version().cmp(&b.version()));
                if let Some(p) = profile {
                    fields.insert("value", p.value.clone());
                }
                let deletion = events
                    .iter()
                    .filter(|e| e.deleted)
                    .min_by(|a, b| a.version().cmp(&b.version()));
                fields.insert("isDeleted", deletion.is_some().to_string());
                if let Some(d) = deletion {
                    fields.insert("deletedAt", (T0 + d.t).to_string());
                }
            }
        }
        out.insert((*kind, id.clone()), fields);
    }
    for (user, active) in activity {
        out.entry((Kind2::User, user))
            .or_insert_with(BTreeMap::new)
            .insert("lastActiveAt", (T0 + active).to_string());
    }
    out
}

/// The same fields, read from a document.
fn observed(kind: Kind2, d: &Document) -> BTreeMap<&'static str, String> {
    let date = |f: &str| {
        d.get_datetime(f)
            .ok()
            .map(|t| t.timestamp_millis().to_string())
    };
    let mut fields = BTreeMap::new();
    if let Ok(id) = d.get_str("lastEventId") {
        fields.insert("lastEventId", id.to_string());
    }
    match kind {
        Kind2::Session => {
            fields.insert(
                "status",
                d.get_str("status").unwrap_or_default().to_string(),
            );
            fields.insert("lastActiveAt", date("lastActiveAt").unwrap_or_default());
        }
        _ => {
            let value = match kind {
                Kind2::User => d.get_str("firstName"),
                Kind2::Organization => d.get_str("name"),
                _ => d.get_str("role"),
            };
            if let Ok(v) = value {
                fields.insert("value", v.to_string());
            }
            fields.insert(
                "isDeleted",
                d.get_bool("isDeleted").unwrap_or(false).to_string(),
            );
            if let Some(t) = date("deletedAt") {
                fields.insert("deletedAt", t);
            }
            if let Some(t) = date("lastActiveAt") {
                fields.insert("lastActiveAt", t);
            }
        }
    }
    fields
}

/// Users, organizations, memberships and sessions interleaved over the three topics, 5%
/// duplicates, shuffled within each document's window of events, user-sync SIGKILLed
/// midway: every collection ends as the events imply, one record per event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_stream_with_a_sigkill_midway_ends_as_the_events_imply() {
    let env = TestEnv::new().await;
    let n = names(&env);
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut specs: Vec<Spec> = Vec::new();
    for u in 0..12 {
        let id = format!("user_x{u}");
        for k in 0..4 {
            let deleted = k == 3 && u % 3 == 0;
            specs.push(spec(
                Kind2::User,
                &id,
                &format!("e{k}"),
                1_000 * k + rng.random_range(0..900),
                &format!("N{k}"),
                deleted,
            ));
        }
    }
    for o in 0..4 {
        let id = format!("org_x{o}");
        for k in 0..3 {
            specs.push(spec(
                Kind2::Organization,
                &id,
                &format!("e{k}"),
                1_000 * k + rng.random_range(0..900),
                &format!("Org{k}"),
                k == 2 && o == 0,
            ));
        }
        for m in 0..4 {
            let id = format!("orgmem_x{o}_{m}");
            for k in 0..3 {
                specs.push(Spec {
                    parent: format!("org_x{o}"),
                    extra: m,
                    ..spec(
                        Kind2::Membership,
                        &id,
                        &format!("e{k}"),
                        1_000 * k + rng.random_range(0..900),
                        ["org:member", "org:admin", "org:billing"][k as usize],
                        k == 2 && m == 0,
                    )
                });
            }
        }
    }
    for s in 0..16 {
        let id = format!("sess_x{s}");
        let statuses: &[&str] = if s % 2 == 0 {
            &["active", "active", "ended"]
        } else {
            &["active", "active", "revoked"]
        };
        for (k, status) in statuses.iter().enumerate() {
            specs.push(Spec {
                parent: format!("user_x{}", s % 12),
                extra: rng.random_range(0..10_000),
                ..spec(
                    Kind2::Session,
                    &id,
                    &format!("e{k}"),
                    1_000 * k as i64 + rng.random_range(0..900),
                    status,
                    false,
                )
            });
        }
    }
    let expected = implied(&specs);

    // Delivery: each document's events in a random order (its window), the documents
    // interleaved, 5% delivered twice.
    let mut by_doc: Vec<Vec<Spec>> = {
        let mut m: BTreeMap<(Kind2, String), Vec<Spec>> = BTreeMap::new();
        for s in &specs {
            m.entry((s.kind, s.id.clone())).or_default().push(s.clone());
        }
        m.into_values().collect()
    };
    for events in &mut by_doc {
        events.shuffle(&mut rng);
    }
    let mut stream = Vec::new();
    while by_doc.iter().any(|e| !e.is_empty()) {
        let live: Vec<usize> = (0..by_doc.len())
            .filter(|&i| !by_doc[i].is_empty())
            .collect();
        let i = live[rng.random_range(0..live.len())];
        let s = by_doc[i].remove(0);
        if rng.random_bool(0.05) {
            stream.push(s.clone());
        }
        stream.push(s);
    }

    let port = free_port();
    let mut process = spawn_process(&env, &n, port).await;
    let db = env.mongo().await.database(&n.database);
    let p = producer(&env);
    let half = stream.len() / 2;
    for s in &stream[..half] {
        let m = s.message();
        produce(&p, topic_of(&n, &m), &m).await;
    }
    let events = db.collection::<Document>("webhook_events");
    test_support::eventually(Duration::from_secs(60), "some events applied", || async {
        (events.count_documents(doc! {}).await.ok()? > 20).then_some(())
    })
    .await;
    process.child.start_kill().unwrap(); // SIGKILL
    process.child.wait().await.unwrap();
    for s in &stream[half..] {
        let m = s.message();
        produce(&p, topic_of(&n, &m), &m).await;
    }
    let _process = spawn_process(&env, &n, port).await;
    wait_records(&db, specs.len() as u64, Duration::from_secs(180)).await;

    for kind in [
        Kind2::User,
        Kind2::Organization,
        Kind2::Membership,
        Kind2::Session,
    ] {
        let docs: Vec<Document> = db
            .collection::<Document>(collection(kind))
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let want: Vec<_> = expected.iter().filter(|((k, _), _)| *k == kind).collect();
        assert_eq!(docs.len(), want.len(), "{kind:?}: one document per object");
        for d in &docs {
            let id = d.get_str("clerkId").unwrap().to_string();
            let want = &expected[&(kind, id.clone())];
            assert_eq!(&observed(kind, d), want, "{kind:?} {id}: {d}");
        }
    }
    for s in &specs {
        let r = events
            .count_documents(doc! {"_id": &s.event_id})
            .await
            .unwrap();
        assert_eq!(r, 1, "{} recorded once", s.event_id);
    }
}
