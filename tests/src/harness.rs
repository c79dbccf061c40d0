//! Helpers shared by the end-to-end tests, which run against the local cluster started by
//! `tests/run.sh` (`tests/cluster.sh`): a real control plane and a real node. Nothing here
//! skips a test: a missing cluster panics.

use std::collections::hash_map::RandomState;
use std::fmt::Display;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use bytes::Bytes;
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Service, ServiceAccount,
};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{Error, Result};

/// Environment variable with the node's state directory (`tests/cluster.sh` sets it).
pub const NODE_STATE_ENV: &str = "MODELSHIP_NODE_STATE";
/// Set to `1` to keep test namespaces for debugging.
pub const KEEP_NAMESPACES_ENV: &str = "MODELSHIP_KEEP_NAMESPACES";
/// The claim every test namespace has, holding the serving fixtures (`pvc://models/...`).
pub const MODELS_CLAIM: &str = "models";
const START_HINT: &str = "start the local cluster with `make test` (tests/run.sh)";
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Where the local cluster is.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    pub kubeconfig: PathBuf,
    /// The node's state directory; `models/` in it backs every namespace's `models` claim.
    pub node_state: PathBuf,
}

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!("{name} is not set: {START_HINT}"),
    }
}

/// The local cluster from `KUBECONFIG` and `MODELSHIP_NODE_STATE`. Panics when either is
/// missing.
pub fn cluster() -> LocalCluster {
    LocalCluster {
        kubeconfig: PathBuf::from(required_env("KUBECONFIG")),
        node_state: PathBuf::from(required_env(NODE_STATE_ENV)),
    }
}

/// A client for the local cluster. Panics when the cluster is not configured.
pub async fn client() -> Client {
    cluster();
    Client::try_default()
        .await
        .unwrap_or_else(|error| panic!("no Kubernetes client ({error}): {START_HINT}"))
}

/// A DNS-label name: `prefix` (sanitized, shortened) and a random suffix.
pub fn unique_name(prefix: &str) -> String {
    let mut clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(40);
    let clean = clean.trim_matches('-');
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let suffix = hasher.finish() & 0xff_ffff;
    if clean.is_empty() { format!("t-{suffix:06x}") } else { format!("{clean}-{suffix:06x}") }
}

/// Runs `test` in a new namespace (named after the test) and deletes the namespace afterwards,
/// also when the test panics. Waits for the namespace's default ServiceAccount first, which
/// pods need.
pub async fn with_namespace<F, T>(test: F) -> T
where
    F: AsyncFnOnce(Client, String) -> T,
{
    with_namespace_labels(&[], test).await
}

/// [`with_namespace`] with labels on the namespace (e.g. Pod Security admission levels).
pub async fn with_namespace_labels<F, T>(labels: &[(&str, &str)], test: F) -> T
where
    F: AsyncFnOnce(Client, String) -> T,
{
    let client = client().await;
    let thread = std::thread::current();
    let test_name = thread.name().unwrap_or("test").rsplit("::").next().unwrap_or("test");
    let name = unique_name(test_name);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labels: serde_json::Map<String, Value> =
        labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let namespace: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels}
    }))
    .expect("namespace object");
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|error| panic!("create namespace {name}: {error}"));
    let volume = create_models_claim(&client, &name).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_until(Duration::from_secs(30), "the namespace's default ServiceAccount", async || {
        accounts.get_opt("default").await.map(|sa| sa.is_some())
    })
    .await;

    let outcome = AssertUnwindSafe(test(client.clone(), name.clone())).catch_unwind().await;
    if std::env::var(KEEP_NAMESPACES_ENV).as_deref() == Ok("1") {
        eprintln!("keeping namespace {name} ({KEEP_NAMESPACES_ENV}=1)");
    } else {
        if let Err(error) = namespaces.delete(&name, &DeleteParams::default()).await {
            eprintln!("could not delete namespace {name}: {error}");
        }
        let volumes: Api<PersistentVolume> = Api::all(client.clone());
        if let Err(error) = volumes.delete(&volume, &DeleteParams::default()).await {
            eprintln!("could not delete PersistentVolume {volume}: {error}");
        }
    }
    match outcome {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The `models` claim of `namespace`, bound to a read-only volume of its own over the node's
/// copy of the serving fixtures, so models load from `pvc://models/FILE` as on a cluster.
/// Returns the volume's name.
async fn create_models_claim(client: &Client, namespace: &str) -> String {
    let volume = format!("models-{namespace}");
    let path = cluster().node_state.join("models");
    let spec = json!({
        "metadata": {"name": volume, "labels": {"modelship.io/test-namespace": namespace}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": path, "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": MODELS_CLAIM},
        }
    });
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    volumes
        .create(&PostParams::default(), &serde_json::from_value(spec).expect("a volume"))
        .await
        .unwrap_or_else(|error| panic!("create PersistentVolume {volume}: {error}"));
    let _: PersistentVolumeClaim = create(
        client,
        namespace,
        json!({
            "metadata": {"name": MODELS_CLAIM},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            }
        }),
    )
    .await;
    volume
}

/// Something a poll returns: `true`, `Some(value)` or `Ok(value)` means done; anything else is
/// described in the timeout message.
pub trait Check {
    type Value;
    fn check(self) -> std::result::Result<Self::Value, String>;
}

impl Check for bool {
    type Value = ();
    fn check(self) -> std::result::Result<(), String> {
        if self { Ok(()) } else { Err("condition is false".to_string()) }
    }
}

impl<T> Check for Option<T> {
    type Value = T;
    fn check(self) -> std::result::Result<T, String> {
        self.ok_or_else(|| "nothing yet".to_string())
    }
}

