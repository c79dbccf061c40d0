//! An open-loop load generator: requests at a fixed rate to a Service's ClusterIP (kube-proxy
//! picks a ready pod for each connection) until the test stops it, every outcome recorded, so
//! tests can assert that no request was lost during a rollout and that traffic reached every
//! phase of it. The test names the phases as it goes ([`Load::mark`]). A hard cap bounds a
//! forgotten load; a report whose load hit the cap says so, and tests fail on it.

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
    /// Phase names with when each began, from the start of the load; the first is "start".
    pub phases: Vec<(String, Duration)>,
    /// When the test stopped the load, from its start.
    pub stopped_at: Duration,
    /// The load reached its cap before the test stopped it.
    pub capped: bool,
}

/// What one phase of a run got.
#[derive(Debug)]
pub struct PhaseTraffic {
    pub name: String,
    pub from: Duration,
    pub to: Duration,
    /// Answers by `model_version` (requests without one count under "").
    pub versions: BTreeMap<String, usize>,
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

    /// The traffic of each phase: requests sent from its mark to the next one (or the stop).
    pub fn by_phase(&self) -> Vec<PhaseTraffic> {
        self.phases
            .iter()
            .enumerate()
            .map(|(i, (name, from))| {
                let to = self.phases.get(i + 1).map_or(self.stopped_at, |(_, next)| *next);
                let mut versions = BTreeMap::new();
                for o in self.outcomes.iter().filter(|o| o.sent_at >= *from && o.sent_at < to) {
                    *versions.entry(o.version.clone().unwrap_or_default()).or_default() += 1;
                }
                PhaseTraffic { name: name.clone(), from: *from, to, versions }
            })
            .collect()
    }

    /// Panics unless the load ran until the test stopped it, every phase got answers from
    /// each version `expected` lists for it (and from no other when `only` is set for it), and
    /// the last second before the stop got answers.
    pub fn assert_covered(&self, expected: &[(&str, &[&str], bool)]) {
        assert!(!self.capped, "the load stopped at its cap before the test ended it");
        let phases = self.by_phase();
        let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
        let wanted: Vec<&str> = expected.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(names, wanted, "phases of the run");
        for (phase, (_, versions, only)) in phases.iter().zip(expected) {
            for version in *versions {
                assert!(
                    phase.versions.get(*version).copied().unwrap_or(0) > 0,
                    "phase {:?} ({:.1}-{:.1} s) got no answer from version {version}: {:?}",
                    phase.name,
                    phase.from.as_secs_f64(),
                    phase.to.as_secs_f64(),
                    phase.versions
                );
            }
            if *only {
                let others: Vec<&String> =
                    phase.versions.keys().filter(|v| !versions.contains(&v.as_str())).collect();
                assert!(
                    others.is_empty(),
                    "phase {:?} got answers from {others:?} too: {:?}",
                    phase.name,
                    phase.versions
                );
            }
        }
        let last = self.stopped_at.saturating_sub(Duration::from_secs(1));
        let answered =
            self.outcomes.iter().filter(|o| o.sent_at >= last && o.status / 100 == 2).count();
        assert!(answered > 0, "no answer in the last second before the stop");
    }

