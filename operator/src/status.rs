//! Status is computed from the plan and what runs, compared with the stored one, and
//! written only when it changed. Conditions keep their `lastTransitionTime` while their
//! status stays the same.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use modelship_crds::{ModelDeploymentStatus, StrategyType, TrackStatus};

use crate::desired::selector_string;
use crate::error::Error;
use crate::plan::{self, Observed, Plan, Stage, Track, split, state::format_time};
use crate::vocabulary::{ConditionType, Reason, condition_status};

/// A problem outside the plan, such as a child the API server refused.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub reason: Reason,
    pub message: String,
}

impl Problem {
    /// The API server refused a child: said in status until something changes.
    pub fn refused(error: &Error) -> Self {
        Problem { reason: Reason::ApplyFailed, message: error.to_string() }
    }
}

pub struct StatusInput<'a> {
    pub name: &'a str,
    pub generation: Option<i64>,
    pub strategy: StrategyType,
    pub total: i32,
    pub previous: &'a ModelDeploymentStatus,
    pub plan: &'a Plan,
    pub observed: &'a Observed,
    pub problem: Option<Problem>,
    pub now: Timestamp,
}

pub fn compute(input: &StatusInput<'_>) -> ModelDeploymentStatus {
    let plan = input.plan;
    let state = &plan.state;
    // The pods the Service (and so the autoscaler) counts.
    let selected: Vec<Track> = match (input.strategy, plan.service_track) {
        (StrategyType::BlueGreen, Some(track)) => vec![track],
        _ => Track::ALL.to_vec(),
    };
    let counted = |f: fn(&plan::TrackState) -> i32| -> i32 {
        selected.iter().filter_map(|t| input.observed.tracks.get(t)).map(f).sum()
    };
    let tracks = input
        .observed
        .tracks
        .iter()
        .map(|(track, seen)| TrackStatus {
            name: track.as_str().to_string(),
            version: seen.version.clone(),
            replicas: seen.replicas,
            ready_replicas: seen.ready,
        })
        .collect();
    let ready = counted(|t| t.ready);
    let mut status = ModelDeploymentStatus {
        observed_generation: input.generation,
        phase: Some(plan::phase(plan)),
        stable_version: state.stable_version.clone(),
        stable_model: state.stable_model.clone(),
        candidate_version: state.candidate_version.clone(),
        candidate_started_at: state.candidate_started_at.map(format_time),
        candidate_ready_at: state.candidate_ready_at.map(format_time),
        aborted_version: state.aborted_version.clone(),
        aborted_approval: state.aborted_approval.clone(),
        active_color: state.active_color.map(|t| t.as_str().to_string()),
        canary_weight: state.canary_weight,
        effective_weight: effective_weight(input),
        current_step: state.current_step,
        step_started_at: state.step_started_at.map(format_time),
        last_progress_at: state.last_progress_at.map(format_time),
        scale_down_at: state.scale_down_at.map(format_time),
        replicas: counted(|t| t.replicas),
        ready_replicas: ready,
        selector: Some(selector_string(
            input.name,
            if input.strategy == StrategyType::BlueGreen { plan.service_track } else { None },
        )),
        tracks,
        conditions: Vec::new(),
        analysis: state.analysis.clone(),
        history: state.history.clone(),
        // Claimed by the report step when it sends one; carried over otherwise.
        last_notification: input.previous.last_notification.clone(),
    };
    if input.problem.is_some() {
        status.phase = Some(modelship_crds::Phase::Degraded);
    }
    status.conditions = conditions(input, ready);
    status
}

/// The share of ready pods behind the Service that serve the candidate, in percent.
fn effective_weight(input: &StatusInput<'_>) -> i32 {
    let Some(candidate) = input.plan.state.candidate_version.as_deref() else {
        return 0;
    };
    let seen = |track| input.observed.track(track);
    match input.strategy {
        StrategyType::Canary => {
            let (stable, canary) = (seen(Track::Stable), seen(Track::Canary));
            if stable.version == candidate {
                // Promotion: the stable track is taking the candidate's version.
                return 100;
            }
            let on_candidate = if canary.version == candidate { canary.ready } else { 0 };
            split::share(stable.ready, on_candidate)
        }
        StrategyType::BlueGreen => {
            let selected = input.observed.service_track.flatten();
            let serves = selected.is_some_and(|t| seen(t).version == candidate);
            if serves { 100 } else { 0 }
        }
        StrategyType::RollingUpdate => 0,
    }
}

