//! The user-sync binary: configuration from the environment, then [`user_sync::run`].

use anyhow::Context;
use user_sync::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(arg) = std::env::args().nth(1) {
        if arg == "--version" || arg == "-V" {
            println!("user-sync {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        anyhow::bail!("unknown argument `{arg}`: user-sync is configured by environment variables");
    }
    let config = Config::from_env()?;
    common::telemetry::init(config.log_format);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", config.health_port))
        .await
        .with_context(|| format!("cannot listen on port {} (HEALTH_PORT)", config.health_port))?;
    user_sync::run(config, listener).await?;
    Ok(())
}
