//! Refusals decided before anything reaches Kafka, in process (`Router` + `oneshot`): no
//! broker is needed, and none is configured (`127.0.0.1:1`, topic creation off).

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::Router;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::helpers::*;

async fn app(extra: &[(&str, &str)]) -> Router {
    let mut vars = vec![
        ("CLERK_WEBHOOK_SECRET", SECRET_A),
        ("KAFKA_BROKERS", "127.0.0.1:1"),
        ("KAFKA_CREATE_TOPICS", "false"),
    ];
    vars.extend_from_slice(extra);
    let config =
        clerk_sync::Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .unwrap();
    let state = clerk_sync::AppState::build(&config, Default::default())
        .await
        .unwrap();
    clerk_sync::router(state)
}

fn request(path: &str, headers: &[(String, String)], body: Body) -> Request<Body> {
    let mut request = Request::post(path).header("content-type", "application/json");
    for (k, v) in headers {
        request = request.header(k, v);
    }
    request.body(body).unwrap()
}

/// A body whose first bytes arrive and whose rest never does.
fn endless(first: &[u8]) -> Body {
    let first = Bytes::copy_from_slice(first);
    Body::from_stream(
        futures::stream::iter([Ok::<_, std::io::Error>(first)]).chain(futures::stream::pending()),
    )
}

async fn answer(app: &Router, request: Request<Body>) -> (StatusCode, Value, Option<String>) {
    let response = tokio::time::timeout(Duration::from_secs(5), app.clone().oneshot(request))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        retry_after,
    )
}

#[tokio::test]
async fn every_refusal_row_of_the_contract() {
    let app = app(&[
        ("MAX_BODY_BYTES", "4096"),
        ("WEBHOOK_QUERY_SECRET", "q-s3cret"),
    ])
    .await;
    let body = fixture("user.updated");
    let path = "/webhook?secret=q-s3cret";
    let good = signed(SECRET_A, "msg_e1", now(), &body);
    let long_id = "m".repeat(600);
    let without = |name: &str| -> Vec<(String, String)> {
        good.iter().filter(|(k, _)| k != name).cloned().collect()
    };
    let with_id = |id: &str| -> Vec<(String, String)> {
        let mut h = without("svix-id");
        h.push(("svix-id".into(), id.into()));
        h
    };
    let bad_json = b"{\"type\": \"user.created\"".to_vec();
    let not_clerk = b"{\"hello\": 1}".to_vec();
    let big = vec![b' '; 5000];
    // (name, headers, body, path, status, code)
    type Row<'a> = (
        &'a str,
        Vec<(String, String)>,
        Vec<u8>,
        &'a str,
        u16,
        &'a str,
    );
    let cases: Vec<Row> = vec![
        (
            "no headers",
            vec![],
            body.clone(),
            path,
            400,
            "MISSING_HEADERS",
        ),
        (
            "no signature",
            without("svix-signature"),
            body.clone(),
            path,
            400,
            "MISSING_HEADERS",
        ),
        (
            "600-byte svix-id",
            with_id(&long_id),
            body.clone(),
            path,
            400,
            "MISSING_HEADERS",
        ),
        (
            "svix-id with a tab",
            with_id("msg\t1"),
            body.clone(),
            path,
            400,
            "MISSING_HEADERS",
        ),
        (
            "bad signature",
            signed(SECRET_B, "msg_e1", now(), &body),
            body.clone(),
            path,
            401,
            "INVALID_SIGNATURE",
        ),
        (
            "changed body",
            good.clone(),
            [body.clone(), b" ".to_vec()].concat(),
            path,
            401,
            "INVALID_SIGNATURE",
        ),
        (
            "old timestamp",
            signed(SECRET_A, "msg_e1", now() - 360, &body),
            body.clone(),
            path,
            401,
            "TIMESTAMP_OUT_OF_TOLERANCE",
        ),
        (
            "bad JSON",
            signed(SECRET_A, "msg_e2", now(), &bad_json),
            bad_json.clone(),
            path,
            400,
            "INVALID_JSON",
        ),
        (
            "not a Clerk event",
            signed(SECRET_A, "msg_e3", now(), &not_clerk),
            not_clerk.clone(),
            path,
            400,
            "INVALID_PAYLOAD",
        ),
        (
            "too large",
            signed(SECRET_A, "msg_e4", now(), &big),
            big.clone(),
            path,
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "wrong query secret",
            good.clone(),
            body.clone(),
            "/webhook?secret=nope",
            401,
            "INVALID_QUERY_SECRET",
        ),
        (
            "no query secret",
            good.clone(),
            body.clone(),
            "/webhook",
            401,
            "INVALID_QUERY_SECRET",
        ),
    ];
    for (name, headers, body, path, status, code) in cases {
        let (got, json, _) = answer(&app, request(path, &headers, Body::from(body))).await;
        assert_eq!(got.as_u16(), status, "{name}: {json}");
        assert_eq!(json["code"], code, "{name}: {json}");
        let sentence = json["error"].as_str().unwrap_or_default();
        assert!(!sentence.is_empty(), "{name}: a sentence for a person");
        for secret in ["q-s3cret", "MfKQ9r8G", &long_id] {
            assert!(!sentence.contains(secret), "{name}: {sentence}");
        }
    }
}

