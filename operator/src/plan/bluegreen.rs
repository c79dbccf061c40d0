//! BlueGreen: the candidate runs in full on the idle color, the Service selector moves to it
//! in one step once every pod is ready (readiness means the model answered a warm-up
//! inference), the switch is confirmed through the Service's EndpointSlices, and the old
//! color keeps running for `scaleDownDelaySeconds` so a switch back is instant.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use modelship_crds::BlueGreenSpec;

use super::gate::{analysis_allows_promotion, apply_measurement};
use super::rules::{deadline_abort, retire_foreign};
use super::state::format_time;
use super::{Abort, Draft, Stage, Track};
use crate::vocabulary::Reason;

fn options(d: &Draft<'_>) -> BlueGreenSpec {
    d.input.spec.strategy.blue_green.clone().unwrap_or_default()
}

pub fn plan(d: &mut Draft<'_>) {
    let version = d.version().to_string();
    let stable = d.state.stable_version.clone().unwrap_or_else(|| version.clone());
    // The Service's selector is the truth about which color serves.
    let selected = d.input.observed.service_track.flatten().filter(|t| t.is_color());
    let active = selected.or(d.state.active_color).unwrap_or(Track::Blue);
    d.state.active_color = Some(active);

    if version == stable {
        if let Some(candidate) = d.state.candidate_version.clone() {
            let active = switch_back_if_serving(d, active, &candidate);
            d.abandon_candidate();
            d.state.scale_down_at = Some(delay_from_now(d));
            return steady(d, active, &stable, None);
        }
        return steady(d, active, &stable, None);
    }
    if d.state.aborted_version.is_some() {
        let rolled_back = d.aborted_message(&version, &stable);
        return steady(d, active, &stable, Some(rolled_back));
    }

    if d.state.candidate_version.as_deref() != Some(version.as_str()) {
        // A candidate that already took the traffic is kept: it becomes stable, and the new
        // version goes to the other color.
        if let Some(previous) = d.state.candidate_version.clone()
            && selected.is_some_and(|s| d.observed(s).version == previous)
        {
            d.promote_candidate();
            d.state.scale_down_at = None;
        }
        d.start_candidate(&version);
    }
    let stable = d.state.stable_version.clone().unwrap_or_default();
    let deadline = deadline_abort(d);
    match selected {
        Some(color) if d.observed(color).version == version => {
            switched(d, color, &stable, &version, deadline)
        }
        _ => match deadline {
            // The candidate never took traffic: it goes, the Service never moved.
            Some(why) => {
                d.abort_candidate(Abort::Deadline, why.clone());
                d.state.scale_down_at = None;
                let message = format!("version {version} aborted; version {stable} serves: {why}");
                steady(d, active, &stable, Some((Abort::Deadline.reason(), message)))
            }
            None => before_switch(d, active, &stable, &version),
        },
    }
}

/// The candidate runs on the idle color; switch when it is complete and allowed to.
fn before_switch(d: &mut Draft<'_>, active: Track, stable: &str, candidate: &str) {
    let total = d.total();
    let options = options(d);
    let idle = active.other_color();
    let approved = options.auto_promote
        || d.input.spec.strategy.approved_version.as_deref() == Some(candidate);
    let size = if approved { total } else { options.preview_replicas.unwrap_or(total).min(total) };
    d.hold(active, stable, total);
    d.want(idle, candidate, size);
    d.service_track = Some(active);
    d.preview_track = options.preview_service.then_some(idle);

    let seen = d.observed(idle);
    let complete = approved && seen.settled_at(candidate, total) && seen.ready > 0;
    if complete && let Some(wanted) = &options.pre_promotion_analysis {
        if let Some(why) = apply_measurement(d, candidate) {
            // It never served production traffic: remove it, the Service stays.
            d.abort_candidate(Abort::Analysis, why.clone());
            d.state.scale_down_at = None;
            d.stage = Stage::RolledBack {
                reason: Abort::Analysis.reason(),
                message: format!(
                    "version {candidate} failed its analysis before the switch; version {stable}                      serves: {why}"
                ),
            };
            return;
        }
        let passed = d
            .state
            .analysis
            .as_ref()
            .filter(|a| a.version == candidate)
            .map_or(0, |a| a.passed_in_a_row);
        if passed < wanted.successful_windows {
            d.paused(
                Reason::WaitingForAnalysis,
                format!(
                    "{} runs version {candidate} behind the preview Service; the switch waits                      until {} analysis windows pass in a row ({passed} so far)",
                    idle.as_str(),
                    wanted.successful_windows
                ),
            );
            retire_foreign(d, d.observed(active).ready);
            return;
        }
    }
    if complete {
        d.service_track = Some(idle);
        d.state.active_color = Some(idle);
        d.state.scale_down_at = None;
        d.event(
            Reason::SwitchedService,
            format!("service {} now selects {} (version {candidate})", d.input.name, idle.as_str()),
        );
        d.progressing(
            Reason::WaitingForEndpoints,
            format!(
                "waiting for the endpoints of service {} to hold only {} pods",
                d.input.name,
                idle.as_str()
            ),
        );
    } else if !approved && seen.settled_at(candidate, size) {
        d.paused(
            Reason::AwaitingApproval,
            format!(
                "{} runs version {candidate} ({}/{size} ready); set spec.strategy.approvedVersion \
                 to {candidate} to switch traffic",
                idle.as_str(),
                seen.ready
            ),
        );
    } else {
        d.progressing(
            Reason::WaitingForCandidate,
            format!("{} version {candidate}: {}/{size} ready", idle.as_str(), seen.ready.min(size)),
        );
    }
    retire_foreign(d, d.observed(active).ready);
}

