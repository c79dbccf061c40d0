//! What the planner knows of the children: the observer's view, free of Kubernetes types.

use std::collections::BTreeMap;

use super::Track;

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

/// One endpoint of the main Service, as its EndpointSlices list it.
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
