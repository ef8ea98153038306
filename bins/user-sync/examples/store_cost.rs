//! What user-sync asks of the store per event, beside a plain batched consumer on the same
//! topic and store (see scripts/bench-store.sh).
//!
//! For each mix (events per user), a topic of its own is filled with Clerk-sized
//! `user.updated` events (test-support's body, normalized as clerk-sync does), keyed by
//! user; then, in the same run and on the same servers:
//! - user-sync reads it from the start into a database of its own, until it has finished
//!   with every event;
//! - the baseline does the same into another database: what a careful team writes without
//!   an order rule or an audit record, one unordered `update` of upserts by `clerkId` per
//!   batch (the same fields, `webhookPayload` included, the same write concern as
//!   user-sync: majority, journaled), offsets committed after each write;
//! - then both again over the same topic with a new group (a second pass: every event a
//!   redelivery, the documents already newest).
//!
//! Printed per pass: events/s (from the first event done to the last), CPU per event of
//! the consumer (this process), of the store and of the broker (from /proc, each server's
//! processes with every process under them), and user-sync's store commands and documents
//! per event, by command and collection (its `store_*` counters).
//!
//! Environment: `BENCH_EVENTS` (20000) events per mix, `BENCH_MIXES` (`10,2,1`),
//! `BENCH_USERS` (users per mix instead of events / mix), `BENCH_LAYOUT` (`interleaved`:
//! event i is user i mod users's round i div users, so a batch rarely holds two events of
//! one user; `bursts`: each user's events one after another), `SYNC_BATCH_SIZE` (500, for
//! both consumers), `BENCH_STORE_PIDS` (comma-separated: the store's root processes),
//! `BENCH_BROKER_PID`, `BENCH_ONLY` (`user-sync` or `baseline`), `WEBHOOK_EVENTS_PAYLOAD`
//! (user-sync's).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bson::{doc, Bson, DateTime, Document};
use events::EventMessage;
use futures::StreamExt;
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use rdkafka::admin::AdminOptions;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::Servers;
use test_support::bench::{clerk_user_body, tree_cpu_seconds};

mod support;

/// Longest a pass may take.
const LIMIT: Duration = Duration::from_secs(1800);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    support::log_to_stderr();
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let events: usize = var("BENCH_EVENTS").map_or(Ok(20_000), |v| v.parse())?;
    let mixes: Vec<usize> = var("BENCH_MIXES")
        .unwrap_or_else(|| "10,2,1".into())
        .split(',')
        .map(|m| m.trim().parse())
        .collect::<Result<_, _>>()?;
    let fixed_users: Option<usize> = var("BENCH_USERS").map(|v| v.parse()).transpose()?;
    let bursts = match var("BENCH_LAYOUT").as_deref() {
        None | Some("interleaved") => false,
        Some("bursts") => true,
        Some(other) => anyhow::bail!("BENCH_LAYOUT: `{other}` is neither interleaved nor bursts"),
    };
    let batch: usize = var("SYNC_BATCH_SIZE").map_or(Ok(500), |v| v.parse())?;
    let only = var("BENCH_ONLY");
    let processes = Processes {
        store: var("BENCH_STORE_PIDS")
            .map(|v| v.split(',').map(|p| p.trim().parse()).collect())
            .transpose()?
            .unwrap_or_default(),
        broker: var("BENCH_BROKER_PID").map(|v| v.parse()).transpose()?,
    };
    let servers = Servers::from_env()?;
    let client = mongodb::Client::with_uri_str(&servers.uri).await?;
    println!(
        "layout {}, batches of {batch}",
        if bursts { "bursts" } else { "interleaved" }
    );
    println!("| events per user | events / users | pass | consumer | events/s | consumer CPU/event | store CPU/event | broker CPU/event | store commands per 1,000 events | documents per event |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for mix in mixes {
        let users = fixed_users.unwrap_or((events / mix).max(1));
        let n = users * mix;
        let topic = format!("bench-store-{}-{mix}", servers.run);
        let admin = servers.topic(&topic, 6).await?;
        fill(&servers, &topic, users, mix, bursts).await?;
        let ours = client.database(&format!("bench_store_{}_{mix}", servers.run));
        let theirs = client.database(&format!("bench_plain_{}_{mix}", servers.run));
        for pass in ["first", "second"] {
            let group = |who: &str| format!("bench-store-{who}-{}-{mix}-{pass}", servers.run);
            let row = |who: &str, f: &Figures| {
                println!(
                    "| {mix} | {n} / {users} | {pass} | {who} | {:.0} | {} | {} | {} | {} | {} |",
                    n as f64 / f.elapsed.as_secs_f64(),
                    per_event(f.cpu.consumer, n),
                    per_event(f.cpu.store, n),
                    per_event(f.cpu.broker, n),
                    f.commands,
                    f.documents,
                )
            };
            if only.as_deref() != Some("baseline") {
                let vars = vec![
                    ("KAFKA_BROKERS".to_string(), servers.brokers.clone()),
                    ("MONGODB_URI".to_string(), servers.uri.clone()),
                    ("MONGODB_DATABASE".to_string(), ours.name().to_string()),
                    ("KAFKA_TOPIC_USERS".to_string(), topic.clone()),
                    ("SYNC_ENTITIES".to_string(), "users".to_string()),
                    ("SYNC_BATCH_SIZE".to_string(), batch.to_string()),
                    ("KAFKA_GROUP_ID".to_string(), group("user-sync")),
                    ("KAFKA_REPLICATION_FACTOR".to_string(), "1".to_string()),
                ];
                let mut vars = vars;
                if let Some(keep) = var("WEBHOOK_EVENTS_PAYLOAD") {
                    vars.push(("WEBHOOK_EVENTS_PAYLOAD".to_string(), keep));
                }
                let cpu = processes.now();
                let run = support::run_user_sync(&vars, n, LIMIT).await?;
                let cpu = processes.now().since(&cpu);
                // Per `per` events: in all, then by command and collection.
                let per = |prefix: &str, per: f64| {
                    let mut parts: Vec<String> = run
                        .metrics
                        .iter()
                        .filter(|(k, v)| k.starts_with(prefix) && **v > 0.0)
                        .map(|(k, v)| format!("{} {:.2}", labels(k), v * per / n as f64))
                        .collect();
                    parts.insert(0, format!("{:.2}", run.sum(prefix) * per / n as f64));
                    parts.join(", ")
                };
                row(
                    "user-sync",
                    &Figures {
                        elapsed: run.last - run.first,
                        cpu,
                        commands: per("user_sync_store_commands_total", 1000.0),
                        documents: per("user_sync_store_documents_total", 1.0),
                    },
                );
                check(&ours, users, mix).await?;
            }
            if only.as_deref() != Some("user-sync") {
                let cpu = processes.now();
                let (elapsed, commands) =
                    baseline(&servers, &topic, &theirs, &group("baseline"), n, batch).await?;
                let cpu = processes.now().since(&cpu);
                row(
                    "baseline",
                    &Figures {
                        elapsed,
                        cpu,
                        commands: format!("{:.2}", commands as f64 * 1000.0 / n as f64),
                        documents: "1.00".into(),
                    },
                );
                check(&theirs, users, mix).await?;
            }
        }
        ours.drop().await?;
        theirs.drop().await?;
        admin.delete_topics(&[&topic], &AdminOptions::new()).await?;
    }
    Ok(())
}

