//! Rollout decisions: a pure function of (spec, previous status, observed children, clock).
//!
//! Nothing here performs I/O. `plan` reads what the observer saw and returns the Deployments,
//! Service selectors and status the world should move to next; the controller applies it.
//! Every rule in the README's "Rollouts" section lives in this module and its children.

mod bluegreen;
mod canary;
mod rolling;
pub mod split;
pub mod state;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use modelship_crds::{
    AnalysisStatus, ModelDeploymentSpec, ModelDeploymentStatus, ModelSource, Phase, RolloutOutcome,
    RolloutRecord, StrategyType,
};

pub use state::RolloutState;

/// A Deployment the operator runs for one model: the base track, the canary, or a color.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Track {
    /// The version that serves when no rollout is in progress (RollingUpdate and Canary).
    Stable,
    /// The candidate of a canary rollout.
    Canary,
    /// One of the two blue-green colors.
    Blue,
    /// The other blue-green color.
    Green,
}

impl Track {
    pub const ALL: [Track; 4] = [Track::Stable, Track::Canary, Track::Blue, Track::Green];

    pub fn as_str(self) -> &'static str {
        match self {
            Track::Stable => "stable",
            Track::Canary => "canary",
            Track::Blue => "blue",
            Track::Green => "green",
        }
    }

    pub fn parse(value: &str) -> Option<Track> {
        Track::ALL.into_iter().find(|track| track.as_str() == value)
    }

    /// The other blue-green color; the base tracks have none.
    pub fn other_color(self) -> Track {
        match self {
            Track::Blue => Track::Green,
            Track::Green => Track::Blue,
            other => other,
        }
    }

    pub fn is_color(self) -> bool {
        matches!(self, Track::Blue | Track::Green)
    }
}

/// What the observer saw of one track's Deployment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrackState {
    /// Model version in the Deployment's pod template.
    pub version: String,
    /// `spec.replicas` of the Deployment.
    pub replicas: i32,
    /// Ready pods of the Deployment, whatever their version.
    pub ready: i32,
    /// The Deployment controller has caught up and every pod runs the template: the track is
    /// settled on `version`.
    pub rolled_out: bool,
}

impl TrackState {
    /// Settled on `version` with at least `want` ready pods and no more wanted.
    pub fn settled_at(&self, version: &str, want: i32) -> bool {
        self.rolled_out && self.version == version && self.replicas == want && self.ready >= want
    }
}

/// One ready endpoint of the main Service, as its EndpointSlices list it.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub pod: String,
    pub ready: bool,
}

/// The children the observer found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub tracks: BTreeMap<Track, TrackState>,
    /// The main Service's selector: `None` when the Service does not exist, `Some(None)` when
    /// it selects every track, `Some(Some(track))` when it selects one.
    pub service_track: Option<Option<Track>>,
    /// Endpoints of the main Service.
    pub endpoints: Vec<Endpoint>,
}

impl Observed {
    pub fn track(&self, track: Track) -> TrackState {
        self.tracks.get(&track).cloned().unwrap_or_default()
    }
}

/// One analysis measurement of the candidate, taken by the controller before planning.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    pub requests: i64,
    pub error_rate: Option<f64>,
    pub latency_p95_seconds: Option<f64>,
    pub drift_score: Option<f64>,
    /// Pods that could not be scraped.
    pub unreachable_pods: usize,
}

/// Everything `plan` decides from.
pub struct Input<'a> {
    pub name: &'a str,
    pub spec: &'a ModelDeploymentSpec,
    pub status: &'a ModelDeploymentStatus,
    pub observed: &'a Observed,
    pub measurement: Option<Measurement>,
    pub now: Timestamp,
}

/// A Deployment the operator wants.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredTrack {
    pub track: Track,
    pub version: String,
    pub replicas: i32,
    /// Keep the pod template the Deployment runs now and change only its size: a version
    /// that is not being rolled out must not be re-rolled by edits meant for the candidate.
    pub frozen: bool,
    /// The model file the pods load.
    pub source: ModelSource,
}

/// Why the rollout stands where it stands; becomes conditions and the phase.
#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    /// Nothing to do: every pod runs the desired version.
    Complete,
    /// Pods are being created, scaled or replaced.
    Progressing { reason: &'static str, message: String },
    /// Waiting for time or for the user.
    Paused { reason: &'static str, message: String },
    /// The candidate was rolled back automatically.
    RolledBack { message: String },
}

/// An event to publish, describing a transition the plan made.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedEvent {
    pub reason: &'static str,
    pub note: String,
    pub warning: bool,
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

/// Working state shared by the strategy functions.
pub(crate) struct Draft<'a> {
    pub input: &'a Input<'a>,
    pub state: RolloutState,
    pub tracks: Vec<DesiredTrack>,
    pub keep: Vec<Track>,
    pub service_track: Option<Track>,
    pub preview_track: Option<Track>,
    pub stage: Stage,
    pub events: Vec<PlannedEvent>,
    pub wake_at: Vec<Timestamp>,
}

