//! Rollouts driven through a small simulated cluster: Deployments whose pods become ready a
//! few at a time (maxUnavailable 0), a Service selector and its endpoints, and a clock. Each
//! tick plans, applies the plan to the world, and checks the invariants that must hold at
//! every instant of every rollout. One scenario file per strategy.

mod any_strategy;
mod bluegreen;
mod canary;
mod rolling;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use modelship_crds::{
    ModelDeploymentSpec, ModelDeploymentStatus, Phase, RolloutOutcome, StrategyType,
};

use super::fixtures::{NAME, start};
use crate::analysis::Measurement;
use crate::plan::{Endpoint, Input, Observed, Plan, Stage, Track, TrackState, analysis_due, plan};
use crate::status::{self, StatusInput};
use crate::vocabulary::{ConditionType, Reason};

#[derive(Clone, Debug, Default)]
struct SimTrack {
    version: String,
    replicas: i32,
    /// Ready pods from the previous template (kept until replaced: maxUnavailable 0).
    old_ready: i32,
    /// Ready pods from the current template.
    new_ready: i32,
}

pub struct World {
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
    events: Vec<Reason>,
    /// Set once the first rollout completed: from then on capacity must never dip.
    established: bool,
    /// Ready pods after the previous tick.
    ready_before: i32,
    last_plan: Option<Plan>,
}

impl World {
    fn new(spec: ModelDeploymentSpec) -> World {
        World {
            name: NAME.into(),
            spec,
            status: ModelDeploymentStatus::default(),
            tracks: BTreeMap::new(),
            service: None,
            now: start(),
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

    /// Tick until `done` holds, or panic.
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

    /// The Degraded condition: its status and reason.
    fn degraded(&self) -> (String, String) {
        let degraded = self
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Degraded.as_str())
            .expect("Degraded is always written");
        (degraded.status.clone(), degraded.reason.clone())
    }

    fn count(&self, reason: Reason) -> usize {
        self.events.iter().filter(|e| **e == reason).count()
    }
}

fn outcomes(world: &World) -> Vec<(String, RolloutOutcome)> {
    world.status.history.iter().map(|r| (r.version.clone(), r.outcome)).collect()
}
