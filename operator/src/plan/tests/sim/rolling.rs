//! RollingUpdate in the simulated cluster.

use modelship_crds::{Phase, RolloutOutcome, StrategySpec};

use super::{World, outcomes};
use crate::plan::Track;
use crate::plan::tests::fixtures::spec;

#[test]
fn rolling_update_replaces_pods_in_place() {
    let mut world = World::new(spec("1", 3, StrategySpec::default()));
    world.settle();
    world.spec.model.version = "2".into();
    let plan = world.tick();
    assert_eq!(plan.tracks.len(), 1);
    assert_eq!(world.phase(), Phase::Progressing);
    world.settle();
    assert_eq!(world.replicas(Track::Stable), ("2".into(), 3, 3));
    assert_eq!(outcomes(&world), vec![("2".into(), RolloutOutcome::Promoted)]);
}
