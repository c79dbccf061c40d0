//! The prediction log with real models: one record per predicted row with the right fields
//! and the SHA-256 of the features, sent in batches to a real HTTP collector on 127.0.0.1
//! or written as JSON lines by the real binary; sampling, and drops counted when the sink
//! cannot keep up, without a failed request.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use common::*;
use modelship_serving::predlog::{HTTP_BATCH, PENDING_LIMIT_BYTES, Sink};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A collector on 127.0.0.1 that keeps every record it receives.
async fn collector() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = received.clone();
    let app = Router::new().route(
        "/records",
        post(move |body: String| {
            let sink = sink.clone();
            async move {
                let batch: Vec<Value> = serde_json::from_str(&body).expect("a JSON array");
                sink.lock().unwrap().extend(batch);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

fn logging_to(url: String, rate: f64, features: bool) -> modelship_serving::config::Config {
    let mut config = config();
    config.prediction_log = Sink::Http;
    config.prediction_log_url = Some(url);
    config.prediction_log_sample_rate = rate;
    config.prediction_log_features = features;
    config
}

fn sha256_of(row: &[f32]) -> String {
    let mut hasher = Sha256::new();
    for v in row {
        hasher.update(v.to_le_bytes());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What `probe` returns once `done` holds of it, or after 5 s whatever it returns then: the
/// writer works on its own thread, a moment behind the requests.
async fn eventually<T>(mut probe: impl AsyncFnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    for _ in 0..100 {
        let value = probe().await;
        if done(&value) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    probe().await
}

async fn wait_for(received: &Arc<Mutex<Vec<Value>>>, n: usize) -> Vec<Value> {
    eventually(async || received.lock().unwrap().clone(), |records| records.len() >= n).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_prediction_is_recorded_with_its_hash() {
    let (addr, received) = collector().await;
    let config = logging_to(format!("http://{addr}/records"), 1.0, true);
    let state = state_with(&[source("fraud", "1", "rf", false)], &config, None).await;
    let app = modelship_serving::app(state);
    let rs = rows("inputs_binary.json", 3);

    let one = post_json(&app, "/predict", json!({"features": rs[0]}).to_string()).await;
    assert_eq!(one.status, 200, "{}", one.text);
    let batch =
        post_json(&app, "/predict", json!({"instances": [rs[1], rs[2]], "id": "b-1"}).to_string())
            .await;
    assert_eq!(batch.status, 200, "{}", batch.text);

    let records = wait_for(&received, 3).await;
    assert_eq!(records.len(), 3, "one record per row: {records:?}");
    let single = &records[0];
    assert_eq!(single["kind"], "prediction");
    assert_eq!((single["model"].as_str(), single["version"].as_str()), (Some("fraud"), Some("1")));
    assert_eq!(single["prediction"], one.json["prediction"]);
    assert_eq!(single["confidence"], one.json["confidence"]);
    assert_eq!(single["features_sha256"], sha256_of(&rs[0]).as_str());
    assert_eq!(single["features"].as_array().unwrap().len(), 20, "features were asked for");
    let (logged_at, answered_at) = (single["timestamp"].as_f64(), one.json["timestamp"].as_f64());
    assert!(logged_at.unwrap() > 1.7e9);
    // The record says the instant in whole microseconds (truncated), the response as an f64
    // of seconds, which resolves about 0.24 µs at today's date: the same instant differs by
    // less than a microsecond and the two roundings.
    assert!(
        (answered_at.unwrap() - logged_at.unwrap()).abs() < 1.5e-6,
        "the record and the response carry the same instant: {logged_at:?} {answered_at:?}"
    );
    assert_eq!(single["request_id"], "0", "the log's own number when the request has no id");
    for (i, record) in records[1..].iter().enumerate() {
        assert_eq!(record["request_id"], "b-1");
        assert_eq!(record["row"], i);
        assert_eq!(record["features_sha256"], sha256_of(&rs[i + 1]).as_str());
        let features: Vec<f32> = serde_json::from_value(record["features"].clone()).unwrap();
        assert_eq!(features, rs[i + 1], "row {i}'s own features");
        assert_eq!(record["prediction"], batch.json["predictions"][i]["prediction"]);
    }
    // The writer counts a batch once the collector has answered, a moment after the
    // collector holds its records.
    let written = |metrics: &str| {
        metric_value(metrics, "ml_prediction_log_records_total{outcome=\"written\"}")
    };
    let metrics = eventually(
        async || get_json(&app, "/metrics").await.text,
        |metrics| written(metrics) == Some(3.0),
    )
    .await;
    assert_eq!(written(&metrics), Some(3.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sampling_logs_the_share_asked_for_without_features() {
    let (addr, received) = collector().await;
    let config = logging_to(format!("http://{addr}/records"), 0.25, false);
    let state = state_with(&[source("fraud", "1", "logreg", false)], &config, None).await;
    let app = modelship_serving::app(state);
    let rs = rows("inputs_binary.json", 40);
    for row in &rs {
        let r = post_json(&app, "/predict", json!({"features": row}).to_string()).await;
        assert_eq!(r.status, 200);
    }
    let records = wait_for(&received, 10).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(received.lock().unwrap().len(), 10, "a quarter of 40");
    assert!(records.iter().all(|r| r.get("features").is_none()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_that_cannot_keep_up_costs_records_not_requests() {
    // A collector that accepts connections and never answers: the writer waits on it while
    // the pending records pile up to their limit.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let config = logging_to(format!("http://{addr}/records"), 1.0, false);
    let state = state_with(&[source("fraud", "1", "logreg", false)], &config, None).await;
    let app = modelship_serving::app(state);
    let rs = rows("inputs_binary.json", 1);
    let body = json!({"features": rs[0]}).to_string();
    let started = std::time::Instant::now();
    // A record takes well over 100 bytes: this many requests pass the limit, with a batch
    // the writer took before it got stuck.
    let enough = PENDING_LIMIT_BYTES / 100 + HTTP_BATCH;
    let dropped = || async {
        let metrics = get_json(&app, "/metrics").await.text;
        metric_value(&metrics, "ml_prediction_log_records_total{outcome=\"dropped\"}")
            .unwrap_or_default()
    };
    let mut sent = 0;
    while sent < enough {
        for _ in 0..1000 {
            let r = post_json(&app, "/predict", body.clone()).await;
            assert_eq!(r.status, 200);
        }
        sent += 1000;
        if dropped().await >= 1.0 {
            break;
        }
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(30), "inference did not wait for the sink: {elapsed:?}");
    assert!(dropped().await >= 1.0, "no record dropped after {sent} requests");
    drop(silent);
}

#[test]
fn the_binary_writes_json_lines_to_stdout() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_modelship-serving"))
        .env("MODELSHIP_LISTEN", format!("127.0.0.1:{port}"))
        .env("MODELSHIP_MODEL_URI", fixture("logreg.onnx"))
        .env("MODELSHIP_MODEL_NAME", "churn")
        .env("MODELSHIP_MODEL_VERSION", "7")
        .env("MODELSHIP_PREDICTION_LOG", "stdout")
        .env("MODELSHIP_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let body = json!({"features": rows("inputs_binary.json", 1)[0]}).to_string();
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let request = format!(
                "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).unwrap();
            let mut reply = String::new();
            let _ = stream.read_to_string(&mut reply);
            if reply.starts_with("HTTP/1.1 200") {
                answered = Some(reply);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(answered.is_some(), "the server answered");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let record = lines
        .by_ref()
        .take(50)
        .map_while(Result::ok)
        .find(|line| line.contains("\"kind\":\"prediction\""));
    let _ = child.kill();
    let _ = child.wait();
    let record: Value =
        serde_json::from_str(&record.expect("a prediction record on stdout")).unwrap();
    assert_eq!((record["model"].as_str(), record["version"].as_str()), (Some("churn"), Some("7")));
    assert_eq!(record["features_sha256"].as_str().unwrap().len(), 64);
}

/// `requests` predictions from the real binary, each on a fresh connection, then SIGTERM with
/// no drain: the process exits within milliseconds of the last answer.
fn predict_then_stop(
    extra: &[(&str, String)],
    stdout: std::process::Stdio,
    requests: usize,
) -> Option<String> {
    use common::process::{free_addr, http, sigterm, spawn_with_stdout, wait_exit, wait_ready};
    use std::io::Read;
    let addr = free_addr();
    let mut env = vec![("MODELSHIP_DRAIN_SECONDS", "0".to_string())];
    env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    let mut child = spawn_with_stdout(addr, &env, stdout);
    let output = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut text = String::new();
            out.read_to_string(&mut text).expect("the server's standard output");
            text
        })
    });
    wait_ready(addr, &mut child);
    let body = json!({"features": rows("inputs_binary.json", 1)[0]}).to_string();
    for _ in 0..requests {
        assert_eq!(http(addr, "POST", "/predict", &body).map(|(status, _)| status), Some(200));
    }
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("the server exits");
    assert!(status.success(), "{status:?}");
    output.map(|reader| reader.join().unwrap())
}

#[test]
fn a_server_that_stops_writes_its_last_records_to_stdout_first() {
    let requests = 300;
    let stdout = predict_then_stop(
        &[("MODELSHIP_PREDICTION_LOG", "stdout".into())],
        std::process::Stdio::piped(),
        requests,
    )
    .unwrap();
    let records = stdout.lines().filter(|line| line.contains("\"kind\":\"prediction\"")).count();
    assert_eq!(records, requests, "one record per request, the last ones included");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stops_sends_its_last_records_to_the_collector_first() {
    let (addr, received) = collector().await;
    let requests = 300;
    let url = format!("http://{addr}/records");
    tokio::task::spawn_blocking(move || {
        predict_then_stop(
            &[("MODELSHIP_PREDICTION_LOG", "http".into()), ("MODELSHIP_PREDICTION_LOG_URL", url)],
            std::process::Stdio::null(),
            requests,
        )
    })
    .await
    .unwrap();
    // Nothing is sent after the process exits: what the collector has now is all there is.
    assert_eq!(
        received.lock().unwrap().len(),
        requests,
        "one record per request, none left behind"
    );
}
