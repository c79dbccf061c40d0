//! Observe: the children one ModelDeployment owns, read from the watch caches, and the
//! planner's view of them. Only in-memory caches are read, never the API server; the
//! conversions are pure.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use modelship_crds::{ModelDeployment, labels};

use crate::analysis::scrape::ScrapeTarget;
use crate::desired::{HTTP_PORT_NAME, Kind, Running, deployment_name, preview_service_name};
use crate::plan::{Endpoint, Observed, Track, TrackState};

pub mod slices;
pub use slices::SliceIndex;

/// The label EndpointSlices carry with their Service's name.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The watch caches of the children.
#[derive(Clone)]
pub struct Stores {
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub hpas: Store<HorizontalPodAutoscaler>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub slices: Store<EndpointSlice>,
    /// The slices of each Service, fed by the same watch as `slices`.
    pub slice_index: SliceIndex,
}

/// What the rest of a reconcile works from.
pub struct Snapshot {
    pub running: Running,
    /// The planner's view of `running` and of the main Service's endpoints.
    pub observed: Observed,
    /// The main and the preview Service's EndpointSlices: where analysis finds the pods to
    /// scrape (a blue-green candidate is analysed behind the preview Service before the
    /// switch).
    pub slices: Vec<Arc<EndpointSlice>>,
}

impl Snapshot {
    /// Ready pods of one track behind the main or the preview Service, with the address to
    /// scrape.
    pub fn scrape_targets(
        &self,
        md_name: &str,
        namespace: &str,
        track: Track,
    ) -> Vec<ScrapeTarget> {
        let deployment = deployment_name(md_name, track);
        scrape_targets(namespace, &deployment, self.slices.iter().map(|s| &**s))
    }
}

/// Read what `md` owns from the caches.
pub fn snapshot(stores: &Stores, md: &ModelDeployment, namespace: &str) -> Snapshot {
    let name = md.name_any();
    let deployments = Track::ALL
        .into_iter()
        .filter_map(|track| {
            owned_in(&stores.deployments, &deployment_name(&name, track), namespace, md)
                .map(|d| (track, d))
        })
        .collect();
    let running = Running {
        deployments,
        service: owned_in(&stores.services, &name, namespace, md),
        preview: owned_in(&stores.services, &preview_service_name(&name), namespace, md),
        hpa: owned_in(&stores.hpas, &name, namespace, md),
        pdb: owned_in(&stores.pdbs, &name, namespace, md),
    };
    let preview = preview_service_name(&name);
    let slices: Vec<Arc<EndpointSlice>> = [&name, &preview]
        .into_iter()
        .flat_map(|service| stores.slice_index.of_service(namespace, service))
        .filter_map(|slice| stores.slices.get(&ObjectRef::new(&slice).within(namespace)))
        .collect();
    let main = slices.iter().filter(|s| s.labels().get(SERVICE_NAME_LABEL) == Some(&name));
    let observed = observed(&running, main.map(|s| &**s));
    Snapshot { running, observed, slices }
}

/// The resourceVersion of the cached child of `kind` named `name`; `None` when not cached.
pub fn cached_version(stores: &Stores, kind: Kind, namespace: &str, name: &str) -> Option<String> {
    fn version<K: Resource<DynamicType = ()> + Clone>(
        store: &Store<K>,
        key: &ObjectRef<K>,
    ) -> Option<String> {
        store.get(key).and_then(|object| object.meta().resource_version.clone())
    }
    match kind {
        Kind::Deployment => version(&stores.deployments, &ObjectRef::new(name).within(namespace)),
        Kind::Service => version(&stores.services, &ObjectRef::new(name).within(namespace)),
        Kind::Hpa => version(&stores.hpas, &ObjectRef::new(name).within(namespace)),
        Kind::Pdb => version(&stores.pdbs, &ObjectRef::new(name).within(namespace)),
    }
}

/// The cached object of that name, if `md` owns it.
fn owned_in<K>(
    store: &Store<K>,
    name: &str,
    namespace: &str,
    md: &ModelDeployment,
) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let key = ObjectRef::new(name).within(namespace);
    store.get(&key).filter(|object| owned_by(&**object, md))
}

/// Whether `md` is the controller owner of `object`.
pub fn owned_by<K: Resource>(object: &K, md: &ModelDeployment) -> bool {
    let uid = md.metadata.uid.as_deref();
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// The model version a Deployment's pod template carries (empty when unlabelled).
pub fn template_version(deployment: &Deployment) -> &str {
    deployment
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(labels::VERSION))
        .map_or("", String::as_str)
}

/// What one track's Deployment says.
pub fn track_state(deployment: &Deployment) -> TrackState {
    let spec = Some(&deployment.spec);
    let status = deployment.status.clone().unwrap_or_default();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let version = template_version(deployment).to_string();
    let generation = deployment.metadata.generation.unwrap_or(0);
    // Caught up with the latest spec, and every pod comes from the latest template.
    let rolled_out = status.observed_generation.unwrap_or(0) >= generation
        && status.updated_replicas.unwrap_or(0) == replicas
        && status.replicas.unwrap_or(0) == replicas;
    TrackState { version, replicas, ready: status.ready_replicas.unwrap_or(0), rolled_out }
}

/// Which track a Service selects: `Some(track)` for one, `None` for all of the model's.
pub fn selected_track(service: &Service) -> Option<Track> {
    service.spec.as_ref()?.selector.as_ref()?.get(labels::TRACK).and_then(|t| Track::parse(t))
}

/// Endpoints of a Service from its EndpointSlices.
pub fn endpoints<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for slice in slices {
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(pod) = endpoint.target_ref.as_ref().and_then(|r| r.name.clone()) else {
                continue;
            };
            // A missing `ready` means ready, per the EndpointSlice API.
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            out.push(Endpoint { pod, ready });
        }
    }
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    out
}

/// Ready pods of `deployment_name` behind a Service, with the address to scrape.
pub fn scrape_targets<'a>(
    namespace: &str,
    deployment_name: &str,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Vec<ScrapeTarget> {
    let prefix = format!("{deployment_name}-");
    let mut out = Vec::new();
    for slice in slices {
        let port = slice
            .ports
            .as_ref()
            .and_then(|ports| {
                ports.iter().find(|p| p.name.as_deref() == Some(HTTP_PORT_NAME)).or(ports.first())
            })
            .and_then(|p| p.port);
        let Some(port) = port else { continue };
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let pod = endpoint.target_ref.as_ref().and_then(|r| r.name.clone());
            if let (true, Some(pod), Some(ip)) = (ready, pod, endpoint.addresses.first())
                && pod.starts_with(&prefix)
            {
                out.push(ScrapeTarget {
                    namespace: namespace.to_string(),
                    pod,
                    ip: ip.clone(),
                    port,
                });
            }
        }
    }
    // A pod behind both Services is scraped once.
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    out.dedup_by(|a, b| a.pod == b.pod);
    out
}

/// Assemble the planner's view.
pub fn observed<'a>(
    running: &Running,
    main_service_slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Observed {
    let tracks = running.deployments.iter().map(|(track, d)| (*track, track_state(d))).collect();
    Observed {
        tracks,
        service_track: running.service.as_deref().map(selected_track),
        endpoints: endpoints(main_service_slices),
    }
}

#[cfg(test)]
mod tests;
