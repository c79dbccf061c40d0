//! The desired set by table: each row is a plan and what runs, and the writes that follow,
//! one line per object (what is applied, in order, then what is deleted).
// Each table is a list of tuples, one row per case; naming every row type would hide them.
#![allow(clippy::type_complexity)]

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use modelship_crds::DisruptionBudgetSpec;

use super::*;
use crate::desired::{deployment, pdb};
use crate::observe::template_version;
use crate::plan::{DesiredTrack, RolloutState, Stage, Track};

/// The builders' model, with or without autoscaling.
fn model(autoscaling: bool) -> ModelDeployment {
    let mut md = crate::desired::tests::model();
    if !autoscaling {
        md.spec.autoscaling = None;
    }
    md
}

fn defaults() -> Defaults {
    Defaults { serving_image: "serving:new".into() }
}

fn track(track: Track, version: &str, replicas: i32, frozen: bool) -> DesiredTrack {
    let source = model(false).spec.model.source();
    DesiredTrack { track, version: version.into(), replicas, frozen, source }
}

fn plan(tracks: Vec<DesiredTrack>) -> Plan {
    Plan {
        tracks,
        remove: Vec::new(),
        service_track: None,
        preview_track: None,
        state: RolloutState::default(),
        stage: Stage::Complete,
        events: Vec::new(),
        requeue_after: None,
    }
}

/// A Deployment as the cluster runs it: built for `version` from an older image.
fn running(on: Track, version: &str, replicas: i32) -> Arc<Deployment> {
    let old = Defaults { serving_image: "serving:old".into() };
    Arc::new(deployment(&model(false), &track(on, version, replicas, false), &old))
}

fn describe(children: &Children) -> Vec<String> {
    let mut lines = Vec::new();
    for change in &children.deployments {
        let d = match change {
            DeploymentWrite::Apply(d) => d,
            DeploymentWrite::Resize { name, replicas } => {
                lines.push(format!("resize deployment {name} to {replicas}"));
                continue;
            }
        };
        let pod = d.spec.template.spec.as_ref().expect("a pod template");
        lines.push(format!(
            "apply deployment {} version {} replicas {} image {}",
            d.name_any(),
            template_version(d),
            d.spec.replicas.unwrap_or_default(),
            pod.containers[0].image.as_deref().unwrap_or_default(),
        ));
    }
    for s in &children.services {
        let selector = s.spec.as_ref().and_then(|s| s.selector.as_ref()).expect("a selector");
        let track =
            selector.get(modelship_crds::labels::TRACK).map_or("every track", String::as_str);
        lines.push(format!("apply service {} selecting {track}", s.name_any()));
    }
    if let Some(hpa) = &children.hpa {
        lines.push(format!("apply hpa {}", hpa.name_any()));
    }
    if let Some(pdb) = &children.pdb {
        lines.push(format!("apply pdb {}", pdb.name_any()));
    }
    for r in &children.removals {
        lines.push(format!("delete {} {}", r.kind.as_str(), r.name));
    }
    lines
}

#[test]
fn children_table() {
    let canary_at = |replicas| {
        let mut p = plan(vec![
            track(Track::Stable, "1", replicas, true),
            track(Track::Canary, "2", 1, false),
        ]);
        p.service_track = None;
        p
    };
    let stable_running = || Running {
        deployments: [(Track::Stable, running(Track::Stable, "1", 3))].into(),
        ..Running::default()
    };
    let blue_green = |preview: Option<Track>| {
        let mut p =
            plan(vec![track(Track::Blue, "1", 3, true), track(Track::Green, "2", 3, false)]);
        p.service_track = Some(Track::Blue);
        p.preview_track = preview;
        p
    };
    let with_preview_and_hpa = || Running {
        deployments: [(Track::Blue, running(Track::Blue, "1", 3))].into(),
        preview: Some(Arc::new(service(&model(false), Some(Track::Blue), true))),
        hpa: Some(Arc::new(hpa(&model(true)).expect("autoscaling"))),
        ..Running::default()
    };
    let budget_off = || {
        let mut md = model(false);
        md.spec.disruption_budget =
            Some(DisruptionBudgetSpec { enabled: false, ..DisruptionBudgetSpec::default() });
        md
    };
    let with_budget = || Running {
        deployments: [(Track::Stable, running(Track::Stable, "1", 3))].into(),
        pdb: Some(Arc::new(pdb(&model(false)).expect("on by default"))),
        ..Running::default()
    };
    let removing = {
        let mut p = plan(vec![track(Track::Stable, "2", 3, false)]);
        p.remove = vec![Track::Canary];
        p
    };
    #[rustfmt::skip]
    let table: Vec<(&str, bool, Plan, Running, Vec<&str>)> = vec![
        ("first deploy: everything from the spec", true,
            plan(vec![track(Track::Stable, "2", 3, false)]), Running::default(), vec![
            "apply deployment fraud-stable version 2 replicas 3 image serving:new",
            "apply service fraud selecting every track",
            "apply hpa fraud",
            "apply pdb fraud",
        ]),
        ("skip: a frozen track at its size is not written", false,
            canary_at(3), stable_running(), vec![
            "apply deployment fraud-canary version 2 replicas 1 image serving:new",
            "apply service fraud selecting every track",
            "apply pdb fraud",
        ]),
        ("resize: a frozen track keeps the template it runs", false,
            canary_at(2), stable_running(), vec![
            "resize deployment fraud-stable to 2",
            "apply deployment fraud-canary version 2 replicas 1 image serving:new",
            "apply service fraud selecting every track",
            "apply pdb fraud",
        ]),
        ("a frozen track that does not run yet is built", false,
            canary_at(2), Running::default(), vec![
            "apply deployment fraud-stable version 1 replicas 2 image serving:new",
            "apply deployment fraud-canary version 2 replicas 1 image serving:new",
            "apply service fraud selecting every track",
            "apply pdb fraud",
        ]),
        ("preview wanted: applied after the main Service", true,
            blue_green(Some(Track::Green)), with_preview_and_hpa(), vec![
            "apply deployment fraud-green version 2 replicas 3 image serving:new",
            "apply service fraud selecting blue",
            "apply service fraud-preview selecting green",
            "apply hpa fraud",
            "apply pdb fraud",
        ]),
        ("preview and HPA no longer wanted: deleted", false,
            blue_green(None), with_preview_and_hpa(), vec![
            "apply deployment fraud-green version 2 replicas 3 image serving:new",
            "apply service fraud selecting blue",
            "apply pdb fraud",
            "delete service fraud-preview",
            "delete hpa fraud",
        ]),
        ("nothing to delete when nothing runs", false,
            blue_green(None), Running::default(), vec![
            "apply deployment fraud-blue version 1 replicas 3 image serving:new",
            "apply deployment fraud-green version 2 replicas 3 image serving:new",
            "apply service fraud selecting blue",
            "apply pdb fraud",
        ]),
        ("removed tracks go last", false,
            removing, stable_running(), vec![
            "apply deployment fraud-stable version 2 replicas 3 image serving:new",
            "apply service fraud selecting every track",
            "apply pdb fraud",
            "delete deployment fraud-canary",
        ]),
    ];
    for (case, autoscaling, plan, running, expected) in table {
        let built = children(&model(autoscaling), &plan, &running, &defaults());
        assert_eq!(describe(&built), expected, "{case}");
    }
    // The budget turned off: never applied, and deleted when it runs.
    let off = children(&budget_off(), &canary_at(3), &with_budget(), &defaults());
    assert_eq!(
        describe(&off),
        [
            "apply deployment fraud-canary version 2 replicas 1 image serving:new",
            "apply service fraud selecting every track",
            "delete pdb fraud",
        ]
    );
    let off_and_gone = children(&budget_off(), &canary_at(3), &stable_running(), &defaults());
    assert!(describe(&off_and_gone).iter().all(|l| !l.contains("pdb")));
}

