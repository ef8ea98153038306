//! Property tests: whatever bytes arrive, normalizing and decoding never panic and always
//! end in a value or a named error; what normalizes keeps `data` byte for byte and passes
//! the message's JSON Schema.
//! `PROPTEST_CASES` overrides the case counts (scripts/fuzz.sh runs millions).
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::OnceLock;

use events::{normalize, EventMessage, NormalizeError};
use proptest::prelude::*;
use serde_json::{json, Value};

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,16}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An envelope of a known or unknown family around an arbitrary `data`.
fn envelope() -> impl Strategy<Value = Value> {
    let types = prop_oneof![
        Just("user.created"),
        Just("user.updated"),
        Just("user.deleted"),
        Just("session.ended"),
        Just("organization.updated"),
        Just("organizationMembership.created"),
        Just("organizationInvitation.revoked"),
        Just("email.created"),
    ];
    (types, json_value(), proptest::option::of(any::<i64>()))
        .prop_map(|(t, data, ts)| json!({"type": t, "data": data, "timestamp": ts}))
}

/// The checked-in schema, `schema/message.v1.schema.json` (tests/schema.rs keeps it the
/// types').
fn schema() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schema/message.v1.schema.json"
        );
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    })
}

fn check_normalize(body: &[u8]) {
    match normalize("msg_prop", body) {
        Ok(m) => {
            // Only what the body held travels, unchanged.
            let text = std::str::from_utf8(body).unwrap();
            assert!(text.contains(m.data.get()));
            assert!(!m.subject_id.is_empty());
            // (A number no f64 holds, such as 1e400, travels in `data` as received but
            // can't be read into a Value to be judged.)
            if let Ok(value) = serde_json::from_slice::<Value>(&m.to_json()) {
                let errors: Vec<String> = schema()
                    .iter_errors(&value)
                    .map(|e| e.to_string())
                    .collect();
                assert!(errors.is_empty(), "{value}: {errors:?}");
            }
            let again = EventMessage::decode(&m.to_json());
            if m.event_type.starts_with("user.") {
                assert_eq!(again.unwrap(), m);
            } else {
                assert!(again.is_ok(), "{again:?}");
            }
        }
        Err(NormalizeError::InvalidJson(_) | NormalizeError::InvalidPayload(_)) => {}
    }
}

proptest! {
    #![proptest_config(cases(30_000))]
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        check_normalize(&body);
    }
}

proptest! {
    #![proptest_config(cases(20_000))]
    #[test]
    fn arbitrary_envelopes_normalize_or_are_refused_by_name(envelope in envelope()) {
        check_normalize(envelope.to_string().as_bytes());
    }
}

proptest! {
    #![proptest_config(cases(20_000))]
    #[test]
    fn arbitrary_messages_decode_or_are_refused_by_name(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            json_value().prop_map(|v| json!({"schema_version": 1, "event_id": "e", "subject_id": "s", "x": v}).to_string().into_bytes()),
        ]
    ) {
        if let Err(e) = EventMessage::decode(&bytes) {
            prop_assert!(["undecodable", "unsupported_schema_version", "invalid_record"].contains(&e.code()));
        }
    }
}
