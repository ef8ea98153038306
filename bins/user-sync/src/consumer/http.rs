//! `/health`, `/ready`, `/metrics` on `HEALTH_PORT`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use rdkafka::consumer::Consumer;
use serde_json::json;

use super::metrics::Metrics;
use super::worker::KafkaConsumer;
use crate::store::Store;

/// What the endpoints look at.
#[derive(Clone)]
pub(crate) struct HealthState {
    pub(crate) store: Store,
    /// The consumer, whose client asks the brokers for metadata.
    pub(crate) consumer: Arc<KafkaConsumer>,
    pub(crate) metrics: Arc<Metrics>,
    /// Set once start-up (indexes, topics) is done and the consumer runs.
    pub(crate) consuming: Arc<AtomicBool>,
}

/// The routes, apart from serving them.
pub(crate) fn router(state: HealthState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// 200 when the consumer runs, MongoDB answers a ping and a broker answers a metadata
/// request.
async fn ready(State(state): State<HealthState>) -> impl IntoResponse {
    let (consuming, mongo, kafka) = check(&state).await;
    let status = if consuming && mongo && kafka {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
            "mongodb": word(mongo),
            "kafka": word(kafka),
            "consumer": if consuming { "running" } else { "starting" },
        })),
    )
}

/// Whether the consumer runs, MongoDB answers and a broker answers; the `ready` gauge
/// records whether all three do.
async fn check(state: &HealthState) -> (bool, bool, bool) {
    let timeout = Duration::from_secs(2);
    let consumer = state.consumer.clone();
    let kafka = tokio::task::spawn_blocking(move || {
        common::kafka::broker_reachable(consumer.client(), timeout)
    });
    let (mongo, kafka) = tokio::join!(state.store.ping(timeout), kafka);
    let kafka = kafka.unwrap_or(false);
    let consuming = state.consuming.load(Ordering::Acquire);
    state.metrics.set_ready(consuming && mongo && kafka);
    (consuming, mongo, kafka)
}

async fn metrics(State(state): State<HealthState>) -> impl IntoResponse {
    // The readiness gauge is as fresh as the scrape: alerts read it.
    check(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
