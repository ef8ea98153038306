//! The HTTP endpoints of the contract.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::traces::KeyValue;
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use crate::error::ApiError;
use crate::in_flight::Place;
use crate::verify::SvixHeaders;
use crate::AppState;

/// What an accepted webhook answers with and is counted as.
struct Accepted {
    event_id: String,
    event_type: String,
}

/// `POST /webhook`: check the query secret and the Svix headers, take a place in flight,
/// read the body, verify, normalize, publish, then answer. Nothing before the query secret
/// and the headers costs a body read.
///
/// Its span is a trace's root: a `traceparent` on the request is ignored, as anyone can
/// send one before the signature is checked (picking trace ids, forcing sampling). The
/// publish is its child, and the message carries that child's context.
pub(crate) async fn webhook(State(state): State<AppState>, request: Request) -> Response {
    let span = tracing::info_span!(
        "webhook",
        otel.name = "POST /webhook",
        otel.kind = "server",
        svix_id = tracing::field::Empty,
        event_type = tracing::field::Empty,
        topic = tracing::field::Empty,
    );
    let response = answer(state, request).instrument(span.clone()).await;
    let status = response.status();
    if !common::traces::enabled() {
        return response;
    }
    common::traces::set_attributes(
        &span,
        [
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", "/webhook"),
            KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
        ],
    );
    // A server span fails on 5xx only: a 4xx is the sender's mistake, answered as it
    // should be (the semantic conventions' rule).
    if status.is_server_error() {
        common::traces::set_error(&span, status.to_string());
    }
    response
}

async fn answer(state: AppState, request: Request) -> Response {
    let started = Instant::now();
    let deadline = started + state.limits.request_timeout;
    let result = accept(&state, request, deadline).await;
    let took = started.elapsed().as_secs_f64();
    match result {
        Ok(accepted) => {
            state.metrics.request(&accepted.event_type, "accepted");
            state.metrics.request_duration("accepted", took);
            Json(json!({"status": "accepted", "id": accepted.event_id})).into_response()
        }
        Err(e) => {
            let outcome = e.code().to_ascii_lowercase();
            state.metrics.request("unknown", &outcome);
            state.metrics.request_duration(&outcome, took);
            if e.status() == StatusCode::UNAUTHORIZED {
                state.metrics.verification_failure(&outcome);
            }
            e.log();
            e.into_response()
        }
    }
}

async fn accept(
    state: &AppState,
    request: Request,
    deadline: Instant,
) -> Result<Accepted, ApiError> {
    let (parts, body) = request.into_parts();
    state
        .verifier
        .check_query_secret(query_secret(&parts.uri).as_deref())?;
    let svix = SvixHeaders::read(&parts.headers)?;
    let span = tracing::Span::current();
    // Checked to be short printable ASCII: safe to log before it is verified.
    span.record("svix_id", svix.id);
    refuse_declared_oversize(&parts.headers, state.max_body_bytes)?;

    let mut place = state.in_flight.admit().map_err(|_| ApiError::Overloaded)?;
    let body = read_body(body, state.max_body_bytes, deadline, &mut place).await?;
    place.body_read();

    state.verifier.verify(&svix, &body)?;
    let mut message = events::normalize(svix.id, &body)?;
    span.record("event_type", message.event_type.as_str());
    // One-time codes stay off the topic unless the operator asked for them.
    if !state.publish_message_bodies && events::redact::redact_message_bodies(&mut message) {
        tracing::debug!("message body redacted");
    }
    let topic = state.publisher.publish(&message, deadline).await?;
    span.record("topic", topic);
    // The trace id (with traces on) takes a reader of the log to the trace.
    let trace_id = common::traces::trace_id(&span);
    tracing::info!(subject = %message.subject_id, trace_id, "accepted");
    Ok(Accepted {
        event_id: message.event_id,
        event_type: message.event_type,
    })
}

/// `?secret=` of `/webhook`, if any (the first when repeated).
fn query_secret(uri: &Uri) -> Option<String> {
    #[derive(Deserialize)]
    struct WebhookQuery {
        secret: Option<String>,
    }
    axum::extract::Query::<WebhookQuery>::try_from_uri(uri)
        .ok()
        .and_then(|q| q.0.secret)
}

/// A `Content-Length` over the limit is refused before a byte of the body is read.
fn refuse_declared_oversize(headers: &HeaderMap, max: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > max as u64 => Err(ApiError::PayloadTooLarge(max)),
        _ => Ok(()),
    }
}

/// Reads at most `max` bytes, before `deadline`, unless a newcomer displaces this request.
async fn read_body(
    body: Body,
    max: usize,
    deadline: Instant,
    place: &mut Place,
) -> Result<Bytes, ApiError> {
    let timeout = deadline.saturating_duration_since(Instant::now());
    let read = tokio::time::timeout(timeout, Limited::new(body, max).collect());
    tokio::select! {
        () = place.displaced() => Err(ApiError::Overloaded),
        collected = read => match collected {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(ApiError::PayloadTooLarge(max))
            }
            Ok(Err(e)) => Err(ApiError::BodyRead(axum::Error::new(e))),
            Err(_) => Err(ApiError::RequestTimeout(timeout)),
        },
    }
}

/// `GET /health`: the process is up.
pub(crate) async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// `GET /ready`: the producer has no fatal error, and a broker answers a metadata request.
pub(crate) async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match check(&state).await {
        None => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": reason})),
        ),
    }
}

/// Why clerk-sync can't take webhooks now, if it can't; the `ready` gauge says the same.
async fn check(state: &AppState) -> Option<&'static str> {
    // librdkafka may report it between publishes; finding it here stops the server too.
    let fatal = state.publisher.fatal_error();
    let reachable = fatal.is_none()
        && state
            .publisher
            .broker_reachable(Duration::from_secs(2))
            .await;
    let reason = readiness(fatal.is_some(), reachable);
    state.metrics.set_ready(reason.is_none());
    reason
}

/// Why clerk-sync can't take webhooks now, if it can't.
fn readiness(fatal: bool, broker_reachable: bool) -> Option<&'static str> {
    if fatal {
        Some("the Kafka producer failed for good; clerk-sync is stopping")
    } else if !broker_reachable {
        Some("no Kafka broker answered")
    } else {
        None
    }
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fatal_producer_is_never_ready() {
        assert!(readiness(true, true).is_some());
        assert!(readiness(false, false).is_some());
        assert_eq!(readiness(false, true), None);
    }

    #[test]
    fn the_query_secret_is_read_from_the_query_only() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(
            query_secret(&uri("/webhook?secret=a%2Bb&x=1")).as_deref(),
            Some("a+b")
        );
        assert_eq!(query_secret(&uri("/webhook")), None);
        assert_eq!(query_secret(&uri("/webhook?other=1")), None);
    }
}
