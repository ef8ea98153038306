//! Clerk Billing end to end through both binaries: signed webhooks into clerk-sync,
//! through Kafka keyed by the payer, into user-sync, and the plan query the documents
//! page (docs/src/mongodb-documents.md) gives an application.

use std::time::Duration;

use bson::{doc, Document};
use futures::TryStreamExt;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use test_support::TestEnv;

use crate::helpers::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const T0: i64 = 1_732_464_000_000;
const USER: &str = "user_2pZ6mQ3xYfTgHk8LwNcVbR1aS4d";

/// The documented query (docs/src/mongodb-documents.md): the plan and status of what payer
/// `payer` has now. One indexed query on `{payerId, status}`.
async fn current_plan(db: &mongodb::Database, payer: &str) -> Vec<(String, String)> {
    let items: Vec<Document> = db
        .collection::<Document>("subscriptionItems")
        .find(doc! {
            "payerId": payer,
            "status": {"$in": ["active", "past_due", "canceled"]},
        })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut plans: Vec<(String, String)> = items
        .iter()
        .map(|d| {
            (
                d.get_str("planSlug").unwrap().to_string(),
                d.get_str("status").unwrap().to_string(),
            )
        })
        .collect();
    plans.sort();
    plans
}

/// Clerk's payer of a user: `""` for the organization.
fn payer() -> Value {
    json!({"object": "commerce_payer", "id": "cpayer_ada", "user_id": USER,
           "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
           "organization_id": "", "organization_name": "", "image_url": "https://img.clerk.com/x"})
}

fn item(id: &str, plan: &str, status: &str, t: i64) -> Value {
    let amount = if plan == "pro" { 2000 } else { 0 };
    json!({
        "object": "subscription_item", "id": id, "status": status, "is_free_trial": false,
        "created_at": T0, "updated_at": T0 + t, "period_start": T0,
        "period_end": if plan == "pro" { json!(T0 + 2_592_000_000_i64) } else { Value::Null },
        "interval": "month", "plan_id": format!("cplan_{plan}"),
        "plan": {"id": format!("cplan_{plan}"), "slug": plan, "name": plan, "is_recurring": plan == "pro",
                 "amount": amount, "currency": "USD"},
        "payer": payer(), "subscription_id": "csub_ada",
    })
}

fn subscription(status: &str, t: i64) -> Value {
    json!({
        "object": "commerce_subscription", "id": "csub_ada", "status": status,
        "active_at": T0, "canceled_at": null, "ended_at": null,
        "past_due_at": if status == "past_due" { json!(T0 + t) } else { Value::Null },
        "created_at": T0, "updated_at": T0 + t, "latest_payment_id": "cpa_1",
        "payer_id": "cpayer_ada", "payer": payer(), "payment_source_id": "cps_1", "items": [],
    })
}

/// One user's year on the pro plan, as Clerk sends it: the subscription created, the item
/// active, a failed renewal (past due), paid again, canceled (the free default plan's item
/// upcoming), then ended (the free item active).
fn lifecycle() -> Vec<(String, &'static str, Value)> {
    let events = vec![
        ("subscription.created", subscription("active", 1_000)),
        (
            "subscriptionItem.active",
            item("csub_item_pro", "pro", "active", 1_000),
        ),
        (
            "subscriptionItem.pastDue",
            item("csub_item_pro", "pro", "past_due", 2_000),
        ),
        ("subscription.pastDue", subscription("past_due", 2_000)),
        (
            "subscriptionItem.active",
            item("csub_item_pro", "pro", "active", 3_000),
        ),
        ("subscription.active", subscription("active", 3_000)),
        (
            "subscriptionItem.canceled",
            item("csub_item_pro", "pro", "canceled", 4_000),
        ),
        (
            "subscriptionItem.upcoming",
            item("csub_item_free", "free", "upcoming", 4_000),
        ),
        (
            "subscriptionItem.ended",
            item("csub_item_pro", "pro", "ended", 5_000),
        ),
        (
            "subscriptionItem.active",
            item("csub_item_free", "free", "active", 5_000),
        ),
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, (t, data))| (format!("msg_billing_{i}"), t, data))
        .collect()
}

#[tokio::test]
async fn a_users_billing_webhooks_shuffled_twice_through_both_binaries_answer_the_plan_query() {
    let env = TestEnv::new().await;
    let names = names(&env);
    let user_sync = spawn_process_with(&env, &names, free_port(), &[ALL_STREAMS]).await;
    let clerk_sync = ClerkSync::spawn(&env, &names, SECRET, &[]).await;

    // Every event twice, each round in its own shuffled order (the second round is Svix
    // retrying: the same svix-ids).
    let events = lifecycle();
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    for round in 0..2 {
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.shuffle(&mut rng);
        eprintln!("round {round}: {order:?}");
        for i in order {
            let (id, event_type, data) = &events[i];
            let body = json!({
                "type": event_type, "object": "event", "data": data,
                "timestamp": T0 / 1000, "instance_id": "ins_billing",
                "event_attributes": {"http_request": {"client_ip": "192.0.2.7", "user_agent": "Mozilla/5.0"}},
            })
            .to_string();
            let answer = clerk_sync.post(id, body).await;
            assert_eq!(answer, 200, "{event_type} {id}");
        }
    }

    let db = env.mongo().await.database(&names.database);
    wait_records(&db, events.len() as u64, Duration::from_secs(120)).await;
    test_support::eventually(
        Duration::from_secs(60),
        "every redelivery counted",
        || async {
            let n = db
                .collection::<Document>("webhook_events")
                .count_documents(doc! {"duplicates": 1})
                .await
                .ok()?;
            (n == events.len() as u64).then_some(())
        },
    )
    .await;

    // What Clerk would answer: the pro plan ended, the free default plan is active.
    assert_eq!(
        current_plan(&db, USER).await,
        [("free".into(), "active".into())]
    );
    let items = db.collection::<Document>("subscriptionItems");
    let pro = items
        .find_one(doc! {"clerkId": "csub_item_pro"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pro.get_str("status").unwrap(), "ended");
    assert_eq!(pro.get_str("payerType").unwrap(), "user");
    assert_eq!(pro.get_str("clerkPayerId").unwrap(), "cpayer_ada");
    let subscription = db
        .collection::<Document>("subscriptions")
        .find_one(doc! {"clerkId": "csub_ada"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(subscription.get_str("status").unwrap(), "active");
    assert_eq!(subscription.get_str("payerId").unwrap(), USER);
    // The index the query is written for exists.
    let indexes: Vec<Document> = items
        .list_indexes()
        .await
        .unwrap()
        .map_ok(|i| i.keys)
        .try_collect()
        .await
        .unwrap();
    assert!(
        indexes.contains(&doc! {"payerId": 1, "status": 1}),
        "{indexes:?}"
    );
    // Every event was keyed by the paying user (one partition: their order held), and the
    // request that caused it is kept beside the event, where an operator looks.
    let records: Vec<Document> = db
        .collection::<Document>("webhook_events")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(records.len(), events.len());
    for r in &records {
        assert_eq!(r.get_str("subject").unwrap(), USER, "{r}");
        let outcome = r.get_str("outcome").unwrap();
        assert!(["applied", "stale"].contains(&outcome), "{r}");
        let attributes = r.get_document("eventAttributes").unwrap();
        assert_eq!(
            attributes
                .get_document("http_request")
                .unwrap()
                .get_str("client_ip")
                .unwrap(),
            "192.0.2.7"
        );
    }
    drop(user_sync);
}
