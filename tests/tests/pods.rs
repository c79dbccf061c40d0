//! Serving pods ended under load through the Service's ClusterIP, as kube-proxy routes it (S24
//! and beyond):
//!
//! - `kubectl delete pod`: the preStop sleep keeps it serving while kube-proxy drops the
//!   endpoint, then SIGTERM; no request fails, a client talking to the pod directly loses no
//!   request it had sent, and the container exits 0 within the grace period;
//! - SIGKILL of the serving process (found through its container's cgroup), mid-rollout: the
//!   failures stay within the window until the container is back and kube-proxy routes to it
//!   again, are at most the requests kube-proxy could send it in that window, and the rollout
//!   then completes without another failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::Method;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use modelship_crds::Phase;
use modelship_tests::harness::{TestHttp, pod_addr, wait_until, with_namespace};
use modelship_tests::models::{
    apply, fixture_uri, patch_spec, pods_of_track, predict_body, prediction_load, ready_pods,
    served_model, track, wait_answered_by, wait_phase,
};
use modelship_tests::operator::OperatorProcess;
use modelship_tests::pods::{PodRecorder, container_id, sigkill_container};
use serde_json::json;

const T: Duration = Duration::from_secs(90);
const RATE: u32 = 60;
const LOAD_CAP: Duration = Duration::from_secs(600);

async fn pods_of(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.list(&ListParams::default().labels(selector)).await.expect("list pods").items
}