/// The budget is the same in every strategy and phase, and it covers every pod each of
/// them runs: the pods of every track the plan wants (canary, surge pod, both colors)
/// carry its selector's labels, and pods of another model do not.
#[test]
fn the_budget_covers_every_track_in_every_phase() {
    let phases: Vec<(&str, Vec<DesiredTrack>)> = vec![
        ("rolling update", vec![track(Track::Stable, "2", 3, false)]),
        (
            "canary at 25 %",
            vec![track(Track::Stable, "1", 3, true), track(Track::Canary, "2", 1, false)],
        ),
        (
            "canary with a surge pod",
            vec![track(Track::Stable, "1", 1, true), track(Track::Canary, "2", 1, false)],
        ),
        (
            "canary promoting",
            vec![track(Track::Stable, "2", 3, false), track(Track::Canary, "2", 1, true)],
        ),
        (
            "blue-green before the switch",
            vec![track(Track::Blue, "1", 3, true), track(Track::Green, "2", 3, false)],
        ),
        (
            "blue-green scale-down delay",
            vec![track(Track::Blue, "1", 3, true), track(Track::Green, "2", 3, false)],
        ),
        ("scaled to zero", vec![track(Track::Stable, "1", 0, false)]),
    ];
    let reference = pdb(&model(false)).expect("on by default");
    for (phase, tracks) in phases {
        let built = children(&model(false), &plan(tracks), &Running::default(), &defaults());
        let budget = built.pdb.clone().expect("a budget in every phase");
        assert_eq!(budget, reference, "{phase}: the same budget");
        let spec = budget.spec.expect("a spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)), "{phase}");
        assert_eq!(spec.unhealthy_pod_eviction_policy.as_deref(), Some("AlwaysAllow"));
        let selector = spec.selector.and_then(|s| s.match_labels).expect("match labels");
        for change in &built.deployments {
            let DeploymentWrite::Apply(deployment) = change else {
                panic!("{phase}: nothing runs, so every Deployment is built")
            };
            let labels = deployment.spec.template.metadata.as_ref().and_then(|m| m.labels.clone());
            let labels = labels.expect("pod labels");
            assert!(
                selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
                "{phase}: {} pods are outside the budget",
                deployment.name_any()
            );
        }
    }
    let other = crate::desired::tests::named("other");
    let other_pods = deployment(&other, &track(Track::Stable, "1", 1, false), &defaults());
    let labels = other_pods.spec.template.metadata.and_then(|m| m.labels).unwrap();
    let selector = reference.spec.and_then(|s| s.selector).and_then(|s| s.match_labels).unwrap();
    assert!(!selector.iter().all(|(k, v)| labels.get(k) == Some(v)), "another model's pods");
}

#[test]
fn a_frozen_track_at_another_size_is_resized_without_its_template() {
    // What the cache holds: the template's pod spec trimmed away.
    let mut cached = (*running(Track::Stable, "1", 3)).clone();
    cached.spec.template.spec = None;
    let built = children(
        &model(false),
        &plan(vec![track(Track::Stable, "1", 5, true)]),
        &Running { deployments: [(Track::Stable, Arc::new(cached))].into(), ..Running::default() },
        &defaults(),
    );
    let resize = DeploymentWrite::Resize { name: "fraud-stable".into(), replicas: 5 };
    assert_eq!(built.deployments, [resize]);
}
