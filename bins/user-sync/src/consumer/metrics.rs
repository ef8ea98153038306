//! user-sync's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::store::Traffic;

/// Labels of `user_sync_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    /// Clerk event type (`unknown` when undecodable).
    pub(crate) event_type: String,
    /// `applied`, `stale`, `duplicate` or `dead_lettered`.
    pub(crate) outcome: String,
}

/// Labels with a single reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    pub(crate) reason: String,
}

/// Labels of `user_sync_consumer_lag`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    pub(crate) topic: String,
    pub(crate) partition: String,
}

/// Every metric, and the registry that renders them.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    ready: prometheus_client::metrics::gauge::Gauge,
    events: Family<EventLabels, Counter>,
    dlq: Family<ReasonLabels, Counter>,
    retries: Family<ReasonLabels, Counter>,
    apply_duration: Histogram,
    lag: Family<PartitionLabels, Gauge>,
}

impl Metrics {
    /// The consumer's metrics, and the store's counters of `traffic`.
    pub(crate) fn new(traffic: &Traffic) -> Self {
        let mut registry = Registry::with_prefix("user_sync");
        traffic.register(&mut registry);
        let ready = common::metrics::register_service(&mut registry, env!("CARGO_PKG_VERSION"));
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Consumed events by Clerk type and outcome",
            events.clone(),
        );
        let dlq = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "dlq_messages",
            "Messages sent to the dead-letter topic, by reason",
            dlq.clone(),
        );
        let retries = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "transient_failures",
            "Batch attempts that failed and will be retried (MongoDB or Kafka unreachable)",
            retries.clone(),
        );
        let apply_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "apply_duration_seconds",
            "Time to apply one polled batch to MongoDB, audit records included",
            apply_duration.clone(),
        );
        let lag = Family::<PartitionLabels, Gauge>::default();
        registry.register(
            "consumer_lag",
            "Messages between the group's position and the end of each assigned partition (librdkafka statistics)",
            lag.clone(),
        );
        Metrics {
            registry,
            ready,
            events,
            dlq,
            retries,
            apply_duration,
            lag,
        }
    }

    /// Counts one consumed event.
    pub(crate) fn event(&self, event_type: &str, outcome: &str) {
        self.events
            .get_or_create(&EventLabels {
                event_type: event_type.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts one dead-lettered message.
    pub(crate) fn dead_lettered(&self, reason: &str) {
        self.dlq
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one failed attempt.
    pub(crate) fn transient_failure(&self, reason: &str) {
        self.retries
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Records one batch's apply time.
    pub(crate) fn applied_batch(&self, seconds: f64) {
        self.apply_duration.observe(seconds);
    }

    /// Sets the lag of one partition.
    pub(crate) fn lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .get_or_create(&PartitionLabels {
                topic: topic.to_string(),
                partition: partition.to_string(),
            })
            .set(lag);
    }

    /// Forgets the lag of a partition this consumer no longer owns (its new owner reports
    /// it), so that replicas don't count it twice.
    pub(crate) fn forget_lag(&self, topic: &str, partition: i32) {
        self.lag.remove(&PartitionLabels {
            topic: topic.to_string(),
            partition: partition.to_string(),
        });
    }

    /// Records the outcome of a readiness check.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        common::process::with_process_metrics(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_partition_leaves_the_lag_gauge() {
        let m = Metrics::new(&Traffic::default());
        m.lag("users", 0, 7);
        m.lag("users", 1, 3);
        m.forget_lag("users", 0);
        let text = m.render();
        assert!(!text.contains(r#"partition="0""#), "{text}");
        assert!(
            text.contains(r#"user_sync_consumer_lag{topic="users",partition="1"} 3"#),
            "{text}"
        );
    }
}
