//! The operator under stress on the real control plane: the autoscaler owning replicas, an API
//! outage, shutdown while the API is unreachable, objects that cannot be decoded, and conflicts
//! with stale watches. Leader election is in `leaders.rs`; restarts of the API server and etcd
//! in `restarts.rs`.

use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, CustomResourceExt};
use modelship_crds::{ModelDeployment, Phase};
use modelship_tests::faults::{
    Chaos, ChaosApi, FaultyLink, api_server, busiest_object, kubeconfig_via,
};
use modelship_tests::harness::{cluster, hold_for, wait_until, with_namespace};
use modelship_tests::models::{
    self, apply, current, get, model, patch_spec, split, track, wait_for, wait_phase,
};
use modelship_tests::operator::{OperatorProcess, sum_metric};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// S12: the HPA owns `spec.replicas` through `/scale`; the operator never writes it, never
/// resets it on other edits or restarts, and splits whatever the HPA decides.
#[tokio::test(flavor = "multi_thread")]
async fn autoscaler_owns_replicas() {
    with_namespace(async |client, ns| {
        let mut operator = OperatorProcess::start(&ns);
        let mut model = model("m", "1", 1, json!({"type": "RollingUpdate"}));
        model["spec"].as_object_mut().unwrap().remove("replicas");
        model["spec"]["autoscaling"] = json!({"minReplicas": 2, "maxReplicas": 10});
        apply(&client, &ns, model).await;

        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
        let hpa = wait_until(T, "the HPA", async || hpas.get_opt("m").await.ok().flatten()).await;
        let target = &hpa.spec.scale_target_ref;
        assert_eq!((target.kind.as_str(), target.name.as_str()), ("ModelDeployment", "m"));
        // The real HPA controller lifts the default of 1 to minReplicas through /scale.
        wait_until(T, "the HPA to scale to 2", async || {
            track(&client, &ns, "m", "stable").await.map(|t| t.1) == Some(2)
        })
        .await;
        assert_eq!(get(&client, &ns, "m").await.spec.replicas, 2);

        models::scale(&client, &ns, "m", 7).await;
        wait_until(T, "7 replicas", async || {
            track(&client, &ns, "m", "stable").await.map(|t| t.1) == Some(7)
        })
        .await;
        patch_spec(&client, &ns, "m", json!({"serving": {"podAnnotations": {"team": "risk"}}}))
            .await;
        operator.kill();
        let _operator = OperatorProcess::start(&ns);
        hold_for(Duration::from_secs(4), "replicas stay 7", async || {
            get(&client, &ns, "m").await.spec.replicas == 7
                && track(&client, &ns, "m", "stable").await.map(|t| t.1) == Some(7)
        })
        .await;
        let md = wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        assert_eq!(md.status.as_ref().unwrap().replicas, 7);
        assert_eq!(md.status.as_ref().unwrap().selector.as_deref(), Some("modelship.io/name=m"));
        // The operator's field manager owns status only, never spec.replicas.
        for entry in md.metadata.managed_fields.unwrap_or_default() {
            if entry.manager.as_deref() == Some("modelship-operator") {
                assert_eq!(entry.subresource.as_deref(), Some("status"), "{entry:?}");
            }
        }
    })
    .await;
}

/// S18: during an API outage the operator stays up, its liveness fails after the configured
/// window, and it resumes as soon as the API is back, picking up changes made meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn api_outage_is_survived() {
    with_namespace(async |client, ns| {
        let (link, mut operator) = operator_behind_link(
            &ns,
            "solo",
            &["--leader-elect=false", "--watch-failure-seconds", "3"],
        )
        .await;
        apply(&client, &ns, model("m", "1", 2, json!({"type": "RollingUpdate"}))).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        assert_eq!(operator.admin_get("/healthz").await.map(|r| r.0), Some(200));

        link.cut();
        wait_until(Duration::from_secs(20), "liveness to fail", async || {
            operator.admin_get("/healthz").await.map(|r| r.0) == Some(503)
        })
        .await;
        patch_spec(&client, &ns, "m", json!({"model": {"version": "2"}})).await;
        hold_for(Duration::from_secs(3), "the operator to stay up", async || operator.alive())
            .await;
        link.restore();
        let restored = Instant::now();
        // The change made during the outage is taken up as soon as the watches are back
        // (each retries at most 5 s apart; kube's default would wait up to 30 s). Rolling it
        // out then takes as long as the pods take to start, which is the node's business.
        wait_for(&client, &ns, "m", "the change made during the outage observed", T, current).await;
        let observed_after = restored.elapsed();
        eprintln!("observed {observed_after:?} after the API came back");
        assert!(
            observed_after <= Duration::from_secs(10),
            "the operator took up the change {observed_after:?} after the API came back"
        );
        wait_for(&client, &ns, "m", "version 2 rolled out after the outage", T, |md| {
            current(md) && md.status.as_ref().and_then(|s| s.stable_version.as_deref()) == Some("2")
        })
        .await;
        wait_until(T, "liveness to pass again", async || {
            operator.admin_get("/healthz").await.map(|r| r.0) == Some(200)
        })
        .await;
    })
    .await;
}

