//! Helpers for ModelDeployments in end-to-end tests: build, apply, patch, and read what the
//! operator made of them.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use modelship_crds::{ModelDeployment, Phase};
use serde_json::{Value, json};

use axum::http::Method;

use crate::harness::{MODELS_CLAIM, TestHttp, routed_service_addr, service_addr, wait_until};
use crate::load::Load;

/// A serving fixture in the namespace's `models` claim, as a `pvc://` URI.
pub fn fixture_uri(name: &str) -> String {
    format!("pvc://{MODELS_CLAIM}/{name}")
}

/// What every test model's pods ask for: little, so that many fit on the test node's two
/// cores, with the operator's default memory limit.
fn test_serving() -> Value {
    json!({
        "drainSeconds": 2,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "512Mi"}},
    })
}

/// A ModelDeployment of `replicas` serving pods with the small logistic-regression fixture:
/// `strategy` is the `spec.strategy` object. For control-plane behaviour; any version serves
/// the same file.
pub fn model(name: &str, version: &str, replicas: i32, strategy: Value) -> Value {
    served_model(name, version, "logreg.onnx", replicas, strategy)
}

/// A ModelDeployment serving the fixture `fixture` from the `models` claim.
pub fn served_model(
    name: &str,
    version: &str,
    fixture: &str,
    replicas: i32,
    strategy: Value,
) -> Value {
    json!({
        "apiVersion": "modelship.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": name, "version": version, "uri": fixture_uri(fixture)},
            "replicas": replicas,
            "serving": test_serving(),
            "strategy": strategy,
        }
    })
}

pub fn models(client: &Client, namespace: &str) -> Api<ModelDeployment> {
    Api::namespaced(client.clone(), namespace)
}

/// Server-side apply a ModelDeployment as a user would (`kubectl apply --server-side`).
pub async fn apply(client: &Client, namespace: &str, object: Value) -> ModelDeployment {
    let name = object["metadata"]["name"].as_str().expect("a name").to_string();
    models(client, namespace)
        .patch(&name, &PatchParams::apply("test-user").force(), &Patch::Apply(&object))
        .await
        .unwrap_or_else(|e| panic!("apply ModelDeployment {name}: {e}"))
}

/// A JSON merge patch of the spec, as `kubectl patch --type merge` does.
pub async fn patch_spec(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: Value,
) -> ModelDeployment {
    models(client, namespace)
        .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": spec})))
        .await
        .unwrap_or_else(|e| panic!("patch ModelDeployment {name}: {e}"))
}

pub async fn get(client: &Client, namespace: &str, name: &str) -> ModelDeployment {
    models(client, namespace).get(name).await.unwrap_or_else(|e| panic!("get {name}: {e}"))
}

/// Whether the status describes the current generation.
pub fn current(md: &ModelDeployment) -> bool {
    let observed = md.status.as_ref().and_then(|s| s.observed_generation);
    observed.is_some() && observed == md.metadata.generation
}

pub fn phase(md: &ModelDeployment) -> Option<Phase> {
    md.status.as_ref().and_then(|s| s.phase)
}

/// Wait until the status describes the current generation and shows `want`.
pub async fn wait_phase(
    client: &Client,
    namespace: &str,
    name: &str,
    want: Phase,
    timeout: Duration,
) -> ModelDeployment {
    wait_until(timeout, &format!("{name} to be {want:?}"), async || {
        let md = get(client, namespace, name).await;
        if current(&md) && phase(&md) == Some(want) {
            Ok(md)
        } else {
            Err(format!(
                "phase {:?}, status {}",
                phase(&md),
                serde_json::to_string(&md.status).unwrap_or_default()
            ))
        }
    })
    .await
}

/// Wait until `check` holds for the ModelDeployment.
pub async fn wait_for(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&ModelDeployment) -> bool,
) -> ModelDeployment {
    wait_until(timeout, what, async || {
        let md = get(client, namespace, name).await;
        if check(&md) {
            Ok(md)
        } else {
            Err(format!("status {}", serde_json::to_string(&md.status).unwrap_or_default()))
        }
    })
    .await
}

/// A `/predict` body for the serving fixtures the tests deploy (20 features each).
pub fn predict_body() -> String {
    let features: Vec<f64> = (0..20).map(|i| f64::from(i) / 10.0 - 1.0).collect();
    json!({"features": features}).to_string()
}

/// Predictions on `service` at `rate` a second, from when kube-proxy routes it until
/// [`Load::stop`] (or `cap` at the most).
pub async fn prediction_load(
    client: &Client,
    namespace: &str,
    service: &str,
    rate: u32,
    cap: Duration,
) -> Load {
    let target = routed_service_addr(client, namespace, service).await;
    Load::start(target, "/predict", &predict_body(), rate, cap)
}

