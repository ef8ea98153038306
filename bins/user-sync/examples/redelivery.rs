//! What a redelivery costs (see scripts/bench-redelivery.sh): one batch of N user events
//! (one per user, so every statement has its own document) delivered three times to
//! user-sync on the same store, each from a backlog after a restart, so each is read as
//! one batch (`SYNC_BATCH_SIZE` = N):
//!
//! 1. first delivery: every event new;
//! 2. the same messages again, whole (what at-least-once delivery does after a crash or a
//!    rebalance before the commit);
//! 3. N new events each older than its user's document: every one stale.
//!
//! For each: the time user-sync spent applying (its `apply_duration_seconds` sum), the
//! store's CPU over the phase from /proc (`BENCH_STORE_PID`; user-sync's start-up checks
//! included), and the commands and documents user-sync sent (its `store_*` counters).
//! `BENCH_ROUNDS` (default 3) rounds, each with users of its own.

use std::time::Duration;

use events::{EventMessage, Record, UserRecord, SCHEMA_VERSION};
use rdkafka::admin::AdminOptions;
use support::Servers;

mod support;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    support::log_to_stderr();
    let n = support::count_arg(500)?;
    let store_pid: Option<u32> = std::env::var("BENCH_STORE_PID")
        .ok()
        .and_then(|p| p.parse().ok());
    let servers = Servers::from_env()?;
    let run = &servers.run;
    let topic = format!("bench-redelivery-{run}");
    let database = format!("bench_redelivery_{run}");
    let admin = servers.topic(&topic, 1).await?;
    let producer = servers.producer()?;
    let vars = vec![
        ("KAFKA_BROKERS".to_string(), servers.brokers.clone()),
        ("MONGODB_URI".to_string(), servers.uri.clone()),
        ("MONGODB_DATABASE".to_string(), database.clone()),
        ("KAFKA_TOPIC_USERS".to_string(), topic.clone()),
        ("SYNC_ENTITIES".to_string(), "users".to_string()),
        ("SYNC_BATCH_SIZE".to_string(), n.to_string()),
        ("KAFKA_GROUP_ID".to_string(), format!("bench-{run}")),
        ("KAFKA_REPLICATION_FACTOR".to_string(), "1".to_string()),
    ];

    println!("| phase | batches | apply time | store CPU | commands | documents sent or read |");
    println!("|---|---|---|---|---|---|");
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    // Each round its own users, so each first delivery creates its documents.
    let phases = (0..rounds).flat_map(|r| {
        let users = move || r * n..(r + 1) * n;
        [
            (
                "first delivery",
                users().map(|u| event(u, 1)).collect::<Vec<_>>(),
            ),
            ("redelivered whole", users().map(|u| event(u, 1)).collect()),
            ("every event stale", users().map(|u| event(u, 0)).collect()),
        ]
    });
    for (name, events) in phases {
        support::send_all(&producer, &topic, &events).await?;
        let cpu = store_cpu(store_pid);
        let run = support::run_user_sync(&vars, events.len(), Duration::from_secs(600)).await?;
        let cpu = store_cpu(store_pid).zip(cpu).map(|(b, a)| b - a);
        // (Each run's counters start at zero.)
        let delta = |key: &str| run.metrics.get(key).copied().unwrap_or(0.0);
        let sum = |prefix: &str| run.sum(prefix);
        let detail = |prefix: &str| {
            run.metrics
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .filter(|(_, v)| **v > 0.0)
                .map(|(k, v)| format!("{} {v}", &k[prefix.len()..]))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| {name} | {} | {:.0} ms | {} | {} ({}) | {} |",
            delta("user_sync_apply_duration_seconds_count"),
            delta("user_sync_apply_duration_seconds_sum") * 1000.0,
            cpu.map_or("-".into(), |c| format!("{:.0} ms", c * 1000.0)),
            sum("user_sync_store_commands_total"),
            detail("user_sync_store_commands_total"),
            sum("user_sync_store_documents_total"),
        );
    }
    let client = mongodb::Client::with_uri_str(&servers.uri).await?;
    client.database(&database).drop().await?;
    admin.delete_topics(&[&topic], &AdminOptions::new()).await?;
    Ok(())
}

/// The store's CPU seconds so far (its processes', all of them).
fn store_cpu(pid: Option<u32>) -> Option<f64> {
    test_support::bench::tree_cpu_seconds(pid?).ok()
}

/// User `user`'s event of round `round` (round 0 is older than round 1).
fn event(user: usize, round: usize) -> EventMessage {
    let id = format!("user_redelivery_{user}");
    let time = 1_732_464_000_000 + round as i64 * 1000;
    let name = format!("Name{round}");
    EventMessage {
        schema_version: SCHEMA_VERSION,
        event_id: format!("msg_redelivery_{user}_{round}"),
        event_type: "user.updated".into(),
        event_time: time,
        instance_id: None,
        subject_id: id.clone(),
        record: Record::User(UserRecord {
            id: id.clone(),
            primary_email: Some(format!("{id}@example.com")),
            email_verified: true,
            first_name: Some(name.clone()),
            updated_at: Some(time),
            ..UserRecord::default()
        }),
        data: serde_json::value::to_raw_value(&serde_json::json!({
            "id": id, "first_name": name, "updated_at": time,
            "email_addresses": [{"id": "idn_1", "email_address": format!("{id}@example.com")}],
            "public_metadata": {"plan": "pro", "seats": 3}, "private_metadata": {},
            "image_url": "https://img.clerk.com/abcdefghijklmnopqrstuvwxyz0123456789",
        }))
        .expect("JSON"),
        origin: events::Origin::Webhook,
        event_attributes: None,
    }
}
