//! The rollout state persisted in `status`, so a restarted operator resumes where the last
//! one stopped: versions, step, timers and analysis all live in the API, never in memory.

use k8s_openapi::jiff::Timestamp;
use modelship_crds::{
    AnalysisStatus, ModelDeploymentStatus, ModelSource, RolloutRecord, StrategyType,
};

use super::{Input, Track};
use crate::vocabulary::{ConditionType, Reason, condition_status};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutState {
    pub stable_version: Option<String>,
    /// The model file of the stable version.
    pub stable_model: Option<ModelSource>,
    pub candidate_version: Option<String>,
    /// When the candidate started rolling out, and when all its pods were first ready.
    pub candidate_started_at: Option<Timestamp>,
    pub candidate_ready_at: Option<Timestamp>,
    pub aborted_version: Option<String>,
    /// `spec.strategy.approvedVersion` when `aborted_version` was rolled back.
    pub aborted_approval: Option<String>,
    pub active_color: Option<Track>,
    pub canary_weight: i32,
    pub current_step: Option<i32>,
    pub step_started_at: Option<Timestamp>,
    pub last_progress_at: Option<Timestamp>,
    pub scale_down_at: Option<Timestamp>,
    pub analysis: Option<AnalysisStatus>,
    pub history: Vec<RolloutRecord>,
    /// Computed each time, never stored: the progress deadline passed.
    pub deadline_exceeded: bool,
    /// Computed each time: the spec names the stable version with another model file.
    pub source_mismatch: bool,
    /// Warnings already published for a problem that still lasts.
    pub warned: Warned,
}

/// Problems whose warning event was published when they began: while they last, the warning
/// is not repeated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Warned {
    pub deadline_exceeded: bool,
    pub source_mismatch: bool,
}

impl Warned {
    /// The stored status has no field of its own for these: the Degraded condition written
    /// with the warning is their record.
    fn recover(status: &ModelDeploymentStatus) -> Self {
        let degraded = status
            .conditions
            .iter()
            .find(|c| {
                c.type_ == ConditionType::Degraded.as_str() && c.status == condition_status(true)
            })
            .and_then(|c| Reason::parse(&c.reason));
        Warned {
            deadline_exceeded: degraded == Some(Reason::ProgressDeadlineExceeded),
            source_mismatch: degraded == Some(Reason::ModelSourceMismatch),
        }
    }
}

impl RolloutState {
    /// Read the persisted state; fill what is missing from the children, so an object whose
    /// status was lost resumes from what actually runs.
    pub fn recover(input: &Input<'_>) -> Self {
        let status = input.status;
        let observed = input.observed;
        let active_color = status
            .active_color
            .as_deref()
            .and_then(Track::parse)
            .filter(|t| t.is_color())
            .or_else(|| observed.service_track.flatten().filter(|t| t.is_color()));
        let running_version = || {
            let base = match input.spec.strategy.type_ {
                StrategyType::BlueGreen => active_color.unwrap_or(Track::Blue),
                _ => Track::Stable,
            };
            observed
                .tracks
                .get(&base)
                .or_else(|| observed.tracks.get(&Track::Stable))
                .map(|t| t.version.clone())
        };
        let stable_version = status.stable_version.clone().or_else(running_version);
        let spec_model = &input.spec.model;
        // First deployment, or a status from before the model file was recorded: the spec
        // is the best knowledge of what the stable version runs.
        let stable_model = status.stable_model.clone().or_else(|| {
            let version = stable_version.as_deref().unwrap_or(&spec_model.version);
            (version == spec_model.version).then(|| spec_model.source())
        });
        RolloutState {
            stable_version: stable_version.or_else(|| Some(spec_model.version.clone())),
            stable_model,
            candidate_version: status.candidate_version.clone(),
            candidate_started_at: status.candidate_started_at.as_deref().and_then(parse_time),
            candidate_ready_at: status.candidate_ready_at.as_deref().and_then(parse_time),
            aborted_version: status.aborted_version.clone(),
            aborted_approval: status.aborted_approval.clone(),
            active_color,
            canary_weight: status.canary_weight,
            current_step: status.current_step,
            step_started_at: status.step_started_at.as_deref().and_then(parse_time),
            last_progress_at: status.last_progress_at.as_deref().and_then(parse_time),
            scale_down_at: status.scale_down_at.as_deref().and_then(parse_time),
            analysis: status.analysis.clone(),
            history: status.history.clone(),
            deadline_exceeded: false,
            source_mismatch: false,
            warned: Warned::recover(status),
        }
    }

    /// Drop what only another strategy uses, left behind by a strategy change; the one place
    /// that knows which fields belong to which strategy. `version` and `approved` are the
    /// spec's version and approval: a rolled-back version is retried when the spec names
    /// another version, or when the approval newly names it.
    pub fn enter(&mut self, strategy: StrategyType, version: &str, approved: Option<&str>) {
        if strategy != StrategyType::BlueGreen {
            self.active_color = None;
            self.scale_down_at = None;
        }
        if strategy != StrategyType::Canary {
            self.canary_weight = 0;
            self.current_step = None;
        }
        match strategy {
            // No candidate is ever analysed or rolled back automatically.
            StrategyType::RollingUpdate => {
                self.aborted_version = None;
                self.analysis = None;
            }
            // A rolled-back version is refused only while the spec still names it, and until
            // an approval that did not name it when it was rolled back does.
            StrategyType::Canary | StrategyType::BlueGreen => {
                let aborted = self.aborted_version.as_deref();
                let retried = approved.is_some()
                    && approved == aborted
                    && self.aborted_approval.as_deref() != approved;
                if aborted != Some(version) || retried {
                    self.aborted_version = None;
                }
            }
        }
        if self.aborted_version.is_none() {
            self.aborted_approval = None;
        }
    }
}

/// RFC 3339 with milliseconds, the form stored in status.
pub fn format_time(at: Timestamp) -> String {
    format!("{at:.3}")
}

pub fn parse_time(value: &str) -> Option<Timestamp> {
    value.parse().ok()
}
