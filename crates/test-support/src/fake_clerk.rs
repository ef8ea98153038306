//! A fake of Clerk's Backend API: the one outside service the tests can't run.
//!
//! It serves what `user-sync backfill` and `reconcile` read, in Clerk's documented shapes
//! (<https://clerk.com/docs/reference/backend-api>, `bapi/2026-05-12.yml`): `GET /v1/users`
//! (a bare array, `limit` 1–500 and `offset`, or the cursor `starting_after`),
//! `/v1/users/count`, `/v1/users/{id}`, `/v1/organizations`,
//! `/v1/organizations/{id}/memberships` and `/invitations`, the instance-wide
//! `/v1/organization_memberships`
//! and `/v1/organization_invitations`, and `/v1/billing/subscription_items` (`{"data":
//! […], "total_count"}`), `/v1/organizations/{id}`, `/v1/instance`; bearer authentication
//! (401 with Clerk's error body otherwise); and faults a test schedules: a 429 with
//! `Retry-After` or a 500 for a given page, any number of times. Every request is logged
//! with its time, its paging and its status.
//!
//! Like Clerk, whose `GET /users` warns that "a large `offset` … gets progressively slower
//! and eventually times out", it refuses a users `offset` beyond [`MAX_OFFSET`] (with a 422
//! that says so), and a cursor combined with a non-zero offset. (The other lists have no
//! cursor: offsets are all Clerk offers there, and all the fake checks is their range.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

/// The fake instance's id (`GET /v1/instance`).
pub const INSTANCE: &str = "ins_fake_backfill";

/// A time all fake objects are created around (2024-11-24, ms).
pub const CREATED: i64 = 1_732_464_000_000;

/// The largest `offset` the fake answers on `/v1/users`.
pub const MAX_OFFSET: u64 = 1_000;

/// A scheduled fault: the next `times` requests for `path` at `offset` (and
/// `starting_after`) get it.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The request path, such as `/v1/users`.
    pub path: String,
    /// The `offset` query parameter it applies to (0 when absent).
    pub offset: u64,
    /// The `starting_after` query parameter it applies to.
    pub starting_after: Option<String>,
    /// 429 or 5xx.
    pub status: u16,
    /// `Retry-After` (seconds), for a 429.
    pub retry_after: Option<u64>,
    /// How many times; `u32::MAX` for a page that never comes.
    pub times: u32,
}

/// One request the fake answered.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its path.
    pub path: String,
    /// Its `offset`.
    pub offset: u64,
    /// Its `starting_after`.
    pub starting_after: Option<String>,
    /// The status answered.
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

/// What the fake holds.
#[derive(Debug, Default)]
pub struct Data {
    /// Users, oldest first.
    pub users: Vec<Value>,
    /// Organizations, oldest first.
    pub organizations: Vec<Value>,
    /// Memberships by organization id, oldest first.
    pub memberships: BTreeMap<String, Vec<Value>>,
    /// Organization invitations, oldest first.
    pub invitations: Vec<Value>,
    /// Billing subscription items, as Clerk lists them (newest first).
    pub subscription_items: Vec<Value>,
    /// Users `/v1/users/count` counts but `/v1/users` doesn't list: what a listing cut
    /// short looks like.
    pub phantom_users: usize,
    /// Faults still to happen.
    pub faults: Vec<Fault>,
    /// Every request answered.
    pub requests: Vec<Request>,
}

struct Shared {
    key: String,
    data: Mutex<Data>,
}

