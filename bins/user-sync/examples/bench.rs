//! Throughput of user-sync against the running servers (see scripts/bench.sh).
//!
//! Pushes N normalized user events (N/10 users, or `BENCH_USERS`) through a fresh 6-partition
//! topic, runs user-sync on it, and reports events/s applied; then times a plain driver loop
//! (one upsert per event, sequential) on the same store for comparison.
//!
//! With `BENCH_HISTORY` set, it measures instead whether history costs: user-sync runs
//! first, then the first 2,000 events are sent and timed until applied, the events up to
//! N − 2,000 are sent and applied untimed, and the last 2,000 are sent and timed. Each
//! timed window starts from a caught-up consumer with 2,000 events waiting, so the two
//! times differ only by what the store already holds.

use std::time::{Duration, Instant};

use bson::{doc, Document};
use events::{EventMessage, Record, UserRecord, SCHEMA_VERSION};
use rdkafka::admin::AdminOptions;
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::Servers;

mod support;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    support::log_to_stderr();
    let n = support::count_arg(5000)?;
    let servers = Servers::from_env()?;
    let (brokers, uri) = (&servers.brokers, &servers.uri);
    let run = &servers.run;
    let topic = format!("bench-users-{run}");
    let database = format!("bench_{run}");
    let admin = servers.topic(&topic, 6).await?;

    let users = match std::env::var("BENCH_USERS") {
        Ok(u) => u.parse::<usize>()?.max(1),
        Err(_) => (n / 10).max(1),
    };
    let producer = servers.producer()?;
    let history = std::env::var_os("BENCH_HISTORY").is_some() && n >= 4000;
    if !history {
        // Produce everything first, so the measurement is user-sync's alone.
        let started = Instant::now();
        produce(&producer, &topic, 0..n, users).await?;
        println!(
            "produced {n} events for {users} users in {:.2?}",
            started.elapsed()
        );
    }

    let config = user_sync::Config::from_vars([
        ("KAFKA_BROKERS".to_string(), brokers.clone()),
        ("MONGODB_URI".to_string(), uri.clone()),
        ("MONGODB_DATABASE".to_string(), database.clone()),
        ("KAFKA_TOPIC_USERS".to_string(), topic.clone()),
        ("SYNC_ENTITIES".to_string(), "users".to_string()),
        ("KAFKA_GROUP_ID".to_string(), format!("bench-{run}")),
        ("KAFKA_REPLICATION_FACTOR".to_string(), "1".to_string()),
    ])?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let listener_address = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let app = tokio::spawn(user_sync::run_until(config, listener, async {
        let _ = stop_rx.await;
    }));

    let client = mongodb::Client::with_uri_str(uri).await?;
    let db = client.database(&database);
    let metrics = format!("http://{}/metrics", listener_address);
    let http = reqwest::Client::new();
    // Applied in the history windows (nothing else to print), or at once: (since start,
    // since the first batch).
    let throughput = if history {
        // Timed from a consumer that holds its partitions.
        let ready = format!("http://{}/ready", listener_address);
        while !http
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let timed = |range: std::ops::Range<usize>| {
            let (producer, topic, http, metrics) = (&producer, &topic, &http, &metrics);
            async move {
                let started = Instant::now();
                let end = range.end;
                produce(producer, topic, range, users).await?;
                wait_for(http, metrics, end).await;
                anyhow::Ok(started.elapsed())
            }
        };
        let first = timed(0..2000).await?;
        println!("history: events 1-2000 applied in {first:.2?}");
        let middle = timed(2000..n - 2000).await?;
        println!(
            "history: events 2001-{} applied in {middle:.2?} ({:.0} events/s, untimed window)",
            n - 2000,
            (n - 4000) as f64 / middle.as_secs_f64()
        );
        let last = timed(n - 2000..n).await?;
        println!(
            "history: events {}-{n} applied in {last:.2?}: {:.2}x the first 2,000",
            n - 1999,
            last.as_secs_f64() / first.as_secs_f64()
        );
        None
    } else {
        let first = wait_for(&http, &metrics, n).await;
        let total = started.elapsed();
        Some((total, first.map_or(total, |f| f.elapsed())))
    };
    let _ = stop_tx.send(());
    app.await??;
    if let Some((total, applying)) = throughput {
        println!(
            "user-sync: {n} events applied in {total:.2?} from start ({:.0} events/s), {applying:.2?} from the first record ({:.0} events/s)",
            n as f64 / total.as_secs_f64(),
            n as f64 / applying.as_secs_f64(),
        );
        plain_loop(&db, n, users).await?;
    }
    db.drop().await?;
    admin.delete_topics(&[&topic], &AdminOptions::new()).await?;
    Ok(())
}

/// The same store, the simplest possible writer: one upsert per event, in sequence.
async fn plain_loop(db: &mongodb::Database, n: usize, users: usize) -> anyhow::Result<()> {
    let plain = db.collection::<Document>("plain_loop");
    let started = Instant::now();
    for i in 0..n {
        let m = event(i % users, i / users);
        let user = m.user().cloned().unwrap_or_default();
        plain
            .update_one(
                doc! {"clerkId": &m.subject_id},
                doc! {"$set": {"firstName": user.first_name, "email": user.primary_email, "lastEventId": &m.event_id}},
            )
            .upsert(true)
            .await?;
    }
    let elapsed = started.elapsed();
    println!(
        "plain driver loop: {n} sequential upserts in {elapsed:.2?} ({:.0} writes/s)",
        n as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Sends events `range` (event i is user i % `users`'s round i / `users`), all acknowledged.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    range: std::ops::Range<usize>,
    users: usize,
) -> anyhow::Result<()> {
    let mut pending = Vec::with_capacity(range.len());
    for i in range {
        let m = event(i % users, i / users);
        let payload = m.to_json();
        let key = m.subject_id.clone();
        let p = producer.clone();
        let topic = topic.to_string();
        pending.push(tokio::spawn(async move {
            p.send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
        }));
    }
    for p in pending {
        p.await??;
    }
    Ok(())
}

/// Waits until user-sync has finished with `n` events; returns when it had finished with
/// the first. Progress comes from user-sync's own metrics, not the store: counting
/// documents is a full scan on FerretDB, and polling it would itself be a cost that grows
/// with history.
async fn wait_for(http: &reqwest::Client, metrics: &str, n: usize) -> Option<Instant> {
    let mut first = None;
    loop {
        let count = match http.get(metrics).send().await {
            Ok(r) => applied(&r.text().await.unwrap_or_default()),
            Err(_) => 0,
        };
        if count > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if count >= n {
            return first;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Events user-sync has finished with, from its `/metrics` text.
fn applied(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with("user_sync_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

fn event(user: usize, round: usize) -> EventMessage {
    let id = format!("user_bench_{user}");
    let time = 1_732_464_000_000 + round as i64 * 1000;
    let name = format!("Name{round}");
    EventMessage {
        schema_version: SCHEMA_VERSION,
        event_id: format!("msg_bench_{user}_{round}"),
        event_type: if round == 0 {
            "user.created"
        } else {
            "user.updated"
        }
        .into(),
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
        data: serde_json::value::to_raw_value(
            &serde_json::json!({"id": id, "first_name": name, "updated_at": time}),
        )
        .expect("JSON"),
        origin: events::Origin::Webhook,
        event_attributes: None,
    }
}
