//! Keeping one-time codes off Kafka.
//!
//! `email.created` and `sms.created` carry the message Clerk sent, rendered: a sign-in
//! code or a magic link sits in an email's `subject`, `body` and `body_plain` and in the
//! template's `data`, and in an SMS's `message` and `data`. A topic keeps what it is given
//! for its retention and every consumer of it can read it, so those fields are replaced by
//! [`REDACTED`] before publishing, unless the operator asks for them
//! (`PUBLISH_MESSAGE_BODIES=true`). Everything else (the recipient, the status, the ids)
//! travels as received.

use serde_json::{Map, Value};

use crate::message::EventMessage;

/// What a field that can carry a code holds once redacted.
pub const REDACTED: &str = "[redacted]";

/// The fields of `data` that can carry a code, by event type; `None` for a type that
/// carries no message body.
pub fn secret_fields(event_type: &str) -> Option<&'static [&'static str]> {
    match event_type {
        "email.created" => Some(&["subject", "body", "body_plain", "data"]),
        "sms.created" => Some(&["message", "data"]),
        _ => None,
    }
}

/// Replaces, in `message.data`, every field [`secret_fields`] names that is present and
/// not null by [`REDACTED`]. Returns whether anything was replaced. A `data` that can't
/// be read as a JSON object (nested deeper than serde_json reads) is replaced whole by an
/// object holding only its `id`: nothing unread goes out.
pub fn redact_message_bodies(message: &mut EventMessage) -> bool {
    let Some(fields) = secret_fields(&message.event_type) else {
        return false;
    };
    let (object, changed) = match serde_json::from_str::<Map<String, Value>>(message.data.get()) {
        Ok(mut object) => {
            let mut changed = false;
            for &field in fields {
                if let Some(value) = object.get_mut(field).filter(|v| !v.is_null()) {
                    *value = Value::String(REDACTED.to_string());
                    changed = true;
                }
            }
            (object, changed)
        }
        Err(_) => {
            let id = crate::clerk::Loose::read(message.data.get()).id;
            let mut object = Map::new();
            object.insert("id".into(), id.map_or(Value::Null, Value::String));
            for &field in fields {
                object.insert(field.into(), Value::String(REDACTED.to_string()));
            }
            (object, true)
        }
    };
    if changed {
        // An object of strings and parsed values always serializes.
        if let Ok(raw) = serde_json::value::to_raw_value(&object) {
            message.data = raw;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(data: &str) -> EventMessage {
        let body = format!(
            r#"{{"type":"email.created","object":"event","timestamp":1732464000000,"data":{data}}}"#
        );
        crate::normalize("msg_1", body.as_bytes()).unwrap()
    }

    #[test]
    fn an_emails_code_bearing_fields_are_replaced_and_the_rest_kept() {
        let mut m = email(
            r#"{"id":"ema_1","object":"email","subject":"123456 is your code","body":"<p>123456</p>","body_plain":"123456","data":{"otp_code":"123456"},"to_email_address":"ada@example.com","status":"queued","slug":"verification_code"}"#,
        );
        assert!(redact_message_bodies(&mut m));
        let data: Value = serde_json::from_str(m.data.get()).unwrap();
        for field in ["subject", "body", "body_plain", "data"] {
            assert_eq!(data[field], REDACTED, "{field}");
        }
        assert_eq!(data["to_email_address"], "ada@example.com");
        assert_eq!(data["slug"], "verification_code");
        assert!(!m.data.get().contains("123456"));
        assert_eq!(m.subject_id, "ema_1");
    }

    #[test]
    fn an_sms_message_is_replaced_and_absent_or_null_fields_stay_as_they_are() {
        let body = r#"{"type":"sms.created","object":"event","timestamp":1,"data":{"id":"sms_1","message":"Your code is 654321","data":null,"to_phone_number":"+15555550100"}}"#;
        let mut m = crate::normalize("msg_2", body.as_bytes()).unwrap();
        assert!(redact_message_bodies(&mut m));
        let data: Value = serde_json::from_str(m.data.get()).unwrap();
        assert_eq!(data["message"], REDACTED);
        assert_eq!(data["data"], Value::Null);
        assert_eq!(data["to_phone_number"], "+15555550100");
    }

    #[test]
    fn other_types_are_left_byte_for_byte() {
        let body = r#"{"type":"user.updated","object":"event","data":{"id":"user_1","updated_at":1732464000000,"body":"x","email_addresses":[]}}"#;
        let mut m = crate::normalize("msg_3", body.as_bytes()).unwrap();
        let before = m.data.get().to_string();
        assert!(!redact_message_bodies(&mut m));
        assert_eq!(m.data.get(), before);
    }

    #[test]
    fn data_too_deep_to_read_goes_out_as_its_id_only() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let mut m = email(&format!(
            r#"{{"id":"ema_2","subject":"code 999","data":{deep}}}"#
        ));
        assert!(redact_message_bodies(&mut m));
        assert!(!m.data.get().contains("999"));
        let data: Value = serde_json::from_str(m.data.get()).unwrap();
        assert_eq!(data["id"], "ema_2");
        assert_eq!(data["subject"], REDACTED);
    }
}