impl<T, E: Display> Check for std::result::Result<T, E> {
    type Value = T;
    fn check(self) -> std::result::Result<T, String> {
        self.map_err(|error| error.to_string())
    }
}

/// Polls `poll` every 100 ms until it succeeds and returns its value; panics at `timeout`
/// with `what` and the last failure.
pub async fn wait_until<F, C>(timeout: Duration, what: &str, mut poll: F) -> C::Value
where
    F: AsyncFnMut() -> C,
    C: Check,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match poll().await.check() {
            Ok(value) => return value,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep_until((Instant::now() + POLL_EVERY).min(deadline)).await;
    }
}

/// Polls `poll` every 100 ms for `duration` and panics the first time it fails: for "stays so"
/// assertions.
pub async fn hold_for<F, C>(duration: Duration, what: &str, mut poll: F)
where
    F: AsyncFnMut() -> C,
    C: Check,
{
    let deadline = Instant::now() + duration;
    loop {
        if let Err(last) = poll().await.check() {
            panic!("expected {what} to hold for {duration:?}, but: {last}");
        }
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until((Instant::now() + POLL_EVERY).min(deadline)).await;
    }
}

/// Creates a namespaced object from JSON and returns it as stored.
pub async fn create<K>(client: &Client, namespace: &str, object: Value) -> K
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(object).expect("object matches its type");
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|error| panic!("create {}: {error}", K::kind(&Default::default())))
}

/// A buffered HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("expected JSON, got {:?}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP/1.1 keep-alive client for Services (through kube-proxy's rules, as any client on
/// the node would reach them) and pods. Make one per test (connections belong to the test's
/// runtime).
#[derive(Clone)]
pub struct TestHttp {
    client: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Default for TestHttp {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHttp {
    pub fn new() -> TestHttp {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        TestHttp { client: HyperClient::builder(TokioExecutor::new()).build(connector) }
    }

    /// Sends a request to `addr`.
    pub async fn request(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<HttpResponse> {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|error| Error::Upstream { addr, message: error.to_string() })?;
        let upstream =
            |error: &dyn std::error::Error| Error::Upstream { addr, message: error_chain(error) };
        let response = self.client.request(request).await.map_err(|e| upstream(&e))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| upstream(&e))?.to_bytes();
        Ok(HttpResponse { status: parts.status, headers: parts.headers, body })
    }

    /// `GET path` at `addr`.
    pub async fn get(&self, addr: SocketAddr, path: &str) -> Result<HttpResponse> {
        self.request(addr, Method::GET, path, None).await
    }
}

/// An error with its sources, for messages.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The ClusterIP and first port of a Service: where kube-proxy forwards to its ready pods.
pub async fn service_addr(client: &Client, namespace: &str, service: &str) -> SocketAddr {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let spec = services
        .get(service)
        .await
        .unwrap_or_else(|error| panic!("get Service {service}: {error}"))
        .spec
        .unwrap_or_default();
    let ip: IpAddr = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("Service {service} has no ClusterIP"));
    let port = spec.ports.unwrap_or_default().first().map_or(80, |p| p.port);
    SocketAddr::new(ip, u16::try_from(port).expect("a port"))
}

/// The Service's address once kube-proxy routes it to a pod that answers `/ready`: the
/// node's rules follow a Service's EndpointSlices a moment after the API server shows them.
pub async fn routed_service_addr(client: &Client, namespace: &str, service: &str) -> SocketAddr {
    routed_service_addr_at(client, namespace, service, "/ready").await
}

/// [`routed_service_addr`] for a Service whose pods answer `path` when ready.
pub async fn routed_service_addr_at(
    client: &Client,
    namespace: &str,
    service: &str,
    path: &str,
) -> SocketAddr {
    let target = service_addr(client, namespace, service).await;
    wait_until(
        Duration::from_secs(60),
        &format!("Service {service} to answer through kube-proxy"),
        async || {
            // A new connection each time: kube-proxy picks the endpoint per connection.
            TestHttp::new().get(target, path).await.map(|r| r.status.is_success()).unwrap_or(false)
        },
    )
    .await;
    target
}

/// A pod's IP and the port of its first container's first port (the serving port).
pub async fn pod_addr(client: &Client, namespace: &str, pod: &str) -> SocketAddr {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = pods.get(pod).await.unwrap_or_else(|error| panic!("get pod {pod}: {error}"));
    let ip: IpAddr = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("pod {:?} has no IP yet", pod.metadata.name));
    let port = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.ports.as_ref())
        .and_then(|p| p.first())
        .map_or(8080, |p| p.container_port);
    SocketAddr::new(ip, u16::try_from(port).expect("a port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_dns_labels() {
        let name = unique_name("process_pods::Serve traffic_through_the_service_proxy_quickly");
        assert!(name.len() <= 63, "{name}");
        assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert!(!name.starts_with('-') && !name.ends_with('-'));
        assert_ne!(unique_name("x"), unique_name("x"));
        assert!(unique_name("__").starts_with("t-"));
    }

    #[tokio::test]
    async fn wait_until_returns_the_value() {
        let mut calls = 0;
        let value = wait_until(Duration::from_secs(5), "third call", async || {
            calls += 1;
            (calls >= 3).then_some(calls)
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after")]
    async fn wait_until_panics_with_the_last_failure() {
        wait_until(Duration::from_millis(250), "never", async || Err::<(), _>("still broken"))
            .await;
    }

    #[tokio::test]
    #[should_panic(expected = "expected stable to hold")]
    async fn hold_for_panics_when_it_breaks() {
        let mut calls = 0;
        hold_for(Duration::from_secs(5), "stable", async || {
            calls += 1;
            calls < 3
        })
        .await;
    }
}
