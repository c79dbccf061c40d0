//! A measurement against the thresholds of `spec.strategy.analysis`. Pure.

use modelship_crds::{AnalysisSpec, RelativeThresholds};

use super::{Comparison, Measurement};

/// Outcome of one measurement.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Pass,
    Inconclusive(String),
    Fail(String),
}

/// Judge a measurement against the thresholds of `spec`. A failed absolute threshold fails
/// the window even when the comparison with stable could not be made.
pub fn judge(spec: &AnalysisSpec, m: &Measurement) -> Verdict {
    if let Some(why) = &m.unavailable {
        return Verdict::Inconclusive(format!("no measurement: {why}"));
    }
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
    let mut failures = absolute_failures(spec, m);
    if !failures.is_empty() {
        return Verdict::Fail(failures.join("; "));
    }
    if let Some(relative) = &spec.relative {
        match stable_to_compare(spec, &m.stable) {
            Ok(stable) => failures = relative_failures(relative, m, stable),
            Err(why) => return Verdict::Inconclusive(why),
        }
    }
    if failures.is_empty() { Verdict::Pass } else { Verdict::Fail(failures.join("; ")) }
}

fn absolute_failures(spec: &AnalysisSpec, m: &Measurement) -> Vec<String> {
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
    if let (Some(limit), Some(p99)) = (spec.max_latency_p99_seconds, m.latency_p99_seconds)
        && p99 > limit
    {
        failures.push(format!("p99 latency {p99:.4}s above maxLatencyP99Seconds {limit}"));
    }
    if let (Some(limit), Some(drift)) = (spec.max_drift_score, m.drift_score)
        && drift > limit
    {
        failures.push(format!("drift score {drift:.4} above maxDriftScore {limit}"));
    }
    if let (Some(limit), Some(accuracy)) = (spec.min_accuracy, m.accuracy)
        && accuracy < limit
    {
        failures.push(format!("accuracy {accuracy:.4} below minAccuracy {limit}"));
    }
    failures
}

/// Stable's window, when it can stand beside the candidate's.
fn stable_to_compare<'a>(
    spec: &AnalysisSpec,
    comparison: &'a Comparison,
) -> Result<&'a Measurement, String> {
    match comparison {
        Comparison::Stable(stable) if stable.requests >= i64::from(spec.min_requests) => {
            Ok(stable)
        }
        Comparison::Stable(stable) => Err(format!(
            "stable answered {} requests, fewer than minRequests {}: relative thresholds inconclusive",
            stable.requests, spec.min_requests
        )),
        Comparison::BaselineTaken => Err(
            "stable's counters recorded in this window; relative thresholds are judged from the next"
                .to_string(),
        ),
        Comparison::NotMeasured => {
            Err("no stable pods to compare with: relative thresholds inconclusive".to_string())
        }
    }
}

