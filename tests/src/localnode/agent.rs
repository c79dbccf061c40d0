//! The node agent: follows the pods bound to this node, fakes or runs them, and serves the
//! agent's HTTP API.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{Response, StatusCode};
use axum::routing::{any, get};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::config::{RunImage, binary_for};
use super::directory::{PodDirectory, pod_key};
use super::http::{HttpClient, forward, json_error};
use super::ipam::{FakeIps, Ports, ProcessIps};
use super::process::{Placement, ProcessPod};
use super::status::{
    fake_intent, fake_is_current, fake_report, is_finished, is_terminating, now_rfc3339,
    reported_ip, status_patch,
};
use crate::{Error, Result};

/// Field manager of every write localnode makes.
pub const FIELD_MANAGER: &str = "localnode";

/// What the agent's tasks share.
pub struct AgentCtx {
    pub client: Client,
    pub node_name: String,
    pub run_images: Vec<RunImage>,
    pub fake_ready_delay: Duration,
    pub log_dir: PathBuf,
    pub directory: Arc<PodDirectory>,
    pub probe_client: HttpClient,
    /// Bounds fake-pod writes so thousands of pods do not flood the API server at once.
    pub patch_permits: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
}

/// Patches a pod's status subresource with a JSON merge patch.
pub async fn patch_status(api: &Api<Pod>, name: &str, patch: &Value) -> Result<()> {
    let params =
        PatchParams { field_manager: Some(FIELD_MANAGER.to_string()), ..PatchParams::default() };
    api.patch_status(name, &params, &Patch::Merge(patch)).await?;
    Ok(())
}

