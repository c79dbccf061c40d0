//! The plan while it is being made: the tracks wanted so far, the stage, the events, and the
//! rollout transitions (start, supersede, abandon, abort, promote) every strategy shares.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use modelship_crds::{ModelSource, RolloutOutcome, RolloutRecord};

use super::state::{self, RolloutState};
use super::{Input, Plan, Track, TrackState};
use crate::vocabulary::Reason;

/// Rollouts kept in `status.history`, newest first.
const HISTORY_LENGTH: usize = 10;
/// The earliest a planned wake-up is honoured: sooner ones are rounded up to this.
const MIN_REQUEUE: Duration = Duration::from_millis(100);

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
    Progressing { reason: Reason, message: String },
    /// Waiting for time or for the user.
    Paused { reason: Reason, message: String },
    /// The candidate was rolled back automatically: `reason` says why (a failed analysis,
    /// or no progress by the deadline).
    RolledBack { reason: Reason, message: String },
}

/// Why a candidate was removed automatically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abort {
    /// It failed more analysis measurements than allowed.
    Analysis,
    /// It made no progress within `progressDeadlineSeconds` (`abortOnDeadline`).
    Deadline,
}

impl Abort {
    /// The reason written to the Degraded condition and the warning event.
    pub fn reason(self) -> Reason {
        match self {
            Abort::Analysis => Reason::RolledBack,
            Abort::Deadline => Reason::ProgressDeadlineAborted,
        }
    }

    fn outcome(self) -> RolloutOutcome {
        match self {
            Abort::Analysis => RolloutOutcome::RolledBack,
            Abort::Deadline => RolloutOutcome::Aborted,
        }
    }

    fn event(self) -> Reason {
        match self {
            Abort::Analysis => Reason::AnalysisFailed,
            Abort::Deadline => Reason::ProgressDeadlineAborted,
        }
    }
}

/// An event to publish, describing a transition the plan made.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedEvent {
    pub reason: Reason,
    pub note: String,
    pub warning: bool,
}

/// Working state shared by the strategy functions.
pub(crate) struct Draft<'a> {
    pub input: &'a Input<'a>,
    pub state: RolloutState,
    pub tracks: Vec<DesiredTrack>,
    /// Observed tracks to leave alone although no desired track names them.
    pub keep: Vec<Track>,
    pub service_track: Option<Track>,
    pub preview_track: Option<Track>,
    pub stage: Stage,
    pub events: Vec<PlannedEvent>,
    pub wake_at: Vec<Timestamp>,
}

impl<'a> Draft<'a> {
    pub fn new(input: &'a Input<'a>) -> Self {
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

    pub fn event(&mut self, reason: Reason, note: impl Into<String>) {
        self.events.push(PlannedEvent { reason, note: note.into(), warning: false });
    }

    pub fn warning(&mut self, reason: Reason, note: impl Into<String>) {
        self.events.push(PlannedEvent { reason, note: note.into(), warning: true });
    }

    pub fn progressing(&mut self, reason: Reason, message: impl Into<String>) {
        self.stage = Stage::Progressing { reason, message: message.into() };
    }

    pub fn paused(&mut self, reason: Reason, message: impl Into<String>) {
        self.stage = Stage::Paused { reason, message: message.into() };
    }

    pub fn wake_at(&mut self, at: Timestamp) {
        self.wake_at.push(at);
    }

    /// The plan: observed tracks nobody wants or keeps are removed; the earliest wake-up
    /// becomes the requeue delay.
    pub fn finish(self) -> Plan {
        let now = self.input.now;
        let wanted: Vec<Track> = self.tracks.iter().map(|t| t.track).collect();
        let remove = self
            .input
            .observed
            .tracks
            .keys()
            .copied()
            .filter(|track| !wanted.contains(track) && !self.keep.contains(track))
            .collect();
        let requeue_after = self
            .wake_at
            .iter()
            .filter_map(|at| Duration::try_from(at.duration_since(now)).ok())
            .min()
            .map(|d| d.max(MIN_REQUEUE));
        let mut tracks = self.tracks;
        tracks.sort_by_key(|t| t.track);
        Plan {
            tracks,
            remove,
            service_track: self.service_track,
            preview_track: self.preview_track,
            state: self.state,
            stage: self.stage,
            events: self.events,
            requeue_after,
        }
    }
}

/// Rollout transitions: each records its outcome, publishes its event and resets the step.
impl Draft<'_> {
    /// Record how the candidate's rollout ended, newest first, with when it started and
    /// when its pods were first all ready; the rollout's clock stops.
    fn record(&mut self, version: &str, outcome: RolloutOutcome, reason: Option<String>) {
        let started_at = self.state.candidate_started_at.take();
        let ready_at = self.state.candidate_ready_at.take();
        self.state.history.insert(
            0,
            RolloutRecord {
                version: version.to_string(),
                outcome,
                started_at: started_at.map(state::format_time),
                ready_at: ready_at.map(state::format_time),
                finished_at: state::format_time(self.input.now),
                reason,
            },
        );
        self.state.history.truncate(HISTORY_LENGTH);
    }

