//! `schema/asyncapi.yaml` against the code: a channel for every topic with the code's
//! default name and variable, every header the producers write (named and constrained as
//! the code writes them), every DLQ header user-sync writes, and the payload's schema. The
//! document's validity as AsyncAPI is the parser's job (`scripts/asyncapi.sh check`).
//!
//! The topics' defaults and variables and the DLQ's headers live in crates that depend on
//! this one, so they are read from their source: a moved or renamed file fails here by
//! name.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use events::message::CLOUDEVENTS_HEADERS;
use events::{
    normalize, EventMessage, Family, HEADER_EVENT_ID, HEADER_EVENT_ORIGIN, HEADER_EVENT_TYPE,
    HEADER_SCHEMA_VERSION, SCHEMA_ID, SCHEMA_VERSION,
};
use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The document, as JSON.
fn document() -> Value {
    serde_yaml::from_str(&read("schema/asyncapi.yaml")).unwrap()
}

fn names(v: &Value) -> BTreeSet<String> {
    match v {
        Value::Object(map) => map.keys().cloned().collect(),
        Value::Array(items) => items
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect(),
        _ => panic!("neither an object nor an array: {v}"),
    }
}

/// The string literals of the Rust files under `dir` that start with `prefix` and name
/// something (lower case, `-`, `.`, `_`; not ending in a separator, as a prefix does).
fn literals(dir: &str, prefix: &str) -> BTreeSet<String> {
    fn walk(path: &Path, prefix: &str, found: &mut BTreeSet<String>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                walk(&entry.unwrap().path(), prefix, found);
            }
            return;
        }
        if path.extension().is_none_or(|ext| ext != "rs") {
            return;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let quoted = format!("\"{prefix}");
        for (at, _) in text.match_indices(&quoted) {
            let rest = &text[at + 1..];
            let literal = &rest[..rest.find('"').unwrap()];
            let named = literal
                .chars()
                .all(|c| c.is_ascii_lowercase() || "-._".contains(c));
            if named && !literal.ends_with(['-', '.']) {
                found.insert(literal.to_string());
            }
        }
    }
    let mut found = BTreeSet::new();
    walk(&root().join(dir), prefix, &mut found);
    assert!(!found.is_empty(), "no \"{prefix}…\" literal under {dir}");
    found
}

/// `pub const DEFAULT_TOPIC_<FAMILY>: &str = "<topic>";` of crates/common/src/kafka.rs.
fn default_topic(family: Family) -> String {
    let name = format!("DEFAULT_TOPIC_{}", family.as_str().to_uppercase());
    let source = read("crates/common/src/kafka.rs");
    let line = source
        .lines()
        .find(|l| l.starts_with(&format!("pub const {name}: &str = \"")))
        .unwrap_or_else(|| panic!("crates/common/src/kafka.rs: no {name}"));
    line.split('"').nth(1).unwrap().to_string()
}

/// The variables of the serde `Env` fields of a config file whose names start with `field`
/// (`kafka_topic_users: String` → `KAFKA_TOPIC_USERS`).
fn variables(path: &str, field: &str) -> BTreeSet<String> {
    let found: BTreeSet<String> = read(path)
        .lines()
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches("pub(super) ");
            let (name, _) = l.split_once(':')?;
            name.starts_with(field).then(|| name.to_uppercase())
        })
        .collect();
    assert!(!found.is_empty(), "{path}: no {field}… field");
    found
}

#[test]
fn a_channel_for_each_topic_with_its_default_and_variable() {
    let doc = document();
    let channels = &doc["channels"];
    let mut expected = BTreeSet::new();
    for family in Family::ALL {
        let id = family.as_str();
        let topic = default_topic(family);
        let channel = &channels[id];
        assert_eq!(channel["address"], json!(topic), "channel {id}");
        let variable = format!("`KAFKA_TOPIC_{}`", id.to_uppercase());
        let description = channel["description"].as_str().unwrap();
        assert!(description.contains(&variable), "channel {id}: {variable}?");
        assert_eq!(
            channel["messages"]["event"]["$ref"],
            json!("#/components/messages/event"),
            "channel {id}"
        );
        expected.insert(id.to_string());
        // user-sync consumes every family but the other one, each with its DLQ.
        if family != Family::Other {
            let dlq = &channels[format!("{id}-dlq")];
            assert_eq!(dlq["address"], json!(format!("{topic}.dlq")), "{id}-dlq");
            assert_eq!(
                dlq["messages"]["deadLetter"]["$ref"],
                json!("#/components/messages/deadLetter"),
                "{id}-dlq"
            );
            expected.insert(format!("{id}-dlq"));
        }
    }
    assert_eq!(names(channels), expected, "channels");

    // Every topic variable the services read is named by a channel.
    let described: String = channels
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["description"].as_str().unwrap())
        .collect();
    let vars = variables("bins/clerk-sync/src/config.rs", "kafka_topic_")
        .into_iter()
        .chain(variables(
            "bins/user-sync/src/config/env.rs",
            "kafka_topic_",
        ))
        .chain(variables(
            "bins/user-sync/src/config/env.rs",
            "kafka_dlq_topic",
        ));
    for var in vars {
        assert!(
            described.contains(&format!("`{var}`")),
            "no channel names {var}"
        );
    }
}

