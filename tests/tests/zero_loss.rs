//! Rollouts of real models in real serving pods under continuous load through the Service's
//! ClusterIP, as kube-proxy routes it: every request sent during promote, rollback and
//! automatic rollback must get a 2xx answer, while endpoints come and go as they do on a
//! cluster (readiness, preStop drain, SIGTERM). Load is bounded (a fixed rate for at most two
//! minutes) and stays on this machine.

use std::time::Duration;

use axum::http::Method;
use kube::Client;
use modelship_crds::{Phase, RolloutOutcome};
use modelship_tests::harness::{
    TestHttp, routed_service_addr, service_addr, wait_until, with_namespace,
};
use modelship_tests::load::Load;
use modelship_tests::models::{
    apply, condition, patch_spec, pods_of_track, selector, served_model, track, wait_phase,
};
use modelship_tests::operator::OperatorProcess;
use serde_json::json;

const T: Duration = Duration::from_secs(90);
const RATE: u32 = 100;
const MAX_LOAD: Duration = Duration::from_secs(120);

fn request() -> String {
    let features: Vec<f64> = (0..20).map(|i| f64::from(i) / 10.0 - 1.0).collect();
    json!({"features": features}).to_string()
}

/// Load on the Service once kube-proxy routes it.
async fn load(client: &Client, service: &str, namespace: &str) -> Load {
    let target = routed_service_addr(client, namespace, service).await;
    Load::start(target, "/predict", &request(), RATE, MAX_LOAD)
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
        tokio::time::sleep(Duration::from_secs(2)).await;
        let report = running.stop().await;

        assert!(report.failures().is_empty(), "{}", report.describe_failures());
        let versions = report.by_version();
        assert!(versions.get("1").copied().unwrap_or(0) > 50, "{versions:?}");
        assert!(versions.get("2").copied().unwrap_or(0) > 50, "{versions:?}");
        let tail: Vec<_> = report.outcomes.iter().rev().take(100).collect();
        assert!(
            tail.iter().all(|o| o.version.as_deref() == Some("2")),
            "old answers after the blue pods were gone"
        );
        assert_eq!(track(&client, &ns, "fraud", "blue").await.map(|t| t.1), Some(0));
    })
    .await;
}

/// Waits until a request on a new connection to the Service is answered by `version`.
async fn answers_from(client: &Client, service: &str, namespace: &str, version: &str) {
    let target = service_addr(client, namespace, service).await;
    wait_until(T, &format!("an answer from version {version}"), async || {
        let answer = TestHttp::new()
            .request(target, Method::POST, "/predict", Some(request().into()))
            .await
            .map_err(|e| e.to_string())?;
        let answered = answer.json()["model_version"].as_str().unwrap_or_default().to_string();
        if answered == version { Ok(()) } else { Err(format!("answered by {answered}")) }
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

        let v2 = modelship_tests::models::fixture_uri("gb.onnx");
        patch_spec(&client, &ns, "churn", json!({"model": {"version": "2", "uri": v2}})).await;
        wait_phase(&client, &ns, "churn", Phase::Paused, T).await;
        patch_spec(&client, &ns, "churn", json!({"strategy": {"canary": {"weight": 100}}})).await;
        wait_phase(&client, &ns, "churn", Phase::Healthy, T).await;

        let v3 = modelship_tests::models::fixture_uri("rf.onnx");
        let next = json!({"model": {"version": "3", "uri": v3}, "strategy": {"canary": {"weight": 75}}});
        patch_spec(&client, &ns, "churn", next).await;
        wait_phase(&client, &ns, "churn", Phase::Paused, T).await;
        assert_eq!(track(&client, &ns, "churn", "canary").await, Some(("3".into(), 3, 3)));
        // Paused means the canary pods are ready; kube-proxy routes to them a moment later.
        answers_from(&client, "churn", &ns, "3").await;
        let back = json!({"model": {"version": "2", "uri": modelship_tests::models::fixture_uri("gb.onnx")}});
        patch_spec(&client, &ns, "churn", back).await;
        let md = wait_phase(&client, &ns, "churn", Phase::Healthy, T).await;
        wait_until(T, "the canary removed", async || track(&client, &ns, "churn", "canary").await.is_none()).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = running.stop().await;

        assert!(report.failures().is_empty(), "{}", report.describe_failures());
        let versions = report.by_version();
        for version in ["1", "2", "3"] {
            assert!(versions.get(version).copied().unwrap_or(0) > 0, "no answers from {version}: {versions:?}");
        }
        let history = &md.status.as_ref().unwrap().history;
        assert_eq!(history[0].outcome, RolloutOutcome::Abandoned);
        assert_eq!(history[1].outcome, RolloutOutcome::Promoted);
    })
    .await;
}

/// Analysis reads the candidate's real metrics: a latency threshold it cannot meet rolls it
/// back automatically, without failed requests, and the status says why.
#[tokio::test(flavor = "multi_thread")]
async fn failing_analysis_rolls_back_under_load() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy = json!({
            "type": "Canary",
            "canary": {"weight": 50},
            "analysis": {"intervalSeconds": 2, "failureLimit": 1, "minRequests": 10,
                         "maxErrorRate": 0.05, "maxLatencyP95Seconds": 0.000001}
        });
        apply(&client, &ns, served_model("risk", "1", "logreg.onnx", 2, strategy)).await;
        wait_phase(&client, &ns, "risk", Phase::Healthy, T).await;
        let running = load(&client, "risk", &ns).await;
        let v2 = modelship_tests::models::fixture_uri("rf.onnx");
        patch_spec(&client, &ns, "risk", json!({"model": {"version": "2", "uri": v2}})).await;
        let md = wait_phase(&client, &ns, "risk", Phase::RolledBack, T).await;
        wait_until(T, "the canary removed", async || {
            track(&client, &ns, "risk", "canary").await.is_none()
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = running.stop().await;

        assert!(report.failures().is_empty(), "{}", report.describe_failures());
        let status = md.status.clone().unwrap();
        assert_eq!(status.aborted_version.as_deref(), Some("2"));
        let analysis = status.analysis.unwrap();
        assert!(analysis.failures >= 2, "{analysis:?}");
        assert!(analysis.requests >= 10);
        assert!(analysis.message.unwrap_or_default().contains("p95 latency"));
        assert_eq!(condition(&md, "Degraded").unwrap(), ("True".into(), "RolledBack".into()));
        assert_eq!(track(&client, &ns, "risk", "stable").await, Some(("1".into(), 2, 2)));
    })
    .await;
}

/// S7 with real processes: a version whose model cannot load never becomes ready, never gets
/// traffic, and the rollout turns Degraded at its deadline.
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
        patch_spec(&client, &ns, "m", missing).await;
        let md = wait_phase(&client, &ns, "m", Phase::Degraded, T).await;
        let report = running.stop().await;
        assert!(report.failures().is_empty(), "{}", report.describe_failures());
        assert_eq!(report.by_version().keys().collect::<Vec<_>>(), ["1"]);
        assert_eq!(condition(&md, "Degraded").unwrap().1, "ProgressDeadlineExceeded");
        assert_eq!(track(&client, &ns, "m", "stable").await, Some(("1".into(), 2, 2)));
    })
    .await;
}
