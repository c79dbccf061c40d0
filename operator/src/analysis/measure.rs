//! One pod's window, and the pods' windows combined into one measurement. Pure.

use std::collections::BTreeMap;

use modelship_contract::exposition::PodSample;
use modelship_contract::metrics::RequestStatus;

use super::Measurement;

/// The latency quantiles analysis judges.
const P95: f64 = 0.95;
const P99: f64 = 0.99;

/// What a pod counted between two samples. Gauges (drift, accuracy) are read as they stand.
/// Without an earlier sample, or when a counter went down (the pod restarted), the window
/// starts at zero: the whole current sample.
pub fn window(previous: Option<&PodSample>, current: &PodSample) -> PodSample {
    let Some(previous) = previous.filter(|p| !restarted(p, current)) else {
        return current.clone();
    };
    let requests_by_status = current
        .requests_by_status
        .iter()
        .map(|(status, count)| {
            let before = previous.requests_by_status.get(status).copied().unwrap_or(0.0);
            (status.clone(), count - before)
        })
        .collect();
    let latency_buckets = current
        .latency_buckets
        .iter()
        .map(|&(bound, count)| (bound, count - bucket_count(&previous.latency_buckets, bound)))
        .collect();
    PodSample {
        requests_by_status,
        latency_buckets,
        drift_score: current.drift_score,
        accuracy: current.accuracy,
    }
}

/// Whether any counter of `current` is below its value in `previous`: the process restarted
/// in between (a series that disappeared counts too).
fn restarted(previous: &PodSample, current: &PodSample) -> bool {
    let requests_went_down = previous.requests_by_status.iter().any(|(status, before)| {
        current.requests_by_status.get(status).copied().unwrap_or(0.0) < *before
    });
    let buckets_went_down = previous
        .latency_buckets
        .iter()
        .any(|&(bound, before)| bucket_count(&current.latency_buckets, bound) < before);
    requests_went_down || buckets_went_down
}

fn bucket_count(buckets: &[(f64, f64)], bound: f64) -> f64 {
    buckets.iter().find(|(b, _)| b.to_bits() == bound.to_bits()).map_or(0.0, |(_, c)| *c)
}

