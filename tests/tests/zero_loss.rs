//! Rollouts of real models in real serving pods under continuous load through the Service's
//! ClusterIP, as kube-proxy routes it: every request sent during promote, rollback and
//! automatic rollback must get a 2xx answer, while endpoints come and go as they do on a
//! cluster (readiness, preStop drain, SIGTERM). Load runs at a fixed rate until the test stops
//! it, and the test names each phase of the rollout as it begins: every phase must have been
//! answered by the versions that serve in it. Everything stays on this machine.

use std::time::Duration;

use kube::Client;
use modelship_crds::{Phase, RolloutOutcome};
use modelship_tests::harness::{wait_until, with_namespace};
use modelship_tests::load::Load;
use modelship_tests::models::{
    apply, condition, patch_spec, pods_of_track, prediction_load, selector, served_model, track,
    wait_answered_by, wait_phase,
};
use modelship_tests::operator::OperatorProcess;
use serde_json::json;

const T: Duration = Duration::from_secs(90);
const RATE: u32 = 100;
/// Each test stops its load; this only bounds a load a failing test leaves behind.
const LOAD_CAP: Duration = Duration::from_secs(600);

/// Load on the Service once kube-proxy routes it.
async fn load(client: &Client, service: &str, namespace: &str) -> Load {
    prediction_load(client, namespace, service, RATE, LOAD_CAP).await
}

/// S1: blue-green under load: the Service switches once, only to a ready color, and no
/// request fails; afterwards every answer comes from the new version.
#[tokio::test(flavor = "multi_thread")]
async fn blue_green_switch_loses_no_request() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy = json!({"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 4}});
        apply(&client, &ns, served_model("fraud", "1", "logreg.onnx", 3, strategy)).await;
        wait_phase(&client, &ns, "fraud", Phase::Healthy, T).await;

        let running = load(&client, "fraud", &ns).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let uri = modelship_tests::models::fixture_uri("rf.onnx");
        running.mark("switching");
        patch_spec(&client, &ns, "fraud", json!({"model": {"version": "2", "uri": uri}})).await;
        let md = wait_phase(&client, &ns, "fraud", Phase::Healthy, T).await;
        assert_eq!(md.status.as_ref().unwrap().stable_version.as_deref(), Some("2"));
        assert_eq!(selector(&client, &ns, "fraud").await["modelship.io/track"], "green");
        // Connections opened before the switch stay with the blue pods (kube-proxy balances
        // connections, not requests) until those pods drain and close them after the
        // scale-down delay; then every answer comes from green.
        wait_until(T, "the blue pods gone", async || {
            pods_of_track(&client, &ns, "fraud", "blue").await == 0
        })
        .await;
        running.mark("green only");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let report = running.stop().await;

        assert!(report.failures().is_empty(), "{}", report.describe_failures());
        report.assert_covered(&[
            ("start", &["1"], true),
            ("switching", &["1", "2"], true),
            ("green only", &["2"], true),
        ]);
        assert_eq!(track(&client, &ns, "fraud", "blue").await.map(|t| t.1), Some(0));
    })
    .await;
}

