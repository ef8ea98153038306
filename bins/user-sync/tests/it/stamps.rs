//! Documents user-sync didn't write itself: an application (or an ORM that stores every
//! field of its schema) can leave a stamp null. A null stamp counts as a missing one, in
//! the plan (`Statement::admits`) and in the filters the database runs alike; otherwise
//! such a document would refuse every event for good, each recorded `stale`.

use std::collections::HashSet;

use bson::{doc, Bson, Document};
use test_support::TestEnv;
use user_sync::audit::Source;
use user_sync::Entity;
use user_sync::Outcome;
use user_sync::{Applier, Incoming};

use crate::helpers::*;

fn incoming(message: events::EventMessage, offset: i64) -> Incoming {
    Incoming {
        payload: user_sync::payload::Stored::of(&message.data),
        message,
        source: Source {
            topic: "users".into(),
            partition: 0,
            offset,
        },
        delivery: format!("d-{offset}"),
    }
}

/// A fresh database whose `collection` holds `document`, written as the application would,
/// and an applier over it.
async fn with_document(
    env: &TestEnv,
    collection: &str,
    document: Document,
) -> (Applier, mongodb::Database) {
    let n = names(env);
    let store = store(env, &n).await;
    let db = env.mongo().await.database(&n.database);
    db.collection::<Document>(collection)
        .insert_one(document)
        .await
        .unwrap();
    (Applier::new(store, vec![Entity::User, Entity::Session]), db)
}

#[tokio::test]
async fn a_document_with_null_stamps_takes_events_as_if_they_were_missing() {
    let env = TestEnv::new().await;
    let (applier, db) = with_document(
        &env,
        "users",
        doc! {
            "clerkId": "user_null", "firstName": "Old", "isDeleted": false,
            "profileVersion": Bson::Null, "finalVersion": Bson::Null,
            "eventVersion": Bson::Null, "lastActiveAt": Bson::Null,
        },
    )
    .await;

    let update = user_event(Kind::Updated, "user_null", "evt_null_1", 1_000, "New");
    let applied = applier
        .apply(&[incoming(update, 1)], &mut HashSet::new())
        .await
        .unwrap();
    assert_eq!(applied.outcomes, [Outcome::Applied]);
    let d = user_doc(&db, "user_null").await;
    assert_eq!(d.get_str("firstName").unwrap(), "New");
    assert_eq!(d.get_str("lastEventId").unwrap(), "evt_null_1");

    // The deletion rule too: a null `finalVersion` is no deletion yet.
    let delete = user_event(Kind::Deleted, "user_null", "evt_null_2", 2_000, "");
    let applied = applier
        .apply(&[incoming(delete, 2)], &mut HashSet::new())
        .await
        .unwrap();
    assert_eq!(applied.outcomes, [Outcome::Applied]);
    let d = user_doc(&db, "user_null").await;
    assert_eq!(d.get_bool("isDeleted"), Ok(true));
    let users = db.collection::<Document>("users");
    assert_eq!(users.count_documents(doc! {}).await.unwrap(), 1);
}

#[tokio::test]
async fn a_session_with_a_null_final_stamp_has_not_ended() {
    let env = TestEnv::new().await;
    let (applier, db) = with_document(
        &env,
        "sessions",
        doc! {
            "clerkId": "sess_null", "status": "pending", "isDeleted": false,
            "profileVersion": Bson::Null, "statusVersion": Bson::Null,
            "finalVersion": Bson::Null, "eventVersion": Bson::Null,
        },
    )
    .await;
    let created = clerk_event(
        "evt_sess_null",
        "session.created",
        serde_json::json!({"id": "sess_null", "object": "session", "user_id": "user_s",
            "status": "active", "last_active_at": 1_000, "created_at": 1_000, "updated_at": 1_000}),
        1_000,
    );
    let applied = applier
        .apply(&[incoming(created, 1)], &mut HashSet::new())
        .await
        .unwrap();
    assert_eq!(applied.outcomes, [Outcome::Applied]);
    let d = db
        .collection::<Document>("sessions")
        .find_one(doc! {"clerkId": "sess_null"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.get_str("status").unwrap(), "active");
    assert_eq!(d.get_str("lastEventId").unwrap(), "evt_sess_null");
}

/// A stamp of another BSON type than the rule's (an application that stored a number where
/// user-sync keeps a version string, or a string where it keeps a date) counts as missing,
/// as the contract says: MongoDB's `$lt` compares only values of one type, so such a
/// document refused every event, each recorded `stale`, while the plan said it applied.
#[tokio::test]
async fn a_stamp_of_another_type_counts_as_missing() {
    let env = TestEnv::new().await;
    let (applier, db) = with_document(
        &env,
        "users",
        doc! {
            "clerkId": "user_typed", "firstName": "Old", "isDeleted": false,
            "profileVersion": 12_345_i64, "eventVersion": 7.5,
            "lastActiveAt": "2024-01-01T00:00:00Z",
        },
    )
    .await;
    let update = user_event(Kind::Updated, "user_typed", "evt_typed_1", 1_000, "New");
    let applied = applier
        .apply(&[incoming(update, 1)], &mut HashSet::new())
        .await
        .unwrap();
    assert_eq!(applied.outcomes, [Outcome::Applied]);
    let d = user_doc(&db, "user_typed").await;
    assert_eq!(d.get_str("firstName").unwrap(), "New");
    assert_eq!(d.get_str("lastEventId").unwrap(), "evt_typed_1");
    assert!(d.get_str("profileVersion").is_ok(), "{d}");
}
