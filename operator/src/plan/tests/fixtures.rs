//! Test fixtures shared by the simulator and the decision tables: specs, strategies, and a
//! hand-made view of the children.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use modelship_crds::{
    AnalysisSpec, AnalysisStep, BlueGreenSpec, CanarySpec, CanaryStep, ModelDeploymentSpec,
    ModelDeploymentStatus, ModelSpec, PauseStep, StrategySpec, StrategyType, TrackStatus,
};

use crate::analysis::Measurement;
use crate::plan::state::format_time;
use crate::plan::{Draft, Endpoint, Input, Observed, Plan, Stage, Track, TrackState};
use crate::vocabulary::{ConditionType, Reason, condition_status};

pub const NAME: &str = "fraud";

pub fn start() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().expect("a timestamp")
}

pub fn spec(version: &str, replicas: i32, strategy: StrategySpec) -> ModelDeploymentSpec {
    ModelDeploymentSpec {
        model: ModelSpec {
            name: None,
            version: version.into(),
            uri: "file:///models/model.onnx".into(),
            format: Default::default(),
            reference_data: None,
            sha256: None,
        },
        replicas,
        serving: None,
        autoscaling: None,
        strategy,
        service: None,
        disruption_budget: None,
        notifications: None,
    }
}

pub fn canary(weight: Option<i32>, steps: Option<Vec<CanaryStep>>) -> StrategySpec {
    StrategySpec {
        type_: StrategyType::Canary,
        canary: Some(CanarySpec { weight, steps, max_surge: None }),
        ..StrategySpec::default()
    }
}

pub fn blue_green(auto_promote: bool, preview_replicas: Option<i32>) -> StrategySpec {
    StrategySpec {
        type_: StrategyType::BlueGreen,
        blue_green: Some(BlueGreenSpec {
            auto_promote,
            preview_replicas,
            scale_down_delay_seconds: 10,
            ..BlueGreenSpec::default()
        }),
        ..StrategySpec::default()
    }
}

pub fn set_weight(w: i32) -> CanaryStep {
    CanaryStep { set_weight: Some(w), pause: None, analysis: None }
}

pub fn pause(seconds: Option<i32>) -> CanaryStep {
    CanaryStep { set_weight: None, pause: Some(PauseStep { seconds }), analysis: None }
}

/// A step that waits for `windows` passing analysis windows in a row.
pub fn analysis_step(windows: i32) -> CanaryStep {
    CanaryStep {
        set_weight: None,
        pause: None,
        analysis: Some(AnalysisStep { successful_windows: windows }),
    }
}

/// Analysis every `interval_seconds`, failing above an error rate of 5 %.
pub fn analysis(interval_seconds: i32, failure_limit: i32) -> AnalysisSpec {
    AnalysisSpec {
        interval_seconds,
        failure_limit,
        min_requests: 10,
        max_error_rate: Some(0.05),
        ..AnalysisSpec::default()
    }
}

pub fn measurement(requests: i64, error_rate: f64) -> Measurement {
    Measurement {
        requests,
        error_rate: Some(error_rate),
        latency_p95_seconds: Some(0.01),
        ..Measurement::default()
    }
}

/// A track whose Deployment has caught up: `ready` of `replicas` pods run `version`.
pub fn settled(version: &str, replicas: i32, ready: i32) -> TrackState {
    TrackState { version: version.into(), replicas, ready, rolled_out: true }
}

/// One decision to test: what the planner reads, and a clock.
#[derive(Clone)]
pub struct Case {
    pub spec: ModelDeploymentSpec,
    pub status: ModelDeploymentStatus,
    pub observed: Observed,
    pub measurement: Option<Measurement>,
    pub now: Timestamp,
}

impl Case {
    pub fn new(spec: ModelDeploymentSpec) -> Case {
        Case {
            spec,
            status: ModelDeploymentStatus::default(),
            observed: Observed::default(),
            measurement: None,
            now: start(),
        }
    }

    /// The stable version is `stable`, and a rollout of the spec's version is in progress
    /// unless that is `stable` too.
    pub fn rolling_out_from(mut self, stable: &str) -> Case {
        self.status.stable_version = Some(stable.into());
        if self.spec.model.version != stable {
            self.status.candidate_version = Some(self.spec.model.version.clone());
        }
        self
    }