/// S19: with a fifth of the operator's writes answered 409 and each of its watch streams
/// delayed by up to 2 s, a canary rolls out, the user aborts it while a weight change is in
/// flight, and a new version rolls forward: the rollouts converge, the abort stands, no status
/// ever says Degraded, and no object gets more than 5 writes a second.
#[tokio::test(flavor = "multi_thread")]
async fn conflicts_and_slow_watches_never_fail_a_rollout() {
    with_namespace(async |client, ns| {
        let chaos =
            Chaos { conflict_percent: 20, max_watch_delay: Duration::from_secs(2), seed: 19 };
        let api = ChaosApi::start(client.clone(), chaos).await;
        let kubeconfig = api.kubeconfig(&tempdir());
        let operator = OperatorProcess::start_full(
            &ns,
            "solo",
            &["--leader-elect=false"],
            &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        );
        let statuses = record_statuses(&client, &ns);
        const SLOW: Duration = Duration::from_secs(90);

        apply(
            &client,
            &ns,
            model("m", "1", 4, json!({"type": "Canary", "canary": {"weight": 50}})),
        )
        .await;
        wait_phase(&client, &ns, "m", Phase::Healthy, SLOW).await;
        patch_spec(&client, &ns, "m", json!({"model": {"version": "2"}})).await;
        wait_phase(&client, &ns, "m", Phase::Paused, SLOW).await;
        assert_eq!(split(&client, &ns, "m").await, (2, 2));

        patch_spec(&client, &ns, "m", json!({"strategy": {"canary": {"weight": 75}}})).await;
        patch_spec(&client, &ns, "m", json!({"model": {"version": "1"}})).await;
        let md = wait_phase(&client, &ns, "m", Phase::Healthy, SLOW).await;
        assert_eq!(md.spec.model.version, "1", "the user's abort stands");
        wait_until(SLOW, "stable to hold all 4 pods again", async || {
            split(&client, &ns, "m").await == (4, 0)
        })
        .await;

        patch_spec(
            &client,
            &ns,
            "m",
            json!({"model": {"version": "3"}, "strategy": {"canary": {"weight": 100}}}),
        )
        .await;
        wait_for(&client, &ns, "m", "version 3 to be promoted", SLOW, |md| {
            current(md)
                && models::phase(md) == Some(Phase::Healthy)
                && md.status.as_ref().and_then(|s| s.stable_version.as_deref()) == Some("3")
        })
        .await;
        wait_until(SLOW, "version 3 on all 4 stable pods", async || {
            track(&client, &ns, "m", "stable").await == Some(("3".into(), 4, 4))
        })
        .await;

        let degraded: Vec<String> = statuses
            .lock()
            .unwrap()
            .iter()
            .filter(|s| {
                s.phase == Some(Phase::Degraded)
                    || s.conditions.iter().any(|c| c.type_ == "Degraded" && c.status == "True")
            })
            .map(|s| serde_json::to_string(s).unwrap())
            .collect();
        assert!(degraded.is_empty(), "a status said Degraded: {degraded:#?}");
        let writes = api.writes();
        let conflicted = writes.iter().filter(|w| w.conflicted).count();
        assert!(conflicted >= 3, "only {conflicted} of {} writes were answered 409", writes.len());
        let page = operator.metrics().await;
        let seen_409 = page
            .lines()
            .filter(|l| l.starts_with("modelship_operator_reconcile_errors_total{"))
            .filter(|l| l.contains("category=\"conflict\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        assert!(seen_409 >= 1.0, "the operator counted no conflict; metrics:\n{page}");
        let (most, path) = busiest_object(&writes, Duration::from_secs(5));
        eprintln!(
            "{} writes, {conflicted} answered 409, the operator counted {seen_409}; busiest \
             object: {most} writes in 5 s ({path})",
            writes.len()
        );
        assert!(most <= 25, "{most} writes to {path} within 5 s");
    })
    .await;
}

/// Every status of the namespace's ModelDeployments the API server stores, as a watch sees
/// them.
fn record_statuses(
    client: &kube::Client,
    namespace: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<modelship_crds::ModelDeploymentStatus>>> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
        while let Some(event) = stream.next().await {
            if let Ok(Some(status)) = event.map(|md| md.status) {
                sink.lock().unwrap().push(status);
            }
        }
    });
    seen
}

