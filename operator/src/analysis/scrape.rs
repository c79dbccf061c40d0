//! Fetching the candidate pods' `/metrics`: the only I/O of analysis.

use std::time::Duration;

use futures::future::join_all;
use modelship_contract::exposition::{PodSample, parse_sample};
use tracing::{debug, info};

use super::Measurement;
use super::measure::aggregate;
use crate::http::HttpClient;

/// How long one pod may take to answer before it counts as unreachable.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Scrapes serving pods through one HTTP client and one URL template.
#[derive(Clone)]
pub struct Scraper {
    http: HttpClient,
    url_template: String,
}

impl Scraper {
    pub fn new(url_template: String) -> Self {
        Scraper { http: HttpClient::default(), url_template }
    }

    /// Scrape every target at once and aggregate what `version` reports. Pods that do not
    /// answer in time count as unreachable.
    pub async fn measure(&self, targets: &[ScrapeTarget], version: &str) -> Measurement {
        let samples = join_all(targets.iter().map(|target| self.sample(target, version))).await;
        let unreachable = samples.iter().filter(|s| s.is_none()).count();
        let samples: Vec<PodSample> = samples.into_iter().flatten().collect();
        let m = aggregate(&samples, unreachable);
        info!(version, pods = targets.len(), requests = m.requests, error_rate = ?m.error_rate, p95 = ?m.latency_p95_seconds, drift = ?m.drift_score, "analysis measurement");
        m
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
