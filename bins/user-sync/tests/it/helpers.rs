//! Starting user-sync (library on port 0, or the real binary) against the test broker and
//! store, producing user events, and waiting for their effect.

use std::process::Stdio;
use std::time::Duration;

use bson::{doc, Document};
use events::{EmailAddress, EventMessage, Record, UserRecord, SCHEMA_VERSION};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use test_support::TestEnv;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use user_sync::Config;

pub const BIN: &str = env!("CARGO_BIN_EXE_user-sync");

/// Names one test's topics (each with its DLQ), group and database.
pub struct Names {
    pub topic: String,
    pub dlq: String,
    pub organizations: String,
    pub organizations_dlq: String,
    pub sessions: String,
    pub sessions_dlq: String,
    pub billing: String,
    pub billing_dlq: String,
    pub group: String,
    pub database: String,
}

pub fn names(env: &TestEnv) -> Names {
    Names {
        topic: env.topic("users"),
        dlq: env.topic("users-dlq"),
        organizations: env.topic("orgs"),
        organizations_dlq: env.topic("orgs-dlq"),
        sessions: env.topic("sessions"),
        sessions_dlq: env.topic("sessions-dlq"),
        billing: env.topic("billing"),
        billing_dlq: env.topic("billing-dlq"),
        group: format!("user-sync-{}", env.id),
        database: env.database(),
    }
}

