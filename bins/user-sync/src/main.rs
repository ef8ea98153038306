//! The user-sync binary. Without a subcommand it runs the consumer; the subcommands are the
//! tools around it. Configuration comes from the environment, as the contract says; the
//! flags only say what a command should do.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use user_sync::{backfill, dlq, reconcile, show_user, status};
use user_sync::{
    ClerkApi, ClerkConfig, Config, Entity, MongoConfig, Progress, PublishConfig, Publisher,
    QueueConfig, RetryPolicy, Sink, Store, DEFAULT_HEALTH_PORT, MAX_PAGE_SIZE,
};

/// Keeps MongoDB in step with Clerk: consumes the events clerk-sync publishes to Kafka.
///
/// Configured by environment variables (see docs/src/configuration.md): KAFKA_BROKERS,
/// MONGODB_URI, and for backfill and reconcile CLERK_SECRET_KEY and CLERK_API_URL.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the consumer (what the binary does without a subcommand).
    Run,
    /// Print one user's document as JSON.
    ShowUser {
        /// The Clerk user id (`user_…`).
        clerk_id: String,
    },
    /// Publish a snapshot event for every user, organization, membership and invitation
    /// Clerk has (and, with `--entities billing`, every subscription item).
    ///
    /// Snapshots go into the topics clerk-sync publishes to and are applied under the same
    /// order rules: a snapshot's event time is the object's updated_at, so it never
    /// overwrites anything newer. Event ids are `backfill:<id>:<updated_at>`, so running it
    /// twice changes nothing the second time.
    Backfill {
        /// Kinds of object, comma-separated: users, organizations, memberships,
        /// invitations, billing.
        #[arg(long, value_delimiter = ',', default_value = "users,organizations,memberships,invitations", value_parser = kind)]
        entities: Vec<Entity>,
        /// Read and count, publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// Objects per page (Clerk's maximum is 500).
        #[arg(long, default_value_t = MAX_PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..=MAX_PAGE_SIZE as i64))]
        page_size: u32,
        /// Only this user (repeat for more).
        #[arg(long = "user", value_name = "USER_ID")]
        users: Vec<String>,
        /// Only this organization and its memberships (repeat for more).
        #[arg(long = "organization", value_name = "ORGANIZATION_ID")]
        organizations: Vec<String>,
    },
    /// Find documents whose user or organization Clerk no longer has (a lost deletion).
    ///
    /// Lists every id in Clerk, then checks each document not deleted and created before
    /// the listing began; one Clerk doesn't have (confirmed by asking for it: 404) gets a
    /// deletion event `reconcile:<id>`. Nothing is published if any listing fails.
    /// Dry run unless --apply.
    Reconcile {
        /// Kinds of object, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "users,organizations", value_parser = reconcilable)]
        entities: Vec<Entity>,
        /// Publish the deletions (without it, only print what was found).
        #[arg(long)]
        apply: bool,
        /// The most deletions to publish (default: 10% of the documents checked, at least
        /// 10); more, and nothing is published.
        #[arg(long, value_name = "N")]
        max_deletions: Option<u64>,
        /// Objects per page (Clerk's maximum is 500).
        #[arg(long, default_value_t = MAX_PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..=MAX_PAGE_SIZE as i64))]
        page_size: u32,
    },
    /// One screen for the person on call: documents per collection (total, deleted,
    /// failed), webhook_events outcomes over the last hour and day, messages in each DLQ,
    /// the consumer group's lag per partition (from the broker: works while user-sync is
    /// down) and the last error.
    Status {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What the dead-letter topics hold, and sending messages back once their cause is
    /// fixed (needs only the Kafka variables, KAFKA_GROUP_ID and SYNC_ENTITIES).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Exit 0 if the user-sync on this host (127.0.0.1:HEALTH_PORT) answers /ready with
    /// 200, 1 otherwise: for container health checks, where the image has no shell or curl.
    Healthcheck,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Count each DLQ topic's messages by dlq-error-code, with the oldest and newest and a
    /// few reasons, and how many the replay group hasn't reached yet. Changes nothing.
    List {
        /// Only this DLQ topic (or the DLQ of this topic).
        #[arg(long)]
        topic: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send dead-lettered messages back to the topics they came from, with their key,
    /// value and headers (not the dlq-* ones) plus dlq-replayed-from.
    ///
    /// Reads each DLQ up to its end at the start. Progress is kept in the consumer group
    /// <KAFKA_GROUP_ID>-dlq-replay (-<code> with --code), committed after the broker
    /// acknowledged what was sent: a second replay of the same selection sends only what
    /// arrived since. Replaying a message twice is harmless (its event id makes the second
    /// a duplicate).
    Replay {
        /// Only messages with this dlq-error-code (undecodable, unsupported_schema_version,
        /// invalid_record, rejected_by_database).
        #[arg(long)]
        code: Option<String>,
        /// Only messages dead-lettered at or after TIME: RFC 3339 (2026-11-24T14:00:00Z)
        /// or an age (90m, 2h, 7d). Older ones are passed over for good in this group.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only this DLQ topic (or the DLQ of this topic).
        #[arg(long)]
        topic: Option<String>,
        /// Count what would be sent; send and commit nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// A kind `backfill` reads: `billing` names the subscription items (what Clerk lists of
/// Billing instance-wide).
fn kind(name: &str) -> Result<Entity, String> {
    let name = name.trim();
    let name = if name == "billing" {
        Entity::SubscriptionItem.name()
    } else {
        name
    };
    Entity::from_name(name)
        .filter(|kind| backfill::KINDS.contains(kind))
        .ok_or_else(|| {
            format!("`{name}`: expected users, organizations, memberships, invitations or billing")
        })
}

fn reconcilable(name: &str) -> Result<Entity, String> {
    match kind(name)? {
        k @ (Entity::User | Entity::Organization) => Ok(k),
        k => Err(format!(
            "{} aren't reconciled: users or organizations",
            k.name()
        )),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command.unwrap_or(Command::Run)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run => consume().await,
        Command::ShowUser { clerk_id } => show_user(&clerk_id).await,
        Command::Backfill {
            entities,
            dry_run,
            page_size,
            users,
            organizations,
        } => {
            let options = backfill::Options {
                kinds: entities,
                page_size,
                users,
                organizations,
            };
            backfill(&options, dry_run).await
        }
        Command::Reconcile {
            entities,
            apply,
            page_size,
            max_deletions,
        } => {
            let options = reconcile::Options {
                kinds: entities,
                page_size,
                max_deletions,
            };
            reconcile(&options, apply).await
        }
        Command::Status { json } => status(json).await,
        Command::Dlq {
            command: DlqCommand::List { topic, json },
        } => dlq_list(topic, json).await,
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    code,
                    since,
                    topic,
                    dry_run,
                },
        } => dlq_replay(code, since, topic, dry_run).await,
        Command::Healthcheck => {
            let port = common::healthcheck::port_from_env("HEALTH_PORT", DEFAULT_HEALTH_PORT)?;
            Ok(common::healthcheck::probe(port, "/ready").await?)
        }
    }
}

async fn consume() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let telemetry = common::telemetry::init(config.log_format, "user-sync")?;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", config.health_port))
        .await
        .with_context(|| format!("cannot listen on port {} (HEALTH_PORT)", config.health_port))?;
    let consumed = user_sync::run(config, listener).await;
    telemetry.shutdown();
    Ok(consumed?)
}

