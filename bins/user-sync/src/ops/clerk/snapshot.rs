//! Messages made from Clerk's Backend API rather than from a webhook: snapshots (backfill)
//! and deletions (reconcile).
//!
//! Both are built as the webhook Clerk would have sent and go through the same
//! [`events::normalize()`], so they are exactly the message clerk-sync would publish, apart
//! from their id and [`Origin`]. A snapshot's event time is the object's `updated_at`: it
//! never beats a webhook that brought something newer, and a webhook newer than it wins.
//! Its id is `backfill:<id>:<updated_at>`, so a second backfill of an unchanged object is
//! a duplicate. A reconcile deletion's id is `reconcile:<id>`.

use events::{EventMessage, Origin, Record};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::domain::Entity;

/// The webhook type whose payload is this kind's object. (Clerk sends no
/// `organizationInvitation.updated`: an invitation's snapshot takes its status from the
/// object, as the consumer does for every invitation event.) Sessions, subscriptions and
/// payment attempts aren't listed by the Backend API.
fn updated_type(kind: Entity) -> Result<&'static str, SnapshotError> {
    match kind {
        Entity::User => Ok("user.updated"),
        Entity::Organization => Ok("organization.updated"),
        Entity::Membership => Ok("organizationMembership.updated"),
        Entity::Invitation => Ok("organizationInvitation.updated"),
        Entity::SubscriptionItem => Ok("subscriptionItem.updated"),
        Entity::Session | Entity::Subscription | Entity::PaymentAttempt => {
            Err(SnapshotError::Invalid(format!(
                "{} are not read from Clerk's Backend API",
                kind.name()
            )))
        }
    }
}

/// Why an object from Clerk can't become a message.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    /// No `id`, or no usable `updated_at`.
    #[error("{kind} object without {what}")]
    Incomplete {
        kind: &'static str,
        what: &'static str,
    },
    /// The object as a webhook payload doesn't normalize (the reason says why).
    #[error("{0}")]
    Invalid(String),
}

/// The fields of any Clerk object that a snapshot needs before normalizing.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    updated_at: Option<i64>,
}

/// The id of a Clerk object, when it has one.
pub(crate) fn id_of(object: &RawValue) -> Option<String> {
    serde_json::from_str::<Head>(object.get())
        .ok()
        .and_then(|h| h.id)
        .filter(|id| !id.is_empty())
}

/// The snapshot event of one object read from the Backend API.
pub(crate) fn snapshot(kind: Entity, object: &RawValue) -> Result<EventMessage, SnapshotError> {
    let head: Head = serde_json::from_str(object.get())
        .map_err(|e| SnapshotError::Invalid(format!("{} object: {e}", kind.name())))?;
    let incomplete = |what| SnapshotError::Incomplete {
        kind: kind.name(),
        what,
    };
    let id = head
        .id
        .filter(|id| !id.is_empty())
        .ok_or(incomplete("an id"))?;
    let updated_at = head.updated_at.ok_or(incomplete("updated_at"))?;
    let body = envelope(updated_type(kind)?, updated_at, object.get());
    let message = message(
        &format!("backfill:{id}:{updated_at}"),
        &body,
        Origin::Backfill,
    )?;
    // Normalizing keeps a non-user object of unexpected shape as `other`: the consumer
    // would dead-letter it, so it is refused here, where the reason can be printed.
    let expected = matches!(
        (kind, &message.record),
        (Entity::User, Record::User(_))
            | (
                Entity::Organization | Entity::Invitation,
                Record::Organization { .. }
            )
            | (Entity::Membership, Record::OrganizationMembership { .. })
            | (Entity::SubscriptionItem, Record::Billing { .. })
    );
    if !expected {
        return Err(SnapshotError::Invalid(format!(
            "not a Clerk {} object (organization or member missing?)",
            kind.name()
        )));
    }
    Ok(message)
}

/// The deletion event for an object Clerk no longer has, timed `at` (ms): the payload
/// Clerk's own `*.deleted` webhooks carry. Only users and organizations are reconciled.
pub(crate) fn deletion(kind: Entity, id: &str, at: i64) -> Result<EventMessage, SnapshotError> {
    let (event_type, object) = match kind {
        Entity::User => ("user.deleted", "user"),
        Entity::Organization => ("organization.deleted", "organization"),
        Entity::Membership => ("organizationMembership.deleted", "organization_membership"),
        _ => {
            return Err(SnapshotError::Invalid(format!(
                "{} are not reconciled",
                kind.name()
            )))
        }
    };
    let data = serde_json::json!({"id": id, "object": object, "deleted": true}).to_string();
    let body = envelope(event_type, at, &data);
    message(&format!("reconcile:{id}"), &body, Origin::Reconcile)
}

