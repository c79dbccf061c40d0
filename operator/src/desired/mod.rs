//! Build: pure functions from (ModelDeployment, plan, running children) to the objects to
//! apply and the objects to delete. No client is needed to call or to test them.
//!
//! - [`children`]: the whole desired set of one ModelDeployment, and what goes, given what
//!   [`Running`];
//! - [`deployment()`], [`service()`], [`hpa()`], [`pdb()`]: one object each;
//! - [`pod_security`]: the Pod Security `restricted` check every pod template must pass.
//!
//! Every object carries a controller owner reference, so deleting the ModelDeployment
//! deletes its children, and an `applied-hash` annotation, so an unchanged object is never
//! sent again.

mod children;
mod deployment;
mod hpa;
mod pdb;
pub mod pod_security;
mod service;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use modelship_crds::{ModelDeployment, labels};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::plan::Track;

pub use children::{Children, DeploymentWrite, Kind, Removal, Running, children};
pub use deployment::{RUN_AS_USER, deployment, parse_pvc_uri};
pub use hpa::hpa;
pub use pdb::pdb;
pub use service::service;

/// Annotation holding the hash of what the operator last applied to a child.
pub const APPLIED_HASH: &str = "modelship.io/applied-hash";
/// Name of the serving container's port, which the Services and probes target.
pub const HTTP_PORT_NAME: &str = "http";
/// `app.kubernetes.io/name` of every child and pod.
const APP_NAME: &str = "modelship-serving";
const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
const APP_INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// Settings that come from the operator's configuration, not from the resource.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub serving_image: String,
}

pub fn deployment_name(md_name: &str, track: Track) -> String {
    format!("{md_name}-{}", track.as_str())
}

pub fn preview_service_name(md_name: &str) -> String {
    format!("{md_name}-preview")
}

/// Labels that select the pods of one track.
pub fn track_selector(md_name: &str, track: Track) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_string(), md_name.to_string()),
        (labels::TRACK.to_string(), track.as_str().to_string()),
    ])
}

/// Selector of a Service: one track, or every track of the model.
pub fn service_selector(md_name: &str, track: Option<Track>) -> BTreeMap<String, String> {
    match track {
        Some(track) => track_selector(md_name, track),
        None => BTreeMap::from([(labels::NAME.to_string(), md_name.to_string())]),
    }
}

/// `status.selector`: the pods the autoscaler measures, as a label-selector string.
pub fn selector_string(md_name: &str, track: Option<Track>) -> String {
    service_selector(md_name, track)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The recommended `app.kubernetes.io` labels of every child and pod of `md_name`.
fn app_labels(md_name: &str) -> [(String, String); 2] {
    [
        (APP_NAME_LABEL.to_string(), APP_NAME.to_string()),
        (APP_INSTANCE_LABEL.to_string(), md_name.to_string()),
    ]
}

fn owner(md: &ModelDeployment) -> OwnerReference {
    OwnerReference {
        api_version: ModelDeployment::api_version(&()).into_owned(),
        kind: ModelDeployment::kind(&()).into_owned(),
        name: md.name_any(),
        uid: md.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

fn child_meta(md: &ModelDeployment, name: String, extra: &[(&str, &str)]) -> ObjectMeta {
    let mut object_labels = BTreeMap::from([
        (labels::NAME.to_string(), md.name_any()),
        (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
    ]);
    object_labels.extend(app_labels(&md.name_any()));
    for (k, v) in extra {
        object_labels.insert((*k).to_string(), (*v).to_string());
    }
    ObjectMeta {
        name: Some(name),
        namespace: md.namespace(),
        labels: Some(object_labels),
        owner_references: Some(vec![owner(md)]),
        ..ObjectMeta::default()
    }
}

/// Stamp the object's content hash into its annotations.
pub fn with_hash<T: Serialize + Resource>(mut object: T) -> T {
    let body = serde_json::to_vec(&object).expect("Kubernetes objects serialize to JSON");
    let digest = Sha256::digest(&body);
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(APPLIED_HASH.into(), hash);
    object
}

/// The hash an object was applied with, if any.
pub fn applied_hash<T: Resource>(object: &T) -> Option<&str> {
    object.meta().annotations.as_ref()?.get(APPLIED_HASH).map(String::as_str)
}

/// Whether a running child already holds what applying `wanted` would write, so the apply
/// can be skipped: the same applied hash.
pub trait Applied: Resource + Sized {
    fn holds(&self, wanted: &Self) -> bool {
        applied_hash(self).is_some() && applied_hash(self) == applied_hash(wanted)
    }
}

/// Deployments: the same hash and the same size. A resize goes through the scale subresource
/// and leaves the hash as it was.
impl Applied for Deployment {
    fn holds(&self, wanted: &Self) -> bool {
        applied_hash(self).is_some()
            && applied_hash(self) == applied_hash(wanted)
            && self.spec.replicas == wanted.spec.replicas
    }
}

impl Applied for Service {}
impl Applied for HorizontalPodAutoscaler {}
impl Applied for PodDisruptionBudget {}

#[cfg(test)]
mod tests;
