//! What production clusters need from a ModelDeployment, on the real cluster with the real
//! operator binary and real serving pods on the node: Service exposure, pod placement and
//! pulling under Pod Security `restricted`, the disruption budget against real evictions,
//! abort at the progress deadline and retry, rollout history with its times, webhook
//! notifications to a real receiver in a pod, canaries on one replica, the prediction log
//! in the pods' output, and the kubectl plugin's commands.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{DeleteParams, EvictParams, ListParams, LogParams, PostParams};
use kube::{Api, Client};
use modelship_crds::{ModelDeployment, NotificationEvent, Phase, RolloutOutcome};
use modelship_operator::notify::hmac_sha256;
use modelship_tests::harness::{
    TestHttp, create, hold_for, routed_service_addr, unique_name, wait_until, with_namespace,
    with_namespace_labels,
};
use modelship_tests::hooks::Receiver;
use modelship_tests::models::{
    self, apply, condition, fixture_uri, get, model, patch_spec, predict_body, served_model, split,
    track, wait_event_reasons, wait_phase,
};
use modelship_tests::operator::{OperatorProcess, operator_bin};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

/// `kubectl modelship ARGS` in `namespace`, with the plugin (and `modelship-serving`, for
/// `validate`) on PATH: (success, stdout and stderr).
async fn plugin(namespace: &str, args: &[&str]) -> (bool, String) {
    let bin_dir = operator_bin().parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let output = tokio::process::Command::new("kubectl")
        .args(["modelship", "-n", namespace])
        .args(args)
        .env("PATH", path)
        .output()
        .await
        .expect("run kubectl");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

async fn kubectl(args: &[&str]) -> (bool, String) {
    let output =
        tokio::process::Command::new("kubectl").args(args).output().await.expect("run kubectl");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn service_spec(service: &Service) -> k8s_openapi::api::core::v1::ServiceSpec {
    service.spec.clone().expect("a spec")
}

/// The serving pods of a model, running ones only.
async fn pods_of(client: &Client, ns: &str, name: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("modelship.io/name={name}");
    let list = pods.list(&ListParams::default().labels(&selector)).await.expect("list pods");
    list.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
}

/// Item 1: the Service's type, port and annotations follow `spec.service`, the preview
/// Service follows them unless told otherwise, and a NodePort answers on the node's address.
#[tokio::test(flavor = "multi_thread")]
async fn services_follow_spec_service_and_a_node_port_answers() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let mut md = model(
            "m",
            "1",
            1,
            json!({"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 0}}),
        );
        md["spec"]["service"] = json!({"type": "NodePort", "port": 8000,
                                       "annotations": {"example.com/team": "risk"}});
        apply(&client, &ns, md).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        for name in ["m", "m-preview"] {
            let service = services.get(name).await.unwrap();
            let spec = service_spec(&service);
            assert_eq!(spec.type_.as_deref(), Some("NodePort"), "{name}");
            let port = &spec.ports.unwrap()[0];
            assert_eq!(port.port, 8000, "{name}");
            assert!(port.node_port.is_some(), "{name}: a node port is allocated");
            let annotations = service.metadata.annotations.unwrap_or_default();
            assert_eq!(annotations.get("example.com/team").map(String::as_str), Some("risk"));
        }
        // Through the ClusterIP on the new port, and through the node port on the node.
        routed_service_addr(&client, &ns, "m").await;
        let node_port =
            service_spec(&services.get("m").await.unwrap()).ports.unwrap()[0].node_port.unwrap();
        let node: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let node_ip = node.list(&Default::default()).await.unwrap().items[0]
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP").map(|a| a.address.clone()))
            .expect("the node's address");
        let at: SocketAddr = format!("{node_ip}:{node_port}").parse().unwrap();
        wait_until(T, "the node port to answer", async || {
            TestHttp::new().get(at, "/ready").await.map(|r| r.status.is_success()).unwrap_or(false)
        })
        .await;

        // A LoadBalancer, with a ClusterIP preview of its own.
        patch_spec(
            &client,
            &ns,
            "m",
            json!({"service": {"type": "LoadBalancer",
            "preview": {"type": "ClusterIP", "annotations": {}}}}),
        )
        .await;
        wait_until(T, "the main Service a LoadBalancer, the preview a ClusterIP", async || {
            let main = service_spec(&services.get("m").await.unwrap());
            let preview = services.get("m-preview").await.unwrap();
            let preview_spec = service_spec(&preview);
            main.type_.as_deref() == Some("LoadBalancer")
                && preview_spec.type_.as_deref() == Some("ClusterIP")
                && !preview
                    .metadata
                    .annotations
                    .unwrap_or_default()
                    .contains_key("example.com/team")
        })
        .await;
        // No cloud gives it an address here; its ClusterIP still routes.
        routed_service_addr(&client, &ns, "m").await;
    })
    .await;
}

/// Item 2: placement, pulling, identity, priority and labels reach the pods, which still
/// pass Pod Security `restricted` (enforced by the real API server on this namespace).
#[tokio::test(flavor = "multi_thread")]
async fn scheduling_and_pulling_fields_reach_restricted_pods() {
    let labels = [("pod-security.kubernetes.io/enforce", "restricted")];
    with_namespace_labels(&labels, async |client, ns| {
        let priority = unique_name("inference");
        let classes: Api<PriorityClass> = Api::all(client.clone());
        let class: PriorityClass =
            serde_json::from_value(json!({"metadata": {"name": priority}, "value": 1000})).unwrap();
        classes.create(&PostParams::default(), &class).await.expect("a PriorityClass");
        let _: ServiceAccount = create(&client, &ns, json!({"metadata": {"name": "serving"}})).await;
        let _: Secret = create(&client, &ns, json!({
            "metadata": {"name": "registry"},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": "{\"auths\": {}}"},
        }))
        .await;
        let _operator = OperatorProcess::start(&ns);
        let mut md = model("placed", "1", 2, json!({"type": "RollingUpdate"}));
        let serving = md["spec"]["serving"].as_object_mut().unwrap();
        serving.insert("imagePullSecrets".into(), json!([{"name": "registry"}]));
        serving.insert("nodeSelector".into(), json!({"kubernetes.io/os": "linux"}));
        serving.insert("tolerations".into(), json!([{"key": "dedicated", "operator": "Equal",
            "value": "inference", "effect": "NoSchedule"}]));
        serving.insert("affinity".into(), json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}}));
        serving.insert("topologySpreadConstraints".into(), json!([{"maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"modelship.io/name": "placed"}}}]));
        serving.insert("serviceAccountName".into(), json!("serving"));
        serving.insert("podLabels".into(), json!({"team": "risk"}));
        serving.insert("priorityClassName".into(), json!(priority));
        apply(&client, &ns, md).await;
        let healthy = async { wait_phase(&client, &ns, "placed", Phase::Healthy, T).await };
        let outcome = tokio::time::timeout(T + Duration::from_secs(5), healthy).await;
        let _ = classes.delete(&priority, &DeleteParams::default()).await;
        outcome.expect("the placed pods became ready");
        let pods = pods_of(&client, &ns, "placed").await;
        assert_eq!(pods.len(), 2);
        for pod in pods {
            let labels = pod.metadata.labels.clone().unwrap();
            assert_eq!(labels["team"], "risk");
            assert_eq!(labels["app.kubernetes.io/name"], "modelship-serving");
            assert_eq!(labels["modelship.io/track"], "stable");
            let spec = pod.spec.unwrap();
            assert_eq!(spec.service_account_name.as_deref(), Some("serving"));
            assert_eq!(spec.automount_service_account_token, Some(false));
            assert_eq!(spec.priority_class_name.as_deref(), Some(priority.as_str()));
            assert_eq!(spec.priority, Some(1000), "the class was resolved by admission");
            assert_eq!(spec.image_pull_secrets.unwrap()[0].name, "registry");
            assert_eq!(spec.node_selector.unwrap()["kubernetes.io/os"], "linux");
            assert!(spec.tolerations.unwrap().iter().any(|t| t.key.as_deref() == Some("dedicated")));
            assert!(spec.affinity.and_then(|a| a.node_affinity).is_some());
            assert_eq!(spec.topology_spread_constraints.unwrap().len(), 1);
        }
    })
    .await;
}

/// Item 3: the budget follows the spec (its selector, `maxUnavailable`, turned off), and an
/// eviction through the API server's eviction endpoint within it goes through.
#[tokio::test(flavor = "multi_thread")]
async fn the_disruption_budget_follows_the_spec_and_admits_an_eviction() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        apply(&client, &ns, model("m", "1", 2, json!({"type": "Canary", "canary": {"weight": 0}})))
            .await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
        let budget = wait_until(T, "a budget that allows one disruption", async || {
            let budget = budgets.get_opt("m").await.ok()??;
            let allowed = budget.status.as_ref()?.disruptions_allowed;
            (allowed == Some(1)).then_some(budget)
        })
        .await;
        let spec = budget.spec.unwrap();
        assert_eq!(
            spec.max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
        );
        assert_eq!(spec.selector.unwrap().match_labels.unwrap()["modelship.io/name"], "m");

        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let names: Vec<String> =
            pods_of(&client, &ns, "m").await.into_iter().filter_map(|p| p.metadata.name).collect();
        assert_eq!(names.len(), 2);
        // One eviction goes through the budget (a node drain's refusals are in tests/drain.rs,
        // where the cordoned node makes them deterministic).
        pods.evict(&names[0], &EvictParams::default())
            .await
            .expect("an eviction within the budget is allowed");
        wait_until(T, "the evicted pod replaced and the budget allowing one again", async || {
            let status = budgets.get_status("m").await.ok()?.status?;
            (status.current_healthy == Some(2) && status.disruptions_allowed == Some(1))
                .then_some(())
        })
        .await;

        patch_spec(&client, &ns, "m", json!({"disruptionBudget": {"maxUnavailable": 2}})).await;
        wait_until(T, "maxUnavailable 2", async || {
            budgets.get_opt("m").await.ok().flatten().and_then(|b| b.spec?.max_unavailable)
                == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2))
        })
        .await;
        patch_spec(&client, &ns, "m", json!({"disruptionBudget": {"enabled": false}})).await;
        wait_until(T, "the budget deleted", async || {
            budgets.get_opt("m").await.ok().flatten().is_none()
        })
        .await;
    })
    .await;
}

