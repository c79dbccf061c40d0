//! Canary rollouts in the simulated cluster: manual weights, steps, analysis, rollback.

use k8s_openapi::jiff::SignedDuration;
use modelship_crds::{CanarySpec, Phase, RolloutOutcome};

use super::{World, outcomes};
use crate::analysis::Measurement;
use crate::plan::Track;
use crate::plan::tests::fixtures::{
    analysis, analysis_step, canary, measurement, pause, set_weight, spec,
};
use crate::vocabulary::Reason;

#[test]
fn first_deploy_becomes_healthy() {
    let mut world = World::new(spec("1", 3, canary(Some(10), None)));
    world.settle();
    assert_eq!(world.replicas(Track::Stable), ("1".into(), 3, 3));
    assert_eq!(world.status.stable_version.as_deref(), Some("1"));
    assert_eq!(world.status.ready_replicas, 3);
    assert!(!world.tracks.contains_key(&Track::Canary));
    assert_eq!(world.status.selector.as_deref(), Some("modelship.io/name=fraud"));
}

#[test]
fn manual_canary_weight_then_promotion() {
    let mut world = World::new(spec("1", 10, canary(Some(10), None)));
    world.settle();
    world.spec.model.version = "2".into();
    world.run_until("paused at 10%", |w| w.phase() == Phase::Paused);
    assert_eq!(world.replicas(Track::Canary), ("2".into(), 1, 1));
    assert_eq!(world.replicas(Track::Stable), ("1".into(), 9, 9));
    assert_eq!(world.status.canary_weight, 10);
    assert_eq!(world.status.candidate_version.as_deref(), Some("2"));

    world.spec.strategy.canary = Some(CanarySpec { weight: Some(41), ..CanarySpec::default() });
    world.run_until("paused at 41%", |w| w.phase() == Phase::Paused);
    assert_eq!(world.replicas(Track::Canary).1, 4);
    assert_eq!(world.replicas(Track::Stable).1, 6);

    world.spec.strategy.canary = Some(CanarySpec { weight: Some(100), ..CanarySpec::default() });
    world.settle();
    assert_eq!(world.replicas(Track::Stable), ("2".into(), 10, 10));
    assert!(!world.tracks.contains_key(&Track::Canary), "the canary is removed after promotion");
    assert_eq!(world.status.stable_version.as_deref(), Some("2"));
    assert_eq!(world.status.candidate_version, None);
    assert_eq!(outcomes(&world), vec![("2".into(), RolloutOutcome::Promoted)]);
    assert!(world.events.contains(&Reason::Promoted));
}

#[test]
fn steps_with_timed_pause_and_approval() {
    let steps = vec![set_weight(25), pause(Some(5)), set_weight(50), pause(None), set_weight(75)];
    let mut world = World::new(spec("1", 4, canary(None, Some(steps))));
    world.settle();
    world.spec.model.version = "2".into();
    world.run_until("timed pause", |w| w.status.current_step == Some(1));
    assert_eq!(world.replicas(Track::Canary).1, 1);
    let pause_started = world.now;
    world.run_until("step 2", |w| w.status.current_step == Some(2));
    assert!(
        world.now.duration_since(pause_started) >= SignedDuration::from_secs(4),
        "the pause lasted"
    );
    world.run_until("approval pause", |w| w.status.current_step == Some(3));
    for _ in 0..20 {
        world.tick();
    }
    assert_eq!(world.phase(), Phase::Paused, "an indefinite pause waits");
    assert_eq!(world.status.current_step, Some(3));
    assert_eq!(world.replicas(Track::Canary).1, 2);
    // Approving another version does nothing.
    world.spec.strategy.approved_version = Some("9".into());
    for _ in 0..5 {
        world.tick();
    }
    assert_eq!(world.status.current_step, Some(3));
    world.spec.strategy.approved_version = Some("2".into());
    world.settle();
    assert_eq!(world.replicas(Track::Stable), ("2".into(), 4, 4));
    assert_eq!(world.status.stable_version.as_deref(), Some("2"));
    assert!(world.count(Reason::StepCompleted) >= 5);
}