/// What one consumer's pass measured.
struct Figures {
    elapsed: Duration,
    cpu: Cpu,
    commands: String,
    documents: String,
}

/// CPU seconds of this process, the store's and the broker's processes.
#[derive(Clone, Copy)]
struct Cpu {
    consumer: f64,
    store: Option<f64>,
    broker: Option<f64>,
}

impl Cpu {
    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            consumer: self.consumer - before.consumer,
            store: self.store.zip(before.store).map(|(a, b)| a - b),
            broker: self.broker.zip(before.broker).map(|(a, b)| a - b),
        }
    }
}

/// The servers' root processes.
struct Processes {
    store: Vec<u32>,
    broker: Option<u32>,
}

impl Processes {
    fn now(&self) -> Cpu {
        let store = (!self.store.is_empty())
            .then(|| self.store.iter().map(|&p| tree_cpu_seconds(p).ok()).sum())
            .flatten();
        Cpu {
            consumer: test_support::bench::cpu_ticks(std::process::id()).unwrap_or(0) as f64
                / 100.0,
            store,
            broker: self.broker.and_then(|p| tree_cpu_seconds(p).ok()),
        }
    }
}

fn per_event(seconds: impl Into<Option<f64>>, n: usize) -> String {
    match seconds.into() {
        Some(s) => format!("{:.0} µs", s * 1e6 / n as f64),
        None => "-".into(),
    }
}

/// `name{a="x",b="y"}` → `x/y`.
fn labels(key: &str) -> String {
    let inner = key
        .split_once('{')
        .map_or("", |(_, rest)| rest.trim_end_matches('}'));
    inner
        .split(',')
        .filter_map(|kv| Some(kv.split_once('=')?.1.trim_matches('"')))
        .collect::<Vec<_>>()
        .join("/")
}

/// User `user`'s event of round `round`, as clerk-sync publishes it.
fn event(run: &str, user: usize, round: usize) -> anyhow::Result<EventMessage> {
    let time = 1_732_464_000_000 + round as i64 * 1000;
    let body = clerk_user_body(user, round, time);
    Ok(events::normalize(
        &format!("msg_store_{run}_{user}_{round}"),
        &body,
    )?)
}

