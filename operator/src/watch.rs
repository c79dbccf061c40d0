//! The watches: a trimmed reflector per child kind, retried quickly after an outage, each
//! event feeding the liveness check.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::metrics::Metrics;

/// The annotation `kubectl apply` leaves: a full copy of the object, never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An API over every namespace, or over the one watched.
pub fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Drop what no cached object's metadata is read for: managed fields (most of a small
/// object's size) and the full copy `kubectl apply` leaves in an annotation.
pub fn trim_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// What the operator never reads of a cached child, dropped before it is stored: the caches
/// hold a copy of every child of every model, and their size is most of the operator's
/// memory.
pub trait Trim {
    fn trim(&mut self) {}
}

/// Deployments: the size, the version label of the pod template and the status counts are
/// read. The pod template's spec (most of a Deployment) is not: a track is resized through
/// the scale subresource, and every other write is built from the ModelDeployment.
impl Trim for Deployment {
    fn trim(&mut self) {
        let template = &mut self.spec.template;
        template.spec = None;
        if let Some(meta) = template.metadata.as_mut() {
            meta.annotations = None;
        }
        if let Some(status) = self.status.as_mut() {
            status.conditions = None;
        }
    }
}

/// Autoscalers: only our applied content is read, never the status the autoscaler writes.
impl Trim for HorizontalPodAutoscaler {
    fn trim(&mut self) {
        self.status = None;
    }
}

/// Disruption budgets: as autoscalers.
impl Trim for PodDisruptionBudget {
    fn trim(&mut self) {
        self.status = None;
    }
}

impl Trim for Service {}

/// EndpointSlices: each endpoint's addresses, readiness and pod are read; its node, zone
/// and hints are not.
impl Trim for EndpointSlice {
    fn trim(&mut self) {
        for endpoint in self.endpoints.iter_mut().flatten() {
            endpoint.node_name = None;
            endpoint.zone = None;
            endpoint.hints = None;
            endpoint.deprecated_topology = None;
        }
    }
}

/// A reflector over `K`: the store to read, and the stream of changed objects to trigger on.
/// `follow` sees every event the store applies, to keep an index beside it.
pub fn cached<K>(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
    metrics: &Arc<Metrics>,
    follow: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> (Store<K>, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Trim
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api::<K>(client, namespace), config)
        .backoff(WatchBackoff::default())
        .modify(|object: &mut K| {
            trim_metadata(object.meta_mut());
            object.trim();
        })
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                follow(event);
            }
        })
        .inspect(watch_health::<K>(metrics))
        .touched_objects();
    (reader, stream)
}

/// Watch retries double from 0.5 s to at most 5 s, and start over after a success: a watch
/// resumes within seconds of the API server coming back (kube's default waits up to 30 s),
/// at the cost of one attempt per watch every 5 s during an outage.
#[derive(Clone, Copy)]
pub struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(wait)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// The controller's pause after a watch error, before it polls any of its watches again:
/// none. Each watch already waits out its own [`WatchBackoff`]; a shared pause on top only
/// queued up, since every watch's pending error bought one more full pause for all of them,
/// and after an outage the recovered watches sat idle for one pause per watch (11 s with six
/// watches; kube's default pause grows to 30 s).
#[derive(Clone, Copy, Default)]
pub struct NoTriggerPause;

impl Iterator for NoTriggerPause {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for NoTriggerPause {
    fn reset(&mut self) {}
}

/// Feeds the liveness check: every watch event or error of `K`'s watch.
pub fn watch_health<K: Resource<DynamicType = ()>>(
    metrics: &Arc<Metrics>,
) -> impl Fn(&Result<watcher::Event<K>, watcher::Error>) + Send + 'static {
    let metrics = metrics.clone();
    move |event| match event {
        Ok(_) => metrics.watch_ok(),
        Err(error) => {
            warn!(%error, kind = %K::kind(&()), "watch failed");
            metrics.watch_failed(Timestamp::now().as_second());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_keeps_what_is_read_and_drops_the_rest() {
        let mut deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "m-stable", "annotations": {LAST_APPLIED: "{}", "keep": "me"},
                         "managedFields": [{"manager": "x"}]},
            "spec": {"replicas": 2, "selector": {}, "template": {
                "metadata": {"labels": {"modelship.io/version": "3"}, "annotations": {"a": "b"}},
                "spec": {"containers": [{"name": "serving"}]}}},
            "status": {"readyReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]},
        }))
        .unwrap();
        trim_metadata(&mut deployment.metadata);
        deployment.trim();
        assert_eq!(deployment.metadata.managed_fields, None);
        assert_eq!(deployment.metadata.annotations.as_ref().unwrap().len(), 1, "only ours stay");
        assert_eq!(deployment.spec.replicas, Some(2), "the size stays");
        assert_eq!(crate::observe::template_version(&deployment), "3", "the version label stays");
        let template = &deployment.spec.template;
        assert_eq!(template.spec, None, "the pod spec goes");
        assert_eq!(template.metadata.as_ref().unwrap().annotations, None);
        let status = deployment.status.as_ref().unwrap();
        assert_eq!((status.ready_replicas, status.conditions.as_ref()), (Some(2), None));

        let mut hpa: HorizontalPodAutoscaler =
            serde_json::from_value(serde_json::json!({"status": {"desiredReplicas": 3}})).unwrap();
        hpa.trim();
        assert_eq!(hpa.status, None);

        let mut slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["198.18.0.9"], "conditions": {"ready": true},
                           "nodeName": "n", "zone": "z", "targetRef": {"name": "m-stable-x"}}],
        }))
        .unwrap();
        slice.trim();
        let endpoint = &slice.endpoints.as_ref().unwrap()[0];
        assert_eq!((endpoint.node_name.as_ref(), endpoint.zone.as_ref()), (None, None));
        assert_eq!(endpoint.addresses, ["198.18.0.9"]);
        assert_eq!(endpoint.conditions.as_ref().unwrap().ready, Some(true));
        assert_eq!(endpoint.target_ref.as_ref().unwrap().name.as_deref(), Some("m-stable-x"));
    }

    #[test]
    fn watch_retries_double_up_to_five_seconds_and_start_over() {
        use kube::runtime::utils::Backoff;
        let mut backoff = WatchBackoff::default();
        let waits: Vec<u64> = backoff.by_ref().take(6).map(|d| d.as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn the_controller_never_pauses_its_watches_and_never_gives_up() {
        let pauses: Vec<Duration> = NoTriggerPause.take(10).collect();
        assert_eq!(pauses, [Duration::ZERO; 10]);
    }
}
