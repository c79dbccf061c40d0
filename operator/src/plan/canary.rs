//! Canary: a share of the replicas, and so of the traffic, runs the candidate.
//!
//! The Service selects both tracks. The weight comes from `spec.strategy.canary.weight`
//! (manual) or from the steps (automatic). Weight 100 promotes: the stable track takes the
//! candidate version in place (maxUnavailable 0), and the canary is removed once stable is
//! settled, so ready pods never drop below the total. Going back to stable grows stable first.

use k8s_openapi::jiff::SignedDuration;
use modelship_crds::CanaryStep;

use super::gate::{analysis_allows_promotion, apply_measurement};
use super::rules::{deadline_abort, retire_foreign};
use super::split::{WEIGHT_TOLERANCE, approaches, capacity_safe, share, split};
use super::state::format_time;
use super::{Abort, Draft, Stage, Track};
use crate::vocabulary::Reason;

/// Where the candidate should stand.
#[derive(Debug, PartialEq)]
enum Target {
    /// Run the split at this weight; `pause` says the rollout then waits.
    Weight { weight: i32, pause: Option<(Reason, String)> },
    /// Promote the candidate.
    Promote,
}

pub fn plan(d: &mut Draft<'_>) {
    let version = d.version().to_string();
    let stable = d.state.stable_version.clone().unwrap_or_else(|| version.clone());
    if version == stable {
        d.abandon_candidate();
        return drain(d, &stable, None);
    }
    if d.state.aborted_version.is_some() {
        let (reason, message) = d.aborted_message(&version, &stable);
        return drain(d, &stable, Some((reason, message)));
    }
    if d.state.candidate_version.as_deref() != Some(version.as_str()) {
        d.start_candidate(&version);
    }
    if let Some(why) = deadline_abort(d) {
        d.abort_candidate(Abort::Deadline, why.clone());
        let message = format!("version {version} aborted; version {stable} serves: {why}");
        return drain(d, &stable, Some((Abort::Deadline.reason(), message)));
    }

    let stable_seen = d.observed(Track::Stable);
    let canary_seen = d.observed(Track::Canary);
    // The stable track already carries the candidate: promotion started and is finished
    // whatever the weight says now.
    let promoting = stable_seen.version == version;
    let exposed = (canary_seen.ready > 0 && canary_seen.version == version) || promoting;
    if exposed && let Some(why) = apply_measurement(d, &version) {
        d.abort_candidate(Abort::Analysis, why.clone());
        let message = format!("version {version} rolled back: {why}");
        return drain(d, &stable, Some((Abort::Analysis.reason(), message)));
    }
    if promoting {
        return promote(d, &version);
    }

    match target(d, &version) {
        Target::Promote => begin_promotion(d, &stable, &version),
        Target::Weight { weight, pause } => run_split(d, &stable, &version, weight, pause),
    }
}

/// The weight the rollout aims at, walking the steps when there are steps.
fn target(d: &mut Draft<'_>, candidate: &str) -> Target {
    let canary = d.input.spec.strategy.canary.clone().unwrap_or_default();
    if let Some(weight) = canary.weight {
        if weight >= 100 {
            return Target::Promote;
        }
        let achieved = split_achieved(d, candidate, weight);
        let pause = achieved.then(|| {
            let message = if weight == 0 {
                format!("candidate {candidate} holds no traffic: raise spec.strategy.canary.weight to continue")
            } else {
                format!(
                    "candidate {candidate} serves {weight}%: raise spec.strategy.canary.weight \
                     (100 promotes) or set spec.model.version back to roll back"
                )
            };
            (Reason::CanaryWeightReached, message)
        });
        return Target::Weight { weight, pause };
    }
    let steps = canary.steps.unwrap_or_default();
    walk_steps(d, candidate, &steps)
}

