//! clerk-sync's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of `clerk_sync_webhook_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The Clerk event type, or `unknown` before the body is parsed.
    pub event_type: String,
    /// `accepted` or the error code in lower case.
    pub outcome: String,
}

/// Labels of `clerk_sync_webhook_verification_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The error code in lower case.
    pub reason: String,
}

/// Labels of `clerk_sync_kafka_publish_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishLabels {
    /// Destination topic.
    pub topic: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Labels of `clerk_sync_webhook_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `accepted` or the error code in lower case.
    pub outcome: String,
}

/// Every metric, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    ready: prometheus_client::metrics::gauge::Gauge,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<OutcomeLabels, Histogram>,
    verification_failures: Family<ReasonLabels, Counter>,
    publish_duration: Family<PublishLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("clerk_sync");
        let ready = common::metrics::register_service(&mut registry, env!("CARGO_PKG_VERSION"));
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "webhook_requests",
            "Webhook requests by Clerk event type and outcome",
            requests.clone(),
        );
        let request_duration = Family::<OutcomeLabels, Histogram>::new_with_constructor(|| {
            // 1 ms … ~33 s (REQUEST_TIMEOUT_MS is 30 s by default)
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "webhook_request_duration_seconds",
            "Time from a /webhook request's head to its answer, by outcome (body read, \
             verification and the broker's acknowledgement included)",
            request_duration.clone(),
        );
        let verification_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "webhook_verification_failures",
            "Requests refused by signature, timestamp or query-secret checks",
            verification_failures.clone(),
        );
        let publish_duration = Family::<PublishLabels, Histogram>::new_with_constructor(|| {
            // 1 ms … ~16 s
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register(
            "kafka_publish_duration_seconds",
            "Time from send to the broker's acknowledgement (or failure)",
            publish_duration.clone(),
        );
        Metrics {
            registry,
            ready,
            requests,
            request_duration,
            verification_failures,
            publish_duration,
        }
    }

    /// Counts one webhook request.
    pub fn request(&self, event_type: &str, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                event_type: event_type.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Records how long one webhook request took, by outcome.
    pub fn request_duration(&self, outcome: &str, seconds: f64) {
        self.request_duration
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .observe(seconds);
    }

    /// Counts one verification failure.
    pub fn verification_failure(&self, reason: &str) {
        self.verification_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Records how long a publish took.
    pub fn publish(&self, topic: &str, ok: bool, seconds: f64) {
        self.publish_duration
            .get_or_create(&PublishLabels {
                topic: topic.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .observe(seconds);
    }

    /// Records the outcome of a readiness check.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String can't fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        common::process::with_process_metrics(out)
    }
}