/// The webhook body Clerk would send for `data`.
fn envelope(event_type: &str, timestamp: i64, data: &str) -> String {
    format!(r#"{{"type":"{event_type}","object":"event","timestamp":{timestamp},"data":{data}}}"#)
}

fn message(event_id: &str, body: &str, origin: Origin) -> Result<EventMessage, SnapshotError> {
    let mut message = events::normalize(event_id, body.as_bytes())
        .map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    message.origin = origin;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).unwrap()
    }

    #[test]
    fn a_user_snapshot_is_the_webhook_clerk_sync_would_publish_with_its_own_id() {
        let user = r#"{"id":"user_1","object":"user","first_name":"Ada","primary_email_address_id":"idn_1","email_addresses":[{"id":"idn_1","email_address":"ada@example.com","verification":{"status":"verified"}}],"created_at":1700000000000,"updated_at":1732464000123,"unsafe_metadata":{"a":[[[1]]]}}"#;
        let m = snapshot(Entity::User, &raw(user)).unwrap();
        assert_eq!(m.event_id, "backfill:user_1:1732464000123");
        assert_eq!(m.event_type, "user.updated");
        assert_eq!(m.event_time, 1_732_464_000_123);
        assert_eq!(m.subject_id, "user_1");
        assert_eq!(m.origin, Origin::Backfill);
        assert_eq!(m.data.get(), user, "Clerk's object travels byte for byte");
        let webhook =
            events::normalize("msg_1", envelope("user.updated", 1, user).as_bytes()).unwrap();
        assert_eq!(m.record, webhook.record);
        let u = m.user().unwrap();
        assert_eq!(u.primary_email.as_deref(), Some("ada@example.com"));
        assert!(u.email_verified);
    }

    #[test]
    fn organization_and_membership_snapshots_are_keyed_by_organization() {
        let org = r#"{"id":"org_1","object":"organization","name":"Acme","slug":"acme","updated_at":1732464000000}"#;
        let m = snapshot(Entity::Organization, &raw(org)).unwrap();
        assert_eq!(
            (m.event_type.as_str(), m.subject_id.as_str()),
            ("organization.updated", "org_1")
        );
        let membership = r#"{"id":"orgmem_1","object":"organization_membership","role":"org:admin","organization":{"id":"org_1","name":"Acme"},"public_user_data":{"user_id":"user_1"},"created_at":1,"updated_at":1732464000500}"#;
        let m = snapshot(Entity::Membership, &raw(membership)).unwrap();
        assert_eq!(m.event_id, "backfill:orgmem_1:1732464000500");
        assert_eq!(m.subject_id, "org_1");
        assert!(matches!(
            m.record,
            Record::OrganizationMembership { ref id, ref user_id, .. }
                if id == "orgmem_1" && user_id.as_deref() == Some("user_1")
        ));
    }

    #[test]
    fn the_same_object_gives_the_same_id_and_a_changed_one_a_new_id() {
        let a = snapshot(
            Entity::User,
            &raw(r#"{"id":"user_1","updated_at":1732464000000}"#),
        )
        .unwrap();
        let b = snapshot(
            Entity::User,
            &raw(r#"{"id":"user_1","updated_at":1732464000000}"#),
        )
        .unwrap();
        let c = snapshot(
            Entity::User,
            &raw(r#"{"id":"user_1","updated_at":1732464000001}"#),
        )
        .unwrap();
        assert_eq!(a.event_id, b.event_id);
        assert_ne!(a.event_id, c.event_id);
    }

    #[test]
    fn objects_without_id_or_updated_at_are_refused_with_a_reason() {
        let e = snapshot(Entity::User, &raw(r#"{"updated_at":1}"#)).unwrap_err();
        assert_eq!(e.to_string(), "users object without an id");
        let e = snapshot(Entity::Organization, &raw(r#"{"id":"org_1"}"#)).unwrap_err();
        assert_eq!(e.to_string(), "organizations object without updated_at");
        assert!(snapshot(
            Entity::Membership,
            &raw(r#"{"id":"orgmem_1","updated_at":1}"#)
        )
        .is_err());
    }

    #[test]
    fn a_reconcile_deletion_is_clerks_deletion_payload() {
        let m = deletion(Entity::User, "user_gone", 1_732_464_000_000).unwrap();
        assert_eq!(m.event_id, "reconcile:user_gone");
        assert_eq!(m.event_type, "user.deleted");
        assert_eq!(m.event_time, 1_732_464_000_000);
        assert_eq!(m.origin, Origin::Reconcile);
        assert!(m.user().unwrap().deleted);
        let m = deletion(Entity::Organization, "org_gone", 1_732_464_000_000).unwrap();
        assert_eq!(
            (m.event_type.as_str(), m.subject_id.as_str()),
            ("organization.deleted", "org_gone")
        );
        assert!(matches!(
            m.record,
            Record::Organization { deleted: true, .. }
        ));
    }

    #[test]
    fn an_id_that_needs_escaping_stays_one_string() {
        let m = deletion(Entity::User, r#"user_"quoted"\"#, 1).unwrap();
        assert_eq!(m.subject_id, r#"user_"quoted"\"#);
    }
}
