//! The message's JSON Schema: `schema/message.v1.schema.json` is exactly what the `events`
//! types generate ([`EventMessage::json_schema`]), every sample message in the repository
//! passes it (each fixture, normalized; each message example in the Markdown), and what
//! [`EventMessage::decode`] refuses, it refuses too.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use events::{normalize, EventMessage, SCHEMA_ID};
use jsonschema::Validator;
use serde_json::{json, Value};

/// Where the schema is checked in, from the workspace root.
const SCHEMA_FILE: &str = "schema/message.v1.schema.json";
/// What rewrites it.
const REGENERATE: &str = "UPDATE_SCHEMA=1 cargo test -p events --test schema";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The schema as the file holds it: pretty-printed, one newline at the end.
fn generated() -> String {
    serde_json::to_string_pretty(&EventMessage::json_schema()).unwrap() + "\n"
}

/// Whether this run rewrites the file (then the other tests read what it writes).
fn updating() -> bool {
    std::env::var_os("UPDATE_SCHEMA").is_some_and(|v| v == "1")
}

/// A validator for the checked-in file: what the world reads, not what this build makes.
fn checked_in() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let text = match updating() {
            true => generated(),
            false => std::fs::read_to_string(root().join(SCHEMA_FILE))
                .unwrap_or_else(|e| panic!("{SCHEMA_FILE}: {e}; make it with `{REGENERATE}`")),
        };
        let schema: Value = serde_json::from_str(&text).unwrap();
        jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{SCHEMA_FILE}: {e}"))
    })
}

/// What this crate writes, stricter than what a reader takes: every field it always
/// writes (`origin`, the nullable ones) is required.
fn as_written() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema = schemars::generate::SchemaSettings::draft07()
            .for_serialize()
            .into_generator()
            .into_root_schema_for::<EventMessage>();
        jsonschema::validator_for(schema.as_value()).unwrap()
    })
}

/// The validator's complaints, one line each (none: valid).
fn errors(validator: &Validator, message: &Value) -> Vec<String> {
    validator
        .iter_errors(message)
        .map(|e| format!("{e} (at `{}`)", e.instance_path()))
        .collect()
}

#[test]
fn the_checked_in_schema_is_what_the_types_generate() {
    let path = root().join(SCHEMA_FILE);
    let generated = generated();
    if updating() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let file = std::fs::read_to_string(&path).unwrap_or_default();
    if file == generated {
        return;
    }
    let difference = file
        .lines()
        .map(Some)
        .chain(std::iter::repeat(None))
        .zip(generated.lines().map(Some).chain(std::iter::repeat(None)))
        .take_while(|pair| *pair != (None, None))
        .enumerate()
        .find(|(_, (was, is))| was != is)
        .map(|(n, (was, is))| {
            format!(
                "first difference at line {}:\n  file:  {}\n  types: {}",
                n + 1,
                was.unwrap_or("(end of file)"),
                is.unwrap_or("(end of schema)"),
            )
        })
        .unwrap_or_else(|| "they differ only in line endings".into());
    panic!(
        "{SCHEMA_FILE} is not the schema the `events` message types generate;\n\
         {difference}\n\
         Regenerate it with `{REGENERATE}` and review its diff: an added field a reader can \
         do without keeps schema_version 1, any other change needs a new version (and file)."
    );
}

#[test]
fn the_schema_names_itself_and_is_the_cloudevents_dataschema() {
    let schema = EventMessage::json_schema();
    assert_eq!(schema.get("$id"), Some(&json!(SCHEMA_ID)));
    assert!(
        SCHEMA_ID.ends_with(SCHEMA_FILE),
        "{SCHEMA_ID} names {SCHEMA_FILE}"
    );
    let message = normalize("msg_1", &fixture("user.created")).unwrap();
    assert!(message
        .headers()
        .contains(&("ce_dataschema", SCHEMA_ID.to_string())));
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_fixture_normalizes_to_a_message_the_schema_takes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "fixtures: {names:?}");
    for path in names {
        let body = std::fs::read(&path).unwrap();
        let message =
            normalize("msg_fixture", &body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let value: Value = serde_json::from_slice(&message.to_json()).unwrap();
        for (validator, what) in [(checked_in(), SCHEMA_FILE), (as_written(), "as written")] {
            let errors = errors(validator, &value);
            assert!(
                errors.is_empty(),
                "{} against {what}: {errors:#?}\n{value:#}",
                path.display()
            );
        }
    }
}

