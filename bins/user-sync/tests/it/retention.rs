//! `WEBHOOK_EVENTS_TTL_DAYS`: `webhook_events` bounded by a TTL on `processedAt`, shown by
//! `status`; and what a redelivery does once its record has expired: nothing to the
//! documents, whose version stamps still say the event is in.

use std::time::Duration;

use bson::{doc, Document};
use futures::TryStreamExt;
use test_support::TestEnv;

use crate::helpers::*;

async fn all(db: &mongodb::Database, collection: &str) -> Vec<Document> {
    db.collection::<Document>(collection)
        .find(doc! {})
        .sort(doc! {"clerkId": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// The TTL of the index on `processedAt`, in seconds, if it has one.
async fn ttl_of(db: &mongodb::Database) -> Option<u64> {
    let indexes: Vec<mongodb::IndexModel> = db
        .collection::<Document>("webhook_events")
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    indexes
        .iter()
        .filter(|i| i.keys == doc! {"processedAt": 1})
        .find_map(|i| i.options.as_ref()?.expire_after)
        .map(|d| d.as_secs())
}

#[tokio::test]
async fn records_expire_by_ttl_and_a_redelivery_after_that_changes_no_document() {
    let env = TestEnv::new().await;
    let first = names(&env);
    // Without the setting: a plain index, records kept for good.
    let app = spawn_app_configured(env, first, &[]).await;
    assert_eq!(ttl_of(&app.db).await, None);
    let ferretdb = test_support::is_ferretdb(app.db.client()).await;
    let env = app.stop_keeping_env().await;

    // With it: the same index gets the TTL (collMod on MongoDB), 30 days.
    let again = names(&env);
    let ttl = [("WEBHOOK_EVENTS_TTL_DAYS", "30")];
    let app = if ferretdb {
        // FerretDB 1.x has no TTL indexes: start-up refuses the setting, naming it.
        let config = user_sync::Config::from_vars(vars(&env, &again, &ttl)).unwrap();
        let store = user_sync::Store::connect(&config.mongo).await.unwrap();
        let e = store
            .ensure_indexes(&[user_sync::Entity::User])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("WEBHOOK_EVENTS_TTL_DAYS"), "{e}");
        spawn_app_configured(env, again, &[]).await
    } else {
        let app = spawn_app_configured(env, again, &ttl).await;
        assert_eq!(ttl_of(&app.db).await, Some(30 * 86_400));
        app
    };

    let p = producer(&app.env);
    let events = [
        user_event(Kind::Created, "user_ttl_1", "msg_ttl_c", 1_000, "Ada"),
        user_event(Kind::Updated, "user_ttl_1", "msg_ttl_u", 2_000, "Ada L."),
        user_event(Kind::Created, "user_ttl_2", "msg_ttl_2", 1_500, "Grace"),
        user_event(Kind::Deleted, "user_ttl_2", "msg_ttl_d", 3_000, ""),
    ];
    for m in &events {
        produce(&p, &app.names.topic, m).await;
    }
    wait_records(&app.db, events.len() as u64, Duration::from_secs(60)).await;
    let before = all(&app.db, "users").await;
    assert_eq!(before.len(), 2);

    // `status` shows the collection's size and how long it keeps a record.
    let store = store(&app.env, &app.names).await;
    let status = user_sync::status::from_store(&store, &[user_sync::Entity::User], 0)
        .await
        .unwrap();
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["events"]["records"], events.len() as u64, "{json}");
    if !ferretdb {
        assert_eq!(json["events"]["ttl_seconds"], 30 * 86_400, "{json}");
        assert!(
            status.to_string().contains("kept 30 days (TTL)"),
            "{status}"
        );
    }

    // Thirty days on, MongoDB's TTL monitor has removed the records (done here by hand:
    // the test servers' clocks can't be moved). Svix, or a replay of the topic, delivers
    // the same events again.
    app.db
        .collection::<Document>("webhook_events")
        .delete_many(doc! {})
        .await
        .unwrap();
    for m in &events {
        produce(&p, &app.names.topic, m).await;
    }
    wait_records(&app.db, events.len() as u64, Duration::from_secs(60)).await;
    let after = all(&app.db, "users").await;
    assert_eq!(after, before, "the documents changed, sync times included");
    for m in &events {
        let r = record(&app.db, &m.event_id).await;
        let outcome = r.get_str("outcome").unwrap();
        assert!(["duplicate", "stale"].contains(&outcome), "{r}");
    }
    app.stop().await;
}
