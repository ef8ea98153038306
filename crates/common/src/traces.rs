//! OpenTelemetry traces: off unless the standard `OTEL_*` variables ask for them, exported
//! over OTLP/HTTP, and carried between the services in W3C Trace Context headers
//! (`traceparent`, `tracestate`) on the Kafka messages.
//!
//! The spans are `tracing`'s (the layer of [`crate::telemetry`]): a span names its
//! OpenTelemetry kind and name in the `otel.kind` and `otel.name` fields, and
//! [`tracing_opentelemetry::OpenTelemetrySpanExt`] sets parents and links.
//!
//! Which variables are read, and by whom:
//! - here: `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` (`otlp` or `none`), the endpoint's
//!   presence (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and the
//!   protocol (`OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`: `http/protobuf`, the default, or
//!   `http/json`; gRPC isn't built in);
//! - by the OTLP exporter: the endpoints, `…_HEADERS`, `…_TIMEOUT` (10 s by default),
//!   `…_COMPRESSION` (none is built in: set, it stops start-up);
//! - by the SDK: `OTEL_SERVICE_NAME` (else the service's own name),
//!   `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]` (parent-based always-on by
//!   default), `OTEL_SPAN_LINK_COUNT_LIMIT` (here 10,000 by default: a batch's links),
//!   `OTEL_BSP_*` (the export queue: 2,048 spans at most, sent every 5 s; spans beyond a
//!   full queue are dropped, never waited for).
//!
//! Only spans are exported, not log events: an error's text (a duplicate key names an
//! email address) stays in the logs, where it always went.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// Why traces can't be exported as configured. Start-up stops with it: an operator who set
/// `OTEL_*` wants traces, and silently having none would hide the mistake.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// A variable holds a value this build can't honour.
    #[error("{variable}={value}: {why}")]
    Unsupported {
        /// The variable.
        variable: &'static str,
        /// What it holds.
        value: String,
        /// What would work instead.
        why: &'static str,
    },
    /// The OTLP exporter refused its configuration (an endpoint that isn't a URL, a
    /// header it can't parse, a compression not built in).
    #[error("the OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Whether and how traces are exported, from the variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Export {
    /// No endpoint, `OTEL_TRACES_EXPORTER=none` or `OTEL_SDK_DISABLED=true`.
    Off,
    /// OTLP over HTTP with this encoding.
    Otlp(Protocol),
}

/// Reads the decision from `var` (the environment, in production).
pub(crate) fn export(var: impl Fn(&str) -> Option<String>) -> Result<Export, TracesError> {
    let set = |name: &str| non_blank(var(name));
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(Export::Off);
    }
    if let Some(exporter) = set("OTEL_TRACES_EXPORTER") {
        match exporter.trim() {
            "none" => return Ok(Export::Off),
            "otlp" => {}
            _ => {
                return Err(TracesError::Unsupported {
                    variable: "OTEL_TRACES_EXPORTER",
                    value: exporter,
                    why: "only otlp (or none) is built in",
                })
            }
        }
    }
    if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return Ok(Export::Off);
    }
    let (variable, protocol) = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(p) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", p),
        None => match set("OTEL_EXPORTER_OTLP_PROTOCOL") {
            Some(p) => ("OTEL_EXPORTER_OTLP_PROTOCOL", p),
            // The specification's default.
            None => return Ok(Export::Otlp(Protocol::HttpBinary)),
        },
    };
    match protocol.trim() {
        "http/protobuf" => Ok(Export::Otlp(Protocol::HttpBinary)),
        "http/json" => Ok(Export::Otlp(Protocol::HttpJson)),
        _ => Err(TracesError::Unsupported {
            variable,
            value: protocol,
            why: "use http/protobuf (the collector's port 4318) or http/json; gRPC isn't built in",
        }),
    }
}

/// The tracer provider the variables ask for, or `None` when traces are off. `service` is
/// the `service.name` unless `OTEL_SERVICE_NAME` names another.
pub(crate) fn provider(service: &'static str) -> Result<Option<SdkTracerProvider>, TracesError> {
    let Export::Otlp(protocol) = export(|name| std::env::var(name).ok())? else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()?;
    // The default builder reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; without
    // the first (or with it blank), the service is named for what it is rather than
    // `unknown_service`.
    let mut resource = Resource::builder();
    if set("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource);
    // A batch span links every message it applies, up to SYNC_BATCH_SIZE (10,000 at most);
    // the SDK's default keeps 128 links and drops the rest silently.
    if set("OTEL_SPAN_LINK_COUNT_LIMIT").is_none() {
        builder = builder.with_max_links_per_span(MAX_LINKS);
    }
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some(builder.build()))
}

/// The most links a span keeps, unless `OTEL_SPAN_LINK_COUNT_LIMIT` says otherwise: the
/// largest batch user-sync applies.
const MAX_LINKS: u32 = 10_000;

/// Whether spans are exported, once [`crate::telemetry::init`] ran: work done only for a
/// trace (reading a message's `traceparent`, building attributes) is skipped without it.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported (see [`ENABLED`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A variable's value, when set and not blank.
fn set(name: &str) -> Option<String> {
    non_blank(std::env::var(name).ok())
}

/// A blank value counts as unset (a Helm value or a ConfigMap entry left empty).
fn non_blank(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// The `tracing` layer that turns spans into OpenTelemetry spans for `provider`.
pub(crate) fn layer<S>(
    provider: &SdkTracerProvider,
    service: &'static str,
) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service))
        // The source location and thread of each span say little to someone reading a
        // trace and cost four attributes a span.
        .with_location(false)
        .with_threads(false)
}

