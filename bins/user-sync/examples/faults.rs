//! A fault run (see scripts/fault-run.sh): a shuffled stream of user events with
//! duplicates, through the user-sync binary, while it is SIGKILLed and restarted, the store
//! is paused (SIGSTOP, `FAULT_STORE_PID`) and resumed, and a second consumer joins the
//! group and leaves it. Then it waits until every document is what the events imply, and
//! prints how many are missing or wrong, and how long after the last fault it converged.
//!
//! What the events imply is computed here from the contract's rules, not from user-sync's
//! plan: per user, the newest event's id; the profile of the newest event that isn't a
//! deletion; deleted if any event is a deletion.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use events::{EventMessage, Record, UserRecord, SCHEMA_VERSION};
use futures::TryStreamExt;
use rand::seq::SliceRandom;
use rand::Rng;
use rdkafka::admin::AdminOptions;
use support::Servers;
use tokio::process::{Child, Command};

mod support;

/// Events per user: created, two updates, and for one user in five a deletion.
const ROUNDS: usize = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let users = support::count_arg(300)?;
    let servers = Servers::from_env()?;
    let (brokers, uri) = (&servers.brokers, &servers.uri);
    let bin = std::env::var("USER_SYNC_BIN").unwrap_or("target/release/user-sync".into());
    let store_pid = std::env::var("FAULT_STORE_PID").ok();
    let run = &servers.run;
    let topic = format!("faults-users-{run}");
    let database = format!("faults_{run}");
    let admin = servers.topic(&topic, 6).await?;

    // The stream: every event, shuffled (one user's events too), 10% sent twice.
    let mut stream: Vec<EventMessage> = (0..users)
        .flat_map(|u| {
            let deleted = u % 5 == 0;
            (0..ROUNDS + usize::from(deleted)).map(move |r| event(u, r, deleted && r == ROUNDS))
        })
        .collect();
    let expected = implied(&stream);
    let mut rng = rand::rng();
    let twice: Vec<EventMessage> = stream
        .iter()
        .filter(|_| rng.random_bool(0.1))
        .cloned()
        .collect();
    stream.extend(twice);
    stream.shuffle(&mut rng);
    support::send_all(&servers.producer()?, &topic, &stream).await?;
    println!(
        "{} events for {users} users ({} distinct), shuffled, in {topic}",
        stream.len(),
        expected.values().map(|e| e.events).sum::<usize>()
    );

    let vars = [
        ("KAFKA_BROKERS", brokers.as_str()),
        ("MONGODB_URI", uri.as_str()),
        ("MONGODB_DATABASE", database.as_str()),
        ("KAFKA_TOPIC_USERS", topic.as_str()),
        ("SYNC_ENTITIES", "users"),
        ("KAFKA_GROUP_ID", &format!("faults-{run}")),
        ("KAFKA_REPLICATION_FACTOR", "1"),
        ("RUST_LOG", "warn"),
    ];
    let spawn = |port: u16| -> anyhow::Result<Child> {
        let log = std::fs::File::create(format!("/tmp/fault-run-{run}-{port}.log"))?;
        Ok(Command::new(&bin)
            .env_clear()
            .envs(vars)
            .env("HEALTH_PORT", port.to_string())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()?)
    };
    let client = mongodb::Client::with_uri_str(uri).await?;
    let db = client.database(&database);
    let started = Instant::now();
    let say = |what: &str| println!("{:>6.1} s  {what}", started.elapsed().as_secs_f64());

    let mut a = spawn(18801)?;
    say("consumer A started");
    tokio::time::sleep(Duration::from_secs(20)).await;
    a.start_kill()?;
    a.wait().await?;
    say("consumer A SIGKILLed");
    let mut a = spawn(18801)?;
    say("consumer A restarted");
    tokio::time::sleep(Duration::from_secs(20)).await;
    if let Some(pid) = &store_pid {
        signal("STOP", pid)?;
        say("store paused (SIGSTOP)");
        tokio::time::sleep(Duration::from_secs(10)).await;
        signal("CONT", pid)?;
        say("store resumed");
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut b = spawn(18802)?;
    say("consumer B joined");
    tokio::time::sleep(Duration::from_secs(20)).await;
    signal("TERM", &b.id().unwrap_or_default().to_string())?;
    b.wait().await?;
    say("consumer B left (SIGTERM)");
    let last_fault = Instant::now();

    let deadline = last_fault + Duration::from_secs(900);
    let (missing, wrong) = loop {
        let (missing, wrong) = compare(&db, &expected).await?;
        if missing.is_empty() && wrong.is_empty() || Instant::now() > deadline {
            break (missing, wrong);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    say(&format!(
        "{} missing, {} wrong, {:.1} s after the last fault",
        missing.len(),
        wrong.len(),
        last_fault.elapsed().as_secs_f64()
    ));
    for (id, why) in wrong.iter().take(10) {
        println!("  wrong: {id}: {why}");
    }
    for id in missing.iter().take(10) {
        println!("  missing: {id}");
    }
    signal("TERM", &a.id().unwrap_or_default().to_string())?;
    a.wait().await?;
    if missing.is_empty() && wrong.is_empty() {
        db.drop().await?;
        admin.delete_topics(&[&topic], &AdminOptions::new()).await?;
        Ok(())
    } else {
        anyhow::bail!("not converged (database {database} kept)")
    }
}

fn signal(name: &str, pid: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), pid])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{name} {pid}");
    Ok(())
}

