//! Clerk's Backend API, read-only: the lists and objects `backfill` and `reconcile` need.
//!
//! Objects are kept as the JSON text Clerk sent (`Box<RawValue>`), so a snapshot carries
//! Clerk's `data` exactly as a webhook would. Every request is bounded: a timeout per
//! request, a cap on the body read, and a retry policy ([`next_step`]) that waits out
//! `429` as `Retry-After` says, retries `5xx` and network failures with backoff a bounded
//! number of times, and stops at once on anything else. The secret key goes into the
//! `Authorization` header and nowhere else: no error or log line carries it.

use std::time::Duration;

use common::backoff::Backoff;
use common::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ops::clerk::snapshot::id_of;

/// Clerk's documented maximum page size for its list endpoints.
pub const MAX_PAGE_SIZE: u32 = 500;

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
        status: u16,
        /// The path asked for (no query string, no key).
        path: String,
        /// Clerk's error message, when it gave one; capped.
        message: String,
    },
    /// The server could not be reached, or the answer did not arrive, through every retry.
    #[error("cannot reach Clerk at {path} (CLERK_API_URL): {reason}")]
    Unreachable {
        path: String,
        /// The last failure.
        reason: String,
    },
    /// The answer was not the JSON the documentation describes.
    #[error("unexpected answer from Clerk for GET {path}: {reason}")]
    Unexpected {
        path: String,
        /// What was wrong.
        reason: String,
    },
}

/// How persistent requests are.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts for a `5xx` or a network failure, the first included.
    pub attempts: u32,
    /// The first wait after such a failure; doubled each time.
    pub first_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// `429`s waited out for one request before giving up.
    pub rate_limited: u32,
    /// The longest `Retry-After` honoured (a longer one is waited for this long).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            rate_limited: 50,
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// What one failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Wait this long, then ask again.
    Retry(Duration),
    /// Stop: the failure is final.
    Fail,
}

/// The answer (or its absence) of one attempt, as the retry decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt<'a> {
    /// An HTTP status other than success, with its `Retry-After` header if any.
    Status(u16, Option<&'a str>),
    /// No answer: connection refused or reset, timeout.
    Network,
}

/// The retry decision. `failures` counts earlier failures of the same kind for this
/// request (0 for the first); 429s and the rest are counted apart, so a rate limit never
/// uses up the attempts meant for outages.
fn next_step(policy: &RetryPolicy, attempt: Attempt<'_>, failures: u32) -> Step {
    let backoff = || {
        let backoff = Backoff::new(policy.first_backoff, policy.max_backoff);
        Step::Retry(backoff.delay(failures + 1))
    };
    match attempt {
        Attempt::Status(429, retry_after) => {
            if failures >= policy.rate_limited {
                return Step::Fail;
            }
            // Retry-After is seconds here (Clerk sends seconds); an HTTP date or garbage
            // falls back to the backoff.
            match retry_after.and_then(|v| v.trim().parse::<f64>().ok()) {
                Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Step::Retry(
                    Duration::from_secs_f64(seconds.min(policy.max_retry_after.as_secs_f64())),
                ),
                _ => backoff(),
            }
        }
        Attempt::Status(500..=599, _) | Attempt::Network => {
            if failures + 1 >= policy.attempts {
                Step::Fail
            } else {
                backoff()
            }
        }
        Attempt::Status(..) => Step::Fail,
    }
}

/// One page of a list.
#[derive(Debug)]
pub(crate) struct Page {
    /// The objects, as Clerk sent them.
    pub(crate) items: Vec<Box<RawValue>>,
    /// `total_count`, where the endpoint gives it.
    pub(crate) total: Option<u64>,
}

/// The list answers other than `/users`'s bare array.
#[derive(Deserialize)]
struct Wrapped {
    data: Vec<Box<RawValue>>,
    #[serde(default)]
    total_count: Option<u64>,
}

