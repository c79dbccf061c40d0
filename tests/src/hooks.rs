//! A webhook receiver in a pod on the node (`tests/node/images/hookrecorder`): it records
//! every notification it gets, and can play a receiver that is down. The operator runs on the
//! host and reaches it through its Service's ClusterIP, as kube-proxy routes it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::Method;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use serde::Deserialize;
use serde_json::json;

use crate::harness::{TestHttp, create, routed_service_addr_at, wait_until};

/// The receiver's image, loaded into the node by `tests/node/up.sh` (`HOOKRECORDER_IMAGE` in
/// `tests/node/env.sh`).
pub const IMAGE: &str = "localhost/modelship/hookrecorder:1";
const NAME: &str = "hooks";

/// One POST the receiver got.
#[derive(Clone, Debug, Deserialize)]
pub struct Delivery {
    /// What the receiver answered: 200, or 503 while it played down.
    pub status: u16,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: String,
}

impl Delivery {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

/// A running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
}

impl Receiver {
    /// Deploy the receiver in `namespace` and wait until its Service answers.
    pub async fn start(client: &Client, namespace: &str) -> Receiver {
        let labels = json!({"app": NAME});
        let _: Deployment = create(
            client,
            namespace,
            json!({
                "metadata": {"name": NAME},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "automountServiceAccountToken": false,
                            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532,
                                                "seccompProfile": {"type": "RuntimeDefault"}},
                            "containers": [{
                                "name": "receiver",
                                "image": IMAGE,
                                "imagePullPolicy": "Never",
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                                   "periodSeconds": 1},
                                "resources": {"requests": {"cpu": "5m", "memory": "8Mi"},
                                              "limits": {"memory": "64Mi"}},
                                "securityContext": {"allowPrivilegeEscalation": false,
                                                    "readOnlyRootFilesystem": true,
                                                    "capabilities": {"drop": ["ALL"]}},
                            }],
                        },
                    },
                },
            }),
        )
        .await;
        let _: Service = create(
            client,
            namespace,
            json!({
                "metadata": {"name": NAME},
                "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            }),
        )
        .await;
        let addr = routed_service_addr_at(client, namespace, NAME, "/healthz").await;
        Receiver { addr }
    }

    /// The URL a sender should POST to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every POST received so far, oldest first.
    pub async fn received(&self) -> Vec<Delivery> {
        let response =
            TestHttp::new().get(self.addr, "/received").await.expect("the receiver answers");
        serde_json::from_slice(&response.body).expect("a list of deliveries")
    }

    /// The bodies of the deliveries answered 200.
    pub async fn delivered(&self) -> Vec<Delivery> {
        self.received().await.into_iter().filter(|d| d.status == 200).collect()
    }

    /// Answer the next `count` hooks 503, as a receiver that is down.
    pub async fn fail_next(&self, count: usize) {
        let response = TestHttp::new()
            .request(self.addr, Method::POST, &format!("/fail?count={count}"), None)
            .await
            .expect("the receiver answers");
        assert!(response.status.is_success(), "{response:?}");
    }

    /// Wait until `n` deliveries were answered 200.
    pub async fn wait_delivered(&self, n: usize, timeout: Duration) -> Vec<Delivery> {
        wait_until(timeout, &format!("{n} delivered notifications"), async || {
            let delivered = self.delivered().await;
            if delivered.len() >= n {
                Ok(delivered)
            } else {
                Err(format!(
                    "{} so far: {:?}",
                    delivered.len(),
                    delivered.iter().map(|d| &d.body).collect::<Vec<_>>()
                ))
            }
        })
        .await
    }
}
