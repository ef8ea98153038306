//! What the integration tests of every crate share.
//!
//! - The real servers: [`servers`] uses `KAFKA_BROKERS` and `MONGODB_URI` when the
//!   environment sets them (the test command exports them after `scripts/services.sh up`),
//!   and otherwise runs `scripts/services.sh up` itself. With the variables set it never
//!   starts anything, so a server that is down makes the tests fail instead of being
//!   quietly restarted.
//! - Isolation: each [`TestEnv`] names its own topics and database, and deletes them when
//!   dropped.
//! - Outages: [`TestEnv::exclusive`] waits until no other test of the binary holds the
//!   servers, and may then [`stop`](TestEnv::stop) and [`start`](TestEnv::start) one
//!   mid-test; whatever it stopped is started again when it is dropped.

pub mod bench;
pub mod fake_clerk;
pub mod markdown;
pub mod monitoring;
pub mod otel_collector;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::kafka::KafkaSettings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Where the servers are.
#[derive(Debug, Clone)]
pub struct Servers {
    /// `KAFKA_BROKERS`
    pub kafka_brokers: String,
    /// `MONGODB_URI`
    pub mongodb_uri: String,
}

/// A server that `scripts/services.sh` manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The Kafka broker.
    Kafka,
    /// The MongoDB-wire server.
    Mongo,
}

impl Component {
    fn as_str(self) -> &'static str {
        match self {
            Component::Kafka => "kafka",
            Component::Mongo => "mongo",
        }
    }
}

/// The repository's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The servers of this test run, started by `scripts/services.sh up` if the environment
/// doesn't name them.
pub fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let (Some(kafka_brokers), Some(mongodb_uri)) =
            (from_env("KAFKA_BROKERS"), from_env("MONGODB_URI"))
        {
            return Servers {
                kafka_brokers,
                mongodb_uri,
            };
        }
        let exports = services(&["up"]);
        let value = |name: &str| {
            exports
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("scripts/services.sh up printed no {name}: {exports}"))
                .to_string()
        };
        Servers {
            kafka_brokers: value("KAFKA_BROKERS"),
            mongodb_uri: value("MONGODB_URI"),
        }
    })
}

/// The test broker's SASL_SSL listener, like a managed cluster's (SCRAM-SHA-512 over TLS
/// with a private CA): `TEST_KAFKA_SASL_*` from the environment, or from
/// `scripts/services.sh up kafka`, which prints them.
#[derive(Debug, Clone)]
pub struct SaslListener {
    /// Its bootstrap address.
    pub brokers: String,
    /// The SCRAM user.
    pub username: String,
    /// Its password.
    pub password: String,
    /// The CA that signed the broker's certificate (PEM file).
    pub ca_file: PathBuf,
    /// Another CA, which didn't (PEM file).
    pub wrong_ca_file: PathBuf,
}

impl SaslListener {
    /// The contract's variables that point a service at this listener: its brokers,
    /// SCRAM-SHA-512 as this user with `password`, and `ca_cert` (PEM text or a file path)
    /// as `KAFKA_CA_CERT`.
    pub fn settings<'a>(
        &'a self,
        password: &'a str,
        ca_cert: &'a str,
    ) -> [(&'static str, &'a str); 5] {
        [
            ("KAFKA_BROKERS", &self.brokers),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("KAFKA_USERNAME", &self.username),
            ("KAFKA_PASSWORD", password),
            ("KAFKA_CA_CERT", ca_cert),
        ]
    }
}