/// Fills `topic` with `mix` events for each of `users` users.
async fn fill(
    servers: &Servers,
    topic: &str,
    users: usize,
    mix: usize,
    bursts: bool,
) -> anyhow::Result<()> {
    let producer = servers.producer()?;
    let started = Instant::now();
    let n = users * mix;
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        let (user, round) = if bursts {
            (i / mix, i % mix)
        } else {
            (i % users, i / users)
        };
        let m = event(&servers.run, user, round)?;
        let producer = producer.clone();
        let topic = topic.to_string();
        pending.push(async move {
            producer
                .send(
                    rdkafka::producer::FutureRecord::to(&topic)
                        .key(&m.subject_id)
                        .payload(&m.to_json()),
                    Duration::from_secs(60),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        });
        // A bounded number in flight; a user's events stay in order (one partition, an
        // idempotent producer).
        if pending.len() >= 1000 {
            pending.next().await.transpose()?;
        }
    }
    while let Some(sent) = pending.next().await {
        sent?;
    }
    eprintln!(
        "filled {topic}: {n} events for {users} users in {:.1?}",
        started.elapsed()
    );
    Ok(())
}

/// Every user's document holds its newest event.
async fn check(db: &mongodb::Database, users: usize, mix: usize) -> anyhow::Result<()> {
    let newest = db
        .collection::<Document>("users")
        .count_documents(doc! {"firstName": format!("First{}", mix - 1)})
        .await? as usize;
    anyhow::ensure!(
        newest == users,
        "{}: {newest} of {users} users hold their newest event",
        db.name()
    );
    Ok(())
}

/// The baseline: one unordered `update` of upserts by `clerkId` per batch, offsets
/// committed after it. Returns the time from its first message to its last write, and the
/// commands it sent.
async fn baseline(
    servers: &Servers,
    topic: &str,
    db: &mongodb::Database,
    group: &str,
    n: usize,
    batch: usize,
) -> anyhow::Result<(Duration, usize)> {
    let users = db.collection::<Document>("users");
    users
        .create_index(
            IndexModel::builder()
                .keys(doc! {"clerkId": 1})
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await?;
    let consumer: StreamConsumer = servers
        .kafka
        .client_config()
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + LIMIT;
    let mut stream = consumer.stream().ready_chunks(batch);
    let (mut done, mut commands) = (0, 0);
    let mut first = None;
    while done < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(messages)) = tokio::time::timeout(left, stream.next()).await else {
            anyhow::bail!("the baseline finished {done} of {n} events in {LIMIT:?}");
        };
        first.get_or_insert_with(Instant::now);
        let mut updates = Vec::with_capacity(messages.len());
        let mut next: HashMap<i32, i64> = HashMap::new();
        for m in messages {
            let m = m?;
            next.insert(m.partition(), m.offset() + 1);
            let event = EventMessage::decode(m.payload().unwrap_or_default())?;
            updates.push(upsert(&event)?);
        }
        done += updates.len();
        let reply = db
            .run_command(doc! {
                "update": "users",
                "updates": updates,
                "ordered": false,
                "writeConcern": {"w": "majority", "j": true},
            })
            .await?;
        commands += 1;
        anyhow::ensure!(
            !reply.contains_key("writeErrors") && !reply.contains_key("writeConcernError"),
            "the baseline's write failed: {reply}"
        );
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            offsets.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        consumer.commit(&offsets, CommitMode::Async)?;
    }
    Ok((first.map_or(Duration::ZERO, |f| f.elapsed()), commands))
}

/// The baseline's statement: the contract's user fields, the event and its payload.
fn upsert(event: &EventMessage) -> anyhow::Result<Document> {
    let user = event.user().cloned().unwrap_or_default();
    let text = |v: Option<String>| v.map_or(Bson::Null, Bson::String);
    let date =
        |ms: Option<i64>| ms.map_or(Bson::Null, |ms| Bson::DateTime(DateTime::from_millis(ms)));
    let payload: serde_json::Value = serde_json::from_str(event.data.get())?;
    Ok(doc! {
        "q": {"clerkId": &event.subject_id},
        "u": {"$set": {
            "email": text(user.primary_email),
            "emailVerified": user.email_verified,
            "firstName": text(user.first_name),
            "lastName": text(user.last_name),
            "username": text(user.username),
            "imageUrl": text(user.image_url),
            "lastSignInAt": date(user.last_sign_in_at),
            "clerkCreatedAt": date(user.created_at),
            "clerkUpdatedAt": date(user.updated_at),
            "lastEventId": &event.event_id,
            "lastEventAt": DateTime::from_millis(event.event_time),
            "webhookPayload": bson::to_bson(&payload)?,
            "updatedAt": DateTime::now(),
        }},
        "upsert": true,
    })
}
