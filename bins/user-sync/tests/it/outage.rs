//! The real binary through outages: MongoDB down, Kafka down, SIGKILL.

use std::process::Command;
use std::time::Duration;

use bson::{doc, Document};
use rdkafka::producer::FutureProducer;
use test_support::{Component, TestEnv};

use crate::helpers::*;

const USERS: usize = 10;
const T0: i64 = 1_732_464_000_000;

/// Produces round `r` for every user: a create for round 0, else an update named `R<r>`.
async fn produce_round(p: &FutureProducer, topic: &str, r: usize) {
    for u in 0..USERS {
        let user = format!("user_{u}");
        let kind = if r == 0 { Kind::Created } else { Kind::Updated };
        let m = user_event(
            kind,
            &user,
            &format!("evt-{u}-{r}"),
            T0 + r as i64 * 1000,
            &format!("R{r}"),
        );
        produce(p, topic, &m).await;
    }
}

/// Every user holds the last round's fields, and every event has exactly one record.
async fn assert_final(db: &mongodb::Database, rounds: usize) {
    let users = db.collection::<Document>("users");
    assert_eq!(
        users.count_documents(doc! {}).await.unwrap(),
        USERS as u64,
        "one document per user"
    );
    let events = db.collection::<Document>("webhook_events");
    for u in 0..USERS {
        let d = user_doc(db, &format!("user_{u}")).await;
        assert_eq!(
            d.get_str("firstName").unwrap(),
            format!("R{}", rounds - 1),
            "{d}"
        );
        assert_eq!(
            d.get_str("lastEventId").unwrap(),
            format!("evt-{u}-{}", rounds - 1)
        );
        assert_eq!(d.get_str("syncStatus").unwrap(), "synced");
        for r in 0..rounds {
            let n = events
                .count_documents(doc! {"_id": format!("evt-{u}-{r}")})
                .await
                .unwrap();
            assert_eq!(n, 1, "evt-{u}-{r} recorded once");
        }
        // The newest event of each user took effect (applied, or applied by an attempt
        // whose record was lost with the process: then `duplicate`).
        let last = record(db, &format!("evt-{u}-{}", rounds - 1)).await;
        assert!(
            ["applied", "duplicate"].contains(&last.get_str("outcome").unwrap()),
            "{last}"
        );
    }
    let dead = events
        .count_documents(doc! {"outcome": "dead_lettered"})
        .await
        .unwrap();
    assert_eq!(dead, 0);
}

fn alive(process: &mut Process) -> bool {
    process.child.try_wait().unwrap().is_none()
}

