//! Clerk's Backend API, read-only: the lists and objects `backfill` and `reconcile` need.
//!
//! Objects are kept as the JSON text Clerk sent (`Box<RawValue>`), so a snapshot carries
//! Clerk's `data` exactly as a webhook would. Every request is bounded: a timeout per
//! request, a cap on the body read, and a retry policy ([`next_step`]) that waits out
//! `429` as `Retry-After` says, retries `5xx` and network failures with backoff a bounded
//! number of times, and stops at once on anything else. The secret key goes into the
//! `Authorization` header and nowhere else: no error or log line carries it.

use std::time::Duration;

use common::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::pager::{read_list, Page, Pager, Position, MAX_PAGE_SIZE};
use super::retry::{next_step, Attempt, RetryPolicy, Step};
use super::snapshot::id_of;

/// How long a best-effort call ([`ClerkApi::instance_id`], [`ClerkApi::users_count`]) may
/// take.
const BEST_EFFORT: Duration = Duration::from_secs(5);

/// The longest answer read (a page of 500 users is about 1.5 MB).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Why a call to Clerk failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 or 403: the key is wrong, revoked or of another instance. Never retried.
    #[error(
        "Clerk refused the secret key ({status}): check CLERK_SECRET_KEY (the instance's \
         secret key, sk_live_… or sk_test_…)"
    )]
    Unauthorized {
        /// 401 or 403.
        status: u16,
    },
    /// An answer that retrying can't change (404 of a list, 400, 422, …), or a failure that
    /// lasted through every retry.
    #[error("Clerk answered {status} for GET {path}: {message}")]
    Status {
        /// Clerk's last answer.
        status: u16,
        /// The path asked for (no query string, no key).
        path: String,
        /// Clerk's error message, when it gave one; capped.
        message: String,
    },
    /// The server could not be reached, or the answer did not arrive, through every retry.
    #[error("cannot reach Clerk at {path} (CLERK_API_URL): {reason}")]
    Unreachable {
        /// The path asked for.
        path: String,
        /// The last failure.
        reason: String,
    },
    /// The answer was not the JSON the documentation describes.
    #[error("unexpected answer from Clerk for GET {path}: {reason}")]
    Unexpected {
        /// The path asked for.
        path: String,
        /// What was wrong.
        reason: String,
    },
}

/// Clerk's error body: `{"errors":[{"message","long_message","code"}]}`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    long_message: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// A list of the Backend API.
#[derive(Debug, Clone)]
pub(crate) enum List {
    /// `/users`, by cursor.
    Users,
    /// `/organizations`
    Organizations,
    /// `/organizations/{id}/memberships`: one organization's.
    Memberships(String),
    /// `/organizations/{id}/invitations`: one organization's, whatever their status.
    OrganizationInvitations(String),
    /// `/organization_memberships`: every organization's, in one list.
    AllMemberships,
    /// `/organization_invitations`: every organization's, whatever their status.
    Invitations,
    /// `/billing/subscription_items`: every payer's, free plans included.
    SubscriptionItems,
}

impl List {
    /// Its path under the API's base.
    fn path(&self) -> String {
        match self {
            List::Users => "/users".to_string(),
            List::Organizations => "/organizations".to_string(),
            List::Memberships(id) => format!("/organizations/{}/memberships", segment(id)),
            List::OrganizationInvitations(id) => {
                format!("/organizations/{}/invitations", segment(id))
            }
            List::AllMemberships => "/organization_memberships".to_string(),
            List::Invitations => "/organization_invitations".to_string(),
            List::SubscriptionItems => "/billing/subscription_items".to_string(),
        }
    }

    /// The query besides the page's position and size: oldest first where the endpoint
    /// takes an order (new objects then come last, behind the pages already read); the
    /// billing list has none (newest first: the offset pager's overlap absorbs what is
    /// added meanwhile), and needs `paginated` and `include_free` to page through all.
    fn query(&self) -> Vec<(&'static str, String)> {
        match self {
            List::SubscriptionItems => vec![
                ("paginated", "true".to_string()),
                ("include_free", "true".to_string()),
            ],
            _ => vec![("order_by", "+created_at".to_string())],
        }
    }

    /// How it is paged: only `/users` has a cursor.
    fn pager(&self, page_size: u32) -> Pager {
        match self {
            List::Users => Pager::cursor(page_size),
            _ => Pager::new(page_size),
        }
    }
}

/// A list read page by page (see [`Pager`]).
pub(crate) struct Listing<'a> {
    api: &'a ClerkApi,
    path: String,
    query: Vec<(&'static str, String)>,
    pager: Pager,
}

