//! The contract's webhook behaviour end to end, against the real broker.

use std::time::{Duration, Instant};

use crate::helpers::*;
use events::{EventMessage, Family};
use rdkafka::message::Message;
use serde_json::Value;
use test_support::{Component, TestEnv};

#[tokio::test]
async fn signed_user_created_is_published_with_key_headers_and_record() {
    let app = spawn_app(TestEnv::new().await, &[]).await;
    let body = fixture("user.created");

    let (status, json) = app.deliver(SECRET_A, "msg_created_1", &body).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["status"], "accepted");
    assert_eq!(json["id"], "msg_created_1");

    let messages = read_topic(
        &app.env.brokers,
        &app.topics.users,
        1,
        Duration::from_secs(10),
    );
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.key(), Some(USER_ID.as_bytes()));
    assert_eq!(header(m, "event-id").as_deref(), Some("msg_created_1"));
    assert_eq!(header(m, "event-type").as_deref(), Some("user.created"));
    assert_eq!(header(m, "schema-version").as_deref(), Some("1"));
    // The same event as CloudEvents binary-mode headers.
    assert_eq!(header(m, "ce_specversion").as_deref(), Some("1.0"));
    assert_eq!(header(m, "ce_id").as_deref(), Some("msg_created_1"));
    assert_eq!(header(m, "ce_type").as_deref(), Some("user.created"));
    assert_eq!(header(m, "ce_subject").as_deref(), Some(USER_ID));
    assert!(header(m, "ce_source")
        .unwrap()
        .starts_with("urn:clerk:instance:"));
    assert!(header(m, "ce_time").unwrap().ends_with('Z'));
    assert_eq!(
        header(m, "ce_dataschema").as_deref(),
        Some(events::SCHEMA_ID)
    );
    assert_eq!(
        header(m, "content-type").as_deref(),
        Some("application/json")
    );
    let event = EventMessage::decode(m.payload().unwrap()).unwrap();
    assert_eq!(event.event_id, "msg_created_1");
    assert_eq!(event.subject_id, USER_ID);
    let user = event.user().unwrap();
    assert_eq!(user.primary_email.as_deref(), Some("ada@example.com"));
    assert!(user.email_verified);
    let original: Value = serde_json::from_slice(&body).unwrap();
    let data: Value = serde_json::from_str(event.data.get()).unwrap();
    assert_eq!(data, original["data"], "data travels untouched");

    // The other topics got nothing.
    for topic in [
        &app.topics.organizations,
        &app.topics.sessions,
        &app.topics.other,
    ] {
        assert!(read_topic(&app.env.brokers, topic, 0, Duration::from_millis(500)).is_empty());
    }
    app.stop().await;
}

/// The refusal rows themselves are in rows.rs (in process); here, against the broker:
/// nothing refused reaches a topic, and refusals are counted by reason.
#[tokio::test]
async fn refusals_reach_no_topic_and_are_counted() {
    let app = spawn_app(
        TestEnv::new().await,
        &[("WEBHOOK_QUERY_SECRET", "q-s3cret")],
    )
    .await;
    let body = fixture("user.updated");
    let path = "/webhook?secret=q-s3cret";
    let good = signed(SECRET_A, "msg_e1", now(), &body);
    let refused = [
        (
            signed(SECRET_B, "msg_e1", now(), &body),
            body.clone(),
            path,
            401,
        ),
        (
            good.clone(),
            [body.clone(), b" ".to_vec()].concat(),
            path,
            401,
        ),
        (
            signed(SECRET_A, "msg_e1", now() - 360, &body),
            body.clone(),
            path,
            401,
        ),
        (good.clone(), body.clone(), "/webhook?secret=nope", 401),
        (good.clone(), body.clone(), "/webhook", 401),
        (vec![], body.clone(), path, 400),
    ];
    for (headers, body, path, status) in refused {
        let (got, json) = app.post(path, &headers, body).await;
        assert_eq!(got, status, "{path}: {json}");
    }
    assert!(
        read_topic(
            &app.env.brokers,
            &app.topics.users,
            0,
            Duration::from_millis(500)
        )
        .is_empty(),
        "nothing refused reaches Kafka"
    );

    // The same delivery with the right query secret passes.
    let (status, json) = app.post(path, &good, body.clone()).await;
    assert_eq!(status, 200, "{json}");

    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        r#"clerk_sync_webhook_requests_total{event_type="user.updated",outcome="accepted"} 1"#,
        r#"clerk_sync_webhook_requests_total{event_type="unknown",outcome="invalid_signature"} 2"#,
        r#"clerk_sync_webhook_verification_failures_total{reason="invalid_query_secret"} 2"#,
        r#"clerk_sync_webhook_verification_failures_total{reason="timestamp_out_of_tolerance"} 1"#,
        "clerk_sync_kafka_publish_duration_seconds_count",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn rotation_accepts_either_secret() {
    let both = format!("{SECRET_A},{SECRET_B}");
    let app = spawn_app(TestEnv::new().await, &[("CLERK_WEBHOOK_SECRET", &both)]).await;
    let body = fixture("user.updated");
    for (secret, id) in [(SECRET_A, "msg_rot_a"), (SECRET_B, "msg_rot_b")] {
        let (status, json) = app.deliver(secret, id, &body).await;
        assert_eq!(status, 200, "{id}: {json}");
    }
    let other = "whsec_b3RoZXItc2VjcmV0LW5vdC1jb25maWd1cmVk";
    let (status, _) = app.deliver(other, "msg_rot_c", &body).await;
    assert_eq!(status, 401);
    let ids: Vec<String> = read_topic(
        &app.env.brokers,
        &app.topics.users,
        2,
        Duration::from_secs(10),
    )
    .iter()
    .filter_map(|m| header(m, "event-id"))
    .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"msg_rot_a".into()) && ids.contains(&"msg_rot_b".into()));
    app.stop().await;
}