/// SIGTERM ends the operator promptly even while the API server is unreachable.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_while_the_api_is_unreachable() {
    with_namespace(async |client, ns| {
        let (link, mut operator) =
            operator_behind_link(&ns, "solo", &["--leader-elect=false", "--shutdown-seconds", "5"])
                .await;
        apply(&client, &ns, model("m", "1", 1, json!({"type": "RollingUpdate"}))).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        link.cut();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (code, took) = operator.terminate(Duration::from_secs(20));
        assert_eq!(code, Some(0), "exit after SIGTERM ({took:?}); log:\n{}", operator.log_tail());
        assert!(took <= Duration::from_secs(6), "shutdown took {took:?}");
    })
    .await;
}

/// S21: an object the operator cannot decode (stored under an older, looser schema) is
/// skipped, and the others are reconciled. Runs on its own control plane, because it changes
/// the CRD.
#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_object_does_not_stop_the_others() {
    let plane = modelship_tests::controlplane::OwnControlPlane::start();
    let client = plane.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let strict = ModelDeployment::crd();
    let mut loose = serde_json::to_value(&strict).unwrap();
    // The looser schema of an imagined earlier release: any model format.
    loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["model"]["properties"]["format"] = json!({"type": "string"});
    let apply_crd = async |body: &serde_json::Value| {
        crds.patch(
            "modeldeployments.modelship.io",
            &PatchParams::apply("test").force(),
            &Patch::Apply(body),
        )
        .await
        .expect("apply the CRD");
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    apply_crd(&loose).await;
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &kube::api::ApiResource::erase::<ModelDeployment>(&()),
    );
    let mut bad = model("old", "1", 1, json!({"type": "RollingUpdate"}));
    bad["spec"]["model"]["format"] = json!("pmml");
    wait_until(T, "the loose schema to serve", async || {
        raw.patch("old", &PatchParams::apply("test").force(), &Patch::Apply(&bad)).await
    })
    .await;
    apply_crd(&serde_json::to_value(&strict).unwrap()).await;

    let operator = OperatorProcess::start_full(
        "default",
        "solo",
        &["--leader-elect=false"],
        &[("KUBECONFIG", plane.kubeconfig.to_str().unwrap())],
    );
    apply(&client, "default", model("good", "1", 1, json!({"type": "RollingUpdate"}))).await;
    // There is no node on this control plane: children and status are what we can see.
    wait_for(&client, "default", "good", "good to be reconciled", T, |md| {
        current(md) && models::phase(md) == Some(Phase::Progressing)
    })
    .await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "default");
    assert!(deployments.get_opt("good-stable").await.unwrap().is_some());
    assert!(deployments.get_opt("old-stable").await.unwrap().is_none());
    let skipped = sum_metric(&operator.metrics().await, "modelship_operator_invalid_objects_total");
    assert!(skipped >= 1.0, "the undecodable object was counted ({skipped})");
}

/// An operator in `namespace` whose API traffic goes through a link the test can cut.
async fn operator_behind_link(
    namespace: &str,
    identity: &str,
    args: &[&str],
) -> (FaultyLink, OperatorProcess) {
    let dir = tempdir();
    let link = FaultyLink::start(api_server(&cluster().kubeconfig)).await;
    let via = kubeconfig_via(&cluster().kubeconfig, &link, &dir);
    let operator = OperatorProcess::start_full(
        namespace,
        identity,
        args,
        &[("KUBECONFIG", via.to_str().unwrap())],
    );
    (link, operator)
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(modelship_tests::harness::unique_name("modelship-faults"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
