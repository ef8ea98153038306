//! The HTTP endpoints of the contract.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::AppState;

/// `?secret=` of `/webhook`.
#[derive(Debug, Deserialize)]
pub struct WebhookQuery {
    secret: Option<String>,
}

/// `POST /webhook`: verify, normalize, publish, then answer.
#[tracing::instrument(skip_all, fields(svix_id, event_type, topic))]
pub async fn webhook(
    State(state): State<AppState>,
    query: Result<Query<WebhookQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let span = tracing::Span::current();
    if let Some(id) = headers.get("svix-id").and_then(|v| v.to_str().ok()) {
        span.record("svix_id", id);
    }
    let result = accept(&state, query.ok(), &headers, body).await;
    let (event_type, outcome) = match &result {
        Ok((_, event_type)) => (event_type.as_str(), "accepted".to_string()),
        Err(e) => ("unknown", e.code().to_ascii_lowercase()),
    };
    state.metrics.request(event_type, &outcome);
    let (id, _) = result?;
    Ok(Json(json!({"status": "accepted", "id": id})))
}

/// Returns the event id and type once the event is in Kafka.
async fn accept(
    state: &AppState,
    query: Option<Query<WebhookQuery>>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, String), ApiError> {
    let secret = query.as_ref().and_then(|q| q.secret.as_deref());
    state.verifier.check_query_secret(secret).inspect_err(|e| {
        state
            .metrics
            .verification_failure(&e.code().to_ascii_lowercase())
    })?;

    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(state.max_body_bytes)
        } else {
            ApiError::Internal(format!("reading the body: {rejection}"))
        }
    })?;

    let event_id = state.verifier.verify(headers, &body).inspect_err(|e| {
        if e.status() == StatusCode::UNAUTHORIZED {
            state
                .metrics
                .verification_failure(&e.code().to_ascii_lowercase());
        }
    })?;

    let message = events::normalize(&event_id, &body).map_err(|e| match e {
        events::NormalizeError::InvalidJson(e) => ApiError::InvalidJson(e.to_string()),
        e @ events::NormalizeError::InvalidPayload(_) => ApiError::InvalidPayload(e.to_string()),
    })?;
    let span = tracing::Span::current();
    span.record("event_type", message.event_type.as_str());

    let topic = state.publisher.publish(&message).await?;
    span.record("topic", topic.as_str());
    tracing::info!(subject = %message.subject_id, "accepted");
    Ok((event_id, message.event_type))
}

/// `GET /health`: the process is up.
pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// `GET /ready`: a broker answers a metadata request.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state
        .publisher
        .broker_reachable(Duration::from_secs(2))
        .await
    {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": "no Kafka broker answered"})),
        )
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
