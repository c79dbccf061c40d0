//! Rollout decisions: a pure function of (spec, previous status, observed children, clock).
//!
//! Nothing here performs I/O. [`plan`] reads what the observer saw and returns the
//! Deployments, Service selectors and rollout state the world should move to next; `desired`
//! turns that into objects and `apply` writes them. Every rule in the README's "Rollouts"
//! section lives in this module and its children:
//!
//! - [`state`]: the rollout state kept in `status`, and the one place that drops what another
//!   strategy left behind;
//! - `draft`: the plan being made, and the transitions every strategy shares;
//! - `rolling`, `canary`, `bluegreen`: one strategy each;
//! - `gate`: when to measure the candidate and whether the measurements allow promotion;
//! - `rules`: endpoints, the progress deadline and the model file, whatever the strategy;
//! - [`split`]: replica arithmetic.

mod bluegreen;
mod canary;
mod draft;
mod gate;
mod observed;
mod rolling;
mod rules;
pub mod split;
pub mod state;
mod track;

#[cfg(test)]
mod tests;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use modelship_crds::{ModelDeploymentSpec, ModelDeploymentStatus, Phase, StrategyType};

pub(crate) use draft::Draft;
pub use draft::{Abort, DesiredTrack, PlannedEvent, Stage};
pub use gate::{analysis_due, analysis_starts, compares_with_stable};
pub use observed::{Endpoint, Observed, TrackState};
pub use state::RolloutState;
pub use track::Track;

use crate::analysis::Measurement;

/// Everything `plan` decides from.
pub struct Input<'a> {
    pub name: &'a str,
    pub spec: &'a ModelDeploymentSpec,
    pub status: &'a ModelDeploymentStatus,
    pub observed: &'a Observed,
    /// The candidate's metrics, when the controller measured them for this plan.
    pub measurement: Option<Measurement>,
    pub now: Timestamp,
}

/// The outcome of planning.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub tracks: Vec<DesiredTrack>,
    pub remove: Vec<Track>,
    /// Track the main Service selects; `None` selects every track.
    pub service_track: Option<Track>,
    /// Track the preview Service selects; `None` means no preview Service.
    pub preview_track: Option<Track>,
    pub state: RolloutState,
    pub stage: Stage,
    pub events: Vec<PlannedEvent>,
    pub requeue_after: Option<Duration>,
}

impl Plan {
    pub fn desired(&self, track: Track) -> Option<&DesiredTrack> {
        self.tracks.iter().find(|t| t.track == track)
    }
}

/// Decide the next state of one ModelDeployment.
pub fn plan(input: &Input<'_>) -> Plan {
    let mut draft = Draft::new(input);
    let strategy = input.spec.strategy.type_;
    draft.state.enter(
        strategy,
        &input.spec.model.version,
        input.spec.strategy.approved_version.as_deref(),
    );
    draft.note_candidate_ready();
    match strategy {
        StrategyType::RollingUpdate => rolling::plan(&mut draft),
        StrategyType::Canary => canary::plan(&mut draft),
        StrategyType::BlueGreen => bluegreen::plan(&mut draft),
    }
    rules::require_endpoints(&mut draft);
    rules::track_progress(&mut draft);
    rules::check_model_source(&mut draft);
    draft.finish()
}

/// The phase shown by `kubectl get md`.
pub fn phase(plan: &Plan) -> Phase {
    match &plan.stage {
        Stage::RolledBack { .. } => Phase::RolledBack,
        _ if plan.state.deadline_exceeded || plan.state.source_mismatch => Phase::Degraded,
        Stage::Complete => Phase::Healthy,
        Stage::Progressing { .. } => Phase::Progressing,
        Stage::Paused { .. } => Phase::Paused,
    }
}