async fn sigterm_exits_zero(mut process: Process) {
    let pid = process.child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(30), process.child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_down_for_10_s_loses_nothing_and_the_process_waits() {
    let env = TestEnv::exclusive().await;
    let n = names(&env);
    let mut process = spawn_process(&env, &n, free_port()).await;
    let db = env.mongo().await.database(&n.database);
    let p = producer(&env);
    for r in 0..3 {
        produce_round(&p, &n.topic, r).await;
    }
    wait_records(&db, (USERS * 3) as u64, Duration::from_secs(30)).await;

    env.stop(Component::Mongo).await;
    let down = tokio::time::Instant::now();
    for r in 3..6 {
        produce_round(&p, &n.topic, r).await;
    }
    test_support::eventually(Duration::from_secs(10), "/ready to say 503", || async {
        (ready_status(&process.health).await == Some(503)).then_some(())
    })
    .await;
    // The container health check says so too, and why.
    let unhealthy = healthcheck(&process).await;
    assert_eq!(unhealthy.status.code(), Some(1), "{unhealthy:?}");
    assert!(
        String::from_utf8_lossy(&unhealthy.stderr).contains(" 503 Service Unavailable`"),
        "{unhealthy:?}"
    );
    tokio::time::sleep_until(down + Duration::from_secs(10)).await;
    assert_eq!(
        ready_status(&process.health).await,
        Some(503),
        "/ready while MongoDB is down"
    );
    assert!(alive(&mut process), "exited while MongoDB was down");

    env.start(Component::Mongo).await;
    wait_records(&db, (USERS * 6) as u64, Duration::from_secs(90)).await;
    assert_final(&db, 6).await;
    assert!(alive(&mut process));
    wait_ready(&process.health).await;
    let healthy = healthcheck(&process).await;
    assert_eq!(healthy.status.code(), Some(0), "{healthy:?}");
    let metrics = reqwest::get(format!("{}/metrics", process.health))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"user_sync_consumer_lag{topic=""#),
        "no consumer lag after 10 s of statistics: {metrics}"
    );
    assert!(
        metrics.contains(r#"user_sync_transient_failures_total{reason="mongodb"}"#),
        "{metrics}"
    );
    sigterm_exits_zero(process).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_stopped_and_restarted_loses_nothing() {
    let env = TestEnv::exclusive().await;
    let n = names(&env);
    let mut process = spawn_process(&env, &n, free_port()).await;
    let db = env.mongo().await.database(&n.database);
    let p = producer(&env);
    for r in 0..3 {
        produce_round(&p, &n.topic, r).await;
    }
    wait_records(&db, (USERS * 3) as u64, Duration::from_secs(30)).await;

    env.stop(Component::Kafka).await;
    test_support::eventually(Duration::from_secs(15), "/ready to say 503", || async {
        (ready_status(&process.health).await == Some(503)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(alive(&mut process), "exited while Kafka was down");

    env.start(Component::Kafka).await;
    for r in 3..6 {
        produce_round(&p, &n.topic, r).await;
    }
    wait_records(&db, (USERS * 6) as u64, Duration::from_secs(90)).await;
    assert_final(&db, 6).await;
    assert!(alive(&mut process));
    wait_ready(&process.health).await;
    sigterm_exits_zero(process).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_reaches_the_expected_state() {
    let env = TestEnv::new().await;
    let n = names(&env);
    let port = free_port();
    let mut process = spawn_process(&env, &n, port).await;
    let db = env.mongo().await.database(&n.database);
    let events = db.collection::<Document>("webhook_events");
    let p = producer(&env);
    for r in 0..20 {
        produce_round(&p, &n.topic, r).await;
    }
    test_support::eventually(Duration::from_secs(30), "some events applied", || async {
        (events.count_documents(doc! {}).await.ok()? > 0).then_some(())
    })
    .await;
    process.child.start_kill().unwrap(); // SIGKILL
    process.child.wait().await.unwrap();
    let before = events.count_documents(doc! {}).await.unwrap();

    for r in 20..40 {
        produce_round(&p, &n.topic, r).await;
    }
    let process = spawn_process(&env, &n, port).await;
    wait_records(&db, (USERS * 40) as u64, Duration::from_secs(120)).await;
    assert!(before < (USERS * 40) as u64);
    assert_final(&db, 40).await;
    sigterm_exits_zero(process).await;
}

/// Two live consumers in one group, a third joining mid-stream and one leaving: partitions
/// move while batches are in flight, and every document ends exact, every event recorded
/// once (redeliveries to a partition's new owner are counted, never applied twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_joining_and_leaving_mid_stream_end_exact() {
    // Alone, like the outage tests: three processes and a stream load the machine, and on
    // FerretDB another test's MongoDB reply stalled past 120 s twice in CI while this one
    // ran beside it (cause not found; see the session note of 2026-11-24).
    let env = TestEnv::exclusive().await;
    let n = names(&env);
    let a = spawn_process(&env, &n, free_port()).await;
    let b = spawn_process(&env, &n, free_port()).await;
    let db = env.mongo().await.database(&n.database);
    let events = db.collection::<Document>("webhook_events");
    let p = producer(&env);
    for r in 0..15 {
        produce_round(&p, &n.topic, r).await;
    }
    test_support::eventually(Duration::from_secs(30), "some events applied", || async {
        (events.count_documents(doc! {}).await.ok()? > 0).then_some(())
    })
    .await;
    // Both report their partitions' lag before partitions move (statistics come every 5 s).
    test_support::eventually(
        Duration::from_secs(30),
        "lag gauges from a and b",
        || async {
            let (ga, gb) = (lag_gauges(&a.health).await?, lag_gauges(&b.health).await?);
            (!ga.is_empty() && !gb.is_empty()).then_some(())
        },
    )
    .await;
    // A third joins while the first two are busy: the group rebalances mid-batch.
    let c = spawn_process(&env, &n, free_port()).await;
    for r in 15..30 {
        produce_round(&p, &n.topic, r).await;
    }
    // One leaves (SIGTERM: it finishes its batch, commits and leaves the group).
    sigterm_exits_zero(a).await;
    for r in 30..40 {
        produce_round(&p, &n.topic, r).await;
    }
    wait_records(&db, (USERS * 40) as u64, Duration::from_secs(120)).await;
    assert_final(&db, 40).await;

    // Each partition's lag is reported by its owner alone: a replica forgets the gauges of
    // partitions taken from it, or a dashboard summing replicas counts them twice.
    test_support::eventually(
        Duration::from_secs(30),
        "each partition's lag reported by one replica",
        || async {
            let (mine_b, mine_c) = (lag_gauges(&b.health).await?, lag_gauges(&c.health).await?);
            let users: std::collections::BTreeSet<&String> = mine_b
                .iter()
                .chain(&mine_c)
                .filter(|(t, _)| t == &n.topic)
                .map(|(_, p)| p)
                .collect();
            (mine_b.is_disjoint(&mine_c) && users.len() == 3).then_some(())
        },
    )
    .await;
    sigterm_exits_zero(b).await;
    sigterm_exits_zero(c).await;
}

/// The (topic, partition) labels of a process's `user_sync_consumer_lag` gauges.
async fn lag_gauges(health: &str) -> Option<std::collections::BTreeSet<(String, String)>> {
    let text = reqwest::get(format!("{health}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.strip_prefix("user_sync_consumer_lag{topic=\""))
            .filter_map(|l| {
                let (topic, rest) = l.split_once("\",partition=\"")?;
                let (partition, _) = rest.split_once('"')?;
                Some((topic.to_string(), partition.to_string()))
            })
            .collect(),
    )
}