fn walk_steps(d: &mut Draft<'_>, candidate: &str, steps: &[CanaryStep]) -> Target {
    let now = d.input.now;
    let mut index = d.state.current_step.unwrap_or(0).max(0) as usize;
    if d.state.current_step.is_none() {
        d.state.current_step = Some(0);
        d.state.step_started_at = Some(now);
    }
    loop {
        let Some(step) = steps.get(index) else {
            return Target::Promote;
        };
        let done = if let Some(weight) = step.set_weight {
            if !split_achieved(d, candidate, weight) {
                return Target::Weight { weight, pause: None };
            }
            true
        } else if let Some(wanted) = &step.analysis {
            let weight = weight_before(steps, index);
            let passed = passed_in_a_row(d, candidate);
            if passed < wanted.successful_windows {
                let message = format!(
                    "step {index}: at {weight}% until {} analysis windows pass in a row ({passed} so far)",
                    wanted.successful_windows
                );
                return Target::Weight {
                    weight,
                    pause: Some((Reason::WaitingForAnalysis, message)),
                };
            }
            true
        } else {
            let pause = step.pause.clone().unwrap_or_default();
            let weight = weight_before(steps, index);
            match pause.seconds {
                Some(seconds) => {
                    let started = d.state.step_started_at.unwrap_or(now);
                    let until = started + SignedDuration::from_secs(i64::from(seconds));
                    if now < until {
                        d.wake_at(until);
                        let message = format!(
                            "step {index}: pausing {seconds}s at {weight}% until {}",
                            format_time(until)
                        );
                        return Target::Weight {
                            weight,
                            pause: Some((Reason::CanaryPause, message)),
                        };
                    }
                    true
                }
                None => {
                    let approved = d.input.spec.strategy.approved_version.as_deref();
                    if approved != Some(candidate) {
                        let message = format!(
                            "step {index}: paused at {weight}% until spec.strategy.approvedVersion \
                             is set to {candidate}"
                        );
                        return Target::Weight {
                            weight,
                            pause: Some((Reason::AwaitingApproval, message)),
                        };
                    }
                    true
                }
            }
        };
        if done {
            index += 1;
            d.state.current_step = Some(index as i32);
            d.state.step_started_at = Some(now);
            d.state.last_progress_at = Some(now);
            // An analysis step counts the windows passed since it began.
            if let Some(analysis) = d.state.analysis.as_mut() {
                analysis.passed_in_a_row = 0;
            }
            d.event(
                Reason::StepCompleted,
                format!("canary step {} of {} done", index, steps.len()),
            );
        }
    }
}

/// Windows the candidate passed in a row, as the analysis gate counted them.
fn passed_in_a_row(d: &Draft<'_>, candidate: &str) -> i32 {
    d.state.analysis.as_ref().filter(|a| a.version == candidate).map_or(0, |a| a.passed_in_a_row)
}

/// The weight in force at step `index`: the last `setWeight` before it.
fn weight_before(steps: &[CanaryStep], index: usize) -> i32 {
    steps[..index.min(steps.len())].iter().rev().find_map(|s| s.set_weight).unwrap_or(0)
}

/// Canary pods allowed beyond the total.
fn max_surge(d: &Draft<'_>) -> i32 {
    d.input.spec.strategy.canary.as_ref().map_or(0, |c| c.max_surge())
}

/// The split for `weight` is in place and every pod of it is ready.
fn split_achieved(d: &Draft<'_>, candidate: &str, weight: i32) -> bool {
    let (stable_want, canary_want) = split(d.total(), weight, max_surge(d));
    let stable = d.observed(Track::Stable);
    let canary = d.observed(Track::Canary);
    let canary_ok = if canary_want == 0 {
        canary.replicas == 0
    } else {
        canary.settled_at(candidate, canary_want)
    };
    canary_ok && stable.replicas == stable_want && stable.ready >= stable_want
}

fn run_split(
    d: &mut Draft<'_>,
    stable: &str,
    candidate: &str,
    weight: i32,
    pause: Option<(Reason, String)>,
) {
    let total = d.total();
    let stable_seen = d.observed(Track::Stable);
    let canary_seen = d.observed(Track::Canary);
    let target = split(total, weight, max_surge(d));
    let (stable_replicas, canary_replicas) = capacity_safe(
        total,
        target,
        (stable_seen.replicas, canary_seen.replicas),
        (stable_seen.ready, canary_seen.ready),
    );
    d.hold(Track::Stable, stable, stable_replicas);
    d.want(Track::Canary, candidate, canary_replicas);
    if d.state.canary_weight != weight {
        d.event(Reason::WeightChanged, format!("canary {candidate} at {weight}%"));
        if !approaches(target, weight) {
            d.warning(
                Reason::WeightNotReachable,
                format!(
                    "weight {weight}% cannot be approached within {WEIGHT_TOLERANCE} points with \
                     {total} replicas: {} stable and {} canary pods give the candidate {}%; \
                     raise spec.replicas or spec.strategy.canary.maxSurge",
                    target.0,
                    target.1,
                    share(target.0, target.1)
                ),
            );
        }
    }
    d.state.canary_weight = weight;
    match pause {
        Some((reason, message)) => d.paused(reason, message),
        None => d.progressing(
            Reason::ScalingTracks,
            format!(
                "moving to {weight}%: canary {}/{} ready, stable {}/{} ready",
                canary_seen.ready, canary_replicas, stable_seen.ready, stable_replicas
            ),
        ),
    }
    retire_foreign(d, stable_seen.ready + canary_seen.ready);
}

