//! The front door under hostile traffic: unfinished bodies, stalled heads, deep JSON.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use test_support::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

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
/// takes them within 3 s), counts itself in `sent`, never finishes, and returns how long after `since` the server
/// closed the connection (None: still open after `give_up`).
async fn unfinished(
    port: u16,
    head: String,
    body_bytes: usize,
    since: Instant,
    give_up: Duration,
    sent: Arc<AtomicUsize>,
) -> Option<Duration> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await;
    let Ok(mut stream) = stream else {
        sent.fetch_add(1, Ordering::SeqCst);
        return None;
    };
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
    sent.fetch_add(1, Ordering::SeqCst);
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
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
    let env = TestEnv::new().await;
    let (mut child, base) = spawn_binary(
        &env,
        &[
            ("WEBHOOK_QUERY_SECRET", "q-s3cret"),
            ("HEADER_TIMEOUT_MS", &HEADER_TIMEOUT.as_millis().to_string()),
            (
                "REQUEST_TIMEOUT_MS",
                &REQUEST_TIMEOUT.as_millis().to_string(),
            ),
            ("RUST_LOG", "warn"),
        ],
        false,
    )
    .await;
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let pid = child.id().unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let idle_rss = rss_mib(pid);
    let body = fixture("user.created");

    for (round, path) in ["/webhook?secret=wrong", "/webhook?secret=q-s3cret"]
        .iter()
        .enumerate()
    {
        let since = Instant::now();
        let give_up = REQUEST_TIMEOUT + Duration::from_secs(10);
        let sent = Arc::new(AtomicUsize::new(0));
        let mut bodies = Vec::new();
        for i in 0..300 {
            let head = body_head(port, path, &format!("msg_flood_{round}_{i}"));
            let sent = sent.clone();
            bodies.push(tokio::spawn(unfinished(
                port, head, 1_000_000, since, give_up, sent,
            )));
        }
        let mut heads = Vec::new();
        for i in 0..50 {
            let half = format!("POST /webhook HTTP/1.1\r\nhost: x\r\nsvix-id: msg_half_{i}\r\n");
            let sent = sent.clone();
            heads.push(tokio::spawn(unfinished(
                port, half, 0, since, give_up, sent,
            )));
        }
        // Meanwhile: memory, sampled until every stalled connection is closed…
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = tokio::spawn({
            let sampling = sampling.clone();
            async move {
                let mut peak = 0;
                while sampling.load(Ordering::SeqCst) {
                    peak = peak.max(rss_mib(pid));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                peak
            }
        });
        // …and a real delivery, once the flood is in and its uploads are past the 1 s after
        // which a stalled upload gives its place to a newcomer.
        let deliver = async {
            test_support::eventually(Duration::from_secs(20), "the flood to be sent", || async {
                (sent.load(Ordering::SeqCst) == 350).then_some(())
            })
            .await;
            tokio::time::sleep(Duration::from_millis(1200)).await;
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
            (response.status().as_u16(), since.elapsed())
        };
        let (status, answered_at) = deliver.await;
        let mut body_closed = Vec::new();
        for b in bodies {
            body_closed.push(b.await.unwrap());
        }
        let mut head_closed = Vec::new();
        for h in heads {
            head_closed.push(h.await.unwrap());
        }
        sampling.store(false, Ordering::SeqCst);
        let peak_rss = sampler.await.unwrap();
        let slowest = |closed: &[Option<Duration>]| {
            closed
                .iter()
                .map(|c| c.unwrap_or(Duration::MAX))
                .max()
                .unwrap()
        };
        let (bodies_by, heads_by) = (slowest(&body_closed), slowest(&head_closed));
        eprintln!(
            "{path}: RSS idle {idle_rss} MiB, peak {peak_rss} MiB; unfinished bodies closed within {bodies_by:?}, stalled heads within {heads_by:?}; real webhook {status} at {answered_at:?}"
        );
        assert_eq!(status, 200, "{path}: the real webhook");
        if round == 1 {
            assert!(
                answered_at < bodies_by,
                "answered while the stalled uploads held their places"
            );
        }
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

    let messages = read_topic(&env.brokers, &users_topic(&env), 2, Duration::from_secs(10));
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
