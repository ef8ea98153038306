//! Normalization of realistic Clerk payloads (fixtures written from Clerk's documented shapes).
#![allow(missing_docs, clippy::unwrap_used)]

use events::{
    normalize, DecodeError, EventMessage, Family, NormalizeError, PayerType, Record, SCHEMA_VERSION,
};
use serde_json::{json, Value};

const USER_ID: &str = "user_2pZ6mQ3xYfTgHk8LwNcVbR1aS4d";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn data_of(m: &EventMessage) -> Value {
    serde_json::from_str(m.data.get()).unwrap()
}

fn normalized(name: &str) -> EventMessage {
    normalize("msg_test", &fixture(name)).unwrap()
}

#[test]
fn user_created_carries_every_contract_field() {
    let m = normalized("user.created");
    assert_eq!(m.schema_version, SCHEMA_VERSION);
    assert_eq!(m.event_id, "msg_test");
    assert_eq!(m.event_type, "user.created");
    assert_eq!(m.subject_id, USER_ID);
    assert_eq!(
        m.instance_id.as_deref(),
        Some("ins_2pZ5aB7cD9eF1gH3iJ5kL7mN9oP")
    );
    // data.updated_at wins over the envelope timestamp.
    assert_eq!(m.event_time, 1_732_464_000_500);
    let u = m.user().unwrap();
    assert_eq!(u.id, USER_ID);
    assert_eq!(u.primary_email.as_deref(), Some("ada@example.com"));
    assert!(u.email_verified);
    assert_eq!(u.email_addresses.len(), 1);
    assert_eq!(u.first_name.as_deref(), Some("Ada"));
    assert_eq!(u.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(u.username.as_deref(), Some("ada"));
    assert_eq!(
        u.image_url.as_deref(),
        Some("https://img.clerk.com/eyJ0eXBlIjoicHJveHkifQ")
    );
    assert_eq!(u.last_sign_in_at, Some(1_732_464_000_000));
    assert_eq!(u.created_at, Some(1_732_464_000_000));
    assert_eq!(u.updated_at, Some(1_732_464_000_500));
    assert_eq!(u.external_id.as_deref(), Some("acct-567772"));
    assert!(!u.deleted);
}

#[test]
fn data_travels_unchanged() {
    let original: Value = serde_json::from_slice(&fixture("user.created")).unwrap();
    let m = normalized("user.created");
    assert_eq!(data_of(&m), original["data"]);
    // The very bytes, not a re-serialization.
    let body = String::from_utf8(fixture("user.created")).unwrap();
    assert!(body.contains(m.data.get()));
}

#[test]
fn user_updated_takes_the_primary_email_even_when_unverified() {
    let m = normalized("user.updated");
    let u = m.user().unwrap();
    assert_eq!(
        u.primary_email.as_deref(),
        Some("ada.lovelace@work.example")
    );
    assert!(!u.email_verified, "primary address is unverified");
    assert_eq!(u.email_addresses.len(), 2);
    assert_eq!(
        u.email_addresses[0].email, "ada.lovelace@work.example",
        "primary first"
    );
    assert!(!u.email_addresses[0].verified);
    assert_eq!(u.email_addresses[1].email, "ada@example.com");
    assert!(u.email_addresses[1].verified);
    assert_eq!(u.username, None);
    assert_eq!(u.image_url, None, "no image_url nor profile_image_url");
    assert_eq!(u.external_id, None);
    assert_eq!(m.event_time, 1_732_467_700_000);
}

#[test]
fn user_without_email_addresses_has_null_primary() {
    let body = json!({
        "type": "user.created", "object": "event", "timestamp": 1_732_464_000_000i64,
        "data": {"id": "user_1", "object": "user", "email_addresses": [],
                 "primary_email_address_id": null, "updated_at": 1_732_464_000_000i64}
    });
    let m = normalize("msg_1", body.to_string().as_bytes()).unwrap();
    let u = m.user().unwrap();
    assert_eq!(u.primary_email, None);
    assert!(!u.email_verified);
}

#[test]
fn user_deleted_is_timed_by_the_envelope() {
    let m = normalized("user.deleted");
    assert_eq!(m.subject_id, USER_ID);
    assert_eq!(m.event_time, 1_732_471_200_000);
    let u = m.user().unwrap();
    assert!(u.deleted);
    assert_eq!(u.primary_email, None);
    assert_eq!(u.first_name, None);
    assert_eq!(u.external_id, None, "this one has none");
    assert_eq!(Family::of(&m.event_type), Family::Users);
}

#[test]
fn user_deleted_keeps_the_external_id_clerk_sends() {
    let body = serde_json::json!({
        "type": "user.deleted", "object": "event", "timestamp": 1_732_471_200_000_i64,
        "data": {"id": USER_ID, "object": "user", "deleted": true, "external_id": "crm-42"},
    });
    let m = normalize("msg_1", body.to_string().as_bytes()).unwrap();
    let u = m.user().unwrap();
    assert!(u.deleted);
    assert_eq!(u.external_id.as_deref(), Some("crm-42"));
    let v: Value = serde_json::from_slice(&m.to_json()).unwrap();
    assert_eq!(v["record"]["external_id"], "crm-42");
}

#[test]
fn membership_is_keyed_by_organization() {
    let m = normalized("organizationMembership.created");
    assert_eq!(m.subject_id, "org_2pZ7bN4mV6cX8zL0kJ2hG4fD6sA");
    assert_eq!(Family::of(&m.event_type), Family::Organizations);
    assert_eq!(
        m.record,
        Record::OrganizationMembership {
            id: "orgmem_2pZAq1w2e3r4t5y6u7i8o9p0aSd".into(),
            organization_id: "org_2pZ7bN4mV6cX8zL0kJ2hG4fD6sA".into(),
            user_id: Some(USER_ID.into()),
            role: Some("org:member".into()),
        }
    );
}

#[test]
fn session_is_keyed_by_user() {
    let m = normalized("session.created");
    assert_eq!(m.subject_id, USER_ID);
    assert_eq!(Family::of(&m.event_type), Family::Sessions);
    assert!(matches!(&m.record, Record::Session { id, status, .. }
        if id == "sess_2pZBdF4gH6jK8lZ0xC2vB4nM6qW" && status.as_deref() == Some("active")));
}

#[test]
fn unknown_type_is_kept_with_seconds_converted() {
    let m = normalized("unknown");
    assert_eq!(Family::of(&m.event_type), Family::Other);
    assert_eq!(m.subject_id, "wle_2pZCeR5tY7uI9oP1aS3dF5gH7jK");
    // No updated_at; the envelope timestamp is in seconds.
    assert_eq!(m.event_time, 1_732_467_000_000);
    assert_eq!(data_of(&m)["status"], "pending");
}

#[test]
fn organization_events_route_to_organizations() {
    for t in [
        "organization.updated",
        "organizationMembership.deleted",
        "organizationInvitation.accepted",
        "organizationDomain.created",
    ] {
        assert_eq!(Family::of(t), Family::Organizations, "{t}");
    }
    assert_eq!(Family::of("email.created"), Family::Other);
    assert_eq!(
        Family::of("users.created"),
        Family::Other,
        "prefix must match exactly"
    );
}

#[test]
fn invitation_is_keyed_by_its_organization() {
    let body = json!({
        "type": "organizationInvitation.created", "timestamp": 1_732_464_000_000i64,
        "data": {"id": "orginv_1", "organization_id": "org_9", "email_address": "x@example.com",
                 "updated_at": 1_732_464_000_000i64}
    });
    let m = normalize("msg_1", body.to_string().as_bytes()).unwrap();
    assert_eq!(m.subject_id, "org_9");
}

#[test]
fn bad_json_and_bad_shapes_are_told_apart() {
    assert!(matches!(
        normalize("m", b"{not json"),
        Err(NormalizeError::InvalidJson(_))
    ));
    for body in [
        json!([1, 2]),
        json!({"data": {}}),
        json!({"type": "user.created", "data": "x", "timestamp": 1}),
        json!({"type": "user.created", "timestamp": 1_732_464_000_000i64, "data": {"object": "user"}}),
        json!({"type": "user.updated", "timestamp": 1_732_464_000_000i64,
               "data": {"id": "user_1", "email_addresses": "not-a-list"}}),
        json!({"type": "user.created", "data": {"id": "user_1"}}),
    ] {
        let err = normalize("m", body.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(err, NormalizeError::InvalidPayload(_)),
            "{body}: {err}"
        );
    }
}

#[test]
fn other_families_with_unexpected_shapes_are_kept_not_refused() {
    for (event_type, data, key) in [
        ("session.created", json!({"id": "sess_1"}), "sess_1"),
        (
            "organizationMembership.updated",
            json!({"id": "orgmem_1", "organization": "org_x"}),
            "orgmem_1",
        ),
        (
            "organizationInvitation.revoked",
            json!({"object": "organization_invitation"}),
            "organizationInvitation.revoked",
        ),
    ] {
        let body = json!({"type": event_type, "timestamp": 1_732_464_000_000i64, "data": data});
        let m = normalize("msg_1", body.to_string().as_bytes()).unwrap();
        assert_eq!(m.subject_id, key, "{event_type}");
        assert!(
            matches!(m.record, Record::Other { .. }),
            "{event_type}: {:?}",
            m.record
        );
        assert_eq!(data_of(&m), data);
    }
}

#[test]
fn message_round_trips_and_decode_checks_version_first() {
    let m = normalized("user.updated");
    let bytes = m.to_json();
    assert_eq!(EventMessage::decode(&bytes).unwrap(), m);

    let mut v: Value = serde_json::from_slice(&bytes).unwrap();
    v["schema_version"] = json!(2);
    let err = EventMessage::decode(v.to_string().as_bytes()).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::UnsupportedSchemaVersion(Some(_))
    ));
    assert_eq!(err.code(), "unsupported_schema_version");

    let err = EventMessage::decode(b"\x00garbage").unwrap_err();
    assert_eq!(err.code(), "undecodable");

    let mut v: Value = serde_json::from_slice(&bytes).unwrap();
    v["subject_id"] = json!("user_someone_else");
    let err = EventMessage::decode(v.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.code(), "invalid_record");

    let mut v: Value = serde_json::from_slice(&bytes).unwrap();
    v["record"] = json!({"kind": "other", "id": null});
    let err = EventMessage::decode(v.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.code(), "invalid_record");
}

