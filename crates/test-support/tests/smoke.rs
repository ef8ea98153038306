//! Smoke tests: our Kafka and MongoDB client crates against the real test servers.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::TryStreamExt;
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::TopicPartitionList;
use test_support::{Component, TestEnv};

fn producer(env: &TestEnv) -> FutureProducer {
    env.kafka()
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        // Fail fast when the broker is away instead of librdkafka's 5 minute default.
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap()
}

fn consumer(env: &TestEnv, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = env
        .kafka()
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// Receives `n` messages, "processes" each (records key → values), then stores its offset.
async fn consume(c: &StreamConsumer, n: usize, seen: &mut Vec<(String, String)>) {
    for _ in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
            .await
            .expect("a message within 30 s")
            .unwrap();
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
        seen.push((key, value));
        c.store_offset_from_message(&m).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_idempotent_produce_consume_commit_and_resume_after_restart() {
    let env = TestEnv::exclusive().await;
    let topic = env.create_topic("smoke", 3).await;
    let group = format!("smoke-{}", env.id);

    let p = producer(&env);
    let mut sent = BTreeSet::new();
    let mut partitions = BTreeSet::new();
    for i in 0..30 {
        let key = format!("user_{}", i % 10);
        let value = format!("event-{i}");
        let partition = p
            .send(
                FutureRecord::to(&topic).key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("acknowledged by the broker")
            .partition;
        partitions.insert(partition);
        sent.insert((key, value));
    }
    assert!(
        partitions.len() > 1,
        "keys spread over partitions: {partitions:?}"
    );

    // First consumer: processes half, commits what it stored, leaves.
    let mut seen = Vec::new();
    {
        let c = consumer(&env, &group, &topic);
        consume(&c, 15, &mut seen).await;
        c.commit_consumer_state(CommitMode::Sync).unwrap();
        let committed = c
            .committed(Duration::from_secs(10))
            .unwrap()
            .elements()
            .iter()
            .filter_map(|e| e.offset().to_raw())
            .filter(|o| *o >= 0) // a partition with nothing consumed has no committed offset
            .sum::<i64>();
        assert_eq!(
            committed, 15,
            "committed offsets add up to what was processed"
        );
        c.unsubscribe();
    }

    // The broker restarts; committed offsets survive it.
    env.stop(Component::Kafka).await;
    env.start(Component::Kafka).await;

    let c = consumer(&env, &group, &topic);
    consume(&c, 15, &mut seen).await;
    c.commit_consumer_state(CommitMode::Sync).unwrap();

    let distinct: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(distinct.len(), seen.len(), "nothing consumed twice");
    assert_eq!(distinct, sent, "nothing skipped");

    // Within a key, order is the send order.
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (k, v) in &seen {
        by_key
            .entry(k.clone())
            .or_default()
            .push(v.trim_start_matches("event-").parse().unwrap());
    }
    for (k, vs) in by_key {
        assert!(vs.windows(2).all(|w| w[0] < w[1]), "{k}: {vs:?}");
    }

    // And nothing more is waiting.
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(&topic, p);
    }
    let lag: i64 = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| {
            let (_, high) = c
                .fetch_watermarks(&topic, e.partition(), Duration::from_secs(10))
                .unwrap();
            high - e.offset().to_raw().unwrap_or(0)
        })
        .sum();
    assert_eq!(lag, 0);
}

#[tokio::test]
async fn mongodb_driver_operations_the_services_rely_on() {
    let env = TestEnv::new().await;
    let client = env.mongo().await;
    let db = client.database(&env.database());
    db.run_command(doc! {"ping": 1}).await.unwrap();
    let users = db.collection::<Document>("users");

    // Unique index, and the duplicate-key error it raises.
    users
        .create_index(
            IndexModel::builder()
                .keys(doc! {"clerkId": 1})
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .unwrap();
    users
        .insert_one(doc! {"clerkId": "user_a", "n": 1})
        .await
        .unwrap();
    let err = users
        .insert_one(doc! {"clerkId": "user_a", "n": 2})
        .await
        .unwrap_err();
    assert!(is_duplicate_key(&err), "expected E11000, got {err}");

    // find
    let found = users
        .find_one(doc! {"clerkId": "user_a"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.get_i32("n").unwrap(), 1);

    // upsert with $set/$setOnInsert: inserts once, then only $set applies.
    for (n, expect_upserted) in [(10, true), (11, false)] {
        let r = users
            .update_one(
                doc! {"clerkId": "user_b"},
                doc! {"$set": {"n": n}, "$setOnInsert": {"createdAt": "first"}},
            )
            .upsert(true)
            .await
            .unwrap();
        assert_eq!(r.upserted_id.is_some(), expect_upserted);
    }
    let b = users
        .find_one(doc! {"clerkId": "user_b"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.get_i32("n").unwrap(), 11);
    assert_eq!(b.get_str("createdAt").unwrap(), "first");
    assert!(
        b.get_object_id("_id").is_ok(),
        "upsert gives an ObjectId _id"
    );

    // $lt and $exists in filters.
    users
        .insert_one(doc! {"clerkId": "user_c", "n": 5, "gone": true})
        .await
        .unwrap();
    let small: Vec<Document> = users
        .find(doc! {"n": {"$lt": 10}})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ids: BTreeSet<&str> = small
        .iter()
        .map(|d| d.get_str("clerkId").unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["user_a", "user_c"]));
    let with_gone = users
        .count_documents(doc! {"gone": {"$exists": true}})
        .await
        .unwrap();
    assert_eq!(with_gone, 1);
    let without_gone = users
        .count_documents(doc! {"gone": {"$exists": false}})
        .await
        .unwrap();
    assert_eq!(without_gone, 2);
    // `{field: null}` (what user-sync's filters use for "no stamp") matches a missing field
    // and a null one.
    users
        .insert_one(doc! {"clerkId": "user_null", "gone": Bson::Null})
        .await
        .unwrap();
    let no_gone = users
        .count_documents(doc! {"gone": Bson::Null})
        .await
        .unwrap();
    assert_eq!(no_gone, 3);
    users
        .delete_one(doc! {"clerkId": "user_null"})
        .await
        .unwrap();

    // An upsert whose filter no longer matches an existing key collides with the index.
    let err = users
        .update_one(
            doc! {"clerkId": "user_b", "n": {"$lt": 0}},
            doc! {"$set": {"n": 1}},
        )
        .upsert(true)
        .await
        .unwrap_err();
    assert!(
        is_duplicate_key(&err),
        "expected E11000 from a racing upsert, got {err}"
    );

    // What user-sync's conditional writes use: `$or` of `$lt`/`null` and `$ne` in an
    // upsert's filter, the E11000 when the condition fails on an existing document.
    let versioned = |v: &str| {
        doc! {"clerkId": "user_v", "$or": [{"version": {"$lt": v}}, {"version": Bson::Null}]}
    };
    let r = users
        .update_one(
            versioned("0002"),
            doc! {"$set": {"other": 1}, "$setOnInsert": {"note": "first"}},
        )
        .upsert(true)
        .await
        .unwrap();
    assert!(r.upserted_id.is_some());
    // The `$or`'s null equality doesn't seed the created document.
    let created = users
        .find_one(doc! {"clerkId": "user_v"})
        .await
        .unwrap()
        .unwrap();
    assert!(!created.contains_key("version"), "{created:?}");
    users
        .update_one(
            doc! {"clerkId": "user_v"},
            doc! {"$set": {"version": "0002"}},
        )
        .await
        .unwrap();
    let r = users
        .update_one(versioned("0003"), doc! {"$set": {"version": "0003"}})
        .upsert(true)
        .await
        .unwrap();
    assert_eq!(r.matched_count, 1, "a newer version matches");
    let err = users
        .update_one(versioned("0001"), doc! {"$set": {"version": "0001"}})
        .upsert(true)
        .await
        .unwrap_err();
    assert!(is_duplicate_key(&err), "an older version collides: {err}");
    let r = users
        .update_one(
            doc! {"clerkId": "user_v", "gone": {"$ne": true}},
            doc! {"$set": {"gone": true}},
        )
        .await
        .unwrap();
    assert_eq!(r.matched_count, 1);
    let r = users
        .update_one(
            doc! {"clerkId": "user_v", "gone": {"$ne": true}},
            doc! {"$set": {"gone": true}},
        )
        .await
        .unwrap();
    assert_eq!(r.matched_count, 0, "$ne: true excludes it now");
    users.delete_one(doc! {"clerkId": "user_v"}).await.unwrap();

    // insert_many, unordered: the duplicate fails, the rest are written.
    let err = users
        .insert_many([doc! {"clerkId": "user_a"}, doc! {"clerkId": "user_d"}])
        .ordered(false)
        .await
        .unwrap_err();
    assert!(is_duplicate_key(&err), "{err}");
    assert_eq!(
        users
            .count_documents(doc! {"clerkId": "user_d"})
            .await
            .unwrap(),
        1
    );
    users.delete_one(doc! {"clerkId": "user_d"}).await.unwrap();

    // delete
    let deleted = users.delete_one(doc! {"clerkId": "user_c"}).await.unwrap();
    assert_eq!(deleted.deleted_count, 1);
    assert_eq!(users.count_documents(doc! {}).await.unwrap(), 2);
}

fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().all(|e| e.code == 11000)),
        _ => false,
    }
}

