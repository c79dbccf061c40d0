//! Rollouts driven through a small simulated cluster: Deployments whose pods become ready a
//! few at a time (maxUnavailable 0), a Service selector and its endpoints, and a clock. Each
//! tick plans, applies the plan to the world, and checks the invariants that must hold at
//! every instant of every rollout.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use modelship_crds::{
    AnalysisSpec, BlueGreenSpec, CanarySpec, CanaryStep, ModelDeploymentSpec,
    ModelDeploymentStatus, ModelSpec, PauseStep, Phase, RolloutOutcome, StrategySpec, StrategyType,
};

use super::*;
use crate::status::{self, StatusInput};

#[derive(Clone, Debug, Default)]
struct SimTrack {
    version: String,
    replicas: i32,
    /// Ready pods from the previous template (kept until replaced: maxUnavailable 0).
    old_ready: i32,
    /// Ready pods from the current template.
    new_ready: i32,
}

struct World {
    name: String,
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    tracks: BTreeMap<Track, SimTrack>,
    service: Option<Option<Track>>,
    now: Timestamp,
    /// Pods that become ready per track per tick.
    rate: i32,
    /// Versions whose pods never become ready.
    broken: BTreeSet<String>,
    measurement: Option<Measurement>,
    events: Vec<&'static str>,
    /// Set once the first rollout completed: from then on capacity must never dip.
    established: bool,
    /// Ready pods after the previous tick.
    ready_before: i32,
    last_plan: Option<Plan>,
}

impl World {
    fn new(spec: ModelDeploymentSpec) -> World {
        World {
            name: "fraud".into(),
            spec,
            status: ModelDeploymentStatus::default(),
            tracks: BTreeMap::new(),
            service: None,
            now: "2026-01-01T00:00:00Z".parse().unwrap(),
            rate: 1,
            broken: BTreeSet::new(),
            measurement: None,
            events: Vec::new(),
            established: false,
            ready_before: 0,
            last_plan: None,
        }
    }

    fn observed(&self) -> Observed {
        let tracks = self
            .tracks
            .iter()
            .map(|(t, s)| {
                let state = TrackState {
                    version: s.version.clone(),
                    replicas: s.replicas,
                    ready: s.old_ready + s.new_ready,
                    rolled_out: s.old_ready == 0,
                };
                (*t, state)
            })
            .collect();
        let selected: Vec<Track> = match self.service {
            Some(Some(t)) => vec![t],
            Some(None) => Track::ALL.to_vec(),
            None => vec![],
        };
        let mut endpoints = Vec::new();
        for track in selected {
            if let Some(s) = self.tracks.get(&track) {
                for i in 0..(s.old_ready + s.new_ready) {
                    endpoints.push(Endpoint {
                        pod: format!("{}-{}-abc-{i}", self.name, track.as_str()),
                        ready: true,
                    });
                }
            }
        }
        Observed { tracks, service_track: self.service, endpoints }
    }

    /// Plan once, apply the plan, let pods progress one step, advance the clock.
    fn tick(&mut self) -> Plan {
        let observed = self.observed();
        let measurement = analysis_due(&self.spec, &self.status, &observed, self.now)
            .and(self.measurement.clone());
        let plan = plan(&Input {
            name: &self.name,
            spec: &self.spec,
            status: &self.status,
            observed: &observed,
            measurement,
            now: self.now,
        });
        self.status = status::compute(&StatusInput {
            name: &self.name,
            generation: Some(1),
            strategy: self.spec.strategy.type_,
            total: self.spec.replicas,
            previous: &self.status,
            plan: &plan,
            observed: &observed,
            problem: None,
            now: self.now,
        });
        self.events.extend(plan.events.iter().map(|e| e.reason));
        self.apply(&plan);
        self.check_invariants(&plan);
        self.now += SignedDuration::from_secs(1);
        self.last_plan = Some(plan.clone());
        plan
    }

    fn apply(&mut self, plan: &Plan) {
        for desired in &plan.tracks {
            if desired.frozen {
                let running = self.tracks.get(&desired.track).map(|t| t.version.as_str());
                assert_eq!(running, Some(desired.version.as_str()), "a frozen track must exist");
            }
            let entry = self.tracks.entry(desired.track).or_default();
            if entry.version != desired.version {
                entry.old_ready += entry.new_ready;
                entry.new_ready = 0;
                entry.version = desired.version.clone();
            }
            entry.replicas = desired.replicas;
            // Scaling down removes pods at once (old ones first).
            let excess = (entry.old_ready + entry.new_ready - entry.replicas).max(0);
            let from_old = excess.min(entry.old_ready);
            entry.old_ready -= from_old;
            entry.new_ready -= excess - from_old;
        }
        for track in &plan.remove {
            self.tracks.remove(track);
        }
        self.service = Some(plan.service_track);
        // Pods progress: new ones become ready, then replace old ones.
        for track in self.tracks.values_mut() {
            if !self.broken.contains(&track.version) {
                track.new_ready = (track.new_ready + self.rate).min(track.replicas);
            }
            track.old_ready = track.old_ready.min((track.replicas - track.new_ready).max(0));
            if track.new_ready >= track.replicas {
                track.old_ready = 0;
            }
        }
    }

