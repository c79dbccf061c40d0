//! The analysis gate shared by canary and blue-green: when to measure, how measurements
//! count, and whether they allow promotion.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use modelship_crds::{
    AnalysisStatus, ModelDeploymentSpec, ModelDeploymentStatus, StableWindow, StrategyType,
};

use super::state::{format_time, parse_time};
use super::{Draft, Observed, Track};
use crate::analysis::{Comparison, Verdict, judge};
use crate::vocabulary::Reason;

/// Whether the controller should measure the candidate now, and which track it runs on.
pub fn analysis_due(
    spec: &ModelDeploymentSpec,
    status: &ModelDeploymentStatus,
    observed: &Observed,
    now: Timestamp,
) -> Option<Track> {
    let (track, current) = analysed_track(spec, status, observed)?;
    let last = current?.last_measured_at.as_deref().and_then(parse_time)?;
    let analysis = spec.strategy.analysis.as_ref()?;
    (now >= last + interval(analysis.interval_seconds)).then_some(track)
}

/// Whether the candidate's exposure begins now, so that the controller records where the
/// pods' counters stand and the first window starts here. Returns the candidate's track.
pub fn analysis_starts(
    spec: &ModelDeploymentSpec,
    status: &ModelDeploymentStatus,
    observed: &Observed,
) -> Option<Track> {
    match analysed_track(spec, status, observed)? {
        (track, None) => Some(track),
        (_, Some(_)) => None,
    }
}

/// Whether analysis compares the candidate with the stable track on the same window.
pub fn compares_with_stable(spec: &ModelDeploymentSpec) -> bool {
    spec.strategy.type_ == StrategyType::Canary
        && spec.strategy.analysis.as_ref().is_some_and(|a| a.relative.is_some())
}

/// The track the candidate serves on, once it takes traffic, and its analysis so far.
fn analysed_track<'a>(
    spec: &ModelDeploymentSpec,
    status: &'a ModelDeploymentStatus,
    observed: &Observed,
) -> Option<(Track, Option<&'a AnalysisStatus>)> {
    spec.strategy.analysis.as_ref()?;
    let candidate = status.candidate_version.as_deref()?;
    let track = match spec.strategy.type_ {
        StrategyType::Canary => {
            let canary = observed.track(Track::Canary);
            (canary.version == candidate && canary.ready > 0).then_some(Track::Canary)?
        }
        StrategyType::BlueGreen => {
            let selected = observed.service_track.flatten()?;
            if observed.track(selected).version == candidate {
                selected
            } else {
                // Before the switch, only with pre-promotion analysis: the new color behind
                // the preview Service.
                let pre_switch = spec.strategy.blue_green.as_ref()?.pre_promotion_analysis.as_ref();
                let color = selected.other_color();
                let seen = observed.track(color);
                (pre_switch.is_some() && seen.version == candidate && seen.ready > 0)
                    .then_some(color)?
            }
        }
        StrategyType::RollingUpdate => return None,
    };
    Some((track, status.analysis.as_ref().filter(|a| a.version == candidate)))
}

/// Count the measurement the controller took, if any, and schedule the next one. Returns
/// `Some(reason)` when the candidate has failed more measurements than allowed.
pub(crate) fn apply_measurement(draft: &mut Draft<'_>, candidate: &str) -> Option<String> {
    let spec = draft.input.spec.strategy.analysis.as_ref()?;
    let now = draft.input.now;
    let mut analysis = match draft.state.analysis.take() {
        Some(a) if a.version == candidate => a,
        // Exposure just began: the first measurement is one interval away.
        _ => AnalysisStatus {
            version: candidate.to_string(),
            last_measured_at: Some(format_time(now)),
            ..AnalysisStatus::default()
        },
    };
    let mut failed = None;
    if let Some(measurement) = &draft.input.measurement {
        analysis.measurements += 1;
        analysis.last_measured_at = Some(format_time(now));
        analysis.requests = measurement.requests;
        analysis.error_rate = measurement.error_rate;
        analysis.latency_p95_seconds = measurement.latency_p95_seconds;
        analysis.latency_p99_seconds = measurement.latency_p99_seconds;
        analysis.drift_score = measurement.drift_score;
        analysis.accuracy = measurement.accuracy;
        analysis.stable = stable_window(&measurement.stable);
        match judge(spec, measurement) {
            Verdict::Pass => {
                analysis.passed_in_a_row += 1;
                analysis.message = Some("all thresholds met".to_string());
            }
            Verdict::Inconclusive(why) => {
                analysis.inconclusive += 1;
                analysis.message = Some(why);
            }
            Verdict::Fail(why) => {
                analysis.failures += 1;
                analysis.passed_in_a_row = 0;
                analysis.message = Some(why.clone());
                draft.warning(
                    Reason::AnalysisMeasurementFailed,
                    format!("version {candidate}: {why}"),
                );
                if analysis.failures > spec.failure_limit {
                    failed = Some(format!(
                        "{why} ({} failed measurements, failureLimit {})",
                        analysis.failures, spec.failure_limit
                    ));
                }
            }
        }
    }
    let last = analysis.last_measured_at.as_deref().and_then(parse_time).unwrap_or(now);
    draft.wake_at(last + interval(spec.interval_seconds));
    draft.state.analysis = Some(analysis);
    failed
}

/// With analysis configured, promotion waits for at least one passing measurement.
pub(crate) fn analysis_allows_promotion(draft: &Draft<'_>, candidate: &str) -> Result<(), String> {
    if draft.input.spec.strategy.analysis.is_none() {
        return Ok(());
    }
    match &draft.state.analysis {
        Some(a) if a.version == candidate && a.measurements - a.failures - a.inconclusive > 0 => {
            Ok(())
        }
        Some(a) if a.version == candidate => Err(format!(
            "waiting for a passing analysis measurement ({})",
            a.message.clone().unwrap_or_else(|| "none taken yet".to_string())
        )),
        _ => Err("waiting for the first analysis measurement".to_string()),
    }
}

/// Stable's window as the status shows it.
fn stable_window(comparison: &Comparison) -> Option<StableWindow> {
    let Comparison::Stable(stable) = comparison else { return None };
    Some(StableWindow {
        requests: stable.requests,
        error_rate: stable.error_rate,
        latency_p95_seconds: stable.latency_p95_seconds,
        latency_p99_seconds: stable.latency_p99_seconds,
        accuracy: stable.accuracy,
    })
}

fn interval(seconds: i32) -> SignedDuration {
    SignedDuration::from_secs(i64::from(seconds))
}

#[cfg(test)]
mod tests;
