//! The user-sync binary: configuration from the environment, then [`user_sync::run`].
//! `user-sync show-user <clerkId>` prints that user's document instead.

use anyhow::Context;
use user_sync::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version" | "-V") => {
            println!("user-sync {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Some("show-user") => {
            let clerk_id = args
                .get(1)
                .context("usage: user-sync show-user <clerkId>")?;
            let config = user_sync::config::MongoConfig::from_vars(std::env::vars())?;
            let store = user_sync::store::Store::connect(&config).await?;
            let user = store
                .collection(user_sync::entity::Entity::User)
                .find_one(bson::doc! {"clerkId": clerk_id})
                .await?
                .with_context(|| format!("no document with clerkId {clerk_id}"))?;
            let json = bson::Bson::Document(user).into_relaxed_extjson();
            println!("{}", serde_json::to_string_pretty(&json)?);
            return Ok(());
        }
        Some(other) => anyhow::bail!(
            "unknown argument `{other}`: user-sync is configured by environment variables \
             (`user-sync show-user <clerkId>` prints a user document)"
        ),
        None => {}
    }
    let config = Config::from_env()?;
    common::telemetry::init(config.log_format);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", config.health_port))
        .await
        .with_context(|| format!("cannot listen on port {} (HEALTH_PORT)", config.health_port))?;
    user_sync::run(config, listener).await?;
    Ok(())
}