impl Listing<'_> {
    /// The next page's new objects (and Clerk's total, where it gives one); `None` once
    /// the list is done.
    pub(crate) async fn next(&mut self) -> Result<Option<Page>, ApiError> {
        let page = loop {
            let Some(position) = self.pager.next().cloned() else {
                return Ok(None);
            };
            let mut query = vec![(
                "limit",
                self.pager.size().clamp(1, MAX_PAGE_SIZE).to_string(),
            )];
            match &position {
                Position::Offset(offset) => query.push(("offset", offset.to_string())),
                Position::After(Some(id)) => query.push(("starting_after", id.clone())),
                Position::After(None) => {}
            }
            query.extend(self.query.iter().cloned());
            match self.api.page(&self.path, &query).await {
                // A cursor whose object went between two pages: start after an earlier one.
                Err(ApiError::Status { status, .. })
                    if matches!(status, 400 | 404 | 422)
                        && matches!(position, Position::After(Some(_)))
                        && self.pager.step_back() =>
                {
                    tracing::warn!(
                        path = self.path,
                        status,
                        "Clerk API: the cursor's object is gone; starting after the one before it"
                    );
                }
                page => break page?,
            }
        };
        let items = self
            .pager
            .take(page.items)
            .map_err(|reason| ApiError::Unexpected {
                path: self.path.clone(),
                reason,
            })?;
        Ok(Some(Page {
            items,
            total: page.total,
        }))
    }
}

/// A read-only client of the Backend API.
#[derive(Clone)]
pub struct ClerkApi {
    http: reqwest::Client,
    base: String,
    key: SecretString,
    policy: RetryPolicy,
}

impl ClerkApi {
    /// A client of `base` (such as `https://api.clerk.com/v1`) with `key`.
    pub fn new(base: &str, key: SecretString, policy: RetryPolicy) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("user-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Unreachable {
                path: base.to_string(),
                reason: e.to_string(),
            })?;
        Ok(ClerkApi {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
            policy,
        })
    }

    /// Reads `list` page by page, `page_size` objects at a time, oldest first.
    pub(crate) fn listing(&self, list: List, page_size: u32) -> Listing<'_> {
        Listing {
            api: self,
            path: list.path(),
            query: list.query(),
            pager: list.pager(page_size),
        }
    }

    /// `GET /instance`: the instance's id (`ins_…`), which webhooks carry as `instance_id`.
    /// Best effort: nothing depends on it, so `None` when Clerk doesn't answer within
    /// [`BEST_EFFORT`] (no waiting out rate limits for it).
    pub(crate) async fn instance_id(&self) -> Option<String> {
        let object = tokio::time::timeout(BEST_EFFORT, self.object("/instance")).await;
        id_of(&object.ok()?.ok()??)
    }

    /// `GET /users/count`: how many users the instance has, for the progress bar only.
    /// Best effort, as [`ClerkApi::instance_id`].
    pub(crate) async fn users_count(&self) -> Option<u64> {
        #[derive(Deserialize)]
        struct Count {
            total_count: u64,
        }
        let object = tokio::time::timeout(BEST_EFFORT, self.object("/users/count")).await;
        let object = object.ok()?.ok()??;
        serde_json::from_str::<Count>(object.get())
            .ok()
            .map(|c| c.total_count)
    }

    /// `GET /users/{id}`: `None` when Clerk has no such user (404).
    pub(crate) async fn user(&self, id: &str) -> Result<Option<Box<RawValue>>, ApiError> {
        self.object(&format!("/users/{}", segment(id))).await
    }

    /// `GET /organizations/{id}`: `None` when Clerk has no such organization (404).
    pub(crate) async fn organization(&self, id: &str) -> Result<Option<Box<RawValue>>, ApiError> {
        self.object(&format!("/organizations/{}", segment(id)))
            .await
    }

    /// One page of the list at `path`.
    async fn page(&self, path: &str, query: &[(&str, String)]) -> Result<Page, ApiError> {
        let (status, body) = self.get(path, query).await?;
        if status != 200 {
            return Err(refusal(status, path, &body));
        }
        read_list(&body).map_err(|e| ApiError::Unexpected {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    async fn object(&self, path: &str) -> Result<Option<Box<RawValue>>, ApiError> {
        let (status, body) = self.get(path, &[]).await?;
        match status {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| ApiError::Unexpected {
                    path: path.to_string(),
                    reason: e.to_string(),
                }),
            404 => Ok(None),
            _ => Err(refusal(status, path, &body)),
        }
    }

    /// One request: its status and body; a failure the policy may retry; or an error
    /// that no retry can fix (our key refused).
    async fn attempt(
        &self,
        url: &str,
        query: &[(&str, String)],
    ) -> Result<Result<(u16, Vec<u8>), Failure>, ApiError> {
        let sent = self
            .http
            .get(url)
            .query(query)
            .bearer_auth(self.key.expose_secret())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return Ok(Err(Failure::Network(without_url(&e)))),
        };
        let status = response.status().as_u16();
        Ok(match status {
            401 | 403 => return Err(ApiError::Unauthorized { status }),
            429 | 500..=599 => {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                Err(Failure::Status(status, retry_after))
            }
            _ => match read_capped(response).await {
                Ok(body) => Ok((status, body)),
                Err(reason) => Err(Failure::Network(reason)),
            },
        })
    }

    /// One GET with the retry policy: the final status and body, or why there is none.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<(u16, Vec<u8>), ApiError> {
        let url = format!("{}{}", self.base, path);
        let (mut rate_limited, mut failed) = (0u32, 0u32);
        loop {
            let failure = match self.attempt(&url, query).await? {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            let (step, count) = match &failure {
                Failure::Status(429, retry_after) => {
                    let step = next_step(
                        &self.policy,
                        Attempt::Status(429, retry_after.as_deref()),
                        rate_limited,
                    );
                    rate_limited += 1;
                    (step, rate_limited)
                }
                Failure::Status(status, _) => {
                    let step = next_step(&self.policy, Attempt::Status(*status, None), failed);
                    failed += 1;
                    (step, failed)
                }
                Failure::Network(_) => {
                    let step = next_step(&self.policy, Attempt::Network, failed);
                    failed += 1;
                    (step, failed)
                }
            };
            match (step, failure) {
                (Step::Retry(wait), failure) => {
                    let why = match failure {
                        Failure::Status(status, _) => format!("status {status}"),
                        Failure::Network(reason) => reason,
                    };
                    tracing::warn!(
                        path,
                        wait_ms = wait.as_millis() as u64,
                        why,
                        "Clerk API: waiting before asking again"
                    );
                    tokio::time::sleep(wait).await;
                }
                (Step::Fail, Failure::Status(status, _)) => {
                    return Err(ApiError::Status {
                        status,
                        path: path.to_string(),
                        message: format!("still failing after {count} attempts"),
                    })
                }
                (Step::Fail, Failure::Network(reason)) => {
                    return Err(ApiError::Unreachable {
                        path: path.to_string(),
                        reason: format!("{reason} ({count} attempts)"),
                    })
                }
            }
        }
    }
}