    /// A short description of the failures, for assertion messages: how many, in which
    /// phases and over which span, and the first few.
    pub fn describe_failures(&self) -> String {
        let failures = self.failures();
        let mut text = format!("{} of {} requests failed", failures.len(), self.sent());
        let sent = failures.iter().map(|f| f.sent_at);
        if let (Some(first), Some(last)) = (sent.clone().min(), sent.max()) {
            text.push_str(&format!(
                ", sent from {:.2}s to {:.2}s",
                first.as_secs_f64(),
                last.as_secs_f64()
            ));
        }
        for phase in self.by_phase() {
            let failed =
                failures.iter().filter(|f| f.sent_at >= phase.from && f.sent_at < phase.to).count();
            if failed > 0 {
                text.push_str(&format!(
                    "\n  {failed} in phase {:?} ({:.1}-{:.1} s)",
                    phase.name,
                    phase.from.as_secs_f64(),
                    phase.to.as_secs_f64()
                ));
            }
        }
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
    started: Instant,
    phases: std::sync::Mutex<Vec<(String, Duration)>>,
    task: tokio::task::JoinHandle<(Vec<Outcome>, bool)>,
}

impl Load {
    /// Send `POST path` with `body` to `target` (a Service's ClusterIP and port) at `rate`
    /// requests per second until [`Load::stop`], or `cap` at the most.
    pub fn start(target: SocketAddr, path: &str, body: &str, rate: u32, cap: Duration) -> Load {
        let running = Arc::new(AtomicBool::new(true));
        let uri: hyper::Uri = format!("http://{target}{path}").parse().expect("a valid URI");
        let body = Bytes::from(body.to_string());
        let flag = running.clone();
        let started = Instant::now();
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
            let mut in_flight = Vec::new();
            let mut sent = 0_u64;
            while flag.load(Ordering::Relaxed) && started.elapsed() < cap {
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
            let capped = flag.load(Ordering::Relaxed);
            let mut outcomes = std::mem::take(&mut *outcomes.lock().await);
            outcomes.sort_by_key(|o| o.sent_at);
            (outcomes, capped)
        });
        let phases = std::sync::Mutex::new(vec![("start".to_string(), Duration::ZERO)]);
        Load { running, started, phases, task }
    }

    /// Begins a phase named `name` now: requests sent from here on count for it.
    pub fn mark(&self, name: &str) {
        let at = self.started.elapsed();
        self.phases.lock().unwrap_or_else(|p| p.into_inner()).push((name.to_string(), at));
    }

    pub async fn stop(self) -> LoadReport {
        let stopped_at = self.started.elapsed();
        self.running.store(false, Ordering::Relaxed);
        let (outcomes, capped) = self.task.await.expect("the load task does not panic");
        let phases = self.phases.into_inner().unwrap_or_else(|p| p.into_inner());
        LoadReport { outcomes, phases, stopped_at, capped }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(at_ms: u64, version: &str) -> Outcome {
        Outcome {
            sent_at: Duration::from_millis(at_ms),
            status: 200,
            latency: Duration::from_millis(1),
            version: Some(version.to_string()),
            error: None,
        }
    }

    fn report(outcomes: Vec<Outcome>, capped: bool) -> LoadReport {
        LoadReport {
            outcomes,
            phases: vec![
                ("start".into(), Duration::ZERO),
                ("after".into(), Duration::from_secs(2)),
            ],
            stopped_at: Duration::from_secs(4),
            capped,
        }
    }

    #[test]
    fn phases_split_the_traffic_at_their_marks() {
        let run = report(vec![answer(100, "1"), answer(1900, "1"), answer(2000, "2")], false);
        let phases = run.by_phase();
        assert_eq!(phases[0].versions, BTreeMap::from([("1".to_string(), 2)]));
        assert_eq!(phases[1].versions, BTreeMap::from([("2".to_string(), 1)]));
        assert_eq!(phases[1].to, Duration::from_secs(4));
    }

    #[test]
    fn a_covered_run_passes() {
        let run = report(vec![answer(100, "1"), answer(2500, "2"), answer(3500, "2")], false);
        run.assert_covered(&[("start", &["1"], true), ("after", &["2"], true)]);
    }

    #[test]
    #[should_panic(expected = "got no answer from version 2")]
    fn a_phase_without_its_version_fails() {
        let run = report(vec![answer(100, "1"), answer(3500, "1")], false);
        run.assert_covered(&[("start", &["1"], true), ("after", &["2"], false)]);
    }

    #[test]
    #[should_panic(expected = "got answers from [\"1\"] too")]
    fn an_unexpected_version_fails_an_exclusive_phase() {
        let run = report(vec![answer(100, "1"), answer(2500, "1"), answer(3500, "2")], false);
        run.assert_covered(&[("start", &["1"], true), ("after", &["2"], true)]);
    }

    #[test]
    #[should_panic(expected = "no answer in the last second")]
    fn a_silent_end_fails() {
        let run = report(vec![answer(100, "1"), answer(2500, "2")], false);
        run.assert_covered(&[("start", &["1"], true), ("after", &["2"], true)]);
    }

    #[test]
    #[should_panic(expected = "stopped at its cap")]
    fn a_capped_load_fails() {
        let run = report(vec![answer(100, "1"), answer(3500, "2")], true);
        run.assert_covered(&[("start", &["1"], true), ("after", &["2"], true)]);
    }
}
