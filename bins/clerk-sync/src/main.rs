//! The clerk-sync binary: configuration from the environment, then [`clerk_sync::run`].
//! `clerk-sync sign …` signs a payload instead (see [`clerk_sync::sign`]).

use anyhow::Context;
use clerk_sync::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("sign") => {
            let headers = clerk_sync::sign::cli(&args[1..]).map_err(anyhow::Error::msg)?;
            print!("{headers}");
            return Ok(());
        }
        Some("--version" | "-V") => {
            println!("clerk-sync {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Some(other) => anyhow::bail!("unknown argument `{other}` (try `clerk-sync sign --help`)"),
        None => {}
    }

    let config = Config::from_env()?;
    common::telemetry::init(config.log_format);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", config.port))
        .await
        .with_context(|| format!("cannot listen on port {} (PORT)", config.port))?;
    clerk_sync::run(config, listener).await?;
    Ok(())
}
