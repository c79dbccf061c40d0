//! A measurement against the thresholds of `spec.strategy.analysis`. Pure.

use modelship_crds::AnalysisSpec;

use super::Measurement;

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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn measured(requests: i64, error_rate: f64, p95: f64, drift: f64) -> Measurement {
        Measurement {
            requests,
            error_rate: Some(error_rate),
            latency_p95_seconds: Some(p95),
            drift_score: Some(drift),
            unreachable_pods: 0,
        }
    }

    #[test]
    fn thresholds_table() {
        // (spec, measurement) -> verdict, by the words it must contain ("" for a pass).
        let relaxed = AnalysisSpec { max_error_rate: Some(0.1), ..spec() };
        let no_limits = AnalysisSpec {
            max_error_rate: None,
            max_latency_p95_seconds: None,
            max_drift_score: None,
            ..spec()
        };
        let table: [(&AnalysisSpec, Measurement, &str); 7] = [
            (
                &spec(),
                measured(200, 0.06, 0.055, 0.25),
                "error rate 0.0600 above maxErrorRate 0.05",
            ),
            (&relaxed, measured(200, 0.06, 0.055, 0.25), ""),
            (
                &spec(),
                measured(200, 0.0, 0.6, 0.0),
                "p95 latency 0.6000s above maxLatencyP95Seconds 0.5",
            ),
            (&spec(), measured(200, 0.0, 0.1, 0.31), "drift score 0.3100 above maxDriftScore 0.3"),
            (
                &spec(),
                measured(200, 0.5, 0.6, 0.31),
                "error rate 0.5000 above maxErrorRate 0.05; p95",
            ),
            (&no_limits, measured(200, 1.0, 9.0, 9.0), ""),
            (&spec(), measured(20, 0.05, 0.5, 0.3), ""),
        ];
        for (spec, m, expected) in table {
            match judge(spec, &m) {
                Verdict::Pass => assert_eq!(expected, "", "{m:?} passed"),
                Verdict::Fail(why) => {
                    assert!(!expected.is_empty() && why.contains(expected), "{m:?}: {why}")
                }
                Verdict::Inconclusive(why) => panic!("{m:?} inconclusive: {why}"),
            }
        }
    }

    #[test]
    fn few_requests_are_inconclusive_whatever_they_show() {
        let mut m = measured(5, 1.0, 9.0, 9.0);
        assert!(
            matches!(judge(&spec(), &m), Verdict::Inconclusive(why) if !why.contains("unreachable"))
        );
        m.unreachable_pods = 2;
        assert!(
            matches!(judge(&spec(), &m), Verdict::Inconclusive(why) if why.contains("(2 pods unreachable)"))
        );
    }
}