impl<'a> Draft<'a> {
    fn new(input: &'a Input<'a>) -> Self {
        Draft {
            state: RolloutState::recover(input),
            input,
            tracks: Vec::new(),
            keep: Vec::new(),
            service_track: None,
            preview_track: None,
            stage: Stage::Complete,
            events: Vec::new(),
            wake_at: Vec::new(),
        }
    }

    pub fn total(&self) -> i32 {
        self.input.spec.replicas.max(0)
    }

    pub fn version(&self) -> &'a str {
        &self.input.spec.model.version
    }

    pub fn observed(&self, track: Track) -> TrackState {
        self.input.observed.track(track)
    }

    /// A track built from the current spec, running `version`.
    pub fn want(&mut self, track: Track, version: &str, replicas: i32) {
        self.push(track, version, replicas, false);
    }

    fn push(&mut self, track: Track, version: &str, replicas: i32, frozen: bool) {
        self.tracks.retain(|t| t.track != track);
        let source = self.source_of(version);
        let version = version.to_string();
        self.tracks.push(DesiredTrack { track, version, replicas, frozen, source });
    }

    /// The model file of `version`: the recorded one for the stable version, else the spec's.
    pub fn source_of(&self, version: &str) -> ModelSource {
        match (&self.state.stable_version, &self.state.stable_model) {
            (Some(stable), Some(model)) if stable == version => model.clone(),
            _ => self.input.spec.model.source(),
        }
    }

    /// A track that keeps the template it runs now, resized to `replicas`; built from the
    /// spec only when it does not run `version` yet.
    pub fn hold(&mut self, track: Track, version: &str, replicas: i32) {
        match self.input.observed.tracks.get(&track) {
            Some(seen) if seen.version == version => self.push(track, version, replicas, true),
            _ => self.want(track, version, replicas),
        }
    }

    /// Keep an existing track exactly as observed (capacity not yet replaced elsewhere).
    pub fn keep_as_is(&mut self, track: Track) {
        if let Some(seen) = self.input.observed.tracks.get(&track).cloned() {
            self.hold(track, &seen.version, seen.replicas);
        }
    }

    pub fn event(&mut self, reason: &'static str, note: impl Into<String>) {
        self.events.push(PlannedEvent { reason, note: note.into(), warning: false });
    }

    pub fn warning(&mut self, reason: &'static str, note: impl Into<String>) {
        self.events.push(PlannedEvent { reason, note: note.into(), warning: true });
    }

    pub fn progressing(&mut self, reason: &'static str, message: impl Into<String>) {
        self.stage = Stage::Progressing { reason, message: message.into() };
    }

    pub fn paused(&mut self, reason: &'static str, message: impl Into<String>) {
        self.stage = Stage::Paused { reason, message: message.into() };
    }

    /// Record how a rollout ended, newest first, at most ten entries.
    pub fn record(&mut self, version: &str, outcome: RolloutOutcome, reason: Option<String>) {
        self.state.history.insert(
            0,
            RolloutRecord {
                version: version.to_string(),
                outcome,
                finished_at: state::format_time(self.input.now),
                reason,
            },
        );
        self.state.history.truncate(10);
    }

    /// Begin rolling out `version`, superseding any candidate in flight.
    pub fn start_candidate(&mut self, version: &str) {
        if let Some(previous) = self.state.candidate_version.clone() {
            self.record(
                &previous,
                RolloutOutcome::Superseded,
                Some(format!("version {version} was requested during the rollout")),
            );
            self.event("Superseded", format!("version {previous} superseded by {version}"));
        }
        self.state.candidate_version = Some(version.to_string());
        self.state.current_step = None;
        self.state.step_started_at = Some(self.input.now);
        self.state.last_progress_at = Some(self.input.now);
        self.state.analysis = None;
        let stable = self.state.stable_version.clone().unwrap_or_default();
        self.event("RolloutStarted", format!("rolling out version {version} (stable {stable})"));
    }

    /// The user set `spec.model.version` back to the stable version: drop the candidate.
    pub fn abandon_candidate(&mut self) {
        if let Some(candidate) = self.state.candidate_version.take() {
            let stable = self.state.stable_version.clone().unwrap_or_default();
            self.record(
                &candidate,
                RolloutOutcome::Abandoned,
                Some(format!("spec.model.version set back to {stable}")),
            );
            self.event("RolledBack", format!("version {candidate} abandoned; back to {stable}"));
            self.state.current_step = None;
            self.state.step_started_at = None;
            self.state.analysis = None;
            self.state.last_progress_at = Some(self.input.now);
        }
    }

    /// The candidate failed its analysis: remember it so it is not retried by accident.
    pub fn abort_candidate(&mut self, why: String) {
        if let Some(candidate) = self.state.candidate_version.take() {
            self.record(&candidate, RolloutOutcome::RolledBack, Some(why.clone()));
            self.warning("AnalysisFailed", format!("version {candidate} rolled back: {why}"));
            self.state.aborted_version = Some(candidate);
            self.state.current_step = None;
            self.state.step_started_at = None;
            self.state.last_progress_at = Some(self.input.now);
        }
    }

    /// The candidate became the stable version.
    pub fn promote_candidate(&mut self) {
        if let Some(candidate) = self.state.candidate_version.take() {
            self.record(&candidate, RolloutOutcome::Promoted, None);
            self.event("Promoted", format!("version {candidate} is now stable"));
            self.state.stable_version = Some(candidate);
            self.state.stable_model = Some(self.input.spec.model.source());
            self.state.current_step = None;
            self.state.step_started_at = None;
            self.state.last_progress_at = Some(self.input.now);
        }
    }

    pub fn wake_at(&mut self, at: Timestamp) {
        self.wake_at.push(at);
    }
}

