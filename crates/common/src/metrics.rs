//! The metrics both services export the same way: which build runs, and whether it is
//! ready.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of the `build_info` metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// Registers `<prefix>_build_info{version} 1` (which build runs where: a dashboard joins on
/// it, an alert can say "two versions running") and `<prefix>_ready`, and returns the
/// readiness gauge for the service to set.
pub fn register_service(registry: &mut Registry, version: &str) -> Gauge {
    let build_info = Family::<BuildLabels, Gauge>::default();
    build_info
        .get_or_create(&BuildLabels {
            version: version.to_string(),
        })
        .set(1);
    registry.register(
        "build_info",
        "Always 1; the labels say which build this is",
        build_info,
    );
    let ready = Gauge::default();
    registry.register(
        "ready",
        "1 when /ready would answer 200, else 0 (checked on every scrape and probe)",
        ready.clone(),
    );
    ready
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_readiness_are_exported_under_the_prefix() {
        let mut registry = Registry::with_prefix("svc");
        let ready = register_service(&mut registry, "1.2.3");
        ready.set(1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("svc_build_info{version=\"1.2.3\"} 1"),
            "{text}"
        );
        assert!(text.contains("svc_ready 1"), "{text}");
    }
}
