//! The desired set of one ModelDeployment: every child to apply and every child to delete.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use modelship_crds::ModelDeployment;

use super::{Defaults, deployment, deployment_name, hpa, pdb, preview_service_name, service};
use crate::plan::{Plan, Track};

/// The kinds of children, as metrics and logs name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Deployment,
    Service,
    Hpa,
    Pdb,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "deployment",
            Kind::Service => "service",
            Kind::Hpa => "hpa",
            Kind::Pdb => "pdb",
        }
    }
}

/// The children a ModelDeployment owns (by controller owner reference), as they run.
#[derive(Clone, Debug, Default)]
pub struct Running {
    pub deployments: BTreeMap<Track, Arc<Deployment>>,
    /// The main Service.
    pub service: Option<Arc<Service>>,
    pub preview: Option<Arc<Service>>,
    pub hpa: Option<Arc<HorizontalPodAutoscaler>>,
    pub pdb: Option<Arc<PodDisruptionBudget>>,
}

/// A child to delete.
#[derive(Clone, Debug, PartialEq)]
pub struct Removal {
    pub kind: Kind,
    pub name: String,
}

/// One track's Deployment write.
#[derive(Clone, Debug, PartialEq)]
pub enum DeploymentWrite {
    /// The Deployment built from the spec, server-side applied.
    Apply(Box<Deployment>),
    /// A track that keeps the template it runs, set to a new size through the scale
    /// subresource: nothing of its template is sent, so the cache need not keep it.
    Resize { name: String, replicas: i32 },
}

/// What one reconcile should make true of the children.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// Deployment writes, in track order. A track that keeps its template and already runs
    /// at its size has nothing to write and is left out.
    pub deployments: Vec<DeploymentWrite>,
    /// The main Service, then the preview Service when the plan wants one.
    pub services: Vec<Service>,
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// The PodDisruptionBudget, unless it is turned off.
    pub pdb: Option<PodDisruptionBudget>,
    /// Children to delete once the rest is applied: a preview Service, an HPA or a
    /// PodDisruptionBudget that is no longer wanted, and the Deployments of the tracks the
    /// plan removes.
    pub removals: Vec<Removal>,
}

/// The children `md` should have after `plan`, given what runs now.
pub fn children(
    md: &ModelDeployment,
    plan: &Plan,
    running: &Running,
    defaults: &Defaults,
) -> Children {
    let name = md.name_any();
    let deployments = plan
        .tracks
        .iter()
        .filter_map(|track| match (track.frozen, running.deployments.get(&track.track)) {
            (true, Some(running)) if running.spec.replicas == Some(track.replicas) => None,
            (true, Some(_)) => Some(DeploymentWrite::Resize {
                name: deployment_name(&name, track.track),
                replicas: track.replicas,
            }),
            _ => Some(DeploymentWrite::Apply(Box::new(deployment(md, track, defaults)))),
        })
        .collect();
    let mut services = vec![service(md, plan.service_track, false)];
    let mut removals = Vec::new();
    match plan.preview_track {
        Some(track) => services.push(service(md, Some(track), true)),
        None if running.preview.is_some() => {
            removals.push(Removal { kind: Kind::Service, name: preview_service_name(&name) });
        }
        None => {}
    }
    let hpa = hpa(md);
    if hpa.is_none() && running.hpa.is_some() {
        removals.push(Removal { kind: Kind::Hpa, name: name.clone() });
    }
    let pdb = pdb(md);
    if pdb.is_none() && running.pdb.is_some() {
        removals.push(Removal { kind: Kind::Pdb, name: name.clone() });
    }
    removals.extend(
        plan.remove
            .iter()
            .map(|track| Removal { kind: Kind::Deployment, name: deployment_name(&name, *track) }),
    );
    Children { deployments, services, hpa, pdb, removals }
}

#[cfg(test)]
mod tests;