    fn check_invariants(&mut self, plan: &Plan) {
        let total = self.spec.replicas;
        let observed = self.observed();
        let ready_selected = observed.endpoints.iter().filter(|e| e.ready).count() as i32;
        if self.established && total > 0 {
            assert!(
                ready_selected >= 1,
                "the Service selects no ready pod at {}: {:?}",
                self.now,
                self.tracks
            );
        }
        let ready: i32 = self.tracks.values().map(|t| t.old_ready + t.new_ready).sum();
        if self.established && self.spec.strategy.type_ == StrategyType::Canary {
            let floor = total.min(self.ready_before);
            assert!(
                ready >= floor,
                "ready pods dropped to {ready}, below {floor}, at {}: {:?}",
                self.now,
                self.tracks
            );
        }
        self.ready_before = ready;
        if plan.stage == Stage::Complete {
            self.established = true;
        }
        for desired in &plan.tracks {
            assert!(desired.replicas >= 0 && desired.replicas <= total.max(0) * 2 + 1);
        }
    }

    /// Tick until the phase is one of `phases` (and the plan is not mid-transition), or panic.
    fn run_until(&mut self, what: &str, mut done: impl FnMut(&World) -> bool) {
        for _ in 0..500 {
            self.tick();
            if done(self) {
                return;
            }
        }
        panic!("never reached {what}; status {:#?}\ntracks {:#?}", self.status, self.tracks);
    }

    fn phase(&self) -> Phase {
        self.status.phase.expect("phase is always set")
    }

    fn replicas(&self, track: Track) -> (String, i32, i32) {
        let t = self.tracks.get(&track).cloned().unwrap_or_default();
        (t.version, t.replicas, t.old_ready + t.new_ready)
    }

    fn settle(&mut self) {
        self.run_until("Healthy", |w| w.phase() == Phase::Healthy);
    }
}

fn spec(version: &str, replicas: i32, strategy: StrategySpec) -> ModelDeploymentSpec {
    ModelDeploymentSpec {
        model: ModelSpec {
            name: None,
            version: version.into(),
            uri: "file:///models/model.onnx".into(),
            format: Default::default(),
            reference_data: None,
            sha256: None,
        },
        replicas,
        serving: None,
        autoscaling: None,
        strategy,
    }
}

fn canary(weight: Option<i32>, steps: Option<Vec<CanaryStep>>) -> StrategySpec {
    StrategySpec {
        type_: StrategyType::Canary,
        canary: Some(CanarySpec { weight, steps }),
        ..StrategySpec::default()
    }
}

fn blue_green(auto_promote: bool, preview_replicas: Option<i32>) -> StrategySpec {
    StrategySpec {
        type_: StrategyType::BlueGreen,
        blue_green: Some(BlueGreenSpec {
            auto_promote,
            preview_service: true,
            preview_replicas,
            scale_down_delay_seconds: 10,
        }),
        ..StrategySpec::default()
    }
}

fn set_weight(w: i32) -> CanaryStep {
    CanaryStep { set_weight: Some(w), pause: None }
}

fn pause(seconds: Option<i32>) -> CanaryStep {
    CanaryStep { set_weight: None, pause: Some(PauseStep { seconds }) }
}