/// S5 and S6 under load: a canary promoted, then another rolled back from 75 %, without a
/// failed request.
#[tokio::test(flavor = "multi_thread")]
async fn canary_promote_and_rollback_lose_no_request() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy = json!({"type": "Canary", "canary": {"weight": 50}});
        apply(&client, &ns, served_model("churn", "1", "logreg.onnx", 4, strategy)).await;
        wait_phase(&client, &ns, "churn", Phase::Healthy, T).await;
        let running = load(&client, "churn", &ns).await;
        tokio::time::sleep(Duration::from_secs(1)).await;

        running.mark("rolling out 2");
        let v2 = modelship_tests::models::fixture_uri("gb.onnx");
        patch_spec(&client, &ns, "churn", json!({"model": {"version": "2", "uri": v2}})).await;
        wait_phase(&client, &ns, "churn", Phase::Paused, T).await;
        wait_answered_by(&client, &ns, "churn", "2", T).await;
        running.mark("canary 2 at 50%");
        tokio::time::sleep(Duration::from_secs(1)).await;
        running.mark("promoting 2");
        patch_spec(&client, &ns, "churn", json!({"strategy": {"canary": {"weight": 100}}})).await;
        wait_phase(&client, &ns, "churn", Phase::Healthy, T).await;
        wait_until(T, "version 1's pods gone", async || {
            pods_of_track(&client, &ns, "churn", "stable").await == 4
                && pods_of_track(&client, &ns, "churn", "canary").await == 0
        })
        .await;
        running.mark("stable 2");
        tokio::time::sleep(Duration::from_secs(1)).await;

        running.mark("rolling out 3");
        let v3 = modelship_tests::models::fixture_uri("rf.onnx");
        let next = json!({"model": {"version": "3", "uri": v3}, "strategy": {"canary": {"weight": 75}}});
        patch_spec(&client, &ns, "churn", next).await;
        wait_phase(&client, &ns, "churn", Phase::Paused, T).await;
        assert_eq!(track(&client, &ns, "churn", "canary").await, Some(("3".into(), 3, 3)));
        // Paused means the canary pods are ready; kube-proxy routes to them a moment later.
        wait_answered_by(&client, &ns, "churn", "3", T).await;
        running.mark("canary 3 at 75%");
        tokio::time::sleep(Duration::from_secs(1)).await;
        running.mark("rolling back to 2");
        let back = json!({"model": {"version": "2", "uri": modelship_tests::models::fixture_uri("gb.onnx")}});
        patch_spec(&client, &ns, "churn", back).await;
        let md = wait_phase(&client, &ns, "churn", Phase::Healthy, T).await;
        wait_until(T, "the canary's pods gone", async || {
            track(&client, &ns, "churn", "canary").await.is_none()
                && pods_of_track(&client, &ns, "churn", "canary").await == 0
        })
        .await;
        running.mark("stable 2 again");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = running.stop().await;

        assert!(report.failures().is_empty(), "{}", report.describe_failures());
        report.assert_covered(&[
            ("start", &["1"], true),
            ("rolling out 2", &["1"], false),
            ("canary 2 at 50%", &["1", "2"], true),
            ("promoting 2", &["2"], false),
            ("stable 2", &["2"], true),
            ("rolling out 3", &["2"], false),
            ("canary 3 at 75%", &["2", "3"], true),
            ("rolling back to 2", &["2"], false),
            ("stable 2 again", &["2"], true),
        ]);
        let history = &md.status.as_ref().unwrap().history;
        assert_eq!(history[0].outcome, RolloutOutcome::Abandoned);
        assert_eq!(history[1].outcome, RolloutOutcome::Promoted);
    })
    .await;
}

/// S7 with real processes: a version whose model cannot load never becomes ready, never gets
/// traffic, and is aborted at its deadline: the canary goes, stable serves throughout.
#[tokio::test(flavor = "multi_thread")]
async fn a_model_that_cannot_load_never_takes_traffic() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy =
            json!({"type": "Canary", "canary": {"weight": 50}, "progressDeadlineSeconds": 10});
        apply(&client, &ns, served_model("m", "1", "logreg.onnx", 2, strategy)).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        let running = load(&client, "m", &ns).await;
        let missing = json!({"model": {"version": "2", "uri": modelship_tests::models::fixture_uri("missing.onnx")}});
        tokio::time::sleep(Duration::from_secs(1)).await;
        running.mark("broken candidate");
        patch_spec(&client, &ns, "m", missing).await;
        let md = wait_phase(&client, &ns, "m", Phase::RolledBack, T).await;
        wait_until(T, "the broken canary removed", async || {
            track(&client, &ns, "m", "canary").await.is_none()
                && pods_of_track(&client, &ns, "m", "canary").await == 0
        })
        .await;
        running.mark("aborted");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = running.stop().await;
        assert!(report.failures().is_empty(), "{}", report.describe_failures());
        report.assert_covered(&[
            ("start", &["1"], true),
            ("broken candidate", &["1"], true),
            ("aborted", &["1"], true),
        ]);
        assert_eq!(condition(&md, "Degraded").unwrap().1, "ProgressDeadlineAborted");
        assert_eq!(track(&client, &ns, "m", "stable").await, Some(("1".into(), 2, 2)));
    })
    .await;
}
