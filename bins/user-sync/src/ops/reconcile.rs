//! `user-sync reconcile`: documents whose object Clerk no longer has get the deletion event
//! Clerk's lost webhook would have brought, so the ordinary order rules mark them deleted.
//!
//! Safe by construction, in this order:
//! 1. Every id is listed from Clerk first, for every kind asked for. Any failure stops the
//!    command before anything is published: a partial listing would make every object on
//!    the missing pages look deleted.
//! 2. Candidates are the documents not deleted, created before the listing began (an object
//!    created during the listing may be on a page already read), whose id wasn't listed.
//! 3. Each candidate is asked for by id: only a `404` confirms it. Offset pagination can
//!    skip an object when another is deleted mid-listing; this check catches that.
//! 4. Only with `--apply` are the deletions (`reconcile:<id>`, timed at the listing's start)
//!    published.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bson::{doc, DateTime, Document};
use futures::TryStreamExt;

use super::clerk::api::{ApiError, ClerkApi, List};
use super::clerk::snapshot;
use super::progress::Progress;
use super::publish::{PublishError, Sink};
use crate::domain::Entity;
use crate::store::Store;

/// What to reconcile.
#[derive(Debug, Clone)]
pub struct Options {
    /// Users and/or organizations (memberships aren't reconciled).
    pub kinds: Vec<Entity>,
    /// Objects per page.
    pub page_size: u32,
    /// The most deletions `--apply` publishes (default: a tenth of the documents checked,
    /// at least 10).
    pub max_deletions: Option<u64>,
}

/// The default most deletions one run publishes: 10% of the documents checked, at least
/// 10. A key of another instance (a development key against the production database)
/// lists successfully and would make every document look deleted, and a deletion is final.
fn deletion_limit(documents: u64) -> u64 {
    (documents / 10).max(10)
}

/// Why reconcile stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Clerk's API failed for good: nothing was published.
    #[error("{0} (nothing was published)")]
    Api(#[from] ApiError),
    /// The database could not be read: nothing was published.
    #[error("cannot read the documents: {0} (nothing was published)")]
    Store(#[from] crate::Error),
    /// The broker did not take a deletion.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// More deletions than the limit: nothing was published.
    #[error(
        "{missing} documents have no object in Clerk, more than the limit of {limit} for one \
         run: nothing was published. Check that CLERK_SECRET_KEY belongs to the instance this \
         database follows; if these deletions are right, run again with --max-deletions {missing}"
    )]
    TooMany {
        /// Documents whose object Clerk confirmed missing.
        missing: u64,
        /// The most deletions allowed (`--max-deletions`, or a tenth of the documents
        /// checked, at least 10).
        limit: u64,
    },
    /// A kind that can't be reconciled.
    #[error("{0} can't be reconciled (only users and organizations)")]
    Kind(&'static str),
}

/// What one kind's reconciliation found.
#[derive(Debug, Default)]
pub struct Found {
    /// Ids Clerk listed.
    pub(crate) listed: u64,
    /// Documents checked (not deleted, created before the listing).
    pub(crate) documents: u64,
    /// Ids confirmed missing from Clerk (404): deleted with `--apply`.
    pub missing: Vec<String>,
    /// Not listed, but Clerk still has them (skipped by the listing's paging).
    still_there: Vec<String>,
}

/// What a run found and did.
#[derive(Debug, Default)]
pub struct Report {
    /// By kind, in order.
    pub kinds: Vec<(Entity, Found)>,
    /// The deletions were published.
    pub applied: bool,
    /// When the listing began (the deletions' event time).
    pub started_at: i64,
    /// The most deletions this run would publish.
    pub(crate) limit: u64,
    /// How long it took.
    pub(crate) elapsed: Duration,
}

/// Ids printed per kind; the count is always printed.
const SHOWN_IDS: usize = 100;

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "reconcile {} in {:.1?}",
            if self.applied {
                "applied"
            } else {
                "dry run (add --apply to publish the deletions)"
            },
            self.elapsed
        )?;
        let missing: usize = self.kinds.iter().map(|(_, f)| f.missing.len()).sum();
        if missing as u64 > self.limit {
            writeln!(
                f,
                "  {missing} deletions are more than the limit of {} for one run: --apply would \
                 refuse (see --max-deletions)",
                self.limit
            )?;
        }
        for (kind, found) in &self.kinds {
            writeln!(
                f,
                "  {:<14} listed in Clerk {:>8}   documents checked {:>8}   missing from Clerk {:>6}",
                kind.name(),
                found.listed,
                found.documents,
                found.missing.len()
            )?;
            let verb = if self.applied {
                "deleted"
            } else {
                "would delete"
            };
            for id in found.missing.iter().take(SHOWN_IDS) {
                writeln!(f, "    {verb} {id}")?;
            }
            if found.missing.len() > SHOWN_IDS {
                writeln!(f, "    … and {} more", found.missing.len() - SHOWN_IDS)?;
            }
            if !found.still_there.is_empty() {
                writeln!(
                    f,
                    "    {} not listed but still in Clerk (left alone)",
                    found.still_there.len()
                )?;
            }
        }
        Ok(())
    }
}

/// The ids among `documents` that `listed` lacks, in document order.
pub(crate) fn candidates<'a>(
    listed: &HashSet<String>,
    documents: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    documents
        .into_iter()
        .filter(|id| !listed.contains(*id))
        .map(str::to_string)
        .collect()
}