/// Items 4 and 5: a candidate that never gets ready is removed at its progress deadline,
/// traffic stays on stable and status says why; a new approval retries it, and the history
/// records when each rollout started, was ready and finished.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_canary_is_aborted_at_the_deadline_then_retried() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy =
            json!({"type": "Canary", "canary": {"weight": 50}, "progressDeadlineSeconds": 10});
        apply(&client, &ns, model("m", "1", 2, strategy)).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        let broken = json!({"model": {"version": "2", "uri": fixture_uri("missing.onnx")}});
        patch_spec(&client, &ns, "m", broken).await;
        let md = wait_phase(&client, &ns, "m", Phase::RolledBack, T).await;
        assert_eq!(
            condition(&md, "Degraded").unwrap(),
            ("True".into(), "ProgressDeadlineAborted".into())
        );
        assert_eq!(condition(&md, "Available").unwrap().0, "True", "stable still serves");
        let status = md.status.clone().unwrap();
        assert_eq!(status.aborted_version.as_deref(), Some("2"));
        let record = &status.history[0];
        assert_eq!((record.version.as_str(), record.outcome), ("2", RolloutOutcome::Aborted));
        assert!(record.started_at.is_some() && record.ready_at.is_none(), "{record:?}");
        assert!(
            record.reason.as_deref().unwrap_or_default().contains("no progress for 10s"),
            "{record:?}"
        );
        let started: k8s_openapi::jiff::Timestamp =
            record.started_at.as_deref().unwrap().parse().unwrap();
        let finished: k8s_openapi::jiff::Timestamp = record.finished_at.parse().unwrap();
        let after_start = finished.duration_since(started).as_secs_f64();
        assert!(
            after_start >= 10.0,
            "aborted {after_start:.1}s after the start, before the deadline"
        );
        eprintln!("aborted {after_start:.1}s after the rollout started (deadline 10s)");
        wait_until(T, "the canary removed", async || {
            track(&client, &ns, "m", "canary").await.is_none()
        })
        .await;
        assert_eq!(track(&client, &ns, "m", "stable").await, Some(("1".into(), 2, 2)));
        wait_event_reasons(&client, &ns, "m", &["ProgressDeadlineAborted"]).await;
        hold_for(Duration::from_secs(3), "not retried by itself", async || {
            models::phase(&get(&client, &ns, "m").await) == Some(Phase::RolledBack)
        })
        .await;

        // Fixed file, same version: the kubectl plugin's retry approves it again.
        patch_spec(&client, &ns, "m", json!({"model": {"uri": fixture_uri("logreg.onnx")}})).await;
        let (ok, text) = plugin(&ns, &["retry", "m"]).await;
        assert!(ok, "{text}");
        assert!(text.contains("\"approvedVersion\":\"2\""), "{text}");
        wait_phase(&client, &ns, "m", Phase::Paused, T).await;
        assert_eq!(split(&client, &ns, "m").await, (1, 1));
        patch_spec(&client, &ns, "m", json!({"strategy": {"canary": {"weight": 100}}})).await;
        let md = wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        let history = md.status.clone().unwrap().history;
        assert_eq!(
            (history[0].version.as_str(), history[0].outcome),
            ("2", RolloutOutcome::Promoted)
        );
        let at = |t: &Option<String>| -> k8s_openapi::jiff::Timestamp {
            t.as_deref().unwrap().parse().unwrap()
        };
        let (started, ready) = (at(&history[0].started_at), at(&history[0].ready_at));
        let finished: k8s_openapi::jiff::Timestamp = history[0].finished_at.parse().unwrap();
        assert!(started <= ready && ready <= finished, "{:?}", history[0]);
        assert_eq!(history[1].outcome, RolloutOutcome::Aborted);
        let (ok, text) = plugin(&ns, &["history", "m"]).await;
        assert!(ok, "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains("Promoted") && lines[1].contains('+'), "{text}");
        assert!(lines[2].contains("Aborted") && lines[2].contains("no progress"), "{text}");
    })
    .await;
}