/// FerretDB v1.24 (the test server) drops fields that an upsert's `$setOnInsert` sets to
/// null; MongoDB stores them. The services' code is written for MongoDB; this pins the
/// difference so a FerretDB change (or a run against MongoDB) shows up here.
#[tokio::test]
async fn set_on_insert_null_fields_ferretdb_difference() {
    let env = TestEnv::new().await;
    let client = env.mongo().await;
    let db = client.database(&env.database());
    let ferretdb = test_support::is_ferretdb(&client).await;
    let c = db.collection::<Document>("t");
    c.update_one(
        doc! {"k": 1},
        doc! {"$set": {"a": 1}, "$setOnInsert": {"n": null}},
    )
    .upsert(true)
    .await
    .unwrap();
    let d = c.find_one(doc! {"k": 1}).await.unwrap().unwrap();
    if ferretdb {
        assert!(
            !d.contains_key("n"),
            "FerretDB now keeps nulls from $setOnInsert: {d}"
        );
    } else {
        assert!(d.is_null("n"), "{d}");
    }
    // `$set` keeps an explicit null on both.
    c.update_one(doc! {"k": 1}, doc! {"$set": {"m": null}})
        .await
        .unwrap();
    let d = c.find_one(doc! {"k": 1}).await.unwrap().unwrap();
    assert!(d.is_null("m"), "{d}");
}
