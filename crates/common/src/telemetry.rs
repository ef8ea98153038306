//! Logging and tracing set-up: `LOG_FORMAT` picks JSON or pretty lines, `RUST_LOG`
//! filters them, and the `OTEL_*` variables turn on OpenTelemetry traces ([`crate::traces`]).

use std::time::Duration;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::traces::{self, TracesError};
use crate::LogFormat;

/// What [`init`] set up. [`Telemetry::shutdown`] exports the spans still queued; a process
/// that exits without calling it loses at most the last few seconds of spans.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is queued, for [`SHUTDOWN_WAIT`] at most, and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_WAIT) {
                tracing::warn!(error = %e, "the last spans could not be exported");
            }
        }
    }
}

/// The longest a service waits at exit for its last spans to be exported: the collector
/// may be away, and the pod's grace period has other work to cover.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Installs the global subscriber for a service: logs to stdout, and spans to the OTLP
/// endpoint when the `OTEL_*` variables name one. Without `RUST_LOG`, logs `info` and
/// above. Calling it twice (tests) leaves the first subscriber in place.
pub fn init(format: LogFormat, service: &'static str) -> Result<Telemetry, TracesError> {
    let provider = traces::provider(service)?;
    // The services' own spans (the webhook, the publish, the batch) at `info`, whatever
    // `RUST_LOG` says of logs: turning logs down mustn't turn traces off, and the
    // libraries' spans (hyper's, the driver's) are theirs, not the pipeline's. Spans only:
    // log events stay in the logs (an error's text can name personal data, as a
    // duplicate key's does), and a span's status is set where it fails.
    let spans = provider.as_ref().map(|p| {
        traces::layer(p, service).with_filter(
            Targets::new()
                .with_target("clerk_sync", LevelFilter::INFO)
                .with_target("user_sync", LevelFilter::INFO)
                .with_target("common", LevelFilter::INFO)
                .and(filter_fn(|metadata| metadata.is_span())),
        )
    });
    let _ = tracing_subscriber::registry()
        .with(logs(format, std::io::stdout))
        .with(spans)
        .try_init();
    Ok(Telemetry { provider })
}

/// Logging for command-line tools: logs go to stderr, so stdout carries only what the
/// command prints (a summary, JSON). They export no spans: the messages they publish keep
/// the trace context they carry.
pub fn init_stderr(format: LogFormat) {
    let _ = tracing_subscriber::registry()
        .with(logs(format, std::io::stderr))
        .try_init();
}

/// The log lines, filtered by `RUST_LOG`.
fn logs<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let layer = fmt::layer().with_writer(writer);
    match format {
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => layer.with_filter(filter).boxed(),
    }
}
