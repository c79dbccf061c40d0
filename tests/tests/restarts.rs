//! The real kube-apiserver and etcd restarted mid-rollout (S18), under load: the processes of
//! the control plane are stopped and started again with their own command lines
//! (`tests/controlplane/restart.sh`), once during a canary rollout (the API server) and once
//! during a blue-green rollout (etcd). The watches that expired relist, both rollouts finish
//! as they would have, no request through the Services fails, the operator's liveness reports
//! the outage after its configured window and recovers, and kubelet, kube-proxy and the
//! controller-manager recover by themselves (the rollouts need all three).
//!
//! Restarting the shared API server disturbs anything running beside it: this file is its own
//! test binary (cargo runs test binaries one after another) with one test.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Api, Client};
use modelship_crds::Phase;
use modelship_tests::accounts::operator_account;
use modelship_tests::audit;
use modelship_tests::harness::{unique_name, wait_until, with_namespace};
use modelship_tests::models::{
    apply, fixture_uri, patch_spec, pods_of_track, prediction_load, selector, served_model, track,
    wait_answered_by, wait_phase,
};
use modelship_tests::operator::OperatorProcess;
use serde_json::json;

const T: Duration = Duration::from_secs(90);
const RATE: u32 = 40;
const LOAD_CAP: Duration = Duration::from_secs(600);
/// Liveness fails after watches have failed for this long.
const WATCH_FAILURE_SECONDS: i64 = 3;
/// How long each component stays down.
const DOWN_SECONDS: u64 = 6;
/// What the operator watches, each of which must relist after the API server restart.
const WATCHED: [&str; 5] =
    ["modeldeployments", "deployments", "services", "horizontalpodautoscalers", "endpointslices"];

/// Stops `component` of the control plane, keeps it down `DOWN_SECONDS`, starts it again and
/// waits until the API server serves; returns when it was stopped and when it served again.
async fn restart(component: &str) -> (Timestamp, Timestamp) {
    let state = std::env::var("MODELSHIP_CONTROLPLANE")
        .expect("MODELSHIP_CONTROLPLANE is not set: run the tests with `make test`");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("controlplane/restart.sh");
    let stopped = Timestamp::now();
    let output = tokio::process::Command::new("bash")
        .arg(script)
        .args([&state, component, &DOWN_SECONDS.to_string()])
        .output()
        .await
        .expect("run restart.sh");
    assert!(
        output.status.success(),
        "restart.sh {component} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ready = Timestamp::now();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let at = |what: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(what)?.trim().parse::<f64>().ok())
            .map(|s| s - stopped.as_millisecond() as f64 / 1000.0)
            .unwrap_or_else(|| panic!("restart.sh printed no `{what}` line: {stdout}"))
    };
    let (exited, serving) = (at("exited "), at("serving "));
    eprintln!(
        "{component} restarted: SIGTERM at 0 s, the process exited at {exited:.1} s, the API \
         server served again at {serving:.1} s"
    );
    (stopped, ready)
}

/// How long a removed pod keeps serving in this test. After the API server comes back,
/// kube-proxy and the EndpointSlice controller list again on their reflectors' backoff (0.8 s
/// doubling, with up to as much again of jitter), and a watch the restarted API server refuses
/// (`403 Forbidden` before its authorizer has caught up, seen in kube-proxy's log) sends them
/// further out: once, 24 s after the API server served again, a pod that had drained for the
/// default 5 s was still in kube-proxy's rules. A pod removed in that time must keep serving
/// until they have caught up, which is what a drain is for.
const DRAIN_SECONDS: i32 = 30;

/// `model` with the drain above instead of the tests' short one.
fn drain_past_relist(mut model: serde_json::Value) -> serde_json::Value {
    model["spec"]["serving"]["drainSeconds"] = json!(DRAIN_SECONDS);
    model
}