/// A running fake; stops when dropped.
pub struct FakeClerk {
    /// Its base URL, for `CLERK_API_URL` (ends with `/v1`).
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeClerk {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeClerk {
    /// Starts a fake that accepts the secret key `key`.
    pub async fn start(key: &str) -> FakeClerk {
        let shared = Arc::new(Shared {
            key: key.to_string(),
            data: Mutex::new(Data::default()),
        });
        let app = Router::new()
            .route("/v1/instance", get(instance))
            .route("/v1/users", get(users))
            .route("/v1/users/count", get(users_count))
            .route("/v1/users/{id}", get(user))
            .route("/v1/organizations", get(organizations))
            .route("/v1/organizations/{id}", get(organization))
            .route("/v1/organizations/{id}/memberships", get(memberships))
            .route(
                "/v1/organizations/{id}/invitations",
                get(organization_invitations),
            )
            .route("/v1/organization_memberships", get(all_memberships))
            .route("/v1/organization_invitations", get(invitations))
            .route("/v1/billing/subscription_items", get(subscription_items))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the fake Clerk API");
        let address = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeClerk {
            url: format!("http://{address}/v1"),
            shared,
            task,
        }
    }

    /// The fake's data, to change or inspect.
    pub fn data(&self) -> MutexGuard<'_, Data> {
        self.shared.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `n` users `user_<prefix>_<i>`, each with one verified email address and a
    /// distinct `updated_at`.
    pub fn add_users(&self, prefix: &str, n: usize) {
        let mut data = self.data();
        let start = data.users.len();
        for i in 0..n {
            let user = user_object(&format!("user_{prefix}_{i}"), (start + i) as i64);
            data.users.push(user);
        }
    }

    /// Adds `n` organizations `org_<prefix>_<i>`, organization `i` with `members(i)` of the
    /// fake's users (taken in turn) as members.
    pub fn add_organizations(&self, prefix: &str, n: usize, members: impl Fn(usize) -> usize) {
        let mut data = self.data();
        let mut next_user = 0;
        for i in 0..n {
            let id = format!("org_{prefix}_{i}");
            let count = members(i);
            let organization = json!({
                "object": "organization",
                "id": id,
                "name": format!("Organization {i}"),
                "slug": format!("{prefix}-{i}"),
                "image_url": "https://img.clerk.com/org.png",
                "has_image": false,
                "members_count": count,
                "pending_invitations_count": 0,
                "max_allowed_memberships": 0,
                "admin_delete_enabled": true,
                "public_metadata": {"plan": if i % 2 == 0 { "pro" } else { "free" }},
                "private_metadata": {},
                "created_by": data.users.first().map_or(Value::Null, |u| u["id"].clone()),
                "created_at": CREATED + i as i64,
                "updated_at": CREATED + 10_000 + i as i64,
            });
            let mut list = Vec::new();
            for m in 0..count {
                let Some(user) = data.users.get(next_user % data.users.len().max(1)) else {
                    break;
                };
                next_user += 1;
                let user_id = user["id"].clone();
                list.push(json!({
                    "object": "organization_membership",
                    "id": format!("orgmem_{prefix}_{i}_{m}"),
                    "public_metadata": {},
                    "private_metadata": {},
                    "role": if m == 0 { "org:admin" } else { "org:member" },
                    "role_name": if m == 0 { "Admin" } else { "Member" },
                    "permissions": if m == 0 { json!(["org:sys_memberships:manage"]) } else { json!([]) },
                    "created_at": CREATED + m as i64,
                    "updated_at": CREATED + 20_000 + m as i64,
                    "organization": organization.clone(),
                    "public_user_data": {
                        "user_id": user_id,
                        "first_name": user["first_name"].clone(),
                        "last_name": user["last_name"].clone(),
                        "image_url": user["image_url"].clone(),
                        "has_image": false,
                        "identifier": user["email_addresses"][0]["email_address"].clone(),
                    },
                }));
            }
            data.memberships.insert(id, list);
            data.organizations.push(organization);
        }
    }

    /// Adds `per_organization` invitations to each organization, `orginv_<org>_<i>`:
    /// pending, accepted and revoked in turn.
    pub fn add_invitations(&self, per_organization: usize) {
        let mut data = self.data();
        let organizations: Vec<Value> = data.organizations.clone();
        for (o, organization) in organizations.iter().enumerate() {
            let org_id = organization["id"].as_str().unwrap_or_default();
            for i in 0..per_organization {
                let status = ["pending", "accepted", "revoked"][i % 3];
                data.invitations.push(json!({
                    "object": "organization_invitation",
                    "id": format!("orginv_{org_id}_{i}"),
                    "email_address": format!("invitee{i}@{org_id}.example.com"),
                    "role": "org:member",
                    "role_name": "Member",
                    "organization_id": org_id,
                    "inviter_id": null,
                    "status": status,
                    "public_metadata": {},
                    "private_metadata": {},
                    "url": null,
                    "expires_at": CREATED + 30 * 86_400_000,
                    "created_at": CREATED + (o * per_organization + i) as i64,
                    "updated_at": CREATED + 30_000 + (o * per_organization + i) as i64,
                    "public_organization_data": {
                        "id": org_id,
                        "name": organization["name"].clone(),
                        "slug": organization["slug"].clone(),
                        "has_image": false,
                    },
                }));
            }
        }
    }

    /// Gives the first `n` users (and every second organization) a subscription item:
    /// users `pro` (active, or past due for every fifth), organizations `team`.
    pub fn add_subscription_items(&self, n: usize) {
        let mut data = self.data();
        let users: Vec<String> = data
            .users
            .iter()
            .take(n)
            .filter_map(|u| u["id"].as_str().map(str::to_string))
            .collect();
        let organizations: Vec<String> = data
            .organizations
            .iter()
            .step_by(2)
            .filter_map(|o| o["id"].as_str().map(str::to_string))
            .collect();
        let payers = users
            .iter()
            .map(|u| (u.as_str(), "user"))
            .chain(organizations.iter().map(|o| (o.as_str(), "org")));
        for (i, (payer, kind)) in payers.enumerate() {
            let (plan, status) = match kind {
                "user" if i % 5 == 4 => ("pro", "past_due"),
                "user" => ("pro", "active"),
                _ => ("team", "active"),
            };
            data.subscription_items.push(subscription_item_object(
                &format!("csub_item_{payer}"),
                payer,
                kind == "org",
                plan,
                status,
                i as i64,
            ));
        }
        // Clerk lists them newest first.
        data.subscription_items.reverse();
    }

    /// Removes a user, as deleting it in Clerk's dashboard does.
    pub fn delete_user(&self, id: &str) {
        self.data().users.retain(|u| u["id"] != id);
    }

    /// Schedules a fault.
    pub fn fault(&self, fault: Fault) {
        self.data().faults.push(fault);
    }

    /// The requests answered so far.
    pub fn requests(&self) -> Vec<Request> {
        self.data().requests.clone()
    }
}

/// A Clerk user object as `GET /v1/users` returns it.
pub fn user_object(id: &str, i: i64) -> Value {
    let email_id = format!("idn_{id}");
    json!({
        "id": id,
        "object": "user",
        "username": null,
        "first_name": format!("First{i}"),
        "last_name": format!("Last{i}"),
        "image_url": format!("https://img.clerk.com/{id}.png"),
        "has_image": false,
        "primary_email_address_id": email_id,
        "primary_phone_number_id": null,
        "primary_web3_wallet_id": null,
        "password_enabled": true,
        "two_factor_enabled": false,
        "totp_enabled": false,
        "backup_code_enabled": false,
        "email_addresses": [{
            "id": email_id,
            "object": "email_address",
            "email_address": format!("{id}@example.com"),
            "reserved": false,
            "verification": {"status": "verified", "strategy": "email_code", "attempts": 1, "expire_at": null},
            "linked_to": [],
            "created_at": CREATED + i,
            "updated_at": CREATED + i,
        }],
        "phone_numbers": [],
        "web3_wallets": [],
        "passkeys": [],
        "external_accounts": [],
        "saml_accounts": [],
        "public_metadata": {"index": i},
        "private_metadata": {},
        "unsafe_metadata": {},
        "external_id": null,
        "last_sign_in_at": CREATED + 5_000 + i,
        "banned": false,
        "locked": false,
        "lockout_expires_in_seconds": null,
        "verification_attempts_remaining": 100,
        "created_at": CREATED + i,
        "updated_at": CREATED + 60_000 + i,
        "delete_self_enabled": true,
        "create_organization_enabled": true,
        "last_active_at": CREATED + 5_000 + i,
        "legal_accepted_at": null,
    })
}

/// A subscription item as `GET /v1/billing/subscription_items` returns it (its payer
/// with nulls for what doesn't apply; no `subscription_id`, which only webhooks carry).
pub fn subscription_item_object(
    id: &str,
    payer: &str,
    organization: bool,
    plan: &str,
    status: &str,
    i: i64,
) -> Value {
    let amount = if plan == "team" { 9_900 } else { 2_000 };
    json!({
        "object": "commerce_subscription_item",
        "id": id,
        "instance_id": INSTANCE,
        "status": status,
        "plan_id": format!("cplan_{plan}"),
        "price_id": format!("cprice_{plan}"),
        "plan": {
            "object": "commerce_plan",
            "id": format!("cplan_{plan}"),
            "name": plan.to_uppercase(),
            "slug": plan,
            "fee": {"amount": amount, "amount_formatted": format!("{}.00", amount / 100), "currency": "USD", "currency_symbol": "$"},
            "is_default": false,
            "is_recurring": true,
            "for_payer_type": if organization { "org" } else { "user" },
            "free_trial_enabled": false,
        },
        "plan_period": "month",
        "payer_id": format!("cpayer_{payer}"),
        "payer": {
            "object": "commerce_payer",
            "id": format!("cpayer_{payer}"),
            "instance_id": INSTANCE,
            "user_id": if organization { Value::Null } else { json!(payer) },
            "organization_id": if organization { json!(payer) } else { Value::Null },
            "image_url": "https://img.clerk.com/payer.png",
            "created_at": CREATED,
            "updated_at": CREATED,
        },
        "is_free_trial": false,
        "period_start": CREATED,
        "period_end": CREATED + 30 * 86_400_000,
        "canceled_at": null,
        "past_due_at": if status == "past_due" { json!(CREATED + 40_000) } else { Value::Null },
        "ended_at": null,
        "seats": null,
        "created_at": CREATED + i,
        "updated_at": CREATED + 40_000 + i,
    })
}

#[derive(Deserialize)]
struct Paging {
    limit: Option<String>,
    offset: Option<String>,
    starting_after: Option<String>,
}

fn clerk_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"errors": [{"message": message, "long_message": message, "code": code}]})),
    )
        .into_response()
}

