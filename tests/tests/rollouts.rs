//! Rollouts on the real cluster, with the real operator binary and real serving pods on the
//! node: the scenarios of the reliability research, each with its pass criterion. Run by
//! `make test`.

use std::time::Duration;

use modelship_crds::{Phase, RolloutOutcome};
use modelship_tests::harness::{hold_for, wait_until, with_namespace};
use modelship_tests::models::{
    self, apply, condition, current, get, model, patch_spec, ready_pods, selector, split, track,
    wait_event_reasons, wait_for, wait_phase,
};
use modelship_tests::operator::OperatorProcess;
use modelship_tests::world::World;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn outcomes(md: &modelship_crds::ModelDeployment) -> Vec<(String, RolloutOutcome)> {
    md.status.iter().flat_map(|s| &s.history).map(|r| (r.version.clone(), r.outcome)).collect()
}

/// S4 (on the cluster) and S13: the split follows the weight and the total, also when the
/// autoscaler's /scale writes change the total mid-rollout; weight 100 promotes.
#[tokio::test(flavor = "multi_thread")]
async fn canary_split_follows_weight_and_scale_then_promotes() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy = json!({"type": "Canary", "canary": {"weight": 25}});
        apply(&client, &ns, model("fraud", "1", 4, strategy)).await;
        wait_phase(&client, &ns, "fraud", Phase::Healthy, T).await;
        assert_eq!(track(&client, &ns, "fraud", "stable").await, Some(("1".into(), 4, 4)));
        assert_eq!(selector(&client, &ns, "fraud").await.get("modelship.io/track"), None);

        patch_spec(&client, &ns, "fraud", json!({"model": {"version": "2"}})).await;
        let md = wait_phase(&client, &ns, "fraud", Phase::Paused, T).await;
        assert_eq!(split(&client, &ns, "fraud").await, (3, 1));
        let status = md.status.unwrap();
        assert_eq!((status.canary_weight, status.candidate_version.as_deref()), (25, Some("2")));
        assert_eq!(status.replicas, 4);

        models::scale(&client, &ns, "fraud", 8).await;
        wait_until(T, "split 6/2", async || split(&client, &ns, "fraud").await == (6, 2)).await;
        wait_phase(&client, &ns, "fraud", Phase::Paused, T).await;
        models::scale(&client, &ns, "fraud", 4).await;
        wait_until(T, "split 3/1", async || split(&client, &ns, "fraud").await == (3, 1)).await;
        let md = wait_phase(&client, &ns, "fraud", Phase::Paused, T).await;
        assert_eq!(md.status.unwrap().replicas, 4, "no runaway after scaling back");

        patch_spec(&client, &ns, "fraud", json!({"strategy": {"canary": {"weight": 100}}})).await;
        let md = wait_phase(&client, &ns, "fraud", Phase::Healthy, T).await;
        assert_eq!(track(&client, &ns, "fraud", "stable").await, Some(("2".into(), 4, 4)));
        assert_eq!(track(&client, &ns, "fraud", "canary").await, None, "canary removed");
        let status = md.status.clone().unwrap();
        assert_eq!(status.stable_version.as_deref(), Some("2"));
        assert_eq!(status.candidate_version, None);
        assert_eq!(outcomes(&md), vec![("2".to_string(), RolloutOutcome::Promoted)]);
        wait_event_reasons(
            &client,
            &ns,
            "fraud",
            &["RolloutStarted", "PromotionStarted", "Promoted"],
        )
        .await;
    })
    .await;
}