/// Combine the windows of every pod of a version into one measurement.
pub fn aggregate(windows: &[PodSample], unreachable_pods: usize) -> Measurement {
    let mut by_status: BTreeMap<&str, f64> = BTreeMap::new();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    let mut drift: Option<f64> = None;
    let mut accuracy: Option<f64> = None;
    for sample in windows {
        for (status, count) in &sample.requests_by_status {
            *by_status.entry(status).or_default() += count;
        }
        for (bound, count) in &sample.latency_buckets {
            buckets.entry(bound.to_bits()).or_insert((*bound, 0.0)).1 += count;
        }
        if let Some(d) = sample.drift_score {
            drift = Some(drift.map_or(d, |m| m.max(d)));
        }
        if let Some(a) = sample.accuracy {
            accuracy = Some(accuracy.map_or(a, |m| m.min(a)));
        }
    }
    let total: f64 = by_status.values().sum();
    let failed: f64 = by_status
        .iter()
        .filter(|(status, _)| RequestStatus::parse(status).is_some_and(|s| s.counts_as_failure()))
        .map(|(_, count)| count)
        .sum();
    let mut merged: Vec<(f64, f64)> = buckets.into_values().collect();
    merged.sort_by(|a, b| a.0.total_cmp(&b.0));
    Measurement {
        requests: total as i64,
        error_rate: (total > 0.0).then(|| failed / total),
        latency_p95_seconds: quantile(P95, &merged),
        latency_p99_seconds: quantile(P99, &merged),
        drift_score: drift,
        accuracy,
        unreachable_pods,
        ..Measurement::default()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodSample {
        PodSample {
            requests_by_status: [("success", 90.0), ("error", 6.0), ("invalid", 4.0)]
                .map(|(s, n)| (s.to_string(), n))
                .into(),
            latency_buckets: vec![
                (0.001, 50.0),
                (0.01, 90.0),
                (0.1, 100.0),
                (f64::INFINITY, 100.0),
            ],
            drift_score: Some(0.25),
            accuracy: Some(0.9),
        }
    }

    #[test]
    fn aggregates_pods_and_computes_rates() {
        let m = aggregate(&[pod(), pod()], 1);
        assert_eq!(m.requests, 200);
        // Invalid requests are the callers' mistakes: 12 errors of 200.
        assert!((m.error_rate.unwrap() - 0.06).abs() < 1e-9);
        // 95th of 200 = rank 190, in the 0.01..0.1 bucket (180..200): 0.01 + 0.09 * 10/20.
        assert!((m.latency_p95_seconds.unwrap() - 0.055).abs() < 1e-9);
        // 99th = rank 198, same bucket: 0.01 + 0.09 * 18/20.
        assert!((m.latency_p99_seconds.unwrap() - 0.091).abs() < 1e-9);
        assert_eq!(m.drift_score, Some(0.25));
        assert_eq!(m.accuracy, Some(0.9));
        assert_eq!(m.unreachable_pods, 1);
    }

    #[test]
    fn the_lowest_accuracy_and_the_highest_drift_speak_for_the_version() {
        let worse = PodSample { drift_score: Some(0.5), accuracy: Some(0.7), ..pod() };
        let m = aggregate(&[pod(), worse], 0);
        assert_eq!((m.drift_score, m.accuracy), (Some(0.5), Some(0.7)));
    }

    fn later(success: f64, error: f64, buckets: [f64; 3]) -> PodSample {
        PodSample {
            requests_by_status: [("success", success), ("error", error), ("invalid", 4.0)]
                .map(|(s, n)| (s.to_string(), n))
                .into(),
            latency_buckets: vec![
                (0.001, buckets[0]),
                (0.01, buckets[1]),
                (0.1, buckets[2]),
                (f64::INFINITY, buckets[2]),
            ],
            drift_score: Some(0.1),
            accuracy: None,
        }
    }

    #[test]
    fn a_window_is_the_difference_of_two_samples() {
        // 90 -> 190 successes, 6 -> 46 errors: the window holds 100 + 40 (+ 0 invalid).
        let w = window(Some(&pod()), &later(190.0, 46.0, [50.0, 90.0, 240.0]));
        assert_eq!(w.requests_by_status["success"], 100.0);
        assert_eq!(w.requests_by_status["error"], 40.0);
        assert_eq!(w.requests_by_status["invalid"], 0.0);
        assert_eq!(
            w.latency_buckets,
            vec![(0.001, 0.0), (0.01, 0.0), (0.1, 140.0), (f64::INFINITY, 140.0)]
        );
        // Gauges as they stand now.
        assert_eq!((w.drift_score, w.accuracy), (Some(0.1), None));
        let m = aggregate(&[w], 0);
        assert_eq!(m.requests, 140);
        assert!((m.error_rate.unwrap() - 40.0 / 140.0).abs() < 1e-9);
        // The burst is judged on its own window, not diluted by the earlier clean traffic.
        let since_start = aggregate(&[later(190.0, 46.0, [50.0, 90.0, 240.0])], 0);
        assert!(since_start.error_rate.unwrap() < 0.2 && m.error_rate.unwrap() > 0.28);
    }

    #[test]
    fn a_restarted_pod_or_a_first_sample_is_measured_from_zero() {
        let fresh = later(10.0, 0.0, [5.0, 10.0, 10.0]);
        assert_eq!(window(Some(&pod()), &fresh), fresh, "counters went down: restarted");
        assert_eq!(window(None, &fresh), fresh);
        // A series that disappeared is a restart too.
        let mut without_invalid = later(190.0, 46.0, [50.0, 90.0, 240.0]);
        without_invalid.requests_by_status.remove("invalid");
        assert_eq!(window(Some(&pod()), &without_invalid), without_invalid);
    }

    #[test]
    fn rejected_requests_count_as_failures() {
        let mut shedding = pod();
        shedding.requests_by_status =
            [("success", 50.0), ("rejected", 50.0)].map(|(s, n)| (s.to_string(), n)).into();
        assert_eq!(aggregate(&[shedding], 0).error_rate, Some(0.5));
        assert_eq!(aggregate(&[], 3).error_rate, None);
    }

    #[test]
    fn quantile_edges() {
        assert_eq!(quantile(0.95, &[]), None);
        assert_eq!(quantile(0.95, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        // Everything beyond the last finite bound: report that bound.
        assert_eq!(quantile(0.95, &[(1.0, 0.0), (f64::INFINITY, 10.0)]), Some(1.0));
    }
}
