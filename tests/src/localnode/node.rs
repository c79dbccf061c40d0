//! The Node object and its heartbeats (status and Lease), so the scheduler places pods here and
//! the node lifecycle controller keeps the node Ready.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::agent::FIELD_MANAGER;
use super::status::now_rfc3339;
use crate::Result;

/// How often the Lease is renewed and the Ready condition refreshed; well inside the node
/// lifecycle controller's grace period.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;
/// Label on the Node, so tests and scripts can tell it apart.
pub const NODE_LABEL: &str = "node.modelship.io/localnode";

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The Node's metadata and (empty) spec, applied server-side.
pub fn node_object(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": std::env::consts::OS,
                "kubernetes.io/arch": arch(),
                NODE_LABEL: "true",
            },
        },
    })
}

/// The Node's status: a large capacity, a Ready condition with a fresh heartbeat, and only a
/// Hostname address (no IP, so nothing in the control plane tries to reach a kubelet).
pub fn node_status(name: &str, ready_since: &str, now: &str) -> Value {
    let capacity =
        json!({"cpu": "64", "memory": "256Gi", "pods": "5000", "ephemeral-storage": "1Ti"});
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": ready_since,
        })
    };
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("Ready", "True", "KubeletReady", "localnode is posting ready status"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
            ],
            "addresses": [{"type": "Hostname", "address": name}],
            "nodeInfo": {
                "architecture": arch(),
                "operatingSystem": std::env::consts::OS,
                "osImage": "localnode",
                "kernelVersion": "",
                "containerRuntimeVersion": "localnode://0.1",
                "kubeletVersion": concat!("localnode-", env!("CARGO_PKG_VERSION")),
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    })
}

/// The node's Lease, owned by the Node so it goes away with it.
pub fn lease_object(name: &str, node_uid: &str, now_micros: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now_micros,
        },
    })
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// The node's registration and heartbeat.
pub struct NodeHeartbeat {
    nodes: Api<Node>,
    leases: Api<Lease>,
    name: String,
    node_uid: String,
    ready_since: String,
}

impl NodeHeartbeat {
    /// Creates or updates the Node and reports it Ready.
    pub async fn register(client: &Client, name: &str) -> Result<NodeHeartbeat> {
        let nodes: Api<Node> = Api::all(client.clone());
        let node = nodes.patch(name, &apply_params(), &Patch::Apply(node_object(name))).await?;
        let mut heartbeat = NodeHeartbeat {
            nodes,
            leases: Api::namespaced(client.clone(), LEASE_NAMESPACE),
            name: name.to_string(),
            node_uid: node.metadata.uid.unwrap_or_default(),
            ready_since: now_rfc3339(),
        };
        heartbeat.beat().await?;
        tracing::info!(node = %name, "node registered and ready");
        Ok(heartbeat)
    }

    async fn beat(&mut self) -> Result<()> {
        let now = now_rfc3339();
        let status = node_status(&self.name, &self.ready_since, &now);
        self.nodes.patch_status(&self.name, &apply_params(), &Patch::Apply(status)).await?;
        let micros = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let lease = lease_object(&self.name, &self.node_uid, &micros);
        self.leases.patch(&self.name, &apply_params(), &Patch::Apply(lease)).await?;
        Ok(())
    }

    /// Renews the Lease and the Ready heartbeat every [`HEARTBEAT`] until shutdown.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(HEARTBEAT);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(error) = self.beat().await {
                        tracing::warn!(node = %self.name, %error, "heartbeat failed");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_deserializes_as_a_ready_node() {
        let mut node: Node = serde_json::from_value(node_object("n1")).unwrap();
        let status: Node = serde_json::from_value(node_status(
            "n1",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:10Z",
        ))
        .unwrap();
        node.status = status.status;
        let status = node.status.unwrap();
        assert_eq!(status.capacity.as_ref().unwrap()["pods"].0, "5000");
        let ready = status.conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        let addresses = status.addresses.unwrap();
        assert_eq!(addresses.len(), 1);
        assert_eq!(addresses[0].type_, "Hostname");
        assert_eq!(node.metadata.labels.unwrap()["kubernetes.io/hostname"], "n1");
    }

    #[test]
    fn lease_is_owned_by_the_node() {
        let lease: Lease =
            serde_json::from_value(lease_object("n1", "uid-1", "2026-01-01T00:00:00.000001Z"))
                .unwrap();
        assert_eq!(lease.metadata.owner_references.unwrap()[0].uid, "uid-1");
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(LEASE_SECONDS));
    }
}