/// S5: abort (version back to stable) -> retry -> promote, with the expected events.
#[tokio::test(flavor = "multi_thread")]
async fn canary_abort_retry_promote() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy = json!({"type": "Canary", "canary": {"weight": 50}});
        apply(&client, &ns, model("m", "1", 2, strategy)).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        patch_spec(&client, &ns, "m", json!({"model": {"version": "2"}})).await;
        wait_phase(&client, &ns, "m", Phase::Paused, T).await;
        assert_eq!(split(&client, &ns, "m").await, (1, 1));

        patch_spec(&client, &ns, "m", json!({"model": {"version": "1"}})).await;
        let md = wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        assert_eq!(split(&client, &ns, "m").await, (2, 0));
        assert_eq!(outcomes(&md), vec![("2".to_string(), RolloutOutcome::Abandoned)]);

        patch_spec(&client, &ns, "m", json!({"model": {"version": "2"}})).await;
        wait_phase(&client, &ns, "m", Phase::Paused, T).await;
        assert_eq!(split(&client, &ns, "m").await, (1, 1), "retry is paused at 1/1 again");

        patch_spec(&client, &ns, "m", json!({"strategy": {"canary": {"weight": 100}}})).await;
        let md = wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        assert_eq!(track(&client, &ns, "m", "stable").await, Some(("2".into(), 2, 2)));
        assert_eq!(track(&client, &ns, "m", "canary").await, None);
        assert_eq!(md.status.unwrap().history[0].outcome, RolloutOutcome::Promoted);
        let counts = models::event_counts(&client, &ns, "m").await;
        let count = |reason: &str| counts.get(reason).copied().unwrap_or(0);
        assert_eq!(
            (count("RolloutStarted"), count("RolledBack"), count("Promoted")),
            (2, 1, 1),
            "{counts:?}"
        );
    })
    .await;
}

/// S7 and S8: a version whose pods never get ready is contained (stable keeps every pod),
/// aborted at the progress deadline (the canary removed, traffic on stable, status says
/// why), and a good version rolls forward out of it.
#[tokio::test(flavor = "multi_thread")]
async fn broken_version_is_contained_aborted_then_rolled_forward() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy =
            json!({"type": "Canary", "canary": {"weight": 20}, "progressDeadlineSeconds": 10});
        apply(&client, &ns, model("m", "1", 5, strategy)).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        // A model file that does not exist: the pod's server exits at start, over and over.
        let broken = json!({"model": {"version": "2", "uri": models::fixture_uri("missing.onnx")}});
        patch_spec(&client, &ns, "m", broken).await;
        wait_until(T, "the canary pod", async || {
            track(&client, &ns, "m", "canary").await.is_some()
        })
        .await;
        hold_for(Duration::from_secs(3), "stable keeps 5 ready pods", async || {
            track(&client, &ns, "m", "stable").await == Some(("1".into(), 5, 5))
        })
        .await;
        let md = wait_phase(&client, &ns, "m", Phase::RolledBack, Duration::from_secs(40)).await;
        assert_eq!(
            condition(&md, "Degraded").unwrap(),
            ("True".into(), "ProgressDeadlineAborted".into())
        );
        assert_eq!(condition(&md, "Available").unwrap().0, "True", "stable still serves");
        assert_eq!(md.status.as_ref().unwrap().aborted_version.as_deref(), Some("2"));
        wait_until(T, "the broken canary removed", async || {
            track(&client, &ns, "m", "canary").await.is_none()
        })
        .await;
        assert_eq!(track(&client, &ns, "m", "stable").await, Some(("1".into(), 5, 5)));
        wait_event_reasons(&client, &ns, "m", &["ProgressDeadlineAborted"]).await;

        let good = json!({
            "model": {"version": "3", "uri": models::fixture_uri("logreg.onnx")},
            "strategy": {"canary": {"weight": 100}}
        });
        patch_spec(&client, &ns, "m", good).await;
        let md = wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        assert_eq!(track(&client, &ns, "m", "stable").await, Some(("3".into(), 5, 5)));
        assert_eq!(track(&client, &ns, "m", "canary").await, None);
        assert_eq!(condition(&md, "Degraded").unwrap().0, "False");
        let outcomes = outcomes(&md);
        assert_eq!(outcomes[0], ("3".to_string(), RolloutOutcome::Promoted));
        assert_eq!(outcomes[1], ("2".to_string(), RolloutOutcome::Aborted));
    })
    .await;
}

