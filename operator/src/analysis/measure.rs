//! The candidate pods' samples combined into one measurement. Pure.

use std::collections::BTreeMap;

use modelship_contract::exposition::PodSample;
use modelship_contract::metrics::RequestStatus;

use super::Measurement;

/// The latency quantile analysis judges.
const LATENCY_QUANTILE: f64 = 0.95;

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
        latency_p95_seconds: quantile(LATENCY_QUANTILE, &merged),
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
        assert_eq!(m.drift_score, Some(0.25));
        assert_eq!(m.unreachable_pods, 1);
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
