//! Fetching the serving pods' `/metrics`: the only I/O of analysis. The scraper keeps each
//! pod's last sample, so that a measurement judges the window since the previous one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use modelship_contract::exposition::{PodSample, parse_sample};
use tracing::{debug, info};

use super::measure::{aggregate, window};
use super::{Comparison, Measurement};
use crate::http::HttpClient;

/// How long one pod may take to answer before it counts as unreachable.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// A sample not used for this long belongs to a pod that is gone: forget it.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// A pod to scrape.
#[derive(Clone, Debug)]
pub struct ScrapeTarget {
    pub namespace: String,
    pub pod: String,
    pub ip: String,
    pub port: i32,
}

/// Fill the pod metrics URL template: `{ip}`, `{port}`, `{namespace}` and `{name}`.
pub fn metrics_url(template: &str, target: &ScrapeTarget) -> String {
    template
        .replace("{ip}", &target.ip)
        .replace("{port}", &target.port.to_string())
        .replace("{namespace}", &target.namespace)
        .replace("{name}", &target.pod)
}

/// Which series a remembered sample holds: one version of one pod.
type SampleKey = (String, String, String);

/// One pod's window, and whether an earlier sample bounded it.
struct PodWindow {
    window: PodSample,
    since_earlier_sample: bool,
}

/// Scrapes serving pods through one HTTP client and one URL template, remembering the last
/// sample of each pod.
#[derive(Clone)]
pub struct Scraper {
    http: HttpClient,
    url_template: String,
    last_samples: Arc<Mutex<HashMap<SampleKey, (PodSample, Instant)>>>,
}

impl Scraper {
    pub fn new(url_template: String) -> Self {
        Scraper { http: HttpClient::default(), url_template, last_samples: Arc::default() }
    }

    /// The candidate's window: every pod's counters since its previous sample, or since it
    /// started (candidate pods are created for the rollout).
    pub async fn measure(&self, targets: &[ScrapeTarget], version: &str) -> Measurement {
        let (windows, unreachable) = self.windows(targets, version).await;
        let windows: Vec<PodSample> = windows.into_iter().map(|w| w.window).collect();
        let m = aggregate(&windows, unreachable);
        info!(version, pods = targets.len(), requests = m.requests, error_rate = ?m.error_rate, p95 = ?m.latency_p95_seconds, p99 = ?m.latency_p99_seconds, drift = ?m.drift_score, accuracy = ?m.accuracy, "analysis window of the candidate");
        m
    }

    /// Stable's window, from the pods that have an earlier sample: long-running pods' totals
    /// since they started would not describe the candidate's window.
    pub async fn compare(&self, targets: &[ScrapeTarget], version: &str) -> Comparison {
        let (windows, unreachable) = self.windows(targets, version).await;
        let windows: Vec<PodSample> =
            windows.into_iter().filter(|w| w.since_earlier_sample).map(|w| w.window).collect();
        if windows.is_empty() {
            debug!(version, pods = targets.len(), "stable counters recorded; no window yet");
            return Comparison::BaselineTaken;
        }
        let m = aggregate(&windows, unreachable);
        info!(version, pods = windows.len(), requests = m.requests, error_rate = ?m.error_rate, p95 = ?m.latency_p95_seconds, p99 = ?m.latency_p99_seconds, accuracy = ?m.accuracy, "analysis window of stable");
        Comparison::Stable(Box::new(m))
    }

    /// Record where the pods' counters stand, so that the next window starts here.
    pub async fn record(&self, targets: &[ScrapeTarget], version: &str) {
        let _ = self.windows(targets, version).await;
    }

    async fn windows(&self, targets: &[ScrapeTarget], version: &str) -> (Vec<PodWindow>, usize) {
        let samples = join_all(targets.iter().map(|target| self.sample(target, version))).await;
        let now = Instant::now();
        let mut last = self.last_samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        last.retain(|_, (_, used)| now.duration_since(*used) < FORGET_AFTER);
        let mut unreachable = 0;
        let mut windows = Vec::new();
        for (target, sample) in targets.iter().zip(samples) {
            let Some(sample) = sample else {
                unreachable += 1;
                continue;
            };
            let key = (target.namespace.clone(), target.pod.clone(), version.to_string());
            let previous = last.get(&key).map(|(s, _)| s);
            windows.push(PodWindow {
                window: window(previous, &sample),
                since_earlier_sample: previous.is_some(),
            });
            last.insert(key, (sample, now));
        }
        (windows, unreachable)
    }

    async fn sample(&self, target: &ScrapeTarget, version: &str) -> Option<PodSample> {
        let url = metrics_url(&self.url_template, target);
        match tokio::time::timeout(SCRAPE_TIMEOUT, self.http.get_text(&url)).await {
            Ok(Ok(text)) => Some(parse_sample(&text, version)),
            Ok(Err(error)) => {
                debug!(pod = %target.pod, %url, %error, "metrics scrape failed");
                None
            }
            Err(_) => {
                debug!(pod = %target.pod, %url, "metrics scrape timed out");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_template() {
        let target = ScrapeTarget {
            namespace: "ml".into(),
            pod: "fraud-canary-abc".into(),
            ip: "10.1.2.3".into(),
            port: 8080,
        };
        assert_eq!(
            metrics_url("http://{ip}:{port}/metrics", &target),
            "http://10.1.2.3:8080/metrics"
        );
        assert_eq!(
            metrics_url("http://127.0.0.1:9/pods/{namespace}/{name}/proxy/metrics", &target),
            "http://127.0.0.1:9/pods/ml/fraud-canary-abc/proxy/metrics"
        );
    }
}