/// S9: a new version while a candidate is paused replaces it; steps restart; the old
/// candidate is never promoted.
#[tokio::test(flavor = "multi_thread")]
async fn new_version_supersedes_a_paused_candidate() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy =
            json!({"type": "Canary", "canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}});
        apply(&client, &ns, model("m", "1", 4, strategy)).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        patch_spec(&client, &ns, "m", json!({"model": {"version": "2"}})).await;
        let md = wait_phase(&client, &ns, "m", Phase::Paused, T).await;
        assert_eq!(md.status.unwrap().current_step, Some(1));
        patch_spec(&client, &ns, "m", json!({"model": {"version": "3"}})).await;
        let md = wait_for(&client, &ns, "m", "paused on version 3", T, |md| {
            current(md)
                && models::phase(md) == Some(Phase::Paused)
                && md.status.as_ref().unwrap().candidate_version.as_deref() == Some("3")
        })
        .await;
        wait_until(T, "canary on 3", async || {
            track(&client, &ns, "m", "canary").await == Some(("3".into(), 1, 1))
        })
        .await;
        assert_eq!(track(&client, &ns, "m", "stable").await, Some(("1".into(), 3, 3)));
        let status = md.status.clone().unwrap();
        assert_eq!(status.stable_version.as_deref(), Some("1"));
        assert_eq!(status.current_step, Some(1), "steps restarted for 3 and reached the pause");
        assert_eq!(outcomes(&md), vec![("2".to_string(), RolloutOutcome::Superseded)]);
    })
    .await;
}

/// S10: reverting to the stable version during a canary creates no stable pods and restores
/// the Service and status exactly.
#[tokio::test(flavor = "multi_thread")]
async fn fast_rollback_restores_the_previous_state() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy = json!({"type": "Canary", "canary": {"weight": 34}});
        apply(&client, &ns, model("m", "1", 3, strategy)).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        let before_pods = ready_pods(&client, &ns, "m").await;
        let before_selector = selector(&client, &ns, "m").await;
        patch_spec(&client, &ns, "m", json!({"model": {"version": "2"}})).await;
        wait_phase(&client, &ns, "m", Phase::Paused, T).await;
        assert_eq!(split(&client, &ns, "m").await, (2, 1));
        patch_spec(&client, &ns, "m", json!({"model": {"version": "1"}})).await;
        let md = wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        wait_until(T, "the canary pod gone", async || {
            ready_pods(&client, &ns, "m").await.len() == 3
        })
        .await;
        let after_pods = ready_pods(&client, &ns, "m").await;
        // Stable grew back to 3 from 2: exactly one new stable pod, the two survivors unchanged.
        let kept =
            before_pods.values().filter(|uid| after_pods.values().any(|u| u == *uid)).count();
        assert_eq!(kept, 2, "before {before_pods:?} after {after_pods:?}");
        assert!(after_pods.keys().all(|p| p.starts_with("m-stable-")), "{after_pods:?}");
        assert_eq!(selector(&client, &ns, "m").await, before_selector);
        let status = md.status.clone().unwrap();
        assert_eq!((status.candidate_version, status.canary_weight), (None, 0));
        assert_eq!(condition(&md, "Paused").unwrap().0, "False");
        assert_eq!(track(&client, &ns, "m", "canary").await, None);
    })
    .await;
}