/// Authentication, the scheduled faults and the log, around every answer.
fn answer(
    shared: &Shared,
    headers: &HeaderMap,
    path: &str,
    paging: Option<&Paging>,
    body: impl FnOnce(&Data) -> Response,
) -> Response {
    let offset = paging.map_or(0, offset_of);
    let starting_after = paging.and_then(|p| p.starting_after.clone());
    let mut data = shared.data.lock().unwrap_or_else(|e| e.into_inner());
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(shared.key.as_str());
    let response = if !authorized {
        clerk_error(
            StatusCode::UNAUTHORIZED,
            "authentication_invalid",
            "The provided secret key is invalid.",
        )
    } else if let Some(fault) = data.faults.iter_mut().find(|f| {
        f.path == path && f.offset == offset && f.starting_after == starting_after && f.times > 0
    }) {
        fault.times = fault.times.saturating_sub(1);
        let status =
            StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = clerk_error(status, "fault", "scheduled by the test");
        if let Some(seconds) = fault.retry_after {
            response
                .headers_mut()
                .insert("retry-after", seconds.to_string().parse().expect("header"));
        }
        response
    } else if path == "/v1/users" && offset > MAX_OFFSET {
        clerk_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "form_param_value_invalid",
            &format!("offset {offset} is beyond {MAX_OFFSET}: paginate with starting_after"),
        )
    } else if starting_after.is_some() && offset > 0 {
        clerk_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "form_param_value_invalid",
            "starting_after cannot be combined with a non-zero offset",
        )
    } else {
        body(&data)
    };
    data.requests.push(Request {
        path: path.to_string(),
        offset,
        starting_after,
        status: response.status().as_u16(),
        at: Instant::now(),
    });
    response
}