/// A list answer: `/users` answers a bare array, the others `{"data": […], "total_count"}`.
/// (Told apart by the first byte: serde's untagged enums can't hold raw values.)
fn read_list(body: &[u8]) -> Result<Page, serde_json::Error> {
    if body.trim_ascii_start().first() == Some(&b'[') {
        let items: Vec<Box<RawValue>> = serde_json::from_slice(body)?;
        return Ok(Page { items, total: None });
    }
    let wrapped: Wrapped = serde_json::from_slice(body)?;
    Ok(Page {
        items: wrapped.data,
        total: wrapped.total_count,
    })
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

/// Items re-read at the start of each page: offset paging skips an object when an earlier
/// one is deleted between two requests; starting each page this many items early catches
/// up to that many deletions per page (ids already seen are dropped).
const OVERLAP: u64 = 20;

/// Offset paging over a list sorted oldest first, without I/O: which offset to ask for
/// next, which items of an answer are new, and when the list is done.
#[derive(Debug)]
struct Pager {
    size: u32,
    offset: u64,
    previous: std::collections::HashSet<String>,
    done: bool,
}

impl Pager {
    /// Paging by `size` (clamped to 1..=[`MAX_PAGE_SIZE`]).
    pub(crate) fn new(size: u32) -> Self {
        Pager {
            size: size.clamp(1, MAX_PAGE_SIZE),
            offset: 0,
            previous: std::collections::HashSet::new(),
            done: false,
        }
    }

    /// The offset to ask for next, or `None` when the list is done.
    fn next_offset(&self) -> Option<u64> {
        (!self.done).then_some(self.offset)
    }

    /// The page size to ask for.
    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    /// Takes the answer for [`Pager::next_offset`]: the items not already seen, in order. A
    /// full page with nothing new means the server ignores `offset` (it would never end).
    pub(crate) fn take(&mut self, items: Vec<Box<RawValue>>) -> Result<Vec<Box<RawValue>>, String> {
        let full = items.len() >= self.size as usize;
        let ids: Vec<Option<String>> = items.iter().map(|item| id_of(item)).collect();
        let fresh: Vec<Box<RawValue>> = items
            .into_iter()
            .zip(&ids)
            .filter(|(_, id)| id.as_ref().is_none_or(|id| !self.previous.contains(id)))
            .map(|(item, _)| item)
            .collect();
        if full && fresh.is_empty() {
            return Err(format!(
                "the page at offset {} holds only objects already read: the server ignores \
                 `offset` (is CLERK_API_URL Clerk's Backend API?)",
                self.offset
            ));
        }
        if full {
            let overlap = OVERLAP.min(u64::from(self.size) - 1);
            self.offset += u64::from(self.size) - overlap;
            self.previous = ids.into_iter().flatten().collect();
        } else {
            self.done = true;
        }
        Ok(fresh)
    }
}

/// A list of the Backend API.
#[derive(Debug, Clone)]
pub(crate) enum List {
    /// `/users`
    Users,
    /// `/organizations`
    Organizations,
    /// `/organizations/{id}/memberships`
    Memberships(String),
}

impl List {
    /// Its path under the API's base.
    fn path(&self) -> String {
        match self {
            List::Users => "/users".to_string(),
            List::Organizations => "/organizations".to_string(),
            List::Memberships(id) => format!("/organizations/{}/memberships", segment(id)),
        }
    }
}

/// A list read page by page (see [`Pager`]).
pub(crate) struct Listing<'a> {
    api: &'a ClerkApi,
    path: String,
    pager: Pager,
}