#[test]
fn message_format_is_stable() {
    let m = normalized("user.deleted");
    let v: Value = serde_json::from_slice(&m.to_json()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "schema_version",
        "event_id",
        "type",
        "event_time",
        "instance_id",
        "subject_id",
        "record",
        "data",
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
    assert_eq!(v["record"]["kind"], "user");
    assert_eq!(v["record"]["deleted"], true);
}

#[test]
fn to_millis_converts_seconds_only() {
    assert_eq!(events::to_millis(1_732_467_000), 1_732_467_000_000);
    assert_eq!(events::to_millis(1_732_467_000_123), 1_732_467_000_123);
    assert_eq!(events::to_millis(999_999_999_999), 999_999_999_999_000);
    assert_eq!(events::to_millis(1_000_000_000_000), 1_000_000_000_000);
}

/// serde_json refuses trees deeper than 128 levels; `data` is never built as a tree, so a
/// user's deeply nested `unsafe_metadata` passes through byte for byte.
#[test]
fn deep_nesting_in_data_passes_through_unchanged() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = String::from_utf8(fixture("user.updated"))
        .unwrap()
        .replacen(
            "\"unsafe_metadata\": {}",
            &format!("\"unsafe_metadata\": {{\"deep\": {deep}}}"),
            1,
        );
    assert!(
        body.contains(&deep),
        "the fixture has an empty unsafe_metadata"
    );
    let m = normalize("msg_deep", body.as_bytes()).unwrap();
    assert!(m.data.get().contains(&deep));
    let decoded = EventMessage::decode(&m.to_json()).unwrap();
    assert_eq!(decoded, m);
    assert_eq!(decoded.user().unwrap().id, USER_ID);
}

