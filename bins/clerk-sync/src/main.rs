//! The clerk-sync binary. Without a subcommand it serves the webhook endpoint; the
//! subcommands are the tools around it. Configuration comes from the environment, as the
//! contract says; the flags only say what a command should do.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use clerk_sync::Config;

/// Verifies Clerk's Svix-signed webhooks and publishes them to Kafka.
///
/// Configured by environment variables (see docs/src/configuration.md): CLERK_WEBHOOK_SECRET,
/// KAFKA_BROKERS, PORT and the others.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve POST /webhook, /health, /ready and /metrics on PORT (the default).
    Serve,
    /// Sign a payload the way Svix does and print the three svix-* headers, one
    /// `name: value` line each (the form curl's -H takes).
    Sign {
        /// The endpoint's signing secret (`whsec_…`); default: the first entry of
        /// CLERK_WEBHOOK_SECRET.
        #[arg(long)]
        secret: Option<String>,
        /// The delivery id (`svix-id`); default: a new `msg_…`.
        #[arg(long)]
        id: Option<String>,
        /// The delivery time in Unix seconds; default: now.
        #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
        timestamp: Option<i64>,
        /// The payload file; default: stdin.
        file: Option<PathBuf>,
    },
    /// Exit 0 if the clerk-sync on this host (127.0.0.1:PORT) answers /ready with 200,
    /// 1 otherwise: for container health checks, where the image has no shell or curl.
    Healthcheck,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command.unwrap_or(Command::Serve)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let config = Config::from_env()?;
            let telemetry = common::telemetry::init(config.log_format, "clerk-sync")?;
            let listener = tokio::net::TcpListener::bind(("0.0.0.0", config.port))
                .await
                .with_context(|| format!("cannot listen on port {} (PORT)", config.port))?;
            let served = clerk_sync::run(config, listener).await;
            telemetry.shutdown();
            served?;
        }
        Command::Sign {
            secret,
            id,
            timestamp,
            file,
        } => {
            let payload =
                clerk_sync::sign::read_payload(file.as_deref()).map_err(anyhow::Error::msg)?;
            let headers = clerk_sync::sign::cli(secret, id, timestamp, &payload)
                .map_err(anyhow::Error::msg)?;
            print!("{headers}");
        }
        Command::Healthcheck => {
            let port = common::healthcheck::port_from_env("PORT", clerk_sync::DEFAULT_PORT)?;
            common::healthcheck::probe(port, "/ready").await?;
        }
    }
    Ok(())
}
