//! `user-sync dlq list` and `dlq replay`, through the binary: three kinds of poison
//! dead-lettered, one kind replayed after its cause is fixed, applied exactly once, and a
//! second replay that sends nothing.

use std::time::Duration;

use bson::{doc, Document};
use test_support::TestEnv;

use crate::helpers::*;
use common::kafka::header;

const T0: i64 = 1_732_464_000_000;

/// The `dlq list --json` numbers of the users DLQ: (messages, not replayed, code → count).
async fn listed(vars: &[(String, String)], dlq: &str) -> (u64, u64, Vec<(String, u64)>) {
    let out = user_sync(vars, &["dlq", "list", "--json", "--topic", dlq]).await;
    let topics: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = &topics[0];
    assert_eq!(t["topic"], dlq, "{out}");
    let codes = t["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert!(c["oldest"].as_i64().unwrap() <= c["newest"].as_i64().unwrap());
            assert!(!c["samples"].as_array().unwrap().is_empty(), "{c}");
            (
                c["code"].as_str().unwrap().to_string(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect();
    (
        t["messages"].as_u64().unwrap(),
        t["not_replayed"].as_u64().unwrap(),
        codes,
    )
}

#[tokio::test]
async fn a_fixed_cause_is_replayed_once_and_only_its_events() {
    let env = TestEnv::new().await;
    let n = names(&env);
    unique_email_index(&env, &n).await;
    let vars = vars(&env, &n, &[]);
    let app = spawn_app_with(env, n).await;
    let p = producer(&app.env);
    let topic = app.names.topic.clone();

    // Three kinds of poison, one of each cause, and one valid event.
    produce_raw(&p, &topic, "user_dlq_u", b"\x00not json", Some("dlq_u")).await;
    for user in ["user_dlq_s1", "user_dlq_s2"] {
        let mut future = user_event(Kind::Created, user, &format!("dlq_{user}"), T0, user);
        future.schema_version = 99;
        produce_raw(&p, &topic, user, &future.to_json(), Some(&future.event_id)).await;
    }
    produce(
        &p,
        &topic,
        &user_event(Kind::Created, "user_dlq_r1", "dlq_r1", T0, "Ada"),
    )
    .await;
    // r1 first, alone: of two users with one address in one batch, either may be the
    // one refused (partitions are read in no fixed order).
    test_support::eventually(Duration::from_secs(60), "r1 applied", || async {
        let r = app
            .db
            .collection::<Document>("webhook_events")
            .find_one(doc! {"_id": "dlq_r1", "outcome": "applied"})
            .await
            .ok()??;
        Some(r)
    })
    .await;
    // Same first name, same address: refused by the email index.
    produce(
        &p,
        &topic,
        &user_event(Kind::Created, "user_dlq_r2", "dlq_r2", T0 + 1, "Ada"),
    )
    .await;
    wait_records(&app.db, 5, Duration::from_secs(60)).await;
    assert_eq!(
        record(&app.db, "dlq_r2").await.get_str("outcome").unwrap(),
        "dead_lettered"
    );

    // The DLQ is at least once (a batch retried after its DLQ sends sends them again), so
    // the counts are checked against a read of the topic, and each cause is there.
    let dlq = app.names.dlq.clone();
    let (messages, codes) =
        test_support::eventually(Duration::from_secs(30), "each cause in the DLQ", || async {
            let (messages, not_replayed, codes) = listed(&vars, &dlq).await;
            let count = |code: &str| codes.iter().find(|(c, _)| c == code).map_or(0, |c| c.1);
            (count("rejected_by_database") >= 1
                && count("undecodable") >= 1
                && count("unsupported_schema_version") >= 2
                && not_replayed == messages)
                .then_some((messages, codes))
        })
        .await;
    let mut read: Vec<(String, u64)> = Vec::new();
    for m in read_topic(&app.env.brokers, &dlq, messages as usize).await {
        let code = header(&m, "dlq-error-code").unwrap();
        match read.iter_mut().find(|(c, _)| *c == code) {
            Some(entry) => entry.1 += 1,
            None => read.push((code, 1)),
        }
    }
    read.sort();
    assert_eq!(read, codes, "dlq list against the topic");
    let rejected = codes[0].1;
    assert_eq!(codes[0].0, "rejected_by_database");
    let table = user_sync(&vars, &["dlq", "list"]).await;
    assert!(
        table.contains(&format!(
            "{dlq} (from {topic}): {messages} messages, {messages} not replayed yet"
        )),
        "{table}"
    );
    assert!(table.contains("unsupported_schema_version"), "{table}");

    // A dry run of everything sends nothing and moves no group.
    let dry = user_sync(&vars, &["dlq", "replay", "--dry-run"]).await;
    assert!(
        dry.contains(&format!(
            "read {messages}, would replay {messages}, passed over 0"
        )),
        "{dry}"
    );

    // The fix: the application drops its email index. Then only that cause is replayed.
    app.db
        .collection::<Document>("users")
        .drop_index("email_1")
        .await
        .unwrap();
    let replayed = user_sync(&vars, &["dlq", "replay", "--code", "rejected_by_database"]).await;
    assert!(
        replayed.contains(&format!(
            "read {messages}, replayed {rejected}, passed over {}",
            messages - rejected
        )),
        "{replayed}"
    );
    assert!(
        replayed.contains(&format!("replayed {rejected:>6} to {topic}")),
        "{replayed}"
    );

    test_support::eventually(
        Duration::from_secs(60),
        "the replayed event applied",
        || async {
            let r = app
                .db
                .collection::<Document>("webhook_events")
                .find_one(doc! {"_id": "dlq_r2"})
                .await
                .ok()??;
            (r.get_str("outcome") == Ok("applied")).then_some(r)
        },
    )
    .await;
    let r2 = record(&app.db, "dlq_r2").await;
    let duplicates = r2
        .get_i64("duplicates")
        .or_else(|_| r2.get_i32("duplicates").map(i64::from))
        .unwrap_or(0);
    assert_eq!(
        duplicates, 0,
        "a replay of a dead-lettered event is no redelivery: {r2}"
    );
    assert_eq!(
        user_doc(&app.db, "user_dlq_r2")
            .await
            .get_str("email")
            .unwrap(),
        "ada@example.com"
    );
    // The other causes weren't touched: still dead-lettered, no documents, no new records.
    for id in ["dlq_user_dlq_s1", "dlq_user_dlq_s2", "dlq_u"] {
        assert_eq!(
            record(&app.db, id).await.get_str("outcome").unwrap(),
            "dead_lettered",
            "{id}"
        );
    }
    for user in ["user_dlq_s1", "user_dlq_s2"] {
        let doc = app
            .db
            .collection::<Document>("users")
            .find_one(doc! {"clerkId": user})
            .await
            .unwrap();
        assert!(doc.is_none(), "{user}");
    }
    let records = app
        .db
        .collection::<Document>("webhook_events")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(records, 5);

    // The replayed message: the event's key, value and headers, not the failure's.
    let sent = read_topic(&app.env.brokers, &topic, 5 + rejected as usize).await;
    let back: Vec<_> = sent
        .iter()
        .filter(|m| header(*m, "dlq-replayed-from").is_some())
        .collect();
    assert_eq!(back.len() as u64, rejected);
    let original = sent
        .iter()
        .find(|m| {
            header(*m, "event-id").as_deref() == Some("dlq_r2")
                && header(*m, "dlq-replayed-from").is_none()
        })
        .unwrap();
    use rdkafka::message::Message;
    assert_eq!(back[0].key(), original.key());
    assert_eq!(back[0].payload(), original.payload());
    assert_eq!(header(back[0], "event-id").as_deref(), Some("dlq_r2"));
    assert!(header(back[0], "dlq-error-code").is_none());
    assert!(header(back[0], "__connect.errors.topic").is_none());
    assert!(header(back[0], "dlq-replayed-from")
        .unwrap()
        .starts_with(&format!("{dlq}:")));

    // A second replay of the same cause has nothing left to send.
    let again = user_sync(&vars, &["dlq", "replay", "--code", "rejected_by_database"]).await;
    assert!(
        again.contains("read 0, replayed 0, passed over 0"),
        "{again}"
    );
    // The all-codes group hasn't moved: list still counts every message not replayed.
    assert_eq!(listed(&vars, &dlq).await, (messages, messages, codes));

    // `status` with user-sync down and three events waiting: its numbers are the
    // database's and the broker's.
    let db = app.db.clone();
    let _env = app.stop_keeping_env().await;
    for i in 0..3 {
        let m = user_event(
            Kind::Created,
            &format!("user_dlq_late{i}"),
            &format!("dlq_late{i}"),
            T0,
            "Late",
        );
        produce(&p, &topic, &m).await;
    }
    let out = user_sync(&vars, &["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let users = status["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "users")
        .unwrap();
    let count = |filter: Document| {
        let db = db.clone();
        async move {
            db.collection::<Document>("users")
                .count_documents(filter)
                .await
                .unwrap()
        }
    };
    assert_eq!(users["total"], count(doc! {}).await, "{out}");
    assert_eq!(users["total"], 2, "r1 and the replayed r2: {out}");
    assert_eq!(users["deleted"], count(doc! {"isDeleted": true}).await);
    assert_eq!(users["failed"], count(doc! {"syncStatus": "failed"}).await);
    // Every record is from the last minutes: both windows hold them all, by outcome.
    let events = db.collection::<Document>("webhook_events");
    for outcome in ["applied", "duplicate", "stale", "dead_lettered", "ignored"] {
        let n = events
            .count_documents(doc! {"outcome": outcome})
            .await
            .unwrap();
        for window in ["last_hour", "last_day"] {
            assert_eq!(
                status[window][outcome].as_u64().unwrap_or(0),
                n,
                "{outcome}: {out}"
            );
        }
    }
    assert_eq!(
        status["last_hour"]["dead_lettered"], 3,
        "dlq_u, s1, s2: {out}"
    );
    assert_eq!(status["dlq"][&dlq], messages, "{out}");
    assert_eq!(status["total_lag"], 3, "{out}");
    let lag: u64 = status["lag"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["topic"] == topic.as_str())
        .map(|l| l["lag"].as_u64().unwrap())
        .sum();
    assert_eq!(lag, 3);
    let last = status["last_error"]["event_id"].as_str().unwrap();
    assert!(
        status["last_error"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{out}"
    );
    assert!(
        ["dlq_u", "dlq_user_dlq_s1", "dlq_user_dlq_s2"].contains(&last),
        "{out}"
    );
    let table = user_sync(&vars, &["status"]).await;
    assert!(table.contains("consumer lag: 3 in all"), "{table}");
}

/// Two new users with one address in one batch, under an application's unique email index:
/// the database takes one, and refuses the other; only that one is dead-lettered.
#[tokio::test]
async fn of_two_new_users_with_one_address_exactly_one_is_refused() {
    let env = TestEnv::new().await;
    let n = names(&env);
    unique_email_index(&env, &n).await;
    let app = spawn_app_with(env, n).await;
    let p = producer(&app.env);
    let topic = app.names.topic.clone();
    let a = user_event(Kind::Created, "user_b1", "b1", T0, "Ada");
    let b = user_event(Kind::Created, "user_b2", "b2", T0, "Ada");
    tokio::join!(produce(&p, &topic, &a), produce(&p, &topic, &b));
    wait_records(&app.db, 2, Duration::from_secs(60)).await;
    let outcomes = [
        record(&app.db, "b1")
            .await
            .get_str("outcome")
            .unwrap()
            .to_string(),
        record(&app.db, "b2")
            .await
            .get_str("outcome")
            .unwrap()
            .to_string(),
    ];
    let mut sorted = outcomes.clone();
    sorted.sort();
    assert_eq!(sorted, ["applied", "dead_lettered"], "{outcomes:?}");
    let dlq = read_topic(&app.env.brokers, &app.names.dlq, 1).await;
    let refused = if outcomes[0] == "dead_lettered" {
        "b1"
    } else {
        "b2"
    };
    assert_eq!(header(&dlq[0], "event-id").as_deref(), Some(refused));
    // Nothing else reaches the DLQ.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages = test_support::eventually(Duration::from_secs(30), "the DLQ listed", || async {
        Some(listed_messages(&app.env, &app.names).await)
    })
    .await;
    assert_eq!(messages, 1, "dead-lettered more than the refused event");
    app.stop().await;
}

/// Messages in the users DLQ, by `dlq list --json`.
async fn listed_messages(env: &TestEnv, n: &Names) -> u64 {
    let vars = vars(env, n, &[]);
    listed(&vars, &n.dlq).await.0
}