/// A failed attempt.
enum Failure {
    /// 429 or 5xx, with `Retry-After`.
    Status(u16, Option<String>),
    /// No answer, or an answer cut short.
    Network(String),
}

/// A path segment: ids are `user_…`-like, but nothing typed on a command line may change
/// the path.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The body, read up to [`MAX_BODY_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| without_url(&e))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!("answer larger than {MAX_BODY_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error without its URL (the query string is harmless, but the message reads
/// better without it).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The error for a final non-success answer, with Clerk's message when it gave one.
fn refusal(status: u16, path: &str, body: &[u8]) -> ApiError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.errors.into_iter().next())
        .and_then(|e| e.long_message.or(e.message))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    ApiError::Status {
        status,
        path: path.to_string(),
        message: message.chars().take(300).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the fake Clerk API (which answers 400 for a cursor naming no user): a user
    /// deleted between two pages, the one the next page starts after, is stepped over.
    #[tokio::test]
    async fn users_are_read_by_cursor_past_a_cursor_user_deleted_between_pages() {
        let fake = test_support::fake_clerk::FakeClerk::start("sk_test_cursor").await;
        fake.add_users("c", 25);
        let api = ClerkApi::new(
            &fake.url,
            SecretString::from("sk_test_cursor".to_string()),
            RetryPolicy::default(),
        )
        .unwrap();
        let mut listing = api.listing(List::Users, 10);
        let mut read: Vec<String> = Vec::new();
        let first = listing.next().await.unwrap().unwrap();
        read.extend(first.items.iter().filter_map(|i| id_of(i)));
        fake.delete_user("user_c_9");
        while let Some(page) = listing.next().await.unwrap() {
            read.extend(page.items.iter().filter_map(|i| id_of(i)));
        }
        let want: Vec<String> = (0..25).map(|i| format!("user_c_{i}")).collect();
        assert_eq!(read, want);
        let requests = fake.requests();
        let after: Vec<(Option<&str>, u16)> = requests
            .iter()
            .filter(|r| r.path == "/v1/users")
            .map(|r| (r.starting_after.as_deref(), r.status))
            .collect();
        assert_eq!(
            after,
            [
                (None, 200),
                (Some("user_c_9"), 400),
                (Some("user_c_8"), 200),
                (Some("user_c_19"), 200),
            ]
        );
    }

    #[test]
    fn ids_cannot_change_the_path() {
        assert_eq!(segment("user_2abc-DEF"), "user_2abc-DEF");
        assert_eq!(segment("../users?limit=1"), "%2E%2E%2Fusers%3Flimit%3D1");
    }

    #[test]
    fn clerk_error_bodies_give_their_message() {
        let body = br#"{"errors":[{"message":"not found","long_message":"No organization was found with id org_x","code":"resource_not_found"}]}"#;
        let e = refusal(404, "/organizations/org_x/memberships", body);
        assert_eq!(
            e.to_string(),
            "Clerk answered 404 for GET /organizations/org_x/memberships: No organization was found with id org_x"
        );
    }
}