#[tokio::test]
async fn each_family_lands_on_its_topic_and_nothing_is_dropped() {
    let app = spawn_app(TestEnv::new().await, &[]).await;
    let cases = [
        (
            "organizationMembership.created",
            "org_2pZ7bN4mV6cX8zL0kJ2hG4fD6sA",
            Family::Organizations,
        ),
        ("session.created", USER_ID, Family::Sessions),
        // Billing is keyed by the payer: the paying user here.
        ("subscriptionItem.active", USER_ID, Family::Billing),
        ("unknown", "wle_2pZCeR5tY7uI9oP1aS3dF5gH7jK", Family::Other),
    ];
    for (name, _, _) in &cases {
        let (status, json) = app
            .deliver(SECRET_A, &format!("msg_{name}"), &fixture(name))
            .await;
        assert_eq!(status, 200, "{name}: {json}");
    }
    for (name, key, family) in cases {
        let topic = app.topics.for_family(family);
        let messages = read_topic(&app.env.brokers, topic, 1, Duration::from_secs(10));
        assert_eq!(messages.len(), 1, "{name} on {topic}");
        assert_eq!(messages[0].key(), Some(key.as_bytes()), "{name}");
        assert_eq!(
            header(&messages[0], "event-id"),
            Some(format!("msg_{name}"))
        );
    }
    assert!(read_topic(
        &app.env.brokers,
        &app.topics.users,
        0,
        Duration::from_millis(500)
    )
    .is_empty());
    app.stop().await;
}

#[tokio::test]
async fn topics_are_created_at_start_up() {
    let env = TestEnv::new().await;
    let app = spawn_app(env, &[("KAFKA_TOPIC_PARTITIONS", "4")]).await;
    let admin: rdkafka::consumer::BaseConsumer =
        common::kafka::KafkaSettings::plaintext(&app.env.brokers)
            .client_config()
            .create()
            .unwrap();
    use rdkafka::consumer::Consumer;
    for topic in app.topics.all() {
        let metadata = admin
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let t = &metadata.topics()[0];
        assert!(t.error().is_none(), "{topic}: {:?}", t.error());
        assert_eq!(t.partitions().len(), 4, "{topic}");
    }
    let ready = app.http.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let health: Value = app
        .http
        .get(app.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_answers_503_in_time_and_the_retry_is_published_once() {
    let env = TestEnv::exclusive().await;
    let app = spawn_app(env, &[("PUBLISH_TIMEOUT_MS", "2000")]).await;
    let body = fixture("user.created");

    app.env.stop(Component::Kafka).await;
    let started = Instant::now();
    let (status, json) = app.deliver(SECRET_A, "msg_retry_1", &body).await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{json}");
    assert_eq!(json["code"], "BROKER_UNAVAILABLE");
    assert!(
        took <= Duration::from_millis(3000),
        "answered after {took:?}"
    );

    let ready = app.http.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "/ready while the broker is down");

    app.env.start(Component::Kafka).await;
    // Svix retries the same message id with a fresh signature until it gets a 2xx.
    let status = test_support::eventually(
        Duration::from_secs(60),
        "the retry to be accepted",
        || async {
            let (status, _) = app.deliver(SECRET_A, "msg_retry_1", &body).await;
            (status == 200).then_some(status)
        },
    )
    .await;
    assert_eq!(status, 200);

    let messages = read_topic(
        &app.env.brokers,
        &app.topics.users,
        1,
        Duration::from_secs(10),
    );
    let copies = messages
        .iter()
        .filter(|m| header(*m, "event-id").as_deref() == Some("msg_retry_1"))
        .count();
    assert_eq!(copies, 1, "published once");
    app.stop().await;
}

/// A body just under the default MAX_BODY_BYTES (1 MiB) that doesn't compress: the message
/// (the body's data plus the normalized record) is larger than Kafka's default 1 MB limit,
/// and still goes through.
#[tokio::test]
async fn a_body_near_the_limit_is_published() {
    let app = spawn_app(TestEnv::new().await, &[]).await;
    let mut body: Value = serde_json::from_slice(&fixture("user.updated")).unwrap();
    // Deterministic noise (an LCG) that lz4 can't shrink much.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let noise: String = (0..1_040_000)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            alphabet[(x >> 58) as usize] as char
        })
        .collect();
    body["data"]["public_metadata"]["blob"] = Value::String(noise);
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!(
        bytes.len() > 1_000_000 && bytes.len() <= 1_048_576,
        "{}",
        bytes.len()
    );

    let (status, json) = app.deliver(SECRET_A, "msg_big", &bytes).await;
    assert_eq!(status, 200, "{json}");
    let messages = read_topic(
        &app.env.brokers,
        &app.topics.users,
        1,
        Duration::from_secs(10),
    );
    assert_eq!(messages.len(), 1);
    assert!(messages[0].payload().unwrap().len() > 1_040_000);
    app.stop().await;
}
