//! Dynamic batching through the real router: concurrent requests share model calls, a lone
//! request does not wait for company.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use serde_json::json;

fn body(i: usize) -> String {
    json!({"features": rows("inputs_binary.json", 8)[i]}).to_string()
}

async fn batches_for(max_batch: u32, requests: usize) -> (f64, f64, Vec<f64>) {
    let mut cfg = config();
    cfg.max_batch_size = max_batch;
    let state = state_with(&[source("fraud", "1", "rf", false)], &cfg, None).await;
    let app = modelship_serving::app(state.clone());
    let replies =
        futures::future::join_all((0..requests).map(|i| post_json(&app, "/predict", body(i))))
            .await;
    assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    let predictions: Vec<f64> =
        replies.iter().map(|r| r.json["prediction"].as_f64().unwrap()).collect();
    let t = state.metrics.encode();
    let count = metric_value(&t, r#"ml_batch_size_count{model="fraud",version="1"}"#).unwrap();
    let sum = metric_value(&t, r#"ml_batch_size_sum{model="fraud",version="1"}"#).unwrap();
    (count, sum, predictions)
}

#[tokio::test]
async fn concurrent_requests_share_one_model_call() {
    let (count, sum, predictions) = batches_for(32, 8).await;
    assert_eq!((count, sum), (1.0, 8.0));
    // Each caller still gets its own row's answer.
    let want = expected("rf");
    for (i, p) in predictions.iter().enumerate() {
        assert_eq!(*p, want["labels"][i].as_f64().unwrap());
    }
}

#[tokio::test]
async fn batches_never_exceed_the_maximum() {
    let (count, sum, _) = batches_for(3, 8).await;
    assert_eq!((count, sum), (3.0, 8.0));
}

#[tokio::test]
async fn a_lone_request_does_not_wait_for_the_batch_delay() {
    let mut cfg = config();
    cfg.max_batch_delay_micros = 2_000_000;
    let state = state_with(&[source("fraud", "1", "rf", false)], &cfg, None).await;
    let app = modelship_serving::app(state);
    let b = body(0);
    post_json(&app, "/predict", b.clone()).await;
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(post_json(&app, "/predict", b.clone()).await.status, StatusCode::OK);
    }
    let each = started.elapsed() / 20;
    assert!(each < Duration::from_millis(50), "{each:?} per request with a 2 s batch delay");
    println!("sequential /predict through the router (debug build): {each:?} per request");
}
