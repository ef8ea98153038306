//! Clerk objects as BSON that any server stores, whatever a browser put in their metadata.

use bson::Bson;

/// Deepest `data` kept as a document: MongoDB refuses documents nested more than 100 levels,
/// and the payload sits one or two levels down in ours.
const MAX_STORED_DEPTH: usize = 90;

/// A Clerk object as BSON that any server stores: keys starting with `$` or holding `.` are
/// refused by MongoDB in some places and by FerretDB everywhere, and Clerk metadata is
/// partly user-controlled. Such keys get the full-width look-alikes (`＄`, `．`), the
/// replacement MongoDB's documentation suggests. An object nested deeper than a server
/// accepts (user metadata can be) is kept as its JSON text.
pub fn storable(raw: &serde_json::value::RawValue) -> Bson {
    match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(value) => storable_value(&value),
        Err(_) => Bson::String(raw.get().to_string()),
    }
}

/// How deeply `value` nests (a scalar is 0). Values come from serde_json, which stops at
/// 128 levels, so the recursion is bounded.
fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// [`storable`] for a value already parsed (a field of `data`).
pub fn storable_value(value: &serde_json::Value) -> Bson {
    if depth(value) > MAX_STORED_DEPTH {
        return Bson::String(value.to_string());
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
                    // BSON keys are C strings.
                    .replace('\0', "\u{2400}");
                    (key, clean(v))
                })
                .collect(),
            serde_json::Value::Array(items) => items.iter().map(clean).collect(),
            other => other.clone(),
        }
    }
    // A number BSON can't hold (an integer beyond i64): the whole object as JSON text.
    bson::to_bson(&clean(value)).unwrap_or_else(|_| Bson::String(value.to_string()))
}

/// A Clerk object as JSON text, for a server that refuses it as a document.
pub fn as_text(value: &serde_json::value::RawValue) -> Bson {
    Bson::String(value.get().to_string())
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

    fn raw(value: serde_json::Value) -> Box<serde_json::value::RawValue> {
        serde_json::value::to_raw_value(&value).unwrap()
    }
}