pub use opentelemetry::KeyValue;

/// Links `span` to the trace a consumed Kafka message carries in its headers, if it
/// carries one (a batch applies many messages, each of its own trace: a link each, not a
/// parent).
pub fn link_message<M: rdkafka::Message>(
    span: &tracing::Span,
    message: &M,
    attributes: Vec<KeyValue>,
) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(linked) = linked_span(|name| crate::kafka::header_str(message, name)) {
        span.add_link_with_attributes(linked, attributes);
    }
}

/// Sets attributes on `span`'s OpenTelemetry span only: they stay out of the log lines,
/// which already name what matters to a reader of logs.
pub fn set_attributes(span: &tracing::Span, attributes: impl IntoIterator<Item = KeyValue>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    for KeyValue { key, value, .. } in attributes {
        span.set_attribute(key, value);
    }
}

/// The trace id of `span`'s trace, as a trace viewer shows it (32 hex digits), to put in a
/// log line: an operator goes from the log to the trace. `None` when traces are off.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !enabled() {
        return None;
    }
    let cx = span.context();
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| context.trace_id().to_string())
}

/// Marks `span` failed, with a reason a person reads.
pub fn set_error(span: &tracing::Span, description: impl Into<std::borrow::Cow<'static, str>>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.set_status(opentelemetry::trace::Status::error(description));
}

/// The W3C Trace Context headers of `span`'s context, to put on an outgoing message: none
/// when traces are off (the context is invalid); for a span the sampler left out, a
/// `traceparent` whose sampled flag is off, so that the consumer leaves it out too.
pub fn inject(span: &tracing::Span, headers: &mut Vec<(&'static str, String)>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    TraceContextPropagator::new().inject_context(&span.context(), &mut Headers(headers));
}

/// The trace context an incoming message or request carries, read through `get` (a
/// header's value by name); the empty context when it carries none or a malformed one.
fn extract<'a>(get: impl Fn(&str) -> Option<&'a str>) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Lookup(get, std::marker::PhantomData))
}

/// The span context an incoming message carries, if a valid one (see [`extract`]).
fn linked_span<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::TraceContextExt;
    let cx = extract(get);
    let span = cx.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Outgoing headers, as the propagator writes them. It writes only `traceparent` and
/// `tracestate`, whose names are static.
struct Headers<'h>(&'h mut Vec<(&'static str, String)>);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((key, value));
    }
}

/// Incoming headers, read by name (the values live for `'a`).
struct Lookup<'a, F>(F, std::marker::PhantomData<&'a str>);

impl<'a, F: Fn(&str) -> Option<&'a str>> Extractor for Lookup<'a, F> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0)(key)
    }

    fn keys(&self) -> Vec<&str> {
        // The trace-context propagator asks only by name.
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(set: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            set.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn traces_are_off_without_an_endpoint_and_when_disabled() {
        assert_eq!(export(vars(&[])).unwrap(), Export::Off);
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(
            export(vars(&[endpoint])).unwrap(),
            Export::Otlp(Protocol::HttpBinary)
        );
        assert_eq!(
            export(vars(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")])).unwrap(),
            Export::Off
        );
        assert_eq!(
            export(vars(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])).unwrap(),
            Export::Off
        );
        // An empty endpoint is no endpoint (a Helm value left blank).
        assert_eq!(
            export(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])).unwrap(),
            Export::Off
        );
        assert_eq!(
            export(vars(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces"
            )]))
            .unwrap(),
            Export::Otlp(Protocol::HttpBinary)
        );
    }

    #[test]
    fn the_traces_protocol_wins_and_grpc_is_refused_by_name() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(
            export(vars(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ]))
            .unwrap(),
            Export::Otlp(Protocol::HttpJson)
        );
        let refused = export(vars(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]))
            .unwrap_err()
            .to_string();
        assert!(
            refused.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
            "{refused}"
        );
        let refused = export(vars(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("OTEL_TRACES_EXPORTER=zipkin"), "{refused}");
    }

    #[test]
    fn a_traceparent_read_is_the_one_written() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let headers = [("traceparent", traceparent), ("tracestate", "vendor=x")];
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let span = linked_span(get).expect("a valid context");
        assert_eq!(
            span.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span.span_id().to_string(), "00f067aa0ba902b7");
        assert!(span.is_remote() && span.is_sampled());
        assert_eq!(span.trace_state().header(), "vendor=x");

        let cx = extract(get);
        let mut out = Vec::new();
        TraceContextPropagator::new().inject_context(&cx, &mut Headers(&mut out));
        assert_eq!(
            out,
            [
                ("traceparent", traceparent.to_string()),
                ("tracestate", "vendor=x".to_string())
            ]
        );
    }

    #[test]
    fn a_malformed_or_missing_traceparent_links_to_nothing() {
        for value in ["", "00-zz-00f067aa0ba902b7-01", "garbage"] {
            assert!(
                linked_span(|n| (n == "traceparent").then_some(value)).is_none(),
                "{value}"
            );
        }
        assert!(linked_span(|_| None).is_none());
        // With no span exported, nothing is injected.
        let mut out = Vec::new();
        inject(&tracing::Span::none(), &mut out);
        assert!(out.is_empty());
    }
}
