//! Fault injection between one client and the API server.
//!
//! - [`FaultyLink`]: a TCP forwarder on 127.0.0.1 that can be cut (every connection closed,
//!   new ones refused) and restored, and a kubeconfig that sends one process through it. TLS
//!   passes through untouched.
//! - [`ChaosApi`]: an HTTP front that answers a share of writes with 409 Conflict and delays
//!   watch events, for the conflict and stale-cache scenarios; that can fail every write while
//!   reads pass (an asymmetric partition, as when the API server loses etcd); and that can
//!   hold one write back (the status write that follows a given child write) so a test can
//!   kill the operator between the two.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct FaultyLink {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut, so open connections notice and close.
    epoch: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyLink {
    /// Forward `127.0.0.1:<new port>` to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultyLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a local port");
        let addr = listener.local_addr().expect("local address");
        let cut = Arc::new(AtomicBool::new(false));
        let (epoch, _) = watch::channel(0u64);
        let (flag, epochs) = (cut.clone(), epoch.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut changed = epochs.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = changed.changed() => {}
                    }
                });
            }
        });
        FaultyLink { addr, cut, epoch, task }
    }

    /// Close every open connection and refuse new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The API server address in a kubeconfig (`server: https://127.0.0.1:PORT`).
pub fn api_server(kubeconfig: &Path) -> SocketAddr {
    let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig");
    let server = text
        .split("server:")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .expect("a server in the kubeconfig");
    server.trim_start_matches("https://").parse().expect("server is IP:PORT")
}

/// A copy of `kubeconfig` that reaches the API server through `link`.
pub fn kubeconfig_via(kubeconfig: &Path, link: &FaultyLink, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig");
    let upstream = api_server(kubeconfig);
    let rewritten = text.replace(&format!("https://{upstream}"), &format!("https://{}", link.addr));
    let path = dir.join(format!("kubeconfig-via-{}", link.addr.port()));
    std::fs::write(&path, rewritten).expect("write kubeconfig");
    path
}

/// What [`ChaosApi`] does to the traffic it forwards.
#[derive(Clone, Copy, Debug, Default)]
pub struct Chaos {
    /// Share of writes (POST, PUT, PATCH, DELETE) answered `409 Conflict` without reaching
    /// the API server, in percent.
    pub conflict_percent: u32,
    /// Each watch stream is held back by a delay drawn from 0 up to this, for all its events.
    pub max_watch_delay: std::time::Duration,
    /// Seed of the draws, so a failing run can be repeated.
    pub seed: u64,
}

/// One write that reached the proxy.
#[derive(Clone, Debug)]
pub struct SeenWrite {
    pub at: std::time::Instant,
    /// The same moment on the wall clock, to compare with the API server's timestamps.
    pub when: k8s_openapi::jiff::Timestamp,
    pub method: String,
    /// The object's path without the query, for example
    /// `/apis/modelship.io/v1alpha1/namespaces/ns/modeldeployments/m/status`.
    pub path: String,
    pub conflicted: bool,
}

/// An HTTP front for the API server on 127.0.0.1: one client (through [`ChaosApi::kubeconfig`])
/// talks plain HTTP to it, and it forwards over the test's own authenticated client, answering
/// a share of writes with 409 and delaying watch events.
pub struct ChaosApi {
    pub addr: SocketAddr,
    writes: Arc<std::sync::Mutex<Vec<SeenWrite>>>,
    control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

/// Which write [`ChaosApi::hold_after`] holds back: the first write to a path ending in
/// `hold_suffix` after a write to a path ending in `after_suffix` whose body contains every
/// one of `body_contains`.
#[derive(Clone, Debug)]
pub struct HoldRule {
    pub after_suffix: String,
    pub body_contains: Vec<String>,
    pub hold_suffix: String,
}

impl HoldRule {
    /// The status write of a ModelDeployment after a write to the child at `after_suffix`.
    pub fn status_after(after_suffix: &str, body_contains: &[&str]) -> HoldRule {
        HoldRule {
            after_suffix: after_suffix.to_string(),
            body_contains: body_contains.iter().map(|s| s.to_string()).collect(),
            hold_suffix: "/status".to_string(),
        }
    }

    /// Whatever the client writes next (to any path) after a status write whose body contains
    /// every one of `body_contains`: the client is stopped right after that status write.
    pub fn any_after_status(body_contains: &[&str]) -> HoldRule {
        HoldRule {
            after_suffix: "/status".to_string(),
            body_contains: body_contains.iter().map(|s| s.to_string()).collect(),
            hold_suffix: String::new(),
        }
    }

