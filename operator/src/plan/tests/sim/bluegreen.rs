//! Blue-green rollouts in the simulated cluster: the switch, its gates, switching back.

use k8s_openapi::jiff::SignedDuration;
use modelship_crds::{AnalysisSpec, AnalysisStep, ModelDeploymentStatus, Phase, RolloutOutcome};

use super::{World, outcomes};
use crate::analysis::Measurement;
use crate::plan::Track;
use crate::plan::tests::fixtures::{analysis, blue_green, measurement, spec};
use crate::vocabulary::Reason;

#[test]
fn blue_green_switches_only_to_a_ready_color_and_keeps_the_old_one() {
    let mut world = World::new(spec("1", 3, blue_green(true, None)));
    world.settle();
    assert_eq!(world.service, Some(Some(Track::Blue)));
    assert_eq!(world.status.active_color.as_deref(), Some("blue"));
    world.spec.model.version = "2".into();
    let mut switched_at = None;
    world.run_until("switch", |w| {
        if w.service == Some(Some(Track::Green)) {
            switched_at = Some(w.now);
            true
        } else {
            assert_eq!(w.service, Some(Some(Track::Blue)));
            false
        }
    });
    assert_eq!(
        world.replicas(Track::Green),
        ("2".into(), 3, 3),
        "green complete before the switch"
    );
    assert_eq!(world.replicas(Track::Blue), ("1".into(), 3, 3));
    world.settle();
    let switched_at = switched_at.unwrap();
    assert!(
        world.now.duration_since(switched_at) >= SignedDuration::from_secs(10),
        "blue kept for the delay"
    );
    assert_eq!(world.replicas(Track::Blue).1, 0);
    assert_eq!(world.status.stable_version.as_deref(), Some("2"));
    assert_eq!(
        world.status.selector.as_deref(),
        Some("modelship.io/name=fraud,modelship.io/track=green")
    );
    assert_eq!(world.count(Reason::SwitchedService), 1);
    assert!(world.events.contains(&Reason::TrafficSwitched));
    // The next version goes to blue.
    world.spec.model.version = "3".into();
    world.settle();
    assert_eq!(world.service, Some(Some(Track::Blue)));
    assert_eq!(world.replicas(Track::Blue), ("3".into(), 3, 3));
}

#[test]
fn blue_green_waits_for_approval_with_preview_replicas() {
    let mut world = World::new(spec("1", 2, blue_green(false, Some(1))));
    world.settle();
    world.spec.model.version = "2".into();
    world.run_until("awaiting approval", |w| w.phase() == Phase::Paused);
    assert_eq!(world.replicas(Track::Green), ("2".into(), 1, 1));
    assert_eq!(world.service, Some(Some(Track::Blue)));
    let plan = world.last_plan.clone().unwrap();
    assert_eq!(plan.preview_track, Some(Track::Green));
    world.spec.strategy.approved_version = Some("2".into());
    world.run_until("switch", |w| w.service == Some(Some(Track::Green)));
    assert_eq!(
        world.replicas(Track::Green),
        ("2".into(), 2, 2),
        "scaled to full before the switch"
    );
}

#[test]
fn blue_green_rollback_during_the_delay_is_an_instant_switch_back() {
    let mut world = World::new(spec("1", 3, blue_green(true, None)));
    world.settle();
    world.spec.model.version = "2".into();
    world.run_until("switch", |w| w.service == Some(Some(Track::Green)));
    world.tick();
    world.spec.model.version = "1".into();
    let plan = world.tick();
    assert_eq!(plan.service_track, Some(Track::Blue), "switched back in one step");
    world.settle();
    assert_eq!(world.status.stable_version.as_deref(), Some("1"));
    assert_eq!(outcomes(&world), vec![("2".into(), RolloutOutcome::Abandoned)]);
    world.run_until("green scaled down", |w| w.replicas(Track::Green).1 == 0);
}

