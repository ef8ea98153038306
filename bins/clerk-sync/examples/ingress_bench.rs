//! Drives signed webhooks at a running clerk-sync (see scripts/bench-ingress.sh) and prints
//! requests per second, latency percentiles and the server's CPU time per request, read
//! from `/proc/<pid>/stat` before and after.
//!
//! Environment: `BENCH_URL` (the `/webhook` URL), `BENCH_PID` (clerk-sync's pid),
//! `BENCH_SECRET` (`whsec_…`), `BENCH_REQUESTS` (default 20000), `BENCH_CONCURRENCY`
//! (default 16), `BENCH_BODY` (a Clerk webhook body; default the `user.updated` fixture).
//!
//! Every request is signed up front with its own `svix-id`, so the timed loop only sends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

#[path = "support/mod.rs"]
mod support;
use support::{cpu_ticks, var};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url: String = std::env::var("BENCH_URL").context("BENCH_URL")?;
    let pid: u32 = std::env::var("BENCH_PID").context("BENCH_PID")?.parse()?;
    let secret: String = std::env::var("BENCH_SECRET").context("BENCH_SECRET")?;
    let requests: usize = var("BENCH_REQUESTS", 20_000)?;
    let concurrency: usize = var("BENCH_CONCURRENCY", 16)?;
    let body = match std::env::var("BENCH_BODY") {
        Ok(path) => std::fs::read(&path).with_context(|| path)?,
        Err(_) => include_bytes!("../../../crates/events/fixtures/user.updated.json").to_vec(),
    };
    let body = bytes::Bytes::from(body);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let run = format!("{:x}", std::process::id());
    let signed: Vec<_> = (0..requests)
        .map(|i| clerk_sync::sign::sign(&secret, &format!("msg_bench_{run}_{i}"), now, &body))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let signed = Arc::new(signed);

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    // Warm-up: connections, the producer's metadata, the allocator.
    for i in 0..concurrency.min(requests) {
        send(&client, &url, &signed[i], body.clone()).await?;
    }

    let next = Arc::new(AtomicUsize::new(0));
    let ticks_before = cpu_ticks(pid)?;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url, signed, body, next) = (
            client.clone(),
            url.clone(),
            signed.clone(),
            body.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= signed.len() {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                send(&client, &url, &signed[i], body.clone()).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(requests);
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    let ticks = cpu_ticks(pid)? - ticks_before;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let cpu_us = ticks as f64 * 10_000.0 / requests as f64;
    println!(
        "requests={requests} concurrency={concurrency} body={}B req/s={:.0} p50={:.2}ms p99={:.2}ms cpu/request={cpu_us:.1}us rss={}MiB",
        body.len(),
        requests as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        rss_kib(pid) / 1024,
    );
    Ok(())
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    signed: &clerk_sync::sign::SignedHeaders,
    body: bytes::Bytes,
) -> anyhow::Result<()> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("svix-id", &signed.id)
        .header("svix-timestamp", signed.timestamp.to_string())
        .header("svix-signature", &signed.signature)
        .body(body)
        .send()
        .await?;
    if response.status() != 200 {
        bail!("{}: {}", response.status(), response.text().await?);
    }
    Ok(())
}