/// Removes the pod object at once (grace 0), as the kubelet does once its containers are gone.
/// The uid precondition protects a pod recreated under the same name.
pub async fn delete_now(api: &Api<Pod>, name: &str, uid: &str) -> Result<()> {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Whether an error means the pod no longer exists (or was replaced).
fn is_gone(error: &Error) -> bool {
    matches!(error, Error::Kube(kube::Error::Api(status)) if status.code == 404 || status.code == 409)
}

/// Runs `attempt` up to three times, with a short pause between, unless the pod is gone.
async fn with_retries<F, Fut>(what: &str, key: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    for round in 1..=3u32 {
        match attempt().await {
            Ok(()) => return,
            Err(error) if is_gone(&error) => return,
            Err(error) => {
                tracing::warn!(pod = %key, %error, round, "{what} failed");
                tokio::time::sleep(Duration::from_millis(200) * round).await;
            }
        }
    }
}

struct FakeEntry {
    ip: Ipv4Addr,
    /// A status write is scheduled or in flight; newer pod versions wait in `pending`.
    busy: bool,
    pending: Option<Box<Pod>>,
    deleting: bool,
}

struct ProcessEntry {
    ip: Ipv4Addr,
    port: u16,
    /// Dropped when the pod object is gone, which tells the process task to stop.
    pod: Option<watch::Sender<Arc<Pod>>>,
}

enum Entry {
    Fake(FakeEntry),
    Process(ProcessEntry),
}

enum Done {
    Fake(String),
    Process(String),
}

/// The pod loop. All bookkeeping lives in this one task; pods' work runs in spawned tasks that
/// report back through `done`.
pub struct Agent {
    ctx: Arc<AgentCtx>,
    pods: HashMap<String, Entry>,
    fake_ips: FakeIps,
    process_ips: ProcessIps,
    ports: Ports,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    processes: JoinSet<()>,
    /// Pods listed since the watch (re)started, to spot deletions missed while disconnected.
    relisted: Option<HashSet<String>>,
}

impl Agent {
    pub fn new(ctx: Arc<AgentCtx>) -> Agent {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Agent {
            ctx,
            pods: HashMap::new(),
            fake_ips: FakeIps::default(),
            process_ips: ProcessIps::default(),
            ports: Ports::default(),
            done_tx,
            done_rx,
            processes: JoinSet::new(),
            relisted: None,
        }
    }

    /// Follows the node's pods until shutdown, then waits (bounded) for processes to stop.
    pub async fn run(mut self) {
        let api: Api<Pod> = Api::all(self.ctx.client.clone());
        let selector = format!("spec.nodeName={}", self.ctx.node_name);
        let mut events =
            watcher(api, watcher::Config::default().fields(&selector)).default_backoff().boxed();
        let mut shutdown = self.ctx.shutdown.clone();
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => self.on_event(event),
                    Some(Err(error)) => tracing::warn!(%error, "pod watch failed; retrying"),
                    None => break,
                },
                Some(done) = self.done_rx.recv() => self.on_done(done),
                Some(_) = self.processes.join_next(), if !self.processes.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        let stopping = async { while self.processes.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(8), stopping).await.is_err() {
            tracing::warn!("some processes did not stop in time; they are killed on exit");
        }
    }

    fn on_event(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.relisted = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let (Some(seen), Some(uid)) = (&mut self.relisted, &pod.metadata.uid) {
                    seen.insert(uid.clone());
                }
                self.on_pod(pod);
            }
            Event::InitDone => {
                if let Some(seen) = self.relisted.take() {
                    let gone: Vec<String> =
                        self.pods.keys().filter(|uid| !seen.contains(*uid)).cloned().collect();
                    for uid in gone {
                        self.forget(&uid);
                    }
                }
            }
            Event::Apply(pod) => self.on_pod(pod),
            Event::Delete(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    self.forget(uid);
                }
            }
        }
    }

    fn on_pod(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        match self.pods.get_mut(&uid) {
            Some(Entry::Process(entry)) => {
                if let Some(sender) = &entry.pod {
                    sender.send_replace(Arc::new(pod));
                }
            }
            Some(Entry::Fake(_)) => self.reconcile_fake(&uid, pod),
            None => self.adopt(uid, pod),
        }
    }

    /// The pod object is gone. A process keeps its IP until its task has stopped it.
    fn forget(&mut self, uid: &str) {
        match self.pods.get_mut(uid) {
            Some(Entry::Process(entry)) => entry.pod = None,
            Some(Entry::Fake(_)) => {
                self.pods.remove(uid);
            }
            None => {}
        }
    }

    /// A pod seen for the first time: new, or left from a previous agent.
    fn adopt(&mut self, uid: String, pod: Pod) {
        let terminating = is_terminating(&pod);
        if is_finished(&pod) && !terminating {
            return;
        }
        let process =
            pod.spec.iter().flat_map(|s| s.containers.iter()).enumerate().find_map(|(index, c)| {
                binary_for(&self.ctx.run_images, c.image.as_deref().unwrap_or_default())
                    .map(|binary| (index, binary.to_path_buf()))
            });
        match process {
            // Nothing runs for it here any more: finish the deletion.
            Some(_) if terminating || is_finished(&pod) => self.delete_in_background(&pod),
            Some((container, binary)) => self.start_process(uid, pod, container, binary),
            None => {
                let ip = reported_ip(&pod).unwrap_or_else(|| self.fake_ips.next_ip());
                let entry = FakeEntry { ip, busy: false, pending: None, deleting: false };
                self.pods.insert(uid.clone(), Entry::Fake(entry));
                self.reconcile_fake(&uid, pod);
            }
        }
    }

    fn start_process(&mut self, uid: String, pod: Pod, container: usize, binary: PathBuf) {
        let key = pod_key(
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default(),
        );
        let kept = reported_ip(&pod).filter(|ip| self.process_ips.claim(*ip));
        let Some(ip) = kept.or_else(|| self.process_ips.allocate()) else {
            tracing::error!(pod = %key, "all 254 process pod IPs are in use; pod not started");
            return;
        };
        let Some(port) = self.ports.allocate(port_is_free) else {
            tracing::error!(pod = %key, "no free loopback port; pod not started");
            self.process_ips.release(ip);
            return;
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let (sender, receiver) = watch::channel(Arc::new(pod));
        let placement = Placement { binary, container, addr, ip };
        let actor = ProcessPod::new(self.ctx.clone(), receiver, placement);
        let done = self.done_tx.clone();
        let task_uid = uid.clone();
        self.processes.spawn(async move {
            actor.run().await;
            let _ = done.send(Done::Process(task_uid));
        });
        let entry = ProcessEntry { ip, port, pod: Some(sender) };
        self.pods.insert(uid, Entry::Process(entry));
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Process(uid) => {
                if let Some(Entry::Process(entry)) = self.pods.remove(&uid) {
                    self.process_ips.release(entry.ip);
                    self.ports.release(entry.port);
                }
            }
            Done::Fake(uid) => {
                let pending = match self.pods.get_mut(&uid) {
                    Some(Entry::Fake(entry)) => {
                        entry.busy = false;
                        entry.pending.take()
                    }
                    _ => None,
                };
                if let Some(pod) = pending {
                    self.reconcile_fake(&uid, *pod);
                }
            }
        }
    }

    /// Brings a fake pod's status to what its annotations ask for, or deletes it.
    fn reconcile_fake(&mut self, uid: &str, pod: Pod) {
        let Some(Entry::Fake(entry)) = self.pods.get_mut(uid) else {
            return;
        };
        if is_terminating(&pod) {
            if !entry.deleting {
                entry.deleting = true;
                self.delete_in_background(&pod);
            }
            return;
        }
        if entry.busy {
            entry.pending = Some(Box::new(pod));
            return;
        }
        let intent = fake_intent(&pod, self.ctx.fake_ready_delay);
        if fake_is_current(&pod, intent.ready) {
            return;
        }
        entry.busy = true;
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let delay = if running { Duration::ZERO } else { intent.delay };
        let ip = entry.ip;
        let ctx = self.ctx.clone();
        let done = self.done_tx.clone();
        let uid = uid.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Ok(_permit) = ctx.patch_permits.acquire().await {
                write_fake_status(&ctx, &pod, ip, intent.ready).await;
            }
            let _ = done.send(Done::Fake(uid));
        });
    }

    fn delete_in_background(&self, pod: &Pod) {
        let (Some(namespace), Some(name), Some(uid)) =
            (pod.metadata.namespace.clone(), pod.metadata.name.clone(), pod.metadata.uid.clone())
        else {
            return;
        };
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            if let Ok(_permit) = ctx.patch_permits.acquire().await {
                let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
                let key = pod_key(&namespace, &name);
                with_retries("delete", &key, || delete_now(&api, &name, &uid)).await;
                tracing::debug!(pod = %key, "deleted");
            }
        });
    }
}