#[test]
fn blue_green_analysis_failure_switches_back() {
    let mut strategy = blue_green(true, None);
    strategy.analysis = Some(AnalysisSpec {
        max_error_rate: None,
        max_latency_p95_seconds: Some(0.1),
        ..analysis(2, 0)
    });
    let mut world = World::new(spec("1", 2, strategy));
    world.settle();
    world.measurement =
        Some(Measurement { latency_p95_seconds: Some(2.0), ..measurement(100, 0.0) });
    world.spec.model.version = "2".into();
    world.run_until("rolled back", |w| w.phase() == Phase::RolledBack);
    assert_eq!(world.service, Some(Some(Track::Blue)));
    assert_eq!(world.status.aborted_version.as_deref(), Some("2"));
    assert!(
        world.status.analysis.as_ref().unwrap().message.as_ref().unwrap().contains("p95 latency")
    );
}

/// Blue-green with pre-promotion analysis, the candidate measuring `p95` in every window.
fn pre_switch_run(p95: f64) -> World {
    let mut strategy = blue_green(true, None);
    if let Some(options) = strategy.blue_green.as_mut() {
        options.pre_promotion_analysis = Some(AnalysisStep { successful_windows: 2 });
    }
    strategy.analysis = Some(AnalysisSpec {
        max_error_rate: None,
        max_latency_p95_seconds: Some(0.1),
        ..analysis(2, 1)
    });
    let mut world = World::new(spec("1", 2, strategy));
    world.settle();
    world.measurement =
        Some(Measurement { latency_p95_seconds: Some(p95), ..measurement(100, 0.0) });
    world.spec.model.version = "2".into();
    world
}

#[test]
fn pre_promotion_analysis_failing_never_moves_the_service() {
    let mut world = pre_switch_run(2.0);
    world.run_until("rolled back", |w| {
        assert_eq!(w.service, Some(Some(Track::Blue)), "the Service never left blue");
        w.phase() == Phase::RolledBack
    });
    for _ in 0..20 {
        world.tick();
    }
    assert_eq!(world.service, Some(Some(Track::Blue)));
    assert_eq!(world.status.aborted_version.as_deref(), Some("2"));
    assert_eq!(world.status.analysis.as_ref().unwrap().failures, 2);
    assert_eq!(world.replicas(Track::Green).1, 0, "the failed color is removed");
}

#[test]
fn pre_promotion_analysis_passing_switches_after_the_windows() {
    let mut world = pre_switch_run(0.01);
    world.run_until("switch", |w| {
        let on_green = w.service == Some(Some(Track::Green));
        if on_green {
            let passed = w.status.analysis.as_ref().map_or(0, |a| a.passed_in_a_row);
            assert!(passed >= 2, "switched after {passed} passing windows");
        }
        on_green
    });
    world.settle();
    assert_eq!(world.status.stable_version.as_deref(), Some("2"));
}

#[test]
fn lost_status_is_recovered_from_the_children() {
    let mut world = World::new(spec("1", 3, blue_green(true, None)));
    world.settle();
    world.spec.model.version = "2".into();
    world.settle();
    world.status = ModelDeploymentStatus::default();
    let plan = world.tick();
    assert_eq!(plan.state.stable_version.as_deref(), Some("2"));
    assert_eq!(plan.service_track, Some(Track::Green));
}

#[test]
fn blue_green_aborts_a_color_that_never_gets_ready() {
    let mut strategy = blue_green(true, None);
    strategy.progress_deadline_seconds = 20;
    let mut world = World::new(spec("1", 3, strategy));
    world.settle();
    world.broken.insert("2".into());
    world.spec.model.version = "2".into();
    world.run_until("aborted", |w| {
        assert_eq!(w.service, Some(Some(Track::Blue)), "the Service never moves");
        w.phase() == Phase::RolledBack
    });
    world.run_until("green scaled down", |w| w.replicas(Track::Green).1 == 0);
    assert_eq!(world.replicas(Track::Blue), ("1".into(), 3, 3));
    assert_eq!(world.degraded(), ("True".into(), Reason::ProgressDeadlineAborted.to_string()));
    assert_eq!(outcomes(&world)[0], ("2".into(), RolloutOutcome::Aborted));
    assert_eq!(world.status.effective_weight, 0);
    // A new version rolls out normally.
    world.broken.clear();
    world.spec.model.version = "3".into();
    world.settle();
    assert_eq!(world.service, Some(Some(Track::Green)));
    assert_eq!(world.status.stable_version.as_deref(), Some("3"));
}