    /// The stored status describes what is observed now, the rollout stood at `reason`
    /// (progressing, or paused for a pause reason), and the last progress was `seconds` ago.
    pub fn stalled_for(mut self, seconds: i64, reason: Reason) -> Case {
        let paused = matches!(
            reason,
            Reason::CanaryWeightReached | Reason::CanaryPause | Reason::AwaitingApproval
        );
        self.status.last_progress_at = Some(seconds_ago(seconds));
        self.status.tracks = self
            .observed
            .tracks
            .iter()
            .map(|(track, seen)| TrackStatus {
                name: track.as_str().into(),
                version: seen.version.clone(),
                replicas: seen.replicas,
                ready_replicas: seen.ready,
            })
            .collect();
        self.status.conditions = vec![Condition {
            type_: ConditionType::Progressing.to_string(),
            status: condition_status(!paused).into(),
            reason: reason.to_string(),
            message: "where it stood".into(),
            observed_generation: Some(1),
            last_transition_time: Time(start()),
        }];
        self
    }

    pub fn with(mut self, track: Track, state: TrackState) -> Case {
        self.observed.tracks.insert(track, state);
        self
    }

    /// The main Service selects `track` (every track when `None`), with every ready pod of
    /// the selected tracks behind it.
    pub fn selecting(mut self, track: Option<Track>) -> Case {
        self.observed.service_track = Some(track);
        let selected: Vec<Track> = match track {
            Some(t) => vec![t],
            None => Track::ALL.to_vec(),
        };
        self.observed.endpoints = selected
            .iter()
            .filter_map(|t| self.observed.tracks.get(t).map(|s| (t, s.ready)))
            .flat_map(|(t, ready)| {
                (0..ready).map(move |i| Endpoint {
                    pod: format!("{NAME}-{}-abc-{i}", t.as_str()),
                    ready: true,
                })
            })
            .collect();
        self
    }

    pub fn input(&self) -> Input<'_> {
        Input {
            name: NAME,
            spec: &self.spec,
            status: &self.status,
            observed: &self.observed,
            measurement: self.measurement.clone(),
            now: self.now,
        }
    }
}

/// Run `decide` on a fresh draft of `case`, as `plan` would before its strategy runs.
pub fn decide<T>(case: &Case, decide: impl FnOnce(&mut Draft<'_>) -> T) -> (T, Plan) {
    let input = case.input();
    let mut draft = Draft::new(&input);
    draft.state.enter(
        case.spec.strategy.type_,
        &case.spec.model.version,
        case.spec.strategy.approved_version.as_deref(),
    );
    let outcome = decide(&mut draft);
    (outcome, draft.finish())
}

/// The tracks a plan wants, one line each: `stable 1 x9 held` (held: the running template
/// kept, only resized).
pub fn sizes(plan: &Plan) -> Vec<String> {
    plan.tracks
        .iter()
        .map(|t| {
            let held = if t.frozen { " held" } else { "" };
            format!("{} {} x{}{held}", t.track.as_str(), t.version, t.replicas)
        })
        .collect()
}

/// Where a plan leaves the rollout: the stage's name and reason.
pub fn stage(plan: &Plan) -> (&'static str, Option<Reason>) {
    match &plan.stage {
        Stage::Complete => ("Complete", None),
        Stage::Progressing { reason, .. } => ("Progressing", Some(*reason)),
        Stage::Paused { reason, .. } => ("Paused", Some(*reason)),
        Stage::RolledBack { reason, .. } => ("RolledBack", Some(*reason)),
    }
}

/// The message of the stage, empty when complete.
pub fn message(plan: &Plan) -> &str {
    match &plan.stage {
        Stage::Complete => "",
        Stage::Progressing { message, .. }
        | Stage::Paused { message, .. }
        | Stage::RolledBack { message, .. } => message,
    }
}

pub fn events(plan: &Plan) -> Vec<Reason> {
    plan.events.iter().map(|e| e.reason).collect()
}

pub fn seconds_ago(seconds: i64) -> String {
    format_time(start() - SignedDuration::from_secs(seconds))
}

pub fn seconds_from_now(seconds: i64) -> String {
    format_time(start() + SignedDuration::from_secs(seconds))
}
