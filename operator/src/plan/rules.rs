//! Rules that hold whatever the strategy, applied after the strategy has planned.

use k8s_openapi::jiff::SignedDuration;

use super::{Draft, Stage, Track};
use crate::vocabulary::{ConditionType, Reason, condition_status};

/// Healthy means the Service answers: pods can be ready a moment before the EndpointSlice
/// controller lists them, and until then the rollout is not complete.
pub(super) fn require_endpoints(draft: &mut Draft<'_>) {
    let serves = draft.input.observed.endpoints.iter().any(|e| e.ready);
    if draft.stage == Stage::Complete && draft.total() > 0 && !serves {
        let message =
            format!("waiting for the ready pods to appear behind service {}", draft.input.name);
        draft.progressing(Reason::WaitingForEndpoints, message);
    }
}

/// Whether the children moved since the stored status described them: more ready pods, or
/// new targets.
fn progressed(draft: &Draft<'_>) -> bool {
    draft.input.observed.tracks.iter().any(|(track, seen)| {
        let before = draft.input.status.tracks.iter().find(|t| t.name == track.as_str());
        before.is_none_or(|b| seen.ready > b.ready_replicas || seen.replicas != b.replicas)
    })
}

/// Stages that wait on a timer the user chose, not on the pods: time passing there is not a
/// lack of progress.
fn waits_on_a_timer(reason: Reason) -> bool {
    reason == Reason::ScaleDownDelay
}

/// With `abortOnDeadline`, whether the candidate in flight has made no progress for
/// `progressDeadlineSeconds` while the rollout was progressing (never while it is paused):
/// then it is removed, and this says why.
pub(super) fn deadline_abort(draft: &Draft<'_>) -> Option<String> {
    let strategy = &draft.input.spec.strategy;
    if !strategy.abort_on_deadline() {
        return None;
    }
    let candidate = draft.state.candidate_version.as_deref()?;
    let progressing = draft
        .input
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Progressing.as_str())?;
    let reason = Reason::parse(&progressing.reason)?;
    let was_progressing =
        progressing.status == condition_status(true) || reason == Reason::ProgressDeadlineExceeded;
    if !was_progressing || waits_on_a_timer(reason) || progressed(draft) {
        return None;
    }
    let seconds = i64::from(strategy.progress_deadline_seconds);
    let since = draft.state.last_progress_at?;
    (draft.input.now >= since + SignedDuration::from_secs(seconds)).then(|| {
        format!(
            "no progress for {seconds}s rolling out version {candidate}: {}",
            progressing.message
        )
    })
}

/// Records progress (more ready pods, new targets) and applies the progress deadline; warns
/// once when the deadline passes.
pub(super) fn track_progress(draft: &mut Draft<'_>) {
    let now = draft.input.now;
    if progressed(draft) || draft.state.last_progress_at.is_none() {
        draft.state.last_progress_at = Some(now);
    }
    draft.state.deadline_exceeded = false;
    if let Stage::Progressing { reason, .. } = draft.stage
        && !waits_on_a_timer(reason)
    {
        let deadline_seconds = i64::from(draft.input.spec.strategy.progress_deadline_seconds);
        let since = draft.state.last_progress_at.unwrap_or(now);
        let deadline = since + SignedDuration::from_secs(deadline_seconds);
        if now >= deadline {
            draft.state.deadline_exceeded = true;
        } else {
            draft.wake_at(deadline);
        }
    }
    if draft.state.deadline_exceeded && !draft.state.warned.deadline_exceeded {
        let message = match &draft.stage {
            Stage::Progressing { message, .. } => message.clone(),
            _ => String::new(),
        };
        draft.warning(
            Reason::ProgressDeadlineExceeded,
            format!(
                "no progress for {}s: {message}",
                draft.input.spec.strategy.progress_deadline_seconds
            ),
        );
    }
}

/// The model file of a version is fixed when it rolls out. A spec that names the stable
/// version with another file (typically after setting only the version back) keeps serving
/// the recorded file, and says so once.
pub(super) fn check_model_source(draft: &mut Draft<'_>) {
    let spec = &draft.input.spec.model;
    let stable = draft.state.stable_version.as_deref();
    let mismatch = draft.state.candidate_version.is_none()
        && stable == Some(spec.version.as_str())
        && draft.state.stable_model.as_ref().is_some_and(|m| *m != spec.source());
    draft.state.source_mismatch = mismatch;
    if mismatch && !draft.state.warned.source_mismatch {
        let recorded = draft.state.stable_model.as_ref().map(|m| m.uri.clone()).unwrap_or_default();
        draft.warning(
            Reason::ModelSourceMismatch,
            format!(
                "version {} runs {recorded}; spec.model names another file: set a new \
                 spec.model.version to roll that file out",
                spec.version
            ),
        );
    }
}

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
