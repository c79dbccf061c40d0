//! Kubernetes helpers: the bench's ModelDeployments, namespaces, waits and time arithmetic.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use modelship_crds::ModelDeployment;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::procs::round;
use crate::{FAKE_IMAGE, POLL, Res, USER_MANAGER};

pub fn model(name: &str, version: &str, replicas: Option<i32>, strategy: Value) -> Value {
    let mut spec = json!({
        "model": {"version": version, "uri": "file:///models/model.onnx"},
        "serving": {
            "image": FAKE_IMAGE,
            "drainSeconds": 0,
            // Small requests so that thousands of pods fit on the one local node.
            "resources": {
                "requests": {"cpu": "10m", "memory": "32Mi"},
                "limits": {"memory": "64Mi"},
            },
        },
        "strategy": strategy,
    });
    match replicas {
        Some(replicas) => spec["replicas"] = json!(replicas),
        // With autoscaling the HPA owns the replica count: one Deployment, one Service and
        // one HPA per ModelDeployment, the 3 children the design counts (the disruption
        // budget, a fourth, is off so both sides of the comparison write the same objects).
        None => {
            spec["autoscaling"] = json!({"minReplicas": 1, "maxReplicas": 2});
            spec["disruptionBudget"] = json!({"enabled": false});
        }
    }
    json!({
        "apiVersion": "modelship.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": spec,
    })
}

pub fn scale_model(name: &str) -> Value {
    model(name, "1", None, json!({"type": "RollingUpdate"}))
}

pub async fn apply_model(api: &Api<ModelDeployment>, object: &Value) -> Res<ModelDeployment> {
    let name = object["metadata"]["name"].as_str().ok_or("a name")?.to_string();
    let params = PatchParams::apply(USER_MANAGER).force();
    Ok(api.patch(&name, &params, &Patch::Apply(object)).await?)
}

pub async fn create_models(
    client: &Client,
    namespace: &str,
    objects: Vec<Value>,
    concurrency: usize,
) -> Res<Vec<ModelDeployment>> {
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
    let results: Vec<Res<ModelDeployment>> = stream::iter(objects.iter())
        .map(|object| apply_model(&api, object))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Creates `name` and waits for its default ServiceAccount, which pods need.
pub async fn ensure_namespace(client: &Client, name: &str) -> Res<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match namespaces.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {
            return Err(
                format!("namespace {name} exists already: use a fresh control plane").into()
            );
        }
        Err(error) => return Err(error.into()),
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    wait(Duration::from_secs(60), &format!("the default ServiceAccount of {name}"), async || {
        Ok(accounts.get_opt("default").await?.is_some())
    })
    .await
}

pub async fn delete_namespace(client: &Client, name: &str, timeout: Duration) -> Res<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(name, &DeleteParams::background()).await?;
    wait(timeout, &format!("namespace {name} to be deleted"), async || {
        Ok(namespaces.get_opt(name).await?.is_none())
    })
    .await
}

/// Polls `check` every 20 ms until it returns true; fails after `timeout`.
pub async fn wait<F>(timeout: Duration, what: &str, mut check: F) -> Res<()>
where
    F: AsyncFnMut() -> Res<bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Seconds from `start` at which 10, 25, 50, 75, 90 and 100 % of `times` had happened: the
/// shape of a phase (a straight line is a steady rate).
pub fn progress(start: Instant, mut times: Vec<Instant>) -> BTreeMap<String, f64> {
    times.sort();
    let mut out = BTreeMap::new();
    if times.is_empty() {
        return out;
    }
    for percent in [10usize, 25, 50, 75, 90, 100] {
        let index = (percent * times.len()).div_ceil(100).clamp(1, times.len()) - 1;
        out.insert(format!("p{percent:03}"), round(since(start, times[index]), 3));
    }
    out
}

pub fn since(start: Instant, end: Instant) -> f64 {
    end.saturating_duration_since(start).as_secs_f64()
}

pub fn signed_ms(start: Instant, end: Instant) -> f64 {
    if end >= start {
        end.duration_since(start).as_secs_f64() * 1000.0
    } else {
        -(start.duration_since(end).as_secs_f64() * 1000.0)
    }
}
