//! `email.created` and `sms.created` carry one-time codes: they reach Kafka with those
//! fields replaced, unless `PUBLISH_MESSAGE_BODIES=true`.

use std::time::Duration;

use events::{EventMessage, Family};
use serde_json::Value;
use test_support::TestEnv;

use crate::helpers::{fixture, read_topic, spawn_app, SECRET_A};

/// Delivers Clerk's `email.created` (its code, 428391, in the subject, the bodies and the
/// template data) and reads back what was published.
async fn published_email(extra: &[(&str, &str)]) -> (EventMessage, Value) {
    let app = spawn_app(TestEnv::new().await, extra).await;
    let (status, json) = app
        .deliver(SECRET_A, "msg_email_1", &fixture("email.created"))
        .await;
    assert_eq!(status, 200, "{json}");
    let topic = app.topics.for_family(Family::Other).to_string();
    let messages = read_topic(&app.env.brokers, &topic, 1, Duration::from_secs(10));
    assert_eq!(messages.len(), 1);
    let value = rdkafka::Message::payload(&messages[0]).unwrap().to_vec();
    app.stop().await;
    let message = EventMessage::decode(&value).unwrap();
    let data: Value = serde_json::from_str(message.data.get()).unwrap();
    (message, data)
}

#[tokio::test]
async fn a_signed_email_is_published_with_its_code_bearing_fields_replaced() {
    let (message, data) = published_email(&[]).await;
    let original: Value = serde_json::from_slice(&fixture("email.created")).unwrap();
    for field in ["subject", "body", "body_plain", "data"] {
        assert_eq!(data[field], "[redacted]", "{field}");
    }
    assert!(
        !message.data.get().contains("428391"),
        "the code went out: {}",
        message.data.get()
    );
    // Everything else travels as Clerk sent it.
    for field in ["id", "to_email_address", "user_id", "slug", "status"] {
        assert_eq!(data[field], original["data"][field], "{field}");
    }
    assert_eq!(message.subject_id, "ema_2pZAeT5yU7iO9pA1sD3fG5hJ7kL");
}

#[tokio::test]
async fn with_publish_message_bodies_on_the_email_goes_out_verbatim() {
    let (_, data) = published_email(&[("PUBLISH_MESSAGE_BODIES", "true")]).await;
    let original: Value = serde_json::from_slice(&fixture("email.created")).unwrap();
    assert_eq!(data, original["data"]);
}