/// S2: blue-green with a manual gate and one preview pod, then promotion.
#[tokio::test(flavor = "multi_thread")]
async fn blue_green_manual_promotion_with_preview_replicas() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy = json!({"type": "BlueGreen", "blueGreen": {
            "autoPromote": false, "previewReplicas": 1, "scaleDownDelaySeconds": 3}});
        apply(&client, &ns, model("m", "1", 2, strategy)).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        assert_eq!(selector(&client, &ns, "m").await["modelship.io/track"], "blue");
        patch_spec(&client, &ns, "m", json!({"model": {"version": "2"}})).await;
        let md = wait_phase(&client, &ns, "m", Phase::Paused, T).await;
        assert_eq!(condition(&md, "Paused").unwrap().1, "AwaitingApproval");
        assert_eq!(track(&client, &ns, "m", "blue").await, Some(("1".into(), 2, 2)));
        assert_eq!(track(&client, &ns, "m", "green").await, Some(("2".into(), 1, 1)));
        assert_eq!(selector(&client, &ns, "m").await["modelship.io/track"], "blue");
        assert_eq!(selector(&client, &ns, "m-preview").await["modelship.io/track"], "green");
        hold_for(Duration::from_secs(2), "the gate holds", async || {
            selector(&client, &ns, "m").await["modelship.io/track"] == "blue"
        })
        .await;

        patch_spec(&client, &ns, "m", json!({"strategy": {"approvedVersion": "2"}})).await;
        wait_until(T, "the switch", async || {
            selector(&client, &ns, "m").await.get("modelship.io/track").map(String::as_str)
                == Some("green")
        })
        .await;
        assert_eq!(
            track(&client, &ns, "m", "green").await,
            Some(("2".into(), 2, 2)),
            "full before the switch"
        );
        let md = wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        assert_eq!(
            track(&client, &ns, "m", "blue").await.map(|t| t.1),
            Some(0),
            "blue scaled down"
        );
        let status = md.status.unwrap();
        assert_eq!(status.active_color.as_deref(), Some("green"));
        assert_eq!(
            status.selector.as_deref(),
            Some("modelship.io/name=m,modelship.io/track=green")
        );
        let reasons = wait_event_reasons(&client, &ns, "m", &["SwitchedService"]).await;
        assert_eq!(reasons.iter().filter(|r| *r == "SwitchedService").count(), 1, "{reasons:?}");
    })
    .await;
}

/// S3: aborting a paused blue-green rollout never moves the Service and scales the new color
/// down after the delay.
#[tokio::test(flavor = "multi_thread")]
async fn blue_green_abort_while_paused() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy = json!({"type": "BlueGreen", "blueGreen": {"autoPromote": false, "scaleDownDelaySeconds": 1}});
        apply(&client, &ns, model("m", "1", 2, strategy)).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        patch_spec(&client, &ns, "m", json!({"model": {"version": "2"}})).await;
        wait_phase(&client, &ns, "m", Phase::Paused, T).await;
        patch_spec(&client, &ns, "m", json!({"model": {"version": "1"}})).await;
        let watch_selector = async {
            hold_for(Duration::from_secs(6), "the Service stays on blue", async || {
                selector(&client, &ns, "m").await["modelship.io/track"] == "blue"
            })
            .await
        };
        let green_down = async {
            wait_until(Duration::from_secs(4), "green scaled to 0 within delay + 2 s", async || {
                track(&client, &ns, "m", "green").await.map(|t| t.1) == Some(0)
            })
            .await
        };
        tokio::join!(watch_selector, green_down);
        let md = wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        assert_eq!(outcomes(&md), vec![("2".to_string(), RolloutOutcome::Abandoned)]);
        assert!(current(&md));
    })
    .await;
}