#[test]
fn reverting_the_version_restores_stable_capacity_first() {
    let mut world = World::new(spec("1", 4, canary(Some(75), None)));
    world.settle();
    world.spec.model.version = "2".into();
    world.run_until("paused at 75%", |w| w.phase() == Phase::Paused);
    assert_eq!(world.replicas(Track::Canary).1, 3);
    assert_eq!(world.replicas(Track::Stable).1, 1);
    world.spec.model.version = "1".into();
    // The first plan grows stable and keeps every canary pod.
    let plan = world.tick();
    assert_eq!(plan.desired(Track::Stable).unwrap().replicas, 4);
    assert_eq!(plan.desired(Track::Canary).unwrap().replicas, 3);
    world.settle();
    assert!(!world.tracks.contains_key(&Track::Canary));
    assert_eq!(world.replicas(Track::Stable), ("1".into(), 4, 4));
    assert_eq!(outcomes(&world), vec![("2".into(), RolloutOutcome::Abandoned)]);
    assert_eq!(world.status.canary_weight, 0);
}

#[test]
fn a_new_version_supersedes_the_candidate() {
    let steps = vec![set_weight(25), pause(None)];
    let mut world = World::new(spec("1", 4, canary(None, Some(steps))));
    world.settle();
    world.spec.model.version = "2".into();
    world.run_until("paused", |w| w.phase() == Phase::Paused);
    world.spec.model.version = "3".into();
    world.run_until("paused on 3", |w| {
        w.phase() == Phase::Paused && w.status.candidate_version.as_deref() == Some("3")
    });
    assert_eq!(world.replicas(Track::Canary), ("3".into(), 1, 1));
    assert_eq!(world.replicas(Track::Stable), ("1".into(), 3, 3));
    assert_eq!(world.status.current_step, Some(1), "steps restarted and reached the pause");
    assert_eq!(outcomes(&world), vec![("2".into(), RolloutOutcome::Superseded)]);
    assert_eq!(world.status.stable_version.as_deref(), Some("1"), "2 was never promoted");
}

#[test]
fn failed_analysis_rolls_back_and_is_not_retried() {
    let mut strategy = canary(Some(50), None);
    strategy.analysis = Some(analysis(2, 1));
    let mut world = World::new(spec("1", 4, strategy));
    world.settle();
    world.measurement = Some(measurement(100, 0.5));
    world.spec.model.version = "2".into();
    world.run_until("rolled back", |w| w.phase() == Phase::RolledBack);
    assert_eq!(world.status.aborted_version.as_deref(), Some("2"));
    assert_eq!(world.status.analysis.as_ref().unwrap().failures, 2);
    for _ in 0..20 {
        world.tick();
    }
    assert_eq!(world.phase(), Phase::RolledBack, "stays rolled back while the spec names 2");
    assert!(!world.tracks.contains_key(&Track::Canary));
    assert_eq!(world.replicas(Track::Stable), ("1".into(), 4, 4));
    assert!(world.events.contains(&Reason::AnalysisFailed));
    assert_eq!(world.degraded(), ("True".into(), Reason::RolledBack.to_string()));
    // Rolling forward clears it.
    world.measurement = None;
    world.spec.strategy.analysis = None;
    world.spec.model.version = "3".into();
    world.spec.strategy.canary = Some(CanarySpec { weight: Some(100), ..CanarySpec::default() });
    world.settle();
    assert_eq!(world.status.stable_version.as_deref(), Some("3"));
    assert_eq!(world.status.aborted_version, None);
}