/// A wrong query secret, or a declared length over the limit, is answered at once: the
/// body, which never finishes arriving here, is not read.
#[tokio::test]
async fn refusals_that_cost_no_body_read() {
    let app = app(&[
        ("MAX_BODY_BYTES", "4096"),
        ("WEBHOOK_QUERY_SECRET", "q-s3cret"),
    ])
    .await;
    let headers = signed(SECRET_A, "msg_x", now(), b"{}");
    let (status, json, _) = answer(
        &app,
        request("/webhook?secret=wrong", &headers, endless(b"{")),
    )
    .await;
    assert_eq!(
        (status.as_u16(), &json["code"]),
        (401, &"INVALID_QUERY_SECRET".into())
    );

    let mut oversize = request("/webhook?secret=q-s3cret", &headers, endless(b"{"));
    oversize
        .headers_mut()
        .insert("content-length", "1048576".parse().unwrap());
    let (status, json, _) = answer(&app, oversize).await;
    assert_eq!(
        (status.as_u16(), &json["code"]),
        (413, &"PAYLOAD_TOO_LARGE".into())
    );
}

#[tokio::test]
async fn a_body_slower_than_the_request_timeout_is_cut_off() {
    let app = app(&[("REQUEST_TIMEOUT_MS", "300")]).await;
    let headers = signed(SECRET_A, "msg_slow", now(), b"{}");
    let started = Instant::now();
    let (status, json, _) = answer(&app, request("/webhook", &headers, endless(b"{"))).await;
    assert_eq!(
        (status.as_u16(), &json["code"]),
        (408, &"REQUEST_TIMEOUT".into())
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn beyond_max_in_flight_the_answer_is_overloaded_at_once() {
    let app = app(&[("MAX_IN_FLIGHT", "1")]).await;
    let headers = signed(SECRET_A, "msg_hold", now(), b"{}");
    // The one place, held by a body that is still arriving.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let held = tokio::spawn({
        let app = app.clone();
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        let request = request("/webhook", &headers, Body::from_stream(stream));
        async move { answer(&app, request).await }
    });
    tx.send(Ok(Bytes::from_static(b"{"))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let (status, json, retry_after) =
        answer(&app, request("/webhook", &headers, Body::from("{}"))).await;
    assert_eq!(
        (status.as_u16(), &json["code"]),
        (503, &"OVERLOADED".into())
    );
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(started.elapsed() < Duration::from_millis(500));

    // The held request finishes (`{}` verifies but is no Clerk event); its place is free.
    tx.send(Ok(Bytes::from_static(b"}"))).await.unwrap();
    drop(tx);
    let (status, json, _) = held.await.unwrap();
    assert_eq!(
        (status.as_u16(), &json["code"]),
        (400, &"INVALID_PAYLOAD".into())
    );
    let (status, json, _) = answer(&app, request("/webhook", &headers, Body::from("{ }"))).await;
    assert_eq!(
        (status.as_u16(), &json["code"]),
        (401, &"INVALID_SIGNATURE".into())
    );
}
