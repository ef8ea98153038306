//! Throughput of user-sync against the running servers (see scripts/bench.sh).
//!
//! Pushes N normalized user events (N/10 users, or `BENCH_USERS`) through a fresh 6-partition
//! topic, runs user-sync on it, and reports events/s applied; then times a plain driver loop
//! (one upsert per event, sequential) on the same store for comparison.

use std::time::{Duration, Instant};

use bson::{doc, Document};
use common::kafka::KafkaSettings;
use events::{EventMessage, Record, UserRecord, SCHEMA_VERSION};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5000);
    let brokers = std::env::var("KAFKA_BROKERS")?;
    let uri = std::env::var("MONGODB_URI")?;
    let run = format!("{:x}", std::process::id());
    let topic = format!("bench-users-{run}");
    let database = format!("bench_{run}");
    let kafka = KafkaSettings::plaintext(&brokers);

    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    admin
        .create_topics(
            [&NewTopic::new(&topic, 6, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;

    // Produce everything first, so the measurement is user-sync's alone.
    let users = match std::env::var("BENCH_USERS") {
        Ok(u) => u.parse::<usize>()?.max(1),
        Err(_) => (n / 10).max(1),
    };
    let producer: FutureProducer = kafka
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let m = event(i % users, i / users);
        let payload = m.to_json();
        let key = m.subject_id.clone();
        let p = producer.clone();
        let topic = topic.clone();
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
    println!(
        "produced {n} events for {users} users in {:.2?}",
        started.elapsed()
    );

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

    let client = mongodb::Client::with_uri_str(&uri).await?;
    let db = client.database(&database);
    let records = db.collection::<Document>("webhook_events");
    // Progress from user-sync's own metrics, not the store: counting documents is a full
    // scan on FerretDB, and polling it would itself be a cost that grows with history.
    let metrics = format!("http://{}/metrics", listener_address);
    let http = reqwest::Client::new();
    let mut first = None;
    loop {
        let count = match http.get(&metrics).send().await {
            Ok(r) => applied(&r.text().await.unwrap_or_default()),
            Err(_) => 0,
        };
        if count > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if count >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed();
    let applying = first.map_or(total, |f| f.elapsed());
    let _ = stop_tx.send(());
    app.await??;
    println!(
        "user-sync: {n} events applied in {total:.2?} from start ({:.0} events/s), {applying:.2?} from the first record ({:.0} events/s)",
        n as f64 / total.as_secs_f64(),
        n as f64 / applying.as_secs_f64(),
    );

    // Does history cost? The time to apply the first 2,000 events against the last 2,000
    // (by processedAt, in ms: FerretDB's history used to be scanned once per batch).
    if n >= 4000 {
        let mut times: Vec<i64> = futures::TryStreamExt::try_collect::<Vec<Document>>(
            records
                .find(doc! {})
                .projection(doc! {"processedAt": 1})
                .await?,
        )
        .await?
        .iter()
        .filter_map(|d| {
            d.get_datetime("processedAt")
                .ok()
                .map(|t| t.timestamp_millis())
        })
        .collect();
        times.sort_unstable();
        let span = |a: usize, b: usize| times[b - 1] - times[a];
        println!(
            "history: events 1-2000 took {} ms, events {}-{} took {} ms",
            span(0, 2000),
            n - 1999,
            n,
            span(n - 2000, n)
        );
    }

    // The same store, the simplest possible writer: one upsert per event, in sequence.
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

    if std::env::var_os("BENCH_KEEP").is_none() {
        db.drop().await?;
    }
    admin.delete_topics(&[&topic], &AdminOptions::new()).await?;
    Ok(())
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
    }
}
