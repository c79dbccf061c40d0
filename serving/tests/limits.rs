//! Body limit, queue bound, deadline and bearer token, through the real router.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use common::*;
use serde_json::json;

fn predict_body() -> String {
    json!({"features": rows("inputs_binary.json", 1)[0]}).to_string()
}

/// A valid body padded with trailing whitespace (legal JSON) to exactly `len` bytes.
fn padded(len: usize) -> String {
    let mut b = predict_body();
    assert!(b.len() <= len);
    b.push_str(&" ".repeat(len - b.len()));
    b
}

#[tokio::test]
async fn body_at_the_limit_is_served_and_one_byte_more_is_413() {
    let mut cfg = config();
    cfg.max_body_bytes = 4096;
    let state = state_with(&[source("fraud", "1", "rf", false)], &cfg, None).await;
    let app = modelship_serving::app(state.clone());

    let r = post_json(&app, "/predict", padded(4096)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = post_json(&app, "/predict", padded(4097)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&r).contains("4096"));

    // Without a Content-Length the limit is enforced while reading.
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        padded(4097).into_bytes().chunks(1000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let req = Request::post("/v2/models/fraud/infer")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let r = send(&app, req).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    error_of(&r);
    // The model was known from the path, so the refusal is counted as the caller's mistake.
    let t = state.metrics.encode();
    assert_eq!(
        metric_value(&t, r#"ml_requests_total{model="fraud",version="1",status="invalid"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_full_queue_answers_429() {
    let mut cfg = config();
    cfg.queue_capacity = 1;
    cfg.max_batch_size = 1;
    cfg.inline_call_max_micros = 0;
    let state = state_with(&[source("fraud", "1", "rf", false)], &cfg, None).await;
    let app = modelship_serving::app(state.clone());
    // On this single-threaded test runtime the batching task cannot run until every request
    // has been polled once, so exactly one fits in the queue.
    let calls = (0..8).map(|_| post_json(&app, "/predict", predict_body()));
    let replies = futures::future::join_all(calls).await;
    let ok = replies.iter().filter(|r| r.status == StatusCode::OK).count();
    let shed: Vec<_> =
        replies.iter().filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS).collect();
    assert_eq!(ok, 1);
    assert_eq!(shed.len(), 7);
    assert!(error_of(shed[0]).contains("queue is full"));
    let t = state.metrics.encode();
    assert_eq!(
        metric_value(&t, r#"ml_requests_total{model="fraud",version="1",status="rejected"}"#),
        Some(7.0)
    );
    // Once the queue drains, requests are served again.
    assert_eq!(post_json(&app, "/predict", predict_body()).await.status, StatusCode::OK);
}

/// A body that never arrives is the caller's delay: 408 at the deadline, counted as invalid
/// (a slow upload says nothing about the model). A slow model is answered 503 in
/// `hardening.rs`.
#[tokio::test]
async fn a_body_that_never_arrives_gets_408_at_the_deadline() {
    let mut cfg = config();
    cfg.request_timeout_ms = 100;
    let state = state_with(&[source("fraud", "1", "rf", false)], &cfg, None).await;
    let app = modelship_serving::app(state.clone());
    for uri in ["/predict", "/v2/models/fraud/infer"] {
        let stalled =
            Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>());
        let started = Instant::now();
        let r = send(&app, Request::post(uri).body(stalled).unwrap()).await;
        let took = started.elapsed();
        assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT, "{uri}");
        assert!(error_of(&r).contains("request body not received within 100 ms"));
        // 100 ms is the target; the extra margin keeps a busy CI machine from failing the test.
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_millis(350),
            "{uri}: {took:?}"
        );
    }
    let t = state.metrics.encode();
    assert_eq!(
        metric_value(&t, r#"ml_requests_total{model="fraud",version="1",status="invalid"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn bearer_token_guards_inference_only() {
    let state = state_with(&[source("fraud", "1", "rf", false)], &config(), Some("s3cret")).await;
    let app = modelship_serving::app(state);
    let with = |uri: &str, token: Option<&str>| {
        let mut b = Request::post(uri).header("content-type", "application/json");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(Body::from(predict_body())).unwrap()
    };
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
        let r = send(&app, with("/predict", token)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(error_of(&r).contains("bearer token"));
        assert_eq!(r.headers["www-authenticate"], "Bearer");
    }
    let r = send(&app, with("/predict", Some("s3cret"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for uri in ["/v2/models/fraud/infer", "/feedback"] {
        assert_eq!(send(&app, with(uri, None)).await.status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    for uri in [
        "/health",
        "/ready",
        "/metrics",
        "/models",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models",
        "/v2/models/fraud",
    ] {
        assert_eq!(
            get_json(&app, uri).await.status,
            StatusCode::OK,
            "{uri} must not need the token"
        );
    }
}
