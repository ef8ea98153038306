//! OpenTelemetry traces through both binaries and a real collector (scripts/otelcol.sh):
//! a signed webhook's trace, from clerk-sync's request to the user-sync batch that wrote
//! the document, and through the DLQ and a replay.

use std::time::Duration;

use bson::Document;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::json;
use test_support::otel_collector::{Collector, Span};
use test_support::TestEnv;

use crate::helpers::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const T0: i64 = 1_732_464_000_000;

/// OTLP's span kinds.
const SERVER: i64 = 2;
const PRODUCER: i64 = 4;
const CONSUMER: i64 = 5;

/// Posts a signed `user.created` for `user` with address `email`.
async fn post_user_created(clerk_sync: &ClerkSync, svix_id: &str, user: &str, email: &str) {
    let body = json!({
        "type": "user.created", "object": "event", "timestamp": T0 / 1000,
        "instance_id": "ins_traces",
        "data": {
            "id": user, "object": "user", "first_name": "Ada", "created_at": T0, "updated_at": T0,
            "email_addresses": [{"id": format!("idn_{user}"), "email_address": email}],
            "primary_email_address_id": format!("idn_{user}"),
        },
    });
    assert_eq!(
        clerk_sync.post(svix_id, body.to_string()).await,
        200,
        "{svix_id}"
    );
}

/// clerk-sync's spans of the webhook `svix_id`: (its server span, the publish under it).
fn webhook_spans(spans: &[Span], svix_id: &str) -> Option<(Span, Span)> {
    let server = spans.iter().find(|s| {
        s.service == "clerk-sync"
            && s.kind == SERVER
            && s.attributes.get("svix_id").map(String::as_str) == Some(svix_id)
    })?;
    let publish = spans.iter().find(|s| {
        s.service == "clerk-sync" && s.kind == PRODUCER && s.parent_span_id == server.span_id
    })?;
    Some((server.clone(), publish.clone()))
}

/// user-sync's batch spans linked to `publish`, with the offset each link names.
fn batches_linked_to(spans: &[Span], publish: &Span) -> Vec<(Span, String)> {
    spans
        .iter()
        .filter(|s| s.service == "user-sync" && s.kind == CONSUMER)
        .filter_map(|s| {
            let link = s
                .links
                .iter()
                .find(|l| l.trace_id == publish.trace_id && l.span_id == publish.span_id)?;
            Some((
                s.clone(),
                link.attributes.get("messaging.kafka.offset")?.clone(),
            ))
        })
        .collect()
}

#[tokio::test]
async fn a_webhook_is_one_trace_to_the_batch_that_wrote_it_through_the_dlq_and_a_replay() {
    let collector = tokio::task::spawn_blocking(Collector::start).await.unwrap();
    let env = TestEnv::new().await;
    let names = names(&env);
    // The application's own unique index makes the second user with one address fail.
    unique_email_index(&env, &names).await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()),
        // Export within a fraction of a second rather than 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let consumer = spawn_process_with(&env, &names, free_port(), &otel).await;
    let clerk_sync = ClerkSync::spawn(&env, &names, SECRET, &otel).await;

    post_user_created(
        &clerk_sync,
        "msg_trace_a",
        "user_trace_a",
        "ada@example.com",
    )
    .await;
    let db = env.mongo().await.database(&names.database);
    wait_records(&db, 1, Duration::from_secs(60)).await;
    post_user_created(
        &clerk_sync,
        "msg_trace_b",
        "user_trace_b",
        "ada@example.com",
    )
    .await;
    wait_records(&db, 2, Duration::from_secs(60)).await;
    assert_eq!(
        record(&db, "msg_trace_b").await.get_str("outcome").unwrap(),
        "dead_lettered"
    );

    // One trace: clerk-sync's request, its publish, and the batch that applied the event,
    // linked to the publish (the span whose context the message carried).
    let (server_a, publish_a) = test_support::eventually(
        Duration::from_secs(30),
        "user_trace_a's webhook and batch spans at the collector",
        || async {
            let spans = collector.spans();
            let (server, publish) = webhook_spans(&spans, "msg_trace_a")?;
            (!batches_linked_to(&spans, &publish).is_empty()).then_some((server, publish))
        },
    )
    .await;
    assert_eq!(server_a.name, "POST /webhook");
    assert_eq!(
        server_a
            .attributes
            .get("http.response.status_code")
            .map(String::as_str),
        Some("200")
    );
    assert_eq!(publish_a.trace_id, server_a.trace_id);
    assert_eq!(publish_a.name, format!("send {}", names.topic));
    let spans = collector.spans();
    let linked = batches_linked_to(&spans, &publish_a);
    assert_eq!(linked.len(), 1, "{linked:?}");
    let (batch, _) = &linked[0];
    assert_eq!(batch.name, "process");
    // The batch is its own trace, linked to the webhook's: many webhooks, one batch.
    assert_ne!(batch.trace_id, server_a.trace_id);
    let link = batch
        .links
        .iter()
        .find(|l| l.trace_id == server_a.trace_id)
        .unwrap();
    assert_eq!(
        link.attributes
            .get("messaging.message.id")
            .map(String::as_str),
        Some("msg_trace_a")
    );
    // The log lines name the traces: clerk-sync's "accepted", user-sync's "batch done".
    let clerk_log = std::fs::read_to_string(&clerk_sync.log).unwrap();
    assert!(
        clerk_log.contains(&format!("\"trace_id\":\"{}\"", server_a.trace_id)),
        "{clerk_log}"
    );
    let sync_log = std::fs::read_to_string(&consumer.log).unwrap();
    assert!(
        sync_log.contains(&format!("\"trace_id\":\"{}\"", batch.trace_id)),
        "{sync_log}"
    );

    // The refused event: its DLQ copy is sent from a producer span under the batch's span,
    // linked to the webhook's publish.
    let (publish_b, dead_letter) = test_support::eventually(
        Duration::from_secs(30),
        "user_trace_b's spans and its DLQ send",
        || async {
            let spans = collector.spans();
            let (_, publish) = webhook_spans(&spans, "msg_trace_b")?;
            let dead_letter = spans.iter().find(|s| {
                s.service == "user-sync"
                    && s.name == format!("send {}", names.dlq)
                    && s.links
                        .iter()
                        .any(|l| l.trace_id == publish.trace_id && l.span_id == publish.span_id)
            })?;
            Some((publish, dead_letter.clone()))
        },
    )
    .await;
    assert_eq!(dead_letter.kind, PRODUCER);
    // Under the batch's span (through the span of the attempt at it).
    let spans = collector.spans();
    let parent_of = |s: &Span| {
        spans
            .iter()
            .find(|p| p.span_id == s.parent_span_id)
            .cloned()
            .unwrap_or_else(|| panic!("no parent span of {s:?}"))
    };
    let attempt = parent_of(&dead_letter);
    assert_eq!(attempt.name, "attempt");
    let batch = parent_of(&attempt);
    assert_eq!((batch.kind, batch.name.as_str()), (CONSUMER, "process"));
    assert!(
        batches_linked_to(&spans, &publish_b)
            .iter()
            .any(|(linked, _)| linked.span_id == batch.span_id),
        "the DLQ send's batch is the one linked to the refused event"
    );

    // The fix, then the replay: the replayed message keeps the webhook's context, so the
    // batch that finally applies it is linked to the same trace, at its new offset.
    db.collection::<Document>("users")
        .drop_index("email_1")
        .await
        .unwrap();
    let vars = vars(&env, &names, &[]);
    user_sync(&vars, &["dlq", "replay", "--code", "rejected_by_database"]).await;
    test_support::eventually(Duration::from_secs(60), "user_trace_b applied", || async {
        let r = db
            .collection::<Document>("webhook_events")
            .find_one(bson::doc! {"_id": "msg_trace_b"})
            .await
            .ok()??;
        (r.get_str("outcome") == Ok("applied")).then_some(())
    })
    .await;
    let offsets = test_support::eventually(
        Duration::from_secs(30),
        "two batches linked to user_trace_b's trace",
        || async {
            let mut offsets: Vec<String> = batches_linked_to(&collector.spans(), &publish_b)
                .into_iter()
                .map(|(_, offset)| offset)
                .collect();
            offsets.sort();
            offsets.dedup();
            (offsets.len() == 2).then_some(offsets)
        },
    )
    .await;
    eprintln!(
        "user_trace_b's message was applied from offsets {offsets:?} (consumed, then replayed)"
    );
    drop(clerk_sync);
    drop(consumer);
}