/// The Service selects the candidate's color: confirm, analyse, then retire the old color.
/// `deadline` says why the rollout passed its progress deadline, if it did.
fn switched(
    d: &mut Draft<'_>,
    color: Track,
    stable: &str,
    candidate: &str,
    deadline: Option<String>,
) {
    let total = d.total();
    let options = options(d);
    let old = color.other_color();
    let old_seen = d.observed(old);
    d.want(color, candidate, total);
    d.service_track = Some(color);
    d.preview_track = options.preview_service.then_some(color);
    d.state.active_color = Some(color);

    let failed = apply_measurement(d, candidate)
        .map(|why| (Abort::Analysis, why))
        .or(deadline.map(|why| (Abort::Deadline, why)));
    if let Some((abort, why)) = failed
        && old_seen.ready > 0
    {
        d.abort_candidate(abort, why.clone());
        d.service_track = Some(old);
        d.preview_track = options.preview_service.then_some(old);
        d.state.active_color = Some(old);
        d.state.scale_down_at = Some(delay_from_now(d));
        d.hold(old, stable, total);
        d.want(color, candidate, total);
        d.stage = Stage::RolledBack {
            reason: abort.reason(),
            message: format!("version {candidate} rolled back to {stable}: {why}"),
        };
        let note = format!("service {} back on {} (version {stable})", d.input.name, old.as_str());
        d.event(Reason::SwitchedService, note);
        return;
    }

    if d.state.scale_down_at.is_none() {
        if !endpoints_only(d, color) {
            d.hold(old, stable, old_seen.replicas.max(total));
            d.progressing(
                Reason::WaitingForEndpoints,
                format!(
                    "waiting for the endpoints of service {} to hold only {} pods",
                    d.input.name,
                    color.as_str()
                ),
            );
            return;
        }
        let at = delay_from_now(d);
        d.state.scale_down_at = Some(at);
        d.event(
            Reason::TrafficSwitched,
            format!("endpoints of service {} hold only {} pods", d.input.name, color.as_str()),
        );
    }
    let scale_down_at = d.state.scale_down_at.unwrap_or(d.input.now);
    let analysis = analysis_allows_promotion(d, candidate);
    if d.input.now < scale_down_at || analysis.is_err() {
        d.keep_as_is(old);
        if d.input.now < scale_down_at {
            d.wake_at(scale_down_at);
        }
        let why = match analysis {
            Err(why) if d.input.now >= scale_down_at => why,
            _ => format!("until {}", format_time(scale_down_at)),
        };
        d.progressing(
            Reason::ScaleDownDelay,
            format!("version {candidate} serves; {} (version {stable}) kept {why}", old.as_str()),
        );
        return;
    }
    if old_seen.replicas > 0 || d.input.observed.tracks.contains_key(&old) {
        d.hold(old, &old_seen.version, 0);
    }
    d.state.scale_down_at = None;
    d.promote_candidate();
    d.stage = if d.observed(color).settled_at(candidate, total) {
        Stage::Complete
    } else {
        Stage::Progressing {
            reason: Reason::Scaling,
            message: format!("{} {}/{total} ready", color.as_str(), d.observed(color).ready),
        }
    };
}

/// No rollout: the active color runs the stable version; the other color is kept only until
/// its scale-down time.
fn steady(d: &mut Draft<'_>, active: Track, stable: &str, rolled_back: Option<(Reason, String)>) {
    let total = d.total();
    let options = options(d);
    let idle = active.other_color();
    // After an automatic rollback the spec still describes the candidate: keep stable's template.
    if rolled_back.is_some() {
        d.hold(active, stable, total);
    } else {
        d.want(active, stable, total);
    }
    d.service_track = Some(active);
    d.preview_track = options.preview_service.then_some(active);
    if let Some(seen) = d.input.observed.tracks.get(&idle).cloned() {
        match d.state.scale_down_at {
            Some(at) if d.input.now < at => {
                d.keep_as_is(idle);
                d.wake_at(at);
            }
            _ => {
                d.state.scale_down_at = None;
                d.hold(idle, &seen.version, 0);
            }
        }
    } else {
        d.state.scale_down_at = None;
    }
    let seen = d.observed(active);
    d.stage = match rolled_back {
        Some((reason, message)) => Stage::RolledBack { reason, message },
        None if seen.settled_at(stable, total) => Stage::Complete,
        None => Stage::Progressing {
            reason: Reason::Scaling,
            message: format!(
                "{} version {stable}: {}/{total} ready",
                active.as_str(),
                seen.ready.min(total)
            ),
        },
    };
    retire_foreign(d, seen.ready);
}

/// When the Service already selects the candidate, move it back to the other color, which
/// still runs the stable version. Returns the color that serves afterwards.
fn switch_back_if_serving(d: &mut Draft<'_>, active: Track, candidate: &str) -> Track {
    let serving_candidate = d.observed(active).version == candidate;
    let other = active.other_color();
    if serving_candidate && d.observed(other).ready > 0 {
        d.event(
            Reason::SwitchedService,
            format!("service {} back on {}", d.input.name, other.as_str()),
        );
        d.state.active_color = Some(other);
        return other;
    }
    active
}

/// Every ready endpoint of the Service is a pod of `color`'s Deployment, and there is one.
fn endpoints_only(d: &Draft<'_>, color: Track) -> bool {
    let prefix = format!("{}-{}-", d.input.name, color.as_str());
    let ready: Vec<_> = d.input.observed.endpoints.iter().filter(|e| e.ready).collect();
    !ready.is_empty() && ready.iter().all(|e| e.pod.starts_with(&prefix))
}

fn delay_from_now(d: &Draft<'_>) -> Timestamp {
    let seconds = options(d).scale_down_delay_seconds;
    d.input.now + SignedDuration::from_secs(i64::from(seconds))
}

#[cfg(test)]
mod tests;
