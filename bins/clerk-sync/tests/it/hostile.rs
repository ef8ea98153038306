//! The front door under hostile traffic: unfinished bodies, stalled heads, deep JSON.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use test_support::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_clerk-sync");

/// `unsafe_metadata` is writable from the browser; serde_json's trees stop at 128 levels.
#[tokio::test]
async fn a_thousand_levels_of_nesting_are_published_unchanged() {
    let app = spawn_app(TestEnv::new().await, &[]).await;
    let deep = format!("{}\"bottom\"{}", "[".repeat(1000), "]".repeat(1000));
    let body = String::from_utf8(fixture("user.updated"))
        .unwrap()
        .replacen(
            "\"unsafe_metadata\": {}",
            &format!("\"unsafe_metadata\": {{\"deep\": {deep}}}"),
            1,
        );
    assert!(body.contains(&deep));
    let (status, json) = app.deliver(SECRET_A, "msg_deep", body.as_bytes()).await;
    assert_eq!(status, 200, "{json}");

    let messages = read_topic(
        &app.env.brokers,
        &app.topics.users,
        1,
        Duration::from_secs(10),
    );
    assert_eq!(messages.len(), 1);
    let event = events::EventMessage::decode(messages[0].payload().unwrap()).unwrap();
    // The very bytes of `data`, as Clerk sent them.
    let data_start = body.find("\"data\": ").unwrap() + "\"data\": ".len();
    assert!(body[data_start..].starts_with(event.data.get()));
    assert!(event.data.get().contains(&deep));
    app.stop().await;
}

/// RSS of `pid` in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// Opens a connection, sends `head` and then `body_bytes` bytes (as far as the server
/// takes them within 3 s), never finishes, and returns how long after `since` the server
/// closed the connection (None: still open after `give_up`).
async fn unfinished(
    port: u16,
    head: String,
    body_bytes: usize,
    since: Instant,
    give_up: Duration,
) -> Option<Duration> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let chunk = vec![b' '; 64 * 1024];
    let send = async {
        stream.write_all(head.as_bytes()).await?;
        let mut sent = 0;
        while sent < body_bytes {
            let n = chunk.len().min(body_bytes - sent);
            stream.write_all(&chunk[..n]).await?;
            sent += n;
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), send).await;
    let mut buf = [0u8; 4096];
    let closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(give_up, closed).await.ok()
}

fn body_head(port: u16, path: &str, id: &str) -> String {
    let headers = signed(SECRET_A, id, now(), b"{}");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head + "\r\n"
}

/// 300 unfinished 1 MB bodies (with a wrong query secret, then the right one) and 50
/// half-sent heads against the real binary: memory stays bounded, every stalled
/// connection is closed within the timeouts, and a real webhook sent meanwhile is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_bodies_and_stalled_heads_neither_exhaust_memory_nor_lock_clerk_out() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
    let env = TestEnv::new().await;
    let port = free_port();
    let mut child = tokio::process::Command::new(BIN)
        .env_clear()
        .envs(vars(
            &env,
            &[
                ("PORT", &port.to_string()),
                ("WEBHOOK_QUERY_SECRET", "q-s3cret"),
                ("HEADER_TIMEOUT_MS", &HEADER_TIMEOUT.as_millis().to_string()),
                (
                    "REQUEST_TIMEOUT_MS",
                    &REQUEST_TIMEOUT.as_millis().to_string(),
                ),
                ("RUST_LOG", "warn"),
            ],
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    test_support::eventually(Duration::from_secs(30), "clerk-sync to answer", || async {
        http.get(format!("{base}/health"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    let idle_rss = rss_mib(pid);
    let body = fixture("user.created");

    for (round, path) in ["/webhook?secret=wrong", "/webhook?secret=q-s3cret"]
        .iter()
        .enumerate()
    {
        let since = Instant::now();
        let give_up = REQUEST_TIMEOUT + Duration::from_secs(10);
        let mut bodies = Vec::new();
        for i in 0..300 {
            let head = body_head(port, path, &format!("msg_flood_{round}_{i}"));
            bodies.push(tokio::spawn(unfinished(
                port, head, 1_000_000, since, give_up,
            )));
        }
        let mut heads = Vec::new();
        for i in 0..50 {
            let half = format!("POST /webhook HTTP/1.1\r\nhost: x\r\nsvix-id: msg_half_{i}\r\n");
            heads.push(tokio::spawn(unfinished(port, half, 0, since, give_up)));
        }
        // Meanwhile: memory, and a real delivery (past the 1 s after which a stalled upload
        // gives its place to a newcomer).
        let mut peak_rss = 0;
        let sampling = async {
            loop {
                peak_rss = peak_rss.max(rss_mib(pid));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let deliver = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let id = format!("msg_real_{round}");
            let response = http
                .post(format!("{base}/webhook?secret=q-s3cret"))
                .header("content-type", "application/json")
                .headers(
                    signed(SECRET_A, &id, now(), &body)
                        .into_iter()
                        .map(|(k, v)| {
                            (
                                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                v.parse().unwrap(),
                            )
                        })
                        .collect(),
                )
                .body(body.clone())
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        };
        let status = tokio::select! {
            status = deliver => status,
            () = sampling => unreachable!(),
        };
        let mut body_closed = Vec::new();
        for b in bodies {
            body_closed.push(b.await.unwrap());
        }
        let mut head_closed = Vec::new();
        for h in heads {
            head_closed.push(h.await.unwrap());
        }
        peak_rss = peak_rss.max(rss_mib(pid));
        let slowest = |closed: &[Option<Duration>]| {
            closed
                .iter()
                .map(|c| c.unwrap_or(Duration::MAX))
                .max()
                .unwrap()
        };
        let (bodies_by, heads_by) = (slowest(&body_closed), slowest(&head_closed));
        eprintln!(
            "{path}: RSS idle {idle_rss} MiB, peak {peak_rss} MiB; unfinished bodies closed within {bodies_by:?}, stalled heads within {heads_by:?}; real webhook {status}"
        );
        assert_eq!(status, 200, "{path}: the real webhook");
        assert!(peak_rss < 100, "{path}: RSS peaked at {peak_rss} MiB");
        let slack = Duration::from_secs(2);
        assert!(
            bodies_by <= REQUEST_TIMEOUT + slack,
            "{path}: bodies open {bodies_by:?}"
        );
        assert!(
            heads_by <= HEADER_TIMEOUT + slack,
            "{path}: heads open {heads_by:?}"
        );
    }

    let messages = read_topic(&env.brokers, &vars_topic(&env), 2, Duration::from_secs(10));
    let ids: Vec<String> = messages
        .iter()
        .filter_map(|m| header(m, "event-id"))
        .collect();
    assert_eq!(
        ids.len(),
        2,
        "only the two real webhooks reached Kafka: {ids:?}"
    );
    child.kill().await.unwrap();
}

fn vars_topic(env: &TestEnv) -> String {
    vars(env, &[])
        .into_iter()
        .find(|(k, _)| k == "KAFKA_TOPIC_USERS")
        .map(|(_, v)| v)
        .unwrap()
}
