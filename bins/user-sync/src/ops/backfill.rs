//! `user-sync backfill`: every object Clerk already has, as snapshot events into the topics
//! clerk-sync publishes to, so the consumer applies them under the same order rules as
//! webhooks (see `ops::clerk::snapshot` for why a snapshot never overwrites newer data).
//!
//! Pages are read one at a time and published as they arrive, so memory stays at about one
//! page whatever the instance's size; up to `MAX_IN_FLIGHT` (1,000) messages await the broker's
//! acknowledgement at once. A run that fails part-way can simply be run again: every id is
//! deterministic, so what was published already is recorded as `duplicate`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::clerk::api::{ApiError, ClerkApi, List};
use super::clerk::snapshot;
use super::progress::Progress;
use super::publish::{PublishError, Sink};
use crate::domain::Entity;

/// The kinds Clerk's Backend API lists, in the order backfill reads them. (Sessions,
/// subscriptions and payment attempts are not listed: they come from webhooks only. A
/// payer's subscription is one request per payer; its items, which say the plan and the
/// status, are one instance-wide list.)
pub const KINDS: [Entity; 5] = [
    Entity::User,
    Entity::Organization,
    Entity::Membership,
    Entity::Invitation,
    Entity::SubscriptionItem,
];

/// What to backfill.
#[derive(Debug, Clone)]
pub struct Options {
    /// The kinds of object (default: all).
    pub kinds: Vec<Entity>,
    /// Objects per page (at most [`crate::MAX_PAGE_SIZE`]).
    pub page_size: u32,
    /// Only these users (`--user`).
    pub users: Vec<String>,
    /// Only these organizations, with their memberships (`--organization`).
    pub organizations: Vec<String>,
}

impl Options {
    fn wants(&self, kind: Entity) -> bool {
        self.kinds.contains(&kind)
    }

    fn targeted(&self) -> bool {
        !self.users.is_empty() || !self.organizations.is_empty()
    }
}

/// Why a backfill stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Clerk's API failed for good.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The broker did not take a message.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Objects read from Clerk, by kind.
    pub fetched: BTreeMap<Entity, u64>,
    /// Snapshot events the broker acknowledged (or, in a dry run, that would be published).
    pub published: BTreeMap<Entity, u64>,
    /// Objects that couldn't become an event, with the reason (the first few).
    pub(crate) skipped: Vec<String>,
    /// How many objects were skipped.
    pub skipped_count: u64,
    /// Ids asked for with `--user`/`--organization` that Clerk doesn't have.
    not_found: Vec<String>,
    /// What the run saw that an operator should look at (it still published everything).
    warnings: Vec<String>,
    /// How long it took.
    pub(crate) elapsed: Duration,
    /// Nothing was published.
    pub(crate) dry_run: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "would publish"
        } else {
            "published"
        };
        writeln!(
            f,
            "backfill {} in {:.1?}{}",
            if self.dry_run { "dry run" } else { "done" },
            self.elapsed,
            if self.dry_run {
                " (nothing published)"
            } else {
                ""
            }
        )?;
        for kind in KINDS {
            if let Some(fetched) = self.fetched.get(&kind) {
                let published = self.published.get(&kind).copied().unwrap_or(0);
                writeln!(
                    f,
                    "  {:<18} fetched {fetched:>8}   {verb} {published:>8}",
                    kind.name()
                )?;
            }
        }
        if self.skipped_count > 0 {
            writeln!(f, "  skipped {} objects:", self.skipped_count)?;
            for reason in &self.skipped {
                writeln!(f, "    {reason}")?;
            }
        }
        for id in &self.not_found {
            writeln!(f, "  not found in Clerk: {id}")?;
        }
        for warning in &self.warnings {
            writeln!(f, "  warning: {warning}")?;
        }
        Ok(())
    }
}

/// Skip reasons kept for the summary.
const SHOWN_SKIPS: usize = 20;