/// The ```json blocks of a Markdown text that hold a message (an object with a
/// `schema_version`), each with the line it starts on.
fn message_examples(markdown: &str) -> Vec<(usize, Value)> {
    let mut found = Vec::new();
    let mut block: Option<(usize, String)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let fence = line.trim_start();
        match &mut block {
            None if fence.starts_with("```json") => block = Some((n + 2, String::new())),
            Some((start, text)) if fence.starts_with("```") => {
                // Other JSON blocks (documents, headers) needn't even parse as one value.
                if let Ok(value) = serde_json::from_str::<Value>(text) {
                    if value.get("schema_version").is_some() {
                        found.push((*start, value));
                    }
                }
                block = None;
            }
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    found
}

/// Every Markdown file of the repository (README, the book in docs/, deploy/, …).
fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "node_modules" {
                markdown_files(&path, found);
            }
        } else if name.ends_with(".md") {
            found.push(path);
        }
    }
}

#[test]
fn every_message_example_in_the_docs_is_valid() {
    let root = root().canonicalize().unwrap();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    files.sort();
    let mut checked = Vec::new();
    for file in &files {
        let shown = file.strip_prefix(&root).unwrap().display().to_string();
        for (line, example) in message_examples(&std::fs::read_to_string(file).unwrap()) {
            let errors = errors(checked_in(), &example);
            assert!(errors.is_empty(), "{shown}:{line}: {errors:#?}");
            // And the consumer reads it: the schema and the decoder agree on it.
            let decoded = EventMessage::decode(example.to_string().as_bytes());
            assert!(decoded.is_ok(), "{shown}:{line}: {decoded:?}");
            checked.push(format!("{shown}:{line}"));
        }
    }
    // The format's page shows one; if it moved or broke, say so rather than check nothing.
    assert!(
        !checked.is_empty(),
        "no message example (a ```json block with a schema_version) in {files:?}"
    );
}

/// A change to a message, and what it makes of it.
type Change = (&'static str, fn(&mut Value));

/// A valid message, written by this crate.
fn valid() -> Value {
    let message = normalize("msg_1", &fixture("user.updated")).unwrap();
    serde_json::from_slice(&message.to_json()).unwrap()
}

#[test]
fn the_schema_refuses_what_decode_refuses() {
    let cases: [Change; 10] = [
        ("no event_id", |m| {
            m.as_object_mut().unwrap().remove("event_id");
        }),
        ("no record", |m| {
            m.as_object_mut().unwrap().remove("record");
        }),
        ("no data", |m| {
            m.as_object_mut().unwrap().remove("data");
        }),
        ("schema_version as text", |m| {
            m["schema_version"] = json!("1")
        }),
        ("a future schema_version", |m| {
            m["schema_version"] = json!(2)
        }),
        ("an empty subject_id", |m| m["subject_id"] = json!("")),
        ("event_time as text", |m| {
            m["event_time"] = json!("1732464000000")
        }),
        ("an unknown record kind", |m| {
            m["record"]["kind"] = json!("robot")
        }),
        ("a user event without a user record", |m| {
            m["record"] = json!({"kind": "session", "id": "sess_1", "user_id": "user_1"});
        }),
        ("an unknown origin", |m| {
            m["origin"] = json!("carrier_pigeon")
        }),
    ];
    assert!(errors(checked_in(), &valid()).is_empty());
    for (what, break_it) in cases {
        let mut message = valid();
        break_it(&mut message);
        assert!(
            !checked_in().is_valid(&message),
            "the schema takes a message with {what}"
        );
        assert!(
            EventMessage::decode(message.to_string().as_bytes()).is_err(),
            "decode takes a message with {what}"
        );
    }
}

#[test]
fn the_schema_takes_what_older_and_newer_writers_send() {
    let cases: [Change; 4] = [
        // Written before these fields existed: origin reads as webhook.
        ("no origin or event_attributes", |m| {
            let m = m.as_object_mut().unwrap();
            m.remove("origin");
            m.remove("event_attributes");
        }),
        // serde reads a missing Option as None.
        ("no instance_id, names or times", |m| {
            m.as_object_mut().unwrap().remove("instance_id");
            let record = m["record"].as_object_mut().unwrap();
            for field in ["first_name", "last_name", "primary_email", "created_at"] {
                record.remove(field);
            }
        }),
        // An additive field of a later version 1.
        ("a field this build doesn't know", |m| {
            m["region"] = json!("eu")
        }),
        ("any data", |m| m["data"] = json!([1, "two", null])),
    ];
    for (what, change) in cases {
        let mut message = valid();
        change(&mut message);
        assert!(
            EventMessage::decode(message.to_string().as_bytes()).is_ok(),
            "decode refuses a message with {what}"
        );
        let errors = errors(checked_in(), &message);
        assert!(errors.is_empty(), "{what}: {errors:#?}");
    }
}