#[test]
fn passing_analysis_is_required_before_promotion() {
    let mut strategy = canary(Some(100), None);
    strategy.analysis = Some(analysis(3, 0));
    let mut world = World::new(spec("1", 2, strategy));
    world.settle();
    // Too few requests to judge: inconclusive.
    world.measurement = Some(measurement(3, 0.0));
    world.spec.model.version = "2".into();
    for _ in 0..30 {
        world.tick();
    }
    assert_eq!(world.status.stable_version.as_deref(), Some("1"), "inconclusive never promotes");
    assert!(world.status.analysis.as_ref().unwrap().inconclusive > 0);
    world.measurement = Some(Measurement { requests: 500, ..world.measurement.clone().unwrap() });
    world.settle();
    assert_eq!(world.status.stable_version.as_deref(), Some("2"));
}

#[test]
fn an_analysis_step_holds_the_weight_until_windows_pass_in_a_row() {
    let steps = vec![set_weight(25), analysis_step(2), set_weight(75)];
    let mut strategy = canary(None, Some(steps));
    strategy.analysis = Some(analysis(3, 5));
    let mut world = World::new(spec("1", 4, strategy));
    world.settle();
    world.measurement = Some(measurement(3, 0.0));
    world.spec.model.version = "2".into();
    for _ in 0..30 {
        world.tick();
    }
    // Inconclusive windows never pass the step.
    assert_eq!((world.replicas(Track::Stable).1, world.replicas(Track::Canary).1), (3, 1));
    assert_eq!(world.status.current_step, Some(1));
    assert_eq!(world.phase(), Phase::Paused);

    // One pass, then a failure: the count starts again.
    world.measurement = Some(measurement(100, 0.0));
    world.run_until("one window passed", |w| {
        w.status.analysis.as_ref().is_some_and(|a| a.passed_in_a_row == 1)
    });
    world.measurement = Some(measurement(100, 0.5));
    world.run_until("a window failed", |w| {
        w.status.analysis.as_ref().is_some_and(|a| a.failures == 1 && a.passed_in_a_row == 0)
    });
    assert_eq!(world.status.current_step, Some(1), "still at the analysis step");

    world.measurement = Some(measurement(100, 0.0));
    world.settle();
    assert_eq!(world.status.stable_version.as_deref(), Some("2"));
    assert_eq!(world.status.aborted_version, None);
}

#[test]
fn autoscaler_changes_keep_the_split() {
    let mut world = World::new(spec("1", 4, canary(Some(25), None)));
    world.settle();
    world.spec.model.version = "2".into();
    world.run_until("paused", |w| w.phase() == Phase::Paused);
    assert_eq!((world.replicas(Track::Stable).1, world.replicas(Track::Canary).1), (3, 1));
    world.spec.replicas = 8;
    world.run_until("paused at 8", |w| w.phase() == Phase::Paused);
    assert_eq!((world.replicas(Track::Stable).1, world.replicas(Track::Canary).1), (6, 2));
    world.spec.replicas = 4;
    world.run_until("paused at 4", |w| w.phase() == Phase::Paused);
    assert_eq!((world.replicas(Track::Stable).1, world.replicas(Track::Canary).1), (3, 1));
    assert_eq!(world.status.replicas, 4);
}

