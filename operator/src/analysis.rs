//! Canary analysis from the serving pods' own Prometheus metrics.
//!
//! The candidate's pods are scraped directly (no Prometheus server is needed); their counters
//! are cumulative since the pods started, and the pods were created for this rollout, so a
//! measurement covers the candidate's whole life. Parsing and judging are pure; only
//! `measure` does I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use modelship_crds::AnalysisSpec;

use crate::plan::Measurement;

/// Outcome of one measurement.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Pass,
    Inconclusive(String),
    Fail(String),
}

/// Judge a measurement against the thresholds of `spec`.
pub fn judge(spec: &AnalysisSpec, m: &Measurement) -> Verdict {
    if m.requests < i64::from(spec.min_requests) {
        let mut why = format!(
            "{} requests, fewer than minRequests {}: inconclusive",
            m.requests, spec.min_requests
        );
        if m.unreachable_pods > 0 {
            why.push_str(&format!(" ({} pods unreachable)", m.unreachable_pods));
        }
        return Verdict::Inconclusive(why);
    }
    let mut failures = Vec::new();
    if let (Some(limit), Some(rate)) = (spec.max_error_rate, m.error_rate)
        && rate > limit
    {
        failures.push(format!("error rate {rate:.4} above maxErrorRate {limit}"));
    }
    if let (Some(limit), Some(p95)) = (spec.max_latency_p95_seconds, m.latency_p95_seconds)
        && p95 > limit
    {
        failures.push(format!("p95 latency {p95:.4}s above maxLatencyP95Seconds {limit}"));
    }
    if let (Some(limit), Some(drift)) = (spec.max_drift_score, m.drift_score)
        && drift > limit
    {
        failures.push(format!("drift score {drift:.4} above maxDriftScore {limit}"));
    }
    if failures.is_empty() { Verdict::Pass } else { Verdict::Fail(failures.join("; ")) }
}

/// The series of one scrape that analysis reads, for one model version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodSample {
    /// `ml_requests_total` by its `status` label.
    pub requests_by_status: BTreeMap<String, f64>,
    /// `ml_request_duration_seconds_bucket` by upper bound (`f64::INFINITY` for `+Inf`).
    pub latency_buckets: Vec<(f64, f64)>,
    pub drift_score: Option<f64>,
}

/// Read the metrics of one pod from the Prometheus text exposition, keeping only series whose
/// `version` label equals `version` (or that carry none).
pub fn parse_sample(text: &str, version: &str) -> PodSample {
    let mut sample = PodSample::default();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = split_series(line) else {
            continue;
        };
        if labels.get("version").is_some_and(|v| v != version) {
            continue;
        }
        match name {
            "ml_requests_total" => {
                let status = labels.get("status").cloned().unwrap_or_default();
                *sample.requests_by_status.entry(status).or_default() += value;
            }
            "ml_request_duration_seconds_bucket" => {
                let bound = match labels.get("le").map(String::as_str) {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => match le.parse::<f64>() {
                        Ok(b) => b,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                let entry = buckets.entry(bound.to_bits()).or_insert((bound, 0.0));
                entry.1 += value;
            }
            "ml_data_drift_score" => {
                sample.drift_score = Some(sample.drift_score.map_or(value, |d: f64| d.max(value)));
            }
            _ => {}
        }
    }
    sample.latency_buckets = buckets.into_values().collect();
    sample.latency_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    sample
}

/// Combine the samples of every candidate pod into one measurement.
pub fn aggregate(samples: &[PodSample], unreachable_pods: usize) -> Measurement {
    let mut by_status: BTreeMap<&str, f64> = BTreeMap::new();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    let mut drift: Option<f64> = None;
    for sample in samples {
        for (status, count) in &sample.requests_by_status {
            *by_status.entry(status).or_default() += count;
        }
        for (bound, count) in &sample.latency_buckets {
            buckets.entry(bound.to_bits()).or_insert((*bound, 0.0)).1 += count;
        }
        if let Some(d) = sample.drift_score {
            drift = Some(drift.map_or(d, |m| m.max(d)));
        }
    }
    let total: f64 = by_status.values().sum();
    // Callers' mistakes (`invalid`) are not the model's fault; failures and load shedding are.
    let failed = by_status.get("error").copied().unwrap_or(0.0)
        + by_status.get("rejected").copied().unwrap_or(0.0);
    let mut merged: Vec<(f64, f64)> = buckets.into_values().collect();
    merged.sort_by(|a, b| a.0.total_cmp(&b.0));
    Measurement {
        requests: total as i64,
        error_rate: (total > 0.0).then(|| failed / total),
        latency_p95_seconds: quantile(0.95, &merged),
        drift_score: drift,
        unreachable_pods,
    }
}

/// Quantile of a cumulative histogram, interpolating inside the bucket like PromQL's
/// `histogram_quantile`.
pub fn quantile(q: f64, cumulative: &[(f64, f64)]) -> Option<f64> {
    let count = cumulative.last()?.1;
    if count <= 0.0 {
        return None;
    }
    let rank = q * count;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    for &(bound, c) in cumulative {
        if c >= rank {
            if bound.is_infinite() {
                return Some(lower_bound);
            }
            let in_bucket = c - lower_count;
            if in_bucket <= 0.0 {
                return Some(bound);
            }
            return Some(lower_bound + (bound - lower_bound) * (rank - lower_count) / in_bucket);
        }
        lower_bound = bound;
        lower_count = c;
    }
    Some(lower_bound)
}

/// Split `name{a="b",c="d"} 12.5` into its parts.
fn split_series(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    let (series, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].find('}')? + open;
            (&line[..close + 1], &line[close + 1..])
        }
        None => {
            let space = line.find(' ')?;
            (&line[..space], &line[space..])
        }
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match series.find('{') {
        Some(open) => (&series[..open], parse_labels(&series[open + 1..series.len() - 1])),
        None => (series, BTreeMap::new()),
    };
    Some((name, labels, value))
}

fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let Some(after) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(match escaped {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                other => value.push(other),
            }
        }
        let Some(end) = end else { break };
        labels.insert(key, value);
        rest = &after[end + 1..];
    }
    labels
}

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

/// Scrape every target and aggregate. Pods that do not answer within `timeout` count as
/// unreachable.
pub async fn measure(
    http: &crate::http::HttpClient,
    template: &str,
    targets: &[ScrapeTarget],
    version: &str,
    timeout: Duration,
) -> Measurement {
    let scrapes = targets.iter().map(|target| {
        let url = metrics_url(template, target);
        async move {
            match tokio::time::timeout(timeout, http.get_text(&url)).await {
                Ok(Ok(text)) => Some(parse_sample(&text, version)),
                Ok(Err(error)) => {
                    tracing::debug!(pod = %target.pod, %url, %error, "metrics scrape failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(pod = %target.pod, %url, "metrics scrape timed out");
                    None
                }
            }
        }
    });
    let results = futures::future::join_all(scrapes).await;
    let unreachable = results.iter().filter(|r| r.is_none()).count();
    let samples: Vec<PodSample> = results.into_iter().flatten().collect();
    aggregate(&samples, unreachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP ml_requests_total Requests.
# TYPE ml_requests_total counter
ml_requests_total{model="fraud",version="2",status="success"} 90
ml_requests_total{model="fraud",version="2",status="error"} 6
ml_requests_total{model="fraud",version="2",status="invalid"} 4
ml_requests_total{model="fraud",version="1",status="error"} 1000
# TYPE ml_request_duration_seconds histogram
ml_request_duration_seconds_bucket{model="fraud",version="2",le="0.001"} 50
ml_request_duration_seconds_bucket{model="fraud",version="2",le="0.01"} 90
ml_request_duration_seconds_bucket{model="fraud",version="2",le="0.1"} 100
ml_request_duration_seconds_bucket{model="fraud",version="2",le="+Inf"} 100
ml_request_duration_seconds_sum{model="fraud",version="2"} 0.5
ml_request_duration_seconds_count{model="fraud",version="2"} 100
ml_data_drift_score{model="fraud",version="2"} 0.25
# EOF
"#;

    fn spec() -> AnalysisSpec {
        AnalysisSpec {
            interval_seconds: 10,
            failure_limit: 1,
            min_requests: 20,
            max_error_rate: Some(0.05),
            max_latency_p95_seconds: Some(0.5),
            max_drift_score: Some(0.3),
        }
    }

    #[test]
    fn parses_only_the_candidate_version() {
        let sample = parse_sample(SCRAPE, "2");
        assert_eq!(sample.requests_by_status.get("success"), Some(&90.0));
        assert_eq!(sample.requests_by_status.get("error"), Some(&6.0));
        assert_eq!(sample.latency_buckets.len(), 4);
        assert_eq!(sample.drift_score, Some(0.25));
    }

    #[test]
    fn aggregates_pods_and_computes_rates() {
        let sample = parse_sample(SCRAPE, "2");
        let m = aggregate(&[sample.clone(), sample], 1);
        assert_eq!(m.requests, 200);
        assert!((m.error_rate.unwrap() - 0.06).abs() < 1e-9);
        // 95th of 200 = rank 190, in the 0.01..0.1 bucket (180..200): 0.01 + 0.09 * 10/20.
        assert!((m.latency_p95_seconds.unwrap() - 0.055).abs() < 1e-9);
        assert_eq!(m.unreachable_pods, 1);
    }

    #[test]
    fn judges_thresholds() {
        let m = aggregate(&[parse_sample(SCRAPE, "2")], 0);
        match judge(&spec(), &m) {
            Verdict::Fail(why) => {
                assert!(why.contains("error rate 0.0600 above maxErrorRate 0.05"), "{why}")
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        let relaxed = AnalysisSpec { max_error_rate: Some(0.1), ..spec() };
        assert_eq!(judge(&relaxed, &m), Verdict::Pass);
        let strict_latency =
            AnalysisSpec { max_error_rate: None, max_latency_p95_seconds: Some(0.01), ..spec() };
        assert!(
            matches!(judge(&strict_latency, &m), Verdict::Fail(why) if why.contains("p95 latency"))
        );
        let drift = AnalysisSpec { max_error_rate: None, max_drift_score: Some(0.2), ..spec() };
        assert!(
            matches!(judge(&drift, &m), Verdict::Fail(why) if why.contains("drift score 0.2500"))
        );
    }

    #[test]
    fn few_requests_are_inconclusive() {
        let m = Measurement {
            requests: 5,
            error_rate: Some(1.0),
            latency_p95_seconds: None,
            drift_score: None,
            unreachable_pods: 0,
        };
        assert!(matches!(judge(&spec(), &m), Verdict::Inconclusive(_)));
    }

    #[test]
    fn quantile_edges() {
        assert_eq!(quantile(0.95, &[]), None);
        assert_eq!(quantile(0.95, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        // Everything beyond the last finite bound: report that bound.
        assert_eq!(quantile(0.95, &[(1.0, 0.0), (f64::INFINITY, 10.0)]), Some(1.0));
    }

    #[test]
    fn labels_with_escapes() {
        let (name, labels, value) = split_series(r#"x{a="q\"uote",b="c,d"} 3"#).expect("parses");
        assert_eq!(name, "x");
        assert_eq!(labels["a"], "q\"uote");
        assert_eq!(labels["b"], "c,d");
        assert_eq!(value, 3.0);
    }

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