/// Runs a backfill: reads from `api`, sends to `sink`, reports to `progress`.
pub async fn run(
    api: &ClerkApi,
    sink: &mut Sink,
    options: &Options,
    progress: &mut Progress,
) -> Result<Summary, BackfillError> {
    let started = Instant::now();
    let summary = Summary {
        dry_run: sink.is_dry_run(),
        ..Summary::default()
    };
    let mut run = Run {
        sink,
        progress,
        summary,
        instance: api.instance_id().await,
    };
    if options.targeted() {
        // `--user` and `--organization` name what to read; `--entities` still says whether
        // an organization's memberships come with it.
        for id in &options.users {
            match api.user(id).await? {
                Some(object) => run.publish(Entity::User, &object).await?,
                None => run.summary.not_found.push(id.clone()),
            }
        }
        for asked in &options.organizations {
            let Some(object) = api.organization(asked).await? else {
                run.summary.not_found.push(asked.clone());
                continue;
            };
            if options.wants(Entity::Organization) {
                run.publish(Entity::Organization, &object).await?;
            }
            // Clerk also answers a slug: its memberships are listed by the id.
            let id = snapshot::id_of(&object).unwrap_or_else(|| asked.clone());
            if options.wants(Entity::Membership) {
                let list = List::Memberships(id.clone());
                run.list(api, Entity::Membership, list, options.page_size)
                    .await?;
            }
            if options.wants(Entity::Invitation) {
                let list = List::OrganizationInvitations(id.clone());
                run.list(api, Entity::Invitation, list, options.page_size)
                    .await?;
            }
        }
    } else {
        // Each kind from its instance-wide list: users by cursor, the others by offset
        // (the only paging their endpoints have).
        let lists = [
            (Entity::User, List::Users),
            (Entity::Organization, List::Organizations),
            (Entity::Membership, List::AllMemberships),
            (Entity::Invitation, List::Invitations),
            (Entity::SubscriptionItem, List::SubscriptionItems),
        ];
        for (kind, list) in lists {
            if options.wants(kind) {
                run.list(api, kind, list, options.page_size).await?;
            }
        }
    }
    run.sink.flush().await?;
    run.summary.published = run.sink.published().clone();
    run.summary.elapsed = started.elapsed();
    Ok(run.summary)
}

struct Run<'a> {
    sink: &'a mut Sink,
    progress: &'a mut Progress,
    summary: Summary,
    /// The instance, as webhooks name it.
    instance: Option<String>,
}

impl Run<'_> {
    async fn publish(
        &mut self,
        kind: Entity,
        object: &serde_json::value::RawValue,
    ) -> Result<(), BackfillError> {
        *self.summary.fetched.entry(kind).or_default() += 1;
        match snapshot::snapshot(kind, object) {
            Ok(mut message) => {
                message.instance_id.clone_from(&self.instance);
                self.sink.send(kind, &message).await?
            }
            Err(e) => {
                // One malformed object must not stop the other 99,999: counted and shown.
                self.summary.skipped_count += 1;
                if self.summary.skipped.len() < SHOWN_SKIPS {
                    let id = snapshot::id_of(object).unwrap_or_else(|| "(no id)".into());
                    self.summary.skipped.push(format!("{id}: {e}"));
                }
                tracing::warn!(kind = kind.name(), error = %e, "backfill: object skipped");
            }
        }
        self.progress.advance(kind, self.sink.published_total());
        Ok(())
    }

    /// Every object of `list`, published as its pages arrive.
    async fn list(
        &mut self,
        api: &ClerkApi,
        kind: Entity,
        list: List,
        page_size: u32,
    ) -> Result<(), BackfillError> {
        let mut listing = api.listing(list, page_size);
        let (mut started, mut total, mut listed) = (false, None, 0u64);
        while let Some(page) = listing.next().await? {
            if !started {
                // `/users` gives no total: its count is one more (best-effort) request.
                total = match kind {
                    Entity::User => api.users_count().await,
                    _ => page.total,
                };
                self.progress.start(kind, total);
                started = true;
            }
            listed += page.items.len() as u64;
            for object in &page.items {
                self.publish(kind, object).await?;
            }
        }
        self.progress.finish(kind);
        // A listing that ended early says nothing of it: Clerk doesn't document what a
        // cursor naming a user deleted meanwhile gives, and an empty page would end it.
        // Objects created or deleted during the run move both figures; a gap is worth a
        // look (and a second run, which changes nothing already published).
        if let Some(total) = total.filter(|&t| listed < t) {
            let warning = format!(
                "Clerk counted {total} {} before the listing, which gave {listed}",
                kind.name()
            );
            tracing::warn!(kind = kind.name(), total, listed, "backfill: short listing");
            self.summary.warnings.push(warning);
        }
        Ok(())
    }
}