fn conditions(input: &StatusInput<'_>, ready: i32) -> Vec<Condition> {
    let plan = input.plan;
    let replicas = format!("{ready}/{} replicas ready", input.total);
    let available = if ready >= input.total {
        (true, Reason::MinimumReplicasAvailable, replicas)
    } else {
        (false, Reason::MinimumReplicasUnavailable, replicas)
    };
    let progressing = match &plan.stage {
        Stage::Progressing { reason, message } if plan.state.deadline_exceeded => {
            (false, Reason::ProgressDeadlineExceeded, format!("{reason}: {message}"))
        }
        Stage::Progressing { reason, message } => (true, *reason, message.clone()),
        Stage::Paused { reason, message } => (false, *reason, message.clone()),
        Stage::Complete => (false, Reason::RolloutComplete, complete_message(plan)),
        Stage::RolledBack { reason, message } => (false, *reason, message.clone()),
    };
    let degraded = match (&input.problem, &plan.stage) {
        (Some(problem), _) => (true, problem.reason, problem.message.clone()),
        (None, Stage::RolledBack { reason, message }) => (true, *reason, message.clone()),
        (None, _) if plan.state.source_mismatch => (
            true,
            Reason::ModelSourceMismatch,
            "spec.model names the stable version with another model file; the recorded file \
             keeps serving. Set a new spec.model.version to roll the new file out"
                .to_string(),
        ),
        (None, Stage::Progressing { message, .. }) if plan.state.deadline_exceeded => (
            true,
            Reason::ProgressDeadlineExceeded,
            format!("no progress within progressDeadlineSeconds: {message}"),
        ),
        _ => (false, Reason::AsExpected, String::new()),
    };
    let paused = match &plan.stage {
        Stage::Paused { reason, message } => (true, *reason, message.clone()),
        _ => (false, Reason::NotPaused, String::new()),
    };
    [
        (ConditionType::Available, available),
        (ConditionType::Progressing, progressing),
        (ConditionType::Degraded, degraded),
        (ConditionType::Paused, paused),
    ]
    .into_iter()
    .map(|(type_, (holds, reason, message))| {
        condition(
            &input.previous.conditions,
            type_,
            holds,
            reason,
            message,
            input.generation,
            input.now,
        )
    })
    .collect()
}

fn complete_message(plan: &Plan) -> String {
    match &plan.state.stable_version {
        Some(version) => format!("every pod runs version {version}"),
        None => String::new(),
    }
}