async fn show_user(clerk_id: &str) -> anyhow::Result<()> {
    let store = Store::connect(&MongoConfig::from_vars(std::env::vars())?).await?;
    let user = show_user::document(&store, clerk_id)
        .await?
        .with_context(|| format!("no document with clerkId {clerk_id}"))?;
    println!("{}", serde_json::to_string_pretty(&user)?);
    Ok(())
}

async fn backfill(options: &backfill::Options, dry_run: bool) -> anyhow::Result<()> {
    init_cli_logging()?;
    let api = clerk_api()?;
    let mut sink = sink(dry_run).await?;
    let mut progress = Progress::new("backfill", std::io::stdout().is_terminal());
    let summary = backfill::run(&api, &mut sink, options, &mut progress).await?;
    print!("{summary}");
    Ok(())
}

async fn reconcile(options: &reconcile::Options, apply: bool) -> anyhow::Result<()> {
    init_cli_logging()?;
    let api = clerk_api()?;
    let store = Store::connect(&MongoConfig::from_vars(std::env::vars())?).await?;
    let mut sink = sink(!apply).await?;
    let mut progress = Progress::new("reconcile", std::io::stdout().is_terminal());
    let report = reconcile::run(&api, &store, &mut sink, options, &mut progress).await?;
    print!("{report}");
    Ok(())
}

