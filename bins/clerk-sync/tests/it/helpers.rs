//! Starting clerk-sync on port 0 against the test broker, signing, and reading topics back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use clerk_sync::Config;
use clerk_sync::Topics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};
use test_support::TestEnv;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const SECRET_B: &str = "whsec_dGVzdC1zZWNyZXQtbnVtYmVyLXR3bw==";
pub const USER_ID: &str = "user_2pZ6mQ3xYfTgHk8LwNcVbR1aS4d";

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../crates/events/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A signed delivery: the headers Svix would send.
pub fn signed(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
    let s = clerk_sync::sign::sign(secret, id, timestamp, body).unwrap();
    vec![
        ("svix-id".into(), s.id),
        ("svix-timestamp".into(), s.timestamp.to_string()),
        ("svix-signature".into(), s.signature),
    ]
}

pub struct App {
    pub addr: SocketAddr,
    pub topics: Topics,
    pub env: TestEnv,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<clerk_sync::Result<()>>>,
}

/// The per-test topic names and broker, plus `extra` variables.
pub fn vars(env: &TestEnv, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars: HashMap<String, String> = [
        ("CLERK_WEBHOOK_SECRET", SECRET_A.to_string()),
        ("KAFKA_BROKERS", env.brokers.clone()),
        ("KAFKA_TOPIC_USERS", env.topic("users")),
        ("KAFKA_TOPIC_ORGANIZATIONS", env.topic("orgs")),
        ("KAFKA_TOPIC_SESSIONS", env.topic("sessions")),
        ("KAFKA_TOPIC_BILLING", env.topic("billing")),
        ("KAFKA_TOPIC_OTHER", env.topic("other")),
        ("KAFKA_TOPIC_PARTITIONS", "3".to_string()),
        ("KAFKA_REPLICATION_FACTOR", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    vars.into_iter().collect()
}

/// Starts the real app (library `run_until`) on 127.0.0.1:0.
pub async fn spawn_app(env: TestEnv, extra: &[(&str, &str)]) -> App {
    let config = Config::from_vars(vars(&env, extra)).unwrap();
    let topics = config.topics.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(clerk_sync::run_until(config, listener, async {
        let _ = rx.await;
    }));
    let app = App {
        addr,
        topics,
        env,
        http: reqwest::Client::new(),
        shutdown: Some(tx),
        handle: Some(handle),
    };
    // Start-up creates topics before listening; wait until it answers.
    test_support::eventually(
        Duration::from_secs(30),
        "clerk-sync to answer /health",
        || async {
            app.http
                .get(app.url("/health"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        },
    )
    .await;
    app
}

impl App {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` to /webhook with `headers`; returns status and JSON body.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let json = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// Signs `body` with `secret` under `id` and delivers it.
    pub async fn deliver(&self, secret: &str, id: &str, body: &[u8]) -> (u16, serde_json::Value) {
        self.post("/webhook", &signed(secret, id, now(), body), body.to_vec())
            .await
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }
}

/// Every message currently in `topic` (all partitions, from the beginning).
pub fn read_topic(
    brokers: &str,
    topic: &str,
    expect: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = test_support_config(brokers).create().unwrap();
    let deadline = std::time::Instant::now() + timeout;
    // A metadata request can time out on a loaded machine (a hostile test beside this
    // one): asked again until the caller's deadline.
    let metadata = loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
            Ok(metadata) => break metadata,
            Err(e) if std::time::Instant::now() >= deadline => {
                panic!("metadata of {topic}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let partitions = metadata.topics()[0].partitions().len();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None if out.len() >= expect => break,
            None => {}
        }
    }
    out
}

fn test_support_config(brokers: &str) -> rdkafka::ClientConfig {
    let mut c = common::kafka::KafkaSettings::plaintext(brokers).client_config();
    c.set("group.id", "clerk-sync-tests-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    c
}

/// The real binary on a free port with the test's variables plus `extra`, once it answers
/// `/health`. With `capture`, its output is piped (read it, or a full pipe blocks its
/// logging); otherwise discarded. Returns the child and its base URL.
pub async fn spawn_binary(
    env: &TestEnv,
    extra: &[(&str, &str)],
    capture: bool,
) -> (tokio::process::Child, String) {
    let output = || {
        if capture {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        }
    };
    let port = test_support::free_port().to_string();
    let mut extra = extra.to_vec();
    extra.push(("PORT", &port));
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clerk-sync"))
        .env_clear()
        .envs(vars(env, &extra))
        .stdout(output())
        .stderr(output())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    test_support::eventually(
        Duration::from_secs(30),
        "the binary to answer /health",
        || async {
            http.get(format!("{base}/health"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        },
    )
    .await;
    (child, base)
}

/// The test's users topic, as [`vars`] names it.
pub fn users_topic(env: &TestEnv) -> String {
    vars(env, &[])
        .into_iter()
        .find(|(k, _)| k == "KAFKA_TOPIC_USERS")
        .map(|(_, v)| v)
        .unwrap()
}

/// A header's value as text.
pub use common::kafka::header;