fn relative_failures(
    limits: &RelativeThresholds,
    candidate: &Measurement,
    stable: &Measurement,
) -> Vec<String> {
    let mut failures = Vec::new();
    if let (Some(limit), Some(rate), Some(base)) =
        (limits.max_error_rate_increase, candidate.error_rate, stable.error_rate)
        && rate - base > limit
    {
        failures.push(format!(
            "error rate {rate:.4} exceeds stable's {base:.4} by more than maxErrorRateIncrease {limit}"
        ));
    }
    let latencies = [
        (
            "p95",
            "maxLatencyP95Ratio",
            limits.max_latency_p95_ratio,
            candidate.latency_p95_seconds,
            stable.latency_p95_seconds,
        ),
        (
            "p99",
            "maxLatencyP99Ratio",
            limits.max_latency_p99_ratio,
            candidate.latency_p99_seconds,
            stable.latency_p99_seconds,
        ),
    ];
    for (quantile, field, limit, latency, base) in latencies {
        if let (Some(limit), Some(latency), Some(base)) = (limit, latency, base)
            && base > 0.0
            && latency / base > limit
        {
            failures.push(format!(
                "{quantile} latency {latency:.4}s is {:.2}x stable's {base:.4}s, above {field} {limit}",
                latency / base
            ));
        }
    }
    if let (Some(limit), Some(accuracy), Some(base)) =
        (limits.max_accuracy_drop, candidate.accuracy, stable.accuracy)
        && base - accuracy > limit
    {
        failures.push(format!(
            "accuracy {accuracy:.4} is more than maxAccuracyDrop {limit} below stable's {base:.4}"
        ));
    }
    failures
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
            max_latency_p99_seconds: Some(1.0),
            max_drift_score: Some(0.3),
            min_accuracy: Some(0.8),
            relative: None,
            prometheus: None,
        }
    }

    fn measured(requests: i64, error_rate: f64, p95: f64, drift: f64) -> Measurement {
        Measurement {
            requests,
            error_rate: Some(error_rate),
            latency_p95_seconds: Some(p95),
            latency_p99_seconds: Some(p95),
            drift_score: Some(drift),
            ..Measurement::default()
        }
    }

    /// Verdict by the words it must contain: "" for a pass, "?" + words for inconclusive.
    fn check(spec: &AnalysisSpec, m: &Measurement, expected: &str) {
        match (judge(spec, m), expected.strip_prefix('?')) {
            (Verdict::Pass, _) => assert_eq!(expected, "", "{m:?} passed"),
            (Verdict::Inconclusive(why), Some(words)) => {
                assert!(why.contains(words), "{m:?}: {why}")
            }
            (Verdict::Fail(why), None) => {
                assert!(!expected.is_empty() && why.contains(expected), "{m:?}: {why}")
            }
            (verdict, _) => panic!("{m:?}: {verdict:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn thresholds_table() {
        let relaxed = AnalysisSpec { max_error_rate: Some(0.1), ..spec() };
        let no_limits = AnalysisSpec {
            max_error_rate: None,
            max_latency_p95_seconds: None,
            max_latency_p99_seconds: None,
            max_drift_score: None,
            min_accuracy: None,
            ..spec()
        };
        let slow_tail =
            Measurement { latency_p99_seconds: Some(1.5), ..measured(200, 0.0, 0.1, 0.0) };
        let inaccurate = Measurement { accuracy: Some(0.75), ..measured(200, 0.0, 0.1, 0.0) };
        let accurate = Measurement { accuracy: Some(0.8), ..measured(200, 0.0, 0.1, 0.0) };
        let table: [(&AnalysisSpec, Measurement, &str); 10] = [
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
            (&spec(), slow_tail, "p99 latency 1.5000s above maxLatencyP99Seconds 1"),
            (&spec(), measured(200, 0.0, 0.1, 0.31), "drift score 0.3100 above maxDriftScore 0.3"),
            (&spec(), inaccurate, "accuracy 0.7500 below minAccuracy 0.8"),
            (&spec(), accurate, ""),
            (
                &spec(),
                measured(200, 0.5, 0.6, 0.31),
                "error rate 0.5000 above maxErrorRate 0.05; p95",
            ),
            (&no_limits, measured(200, 1.0, 9.0, 9.0), ""),
            // Exactly at every limit passes; no feedback means no accuracy judgement.
            (&spec(), measured(20, 0.05, 0.5, 0.3), ""),
        ];
        for (spec, m, expected) in table {
            check(spec, &m, expected);
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
        let down = Measurement {
            unavailable: Some("Prometheus at http://p:9090: connection refused".into()),
            ..measured(500, 1.0, 9.0, 9.0)
        };
        assert!(
            matches!(judge(&spec(), &down), Verdict::Inconclusive(why) if why == "no measurement: Prometheus at http://p:9090: connection refused")
        );
    }

    fn compared(candidate: Measurement, stable: Measurement) -> Measurement {
        Measurement { stable: Comparison::Stable(Box::new(stable)), ..candidate }
    }

    #[test]
    fn relative_thresholds_table() {
        let relative = AnalysisSpec {
            relative: Some(RelativeThresholds {
                max_error_rate_increase: Some(0.01),
                max_latency_p95_ratio: Some(1.2),
                max_latency_p99_ratio: Some(1.5),
                max_accuracy_drop: Some(0.05),
            }),
            ..spec()
        };
        let stable = Measurement { accuracy: Some(0.9), ..measured(400, 0.01, 0.1, 0.0) };
        let with_accuracy = |a: f64, m: Measurement| Measurement { accuracy: Some(a), ..m };
        let p99 = |s: f64, m: Measurement| Measurement { latency_p99_seconds: Some(s), ..m };
        let table: [(Measurement, &str); 11] = [
            // Within every threshold, absolute and relative.
            (compared(measured(200, 0.015, 0.11, 0.0), stable.clone()), ""),
            // A regression the absolute threshold allows (0.3 s < 0.5 s) but stable does not.
            (
                compared(measured(200, 0.0, 0.3, 0.0), stable.clone()),
                "p95 latency 0.3000s is 3.00x stable's 0.1000s, above maxLatencyP95Ratio 1.2",
            ),
            (
                compared(p99(0.2, measured(200, 0.0, 0.1, 0.0)), stable.clone()),
                "p99 latency 0.2000s is 2.00x stable's 0.1000s, above maxLatencyP99Ratio 1.5",
            ),
            (
                compared(measured(200, 0.03, 0.1, 0.0), stable.clone()),
                "error rate 0.0300 exceeds stable's 0.0100 by more than maxErrorRateIncrease 0.01",
            ),
            (
                compared(with_accuracy(0.84, measured(200, 0.0, 0.1, 0.0)), stable.clone()),
                "accuracy 0.8400 is more than maxAccuracyDrop 0.05 below stable's 0.9000",
            ),
            (compared(with_accuracy(0.86, measured(200, 0.0, 0.1, 0.0)), stable.clone()), ""),
            // Only the candidate has feedback: accuracy is not compared.
            (
                compared(
                    with_accuracy(0.84, measured(200, 0.0, 0.1, 0.0)),
                    measured(400, 0.0, 0.1, 0.0),
                ),
                "",
            ),
            // An absolute failure fails even when stable cannot be compared.
            (measured(200, 0.2, 0.1, 0.0), "error rate 0.2000 above maxErrorRate 0.05"),
            (measured(200, 0.0, 0.1, 0.0), "?no stable pods to compare with"),
            (
                Measurement { stable: Comparison::BaselineTaken, ..measured(200, 0.0, 0.1, 0.0) },
                "?judged from the next",
            ),
            (
                compared(measured(200, 0.0, 0.1, 0.0), measured(19, 0.0, 0.1, 0.0)),
                "?stable answered 19 requests, fewer than minRequests 20",
            ),
        ];
        for (m, expected) in table {
            check(&relative, &m, expected);
        }
    }

    #[test]
    fn a_stable_latency_of_zero_is_no_ratio() {
        let relative = AnalysisSpec {
            relative: Some(RelativeThresholds {
                max_latency_p95_ratio: Some(1.2),
                ..Default::default()
            }),
            ..spec()
        };
        let stable = Measurement { latency_p95_seconds: Some(0.0), ..measured(400, 0.0, 0.0, 0.0) };
        check(&relative, &compared(measured(200, 0.0, 0.1, 0.0), stable), "");
    }
}
