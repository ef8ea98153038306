//! Consuming from a SASL_SSL listener like a managed cluster's (SCRAM-SHA-512, a private
//! CA given as a file path in KAFKA_CA_CERT); a CA that didn't sign the broker's
//! certificate stops start-up with a message that says so (waiting can't fix it).

use std::time::Duration;

use test_support::TestEnv;

use crate::helpers::*;

const T0: i64 = 1_732_464_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_consumed_through_sasl_ssl() {
    let env = TestEnv::new().await;
    let n = names(&env);
    let sasl = test_support::sasl_listener();
    let ca_file = sasl.ca_file.to_string_lossy().into_owned();
    let _process = spawn_process_with(
        &env,
        &n,
        free_port(),
        &sasl.settings(&sasl.password, &ca_file),
    )
    .await;
    // Produced through the plain listener of the same broker.
    let p = producer(&env);
    produce(
        &p,
        &n.topic,
        &user_event(Kind::Created, "user_sasl", "sasl_1", T0, "Ada"),
    )
    .await;
    let db = env.mongo().await.database(&n.database);
    wait_records(&db, 1, Duration::from_secs(60)).await;
    assert_eq!(
        user_doc(&db, "user_sasl")
            .await
            .get_str("firstName")
            .unwrap(),
        "Ada"
    );

    // A CA that didn't sign the broker's certificate: waiting can't fix that, so start-up
    // stops with the reason instead of waiting for ever.
    let wrong_ca = sasl.wrong_ca_file.to_string_lossy().into_owned();
    let port = free_port().to_string();
    let mut command = tokio::process::Command::new(BIN);
    command.env_clear().envs(vars(
        &env,
        &n,
        &[
            &sasl.settings(&sasl.password, &wrong_ca)[..],
            &[("HEALTH_PORT", &port)],
        ]
        .concat(),
    ));
    let (code, text) = test_support::run_to_exit(command, Duration::from_secs(60)).await;
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("refused the connection"), "{text}");
    assert!(text.contains("certificate verify failed"), "{text}");
}
