//! Clerk objects as BSON that any server stores, whatever a browser put in their metadata.

use bson::{Bson, RawBson, RawDocumentBuf};

/// Deepest `data` kept as a document: MongoDB refuses documents nested more than 100 levels,
/// and the payload sits one or two levels down in ours.
const MAX_STORED_DEPTH: usize = 90;

/// A Clerk object as BSON that any server stores: keys starting with `$` or holding `.` are
/// refused by MongoDB in some places and by FerretDB everywhere, and Clerk metadata is
/// partly user-controlled. Such keys get the full-width look-alikes (`＄`, `．`), the
/// replacement MongoDB's documentation suggests. An object nested deeper than a server
/// accepts (user metadata can be), or holding an integer BSON can't (beyond i64), is kept
/// as its JSON text.
///
/// One pass that moves the parsed strings into the BSON: this runs for every event, and
/// copying the payload once per step (clean, then convert) was a sizeable part of
/// user-sync's CPU per event.
pub fn storable(raw: &serde_json::value::RawValue) -> Bson {
    serde_json::from_str::<serde_json::Value>(raw.get())
        .ok()
        .and_then(|value| convert(value, 0))
        .unwrap_or_else(|| Bson::String(raw.get().to_string()))
}

/// An event's payload as stored, serialized to BSON once: the document's `webhookPayload`
/// and the audit record's `payload` are copies of its bytes. (As a tree, each copy was a
/// deep clone, and the clones and their drops were the largest part of user-sync's CPU per
/// event with Clerk-sized payloads, `perf`.)
#[derive(Debug, Clone, PartialEq)]
pub struct Stored(RawBson);

impl Stored {
    /// `raw` as [`storable`] makes it.
    pub fn of(raw: &serde_json::value::RawValue) -> Self {
        Stored::from_bson(storable(raw)).unwrap_or_else(|| Stored::text(raw.get()))
    }

    /// A payload already in BSON: a document, text, or null (anything else is null).
    /// `None` when the document can't be serialized.
    pub fn from_bson(value: Bson) -> Option<Self> {
        Some(Stored(match value {
            Bson::Document(d) => RawBson::Document(RawDocumentBuf::from_document(&d).ok()?),
            Bson::String(s) => RawBson::String(s),
            _ => RawBson::Null,
        }))
    }

    /// The payload kept as JSON text (for a server that refuses it as a document).
    pub fn text(json: &str) -> Self {
        Stored(RawBson::String(json.to_string()))
    }

    /// No payload: null.
    pub fn none() -> Self {
        Stored(RawBson::Null)
    }

    /// The bytes to write.
    pub(crate) fn raw(&self) -> &RawBson {
        &self.0
    }

    /// As a BSON tree (the unit tests' store in memory works on those).
    #[cfg(test)]
    pub(crate) fn to_bson(&self) -> Bson {
        Bson::try_from(self.0.clone()).expect("stored BSON reads back")
    }
}

/// [`storable`] for a value already parsed (a field of `data`).
pub(crate) fn storable_value(value: &serde_json::Value) -> Bson {
    convert(value.clone(), 0).unwrap_or_else(|| Bson::String(value.to_string()))
}

/// `value` as storable BSON, or `None` when it must be kept as text: nested deeper than
/// [`MAX_STORED_DEPTH`] (values come from serde_json, which stops at 128 levels, so the
/// recursion is bounded) or holding an integer beyond i64.
fn convert(value: serde_json::Value, depth: usize) -> Option<Bson> {
    use serde_json::Value;
    Some(match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Bson::Int64(i),
            (None, Some(_)) if n.is_u64() => return None,
            (None, Some(f)) => Bson::Double(f),
            (None, None) => return None,
        },
        Value::String(s) => Bson::String(s),
        Value::Array(items) if depth < MAX_STORED_DEPTH => Bson::Array(
            items
                .into_iter()
                .map(|v| convert(v, depth + 1))
                .collect::<Option<_>>()?,
        ),
        Value::Object(map) if depth < MAX_STORED_DEPTH => Bson::Document(
            map.into_iter()
                .map(|(k, v)| Some((storable_key(k), convert(v, depth + 1)?)))
                .collect::<Option<_>>()?,
        ),
        Value::Array(_) | Value::Object(_) => return None,
    })
}