#[tokio::test(flavor = "multi_thread")]
async fn rollouts_survive_api_server_and_etcd_restarts() {
    with_namespace(async |client: Client, ns: String| {
        let dir = std::env::temp_dir().join(unique_name("modelship-restarts"));
        std::fs::create_dir_all(&dir).unwrap();
        // Its own account, so the audit log shows its lists and watches.
        let account = operator_account(&client, &ns, "modelship-operator", "op", &dir).await;
        let mut operator = OperatorProcess::start_full(
            &ns,
            "op",
            &["--leader-elect=false", "--watch-failure-seconds", &WATCH_FAILURE_SECONDS.to_string()],
            &[("KUBECONFIG", account.kubeconfig.to_str().unwrap())],
        );
        let canary = json!({"type": "Canary", "canary": {"weight": 50}});
        apply(&client, &ns, drain_past_relist(served_model("churn", "1", "logreg.onnx", 2, canary))).await;
        let blue_green = json!({"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 2}});
        apply(&client, &ns, drain_past_relist(served_model("fraud", "1", "logreg.onnx", 2, blue_green))).await;
        wait_phase(&client, &ns, "churn", Phase::Healthy, T).await;
        wait_phase(&client, &ns, "fraud", Phase::Healthy, T).await;
        assert_eq!(operator.admin_get("/healthz").await.map(|r| r.0), Some(200));

        // A canary rollout, and the API server restarted in the middle of it.
        let load = prediction_load(&client, &ns, "churn", RATE, LOAD_CAP).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        load.mark("rolling out 2");
        patch_spec(&client, &ns, "churn", json!({"model": {"version": "2", "uri": fixture_uri("gb.onnx")}})).await;
        let restarting = tokio::spawn(restart("kube-apiserver"));
        // Liveness: fails once the watches have failed for the configured window, not before.
        let failed_at = wait_until(T, "liveness to report the outage", async || {
            (operator.admin_get("/healthz").await.map(|r| r.0) == Some(503)).then(Timestamp::now)
        })
        .await;
        let (stopped, back) = restarting.await.unwrap();
        let reported_after = failed_at.duration_since(stopped).as_secs_f64();
        eprintln!("liveness failed {reported_after:.1}s after the API server was stopped");
        assert!(
            failed_at >= stopped + SignedDuration::from_secs(WATCH_FAILURE_SECONDS),
            "liveness failed {reported_after:.1}s after the outage began, before its {WATCH_FAILURE_SECONDS}s window"
        );
        assert!(failed_at <= back, "liveness reported the outage only after it ended");
        wait_until(T, "liveness to pass again", async || {
            operator.admin_get("/healthz").await.map(|r| r.0) == Some(200)
        })
        .await;
        assert!(operator.alive(), "the operator stayed up; log:\n{}", operator.log_tail());

        wait_phase(&client, &ns, "churn", Phase::Paused, T).await;
        wait_answered_by(&client, &ns, "churn", "2", T).await;
        load.mark("canary 2 at 50%");
        tokio::time::sleep(Duration::from_secs(1)).await;
        load.mark("promoting 2");
        patch_spec(&client, &ns, "churn", json!({"strategy": {"canary": {"weight": 100}}})).await;
        let md = wait_phase(&client, &ns, "churn", Phase::Healthy, T).await;
        assert_eq!(md.status.unwrap().stable_version.as_deref(), Some("2"));
        wait_until(T, "version 1's pods gone", async || {
            pods_of_track(&client, &ns, "churn", "stable").await == 2
                && pods_of_track(&client, &ns, "churn", "canary").await == 0
        })
        .await;
        load.mark("stable 2");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = load.stop().await;
        assert!(report.failures().is_empty(), "canary: {}", report.describe_failures());
        report.assert_covered(&[
            ("start", &["1"], true),
            ("rolling out 2", &["1"], false),
            ("canary 2 at 50%", &["1", "2"], true),
            ("promoting 2", &["2"], false),
            ("stable 2", &["2"], true),
        ]);
        assert_eq!(track(&client, &ns, "churn", "stable").await, Some(("2".into(), 2, 2)));
        assert_eq!(track(&client, &ns, "churn", "canary").await, None);

        // Every watch came back after the restart: resumed from its resource version, or
        // started over with a list when the restarted API server no longer had it (which
        // kinds expire depends on the API server's watch cache at the time).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let requests = audit::read_requests(&account.user());
        for resource in WATCHED {
            let again = |verb: &str| {
                requests.iter().any(|r| r.verb == verb && r.resource == resource && r.at >= stopped)
            };
            let (relisted, rewatched) = (again("list"), again("watch"));
            eprintln!("{resource} after the restart: list {relisted}, watch {rewatched}");
            assert!(rewatched, "no watch of {resource} after the API server restart");
        }

        // A blue-green rollout, and etcd restarted in the middle of it.
        let load = prediction_load(&client, &ns, "fraud", RATE, LOAD_CAP).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        load.mark("switching to 2");
        patch_spec(&client, &ns, "fraud", json!({"model": {"version": "2", "uri": fixture_uri("rf.onnx")}})).await;
        restart("etcd").await;
        let md = wait_phase(&client, &ns, "fraud", Phase::Healthy, T).await;
        let status = md.status.unwrap();
        assert_eq!(status.stable_version.as_deref(), Some("2"));
        assert_eq!(status.active_color.as_deref(), Some("green"));
        assert_eq!(selector(&client, &ns, "fraud").await["modelship.io/track"], "green");
        wait_until(T, "the blue pods gone", async || {
            pods_of_track(&client, &ns, "fraud", "blue").await == 0
        })
        .await;
        load.mark("green only");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let report = load.stop().await;
        assert!(report.failures().is_empty(), "blue-green: {}", report.describe_failures());
        report.assert_covered(&[
            ("start", &["1"], true),
            ("switching to 2", &["1", "2"], true),
            ("green only", &["2"], true),
        ]);
        assert_eq!(track(&client, &ns, "fraud", "green").await, Some(("2".into(), 2, 2)));
        assert_eq!(track(&client, &ns, "fraud", "blue").await.map(|t| t.1), Some(0));

        // The node stayed Ready through both restarts, and the operator never died.
        let nodes: Api<Node> = Api::all(client.clone());
        for node in nodes.list(&Default::default()).await.unwrap().items {
            let ready = node.status.and_then(|s| s.conditions).unwrap_or_default().into_iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            assert!(ready, "node {:?} is not Ready", node.metadata.name);
        }
        assert!(operator.alive(), "the operator stayed up; log:\n{}", operator.log_tail());
        assert_eq!(operator.admin_get("/healthz").await.map(|r| r.0), Some(200));
    })
    .await;
}