fn outcomes(world: &World) -> Vec<(String, RolloutOutcome)> {
    world.status.history.iter().map(|r| (r.version.clone(), r.outcome)).collect()
}

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

    world.spec.strategy.canary = Some(CanarySpec { weight: Some(41), steps: None });
    world.run_until("paused at 41%", |w| w.phase() == Phase::Paused);
    assert_eq!(world.replicas(Track::Canary).1, 4);
    assert_eq!(world.replicas(Track::Stable).1, 6);

    world.spec.strategy.canary = Some(CanarySpec { weight: Some(100), steps: None });
    world.settle();
    assert_eq!(world.replicas(Track::Stable), ("2".into(), 10, 10));
    assert!(!world.tracks.contains_key(&Track::Canary), "the canary is removed after promotion");
    assert_eq!(world.status.stable_version.as_deref(), Some("2"));
    assert_eq!(world.status.candidate_version, None);
    assert_eq!(outcomes(&world), vec![("2".into(), RolloutOutcome::Promoted)]);
    assert!(world.events.contains(&"Promoted"));
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
    assert!(world.events.iter().filter(|e| **e == "StepCompleted").count() >= 5);
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
    strategy.analysis = Some(AnalysisSpec {
        interval_seconds: 2,
        failure_limit: 1,
        min_requests: 10,
        max_error_rate: Some(0.05),
        max_latency_p95_seconds: None,
        max_drift_score: None,
    });
    let mut world = World::new(spec("1", 4, strategy));
    world.settle();
    world.measurement = Some(Measurement {
        requests: 100,
        error_rate: Some(0.5),
        latency_p95_seconds: Some(0.01),
        drift_score: None,
        unreachable_pods: 0,
    });
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
    assert!(world.events.contains(&"AnalysisFailed"));
    let degraded = world.status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "RolledBack"));
    // Rolling forward clears it.
    world.measurement = None;
    world.spec.strategy.analysis = None;
    world.spec.model.version = "3".into();
    world.spec.strategy.canary = Some(CanarySpec { weight: Some(100), steps: None });
    world.settle();
    assert_eq!(world.status.stable_version.as_deref(), Some("3"));
    assert_eq!(world.status.aborted_version, None);
}

#[test]
fn passing_analysis_is_required_before_promotion() {
    let mut strategy = canary(Some(100), None);
    strategy.analysis = Some(AnalysisSpec {
        interval_seconds: 3,
        failure_limit: 0,
        min_requests: 10,
        max_error_rate: Some(0.05),
        max_latency_p95_seconds: None,
        max_drift_score: None,
    });
    let mut world = World::new(spec("1", 2, strategy));
    world.settle();
    world.measurement = Some(Measurement {
        requests: 3,
        error_rate: Some(0.0),
        latency_p95_seconds: None,
        drift_score: None,
        unreachable_pods: 0,
    });
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
fn a_broken_version_is_contained_and_rolled_forward() {
    let mut strategy = canary(Some(10), None);
    strategy.progress_deadline_seconds = 30;
    let mut world = World::new(spec("1", 5, strategy));
    world.settle();
    world.broken.insert("2".into());
    world.spec.model.version = "2".into();
    world.run_until("degraded", |w| w.phase() == Phase::Degraded);
    assert_eq!(world.replicas(Track::Stable), ("1".into(), 5, 5), "stable untouched");
    assert!(world.replicas(Track::Canary).1 <= 1);
    let degraded = world.status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.reason, "ProgressDeadlineExceeded");
    assert!(world.events.contains(&"ProgressDeadlineExceeded"));
    world.spec.model.version = "3".into();
    world.spec.strategy.canary = Some(CanarySpec { weight: Some(100), steps: None });
    world.settle();
    assert_eq!(world.replicas(Track::Stable), ("3".into(), 5, 5));
    assert!(!world.tracks.contains_key(&Track::Canary));
}

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
    assert_eq!(world.events.iter().filter(|e| **e == "SwitchedService").count(), 1);
    assert!(world.events.contains(&"TrafficSwitched"));
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
        interval_seconds: 2,
        failure_limit: 0,
        min_requests: 10,
        max_error_rate: None,
        max_latency_p95_seconds: Some(0.1),
        max_drift_score: None,
    });
    let mut world = World::new(spec("1", 2, strategy));
    world.settle();
    world.measurement = Some(Measurement {
        requests: 100,
        error_rate: Some(0.0),
        latency_p95_seconds: Some(2.0),
        drift_score: None,
        unreachable_pods: 0,
    });
    world.spec.model.version = "2".into();
    world.run_until("rolled back", |w| w.phase() == Phase::RolledBack);
    assert_eq!(world.service, Some(Some(Track::Blue)));
    assert_eq!(world.status.aborted_version.as_deref(), Some("2"));
    assert!(
        world.status.analysis.as_ref().unwrap().message.as_ref().unwrap().contains("p95 latency")
    );
}

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
    let degraded = world.status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.reason, "ModelSourceMismatch");
    assert!(world.events.contains(&"ModelSourceMismatch"));

    world.spec.model.uri = "file:///models/1.onnx".into();
    world.settle();
    assert_eq!(world.status.stable_model.as_ref().unwrap().uri, "file:///models/1.onnx");

    // A promotion records the candidate's file.
    world.spec.model.version = "3".into();
    world.spec.model.uri = "file:///models/3.onnx".into();
    world.spec.strategy.canary = Some(CanarySpec { weight: Some(100), steps: None });
    world.settle();
    assert_eq!(world.status.stable_model.as_ref().unwrap().uri, "file:///models/3.onnx");
}