#[test]
fn every_channel_is_sent_to_and_every_consumed_one_received() {
    let doc = document();
    let mut sent = BTreeSet::new();
    let mut received = BTreeSet::new();
    for (id, op) in doc["operations"].as_object().unwrap() {
        let channel = op["channel"]["$ref"].as_str().unwrap();
        let channel = channel.strip_prefix("#/channels/").unwrap().to_string();
        match op["action"].as_str().unwrap() {
            "send" => sent.insert(channel),
            "receive" => received.insert(channel),
            other => panic!("{id}: {other}"),
        };
    }
    let channels = names(&doc["channels"]);
    assert_eq!(sent, channels);
    let consumed: BTreeSet<String> = channels.into_iter().filter(|c| c != "other").collect();
    assert_eq!(received, consumed);
}

#[test]
fn the_event_headers_are_the_ones_the_producers_write() {
    let doc = document();
    let headers = &doc["components"]["schemas"]["EventHeaders"];
    let documented = names(&headers["properties"]);
    for name in [
        HEADER_EVENT_ID,
        HEADER_EVENT_TYPE,
        HEADER_SCHEMA_VERSION,
        HEADER_EVENT_ORIGIN,
    ]
    .into_iter()
    .chain(CLOUDEVENTS_HEADERS)
    .chain(["traceparent", "tracestate"])
    {
        assert!(documented.contains(name), "EventHeaders: no {name}");
    }
    let properties = &headers["properties"];
    assert_eq!(
        properties[HEADER_SCHEMA_VERSION]["const"],
        json!(SCHEMA_VERSION.to_string())
    );
    assert_eq!(properties["ce_dataschema"]["const"], json!(SCHEMA_ID));
    // The origins, as the message's own schema lists them.
    let schema = EventMessage::json_schema();
    let origins: Vec<Value> = schema.as_value()["definitions"]["Origin"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["const"].clone())
        .collect();
    assert_eq!(properties[HEADER_EVENT_ORIGIN]["enum"], json!(origins));

    // What the producers write (`EventMessage::headers`) passes the headers' schema, and
    // what it always writes is what the schema requires.
    let validator = jsonschema::validator_for(headers).unwrap();
    let mut message = normalize("msg_1", &fixture("user.created")).unwrap();
    for origin in ["webhook", "backfill", "reconcile"] {
        message.origin = events::Origin::from_name(origin).unwrap();
        let written: serde_json::Map<String, Value> = message
            .headers()
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let errors: Vec<String> = validator
            .iter_errors(&Value::Object(written.clone()))
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{written:?}: {errors:?}");
    }
    message.event_time = i64::MAX; // no ce_time: only what is always written
    let mut always: BTreeSet<String> = message
        .headers()
        .into_iter()
        .map(|(k, _)| k.to_string())
        .collect();
    // Written always, but not by the versions before it: the messages they left on the
    // topics and in the DLQs (read by `dlq replay`, replayed) lack it, and are valid.
    assert!(always.remove("ce_dataschema"));
    assert_eq!(names(&headers["required"]), always);
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_dlq_headers_are_the_ones_user_sync_writes() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let dead_letter = names(&schemas["DeadLetterHeaders"]["properties"]);
    let event = names(&schemas["EventHeaders"]["properties"]);
    let failure = |name: &String| name.starts_with("dlq-") || name.starts_with("__connect.");
    let documented: BTreeSet<String> = dead_letter
        .iter()
        .chain(&event)
        .filter(|n| failure(n))
        .cloned()
        .collect();
    let written: BTreeSet<String> = literals("bins/user-sync/src", "dlq-")
        .into_iter()
        .chain(literals("bins/user-sync/src", "__connect.errors."))
        .collect();
    assert_eq!(documented, written);
    // Always written: all but the dropped-value flag (and the replay's, on the source topic).
    let required = names(&schemas["DeadLetterHeaders"]["required"]);
    let optional: BTreeSet<String> = dead_letter.difference(&required).cloned().collect();
    assert_eq!(optional, BTreeSet::from(["dlq-value-dropped".to_string()]));
}

#[test]
fn the_payload_is_the_checked_in_message_schema() {
    let doc = document();
    let event = &doc["components"]["messages"]["event"];
    assert_eq!(
        event["payload"]["schemaFormat"],
        json!("application/schema+json;version=draft-07")
    );
    let reference = event["payload"]["schema"]["$ref"].as_str().unwrap();
    let file = Path::new("schema").join(reference);
    let schema: Value = serde_json::from_str(&read(file.to_str().unwrap())).unwrap();
    assert_eq!(schema["$id"], json!(SCHEMA_ID));
    assert_eq!(
        schema["$schema"],
        json!("http://json-schema.org/draft-07/schema#")
    );
    // The document's version is the format's: its major is schema_version.
    let version = doc["info"]["version"].as_str().unwrap();
    assert_eq!(
        version.split('.').next(),
        Some(&*SCHEMA_VERSION.to_string())
    );
}
