//! What holds whatever the strategy: steady state, and strategy changes.

use modelship_crds::StrategySpec;

use super::World;
use crate::plan::Track;
use crate::plan::tests::fixtures::{blue_green, canary, spec};

#[test]
fn strategy_change_while_idle_moves_capacity_first() {
    let mut world = World::new(spec("1", 3, canary(Some(10), None)));
    world.settle();
    world.spec.strategy = blue_green(true, None);
    world.settle();
    assert!(!world.tracks.contains_key(&Track::Stable), "the old track went once blue was ready");
    assert_eq!(world.replicas(Track::Blue), ("1".into(), 3, 3));
    assert_eq!(world.service, Some(Some(Track::Blue)));
}

#[test]
fn a_settled_world_plans_nothing_new() {
    for strategy in [StrategySpec::default(), canary(Some(30), None), blue_green(true, None)] {
        let mut world = World::new(spec("1", 3, strategy));
        world.settle();
        world.tick();
        let status_before = world.status.clone();
        let plan = world.tick();
        assert!(plan.events.is_empty(), "no events at steady state: {:?}", plan.events);
        assert!(plan.remove.is_empty());
        assert_eq!(world.status, status_before, "status unchanged at steady state");
        assert_eq!(plan.requeue_after, None);
    }
}