/// Decide the next state of one ModelDeployment.
pub fn plan(input: &Input<'_>) -> Plan {
    let mut draft = Draft::new(input);
    match input.spec.strategy.type_ {
        StrategyType::RollingUpdate => rolling::plan(&mut draft),
        StrategyType::Canary => canary::plan(&mut draft),
        StrategyType::BlueGreen => bluegreen::plan(&mut draft),
    }
    require_endpoints(&mut draft);
    track_progress(&mut draft);
    check_model_source(&mut draft);
    finish(draft)
}

/// Healthy means the Service answers: pods can be ready a moment before the EndpointSlice
/// controller lists them, and until then the rollout is not complete.
fn require_endpoints(draft: &mut Draft<'_>) {
    let observed = draft.input.observed;
    let serves = observed.endpoints.iter().any(|e| e.ready);
    if draft.stage == Stage::Complete && draft.total() > 0 && !serves {
        let message =
            format!("waiting for the ready pods to appear behind service {}", draft.input.name);
        draft.progressing("WaitingForEndpoints", message);
    }
}

/// The model file of a version is fixed when it rolls out. A spec that names the stable
/// version with another file (typically after setting only the version back) keeps serving
/// the recorded file, and says so.
fn check_model_source(draft: &mut Draft<'_>) {
    let spec = &draft.input.spec.model;
    let stable = draft.state.stable_version.as_deref();
    let mismatch = draft.state.candidate_version.is_none()
        && stable == Some(spec.version.as_str())
        && draft.state.stable_model.as_ref().is_some_and(|m| *m != spec.source());
    draft.state.source_mismatch = mismatch;
    let was =
        draft.input.status.conditions.iter().any(|c| {
            c.type_ == "Degraded" && c.status == "True" && c.reason == "ModelSourceMismatch"
        });
    if mismatch && !was {
        let recorded = draft.state.stable_model.as_ref().map(|m| m.uri.clone()).unwrap_or_default();
        draft.warning(
            "ModelSourceMismatch",
            format!(
                "version {} runs {recorded}; spec.model names another file: set a new \
                 spec.model.version to roll that file out",
                spec.version
            ),
        );
    }
}

/// Records progress (more ready pods, new targets) and applies the progress deadline.
fn track_progress(draft: &mut Draft<'_>) {
    let now = draft.input.now;
    let progressed = draft.input.observed.tracks.iter().any(|(track, seen)| {
        let before = draft.input.status.tracks.iter().find(|t| t.name == track.as_str());
        before.is_none_or(|b| seen.ready > b.ready_replicas || seen.replicas != b.replicas)
    });
    if progressed || draft.state.last_progress_at.is_none() {
        draft.state.last_progress_at = Some(now);
    }
    if let Stage::Progressing { .. } = draft.stage {
        let deadline_seconds = i64::from(draft.input.spec.strategy.progress_deadline_seconds);
        let since = draft.state.last_progress_at.unwrap_or(now);
        let deadline = since + k8s_openapi::jiff::SignedDuration::from_secs(deadline_seconds);
        if now >= deadline {
            draft.state.deadline_exceeded = true;
        } else {
            draft.state.deadline_exceeded = false;
            draft.wake_at(deadline);
        }
    } else {
        draft.state.deadline_exceeded = false;
    }
    let was_exceeded = draft.input.status.conditions.iter().any(|c| {
        c.type_ == "Degraded" && c.status == "True" && c.reason == "ProgressDeadlineExceeded"
    });
    if draft.state.deadline_exceeded && !was_exceeded {
        let message = match &draft.stage {
            Stage::Progressing { message, .. } => message.clone(),
            _ => String::new(),
        };
        draft.warning(
            "ProgressDeadlineExceeded",
            format!(
                "no progress for {}s: {message}",
                draft.input.spec.strategy.progress_deadline_seconds
            ),
        );
    }
}

