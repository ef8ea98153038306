//! Clerk Billing → `subscriptions`, `subscriptionItems`, `paymentAttempts`: one document
//! per subscription (`csub_…`), subscription item (`csub_item_…`) and payment attempt
//! (`pa_…`), each with its payer. The topic keys them by the payer, so one customer's
//! events keep their order.
//!
//! The payer: `payerId` is the paying user's or organization's Clerk id (what an
//! application queries by), `payerType` says which, and `clerkPayerId` keeps Clerk's own
//! `cpayer_…` id.
//!
//! No billing status is final. Clerk's documentation says the subscription item of the
//! free default plan keeps its id for good, and moves through `ended`, `upcoming`,
//! `abandoned` and `active` again as the payer subscribes to, cancels and returns to paid
//! plans ("the Subscription Item for the default Plan will always have the same `id`";
//! `abandoned` "can happen to `upcoming` Subscription Items if the payer … re-subscribes
//! to a currently canceled Plan"). A final status would freeze such an item in the past,
//! so every status is a profile field: the newest event by version holds it, as for any
//! other field.

use bson::{doc, Bson, Document};
use events::{EventMessage, Record};

use super::{nulls, profile, Data, Entity, Intent};

/// The payer fields every billing document has.
const PAYER: [&str; 3] = ["payerId", "payerType", "clerkPayerId"];

const SUBSCRIPTION: [&str; 9] = [
    "status",
    "activeAt",
    "pastDueAt",
    "canceledAt",
    "endedAt",
    "latestPaymentId",
    "paymentSourceId",
    "clerkCreatedAt",
    "clerkUpdatedAt",
];

const ITEM: [&str; 13] = [
    "status",
    "planId",
    "planSlug",
    "planName",
    "planAmount",
    "planCurrency",
    "interval",
    "isFreeTrial",
    "seats",
    "periodStart",
    "periodEnd",
    "clerkCreatedAt",
    "clerkUpdatedAt",
];

const PAYMENT: [&str; 12] = [
    "paymentId",
    "status",
    "chargeType",
    "amount",
    "currency",
    "paidAt",
    "failedAt",
    "failedReason",
    "billingDate",
    "subscriptionItemIds",
    "clerkCreatedAt",
    "clerkUpdatedAt",
];

/// The kind a billing event type writes.
pub(super) fn kind(event_type: &str) -> Option<Entity> {
    match event_type.split_once('.')?.0 {
        "subscription" => Some(Entity::Subscription),
        "subscriptionItem" => Some(Entity::SubscriptionItem),
        "paymentAttempt" => Some(Entity::PaymentAttempt),
        _ => None,
    }
}

pub(super) fn change(
    entity: Entity,
    message: &EventMessage,
    data: &Data,
) -> Result<Option<Vec<Intent>>, String> {
    let Record::Billing {
        id,
        payer_id,
        payer_type,
        clerk_payer_id,
    } = &message.record
    else {
        return Err(format!(
            "{} without a billing object id",
            message.event_type
        ));
    };
    let mut set = Document::new();
    let text = |v: &Option<String>| v.clone().map_or(Bson::Null, Bson::String);
    set.insert("payerId", text(payer_id));
    set.insert(
        "payerType",
        payer_type.map_or(Bson::Null, |t| t.as_str().into()),
    );
    set.insert("clerkPayerId", text(clerk_payer_id));
    set.insert("status", data.text(&["status"]));
    match entity {
        Entity::Subscription => {
            set.insert("activeAt", data.date(&["active_at"]));
            set.insert("pastDueAt", data.date(&["past_due_at"]));
            set.insert("canceledAt", data.date(&["canceled_at"]));
            set.insert("endedAt", data.date(&["ended_at"]));
            set.insert("latestPaymentId", data.text(&["latest_payment_id"]));
            set.insert("paymentSourceId", data.text(&["payment_source_id"]));
        }
        // Only what both webhooks and the Backend API's items carry: a field one of them
        // lacks would be erased by the newer event of the other (`subscription_id` is the
        // webhook's only; `canceled_at` the Backend API's; a payer has one subscription, in
        // `subscriptions` under the same `payerId`).
        Entity::SubscriptionItem => {
            set.insert("planId", data.text(&["plan_id"]));
            set.insert("planSlug", data.text(&["plan", "slug"]));
            set.insert("planName", data.text(&["plan", "name"]));
            // Webhooks give the plan's `amount`; the Backend API its `fee.amount`.
            let amount = match data.int(&["plan", "amount"]) {
                Bson::Null => data.int(&["plan", "fee", "amount"]),
                amount => amount,
            };
            set.insert("planAmount", amount);
            let currency = match data.text(&["plan", "currency"]) {
                Bson::Null => data.text(&["plan", "fee", "currency"]),
                currency => currency,
            };
            set.insert("planCurrency", currency);
            let interval = match data.text(&["interval"]) {
                Bson::Null => data.text(&["plan_period"]),
                interval => interval,
            };
            set.insert("interval", interval);
            set.insert("isFreeTrial", data.flag(&["is_free_trial"]));
            set.insert("seats", data.int(&["seats", "quantity"]));
            set.insert("periodStart", data.date(&["period_start"]));
            set.insert("periodEnd", data.date(&["period_end"]));
        }
        Entity::PaymentAttempt => {
            set.insert("paymentId", data.text(&["payment_id"]));
            set.insert("chargeType", data.text(&["charge_type"]));
            set.insert("amount", data.int(&["totals", "grand_total", "amount"]));
            set.insert(
                "currency",
                data.text(&["totals", "grand_total", "currency"]),
            );
            set.insert("paidAt", data.date(&["paid_at"]));
            set.insert("failedAt", data.date(&["failed_at"]));
            set.insert("failedReason", data.any(&["failed_reason"]));
            set.insert("billingDate", data.date(&["billing_date"]));
            set.insert("subscriptionItemIds", data.ids(&["subscription_items"]));
        }
        _ => return Err(format!("{} is not a billing event", message.event_type)),
    }
    set.insert("clerkCreatedAt", data.date(&["created_at"]));
    set.insert("clerkUpdatedAt", data.date(&["updated_at"]));
    Ok(Some(vec![profile(entity, id, set)]))
}

pub(super) fn defaults(entity: Entity) -> Document {
    let mut fields = nulls(&PAYER);
    fields.extend(nulls(match entity {
        Entity::Subscription => &SUBSCRIPTION,
        Entity::SubscriptionItem => &ITEM,
        _ => &PAYMENT,
    }));
    fields
}

/// Subscriptions and items: "the plan and status of payer X" in one indexed query
/// (`{payerId, status}`). Payment attempts: "payer X's latest payments" (`{payerId,
/// clerkCreatedAt}`).
pub(super) fn indexes(entity: Entity) -> Vec<(&'static str, Document)> {
    match entity {
        Entity::PaymentAttempt => vec![(
            "payerId_1_clerkCreatedAt_-1",
            doc! {"payerId": 1, "clerkCreatedAt": -1},
        )],
        _ => vec![("payerId_1_status_1", doc! {"payerId": 1, "status": 1})],
    }
}
