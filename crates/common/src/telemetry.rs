//! Logging set-up: `LOG_FORMAT` picks JSON or pretty lines, `RUST_LOG` filters.

use tracing_subscriber::{fmt, EnvFilter};

use crate::LogFormat;

/// Installs the global subscriber. Without `RUST_LOG`, logs `info` and above. Calling it
/// twice (tests) leaves the first subscriber in place.
pub fn init(format: LogFormat) {
    init_to(format, std::io::stdout);
}

/// [`init`] for command-line tools: logs go to stderr, so stdout carries only what the
/// command prints (a summary, JSON).
pub fn init_stderr(format: LogFormat) {
    init_to(format, std::io::stderr);
}

fn init_to<W>(format: LogFormat, writer: W)
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