/// Runs a reconciliation. With a dry-run `sink`, nothing is published.
pub async fn run(
    api: &ClerkApi,
    store: &Store,
    sink: &mut Sink,
    options: &Options,
    progress: &mut Progress,
) -> Result<Report, ReconcileError> {
    let started = Instant::now();
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // 1. Every listing, before anything else.
    let mut listings = Vec::new();
    for &kind in &options.kinds {
        listings.push((kind, list(api, kind, options.page_size, progress).await?));
    }
    // 2. and 3. Candidates, confirmed one by one.
    let mut report = Report {
        started_at,
        applied: !sink.is_dry_run(),
        ..Report::default()
    };
    for (kind, listed) in listings {
        let found = confirm(api, store, kind, &listed, started_at).await?;
        report.kinds.push((kind, found));
    }
    // 4. The deletions, within the limit.
    let missing: u64 = report
        .kinds
        .iter()
        .map(|(_, f)| f.missing.len() as u64)
        .sum();
    let documents: u64 = report.kinds.iter().map(|(_, f)| f.documents).sum();
    report.limit = options
        .max_deletions
        .unwrap_or_else(|| deletion_limit(documents));
    if missing > report.limit && !sink.is_dry_run() {
        return Err(ReconcileError::TooMany {
            missing,
            limit: report.limit,
        });
    }
    publish_deletions(api, sink, &report).await?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The documents of `kind` not deleted and older than the listing, and of those the ones
/// Clerk didn't list, each asked for by id: still there, or missing (a 404).
async fn confirm(
    api: &ClerkApi,
    store: &Store,
    kind: Entity,
    listed: &HashSet<String>,
    started_at: i64,
) -> Result<Found, ReconcileError> {
    let documents = live_ids(store, kind, started_at).await?;
    let mut found = Found {
        listed: listed.len() as u64,
        documents: documents.len() as u64,
        ..Found::default()
    };
    for id in candidates(listed, documents.iter().map(String::as_str)) {
        let there = match kind {
            Entity::User => api.user(&id).await?.is_some(),
            _ => api.organization(&id).await?.is_some(),
        };
        if there {
            found.still_there.push(id);
        } else {
            found.missing.push(id);
        }
    }
    Ok(found)
}

/// A deletion event for each missing object, timed when the listing began.
async fn publish_deletions(
    api: &ClerkApi,
    sink: &mut Sink,
    report: &Report,
) -> Result<(), ReconcileError> {
    let instance = api.instance_id().await;
    for (kind, found) in &report.kinds {
        for id in &found.missing {
            match snapshot::deletion(*kind, id, report.started_at) {
                Ok(mut message) => {
                    message.instance_id.clone_from(&instance);
                    sink.send(*kind, &message).await?
                }
                Err(e) => {
                    tracing::warn!(id, error = %e, "reconcile: no deletion event for this id")
                }
            }
        }
    }
    sink.flush().await?;
    Ok(())
}

/// Every id Clerk has of `kind`; an error if any page fails.
async fn list(
    api: &ClerkApi,
    kind: Entity,
    page_size: u32,
    progress: &mut Progress,
) -> Result<HashSet<String>, ReconcileError> {
    let (list, total) = match kind {
        Entity::User => (List::Users, api.users_count().await),
        Entity::Organization => (List::Organizations, None),
        _ => return Err(ReconcileError::Kind(kind.name())),
    };
    progress.start(kind, total);
    let mut ids = HashSet::new();
    let mut listing = api.listing(list, page_size);
    while let Some(page) = listing.next().await? {
        for object in &page.items {
            if let Some(id) = snapshot::id_of(object) {
                ids.insert(id);
            }
            progress.advance(kind, 0);
        }
    }
    progress.finish(kind);
    Ok(ids)
}

/// The `clerkId`s of `entity`'s documents not deleted and created before `before` (ms).
/// Documents without `createdAt` (written by something else) are never candidates.
async fn live_ids(store: &Store, entity: Entity, before: i64) -> Result<Vec<String>, crate::Error> {
    let filter = doc! {
        "isDeleted": {"$ne": true},
        "createdAt": {"$lt": DateTime::from_millis(before)},
    };
    let mut cursor = store
        .collection(entity)
        .find(filter)
        .projection(doc! {"clerkId": 1, "_id": 0})
        .await?;
    let mut ids = Vec::new();
    while let Some(document) = cursor.try_next().await? {
        if let Ok(id) = Document::get_str(&document, "clerkId") {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deletion_limit_is_a_tenth_of_the_documents_and_at_least_ten() {
        assert_eq!(deletion_limit(0), 10);
        assert_eq!(deletion_limit(99), 10);
        assert_eq!(deletion_limit(2_000), 200);
    }

    #[test]
    fn candidates_are_the_documents_clerk_did_not_list() {
        let listed: HashSet<String> = ["user_1", "user_3"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            candidates(&listed, ["user_1", "user_2", "user_3", "user_4"]),
            vec!["user_2", "user_4"]
        );
        assert!(candidates(&listed, ["user_3"]).is_empty());
        assert_eq!(candidates(&HashSet::new(), ["user_9"]), vec!["user_9"]);
    }
}