/// `limit` and `offset` as Clerk checks them: limit 1–500 (default 10).
fn page(paging: &Paging) -> Option<(usize, usize)> {
    let limit = paging.limit.as_deref().unwrap_or("10").parse::<usize>();
    let offset = paging.offset.as_deref().unwrap_or("0").parse::<usize>();
    match (limit, offset) {
        (Ok(limit @ 1..=500), Ok(offset)) => Some((limit, offset)),
        _ => None,
    }
}

fn invalid_paging() -> Response {
    clerk_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "form_param_value_invalid",
        "limit must be between 1 and 500, offset a whole number",
    )
}

/// A page of `items` for `paging`: the objects, or Clerk's 422 for bad paging.
fn page_of(items: &[Value], paging: &Paging) -> Option<Vec<Value>> {
    let (limit, offset) = page(paging)?;
    Some(items.iter().skip(offset).take(limit).cloned().collect())
}

/// `/users`' answer: a bare array.
fn bare_page(items: &[Value], paging: &Paging) -> Response {
    match page_of(items, paging) {
        Some(data) => Json(data).into_response(),
        None => invalid_paging(),
    }
}

/// The other lists' answer: `{"data": […], "total_count"}`.
fn wrapped_page(items: &[Value], paging: &Paging) -> Response {
    match page_of(items, paging) {
        Some(data) => Json(json!({"data": data, "total_count": items.len()})).into_response(),
        None => invalid_paging(),
    }
}

