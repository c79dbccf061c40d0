//! When the controller records counters, closes a window, or does nothing, by table.

use modelship_crds::{AnalysisStatus, RelativeThresholds};

use super::*;
use k8s_openapi::jiff::SignedDuration;

use crate::analysis::Measurement;
use crate::plan::tests::fixtures::*;

/// A canary at 50 % rolling version 2 out over version 1, analysed every 10 s.
fn canary_case(canary_ready: i32, analysed: Option<&str>, measured_secs_ago: i64) -> Case {
    let mut strategy = canary(Some(50), None);
    strategy.analysis = Some(analysis(10, 1));
    let mut case = Case::new(spec("2", 4, strategy))
        .rolling_out_from("1")
        .with(Track::Stable, settled("1", 2, 2))
        .with(Track::Canary, settled("2", 2, canary_ready));
    case.status.analysis = analysed.map(|version| AnalysisStatus {
        version: version.into(),
        last_measured_at: Some(format_time(start())),
        ..AnalysisStatus::default()
    });
    case.now = start() + SignedDuration::from_secs(measured_secs_ago);
    case
}

#[test]
fn when_windows_open_and_close() {
    // (canary pods ready, analysis status of, seconds since the last measurement)
    //   -> (records counters now, measures now)
    let table = [
        ((0, None, 0), (None, None)),
        ((2, None, 0), (Some(Track::Canary), None)),
        // The status names the previous candidate: exposure of this one begins.
        ((2, Some("3"), 30), (Some(Track::Canary), None)),
        ((2, Some("2"), 9), (None, None)),
        ((2, Some("2"), 10), (None, Some(Track::Canary))),
        ((0, Some("2"), 30), (None, None)),
    ];
    for ((ready, analysed, ago), expected) in table {
        let case = canary_case(ready, analysed, ago);
        let got = (
            analysis_starts(&case.spec, &case.status, &case.observed),
            analysis_due(&case.spec, &case.status, &case.observed, case.now),
        );
        assert_eq!(got, expected, "ready {ready}, analysed {analysed:?}, {ago}s ago");
    }
}

#[test]
fn only_a_canary_with_relative_thresholds_compares_with_stable() {
    let mut case = canary_case(2, None, 0);
    assert!(!compares_with_stable(&case.spec));
    let analysis = case.spec.strategy.analysis.as_mut().unwrap();
    analysis.relative = Some(RelativeThresholds::default());
    assert!(compares_with_stable(&case.spec));
    case.spec.strategy.type_ = StrategyType::BlueGreen;
    assert!(!compares_with_stable(&case.spec));
}

#[test]
fn the_status_shows_both_windows() {
    let stable = Measurement { requests: 400, error_rate: Some(0.01), ..Measurement::default() };
    let mut case = canary_case(2, Some("2"), 10);
    case.measurement = Some(Measurement {
        stable: Comparison::Stable(Box::new(stable)),
        accuracy: Some(0.9),
        latency_p99_seconds: Some(0.02),
        ..measurement(100, 0.0)
    });
    let (failed, plan) = decide(&case, |d| apply_measurement(d, "2"));
    assert_eq!(failed, None);
    let analysis = plan.state.analysis.expect("analysis status");
    assert_eq!(analysis.measurements, 1);
    assert_eq!((analysis.accuracy, analysis.latency_p99_seconds), (Some(0.9), Some(0.02)));
    let stable = analysis.stable.expect("stable's window");
    assert_eq!((stable.requests, stable.error_rate), (400, Some(0.01)));
}