/// Wait until a prediction on a new connection to `service` is answered by `version` (each
/// new connection may reach another pod: kube-proxy picks one per connection).
pub async fn wait_answered_by(
    client: &Client,
    namespace: &str,
    service: &str,
    version: &str,
    timeout: Duration,
) {
    let target = service_addr(client, namespace, service).await;
    wait_until(timeout, &format!("an answer from version {version}"), async || {
        let answer = TestHttp::new()
            .request(target, Method::POST, "/predict", Some(predict_body().into()))
            .await
            .map_err(|e| e.to_string())?;
        let answered = answer.json()["model_version"].as_str().unwrap_or_default().to_string();
        if answered == version { Ok(()) } else { Err(format!("answered by {answered}")) }
    })
    .await;
}

/// A track's Deployment: (version in the template, spec.replicas, ready replicas).
pub async fn track(
    client: &Client,
    namespace: &str,
    name: &str,
    track: &str,
) -> Option<(String, i32, i32)> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let d = deployments.get_opt(&format!("{name}-{track}")).await.ok()??;
    let version = modelship_operator::observe::template_version(&d).to_string();
    let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    Some((version, d.spec.replicas.unwrap_or(0), ready))
}

/// Replica counts of the stable and canary tracks (0 for a missing one).
pub async fn split(client: &Client, namespace: &str, name: &str) -> (i32, i32) {
    let stable = track(client, namespace, name, "stable").await.map_or(0, |t| t.1);
    let canary = track(client, namespace, name, "canary").await.map_or(0, |t| t.1);
    (stable, canary)
}

/// The main Service's selector.
pub async fn selector(client: &Client, namespace: &str, service: &str) -> BTreeMap<String, String> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    services
        .get_opt(service)
        .await
        .ok()
        .flatten()
        .and_then(|s| s.spec)
        .and_then(|s| s.selector)
        .unwrap_or_default()
}

/// How many pods of a model's track exist, in any state (terminating ones included).
pub async fn pods_of_track(client: &Client, namespace: &str, name: &str, track: &str) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("modelship.io/name={name},modelship.io/track={track}");
    pods.list(&ListParams::default().labels(&selector)).await.expect("list pods").items.len()
}

/// Ready pods of a model by track, with their UIDs.
pub async fn ready_pods(client: &Client, namespace: &str, name: &str) -> BTreeMap<String, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("modelship.io/name={name}")))
        .await
        .expect("list pods");
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}

/// Reasons of the events published about a ModelDeployment, oldest first.
pub async fn event_reasons(client: &Client, namespace: &str, name: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), namespace);
    let mut list = events
        .list(&ListParams::default().fields(&format!("regarding.name={name}")))
        .await
        .expect("list events")
        .items;
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    list.into_iter().filter_map(|e| e.reason).collect()
}

/// Reasons of the events published about a ModelDeployment, once every one of `wanted` is
/// among them: the operator publishes an event just after the status it goes with.
pub async fn wait_event_reasons(
    client: &Client,
    namespace: &str,
    name: &str,
    wanted: &[&str],
) -> Vec<String> {
    wait_until(Duration::from_secs(30), &format!("events {wanted:?}"), async || {
        let reasons = event_reasons(client, namespace, name).await;
        let missing: Vec<&&str> =
            wanted.iter().filter(|w| !reasons.iter().any(|r| r == *w)).collect();
        if missing.is_empty() {
            Ok(reasons)
        } else {
            Err(format!("missing {missing:?} in {reasons:?}"))
        }
    })
    .await
}

/// How often each event reason was published about a ModelDeployment (repeats of one
/// event are folded into an event series by the recorder).
pub async fn event_counts(client: &Client, namespace: &str, name: &str) -> BTreeMap<String, i32> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), namespace);
    let list = events
        .list(&ListParams::default().fields(&format!("regarding.name={name}")))
        .await
        .expect("list events")
        .items;
    let mut counts = BTreeMap::new();
    for event in list {
        let times = event.series.as_ref().map_or(1, |s| s.count);
        *counts.entry(event.reason.unwrap_or_default()).or_default() += times;
    }
    counts
}

/// A condition's (status, reason).
pub fn condition(md: &ModelDeployment, type_: &str) -> Option<(String, String)> {
    md.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Write `/scale` as the HorizontalPodAutoscaler would.
pub async fn scale(client: &Client, namespace: &str, name: &str, replicas: i32) {
    models(client, namespace)
        .patch_scale(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap_or_else(|e| panic!("scale {name}: {e}"));
}