impl Listing<'_> {
    /// The next page's new objects (and Clerk's total, where it gives one); `None` once
    /// the list is done.
    pub(crate) async fn next(&mut self) -> Result<Option<Page>, ApiError> {
        let Some(offset) = self.pager.next_offset() else {
            return Ok(None);
        };
        let page = self.api.page(&self.path, offset, self.pager.size()).await?;
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
            pager: Pager::new(page_size),
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

    /// One page of the list at `path`, oldest first.
    async fn page(&self, path: &str, offset: u64, limit: u32) -> Result<Page, ApiError> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let query = [
            ("limit", limit.to_string()),
            ("offset", offset.to_string()),
            ("order_by", "+created_at".to_string()),
        ];
        let (status, body) = self.get(path, &query).await?;
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

    /// One GET with the retry policy: the final status and body, or why there is none.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<(u16, Vec<u8>), ApiError> {
        let url = format!("{}{}", self.base, path);
        let (mut rate_limited, mut failed) = (0u32, 0u32);
        loop {
            let sent = self
                .http
                .get(&url)
                .query(query)
                .bearer_auth(self.key.expose_secret())
                .send()
                .await;
            let failure = match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match status {
                        401 | 403 => return Err(ApiError::Unauthorized { status }),
                        429 | 500..=599 => {
                            let retry_after = response
                                .headers()
                                .get(reqwest::header::RETRY_AFTER)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            Failure::Status(status, retry_after)
                        }
                        _ => match read_capped(response).await {
                            Ok(body) => return Ok((status, body)),
                            Err(reason) => Failure::Network(reason),
                        },
                    }
                }
                Err(e) => Failure::Network(without_url(&e)),
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

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
            rate_limited: 4,
            max_retry_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_rate_limit_waits_what_retry_after_says() {
        let p = policy();
        assert_eq!(
            next_step(&p, Attempt::Status(429, Some("2")), 0),
            Step::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            next_step(&p, Attempt::Status(429, Some(" 0.5 ")), 1),
            Step::Retry(Duration::from_millis(500))
        );
        // Capped, and a value that isn't seconds falls back to the backoff.
        assert_eq!(
            next_step(&p, Attempt::Status(429, Some("86400")), 0),
            Step::Retry(Duration::from_secs(60))
        );
        assert_eq!(
            next_step(
                &p,
                Attempt::Status(429, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
                0
            ),
            Step::Retry(Duration::from_millis(100))
        );
        assert_eq!(
            next_step(&p, Attempt::Status(429, Some("-1")), 0),
            Step::Retry(Duration::from_millis(100))
        );
        // …`rate_limited` times for one request, then no more.
        assert_eq!(
            next_step(&p, Attempt::Status(429, Some("1")), 3),
            Step::Retry(Duration::from_secs(1))
        );
        assert_eq!(
            next_step(&p, Attempt::Status(429, Some("1")), 4),
            Step::Fail
        );
    }

    #[test]
    fn outages_back_off_a_bounded_number_of_times() {
        let p = policy();
        for attempt in [
            Attempt::Status(500, None),
            Attempt::Status(503, Some("1")),
            Attempt::Network,
        ] {
            assert_eq!(
                next_step(&p, attempt, 0),
                Step::Retry(Duration::from_millis(100))
            );
            assert_eq!(
                next_step(&p, attempt, 1),
                Step::Retry(Duration::from_millis(200))
            );
            assert_eq!(next_step(&p, attempt, 2), Step::Fail);
        }
        let patient = RetryPolicy { attempts: 100, ..p };
        assert_eq!(
            next_step(&patient, Attempt::Network, 40),
            Step::Retry(Duration::from_millis(250)),
            "the backoff is capped and never overflows"
        );
    }

    #[test]
    fn other_answers_are_final() {
        for status in [400, 401, 403, 404, 422, 302] {
            assert_eq!(
                next_step(&policy(), Attempt::Status(status, Some("1")), 0),
                Step::Fail
            );
        }
    }

    fn objects(ids: &[u32]) -> Vec<Box<RawValue>> {
        ids.iter()
            .map(|i| RawValue::from_string(format!(r#"{{"id":"u{i}"}}"#)).unwrap())
            .collect()
    }

    fn ids(items: &[Box<RawValue>]) -> Vec<String> {
        items.iter().filter_map(|i| id_of(i)).collect()
    }

    /// Serves `list` (oldest first) as Clerk would, and reads it with a pager.
    fn read_all(
        list: &[u32],
        size: u32,
        mut between_pages: impl FnMut(&mut Vec<u32>),
    ) -> Vec<String> {
        let mut list = list.to_vec();
        let mut pager = Pager::new(size);
        let mut read = Vec::new();
        while let Some(offset) = pager.next_offset() {
            let page: Vec<u32> = list
                .iter()
                .skip(offset as usize)
                .take(pager.size() as usize)
                .copied()
                .collect();
            read.extend(ids(&pager.take(objects(&page)).unwrap()));
            between_pages(&mut list);
        }
        read
    }

    #[test]
    fn paging_reads_everything_once_and_ends() {
        let list: Vec<u32> = (0..95).collect();
        for size in [1, 2, 10, 21, 50, 95, 500] {
            let read = read_all(&list, size, |_| {});
            let want: Vec<String> = list.iter().map(|i| format!("u{i}")).collect();
            assert_eq!(read, want, "size {size}");
        }
        assert!(read_all(&[], 10, |_| {}).is_empty());
    }

    #[test]
    fn paging_misses_nothing_when_objects_are_deleted_or_added_mid_listing() {
        let list: Vec<u32> = (0..200).collect();
        // Before each next page, the oldest remaining object is deleted and a new one added.
        let mut next_new = 1000;
        let read = read_all(&list, 30, |l| {
            l.remove(0);
            l.push(next_new);
            next_new += 1;
        });
        for i in 30..200 {
            assert!(read.contains(&format!("u{i}")), "u{i} skipped");
        }
        let mut unique = read.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), read.len(), "an object read twice");
    }

    #[test]
    fn a_server_that_ignores_offset_is_an_error_not_an_endless_loop() {
        let mut pager = Pager::new(3);
        assert_eq!(pager.take(objects(&[1, 2, 3])).unwrap().len(), 3);
        let e = pager.take(objects(&[1, 2, 3])).unwrap_err();
        assert!(e.contains("ignores `offset`"), "{e}");
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

    #[test]
    fn lists_read_bare_and_wrapped() {
        let bare = read_list(br#" [{"id":"user_1"},{"id":"user_2"}]"#).unwrap();
        assert_eq!((bare.items.len(), bare.total), (2, None));
        assert_eq!(bare.items[1].get(), r#"{"id":"user_2"}"#);
        let wrapped = read_list(br#"{"data":[{"id":"org_1"}],"total_count":7}"#).unwrap();
        assert_eq!((wrapped.items.len(), wrapped.total), (1, Some(7)));
        assert!(read_list(br#"{"errors":[]}"#).is_err());
    }
}