/// A backlog applied in batches of up to `SYNC_BATCH_SIZE` (500): every message is linked
/// from the span of the batch that applied it, beyond OpenTelemetry's default limit of 128
/// links a span, which would drop the rest without a word.
#[tokio::test]
async fn every_message_of_a_large_batch_is_linked() {
    const MESSAGES: usize = 300;
    let collector = tokio::task::spawn_blocking(Collector::start).await.unwrap();
    let env = TestEnv::new().await;
    let names = names(&env);
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    // Started once to make the topics and join the group, then stopped: the messages wait
    // for the next start as one backlog.
    drop(spawn_process_with(&env, &names, free_port(), &otel).await);
    let producer = producer(&env);
    let traceparent = |i: usize| format!("00-{:032x}-{:016x}-01", i + 1, i + 1);
    for i in 0..MESSAGES {
        let m = user_event(
            Kind::Created,
            &format!("user_big_{i}"),
            &format!("msg_big_{i}"),
            T0,
            &format!("Ada{i}"),
        );
        let parent = traceparent(i);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "event-id",
                value: Some(m.event_id.as_str()),
            })
            .insert(Header {
                key: "traceparent",
                value: Some(parent.as_str()),
            });
        producer
            .send(
                FutureRecord::to(&names.topic)
                    // One key: one partition, read as one backlog.
                    .key("big")
                    .payload(&m.to_json())
                    .headers(headers),
                Duration::from_secs(60),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let consumer = spawn_process_with(&env, &names, free_port(), &otel).await;
    let db = env.mongo().await.database(&names.database);
    wait_records(&db, MESSAGES as u64, Duration::from_secs(120)).await;

    let largest = test_support::eventually(
        Duration::from_secs(30),
        "a link to every message",
        || async {
            let batches: Vec<Span> = collector
                .spans()
                .into_iter()
                .filter(|s| s.service == "user-sync" && s.kind == CONSUMER)
                .collect();
            let linked: std::collections::HashSet<&str> = batches
                .iter()
                .flat_map(|s| s.links.iter().map(|l| l.trace_id.as_str()))
                .collect();
            (0..MESSAGES)
                .all(|i| linked.contains(format!("{:032x}", i + 1).as_str()))
                .then(|| batches.iter().map(|s| s.links.len()).max().unwrap_or(0))
        },
    )
    .await;
    eprintln!("the largest batch span has {largest} links");
    assert!(
        largest > 128,
        "no batch held more than 128 messages ({largest}): the backlog didn't make one"
    );
    drop(consumer);
}