/// Requests one after another on one keep-alive connection straight to a pod, until stopped;
/// each outcome with the error, if any.
struct Direct {
    running: Arc<std::sync::atomic::AtomicBool>,
    outcomes: Arc<Mutex<Vec<Result<u16, String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Direct {
    fn start(target: SocketAddr) -> Direct {
        let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let (flag, sink) = (running.clone(), outcomes.clone());
        let task = tokio::spawn(async move {
            let http = TestHttp::new();
            while flag.load(std::sync::atomic::Ordering::Relaxed) {
                let outcome = http
                    .request(target, Method::POST, "/predict", Some(predict_body().into()))
                    .await
                    .map(|r| r.status.as_u16())
                    .map_err(|e| e.to_string());
                sink.lock().unwrap().push(outcome);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Direct { running, outcomes, task }
    }

    async fn stop(self) -> Vec<Result<u16, String>> {
        self.running.store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = self.task.await;
        self.outcomes.lock().unwrap().clone()
    }
}

/// An error that says the request never reached a server (nothing accepted it), as opposed
/// to one a server accepted and then dropped.
fn never_accepted(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    error.contains("connection refused")
        || error.contains("tcp connect error")
        || error.contains("no route to host")
        || error.contains("connect timed out")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_pod_drains_without_losing_a_request() {
    with_namespace(async |client: Client, ns: String| {
        let _operator = OperatorProcess::start(&ns);
        apply(
            &client,
            &ns,
            served_model("m", "1", "logreg.onnx", 3, json!({"type": "RollingUpdate"})),
        )
        .await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        let load = prediction_load(&client, &ns, "m", RATE, LOAD_CAP).await;
        let victim = ready_pods(&client, &ns, "m").await.into_keys().next().expect("a ready pod");
        let direct = Direct::start(pod_addr(&client, &ns, &victim).await);
        let recorder = PodRecorder::start(&client, &ns, &victim);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let grace = pods
            .get(&victim)
            .await
            .unwrap()
            .spec
            .unwrap()
            .termination_grace_period_seconds
            .expect("a grace period");
        tokio::time::sleep(Duration::from_secs(1)).await;

        load.mark("pod deleted");
        let deleted = Instant::now();
        let output = tokio::process::Command::new("kubectl")
            .args(["delete", "pod", &victim, "-n", &ns, "--wait=false"])
            .output()
            .await
            .expect("run kubectl");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        wait_until(Duration::from_secs(grace as u64 + 10), "the pod gone", async || {
            pods.get_opt(&victim).await.ok().flatten().is_none()
        })
        .await;
        let gone = deleted.elapsed();
        wait_until(T, "three ready pods again", async || {
            ready_pods(&client, &ns, "m").await.len() == 3
        })
        .await;
        load.mark("replaced");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = load.stop().await;
        let direct = direct.stop().await;

        assert!(report.failures().is_empty(), "{}", report.describe_failures());
        report.assert_covered(&[
            ("start", &["1"], true),
            ("pod deleted", &["1"], true),
            ("replaced", &["1"], true),
        ]);
        // Straight to the pod: every request it accepted was answered; once it stopped
        // accepting, new connections were refused, which is no lost request.
        let answered = direct.iter().filter(|o| matches!(o, Ok(200))).count();
        let dropped: Vec<&String> =
            direct.iter().filter_map(|o| o.as_ref().err()).filter(|e| !never_accepted(e)).collect();
        let refused_statuses: Vec<&u16> =
            direct.iter().filter_map(|o| o.as_ref().ok()).filter(|s| **s != 200).collect();
        eprintln!(
            "direct to the pod: {answered} answered, {} refused connections",
            direct.len() - answered - dropped.len() - refused_statuses.len()
        );
        assert!(dropped.is_empty(), "requests the pod accepted and dropped: {dropped:?}");
        assert!(refused_statuses.is_empty(), "the pod answered with errors: {refused_statuses:?}");
        assert!(answered > 50, "the pod served through its drain ({answered} answers)");

        // It stopped on SIGTERM, not on the SIGKILL at the end of the grace period.
        let states = recorder.states();
        let exit = states.iter().rev().find_map(|s| s.exit_code);
        eprintln!("pod gone {gone:?} after the delete (grace {grace}s), exit code {exit:?}");
        assert_eq!(exit, Some(0), "the container's exit code; states: {states:?}");
        assert!(
            gone < Duration::from_secs(grace as u64),
            "the pod took {gone:?}, its grace is {grace}s"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_pod_costs_only_the_requests_sent_to_it_before_it_is_back() {
    with_namespace(async |client: Client, ns: String| {
        let _operator = OperatorProcess::start(&ns);
        let strategy = json!({"type": "Canary", "canary": {"weight": 50}});
        apply(&client, &ns, served_model("m", "1", "logreg.onnx", 2, strategy)).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        patch_spec(&client, &ns, "m", json!({"model": {"version": "2", "uri": fixture_uri("gb.onnx")}})).await;
        wait_phase(&client, &ns, "m", Phase::Paused, T).await;
        let load = prediction_load(&client, &ns, "m", RATE, LOAD_CAP).await;
        let canary = pods_of(&client, &ns, "modelship.io/name=m,modelship.io/track=canary").await;
        let [canary] = canary.as_slice() else { panic!("one canary pod: {canary:?}") };
        let name = canary.name_any();
        let id = container_id(canary).expect("the canary's container ID");
        let recorder = PodRecorder::start(&client, &ns, &name);
        // Both versions answer before the kill.
        for version in ["1", "2"] {
            wait_answered_by(&client, &ns, "m", version, T).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;

        load.mark("canary killed");
        let killed_at = Timestamp::now();
        let pids = sigkill_container(&id);
        eprintln!("SIGKILL to the canary's processes {pids:?}");
        let states = wait_until(T, "the canary restarted and ready", async || {
            let states = recorder.states();
            states.iter().any(|s| s.restarts >= 1 && s.ready && s.running).then_some(states)
        })
        .await;
        let back_at = states.iter().find(|s| s.restarts >= 1 && s.ready).map(|s| s.seen).unwrap();
        // kube-proxy follows the endpoint a moment after the API server shows it.
        let window = back_at.duration_since(killed_at).unsigned_abs() + Duration::from_secs(2);
        tokio::time::sleep(Duration::from_secs(2)).await;
        load.mark("canary back");
        tokio::time::sleep(Duration::from_secs(1)).await;

        load.mark("promoting 2");
        patch_spec(&client, &ns, "m", json!({"strategy": {"canary": {"weight": 100}}})).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        wait_until(T, "version 1's pods gone", async || {
            pods_of_track(&client, &ns, "m", "stable").await == 2
                && pods_of_track(&client, &ns, "m", "canary").await == 0
        })
        .await;
        load.mark("stable 2");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = load.stop().await;
        assert_eq!(track(&client, &ns, "m", "stable").await, Some(("2".into(), 2, 2)));

        // The bound: kube-proxy sends each new connection to one of the two endpoints, so at
        // most half the requests of the window (kill to back in service, plus kube-proxy's
        // catch-up) could reach the dead pod, plus the few in flight on its connections when it
        // died (at this rate and a millisecond per answer, well under ten).
        let kill_offset = report.phases.iter().find(|(n, _)| n.as_str() == "canary killed").unwrap().1;
        let failures = report.failures();
        let late: Vec<String> = failures
            .iter()
            .filter(|f| f.sent_at > kill_offset + window)
            .map(|f| format!("{:.2}s {:?}", f.sent_at.as_secs_f64(), f.error))
            .collect();
        let early = failures.iter().filter(|f| f.sent_at + Duration::from_millis(100) < kill_offset).count();
        let bound = (f64::from(RATE) * window.as_secs_f64() / 2.0).ceil() as usize + 10;
        let mut by_error: BTreeMap<String, usize> = BTreeMap::new();
        for f in &failures {
            *by_error.entry(f.error.clone().unwrap_or_default().chars().take(60).collect()).or_default() += 1;
        }
        eprintln!(
            "SIGKILL: {} of {} requests failed, bound {bound} (window {window:?}); by error: {by_error:?}",
            failures.len(),
            report.sent()
        );
        assert_eq!(early, 0, "failures before the kill: {}", report.describe_failures());
        assert!(late.is_empty(), "failures after the pod was back: {late:?}");
        assert!(failures.len() <= bound, "{} failures, more than the bound {bound}", failures.len());
        report.assert_covered(&[
            ("start", &["1", "2"], true),
            ("canary killed", &["1"], false),
            ("canary back", &["1", "2"], true),
            ("promoting 2", &["2"], false),
            ("stable 2", &["2"], true),
        ]);
    })
    .await;
}