pub fn vars(env: &TestEnv, n: &Names, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = [
        ("KAFKA_BROKERS", env.brokers.as_str()),
        ("MONGODB_URI", env.mongodb_uri.as_str()),
        ("MONGODB_DATABASE", n.database.as_str()),
        ("KAFKA_TOPIC_USERS", n.topic.as_str()),
        ("KAFKA_DLQ_TOPIC", n.dlq.as_str()),
        ("KAFKA_TOPIC_ORGANIZATIONS", n.organizations.as_str()),
        (
            "KAFKA_DLQ_TOPIC_ORGANIZATIONS",
            n.organizations_dlq.as_str(),
        ),
        ("KAFKA_TOPIC_SESSIONS", n.sessions.as_str()),
        ("KAFKA_DLQ_TOPIC_SESSIONS", n.sessions_dlq.as_str()),
        ("KAFKA_TOPIC_BILLING", n.billing.as_str()),
        ("KAFKA_DLQ_TOPIC_BILLING", n.billing_dlq.as_str()),
        ("KAFKA_GROUP_ID", n.group.as_str()),
        ("KAFKA_TOPIC_PARTITIONS", "3"),
        ("KAFKA_REPLICATION_FACTOR", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    vars
}

/// user-sync running in this process (library `run_until`).
pub struct App {
    pub env: TestEnv,
    pub names: Names,
    pub health: String,
    pub db: mongodb::Database,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<user_sync::Result<()>>>,
}

pub async fn spawn_app(env: TestEnv) -> App {
    let names = names(&env);
    spawn_app_with(env, names).await
}

/// [`spawn_app`] with names chosen (and topics or indexes prepared) beforehand.
pub async fn spawn_app_with(env: TestEnv, names: Names) -> App {
    spawn_app_configured(env, names, &[]).await
}

/// [`spawn_app`] applying at most `batch_size` messages together (`None`: the default).
pub async fn spawn_app_batched(env: TestEnv, batch_size: Option<&str>) -> App {
    let names = names(&env);
    let extra: Vec<(&str, &str)> = batch_size
        .map(|b| ("SYNC_BATCH_SIZE", b))
        .into_iter()
        .collect();
    spawn_app_configured(env, names, &extra).await
}

/// Every stream `SYNC_ENTITIES` can name, billing included (off by default).
pub const ALL_STREAMS: (&str, &str) = ("SYNC_ENTITIES", "users,organizations,sessions,billing");

/// [`spawn_app_with`] with more variables.
pub async fn spawn_app_configured(env: TestEnv, names: Names, extra: &[(&str, &str)]) -> App {
    let config = Config::from_vars(vars(&env, &names, extra)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(user_sync::run_until(config, listener, async {
        let _ = rx.await;
    }));
    let db = env.mongo().await.database(&names.database);
    let app = App {
        env,
        names,
        health,
        db,
        shutdown: Some(tx),
        handle: Some(handle),
    };
    wait_ready(&app.health).await;
    app
}

impl App {
    pub async fn stop(mut self) {
        self.halt().await;
    }

    /// Stops user-sync and hands back the servers' view, for a test that goes on with
    /// user-sync down (dropping it deletes the test's topics and database).
    pub async fn stop_keeping_env(mut self) -> TestEnv {
        self.halt().await;
        self.env
    }

    async fn halt(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            // Shutdown is bounded (10 s for the batch in hand, 30 s a command): a hang here
            // is a bug, and must fail the test rather than hold CI until its limit.
            tokio::time::timeout(Duration::from_secs(90), handle)
                .await
                .expect("user-sync stopped within 90 s of its shutdown signal")
                .unwrap()
                .unwrap();
        }
    }
}

/// The real binary, its output in a log file.
pub struct Process {
    pub child: tokio::process::Child,
    pub health: String,
    pub log: std::path::PathBuf,
}

impl Drop for Process {
    /// A failing test shows what the process said last: an outage test that times out
    /// is otherwise a mystery.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- last lines of {} ---\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

pub use test_support::free_port;

pub async fn spawn_process(env: &TestEnv, n: &Names, port: u16) -> Process {
    spawn_process_with(env, n, port, &[]).await
}

/// [`spawn_process`] with more variables (later ones win).
pub async fn spawn_process_with(
    env: &TestEnv,
    n: &Names,
    port: u16,
    extra: &[(&str, &str)],
) -> Process {
    let port = port.to_string();
    let path = std::env::temp_dir().join(format!("user-sync-{}.log", n.group));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let child = tokio::process::Command::new(BIN)
        .env_clear()
        .envs(vars(
            env,
            n,
            &[
                &[("HEALTH_PORT", port.as_str()), ("LOG_FORMAT", "json")],
                extra,
            ]
            .concat(),
        ))
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let health = format!("http://127.0.0.1:{port}");
    let process = Process {
        child,
        health,
        log: path,
    };
    wait_ready(&process.health).await;
    process
}

/// `user-sync healthcheck` run against `process` (what a container health check runs).
pub async fn healthcheck(process: &Process) -> std::process::Output {
    let port = process.health.rsplit(':').next().unwrap().to_string();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .arg("healthcheck")
            .env_clear()
            .env("HEALTH_PORT", port)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

pub async fn ready_status(health: &str) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    client
        .get(format!("{health}/ready"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

pub async fn wait_ready(health: &str) {
    test_support::eventually(Duration::from_secs(60), "user-sync /ready", || async {
        (ready_status(health).await == Some(200)).then_some(())
    })
    .await;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Created,
    Updated,
    Deleted,
}

/// A Clerk webhook of any type sent at `timestamp` (ms), normalized as clerk-sync does
/// (event time from `data.updated_at`, else `timestamp`).
pub fn clerk_event(
    event_id: &str,
    event_type: &str,
    data: serde_json::Value,
    timestamp: i64,
) -> EventMessage {
    let body = json!({"type": event_type, "object": "event", "data": data, "timestamp": timestamp});
    events::normalize(event_id, body.to_string().as_bytes()).unwrap()
}

/// The topic clerk-sync routes an event to.
pub fn topic_of<'a>(n: &'a Names, m: &EventMessage) -> &'a str {
    match events::Family::of(&m.event_type) {
        events::Family::Organizations => &n.organizations,
        events::Family::Sessions => &n.sessions,
        events::Family::Billing => &n.billing,
        _ => &n.topic,
    }
}

/// A normalized user event, as clerk-sync would publish it.
pub fn user_event(
    kind: Kind,
    user: &str,
    event_id: &str,
    time: i64,
    first_name: &str,
) -> EventMessage {
    let (event_type, record, data) = match kind {
        Kind::Deleted => (
            "user.deleted",
            UserRecord {
                id: user.into(),
                deleted: true,
                ..UserRecord::default()
            },
            json!({"id": user, "object": "user", "deleted": true}),
        ),
        Kind::Created | Kind::Updated => {
            let email = format!("{}@example.com", first_name.to_lowercase());
            (
                if kind == Kind::Created {
                    "user.created"
                } else {
                    "user.updated"
                },
                UserRecord {
                    id: user.into(),
                    primary_email: Some(email.clone()),
                    email_verified: true,
                    email_addresses: vec![EmailAddress {
                        id: "idn_1".into(),
                        email: email.clone(),
                        verified: true,
                    }],
                    first_name: Some(first_name.into()),
                    last_name: Some("Lovelace".into()),
                    username: None,
                    image_url: Some(format!("https://img.example/{first_name}")),
                    last_sign_in_at: Some(time - 1000),
                    created_at: Some(1_732_464_000_000),
                    updated_at: Some(time),
                    external_id: None,
                    deleted: false,
                },
                json!({"id": user, "object": "user", "first_name": first_name, "updated_at": time,
                       "email_addresses": [{"id": "idn_1", "email_address": email}]}),
            )
        }
    };
    EventMessage {
        schema_version: SCHEMA_VERSION,
        event_id: event_id.into(),
        event_type: event_type.into(),
        event_time: time,
        instance_id: Some("ins_test".into()),
        subject_id: user.into(),
        record: Record::User(record),
        data: serde_json::value::to_raw_value(&data).unwrap(),
        origin: events::Origin::Webhook,
        event_attributes: None,
    }
}

pub fn producer(env: &TestEnv) -> FutureProducer {
    env.kafka()
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap()
}

pub async fn produce(p: &FutureProducer, topic: &str, m: &EventMessage) {
    produce_raw(p, topic, &m.subject_id, &m.to_json(), Some(&m.event_id)).await;
}

pub async fn produce_raw(
    p: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    event_id: Option<&str>,
) {
    let mut headers = OwnedHeaders::new();
    if let Some(id) = event_id {
        headers = headers.insert(Header {
            key: "event-id",
            value: Some(id),
        });
    }
    p.send(
        FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers),
        Duration::from_secs(60),
    )
    .await
    .map_err(|(e, _)| e)
    .unwrap();
}

/// Waits until `webhook_events` holds `n` records.
pub async fn wait_records(db: &mongodb::Database, n: u64, timeout: Duration) {
    let events = db.collection::<Document>("webhook_events");
    test_support::eventually(timeout, &format!("{n} webhook_events records"), || async {
        let count = events.count_documents(doc! {}).await.ok()?;
        assert!(count <= n, "more records ({count}) than events ({n})");
        (count == n).then_some(())
    })
    .await;
}

pub async fn user_doc(db: &mongodb::Database, user: &str) -> Document {
    db.collection::<Document>("users")
        .find_one(doc! {"clerkId": user})
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no document for {user}"))
}

pub async fn record(db: &mongodb::Database, event_id: &str) -> Document {
    db.collection::<Document>("webhook_events")
        .find_one(doc! {"_id": event_id})
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no webhook_events record for {event_id}"))
}

/// Sets one field of a message's Clerk `data`.
pub fn set_data_field(message: &mut EventMessage, key: &str, value: serde_json::Value) {
    let mut data: serde_json::Value = serde_json::from_str(message.data.get()).unwrap();
    data[key] = value;
    message.data = serde_json::value::to_raw_value(&data).unwrap();
}

/// The first `n` messages of `topic`, read by a group of its own.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    n: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let c: StreamConsumer = common::kafka::KafkaSettings::plaintext(brokers)
        .client_config()
        .set("group.id", format!("reader-{topic}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
            .await
            .expect("a message")
            .unwrap();
        out.push(m.detach());
    }
    out
}

/// The store of a test's database, its collections and indexes ready, for tests that call
/// the library without running the consumer.
pub async fn store(env: &TestEnv, n: &Names) -> user_sync::Store {
    let config = Config::from_vars(vars(env, n, &[])).unwrap();
    let store = user_sync::Store::connect(&config.mongo).await.unwrap();
    store.ensure_indexes(&user_sync::Entity::ALL).await.unwrap();
    store
}

/// An application's unique index on `email` (`email_1`), made before user-sync starts: the
/// database then refuses a second user with the same address. Partial, as user-sync asks
/// (it writes users without an email), where the server can make one; FerretDB v1 can't,
/// and there user-sync starts anyway.
pub async fn unique_email_index(env: &TestEnv, n: &Names) {
    let users = env
        .mongo()
        .await
        .database(&n.database)
        .collection::<Document>("users");
    let index = |partial: bool| {
        let options = IndexOptions::builder()
            .unique(true)
            .name("email_1".to_string())
            .partial_filter_expression(partial.then(|| doc! {"email": {"$type": "string"}}))
            .build();
        IndexModel::builder()
            .keys(doc! {"email": 1})
            .options(options)
            .build()
    };
    if users.create_index(index(true)).await.is_err() {
        users.create_index(index(false)).await.unwrap();
    }
}

/// `user-sync <args>` with the test's variables; stdout, after checking it succeeded.
pub async fn user_sync(vars: &[(String, String)], args: &[&str]) -> String {
    let mut command = std::process::Command::new(BIN);
    command
        .env_clear()
        .envs(vars.iter().cloned())
        .env("LOG_FORMAT", "json")
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "user-sync {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// clerk-sync's binary, built beside user-sync's (`cargo build --workspace`, as
/// scripts/test.sh does).
pub fn clerk_sync_bin() -> std::path::PathBuf {
    let path = std::path::PathBuf::from(BIN).with_file_name("clerk-sync");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p clerk-sync` (scripts/test.sh builds the workspace)",
        path.display()
    );
    path
}

/// clerk-sync's binary, publishing to the test's topics; stopped when dropped.
pub struct ClerkSync {
    _child: tokio::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Its log (stdout: the JSON lines).
    pub log: std::path::PathBuf,
    secret: String,
}

impl ClerkSync {
    /// Starts it with the webhook secret `secret` and `extra` variables, and waits until
    /// it is ready. Its log is in the temporary directory, named for the test's group.
    pub async fn spawn(env: &TestEnv, names: &Names, secret: &str, extra: &[(&str, &str)]) -> Self {
        let port = free_port().to_string();
        let log = std::env::temp_dir().join(format!("clerk-sync-{}.log", names.group));
        let other = env.topic("other");
        let child = tokio::process::Command::new(clerk_sync_bin())
            .env_clear()
            .envs([
                ("CLERK_WEBHOOK_SECRET", secret),
                ("KAFKA_BROKERS", env.brokers.as_str()),
                ("KAFKA_TOPIC_USERS", names.topic.as_str()),
                ("KAFKA_TOPIC_ORGANIZATIONS", names.organizations.as_str()),
                ("KAFKA_TOPIC_SESSIONS", names.sessions.as_str()),
                ("KAFKA_TOPIC_BILLING", names.billing.as_str()),
                ("KAFKA_TOPIC_OTHER", other.as_str()),
                ("KAFKA_TOPIC_PARTITIONS", "3"),
                ("KAFKA_REPLICATION_FACTOR", "1"),
                ("PORT", port.as_str()),
            ])
            .envs(extra.iter().copied())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        test_support::eventually(Duration::from_secs(60), "clerk-sync /ready", || async {
            let r = http.get(format!("{base}/ready")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        ClerkSync {
            _child: child,
            base,
            log,
            secret: secret.to_string(),
        }
    }

    /// POSTs `body` to `/webhook` as Svix would (`svix_id`, signed now), and returns the
    /// answer's status.
    pub async fn post(&self, svix_id: &str, body: String) -> reqwest::StatusCode {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let signature = svix::webhooks::Webhook::new(&self.secret)
            .unwrap()
            .sign(svix_id, now, body.as_bytes())
            .unwrap();
        reqwest::Client::new()
            .post(format!("{}/webhook", self.base))
            .header("svix-id", svix_id)
            .header("svix-timestamp", now.to_string())
            .header("svix-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    }
}