    /// Every pod a track runs for the candidate is ready: the first time, that is when the
    /// rollout's pods became ready (`readyAt` in its history record).
    pub fn note_candidate_ready(&mut self) {
        let Some(candidate) = self.state.candidate_version.as_deref() else {
            return;
        };
        if self.state.candidate_ready_at.is_some() {
            return;
        }
        let ready = self.input.observed.tracks.values().any(|t| {
            t.version == candidate && t.rolled_out && t.replicas > 0 && t.ready >= t.replicas
        });
        if ready {
            self.state.candidate_ready_at = Some(self.input.now);
        }
    }

    /// What status says while the spec names the aborted `version`.
    pub fn aborted_message(&self, version: &str, stable: &str) -> (Reason, String) {
        let reason = self.abort_reason();
        let what = match reason {
            Reason::ProgressDeadlineAborted => "was aborted at its progress deadline",
            _ => "was rolled back",
        };
        let message = format!(
            "version {version} {what}; version {stable} serves. Set spec.model.version to another \
             version, or spec.strategy.approvedVersion to {version}, to roll out again"
        );
        (reason, message)
    }

    /// Why the stored aborted version was removed, from its history record.
    pub fn abort_reason(&self) -> Reason {
        let aborted = self.state.aborted_version.as_deref();
        let record = self.state.history.iter().find(|r| Some(r.version.as_str()) == aborted);
        match record.map(|r| r.outcome) {
            Some(RolloutOutcome::Aborted) => Abort::Deadline.reason(),
            _ => Abort::Analysis.reason(),
        }
    }

    /// Begin rolling out `version`, superseding any candidate in flight.
    pub fn start_candidate(&mut self, version: &str) {
        if let Some(previous) = self.state.candidate_version.clone() {
            self.record(
                &previous,
                RolloutOutcome::Superseded,
                Some(format!("version {version} was requested during the rollout")),
            );
            self.event(Reason::Superseded, format!("version {previous} superseded by {version}"));
        }
        self.state.candidate_version = Some(version.to_string());
        self.state.candidate_started_at = Some(self.input.now);
        self.state.candidate_ready_at = None;
        self.state.current_step = None;
        self.state.step_started_at = Some(self.input.now);
        self.state.last_progress_at = Some(self.input.now);
        self.state.analysis = None;
        let stable = self.state.stable_version.clone().unwrap_or_default();
        self.event(
            Reason::RolloutStarted,
            format!("rolling out version {version} (stable {stable})"),
        );
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
            self.event(
                Reason::RolledBack,
                format!("version {candidate} abandoned; back to {stable}"),
            );
            self.state.current_step = None;
            self.state.step_started_at = None;
            self.state.analysis = None;
            self.state.last_progress_at = Some(self.input.now);
        }
    }

    /// The candidate failed its analysis, or made no progress by the deadline: remember it
    /// so it is not retried by accident.
    pub fn abort_candidate(&mut self, abort: Abort, why: String) {
        if let Some(candidate) = self.state.candidate_version.take() {
            self.record(&candidate, abort.outcome(), Some(why.clone()));
            let verb = match abort {
                Abort::Analysis => "rolled back",
                Abort::Deadline => "aborted",
            };
            self.warning(abort.event(), format!("version {candidate} {verb}: {why}"));
            self.state.aborted_version = Some(candidate);
            self.state.aborted_approval = self.input.spec.strategy.approved_version.clone();
            self.state.current_step = None;
            self.state.step_started_at = None;
            self.state.last_progress_at = Some(self.input.now);
        }
    }

    /// The candidate became the stable version.
    pub fn promote_candidate(&mut self) {
        if let Some(candidate) = self.state.candidate_version.take() {
            self.record(&candidate, RolloutOutcome::Promoted, None);
            self.event(Reason::Promoted, format!("version {candidate} is now stable"));
            self.state.stable_version = Some(candidate);
            self.state.stable_model = Some(self.input.spec.model.source());
            self.state.current_step = None;
            self.state.step_started_at = None;
            self.state.last_progress_at = Some(self.input.now);
        }
    }
}
