//! `webhook_events` bookkeeping across retries: a batch retried after a failure part-way
//! must not count its own events as redeliveries; a real redelivery is counted once, however
//! many arrive together.

use bson::{doc, Bson, Document};
use test_support::TestEnv;
use user_sync::audit::{self, Record, Source};
use user_sync::Outcome;

use crate::helpers::*;

fn records(delivery: &str) -> Vec<Record> {
    many("retry", 4, delivery)
}

fn many(prefix: &str, count: i64, delivery: &str) -> Vec<Record> {
    (0..count)
        .map(|i| Record {
            id: format!("evt_{prefix}_{i}"),
            event_type: Some("user.updated".into()),
            subject: Some(format!("user_{prefix}_{i}")),
            event_time: Some(1_732_464_000_000 + i),
            origin: Some("webhook"),
            attributes: None,
            payload: user_sync::payload::Stored::from_bson(Bson::Document(
                doc! {"id": format!("user_{prefix}_{i}")},
            ))
            .unwrap(),
            raw: None,
            outcome: Outcome::Applied,
            error: None,
            source: Source {
                topic: "users".into(),
                partition: 0,
                offset: i,
            },
            delivery: delivery.into(),
            repeat: false,
        })
        .collect()
}

async fn duplicates(db: &mongodb::Database) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for i in 0..4 {
        let r = record(db, &format!("evt_retry_{i}")).await;
        out.push((
            r.get_str("_id").unwrap().to_string(),
            duplicates_of(&r),
            r.get_str("outcome").unwrap().to_string(),
        ));
    }
    out
}

/// A record's `duplicates` (an int32 or an int64, as the server keeps it).
fn duplicates_of(r: &Document) -> i64 {
    r.get_i64("duplicates")
        .or_else(|_| r.get_i32("duplicates").map(i64::from))
        .unwrap()
}

#[tokio::test]
async fn a_batch_retried_after_a_failure_part_way_counts_no_redeliveries() {
    let env = TestEnv::new().await;
    let n = names(&env);
    let store = store(&env, &n).await;
    let db = env.mongo().await.database(&n.database);

    // The first attempt wrote half its records, then failed (MongoDB went away).
    let first = records("poll-1");
    audit::record(&store, &first[..2], 5).await.unwrap();
    // The retry of the same batch: the same delivery.
    audit::record(&store, &first, 5).await.unwrap();
    let want = |count: i64| -> Vec<(String, i64, String)> {
        (0..4)
            .map(|i| (format!("evt_retry_{i}"), count, "applied".to_string()))
            .collect()
    };
    assert_eq!(duplicates(&db).await, want(0), "the retry counted itself");

    // A real redelivery (a partition's new owner, after a rebalance) is counted once,
    // however often its own batch is retried.
    let second = records("poll-2");
    audit::record(&store, &second[..3], 5).await.unwrap();
    audit::record(&store, &second, 5).await.unwrap();
    assert_eq!(duplicates(&db).await, want(1));
    let counted = db
        .collection::<Document>("webhook_events")
        .count_documents(doc! {"deliveries": "poll-2"})
        .await
        .unwrap();
    assert_eq!(counted, 4);
}

/// 150 redeliveries in one batch: FerretDB 1.24 hung (the whole database, until the client
/// went away) on an `update` command of 100 statements or more, so they go in smaller ones.
#[tokio::test]
async fn many_redeliveries_in_one_batch_are_all_counted() {
    let env = TestEnv::new().await;
    let n = names(&env);
    let store = store(&env, &n).await;
    let db = env.mongo().await.database(&n.database);

    audit::record(&store, &many("many", 150, "poll-1"), 5)
        .await
        .unwrap();
    let again = many("many", 150, "poll-2");
    let recorded = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        audit::record(&store, &again, 5),
    )
    .await
    .expect("recording 150 redeliveries returned");
    recorded.unwrap();
    let counted = db
        .collection::<Document>("webhook_events")
        .count_documents(doc! {"duplicates": 1})
        .await
        .unwrap();
    assert_eq!(counted, 150);
}

/// Redeliveries that changed nothing are counted straight away; when one of them has no
/// record yet (a stale event seen for the first time) the batch falls back to reading the
/// records, and nothing is counted twice, not even by a retry of the same batch. With
/// `WEBHOOK_EVENTS_PAYLOAD=false` the records keep everything but the payload.
#[tokio::test]
async fn redeliveries_are_counted_once_whether_or_not_their_records_exist() {
    let env = TestEnv::new().await;
    let n = names(&env);
    let config =
        user_sync::Config::from_vars(vars(&env, &n, &[("WEBHOOK_EVENTS_PAYLOAD", "false")]))
            .unwrap();
    let store = user_sync::Store::connect(&config.mongo).await.unwrap();
    store.ensure_indexes(&user_sync::Entity::ALL).await.unwrap();
    let db = env.mongo().await.database(&n.database);

    audit::record(&store, &records("poll-1"), 5).await.unwrap();
    let changed_nothing = |delivery: &str| {
        let mut batch = records(delivery);
        batch.extend(many("first-seen", 1, delivery));
        for r in &mut batch {
            r.outcome = Outcome::Stale;
        }
        batch
    };
    // Four redeliveries and a stale event seen for the first time, then the same batch
    // retried.
    audit::record(&store, &changed_nothing("poll-2"), 5)
        .await
        .unwrap();
    audit::record(&store, &changed_nothing("poll-2"), 5)
        .await
        .unwrap();
    let want = |count: i64| -> Vec<(String, i64, String)> {
        (0..4)
            .map(|i| (format!("evt_retry_{i}"), count, "applied".to_string()))
            .collect()
    };
    assert_eq!(duplicates(&db).await, want(1));
    let first_seen = record(&db, "evt_first-seen_0").await;
    assert_eq!(first_seen.get_str("outcome"), Ok("stale"));
    assert_eq!(duplicates_of(&first_seen), 0);

    // Every record there: counted without reading them first.
    audit::record(&store, &changed_nothing("poll-3"), 5)
        .await
        .unwrap();
    assert_eq!(duplicates(&db).await, want(2));
    let first_seen = record(&db, "evt_first-seen_0").await;
    assert_eq!(duplicates_of(&first_seen), 1);
    for id in ["evt_retry_0", "evt_first-seen_0"] {
        let r = record(&db, id).await;
        assert!(!r.contains_key("payload"), "{r}");
        assert!(
            r.contains_key("subject") && r.contains_key("eventTime"),
            "{r}"
        );
    }
}
