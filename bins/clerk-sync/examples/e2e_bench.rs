//! The end-to-end benchmark's load (see scripts/e2e-bench.sh): signed `user.updated`
//! webhooks with Clerk-sized user objects, sent at a fixed rate (open loop: a slow
//! pipeline doesn't slow the sender) to a running clerk-sync, then each event's latency
//! from its send to its `processedAt` in `webhook_events`, written by user-sync.
//!
//! Environment: `BENCH_URL` (`/webhook`), `BENCH_SECRET`, `BENCH_RATE` (events/s, 500),
//! `BENCH_SECONDS` (60), `BENCH_USERS` (2000), `MONGODB_URI`, `BENCH_DATABASE`,
//! `BENCH_CLERK_PID`, `BENCH_USER_SYNC_PID` (for CPU time from /proc).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};

#[path = "support/mod.rs"]
mod support;
use support::{cpu_ticks, var};
use test_support::bench::clerk_user_body;

/// CPU time of `pid` in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    Ok(cpu_ticks(pid)? as f64 / 100.0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url: String = std::env::var("BENCH_URL").context("BENCH_URL")?;
    let secret: String = std::env::var("BENCH_SECRET").context("BENCH_SECRET")?;
    let rate: f64 = var("BENCH_RATE", 500.0)?;
    let seconds: f64 = var("BENCH_SECONDS", 60.0)?;
    let users: usize = var("BENCH_USERS", 2000)?;
    let uri: String = std::env::var("MONGODB_URI").context("MONGODB_URI")?;
    let database: String = std::env::var("BENCH_DATABASE").context("BENCH_DATABASE")?;
    let clerk_pid: u32 = var("BENCH_CLERK_PID", 0)?;
    let sync_pid: u32 = var("BENCH_USER_SYNC_PID", 0)?;
    // The servers' share of the machine (0: not shown).
    let store_pid: u32 = var("BENCH_STORE_PID", 0)?;
    let broker_pid: u32 = var("BENCH_BROKER_PID", 0)?;
    let total = (rate * seconds) as usize;
    let run = format!("{:x}", std::process::id());

    // Signed up front, so the timed loop only sends.
    let start_ms = now_ms();
    let requests: Vec<(String, Vec<u8>, clerk_sync::sign::SignedHeaders)> = (0..total)
        .map(|i| {
            let id = format!("msg_e2e_{run}_{i}");
            let body = clerk_user_body(i % users, i / users, start_ms + i as i64);
            let signed = clerk_sync::sign::sign(&secret, &id, start_ms / 1000, &body)
                .map_err(anyhow::Error::msg)?;
            Ok((id, body, signed))
        })
        .collect::<anyhow::Result<_>>()?;
    let body_bytes = requests.first().map_or(0, |r| r.1.len());
    let requests = Arc::new(requests);

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()?;
    let servers_before = (
        cpu_seconds(store_pid).unwrap_or(0.0),
        cpu_seconds(broker_pid).unwrap_or(0.0),
    );
    let cpu_before = (
        cpu_seconds(clerk_pid).unwrap_or(0.0),
        cpu_seconds(sync_pid).unwrap_or(0.0),
    );
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    let interval = Duration::from_secs_f64(1.0 / rate);
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let (client, url, requests) = (client.clone(), url.clone(), requests.clone());
        tasks.push(tokio::spawn(async move {
            let (id, body, signed) = &requests[i];
            let sent = now_ms();
            // As Svix does: a 503 is retried after its Retry-After (latency counts from the
            // first send).
            let mut retries = 0u32;
            loop {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("svix-id", &signed.id)
                    .header("svix-timestamp", signed.timestamp.to_string())
                    .header("svix-signature", &signed.signature)
                    .body(body.clone())
                    .send()
                    .await?;
                match response.status().as_u16() {
                    200 => break,
                    503 if retries < 20 => {
                        retries += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    status => bail!("{id}: {status}"),
                }
            }
            Ok::<_, anyhow::Error>((id.clone(), sent, retries))
        }));
    }
    let mut sent: HashMap<String, i64> = HashMap::with_capacity(total);
    let mut retried = 0;
    for t in tasks {
        let (id, at, retries) = t.await??;
        sent.insert(id, at);
        retried += retries;
    }
    let send_elapsed = started.elapsed();

    // Wait for every record (at most 10 minutes).
    let client = mongodb::Client::with_uri_str(&uri).await?;
    let records = client
        .database(&database)
        .collection::<Document>("webhook_events");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = records.estimated_document_count().await? as usize;
        if n >= total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu_after = (
        cpu_seconds(clerk_pid).unwrap_or(0.0),
        cpu_seconds(sync_pid).unwrap_or(0.0),
    );
    let servers_after = (
        cpu_seconds(store_pid).unwrap_or(0.0),
        cpu_seconds(broker_pid).unwrap_or(0.0),
    );
    let docs: Vec<Document> = records
        .find(doc! {})
        .projection(doc! {"_id": 1, "processedAt": 1})
        .await?
        .try_collect()
        .await?;
    let mut latencies: Vec<i64> = Vec::with_capacity(docs.len());
    let mut last_processed = 0;
    let first_sent = sent.values().min().copied().unwrap_or(0);
    // p99 per 10 s of sending: a warm-up or a stall shows where it happened.
    let mut windows: Vec<Vec<i64>> = Vec::new();
    for d in &docs {
        let (Ok(id), Ok(at)) = (d.get_str("_id"), d.get_datetime("processedAt")) else {
            continue;
        };
        if let Some(s) = sent.get(id) {
            let latency = at.timestamp_millis() - s;
            latencies.push(latency);
            last_processed = last_processed.max(at.timestamp_millis());
            let w = ((s - first_sent) / 10_000) as usize;
            if windows.len() <= w {
                windows.resize(w + 1, Vec::new());
            }
            windows[w].push(latency);
        }
    }
    latencies.sort_unstable();
    let applied = latencies.len();
    let pct = |p: f64| {
        latencies
            .get(((applied as f64 * p) as usize).min(applied.saturating_sub(1)))
            .copied()
            .unwrap_or(-1)
    };
    let applied_rate = applied as f64 / ((last_processed - first_sent).max(1) as f64 / 1000.0);
    println!(
        "offered={rate:.0}/s for {seconds:.0}s sent={total} in {:.1}s ({:.0}/s, {retried} 503s retried) body={body_bytes}B applied={applied} ({applied_rate:.0}/s) latency p50={}ms p99={}ms max={}ms",
        send_elapsed.as_secs_f64(),
        total as f64 / send_elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or(-1),
    );
    let by_window: Vec<String> = windows
        .iter_mut()
        .map(|w| {
            w.sort_unstable();
            w.get((w.len() as f64 * 0.99) as usize)
                .map_or("-".into(), |v| format!("{v}"))
        })
        .collect();
    println!(
        "             p99 per 10 s of sending (ms): {}",
        by_window.join(" ")
    );
    if applied > 0 {
        println!(
            "             cpu: clerk-sync {:.0}us/event, user-sync {:.0}us/event (from /proc, over the run)",
            (cpu_after.0 - cpu_before.0) * 1e6 / total as f64,
            (cpu_after.1 - cpu_before.1) * 1e6 / applied as f64,
        );
        if store_pid != 0 && broker_pid != 0 {
            println!(
                "                  store {:.0}us/event, broker {:.0}us/event (the servers, same window)",
                (servers_after.0 - servers_before.0) * 1e6 / applied as f64,
                (servers_after.1 - servers_before.1) * 1e6 / applied as f64,
            );
        }
    }
    // The memory engine keeps every database in its heap: a run's records left behind
    // would slow the next run's store (its garbage collector scans them).
    client.database(&database).drop().await?;
    if applied < total {
        bail!("only {applied} of {total} events were applied within 10 minutes");
    }
    Ok(())
}