fn finish(draft: Draft<'_>) -> Plan {
    let now = draft.input.now;
    let wanted: Vec<Track> = draft.tracks.iter().map(|t| t.track).collect();
    let remove = draft
        .input
        .observed
        .tracks
        .keys()
        .copied()
        .filter(|track| !wanted.contains(track) && !draft.keep.contains(track))
        .collect();
    let requeue_after = draft
        .wake_at
        .iter()
        .filter_map(|at| Duration::try_from(at.duration_since(now)).ok())
        .min()
        .map(|d| d.max(Duration::from_millis(100)));
    let mut tracks = draft.tracks;
    tracks.sort_by_key(|t| t.track);
    Plan {
        tracks,
        remove,
        service_track: draft.service_track,
        preview_track: draft.preview_track,
        state: draft.state,
        stage: draft.stage,
        events: draft.events,
        requeue_after,
    }
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

/// Analysis bookkeeping shared by the canary and blue-green plans. Returns `Some(reason)` when
/// the candidate has failed more measurements than allowed.
pub(crate) fn apply_measurement(draft: &mut Draft<'_>, candidate: &str) -> Option<String> {
    let spec = draft.input.spec.strategy.analysis.as_ref()?;
    let now = draft.input.now;
    let mut analysis = match draft.state.analysis.take() {
        Some(a) if a.version == candidate => a,
        // Exposure just began: the first measurement is one interval away.
        _ => AnalysisStatus {
            version: candidate.to_string(),
            last_measured_at: Some(state::format_time(now)),
            ..AnalysisStatus::default()
        },
    };
    let mut failed = None;
    if let Some(measurement) = &draft.input.measurement {
        let verdict = crate::analysis::judge(spec, measurement);
        analysis.measurements += 1;
        analysis.last_measured_at = Some(state::format_time(now));
        analysis.requests = measurement.requests;
        analysis.error_rate = measurement.error_rate;
        analysis.latency_p95_seconds = measurement.latency_p95_seconds;
        analysis.drift_score = measurement.drift_score;
        match verdict {
            crate::analysis::Verdict::Pass => {
                analysis.message = Some("all thresholds met".to_string());
            }
            crate::analysis::Verdict::Inconclusive(why) => {
                analysis.inconclusive += 1;
                analysis.message = Some(why);
            }
            crate::analysis::Verdict::Fail(why) => {
                analysis.failures += 1;
                analysis.message = Some(why.clone());
                draft.warning("AnalysisMeasurementFailed", format!("version {candidate}: {why}"));
                if analysis.failures > spec.failure_limit {
                    failed = Some(format!(
                        "{why} ({} failed measurements, failureLimit {})",
                        analysis.failures, spec.failure_limit
                    ));
                }
            }
        }
    }
    let last = analysis.last_measured_at.as_deref().and_then(state::parse_time).unwrap_or(now);
    draft.wake_at(
        last + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(spec.interval_seconds)),
    );
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

/// Whether the controller should measure the candidate now, and which track it runs on.
pub fn analysis_due(
    spec: &ModelDeploymentSpec,
    status: &ModelDeploymentStatus,
    observed: &Observed,
    now: Timestamp,
) -> Option<Track> {
    let analysis = spec.strategy.analysis.as_ref()?;
    let candidate = status.candidate_version.as_deref()?;
    let track = match spec.strategy.type_ {
        StrategyType::Canary => {
            let canary = observed.track(Track::Canary);
            (canary.version == candidate && canary.ready > 0).then_some(Track::Canary)?
        }
        StrategyType::BlueGreen => {
            let selected = observed.service_track.flatten()?;
            (observed.track(selected).version == candidate).then_some(selected)?
        }
        StrategyType::RollingUpdate => return None,
    };
    let current = status.analysis.as_ref().filter(|a| a.version == candidate)?;
    let last = current.last_measured_at.as_deref().and_then(state::parse_time)?;
    (now >= last
        + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(analysis.interval_seconds)))
    .then_some(track)
}

#[cfg(test)]
mod tests;

/// Tracks the strategy does not use (left by a strategy change) stay exactly as they are
/// until the strategy's own tracks have `total` ready pods; then they are removed.
pub(crate) fn retire_foreign(d: &mut Draft<'_>, serving_ready: i32) {
    if serving_ready >= d.total() {
        return;
    }
    let wanted: Vec<Track> = d.tracks.iter().map(|t| t.track).collect();
    let foreign: Vec<Track> =
        d.input.observed.tracks.keys().copied().filter(|t| !wanted.contains(t)).collect();
    for track in foreign {
        d.keep_as_is(track);
    }
}
