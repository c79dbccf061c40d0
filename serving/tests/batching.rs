//! Dynamic batching through the real router: concurrent requests share model calls, a lone
//! request does not wait for company, and a cheap call skips the queue altogether.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use modelship_serving::config::Config;
use modelship_serving::state::AppState;
use serde_json::json;

fn body(i: usize) -> String {
    json!({"features": rows("inputs_binary.json", 8)[i]}).to_string()
}

/// Settings that send every call through the queue, however cheap the model.
fn queued() -> Config {
    let mut cfg = config();
    cfg.inline_call_max_micros = 0;
    cfg
}

/// Settings under which every single-row call on the fixtures runs on the spot, even in a
/// debug build.
fn on_the_spot() -> Config {
    let mut cfg = config();
    cfg.inline_call_max_micros = 1_000_000;
    cfg
}

async fn batches_for(max_batch: u32, requests: usize) -> (f64, f64, Vec<f64>) {
    let mut cfg = queued();
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
    let mut cfg = queued();
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

#[tokio::test]
async fn cheap_calls_skip_the_queue_and_keep_their_own_answers() {
    let mut cfg = on_the_spot();
    // A queue of one would refuse seven of these eight if they were queued.
    cfg.queue_capacity = 1;
    let state = state_with(&[source("fraud", "1", "rf", true)], &cfg, None).await;
    let app = modelship_serving::app(state.clone());
    let replies =
        futures::future::join_all((0..8).map(|i| post_json(&app, "/predict", body(i)))).await;
    let want = expected("rf");
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["prediction"].as_f64().unwrap(), want["labels"][i].as_f64().unwrap());
    }
    let t = state.metrics.encode();
    let l = r#"{model="fraud",version="1"}"#;
    // One call per request, each counted, and the drift window fed by all of them.
    assert_eq!(metric_value(&t, &format!("ml_batch_size_count{l}")), Some(8.0));
    assert_eq!(metric_value(&t, &format!("ml_batch_size_sum{l}")), Some(8.0));
    assert_eq!(metric_value(&t, &format!("ml_predictions_total{l}")), Some(8.0));
    assert_eq!(metric_value(&t, &format!("ml_queue_depth{l}")), Some(0.0));
    let drift = metric_value(&t, &format!("ml_data_drift_score{l}")).unwrap();
    assert!(drift > 0.0 && drift.is_finite(), "{drift}");
}

/// A state whose ceiling lets one row of the forest run on the spot and not eight. Each state
/// measures its own row at warm-up, and two warm-ups of a debug build on a busy machine can
/// differ by more than the margin, so the state is built again (a few times at most) until its
/// own measurement sits inside the ceiling set from the one before.
async fn one_row_on_the_spot_but_not_eight(mut cfg: Config) -> AppState {
    let cost_of =
        |state: &AppState| state.models().unwrap().get("fraud", Some("1")).unwrap().batcher.cost();
    let mut measured = cost_of(&state_with(&[source("fraud", "1", "rf", false)], &cfg, None).await);
    for _ in 0..5 {
        // Three rows' worth: room for one row, not for eight, with a factor of two or more of
        // slack on either side.
        let ceiling = u64::try_from(measured.row_time().as_micros()).unwrap().max(1) * 3;
        cfg.inline_call_max_micros = ceiling;
        let state = state_with(&[source("fraud", "1", "rf", false)], &cfg, None).await;
        let cost = cost_of(&state);
        if cost.on_the_spot(1, cfg.inline_call_max()) && !cost.on_the_spot(8, cfg.inline_call_max())
        {
            return state;
        }
        measured = cost;
    }
    panic!("no warm-up of the forest measured near {measured:?} twice in a row");
}

#[tokio::test]
async fn a_request_of_many_rows_still_goes_through_the_queue() {
    let mut cfg = config();
    // A queue of one: on this single-threaded test runtime the batching task cannot run until
    // every request has been polled once, so of eight queued requests seven are refused.
    cfg.queue_capacity = 1;
    let state = one_row_on_the_spot_but_not_eight(cfg).await;
    let app = modelship_serving::app(state.clone());
    let ones = futures::future::join_all((0..8).map(|i| post_json(&app, "/predict", body(i))));
    assert!(ones.await.iter().all(|r| r.status == StatusCode::OK), "one-row calls are not queued");
    let eight = json!({"instances": rows("inputs_binary.json", 8)}).to_string();
    let eights =
        futures::future::join_all((0..8).map(|_| post_json(&app, "/predict", eight.clone())));
    let statuses: Vec<StatusCode> = eights.await.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 7);
}
