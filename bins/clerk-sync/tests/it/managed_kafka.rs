//! Through a SASL_SSL listener like a managed cluster's (SCRAM-SHA-512, a broker
//! certificate from a private CA), with the CA given as PEM text in KAFKA_CA_CERT; a wrong
//! password and a wrong CA each stop start-up with a message that says which.

use std::time::Duration;

use rdkafka::message::Message;
use test_support::TestEnv;

use crate::helpers::*;

/// Runs the binary with `extra` until it exits (at most 60 s); its exit code and output.
async fn start_fails(env: &TestEnv, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_clerk-sync"));
    command
        .env_clear()
        .envs(vars(env, extra))
        .env("PORT", test_support::free_port().to_string());
    test_support::run_to_exit(command, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_a_sasl_ssl_cluster_and_bad_credentials_say_why() {
    let env = TestEnv::new().await;
    let sasl = test_support::sasl_listener();
    let ca_pem = std::fs::read_to_string(&sasl.ca_file).unwrap();
    let (mut child, base) =
        spawn_binary(&env, &sasl.settings(&sasl.password, &ca_pem), false).await;
    let body = fixture("user.created");
    let mut request = reqwest::Client::new()
        .post(format!("{base}/webhook"))
        .header("content-type", "application/json")
        .body(body.clone());
    for (k, v) in signed(SECRET_A, "msg_sasl_1", now(), &body) {
        request = request.header(k, v);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    // Read back through the plain listener: the same broker, the same topic.
    let messages = read_topic(&env.brokers, &users_topic(&env), 1, Duration::from_secs(10));
    assert_eq!(messages.len(), 1);
    assert_eq!(
        header(&messages[0], "event-id").as_deref(),
        Some("msg_sasl_1")
    );
    assert!(messages[0].payload().is_some());
    child.kill().await.unwrap();

    let wrong_password = sasl.settings("not-the-password", &ca_pem);
    let (code, out) = start_fails(&env, &wrong_password).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("Authentication failed"),
        "no reason given:\n{out}"
    );
    assert!(
        out.contains("(KAFKA_BROKERS) refused the connection"),
        "{out}"
    );
    assert!(
        !out.contains("not-the-password"),
        "the password was printed:\n{out}"
    );

    let wrong_ca = std::fs::read_to_string(&sasl.wrong_ca_file).unwrap();
    let (code, out) = start_fails(&env, &sasl.settings(&sasl.password, &wrong_ca)).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("(KAFKA_BROKERS) refused the connection"),
        "{out}"
    );
    assert!(
        out.contains("certificate verify failed"),
        "no reason given:\n{out}"
    );
}