    /// Whether a write starts the rule.
    fn triggered_by(&self, path: &str, body: &[u8]) -> bool {
        let contains =
            |needle: &String| body.windows(needle.len().max(1)).any(|w| w == needle.as_bytes());
        path.ends_with(&self.after_suffix) && self.body_contains.iter().all(contains)
    }
}

/// Switches a test flips while traffic flows.
#[derive(Default)]
struct Control {
    /// Writes are answered 504 after a second, as by an API server without etcd.
    fail_writes: std::sync::atomic::AtomicBool,
    hold: std::sync::Mutex<Hold>,
}

#[derive(Default)]
struct Hold {
    rule: Option<HoldRule>,
    /// The rule's first write went through; the next matching write is held.
    armed: bool,
    /// A write was held: every later one is held too until they are decided, so nothing
    /// the client does after the held write reaches the API server.
    stopped: bool,
    notify: Option<tokio::sync::oneshot::Sender<String>>,
    /// Held writes, each waiting for `true` (forward it) or `false` (drop it).
    held: Vec<tokio::sync::oneshot::Sender<bool>>,
}

impl Control {
    /// What to do with a write: `Some(receiver)` when it must wait for a decision.
    fn on_write(&self, path: &str, body: &[u8]) -> Option<tokio::sync::oneshot::Receiver<bool>> {
        let mut hold = self.hold.lock().expect("lock");
        if hold.stopped {
            let (decide, decision) = tokio::sync::oneshot::channel();
            hold.held.push(decide);
            return Some(decision);
        }
        let rule = hold.rule.clone()?;
        if !hold.armed {
            hold.armed = rule.triggered_by(path, body);
            return None;
        }
        if !path.ends_with(&rule.hold_suffix) {
            return None;
        }
        let (decide, decision) = tokio::sync::oneshot::channel();
        hold.held.push(decide);
        hold.rule = None;
        hold.armed = false;
        hold.stopped = true;
        if let Some(notify) = hold.notify.take() {
            let _ = notify.send(path.to_string());
        }
        Some(decision)
    }
}

impl ChaosApi {
    pub async fn start(upstream: kube::Client, chaos: Chaos) -> ChaosApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a local port");
        let addr = listener.local_addr().expect("local address");
        let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let control = Arc::new(Control::default());
        let state = ChaosState {
            upstream,
            chaos,
            draws: Arc::new(std::sync::Mutex::new(Draws(chaos.seed | 1))),
            writes: writes.clone(),
            control: control.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ChaosApi { addr, writes, control, task }
    }

    /// From now on every write is answered `504` after a second without reaching the API
    /// server, while reads pass (`false` heals it).
    pub fn fail_writes(&self, on: bool) {
        self.control.fail_writes.store(on, Ordering::SeqCst);
    }

    /// Hold back the write `rule` names; the receiver gets its path once it is held. One rule
    /// at a time: a new one replaces one that has not fired.
    pub fn hold_after(&self, rule: HoldRule) -> tokio::sync::oneshot::Receiver<String> {
        let (notify, held) = tokio::sync::oneshot::channel();
        let mut hold = self.control.hold.lock().expect("lock");
        hold.rule = Some(rule);
        hold.armed = false;
        hold.notify = Some(notify);
        held
    }

    /// Forget a rule that has not fired.
    pub fn clear_hold(&self) {
        let mut hold = self.control.hold.lock().expect("lock");
        hold.rule = None;
        hold.armed = false;
        hold.notify = None;
    }

    /// Answer every held write `503` without forwarding it: it never reaches the API server.
    pub fn drop_held(&self) {
        self.decide_held(false);
    }

    /// Forward every held write.
    pub fn release_held(&self) {
        self.decide_held(true);
    }

    fn decide_held(&self, forward: bool) {
        let held = {
            let mut hold = self.control.hold.lock().expect("lock");
            hold.stopped = false;
            std::mem::take(&mut hold.held)
        };
        for decide in held {
            let _ = decide.send(forward);
        }
    }

    /// A kubeconfig that sends its user through this proxy (no credentials needed: the proxy
    /// adds the test's own).
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: chaos\n  cluster:\n    server: \
             \"http://{}\"\nusers:\n- name: chaos\n  user: {{}}\ncontexts:\n- name: chaos\n  \
             context:\n    cluster: chaos\n    user: chaos\ncurrent-context: chaos\n",
            self.addr
        );
        let path = dir.join(format!("kubeconfig-chaos-{}", self.addr.port()));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Every write seen so far, in arrival order.
    pub fn writes(&self) -> Vec<SeenWrite> {
        self.writes.lock().expect("lock").clone()
    }
}