async fn write_fake_status(ctx: &AgentCtx, pod: &Pod, ip: Ipv4Addr, ready: bool) {
    let (Some(namespace), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let now = now_rfc3339();
    let report = fake_report(pod, ip, ready, &now);
    let patch = status_patch(&report, pod.status.as_ref(), &now);
    let key = pod_key(namespace, name);
    with_retries("status patch", &key, || patch_status(&api, name, &patch)).await;
    tracing::debug!(pod = %key, %ip, ready, "fake pod reported");
}

/// Whether nothing listens on loopback `port` right now.
fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// State of the agent's HTTP API.
#[derive(Clone)]
pub struct AgentHttp {
    pub directory: Arc<PodDirectory>,
    pub client: HttpClient,
    /// Served at `/healthz`: the node name and run-image mappings, so tests can check the setup.
    pub info: Arc<Value>,
}

/// `GET /healthz` and `ANY /pods/{namespace}/{name}/proxy/{*path}`.
pub fn router(state: AgentHttp) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/pods/{namespace}/{name}/proxy", any(pod_proxy_root))
        .route("/pods/{namespace}/{name}/proxy/", any(pod_proxy_root))
        .route("/pods/{namespace}/{name}/proxy/{*path}", any(pod_proxy))
        .with_state(state)
}

async fn healthz(State(state): State<AgentHttp>) -> axum::Json<Value> {
    axum::Json((*state.info).clone())
}

async fn pod_proxy_root(
    State(state): State<AgentHttp>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response<Body> {
    proxy_to_pod(&state, &namespace, &name, "", request).await
}

async fn pod_proxy(
    State(state): State<AgentHttp>,
    Path((namespace, name, path)): Path<(String, String, String)>,
    request: Request,
) -> Response<Body> {
    proxy_to_pod(&state, &namespace, &name, &path, request).await
}

async fn proxy_to_pod(
    state: &AgentHttp,
    namespace: &str,
    name: &str,
    path: &str,
    request: Request,
) -> Response<Body> {
    let key = pod_key(namespace, name);
    let Some(addr) = state.directory.get(&key) else {
        return json_error(
            StatusCode::NOT_FOUND,
            format!("pod {key} is not a process pod on this node"),
        );
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("/{path}?{query}"),
        None => format!("/{path}"),
    };
    forward(&state.client, request, addr, &path_and_query, name).await
}
