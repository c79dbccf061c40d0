//! Apply: write the desired children with server-side apply, capacity first (Deployments,
//! then the Services' selectors, then the HPA and the PodDisruptionBudget) and removals last.
//! A child whose cached copy was applied from the same content is not sent again; a track that
//! keeps its template is resized through the scale subresource.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info};

use crate::desired::{Applied, Children, DeploymentWrite, Kind, Removal, Running};
use crate::error::{Error, Result};
use crate::expect::ChildWrite;
use crate::metrics::Metrics;

/// The one field manager every write of the operator uses.
pub const FIELD_MANAGER: &str = "modelship-operator";

/// Server-side apply with the operator's field manager, taking over conflicting fields.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// The APIs of one namespace's children.
pub struct Writer<'a> {
    deployments: Api<Deployment>,
    services: Api<Service>,
    hpas: Api<HorizontalPodAutoscaler>,
    pdbs: Api<PodDisruptionBudget>,
    metrics: &'a Metrics,
}

impl<'a> Writer<'a> {
    pub fn new(client: &Client, namespace: &str, metrics: &'a Metrics) -> Self {
        Writer {
            deployments: Api::namespaced(client.clone(), namespace),
            services: Api::namespaced(client.clone(), namespace),
            hpas: Api::namespaced(client.clone(), namespace),
            pdbs: Api::namespaced(client.clone(), namespace),
            metrics,
        }
    }

    /// Make the children what `children` says, given what `running` holds; returns the
    /// writes that changed a child, for the caches to catch up with.
    pub async fn apply(&self, children: &Children, running: &Running) -> Result<Vec<ChildWrite>> {
        // Destructured without `..`: a new kind of child fails to compile here instead of
        // silently never being applied.
        let Children { deployments, services, hpa, pdb, removals } = children;
        let mut written = Vec::new();
        for change in deployments {
            let write = match change {
                DeploymentWrite::Apply(deployment) => {
                    let existing =
                        running.deployments.values().find(|d| same_name(&***d, deployment));
                    let existing = existing.map(|d| &**d);
                    self.write(&self.deployments, deployment, existing, Kind::Deployment).await?
                }
                DeploymentWrite::Resize { name, replicas } => {
                    let existing =
                        running.deployments.values().find(|d| d.meta().name.as_ref() == Some(name));
                    self.resize(name, *replicas, existing.map(|d| &**d)).await?
                }
            };
            written.extend(write);
        }
        for service in services {
            let existing = [&running.service, &running.preview]
                .into_iter()
                .flatten()
                .find(|s| same_name(&***s, service));
            written.extend(
                self.write(&self.services, service, existing.map(|s| &**s), Kind::Service).await?,
            );
        }
        if let Some(hpa) = hpa {
            written.extend(self.write(&self.hpas, hpa, running.hpa.as_deref(), Kind::Hpa).await?);
        }
        if let Some(pdb) = pdb {
            written.extend(self.write(&self.pdbs, pdb, running.pdb.as_deref(), Kind::Pdb).await?);
        }
        for Removal { kind, name } in removals {
            match kind {
                Kind::Deployment => self.delete(&self.deployments, name, *kind).await?,
                Kind::Service => self.delete(&self.services, name, *kind).await?,
                Kind::Hpa => self.delete(&self.hpas, name, *kind).await?,
                Kind::Pdb => self.delete(&self.pdbs, name, *kind).await?,
            }
        }
        Ok(written)
    }

    /// Server-side apply `object`, unless the cached copy already holds it.
    async fn write<K>(
        &self,
        api: &Api<K>,
        object: &K,
        existing: Option<&K>,
        kind: Kind,
    ) -> Result<Option<ChildWrite>>
    where
        K: Applied + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
    {
        if existing.is_some_and(|e| e.holds(object)) {
            return Ok(None);
        }
        let name = object.meta().name.clone().ok_or(Error::MissingField(".metadata.name"))?;
        self.metrics.count_write(kind.as_str(), "apply");
        let written = api.patch(&name, &apply_params(), &Patch::Apply(object)).await?;
        debug!(kind = kind.as_str(), child = %name, "applied");
        let before = existing.and_then(|e| e.meta().resource_version.clone());
        Ok(ChildWrite::new(kind, &name, before, written.meta().resource_version.clone()))
    }

    /// Set a Deployment's size with a server-side apply of its scale subresource: the
    /// template it runs is left as it is, unsent.
    async fn resize(
        &self,
        name: &str,
        replicas: i32,
        existing: Option<&Deployment>,
    ) -> Result<Option<ChildWrite>> {
        self.metrics.count_write(Kind::Deployment.as_str(), "scale");
        let scale = serde_json::json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": name},
            "spec": {"replicas": replicas},
        });
        let patch = Patch::Apply(&scale);
        let written = self.deployments.patch_scale(name, &apply_params(), &patch).await?;
        debug!(child = %name, replicas, "resized");
        let before = existing.and_then(|e| e.metadata.resource_version.clone());
        Ok(ChildWrite::new(Kind::Deployment, name, before, written.metadata.resource_version))
    }

    /// Delete in the background; a child already gone is not an error.
    async fn delete<K>(&self, api: &Api<K>, name: &str, kind: Kind) -> Result<()>
    where
        K: Resource + DeserializeOwned + Clone + std::fmt::Debug,
    {
        self.metrics.count_write(kind.as_str(), "delete");
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                info!(kind = kind.as_str(), child = %name, "deleted");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

fn same_name<K: Resource>(a: &K, b: &K) -> bool {
    a.meta().name.is_some() && a.meta().name == b.meta().name
}