async fn status(json: bool) -> anyhow::Result<()> {
    init_cli_logging()?;
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let queue = QueueConfig::from_vars(vars.clone())?;
    let store = Store::connect(&MongoConfig::from_vars(vars)?).await?;
    let now = bson::DateTime::now().timestamp_millis();
    let mut status = status::from_store(&store, &queue.entities, now).await?;
    // The broker's side is read with librdkafka's blocking calls.
    let status = tokio::task::spawn_blocking(move || {
        status::fill_from_broker(&mut status, &queue).map(|()| status)
    })
    .await??;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{status}");
    }
    Ok(())
}

async fn dlq_list(topic: Option<String>, json: bool) -> anyhow::Result<()> {
    init_cli_logging()?;
    let config = QueueConfig::from_vars(std::env::vars())?;
    let topics =
        tokio::task::spawn_blocking(move || dlq::list(&config, topic.as_deref())).await??;
    if json {
        println!("{}", serde_json::to_string_pretty(&topics)?);
    } else {
        print!("{}", dlq::render_list(&topics));
    }
    Ok(())
}

async fn dlq_replay(
    code: Option<String>,
    since: Option<String>,
    topic: Option<String>,
    dry_run: bool,
) -> anyhow::Result<()> {
    init_cli_logging()?;
    let config = QueueConfig::from_vars(std::env::vars())?;
    let now = bson::DateTime::now().timestamp_millis();
    let since = since
        .map(|s| dlq::parse_since(&s, now))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--since {e}"))?;
    let selection = dlq::Selection { code, since };
    let report = tokio::task::spawn_blocking(move || {
        dlq::replay(&config, topic.as_deref(), &selection, dry_run)
    })
    .await??;
    print!("{report}");
    Ok(())
}

/// Logs on stderr: stdout is the command's output. Pretty on a terminal unless LOG_FORMAT
/// says otherwise.
fn init_cli_logging() -> anyhow::Result<()> {
    let format = match std::env::var("LOG_FORMAT") {
        Ok(value) if !value.trim().is_empty() => common::LogFormat::parse(Some(&value))?,
        _ if std::io::stderr().is_terminal() => common::LogFormat::Pretty,
        _ => common::LogFormat::Json,
    };
    common::telemetry::init_stderr(format);
    Ok(())
}

fn clerk_api() -> anyhow::Result<ClerkApi> {
    let config = ClerkConfig::from_vars(std::env::vars())?;
    Ok(ClerkApi::new(
        &config.api_url,
        config.secret_key,
        RetryPolicy::default(),
    )?)
}

async fn sink(dry_run: bool) -> anyhow::Result<Sink> {
    if dry_run {
        return Ok(Sink::dry_run());
    }
    let config = PublishConfig::from_vars(std::env::vars())?;
    Ok(Sink::Kafka(Publisher::new(&config).await?))
}