#[test]
fn a_broken_version_is_aborted_at_the_deadline_and_retried_by_approval() {
    let mut strategy = canary(Some(10), None);
    strategy.progress_deadline_seconds = 30;
    let mut world = World::new(spec("1", 5, strategy));
    world.settle();
    world.broken.insert("2".into());
    world.spec.model.version = "2".into();
    let started = world.now;
    world.run_until("aborted", |w| w.phase() == Phase::RolledBack);
    let aborted_at = world.now;
    assert!(aborted_at.duration_since(started) >= SignedDuration::from_secs(30), "not before");
    assert!(aborted_at.duration_since(started) <= SignedDuration::from_secs(33), "at the deadline");
    assert_eq!(world.degraded(), ("True".into(), Reason::ProgressDeadlineAborted.to_string()));
    assert_eq!(world.status.aborted_version.as_deref(), Some("2"));
    world.run_until("the canary removed", |w| !w.tracks.contains_key(&Track::Canary));
    assert_eq!(world.replicas(Track::Stable), ("1".into(), 5, 5), "stable untouched");
    assert_eq!(world.count(Reason::ProgressDeadlineAborted), 1);
    assert_eq!(world.count(Reason::ProgressDeadlineExceeded), 0, "aborted, not just Degraded");
    let record = &world.status.history[0];
    assert_eq!((record.version.as_str(), record.outcome), ("2", RolloutOutcome::Aborted));
    assert!(record.started_at.is_some() && record.ready_at.is_none());
    for _ in 0..10 {
        world.tick();
    }
    assert_eq!(world.phase(), Phase::RolledBack, "not retried by itself");
    // Fixed and approved: the same version rolls out again.
    world.broken.clear();
    world.spec.strategy.approved_version = Some("2".into());
    world.run_until("paused at 10%", |w| w.phase() == Phase::Paused);
    assert_eq!(world.status.aborted_version, None);
    assert_eq!(world.replicas(Track::Canary), ("2".into(), 1, 1));
    world.spec.strategy.canary = Some(CanarySpec { weight: Some(100), ..CanarySpec::default() });
    world.settle();
    assert_eq!(world.replicas(Track::Stable), ("2".into(), 5, 5));
    assert_eq!(outcomes(&world)[0], ("2".into(), RolloutOutcome::Promoted));
}

#[test]
fn without_abort_a_broken_version_is_contained_and_rolled_forward() {
    let mut strategy = canary(Some(10), None);
    strategy.progress_deadline_seconds = 30;
    strategy.abort_on_deadline = Some(false);
    let mut world = World::new(spec("1", 5, strategy));
    world.settle();
    world.broken.insert("2".into());
    world.spec.model.version = "2".into();
    world.run_until("degraded", |w| w.phase() == Phase::Degraded);
    assert_eq!(world.replicas(Track::Stable), ("1".into(), 5, 5), "stable untouched");
    assert!(world.replicas(Track::Canary).1 <= 1);
    assert_eq!(world.degraded().1, Reason::ProgressDeadlineExceeded.to_string());
    assert!(world.events.contains(&Reason::ProgressDeadlineExceeded));
    world.spec.model.version = "3".into();
    world.spec.strategy.canary = Some(CanarySpec { weight: Some(100), ..CanarySpec::default() });
    world.settle();
    assert_eq!(world.replicas(Track::Stable), ("3".into(), 5, 5));
    assert!(!world.tracks.contains_key(&Track::Canary));
}

#[test]
fn history_says_how_long_each_step_took() {
    let mut world = World::new(spec("1", 4, canary(Some(50), None)));
    world.settle();
    world.spec.model.version = "2".into();
    let started = world.now;
    world.run_until("paused at 50%", |w| w.phase() == Phase::Paused);
    world.spec.strategy.canary = Some(CanarySpec { weight: Some(100), ..CanarySpec::default() });
    world.settle();
    let record = world.status.history[0].clone();
    let at = |t: &Option<String>| -> k8s_openapi::jiff::Timestamp {
        t.as_deref().expect("recorded").parse().expect("a time")
    };
    let (start, ready) = (at(&record.started_at), at(&record.ready_at));
    let finished: k8s_openapi::jiff::Timestamp = record.finished_at.parse().unwrap();
    assert_eq!(start, started);
    assert!(start < ready && ready < finished, "{record:?}");
    assert!(
        world.status.candidate_started_at.is_none() && world.status.candidate_ready_at.is_none()
    );
}