/// A condition whose `lastTransitionTime` moves only when its status changes.
fn condition(
    previous: &[Condition],
    type_: ConditionType,
    holds: bool,
    reason: Reason,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let (type_, status) = (type_.as_str(), condition_status(holds));
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Whether a freshly computed status differs from the stored one in anything but time.
pub fn changed(previous: &ModelDeploymentStatus, next: &ModelDeploymentStatus) -> bool {
    previous != next
}

/// Counts-only changes are written at most this often per ModelDeployment.
pub const COUNTS_INTERVAL: Duration = Duration::from_secs(1);

/// How long to hold a status write back, given the time since the last one: a change in
/// what only describes the pods (counts, the tracks list, condition messages, the reason of a
/// `Progressing` or `Available` condition whose status stays, the progress time) waits until
/// [`COUNTS_INTERVAL`] has passed, so a rollout's stream of pod updates costs a few writes,
/// not one per pod. Anything the planner or a user acts on is written at once: the phase,
/// versions, rollout state, and every condition's status.
pub fn hold_back(
    previous: &ModelDeploymentStatus,
    next: &ModelDeploymentStatus,
    since_last_write: Option<Duration>,
) -> Option<Duration> {
    let since = since_last_write?;
    (since < COUNTS_INTERVAL && counts_only(previous, next)).then(|| COUNTS_INTERVAL - since)
}

/// How long a new model's first status may still wait, `since` it was first computed: while it
/// only says that the first rollout is under way (phase `Progressing`), for up to `grace`. A
/// model whose pods come up within that time gets a single status write, `Healthy`, instead of
/// `Progressing` then `Healthy`; that halves the status writes of a cold start. `None`: write
/// it now.
pub fn first_status_wait(
    next: &ModelDeploymentStatus,
    since: Duration,
    grace: Duration,
) -> Option<Duration> {
    let under_way = next.phase == Some(modelship_crds::Phase::Progressing);
    (under_way && since < grace).then(|| grace - since)
}

fn counts_only(previous: &ModelDeploymentStatus, next: &ModelDeploymentStatus) -> bool {
    fn without_counts(status: &ModelDeploymentStatus) -> ModelDeploymentStatus {
        let mut status = status.clone();
        status.replicas = 0;
        status.ready_replicas = 0;
        status.effective_weight = 0;
        status.last_progress_at = None;
        status.tracks.clear();
        for condition in &mut status.conditions {
            condition.message.clear();
            // The planner reads the reasons of Degraded and Paused; these two only describe.
            let described = [ConditionType::Progressing, ConditionType::Available];
            if described.iter().any(|t| condition.type_ == t.as_str()) {
                condition.reason.clear();
            }
        }
        status
    }
    without_counts(previous) == without_counts(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> ModelDeploymentStatus {
        let mut status = ModelDeploymentStatus {
            observed_generation: Some(1),
            phase: Some(modelship_crds::Phase::Progressing),
            replicas: 3,
            ready_replicas: 1,
            tracks: vec![TrackStatus {
                name: "stable".into(),
                version: "1".into(),
                replicas: 3,
                ready_replicas: 1,
            }],
            ..ModelDeploymentStatus::default()
        };
        let at = |type_, holds, reason, message: &str| {
            condition(&[], type_, holds, reason, message.into(), Some(1), Timestamp::UNIX_EPOCH)
        };
        status.conditions = vec![
            at(
                ConditionType::Available,
                false,
                Reason::MinimumReplicasUnavailable,
                "1/3 replicas ready",
            ),
            at(
                ConditionType::Progressing,
                true,
                Reason::RollingUpdate,
                "version 1: 1/3 pods ready",
            ),
            at(ConditionType::Degraded, false, Reason::AsExpected, ""),
        ];
        status
    }

    #[test]
    fn descriptions_of_the_pods_wait_for_the_interval() {
        let previous = healthy();
        let mut next = previous.clone();
        next.ready_replicas = 2;
        next.tracks[0].ready_replicas = 2;
        next.conditions[0].message = "2/3 replicas ready".into();
        next.conditions[1].reason = Reason::WaitingForEndpoints.to_string();
        next.last_progress_at = Some("2026-01-01T00:00:00Z".into());
        next.tracks.push(TrackStatus { name: "canary".into(), ..TrackStatus::default() });
        let just_written = Some(Duration::from_millis(300));
        assert_eq!(hold_back(&previous, &next, just_written), Some(Duration::from_millis(700)));
        assert_eq!(hold_back(&previous, &next, Some(COUNTS_INTERVAL)), None);
        assert_eq!(hold_back(&previous, &next, None), None, "never written by this process");
    }

    #[test]
    fn a_first_status_under_way_waits_for_the_grace_and_no_longer() {
        let grace = Duration::from_secs(5);
        let under_way = healthy();
        assert_eq!(
            first_status_wait(&under_way, Duration::from_secs(2), grace),
            Some(Duration::from_secs(3))
        );
        assert_eq!(first_status_wait(&under_way, grace, grace), None, "the grace is over");
        assert_eq!(first_status_wait(&under_way, Duration::ZERO, Duration::ZERO), None, "off");
        for phase in [
            modelship_crds::Phase::Healthy,
            modelship_crds::Phase::Degraded,
            modelship_crds::Phase::Paused,
            modelship_crds::Phase::RolledBack,
        ] {
            let next = ModelDeploymentStatus { phase: Some(phase), ..under_way.clone() };
            assert_eq!(first_status_wait(&next, Duration::ZERO, grace), None, "{phase:?}");
        }
    }

    #[test]
    fn anything_acted_on_is_written_at_once() {
        let previous = healthy();
        let just_written = Some(Duration::from_millis(10));
        let changes: [fn(&mut ModelDeploymentStatus); 7] = [
            |s| s.conditions[1].status = condition_status(false).into(),
            |s| s.conditions[2].reason = Reason::ProgressDeadlineExceeded.to_string(),
            |s| s.observed_generation = Some(2),
            |s| s.phase = Some(modelship_crds::Phase::Healthy),
            |s| s.conditions[0].status = condition_status(true).into(),
            |s| s.stable_version = Some("2".into()),
            |s| s.canary_weight = 10,
        ];
        for change in changes {
            let mut next = previous.clone();
            change(&mut next);
            assert_eq!(hold_back(&previous, &next, just_written), None, "{next:?}");
        }
    }
}