/// Weight 100: once the candidate has proven itself, the stable track takes its version.
fn begin_promotion(d: &mut Draft<'_>, stable: &str, candidate: &str) {
    let total = d.total();
    let stable_seen = d.observed(Track::Stable);
    let canary_seen = d.observed(Track::Canary);
    // At least one candidate pod must have run and become ready before promotion.
    let proving = canary_seen.replicas.max(1).min(total.max(1));
    let proven = canary_seen.settled_at(candidate, proving);
    let analysis = analysis_allows_promotion(d, candidate);
    d.state.canary_weight = 100;
    match (proven, analysis) {
        (true, Ok(())) => {
            d.event(
                Reason::PromotionStarted,
                format!("stable track rolling to version {candidate}"),
            );
            return promote(d, candidate);
        }
        (false, _) => d.progressing(
            Reason::WaitingForCandidate,
            format!(
                "promotion waits for candidate {candidate}: {}/{proving} ready",
                canary_seen.ready
            ),
        ),
        (true, Err(why)) => {
            d.paused(Reason::WaitingForAnalysis, format!("promotion of {candidate} {why}"))
        }
    }
    // Until promotion starts, hold the split the candidate already runs at; with surge
    // allowed, stable keeps its pods while the candidate proves itself.
    let stable_target = if max_surge(d) > 0 {
        (total - proving).max(stable_seen.replicas.min(total))
    } else {
        total - proving
    };
    let (stable_replicas, canary_replicas) = capacity_safe(
        total,
        (stable_target, proving),
        (stable_seen.replicas, canary_seen.replicas),
        (stable_seen.ready, canary_seen.ready),
    );
    d.hold(Track::Stable, stable, stable_replicas);
    d.want(Track::Canary, candidate, canary_replicas);
    retire_foreign(d, stable_seen.ready + canary_seen.ready);
}

/// The stable track rolls to the candidate in place; the canary keeps serving until it is done.
fn promote(d: &mut Draft<'_>, candidate: &str) {
    let total = d.total();
    let stable_seen = d.observed(Track::Stable);
    let canary_seen = d.observed(Track::Canary);
    d.state.canary_weight = 100;
    d.want(Track::Stable, candidate, total);
    if stable_seen.settled_at(candidate, total) {
        d.promote_candidate();
        d.state.canary_weight = 0;
        d.stage = Stage::Complete;
        retire_foreign(d, stable_seen.ready);
        return;
    }
    if canary_seen.replicas > 0 {
        d.hold(Track::Canary, &canary_seen.version, canary_seen.replicas);
    }
    d.progressing(
        Reason::Promoting,
        format!("stable track rolling to version {candidate}: {}/{total} ready", stable_seen.ready),
    );
    retire_foreign(d, stable_seen.ready + canary_seen.ready);
}

/// No candidate (or a rolled-back one, with why): everything back on stable, capacity first.
fn drain(d: &mut Draft<'_>, stable: &str, rolled_back: Option<(Reason, String)>) {
    let total = d.total();
    let stable_seen = d.observed(Track::Stable);
    let canary_seen = d.observed(Track::Canary);
    let (stable_replicas, canary_replicas) = capacity_safe(
        total,
        (total, 0),
        (stable_seen.replicas, canary_seen.replicas),
        (stable_seen.ready, canary_seen.ready),
    );
    // After an automatic rollback the spec still describes the candidate: keep stable's template.
    if rolled_back.is_some() {
        d.hold(Track::Stable, stable, stable_replicas);
    } else {
        d.want(Track::Stable, stable, stable_replicas);
    }
    if canary_replicas > 0 {
        d.hold(Track::Canary, &canary_seen.version, canary_replicas);
    }
    d.state.canary_weight = 0;
    let settled = stable_seen.settled_at(stable, total) && canary_replicas == 0;
    d.stage = match rolled_back {
        Some((reason, message)) => Stage::RolledBack { reason, message },
        None if settled => Stage::Complete,
        None => Stage::Progressing {
            reason: Reason::ScalingTracks,
            message: format!("stable {stable}: {}/{total} ready", stable_seen.ready),
        },
    };
    retire_foreign(d, stable_seen.ready + canary_seen.ready);
}

#[cfg(test)]
mod tests;
