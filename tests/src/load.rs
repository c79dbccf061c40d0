//! A bounded, open-loop load generator: requests at a fixed rate to a Service's ClusterIP
//! (kube-proxy picks a ready pod for each connection), every outcome recorded, so tests can
//! assert that no request was lost during a rollout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Mutex;

/// What one request returned.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// When the request was sent, from the start of the load.
    pub sent_at: Duration,
    pub status: u16,
    pub latency: Duration,
    /// `model_version` from the response body, if any.
    pub version: Option<String>,
    pub error: Option<String>,
}

/// The whole run.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub outcomes: Vec<Outcome>,
}

impl LoadReport {
    pub fn sent(&self) -> usize {
        self.outcomes.len()
    }

    /// Requests that got no response or a non-2xx one.
    pub fn failures(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| !(200..300).contains(&o.status)).collect()
    }

    pub fn by_version(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for o in &self.outcomes {
            *counts.entry(o.version.clone().unwrap_or_default()).or_default() += 1;
        }
        counts
    }

    /// A short description of the failures, for assertion messages.
    pub fn describe_failures(&self) -> String {
        let failures = self.failures();
        let mut text = format!("{} of {} requests failed", failures.len(), self.sent());
        for f in failures.iter().take(5) {
            text.push_str(&format!(
                "\n  at {:.2}s: status {} error {:?}",
                f.sent_at.as_secs_f64(),
                f.status,
                f.error
            ));
        }
        text
    }

    pub fn latency_quantile(&self, q: f64) -> Duration {
        let mut latencies: Vec<Duration> = self.outcomes.iter().map(|o| o.latency).collect();
        latencies.sort();
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[index]
    }
}

/// A running load; `stop` ends it and returns the report.
pub struct Load {
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<LoadReport>,
}

impl Load {
    /// Send `POST path` with `body` to `target` (a Service's ClusterIP and port) at `rate`
    /// requests per second, for at most `max_duration`.
    pub fn start(
        target: SocketAddr,
        path: &str,
        body: &str,
        rate: u32,
        max_duration: Duration,
    ) -> Load {
        let running = Arc::new(AtomicBool::new(true));
        let uri: hyper::Uri = format!("http://{target}{path}").parse().expect("a valid URI");
        let body = Bytes::from(body.to_string());
        let flag = running.clone();
        let task = tokio::spawn(async move {
            // Every other request goes on a pooled keep-alive connection, which stays with its
            // pod until the pod closes it; the others on a new connection each, which kube-proxy
            // sends to a pod of the endpoints it has at that moment. Both ways clients meet a
            // rollout are covered.
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(Duration::from_secs(2)));
            let pooled: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector.clone());
            let fresh: Client<_, Full<Bytes>> =
                Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
            let outcomes = Arc::new(Mutex::new(Vec::new()));
            let mut ticker =
                tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let started = Instant::now();
            let mut in_flight = Vec::new();
            let mut sent = 0_u64;
            while flag.load(Ordering::Relaxed) && started.elapsed() < max_duration {
                ticker.tick().await;
                let client = if sent.is_multiple_of(2) { pooled.clone() } else { fresh.clone() };
                sent += 1;
                let (uri, body, outcomes) = (uri.clone(), body.clone(), outcomes.clone());
                let sent_at = started.elapsed();
                in_flight.push(tokio::spawn(async move {
                    let mut outcome = send(&client, uri, body).await;
                    outcome.sent_at = sent_at;
                    outcomes.lock().await.push(outcome);
                }));
                in_flight.retain(|t: &tokio::task::JoinHandle<()>| !t.is_finished());
            }
            for task in in_flight {
                let _ = task.await;
            }
            let mut outcomes = std::mem::take(&mut *outcomes.lock().await);
            outcomes.sort_by_key(|o| o.sent_at);
            LoadReport { outcomes }
        });
        Load { running, task }
    }

    pub async fn stop(self) -> LoadReport {
        self.running.store(false, Ordering::Relaxed);
        self.task.await.expect("the load task does not panic")
    }
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
    body: Bytes,
) -> Outcome {
    let started = Instant::now();
    let request = hyper::Request::post(uri)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("a valid request");
    let result = tokio::time::timeout(Duration::from_secs(10), client.request(request)).await;
    match result {
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            let bytes =
                response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let version = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("model_version").and_then(|m| m.as_str()).map(str::to_string));
            let error = (!(200..300).contains(&status))
                .then(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            Outcome { sent_at: Duration::ZERO, status, latency: started.elapsed(), version, error }
        }
        Ok(Err(err)) => Outcome {
            sent_at: Duration::ZERO,
            status: 0,
            latency: started.elapsed(),
            version: None,
            error: Some(crate::harness::error_chain(&err)),
        },
        Err(_) => Outcome {
            sent_at: Duration::ZERO,
            status: 0,
            latency: started.elapsed(),
            version: None,
            error: Some("timed out after 10s".into()),
        },
    }
}
