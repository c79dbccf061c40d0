//! The Deployments the operator can run for one model.

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