/// A key any server accepts (see [`storable`]); allocates only for the rare key that needs it.
fn storable_key(key: String) -> String {
    if !key.starts_with('$') && !key.contains(['.', '\0']) {
        return key;
    }
    match key.strip_prefix('$') {
        Some(rest) => format!("\u{FF04}{rest}"),
        None => key,
    }
    .replace('.', "\u{FF0E}")
    // BSON keys are C strings.
    .replace('\0', "\u{2400}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn storable_rewrites_keys_servers_refuse() {
        let stored = storable(&raw(
            json!({"$where": 1, "a.b": {"$gt": [1]}, "nul\u{0}key": true, "plain": "x"}),
        ));
        let doc = stored.as_document().unwrap();
        assert_eq!(doc.get_i64("\u{FF04}where").unwrap(), 1);
        let inner = doc.get_document("a\u{FF0E}b").unwrap();
        assert!(inner.contains_key("\u{FF04}gt"));
        assert!(doc.get_bool("nul\u{2400}key").unwrap());
        assert_eq!(doc.get_str("plain").unwrap(), "x");
    }

    #[test]
    fn storable_falls_back_to_text_for_numbers_bson_cannot_hold() {
        let value = json!({"big": u64::MAX});
        assert_eq!(
            storable(&raw(value.clone())),
            Bson::String(value.to_string())
        );
    }

    #[test]
    fn storable_keeps_objects_too_deep_for_a_server_as_text() {
        let text = format!("{{\"m\": {}{}}}", "[".repeat(1000), "]".repeat(1000));
        let deep = serde_json::value::RawValue::from_string(text.clone()).unwrap();
        assert_eq!(storable(&deep), Bson::String(text));
        let text = format!("{{\"m\": {}{}}}", "[".repeat(80), "]".repeat(80));
        let nested = serde_json::value::RawValue::from_string(text).unwrap();
        assert!(storable(&nested).as_document().is_some());
    }

    /// The two-step conversion [`storable`] replaced (clean a copy, then `bson::to_bson`):
    /// the one pass must store exactly what it stored.
    fn two_steps(value: &serde_json::Value) -> Bson {
        fn depth(value: &serde_json::Value) -> usize {
            match value {
                serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
                serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
                _ => 0,
            }
        }
        fn clean(value: &serde_json::Value) -> serde_json::Value {
            match value {
                serde_json::Value::Object(map) => map
                    .iter()
                    .map(|(k, v)| {
                        let key = match k.strip_prefix('$') {
                            Some(rest) => format!("\u{FF04}{rest}"),
                            None => k.clone(),
                        }
                        .replace('.', "\u{FF0E}")
                        .replace('\0', "\u{2400}");
                        (key, clean(v))
                    })
                    .collect(),
                serde_json::Value::Array(items) => items.iter().map(clean).collect(),
                other => other.clone(),
            }
        }
        if depth(value) > MAX_STORED_DEPTH {
            return Bson::String(value.to_string());
        }
        bson::to_bson(&clean(value)).unwrap_or_else(|_| Bson::String(value.to_string()))
    }

    #[test]
    fn one_pass_stores_what_the_two_step_conversion_stored() {
        let mut values: Vec<serde_json::Value> = ["user.created", "user.updated", "user.deleted"]
            .iter()
            .map(|name| {
                let path = format!(
                    "{}/../../scripts/samples/{name}.json",
                    env!("CARGO_MANIFEST_DIR")
                );
                let text = std::fs::read_to_string(&path).unwrap();
                serde_json::from_str::<serde_json::Value>(&text).unwrap()["data"].clone()
            })
            .collect();
        values.extend([
            json!({"$where": 1, "a.b": {"$gt": [1, -2, 2.5, null, true]}, "nul\u{0}key": "x"}),
            json!({"big": u64::MAX}),
            json!({"nested": [{"big": i64::MAX as u64 + 1}]}),
            json!({"edge": [i64::MIN, i64::MAX, 0.0, -0.5, 1e300]}),
            json!(["top", "level", {"$": "."}]),
            json!("a string"),
        ]);
        for levels in [89, 90, 91, 120] {
            let text = format!("{{\"m\": {}{}}}", "[".repeat(levels), "]".repeat(levels));
            values.push(serde_json::from_str(&text).unwrap());
        }
        for value in values {
            let expected = two_steps(&value);
            assert_eq!(storable(&raw(value.clone())), expected, "{value}");
            assert_eq!(storable_value(&value), expected, "{value}");
        }
    }

    fn raw(value: serde_json::Value) -> Box<serde_json::value::RawValue> {
        serde_json::value::to_raw_value(&value).unwrap()
    }
}