#[test]
fn one_replica_surges_a_canary_pod_and_never_loses_its_stable_pod() {
    for weight in [1, 10, 50, 90] {
        let mut world = World::new(spec("1", 1, canary(Some(weight), None)));
        world.settle();
        world.spec.model.version = "2".into();
        world.run_until("paused", |w| w.phase() == Phase::Paused);
        assert_eq!(world.replicas(Track::Stable), ("1".into(), 1, 1), "weight {weight}");
        assert_eq!(world.replicas(Track::Canary), ("2".into(), 1, 1), "weight {weight}");
        assert_eq!(world.status.effective_weight, 50, "weight {weight}");
        let warned = world.count(Reason::WeightNotReachable);
        assert_eq!(warned, usize::from(weight != 50), "weight {weight}");
        world.spec.strategy.canary =
            Some(CanarySpec { weight: Some(100), ..CanarySpec::default() });
        world.settle();
        assert_eq!(world.replicas(Track::Stable), ("2".into(), 1, 1));
        assert!(!world.tracks.contains_key(&Track::Canary));
    }
}

#[test]
fn effective_weight_follows_ready_pods() {
    let mut world = World::new(spec("1", 4, canary(Some(10), None)));
    world.settle();
    world.spec.model.version = "2".into();
    world.run_until("paused", |w| w.phase() == Phase::Paused);
    // Four replicas at 10 %: one surge pod, 1 of 5 ready pods.
    assert_eq!((world.replicas(Track::Stable).1, world.replicas(Track::Canary).1), (4, 1));
    assert_eq!((world.status.canary_weight, world.status.effective_weight), (10, 20));
    assert_eq!(world.count(Reason::WeightNotReachable), 0, "20 % is within the tolerance");
}

#[test]
fn timed_pause_survives_a_restart() {
    // The pause start is stored in status; a new operator computes the same end time.
    let steps = vec![set_weight(50), pause(Some(60))];
    let mut world = World::new(spec("1", 2, canary(None, Some(steps))));
    world.settle();
    world.spec.model.version = "2".into();
    world.run_until("pausing", |w| w.status.current_step == Some(1));
    let started = world.status.step_started_at.clone();
    let plan = world.tick();
    assert_eq!(world.status.step_started_at, started);
    let wait = plan.requeue_after.expect("wakes up when the pause ends");
    assert!(
        wait <= std::time::Duration::from_secs(60) && wait >= std::time::Duration::from_secs(55)
    );
}

#[test]
fn setting_only_the_version_back_restores_the_stable_model_file() {
    let mut world = World::new(spec("1", 2, canary(Some(50), None)));
    world.spec.model.uri = "file:///models/1.onnx".into();
    world.settle();
    world.spec.model.version = "2".into();
    world.spec.model.uri = "file:///models/2.onnx".into();
    world.run_until("paused", |w| w.phase() == Phase::Paused);
    let plan = world.last_plan.clone().unwrap();
    assert_eq!(plan.desired(Track::Canary).unwrap().source.uri, "file:///models/2.onnx");
    assert_eq!(plan.desired(Track::Stable).unwrap().source.uri, "file:///models/1.onnx");

    // Only the version goes back; the spec still names the candidate's file.
    world.spec.model.version = "1".into();
    world.run_until("canary drained", |w| !w.tracks.contains_key(&Track::Canary));
    let plan = world.tick();
    assert_eq!(plan.desired(Track::Stable).unwrap().source.uri, "file:///models/1.onnx");
    assert_eq!(world.phase(), Phase::Degraded);
    assert_eq!(world.degraded().1, Reason::ModelSourceMismatch.to_string());
    assert!(world.events.contains(&Reason::ModelSourceMismatch));

    world.spec.model.uri = "file:///models/1.onnx".into();
    world.settle();
    assert_eq!(world.status.stable_model.as_ref().unwrap().uri, "file:///models/1.onnx");

    // A promotion records the candidate's file.
    world.spec.model.version = "3".into();
    world.spec.model.uri = "file:///models/3.onnx".into();
    world.spec.strategy.canary = Some(CanarySpec { weight: Some(100), ..CanarySpec::default() });
    world.settle();
    assert_eq!(world.status.stable_model.as_ref().unwrap().uri, "file:///models/3.onnx");
}