/// Item 6: a real receiver in a pod gets each event once, signed, with retries while it is
/// down; a restarted operator repeats none.
#[tokio::test(flavor = "multi_thread")]
async fn notifications_reach_a_webhook_once_each() {
    with_namespace(async |client, ns| {
        let receiver = Receiver::start(&client, &ns).await;
        let key = "shared-secret";
        let _: Secret = create(&client, &ns, json!({
            "metadata": {"name": "modelship-webhook"},
            "stringData": {"url": receiver.url(), "hmacKey": key},
        }))
        .await;
        let mut operator = OperatorProcess::start(&ns);
        let mut md = model("m", "1", 2, json!({"type": "Canary", "canary": {"weight": 50}}));
        md["spec"]["notifications"] = json!({"webhook": {"secretName": "modelship-webhook",
            "events": ["Started", "Paused", "Promoted", "RolledBack", "AnalysisFailed", "Degraded"]}});
        apply(&client, &ns, md).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        // Down for the first two attempts: the third gets through.
        receiver.fail_next(2).await;
        patch_spec(&client, &ns, "m", json!({"model": {"version": "2"}})).await;
        wait_phase(&client, &ns, "m", Phase::Paused, T).await;
        patch_spec(&client, &ns, "m", json!({"strategy": {"canary": {"weight": 100}}})).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        let mut delivered = receiver.wait_delivered(3, Duration::from_secs(30)).await;
        // Each reconcile's notifications go on their own: the ids give the order.
        delivered.sort_by_key(|d| d.json()["id"].as_i64());
        let events: Vec<String> =
            delivered.iter().map(|d| d.json()["event"].as_str().unwrap().to_string()).collect();
        assert_eq!(events, ["Started", "Paused", "Promoted"]);
        let ids: Vec<i64> = delivered.iter().map(|d| d.json()["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, [1, 2, 3]);
        for delivery in &delivered {
            let body = delivery.json();
            assert_eq!((body["model"].as_str(), body["namespace"].as_str()), (Some("m"), Some(ns.as_str())));
            assert!(body["time"].is_string() && body["phase"].is_string() && body["reason"].is_string());
            let signature = format!("sha256={}", hmac_sha256(key.as_bytes(), delivery.body.as_bytes()));
            assert_eq!(delivery.headers.get("X-Modelship-Signature"), Some(&signature));
        }
        assert_eq!(delivered[2].json()["stableVersion"], "2");
        let all = receiver.received().await;
        assert_eq!(all.iter().filter(|d| d.status == 503).count(), 2, "two attempts while down");
        eprintln!(
            "webhook: {} POSTs received, {} answered 503, {} delivered, every signature checked",
            all.len(),
            all.iter().filter(|d| d.status == 503).count(),
            delivered.len()
        );
        let md = get(&client, &ns, "m").await;
        let last = md.status.unwrap().last_notification.unwrap();
        assert_eq!((last.id, last.event), (3, NotificationEvent::Promoted));

        // A new operator resumes from the stored record: nothing is sent again.
        operator.kill();
        let _operator = OperatorProcess::start_with(&ns, "second", &["--leader-elect=false", "--resync-seconds", "1"]);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(receiver.received().await.len(), all.len(), "no notification repeated");
    })
    .await;
}

/// Item 9: one replica at 10 %: a surge canary pod instead of the only stable pod, the
/// effective share in status and in `kubectl get`, and a warning that 10 % is out of reach.
/// Item 7 on the node: the pods write one prediction record per request to their output.
#[tokio::test(flavor = "multi_thread")]
async fn one_replica_canary_surges_and_predictions_are_logged() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let mut md = served_model(
            "m",
            "1",
            "logreg.onnx",
            1,
            json!({"type": "Canary", "canary": {"weight": 10}}),
        );
        md["spec"]["serving"]["predictionLog"] = json!({"sink": "Stdout", "sampleRate": 1.0});
        apply(&client, &ns, md).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        patch_spec(&client, &ns, "m", json!({"model": {"version": "2"}})).await;
        let md = wait_phase(&client, &ns, "m", Phase::Paused, T).await;
        assert_eq!(split(&client, &ns, "m").await, (1, 1), "a surge pod, the stable pod kept");
        let status = md.status.unwrap();
        assert_eq!((status.canary_weight, status.effective_weight), (10, 50));
        wait_event_reasons(&client, &ns, "m", &["WeightNotReachable"]).await;
        let (ok, table) = kubectl(&["get", "md", "m", "-n", &ns]).await;
        assert!(ok, "{table}");
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
        let column = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
        assert_eq!((column("WEIGHT"), column("EFFECTIVE")), ("10", "50"), "{table}");

        // Predictions through the Service are logged by whichever pod answered.
        let target = routed_service_addr(&client, &ns, "m").await;
        for _ in 0..10 {
            let answer = TestHttp::new()
                .request(target, axum::http::Method::POST, "/predict", Some(predict_body().into()))
                .await
                .unwrap();
            assert!(answer.status.is_success(), "{answer:?}");
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let records = wait_until(T, "prediction records in the pods' output", async || {
            let mut records = Vec::new();
            for pod in pods_of(&client, &ns, "m").await {
                let name = pod.metadata.name.unwrap();
                let log = pods.logs(&name, &LogParams::default()).await.unwrap_or_default();
                records.extend(
                    log.lines().filter(|l| l.contains("\"kind\":\"prediction\"")).map(String::from),
                );
            }
            if records.len() >= 10 {
                Ok(records)
            } else {
                Err(format!("{} records", records.len()))
            }
        })
        .await;
        eprintln!("prediction log: {} records for 10 predictions", records.len());
        let record: Value = serde_json::from_str(&records[0]).unwrap();
        assert_eq!(record["model"], "m");
        assert_eq!(record["features_sha256"].as_str().unwrap().len(), 64);
        assert!(record.get("features").is_none());

        patch_spec(&client, &ns, "m", json!({"strategy": {"canary": {"weight": 100}}})).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        assert_eq!(track(&client, &ns, "m", "stable").await, Some(("2".into(), 1, 1)));
        assert_eq!(track(&client, &ns, "m", "canary").await, None);
    })
    .await;
}

