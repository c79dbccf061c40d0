//! RollingUpdate: one Deployment; a new version is a pod-template change that the Deployment
//! controller rolls out with maxUnavailable 0.

use super::rules::retire_foreign;
use super::{Draft, Stage, Track};
use crate::vocabulary::Reason;

pub fn plan(d: &mut Draft<'_>) {
    let total = d.total();
    let version = d.version().to_string();
    let stable = d.state.stable_version.clone().unwrap_or_default();
    if version == stable {
        d.abandon_candidate();
    } else if d.state.candidate_version.as_deref() != Some(version.as_str()) {
        d.start_candidate(&version);
    }

    d.want(Track::Stable, &version, total);
    let seen = d.observed(Track::Stable);
    if seen.settled_at(&version, total) {
        d.promote_candidate();
        d.stage = Stage::Complete;
    } else {
        d.progressing(
            Reason::RollingUpdate,
            format!("version {version}: {}/{total} pods ready", seen.ready.min(total)),
        );
    }
    retire_foreign(d, seen.ready);
}