#[test]
fn odd_updated_at_and_ids_fall_back_instead_of_failing() {
    let body = json!({"type": "email.created", "timestamp": 1_732_464_000_000_i64,
        "data": {"id": {"nested": [1, 2]}, "updated_at": "yesterday"}});
    let m = normalize("msg_odd", body.to_string().as_bytes()).unwrap();
    assert_eq!(m.event_time, 1_732_464_000_000);
    assert_eq!(m.record, Record::Other { id: None });
    assert_eq!(m.subject_id, "email.created");
    let err = normalize("msg_arr", br#"{"type": "user.updated", "data": [1]}"#).unwrap_err();
    assert!(matches!(err, NormalizeError::InvalidPayload(_)), "{err}");
    let err = EventMessage::decode(b"[1, 2]").unwrap_err();
    assert_eq!(err.code(), "undecodable");
}

/// Only the event time gets the seconds rule: Clerk's object times are milliseconds, and a
/// user imported with a 1999 creation date (below 10^12 ms) stays in 1999.
#[test]
fn object_times_are_never_converted() {
    let body = String::from_utf8(fixture("user.updated"))
        .unwrap()
        .replacen(
            "\"created_at\": 1732464000000",
            "\"created_at\": 915148800000",
            1,
        );
    assert!(body.contains("915148800000"), "the fixture's created_at");
    let m = events::normalize("msg_1999", body.as_bytes()).unwrap();
    let events::Record::User(u) = m.record else {
        panic!("a user record")
    };
    assert_eq!(u.created_at, Some(915_148_800_000));
}

fn envelope(event_type: &str, timestamp: i64, data: Value) -> Vec<u8> {
    json!({"type": event_type, "object": "event", "timestamp": timestamp,
           "instance_id": "ins_1", "data": data})
    .to_string()
    .into_bytes()
}

/// Clerk's own example payer: `""` for the organization of a user payer.
fn payer(user_id: &str, organization_id: &str) -> Value {
    json!({"object": "commerce_payer", "id": "cpayer_1", "user_id": user_id,
           "first_name": "Test", "last_name": "User", "email": "test@example.com",
           "organization_id": organization_id, "organization_name": "",
           "image_url": "https://img.clerk.com/x"})
}

#[test]
fn billing_events_go_to_their_family_keyed_by_the_payer() {
    let item = json!({"object": "subscription_item", "id": "csub_item_1", "status": "ended",
        "is_free_trial": false, "created_at": 1_716_883_200_000_i64, "updated_at": 1_719_561_600_000_i64,
        "period_start": 1_716_883_200_000_i64, "period_end": null, "interval": "month",
        "plan_id": "cplan_1", "plan": {"id": "cplan_1", "slug": "pro-plan", "name": "Pro Plan",
        "is_recurring": true, "amount": 2000, "currency": "USD"},
        "payer": payer(USER_ID, ""), "subscription_id": "csub_1"});
    let m = normalize(
        "msg_b1",
        &envelope("subscriptionItem.ended", 1_716_883_200, item),
    )
    .unwrap();
    assert_eq!(Family::of(&m.event_type), Family::Billing);
    assert_eq!(m.subject_id, USER_ID, "keyed by the paying user");
    assert_eq!(m.event_time, 1_719_561_600_000, "data.updated_at");
    assert_eq!(
        m.record,
        Record::Billing {
            id: "csub_item_1".into(),
            payer_id: Some(USER_ID.into()),
            payer_type: Some(PayerType::User),
            clerk_payer_id: Some("cpayer_1".into()),
        }
    );

    // An organization payer; the user id is "" as Clerk sends it.
    let subscription = json!({"object": "commerce_subscription", "id": "csub_2",
        "status": "past_due", "updated_at": 1_716_969_600_000_i64, "payer_id": "cpayer_2",
        "payer": {"id": "cpayer_2", "user_id": "", "organization_id": "org_9",
                  "organization_name": "Acme"},
        "items": [{"id": "csub_item_2", "status": "past_due", "subscription_id": null}]});
    let m = normalize("msg_b2", &envelope("subscription.pastDue", 1, subscription)).unwrap();
    assert_eq!(m.subject_id, "org_9");
    assert!(matches!(
        m.record,
        Record::Billing { payer_type: Some(PayerType::Organization), ref clerk_payer_id, .. }
            if clerk_payer_id.as_deref() == Some("cpayer_2")
    ));
    assert_eq!(
        Family::of("paymentAttempt.updated"),
        Family::Billing,
        "payment attempts ride with their payer's subscription"
    );

    // No payer named at all: keyed by the object's own id, still a billing record.
    let m = normalize(
        "msg_b3",
        &envelope(
            "paymentAttempt.created",
            1,
            json!({"id": "pa_1", "updated_at": 5}),
        ),
    )
    .unwrap();
    assert_eq!(m.subject_id, "pa_1");
    assert!(matches!(m.record, Record::Billing { payer_id: None, .. }));
}

#[test]
fn a_membership_deletion_is_timed_by_the_deletion_not_the_last_edit() {
    // organizationMembership.deleted carries the whole membership: its updated_at is the
    // last edit; the envelope's timestamp is when Clerk deleted it.
    let membership = json!({"id": "orgmem_1", "object": "organization_membership",
        "role": "org:member", "organization": {"id": "org_1"},
        "public_user_data": {"user_id": USER_ID},
        "created_at": 1_700_000_000_000_i64, "updated_at": 1_700_000_500_000_i64});
    let deleted = normalize(
        "msg_d1",
        &envelope(
            "organizationMembership.deleted",
            1_732_464_000_000,
            membership.clone(),
        ),
    )
    .unwrap();
    assert_eq!(deleted.event_time, 1_732_464_000_000);
    // An update keeps the contract's rule: data.updated_at.
    let updated = normalize(
        "msg_d2",
        &envelope(
            "organizationMembership.updated",
            1_732_464_000_000,
            membership.clone(),
        ),
    )
    .unwrap();
    assert_eq!(updated.event_time, 1_700_000_500_000);
    // A timestamp in whole seconds never orders the deletion before the edit it follows.
    let mut edited_late = membership;
    edited_late["updated_at"] = json!(1_732_464_000_900_i64);
    let deleted = normalize(
        "msg_d3",
        &envelope("organizationMembership.deleted", 1_732_464_000, edited_late),
    )
    .unwrap();
    assert_eq!(deleted.event_time, 1_732_464_000_900);
}

#[test]
fn event_attributes_travel_in_the_message_and_survive_decoding() {
    let body = json!({"type": "user.updated", "object": "event", "timestamp": 1,
        "event_attributes": {"http_request": {"client_ip": "192.168.1.100",
                                              "user_agent": "Mozilla/5.0"}},
        "data": {"id": USER_ID, "updated_at": 1_732_464_000_000_i64, "email_addresses": []}});
    let m = normalize("msg_a1", body.to_string().as_bytes()).unwrap();
    let attributes: Value =
        serde_json::from_str(m.event_attributes.as_ref().unwrap().get()).unwrap();
    assert_eq!(attributes["http_request"]["client_ip"], "192.168.1.100");
    let decoded = EventMessage::decode(&m.to_json()).unwrap();
    assert_eq!(decoded, m);
    assert_eq!(
        decoded.schema_version, 1,
        "an additive field: still version 1"
    );

    // Absent (snapshots, older messages): absent from the JSON too.
    let plain = json!({"type": "user.updated", "object": "event", "timestamp": 1,
        "data": {"id": USER_ID, "updated_at": 2, "email_addresses": []}});
    let m = normalize("msg_a2", plain.to_string().as_bytes()).unwrap();
    assert!(m.event_attributes.is_none());
    assert!(!String::from_utf8(m.to_json())
        .unwrap()
        .contains("event_attributes"));
}
