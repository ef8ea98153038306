//! What clerk-sync does with the rights a managed cluster gives it: the broker enforces
//! ACLs (scripts/services.sh), and these tests take rights away.

use std::time::Duration;

use test_support::{Acls, TestEnv};

use crate::helpers::*;

/// A write the cluster refuses can't pass on a retry: 500 INTERNAL, not 503.
#[tokio::test]
async fn a_topic_clerk_sync_may_not_write_answers_500_internal() {
    let app = spawn_app(TestEnv::new().await, &[]).await;
    let _acls = Acls::add(&[
        "--deny-principal",
        "User:ANONYMOUS",
        "--operation",
        "Write",
        "--topic",
        &app.topics.users,
    ])
    .await;
    let (status, json) = app
        .deliver(SECRET_A, "msg_denied", &fixture("user.updated"))
        .await;
    assert_eq!(status, 500, "{json}");
    assert_eq!(json["code"], "INTERNAL");
    assert!(!json["error"].as_str().unwrap().contains(&app.topics.users));
    // Other topics still take events.
    let (status, json) = app
        .deliver(SECRET_A, "msg_allowed", &fixture("session.created"))
        .await;
    assert_eq!(status, 200, "{json}");
    app.stop().await;
}

/// Topic set-up describes first and creates only what is missing, so a principal without
/// CREATE starts where the topics exist (sending CreateTopics for them would be refused
/// with TOPIC_AUTHORIZATION_FAILED and stop start-up), and one missing topic is a clear
/// start-up error.
#[tokio::test]
async fn existing_topics_need_no_create_right() {
    // The ACLs below cover every topic: no other test may run meanwhile.
    let env = TestEnv::exclusive().await;
    let config_vars = vars(&env, &[]);
    let topic = |name: &str| {
        config_vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let names = [
        "KAFKA_TOPIC_USERS",
        "KAFKA_TOPIC_ORGANIZATIONS",
        "KAFKA_TOPIC_SESSIONS",
        "KAFKA_TOPIC_BILLING",
        "KAFKA_TOPIC_OTHER",
    ];
    let admin = env
        .kafka()
        .client_config()
        .create::<rdkafka::admin::AdminClient<_>>()
        .unwrap();
    let new: Vec<String> = names.iter().map(|n| topic(n)).collect();
    let new_topics: Vec<rdkafka::admin::NewTopic<'_>> = new
        .iter()
        .map(|t| rdkafka::admin::NewTopic::new(t, 1, rdkafka::admin::TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(new_topics.iter(), &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }

    let everything = [
        "--allow-principal",
        "User:ANONYMOUS",
        "--operation",
        "All",
        "--cluster",
        "--topic",
        "*",
    ];
    let no_create = [
        "--deny-principal",
        "User:ANONYMOUS",
        "--operation",
        "Create",
        "--cluster",
        "--topic",
        "*",
    ];
    let mut acls = Acls::add(&everything).await;
    acls.and(&no_create).await;

    let app = spawn_app(env, &[("KAFKA_CREATE_TOPICS", "true")]).await;
    let (status, json) = app
        .deliver(SECRET_A, "msg_no_create", &fixture("user.updated"))
        .await;
    assert_eq!(status, 200, "{json}");
    {
        // The same settings, one topic missing: start-up stops with the refusal.
        let missing = format!("missing-{}", app.env.id);
        let mut vars = vars(&app.env, &[]);
        vars.retain(|(k, _)| k != "KAFKA_TOPIC_OTHER");
        vars.push(("KAFKA_TOPIC_OTHER".into(), missing));
        let config = clerk_sync::Config::from_vars(vars).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let started = tokio::time::timeout(
            Duration::from_secs(60),
            clerk_sync::run_until(config, listener, std::future::pending()),
        )
        .await
        .expect("start-up gives up");
        let err = started.unwrap_err().to_string();
        assert!(err.contains("uthorization"), "{err}");
    }
    drop(acls);
    app.stop().await;
}