/// Item 10: `kubectl modelship list`, `status --watch`, `abort` and `validate`; every action
/// a spec edit.
#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_lists_watches_aborts_and_validates() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        apply(
            &client,
            &ns,
            model("a", "1", 1, json!({"type": "Canary", "canary": {"weight": 50}})),
        )
        .await;
        apply(&client, &ns, model("b", "1", 1, json!({"type": "RollingUpdate"}))).await;
        wait_phase(&client, &ns, "a", Phase::Healthy, T).await;
        wait_phase(&client, &ns, "b", Phase::Healthy, T).await;
        let (ok, text) = plugin(&ns, &["list"]).await;
        assert!(ok, "{text}");
        let names: BTreeSet<&str> =
            text.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
        assert_eq!(names, BTreeSet::from(["a", "b"]), "{text}");
        assert!(text.lines().nth(1).unwrap().contains("Healthy"), "{text}");

        // status --watch prints again when the rollout moves.
        let bin_dir = operator_bin().parent().unwrap().to_path_buf();
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let mut watch = tokio::process::Command::new("kubectl")
            .args(["modelship", "-n", &ns, "status", "a", "--watch"])
            .env("PATH", path)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl modelship status --watch");
        tokio::time::sleep(Duration::from_secs(2)).await;
        patch_spec(&client, &ns, "a", json!({"model": {"version": "2"}})).await;
        wait_phase(&client, &ns, "a", Phase::Paused, T).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        watch.start_kill().unwrap();
        let output = watch.wait_with_output().await.unwrap();
        let shown = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            shown.contains("a: Healthy (Canary)") && shown.contains("a: Paused (Canary)"),
            "{shown}"
        );
        assert!(shown.matches("--- ").count() >= 2, "{shown}");

        let (ok, text) = plugin(&ns, &["abort", "a"]).await;
        assert!(ok, "{text}");
        let md: ModelDeployment = wait_phase(&client, &ns, "a", Phase::Healthy, T).await;
        assert_eq!(md.spec.model.version, "1", "abort set the stable version back");
        assert_eq!(md.status.unwrap().history[0].outcome, RolloutOutcome::Abandoned);
        let (ok, text) = plugin(&ns, &["abort", "a"]).await;
        assert!(!ok && text.contains("no rollout in progress"), "{text}");

        // validate runs modelship-serving validate against a file.
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../serving/fixtures");
        let file = |name: &str| fixtures.join(name).display().to_string();
        let (ok, text) = plugin(
            &ns,
            &[
                "validate",
                "--model",
                &file("logreg.onnx"),
                "--inputs",
                &file("inputs_binary.json"),
                "--expected",
                &file("logreg.expected.json"),
            ],
        )
        .await;
        assert!(ok && text.ends_with("PASS\n"), "{text}");
        let (ok, text) = plugin(&ns, &["validate", "--model", &file("inputs_binary.json")]).await;
        assert!(!ok && text.contains("not an ONNX model"), "{text}");
    })
    .await;
}