fn not_found(what: &str) -> Response {
    clerk_error(
        StatusCode::NOT_FOUND,
        "resource_not_found",
        &format!("{what} not found"),
    )
}

fn offset_of(paging: &Paging) -> u64 {
    paging
        .offset
        .as_deref()
        .and_then(|o| o.parse().ok())
        .unwrap_or(0)
}

async fn users(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<Paging>,
) -> Response {
    answer(&s, &headers, "/v1/users", Some(&q), |data| {
        let Some(after) = &q.starting_after else {
            return bare_page(&data.users, &q);
        };
        match data.users.iter().position(|u| u["id"] == after.as_str()) {
            Some(i) => bare_page(&data.users[i + 1..], &q),
            None => clerk_error(
                StatusCode::BAD_REQUEST,
                "form_param_value_invalid",
                "starting_after names no user",
            ),
        }
    })
}

async fn instance(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    answer(&s, &headers, "/v1/instance", None, |_| {
        Json(json!({"object": "instance", "id": INSTANCE, "environment_type": "development"}))
            .into_response()
    })
}

async fn users_count(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    answer(&s, &headers, "/v1/users/count", None, |data| {
        let total = data.users.len() + data.phantom_users;
        Json(json!({"object": "total_count", "total_count": total})).into_response()
    })
}

async fn user(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    answer(
        &s,
        &headers,
        &format!("/v1/users/{id}"),
        None,
        |data| match data.users.iter().find(|u| u["id"] == id.as_str()) {
            Some(u) => Json(u.clone()).into_response(),
            None => not_found("User"),
        },
    )
}

async fn organizations(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<Paging>,
) -> Response {
    answer(&s, &headers, "/v1/organizations", Some(&q), |data| {
        wrapped_page(&data.organizations, &q)
    })
}

async fn organization(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    answer(
        &s,
        &headers,
        &format!("/v1/organizations/{id}"),
        None,
        |data| match data
            .organizations
            .iter()
            .find(|o| o["id"] == id.as_str() || o["slug"] == id.as_str())
        {
            Some(o) => Json(o.clone()).into_response(),
            None => not_found("Organization"),
        },
    )
}

async fn memberships(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Paging>,
) -> Response {
    let path = format!("/v1/organizations/{id}/memberships");
    answer(&s, &headers, &path, Some(&q), |data| {
        match data.memberships.get(&id) {
            Some(list) => wrapped_page(list, &q),
            None => not_found("Organization"),
        }
    })
}

async fn all_memberships(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<Paging>,
) -> Response {
    answer(
        &s,
        &headers,
        "/v1/organization_memberships",
        Some(&q),
        |data| {
            // Organizations oldest first, each one's members oldest first.
            let all: Vec<Value> = data
                .organizations
                .iter()
                .filter_map(|o| o["id"].as_str())
                .filter_map(|id| data.memberships.get(id))
                .flatten()
                .cloned()
                .collect();
            wrapped_page(&all, &q)
        },
    )
}

async fn organization_invitations(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Paging>,
) -> Response {
    let path = format!("/v1/organizations/{id}/invitations");
    answer(&s, &headers, &path, Some(&q), |data| {
        if !data.organizations.iter().any(|o| o["id"] == id.as_str()) {
            return not_found("Organization");
        }
        let list: Vec<Value> = data
            .invitations
            .iter()
            .filter(|i| i["organization_id"] == id.as_str())
            .cloned()
            .collect();
        wrapped_page(&list, &q)
    })
}

async fn invitations(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<Paging>,
) -> Response {
    answer(
        &s,
        &headers,
        "/v1/organization_invitations",
        Some(&q),
        |data| wrapped_page(&data.invitations, &q),
    )
}

async fn subscription_items(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<Paging>,
) -> Response {
    answer(
        &s,
        &headers,
        "/v1/billing/subscription_items",
        Some(&q),
        |data| wrapped_page(&data.subscription_items, &q),
    )
}