/// S14: the old color's scale-down deadline is stored, so an operator killed right after the
/// switch and restarted scales it down on time, not later and not earlier.
#[tokio::test(flavor = "multi_thread")]
async fn scale_down_deadline_survives_an_operator_restart() {
    with_namespace(async |client, ns| {
        let mut operator = OperatorProcess::start(&ns);
        let strategy = json!({"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 10}});
        apply(&client, &ns, model("m", "1", 2, strategy)).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        patch_spec(&client, &ns, "m", json!({"model": {"version": "2"}})).await;
        let md = wait_for(&client, &ns, "m", "a stored scale-down time", T, |md| {
            md.status.as_ref().and_then(|s| s.scale_down_at.clone()).is_some()
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        operator.kill();
        let deadline: k8s_openapi::jiff::Timestamp =
            md.status.unwrap().scale_down_at.unwrap().parse().unwrap();
        let _operator = OperatorProcess::start(&ns);
        let scaled_at = wait_until(Duration::from_secs(30), "blue scaled down", async || {
            (track(&client, &ns, "m", "blue").await.map(|t| t.1) == Some(0))
                .then(k8s_openapi::jiff::Timestamp::now)
        })
        .await;
        let late = scaled_at.duration_since(deadline).as_secs_f64();
        assert!(late >= -0.5, "scaled down {late}s before the deadline");
        assert!(late <= 5.0, "scaled down {late}s after the deadline");
    })
    .await;
}

/// S15: the operator killed (SIGKILL) at every phase of a stepped canary resumes each time:
/// the step index never goes back, and the end state is the uninterrupted one.
#[tokio::test(flavor = "multi_thread")]
async fn operator_killed_at_every_phase_resumes() {
    with_namespace(async |client, ns| {
        let steps =
            json!([{"setWeight": 25}, {"pause": {"seconds": 3}}, {"setWeight": 50}, {"pause": {}}]);
        let strategy = json!({"type": "Canary", "canary": {"steps": steps}});
        let mut operator = OperatorProcess::start(&ns);
        apply(&client, &ns, model("m", "1", 4, strategy)).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        patch_spec(&client, &ns, "m", json!({"model": {"version": "2"}})).await;
        let mut highest_step = 0;
        for (what, done) in [
            (
                "canary created",
                (|md: &modelship_crds::ModelDeployment| {
                    md.status.as_ref().is_some_and(|s| s.candidate_version.as_deref() == Some("2"))
                }) as fn(&modelship_crds::ModelDeployment) -> bool,
            ),
            ("in the timed pause", |md| md.status.as_ref().and_then(|s| s.current_step) == Some(1)),
            ("waiting for approval", |md| {
                md.status.as_ref().and_then(|s| s.current_step) == Some(3)
                    && models::phase(md) == Some(Phase::Paused)
            }),
        ] {
            let md = wait_for(&client, &ns, "m", what, T, done).await;
            let step = md.status.as_ref().and_then(|s| s.current_step).unwrap_or(0);
            assert!(step >= highest_step, "step went back from {highest_step} to {step}");
            highest_step = step;
            operator.kill();
            operator = OperatorProcess::start(&ns);
        }
        assert_eq!(split(&client, &ns, "m").await, (2, 2));
        patch_spec(&client, &ns, "m", json!({"strategy": {"approvedVersion": "2"}})).await;
        let md = wait_for(&client, &ns, "m", "promotion started", T, |md| {
            md.status.as_ref().is_some_and(|s| s.canary_weight == 100)
        })
        .await;
        assert!(md.status.unwrap().current_step.unwrap_or(4) >= highest_step);
        operator.kill();
        let _operator = OperatorProcess::start(&ns);
        let md = wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        assert_eq!(track(&client, &ns, "m", "stable").await, Some(("2".into(), 4, 4)));
        assert_eq!(track(&client, &ns, "m", "canary").await, None);
        assert_eq!(outcomes(&md), vec![("2".to_string(), RolloutOutcome::Promoted)]);
        let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(client.clone(), &ns);
        let names: Vec<String> = deployments
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|d| d.metadata.name)
            .collect();
        assert_eq!(names, ["m-stable"], "no duplicate children");
    })
    .await;
}

/// S20: once healthy, the operator sends no writes, also across resyncs.
#[tokio::test(flavor = "multi_thread")]
async fn steady_state_sends_no_writes() {
    with_namespace(async |client, ns| {
        let operator = OperatorProcess::start_with(
            &ns,
            "solo",
            &["--leader-elect=false", "--resync-seconds", "1"],
        );
        for (name, strategy) in [
            ("rolling", json!({"type": "RollingUpdate"})),
            ("canary", json!({"type": "Canary", "canary": {"weight": 50}})),
            ("bluegreen", json!({"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 0}})),
        ] {
            apply(&client, &ns, model(name, "1", 2, strategy)).await;
            wait_phase(&client, &ns, name, Phase::Healthy, T).await;
        }
        // Let late events (pod readiness, endpoint slices) settle, then count.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = operator.writes().await;
        let resource_versions = async || {
            let mut versions = Vec::new();
            for name in ["rolling", "canary", "bluegreen"] {
                versions.push(get(&client, &ns, name).await.metadata.resource_version);
            }
            versions
        };
        let rv_before = resource_versions().await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let reconciles = modelship_tests::operator::sum_metric(
            &operator.metrics().await,
            "modelship_operator_reconciles_total",
        );
        assert!(reconciles > 6.0, "resyncs happened ({reconciles} reconciles)");
        assert_eq!(operator.writes().await, before, "writes at steady state");
        assert_eq!(resource_versions().await, rv_before, "no status rewrites");
    })
    .await;
}

/// Status writes of `operator`'s own counter.
async fn status_writes(operator: &OperatorProcess) -> f64 {
    let page = operator.metrics().await;
    let lines = page.lines().filter(|line| line.contains(r#"kind="status""#));
    modelship_tests::operator::sum_metric(
        &lines.collect::<Vec<_>>().join("\n"),
        "modelship_operator_writes_total",
    )
}

/// The statuses the API server stored for the watched model, in order (phase, ready pods),
/// once the watch has shown one in phase `want`.
async fn stored_until(world: &World, want: Phase) -> Vec<(Option<Phase>, i32)> {
    let what = format!("the watch to show {want:?}");
    let seen =
        world.until(T, &what, |w| w.statuses.iter().any(|(_, s)| s.phase == Some(want))).await;
    seen.statuses.iter().map(|(_, s)| (s.phase, s.ready_replicas)).collect()
}

/// Model `m`, version 1 on one replica, whose model file does not exist: its pod never
/// becomes ready.
fn never_ready(strategy: serde_json::Value) -> serde_json::Value {
    let mut md = model("m", "1", 1, strategy);
    md["spec"]["model"]["uri"] = json!(models::fixture_uri("missing.onnx"));
    md
}

/// A new model whose pods come up within the first-status grace costs one status write,
/// `Healthy`, complete: the first status the API server stores. The watch counts what was
/// stored (the operator's counter also counts attempts the API server failed); a later
/// status may only say that a pod went unready and came back (a probe timing out on a busy
/// node).
#[tokio::test(flavor = "multi_thread")]
async fn a_model_ready_within_the_grace_costs_one_status_write() {
    with_namespace(async |client, ns| {
        let grace = ["--leader-elect=false", "--first-status-grace-seconds", "60"];
        let operator = OperatorProcess::start_with(&ns, "solo", &grace);
        let world = World::watch(&client, &ns, "m");
        apply(&client, &ns, model("m", "1", 2, json!({"type": "RollingUpdate"}))).await;
        let md = wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        let status = md.status.as_ref().unwrap();
        assert_eq!(status.observed_generation, md.metadata.generation);
        assert_eq!((status.stable_version.as_deref(), status.ready_replicas), (Some("1"), 2));
        assert_eq!(condition(&md, "Available").unwrap().0, "True");

        let stored = stored_until(&world, Phase::Healthy).await;
        let attempts = status_writes(&operator).await;
        let context = || format!("{stored:?}, {attempts} attempts; log:\n{}", operator.log_tail());
        assert_eq!(stored[0], (Some(Phase::Healthy), 2), "{}", context());
        if stored.len() > 1 {
            let flapped = stored[1..].iter().any(|&(_, ready)| ready < 2);
            assert!(flapped, "statuses after Healthy without a pod going unready: {}", context());
        }
    })
    .await;
}

/// A new model whose pods do not come up within the grace is reported `Progressing` when the
/// grace ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_model_not_ready_within_the_grace_is_reported_progressing() {
    with_namespace(async |client, ns| {
        let grace = ["--leader-elect=false", "--first-status-grace-seconds", "1"];
        let operator = OperatorProcess::start_with(&ns, "solo", &grace);
        let world = World::watch(&client, &ns, "m");
        apply(&client, &ns, never_ready(json!({"type": "RollingUpdate"}))).await;
        let md = wait_phase(&client, &ns, "m", Phase::Progressing, T).await;
        assert_eq!(condition(&md, "Available").unwrap().0, "False");
        let stored = stored_until(&world, Phase::Progressing).await;
        assert_eq!(stored, [(Some(Phase::Progressing), 0)], "log:\n{}", operator.log_tail());
    })
    .await;
}

/// While a first status is held, the rollout's clock keeps running from the first reconcile:
/// the progress deadline passes inside a long grace, and `Degraded` is written at once, with
/// its warning published once.
#[tokio::test(flavor = "multi_thread")]
async fn a_held_first_status_keeps_the_progress_clock() {
    with_namespace(async |client, ns| {
        let grace = ["--leader-elect=false", "--first-status-grace-seconds", "120"];
        let operator = OperatorProcess::start_with(&ns, "solo", &grace);
        let world = World::watch(&client, &ns, "m");
        let strategy = json!({"type": "RollingUpdate", "progressDeadlineSeconds": 10});
        apply(&client, &ns, never_ready(strategy)).await;
        let md = wait_phase(&client, &ns, "m", Phase::Degraded, Duration::from_secs(60)).await;
        assert_eq!(condition(&md, "Degraded").unwrap().0, "True");
        let stored = stored_until(&world, Phase::Degraded).await;
        let log = operator.log_tail();
        assert_eq!(stored, [(Some(Phase::Degraded), 0)], "the first status stored; log:\n{log}");
        // The warning is published after the status write: wait for it, then count it.
        wait_until(T, "the ProgressDeadlineExceeded event", async || {
            models::event_counts(&client, &ns, "m").await.contains_key("ProgressDeadlineExceeded")
        })
        .await;
        let counts = models::event_counts(&client, &ns, "m").await;
        assert_eq!(counts.get("ProgressDeadlineExceeded").copied(), Some(1), "{counts:?}");
    })
    .await;
}

/// S22: children carry a controller owner reference, so deleting a ModelDeployment removes
/// them, also while the operator is down.
#[tokio::test(flavor = "multi_thread")]
async fn deletion_removes_children_with_or_without_the_operator() {
    with_namespace(async |client, ns| {
        let mut operator = OperatorProcess::start(&ns);
        let canary = json!({"type": "Canary", "canary": {"weight": 50}});
        apply(&client, &ns, model("a", "1", 2, canary.clone())).await;
        apply(&client, &ns, model("b", "1", 2, json!({"type": "BlueGreen"}))).await;
        wait_phase(&client, &ns, "a", Phase::Healthy, T).await;
        wait_phase(&client, &ns, "b", Phase::Healthy, T).await;
        patch_spec(&client, &ns, "a", json!({"model": {"version": "2"}})).await;
        wait_phase(&client, &ns, "a", Phase::Paused, T).await;

        let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
            kube::Api::namespaced(client.clone(), &ns);
        for d in deployments.list(&Default::default()).await.unwrap().items {
            let owners = d.metadata.owner_references.unwrap_or_default();
            assert!(
                owners.iter().any(|o| o.controller == Some(true) && o.kind == "ModelDeployment")
            );
        }
        let children = async |name: &str| {
            let selector = format!("modelship.io/name={name}");
            let params = kube::api::ListParams::default().labels(&selector);
            let services: kube::Api<k8s_openapi::api::core::v1::Service> =
                kube::Api::namespaced(client.clone(), &ns);
            deployments.list(&params).await.unwrap().items.len()
                + services.list(&params).await.unwrap().items.len()
        };
        assert!(children("a").await >= 3);
        models::models(&client, &ns).delete("a", &Default::default()).await.unwrap();
        wait_until(T, "a's children gone", async || children("a").await == 0).await;

        operator.kill();
        models::models(&client, &ns).delete("b", &Default::default()).await.unwrap();
        wait_until(T, "b's children gone with the operator down", async || {
            children("b").await == 0
        })
        .await;
    })
    .await;
}

/// S23: every status write carries observedGeneration, and external changes show within
/// seconds.
#[tokio::test(flavor = "multi_thread")]
async fn status_follows_each_generation() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy = json!({"type": "Canary", "canary": {"weight": 0}});
        apply(&client, &ns, model("m", "1", 2, strategy)).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        for (patch, phase) in [
            (json!({"model": {"version": "2"}}), Phase::Paused),
            (json!({"strategy": {"canary": {"weight": 50}}}), Phase::Paused),
            (json!({"strategy": {"canary": {"weight": 100}}}), Phase::Healthy),
        ] {
            let patched = patch_spec(&client, &ns, "m", patch).await;
            let generation = patched.metadata.generation;
            let md = wait_for(
                &client,
                &ns,
                "m",
                "status of the new generation",
                Duration::from_secs(5),
                |md| md.status.as_ref().and_then(|s| s.observed_generation) == generation,
            )
            .await;
            for c in &md.status.as_ref().unwrap().conditions {
                assert_eq!(c.observed_generation, generation, "condition {}", c.type_);
            }
            wait_phase(&client, &ns, "m", phase, T).await;
        }
        let md = get(&client, &ns, "m").await;
        assert_eq!(condition(&md, "Available").unwrap().0, "True");
        assert_eq!(
            condition(&md, "Progressing").unwrap(),
            ("False".into(), "RolloutComplete".into())
        );
        assert_eq!(
            condition(&md, "Paused").unwrap().0,
            "False",
            "never stuck paused after promotion"
        );
    })
    .await;
}

/// `kubectl modelship` (the plugin binary on PATH, run through real kubectl): status,
/// promote and rollback are spec edits that drive the rollout.
#[tokio::test(flavor = "multi_thread")]
async fn kubectl_plugin_promotes_and_rolls_back() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let kubectl = async |args: &[&str]| {
            let bin_dir = modelship_tests::operator::operator_bin().parent().unwrap().to_path_buf();
            let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
            let output = tokio::process::Command::new("kubectl")
                .args(["modelship", "-n", &ns])
                .args(args)
                .env("PATH", path)
                .output()
                .await
                .expect("run kubectl");
            let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
            (output.status.success(), text)
        };
        let mut model = model("m", "1", 2, json!({"type": "Canary", "canary": {"weight": 50}}));
        model["spec"]["model"]["uri"] = json!(models::fixture_uri("logreg.onnx"));
        apply(&client, &ns, model).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        patch_spec(&client, &ns, "m", json!({"model": {"version": "2", "uri": models::fixture_uri("gb.onnx")}})).await;
        wait_phase(&client, &ns, "m", Phase::Paused, T).await;
        let (ok, text) = kubectl(&["status", "m"]).await;
        assert!(ok && text.contains("m: Paused (Canary)") && text.contains("candidate        2"), "{text}");
        let (ok, text) = kubectl(&["promote", "m"]).await;
        assert!(ok, "{text}");
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;

        patch_spec(&client, &ns, "m", json!({"model": {"version": "3", "uri": models::fixture_uri("rf.onnx")}, "strategy": {"canary": {"weight": 50}}})).await;
        wait_phase(&client, &ns, "m", Phase::Paused, T).await;
        let (ok, text) = kubectl(&["rollback", "m"]).await;
        assert!(ok, "{text}");
        let md = wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        assert_eq!(md.spec.model.uri, models::fixture_uri("gb.onnx"), "the stable file is restored");
        assert_eq!(condition(&md, "Degraded").unwrap().0, "False");
        let (ok, text) = kubectl(&["promote", "m"]).await;
        assert!(!ok && text.contains("no rollout in progress"), "{text}");
    })
    .await;
}