/// See [`SaslListener`].
pub fn sasl_listener() -> SaslListener {
    let names = [
        "TEST_KAFKA_SASL_BROKERS",
        "TEST_KAFKA_SASL_USERNAME",
        "TEST_KAFKA_SASL_PASSWORD",
        "TEST_KAFKA_SASL_CA_FILE",
        "TEST_KAFKA_WRONG_CA_FILE",
    ];
    let from_env: Vec<Option<String>> = names
        .iter()
        .map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        .collect();
    let values: Vec<String> = if from_env.iter().all(Option::is_some) {
        from_env.into_iter().flatten().collect()
    } else {
        let exports = services(&["up", "kafka"]);
        names
            .iter()
            .map(|name| {
                exports
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                    .unwrap_or_else(|| panic!("scripts/services.sh up printed no {name}"))
                    .to_string()
            })
            .collect()
    };
    SaslListener {
        brokers: values[0].clone(),
        username: values[1].clone(),
        password: values[2].clone(),
        ca_file: PathBuf::from(&values[3]),
        wrong_ca_file: PathBuf::from(&values[4]),
    }
}

/// Runs `scripts/services.sh <args>` and returns its stdout; panics when it fails.
pub fn services(args: &[&str]) -> String {
    let script = workspace_root().join("scripts/services.sh");
    let output = Command::new("bash")
        .arg(&script)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "scripts/services.sh {} failed: {}",
        args.join(" "),
        output.status
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

static SERVERS_LOCK: RwLock<()> = RwLock::const_new(());

enum Hold {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// One test's view of the servers: its own names, and cleanup when dropped.
pub struct TestEnv {
    /// Bootstrap servers.
    pub brokers: String,
    /// MongoDB connection string (no database in it).
    pub mongodb_uri: String,
    /// A suffix unique to this test, used in every name it makes.
    pub id: String,
    topics: Mutex<Vec<String>>,
    databases: Mutex<Vec<String>>,
    stopped: Mutex<Vec<Component>>,
    hold: Hold,
}

impl TestEnv {
    /// For a test that only uses the servers: runs beside other such tests.
    pub async fn new() -> TestEnv {
        let hold = Hold::Shared(SERVERS_LOCK.read().await);
        Self::with(hold)
    }

    /// For a test that stops servers: waits until it is the only one using them.
    pub async fn exclusive() -> TestEnv {
        let hold = Hold::Exclusive(SERVERS_LOCK.write().await);
        Self::with(hold)
    }

    fn with(hold: Hold) -> TestEnv {
        let servers = servers();
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        TestEnv {
            brokers: servers.kafka_brokers.clone(),
            mongodb_uri: servers.mongodb_uri.clone(),
            id,
            topics: Mutex::new(Vec::new()),
            databases: Mutex::new(Vec::new()),
            stopped: Mutex::new(Vec::new()),
            hold,
        }
    }

    /// A topic name for this test, deleted when the test ends. Not created.
    pub fn topic(&self, name: &str) -> String {
        let topic = format!("{name}-{}", self.id);
        lock(&self.topics).push(topic.clone());
        topic
    }

    /// A database name for this test, dropped when the test ends.
    pub fn database(&self) -> String {
        let name = format!("test_{}", self.id);
        let mut databases = lock(&self.databases);
        if !databases.contains(&name) {
            databases.push(name.clone());
        }
        name
    }

    /// Kafka settings for the test broker.
    pub fn kafka(&self) -> KafkaSettings {
        KafkaSettings::plaintext(&self.brokers)
    }

    /// Creates a topic (named by [`topic`](Self::topic)) with `partitions` partitions.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> String {
        let topic = self.topic(name);
        let admin: AdminClient<DefaultClientContext> =
            self.kafka().client_config().create().expect("admin client");
        let result = admin
            .create_topics(
                [&NewTopic::new(
                    &topic,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
            )
            .await
            .expect("create topic");
        assert!(result[0].is_ok(), "create {topic}: {:?}", result[0]);
        topic
    }

    /// A MongoDB client for the test server.
    pub async fn mongo(&self) -> mongodb::Client {
        let mut options = mongodb::options::ClientOptions::parse(&self.mongodb_uri)
            .await
            .expect("MONGODB_URI");
        options.server_selection_timeout = Some(Duration::from_secs(10));
        mongodb::Client::with_options(options).expect("mongodb client")
    }

    /// Stops a server mid-test (only in an [`exclusive`](Self::exclusive) test).
    pub async fn stop(&self, component: Component) {
        assert!(
            matches!(self.hold, Hold::Exclusive(_)),
            "stopping a server needs TestEnv::exclusive()"
        );
        lock(&self.stopped).push(component);
        let c = component.as_str();
        tokio::task::spawn_blocking(move || services(&["down", c]))
            .await
            .expect("services.sh down");
    }

    /// Starts a server again and waits until it answers.
    pub async fn start(&self, component: Component) {
        let c = component.as_str();
        tokio::task::spawn_blocking(move || services(&["up", c]))
            .await
            .expect("services.sh up");
        lock(&self.stopped).retain(|s| *s != component);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for component in lock(&self.stopped).drain(..) {
            services(&["up", component.as_str()]);
        }
        let topics = std::mem::take(&mut *lock(&self.topics));
        let databases = std::mem::take(&mut *lock(&self.databases));
        if topics.is_empty() && databases.is_empty() {
            return;
        }
        let brokers = self.brokers.clone();
        let uri = self.mongodb_uri.clone();
        // Drop can't await, and may run inside a runtime: clean up on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if !topics.is_empty() {
                    if let Ok(admin) = KafkaSettings::plaintext(brokers)
                        .client_config()
                        .create::<AdminClient<DefaultClientContext>>()
                    {
                        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                        let options =
                            AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
                        let _ = admin.delete_topics(&names, &options).await;
                    }
                }
                if let Ok(client) = mongodb::Client::with_uri_str(&uri).await {
                    for db in databases {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(5),
                            client.database(&db).drop(),
                        )
                        .await;
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Runs `command` until it exits, for at most `limit` (past it the process is killed and
/// the test fails): its exit code, and its stdout then stderr as text.
pub async fn run_to_exit(
    mut command: tokio::process::Command,
    limit: Duration,
) -> (Option<i32>, String) {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the command starts");
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("still running after {limit:?}"))
        .expect("its output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// Whether the MongoDB-wire server is FerretDB (its `buildInfo` says so), for tests that
/// pin a documented difference from MongoDB.
pub async fn is_ferretdb(client: &mongodb::Client) -> bool {
    let info = client
        .database("admin")
        .run_command(mongodb::bson::doc! {"buildInfo": 1})
        .await
        .expect("buildInfo");
    info.contains_key("ferretdbVersion")
}

/// A TCP port nothing listens on right now, for a process a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // A check is bounded too: a server that never answers (a reply can hang where a
        // connection can't) must fail the test, not hold CI until its limit.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let checked = tokio::time::timeout(left.max(Duration::from_secs(5)), check()).await;
        let Ok(checked) = checked else {
            panic!("timed out after {timeout:?} waiting for {what}: a check did not return");
        };
        if let Some(value) = checked {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kafka ACLs a test added (with `scripts/services.sh kafka-acls`), removed when dropped, so
/// a failing test leaves the broker as it found it.
pub struct Acls {
    added: Vec<Vec<String>>,
}

impl Acls {
    /// Adds one ACL: `args` are kafka-acls arguments without `--add`, such as
    /// `["--deny-principal", "User:ANONYMOUS", "--operation", "Write", "--topic", "t"]`.
    pub async fn add(args: &[&str]) -> Acls {
        let mut acls = Acls { added: Vec::new() };
        acls.and(args).await;
        acls
    }

    /// Adds another ACL.
    pub async fn and(&mut self, args: &[&str]) -> &mut Acls {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut call = vec!["kafka-acls".to_string(), "--add".into()];
        call.extend(args.iter().cloned());
        tokio::task::spawn_blocking(move || {
            services(&call.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .expect("kafka-acls --add");
        self.added.push(args);
        self
    }
}

impl Drop for Acls {
    fn drop(&mut self) {
        for args in self.added.drain(..).rev() {
            let mut call = vec!["kafka-acls", "--remove", "--force"];
            call.extend(args.iter().map(String::as_str));
            // Runs on a thread of its own: Drop may run inside a runtime.
            let call: Vec<String> = call.iter().map(|s| s.to_string()).collect();
            let _ = std::thread::spawn(move || {
                services(&call.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .join();
        }
    }
}