impl Drop for ChaosApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The most writes any one object got within `window`, and which object.
pub fn busiest_object(writes: &[SeenWrite], window: std::time::Duration) -> (usize, String) {
    let mut by_path: std::collections::BTreeMap<&str, Vec<std::time::Instant>> =
        std::collections::BTreeMap::new();
    for write in writes {
        by_path.entry(write.path.as_str()).or_default().push(write.at);
    }
    let mut busiest = (0, String::new());
    for (path, times) in by_path {
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] > window {
                start += 1;
            }
            if end - start + 1 > busiest.0 {
                busiest = (end - start + 1, path.to_string());
            }
        }
    }
    busiest
}

#[derive(Clone)]
struct ChaosState {
    upstream: kube::Client,
    chaos: Chaos,
    draws: Arc<std::sync::Mutex<Draws>>,
    writes: Arc<std::sync::Mutex<Vec<SeenWrite>>>,
    control: Arc<Control>,
}

/// A small xorshift generator: reproducible draws without another dependency.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn percent(&mut self) -> u32 {
        (self.next() % 100) as u32
    }

    fn up_to(&mut self, max: std::time::Duration) -> std::time::Duration {
        let millis = max.as_millis() as u64;
        std::time::Duration::from_millis(if millis == 0 { 0 } else { self.next() % (millis + 1) })
    }
}

const HOP_HEADERS: [&str; 5] =
    ["host", "connection", "content-length", "transfer-encoding", "authorization"];

async fn forward(
    axum::extract::State(state): axum::extract::State<ChaosState>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;

    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("");
    let is_write = matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE");
    let is_watch = query.split('&').any(|p| p == "watch=true" || p == "watch=1");
    let (conflict, delay) = {
        let mut draws = state.draws.lock().expect("lock");
        let conflict = is_write && draws.percent() < state.chaos.conflict_percent;
        let delay =
            if is_watch { draws.up_to(state.chaos.max_watch_delay) } else { Default::default() };
        (conflict, delay)
    };
    if is_write {
        state.writes.lock().expect("lock").push(SeenWrite {
            at: std::time::Instant::now(),
            when: k8s_openapi::jiff::Timestamp::now(),
            method: method.to_string(),
            path: path.clone(),
            conflicted: conflict,
        });
    }
    if conflict {
        let message = format!(
            "Operation cannot be fulfilled on {path}: the object has been modified; please \
             apply your changes to the latest version and try again"
        );
        return status_response(409, "Conflict", &message);
    }

    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return axum::http::StatusCode::BAD_REQUEST.into_response(),
    };
    if is_write && state.control.fail_writes.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        return status_response(504, "Timeout", "etcdserver: request timed out");
    }
    if is_write
        && let Some(decision) = state.control.on_write(&path, &bytes)
        && decision.await != Ok(true)
    {
        return status_response(503, "ServiceUnavailable", "the test dropped this write");
    }
    let mut upstream = axum::http::Request::builder().method(method).uri(parts.uri.clone());
    for (name, value) in &parts.headers {
        if !HOP_HEADERS.contains(&name.as_str()) {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(upstream) = upstream.body(kube::client::Body::from(bytes.to_vec())) else {
        return axum::http::StatusCode::BAD_REQUEST.into_response();
    };
    let response = match state.upstream.send(upstream).await {
        Ok(response) => response,
        Err(error) => {
            return (axum::http::StatusCode::BAD_GATEWAY, error.to_string()).into_response();
        }
    };
    let (parts, body) = response.into_parts();
    let body = if is_watch && !delay.is_zero() {
        axum::body::Body::from_stream(delayed(body, delay))
    } else {
        axum::body::Body::new(body)
    };
    axum::response::Response::from_parts(parts, body)
}

/// A Kubernetes `Status` failure answer.
fn status_response(code: u16, reason: &str, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let status = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": {}, "code": code,
    });
    let code =
        axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    (code, axum::Json(status)).into_response()
}

/// The frames of `body`, each released `delay` after it arrived, in order.
fn delayed(
    body: kube::client::Body,
    delay: std::time::Duration,
) -> impl futures::Stream<Item = Result<bytes::Bytes, kube::Error>> {
    use http_body_util::BodyExt;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let item = frame.map(|f| f.into_data().unwrap_or_default());
            let failed = item.is_err();
            if tx.send((tokio::time::Instant::now() + delay, item)).is_err() || failed {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        let (due, item) = rx.recv().await?;
        tokio::time::sleep_until(due).await;
        Some((item, rx))
    })
}
