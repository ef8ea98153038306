//! The real binary: start-up checks, graceful shutdown, logs.

use std::process::Command;
use std::time::Duration;

use crate::helpers::*;
use test_support::TestEnv;

const BIN: &str = env!("CARGO_BIN_EXE_clerk-sync");

#[test]
fn missing_required_variables_stop_start_up_and_are_named() {
    for (set, missing) in [
        (
            vec![("KAFKA_BROKERS", "127.0.0.1:1")],
            "CLERK_WEBHOOK_SECRET",
        ),
        (vec![("CLERK_WEBHOOK_SECRET", SECRET_A)], "KAFKA_BROKERS"),
        (
            vec![
                ("CLERK_WEBHOOK_SECRET", "whsec_!!!"),
                ("KAFKA_BROKERS", "127.0.0.1:1"),
            ],
            "CLERK_WEBHOOK_SECRET",
        ),
    ] {
        let port = test_support::free_port();
        let output = Command::new(BIN)
            .env_clear()
            .envs(set.iter().copied())
            .env("PORT", port.to_string())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{missing}: exited {}",
            output.status
        );
        assert!(stderr.contains(missing), "{missing} not named in: {stderr}");
        assert!(
            !stderr.contains("!!!"),
            "the bad secret is echoed: {stderr}"
        );
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "it never listened"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_finish_then_exits_zero() {
    let env = TestEnv::new().await;
    let (mut child, base) =
        spawn_binary(&env, &[("LOG_FORMAT", "json"), ("RUST_LOG", "info")], true).await;
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let users_topic = users_topic(&env);
    let http = reqwest::Client::new();
    // The container health check: the binary asks the running one's /ready.
    let healthcheck = || {
        Command::new(BIN)
            .arg("healthcheck")
            .env_clear()
            .env("PORT", port.to_string())
            .output()
            .unwrap()
    };
    let healthy = healthcheck();
    assert_eq!(healthy.status.code(), Some(0), "{healthy:?}");

    // A request whose body is still arriving when SIGTERM lands.
    let body = fixture("user.created");
    let headers = signed(SECRET_A, "msg_inflight", now(), &body);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut request = http
        .post(format!("{base}/webhook"))
        .header("content-type", "application/json")
        .header("content-length", body.len().to_string())
        .body(reqwest::Body::wrap_stream(stream));
    for (k, v) in &headers {
        request = request.header(k, v);
    }
    let in_flight = tokio::spawn(request.send());
    let (first, rest) = body.split_at(body.len() / 2);
    tx.send(Ok(first.to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // New connections are refused once shutdown began…
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still accepting new connections after SIGTERM"
    );
    // …while the one in flight completes.
    tx.send(Ok(rest.to_vec())).await.unwrap();
    drop(tx);
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);

    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let gone = healthcheck();
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains(&format!("cannot reach 127.0.0.1:{port}")),
        "{gone:?}"
    );

    let messages = read_topic(&env.brokers, &users_topic, 1, Duration::from_secs(10));
    assert_eq!(messages.len(), 1);
    assert_eq!(
        header(&messages[0], "event-id").as_deref(),
        Some("msg_inflight")
    );

    // JSON logs, the svix-id on the request's lines, no secret anywhere.
    let mut stdout = String::new();
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .await
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["svix_id"] == "msg_inflight" && l["message"] == "accepted"),
        "no log line with the svix-id:\n{stdout}"
    );
    for secret in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &headers[2].1] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a secret reached the logs"
        );
    }
}

/// The alert rules and the dashboard in deploy/monitoring name only metrics the running
/// binary exports (user-sync's test checks its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitoring_files_name_only_metrics_clerk_sync_exports() {
    let env = TestEnv::new().await;
    let (mut child, base) = spawn_binary(&env, &[], true).await;
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    test_support::monitoring::assert_exports_what_monitoring_names(
        &text,
        "clerk_sync_",
        5,
        env!("CARGO_PKG_VERSION"),
    );
    child.kill().await.unwrap();
}