/// What a user's document must say once every event is in.
#[derive(Debug)]
struct Expected {
    last_event_id: String,
    first_name: String,
    deleted: bool,
    events: usize,
}

/// Per user, from the contract's rules: the newest event by (time, id) is the pointer;
/// the newest non-deleting event is the profile; any deletion deletes.
fn implied(events: &[EventMessage]) -> HashMap<String, Expected> {
    let mut by_user: HashMap<String, Vec<&EventMessage>> = HashMap::new();
    for m in events {
        by_user.entry(m.subject_id.clone()).or_default().push(m);
    }
    by_user
        .into_iter()
        .map(|(id, mut events)| {
            events.sort_by(|a, b| (a.event_time, &a.event_id).cmp(&(b.event_time, &b.event_id)));
            let newest = events.last().expect("an event");
            let profile = events
                .iter()
                .rev()
                .find(|m| m.event_type != "user.deleted")
                .expect("a profile event");
            let first_name = match &profile.record {
                Record::User(u) => u.first_name.clone().unwrap_or_default(),
                _ => String::new(),
            };
            let expected = Expected {
                last_event_id: newest.event_id.clone(),
                first_name,
                deleted: events.iter().any(|m| m.event_type == "user.deleted"),
                events: events.len(),
            };
            (id, expected)
        })
        .collect()
}

/// The users missing, and those whose document differs (with how).
async fn compare(
    db: &mongodb::Database,
    expected: &HashMap<String, Expected>,
) -> anyhow::Result<(Vec<String>, Vec<(String, String)>)> {
    let docs: HashMap<String, Document> = db
        .collection::<Document>("users")
        .find(doc! {})
        .await?
        .try_collect::<Vec<Document>>()
        .await?
        .into_iter()
        .filter_map(|d| Some((d.get_str("clerkId").ok()?.to_string(), d)))
        .collect();
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    for (id, e) in expected {
        let Some(d) = docs.get(id) else {
            missing.push(id.clone());
            continue;
        };
        let got = (
            d.get_str("lastEventId").unwrap_or_default(),
            d.get_str("firstName").unwrap_or_default(),
            d.get_bool("isDeleted").unwrap_or_default(),
        );
        if got != (e.last_event_id.as_str(), e.first_name.as_str(), e.deleted) {
            wrong.push((id.clone(), format!("{got:?}, expected {e:?}")));
        }
    }
    missing.sort();
    wrong.sort();
    Ok((missing, wrong))
}

/// User `user`'s event of round `round` (0: created), or its deletion.
fn event(user: usize, round: usize, deletion: bool) -> EventMessage {
    let id = format!("user_fault_{user}");
    let time = 1_732_464_000_000 + round as i64 * 1000;
    let name = format!("Name{round}");
    let (event_type, record, data) = if deletion {
        (
            "user.deleted",
            Record::User(UserRecord {
                id: id.clone(),
                deleted: true,
                ..UserRecord::default()
            }),
            serde_json::json!({"id": id, "object": "user", "deleted": true}),
        )
    } else {
        (
            if round == 0 {
                "user.created"
            } else {
                "user.updated"
            },
            Record::User(UserRecord {
                id: id.clone(),
                primary_email: Some(format!("{id}@example.com")),
                email_verified: true,
                first_name: Some(name.clone()),
                updated_at: Some(time),
                ..UserRecord::default()
            }),
            serde_json::json!({"id": id, "first_name": name, "updated_at": time}),
        )
    };
    EventMessage {
        schema_version: SCHEMA_VERSION,
        event_id: format!("msg_fault_{user}_{round}"),
        event_type: event_type.into(),
        event_time: time,
        instance_id: None,
        subject_id: id,
        record,
        data: serde_json::value::to_raw_value(&data).expect("JSON"),
        origin: events::Origin::Webhook,
        event_attributes: None,
    }
}
