//! Process pods: one task per pod runs the container's binary as a local process, probes it,
//! restarts it when it exits, reports all of that in pod status, and stops it gracefully when
//! the pod is deleted.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Api;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use super::agent::{AgentCtx, delete_now, patch_status};
use super::env::{expand, resolve_env};
use super::probe::{ProbeSpec, ProbeState, probe_once};
use super::status::{
    ContainerReport, ContainerState, LastTermination, PodReport, now_rfc3339, status_patch,
};
use crate::{Error, Result};

/// Crash-loop delays double from here...
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// ...up to here.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A process that ran this long before exiting starts over at the initial delay.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// After SIGTERM a process always gets at least this long, as with the kubelet.
const MIN_TERM_GRACE: Duration = Duration::from_secs(2);
/// Grace given to processes when localnode itself stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Variables passed through from localnode's own environment; everything else comes from the pod.
const HOST_ENV: [&str; 4] = ["PATH", "HOME", "TMPDIR", "LANG"];

/// The delay before each restart of a crashing container.
#[derive(Debug, Clone)]
pub struct CrashBackoff {
    next: Duration,
}

impl Default for CrashBackoff {
    fn default() -> Self {
        CrashBackoff { next: BACKOFF_INITIAL }
    }
}

impl CrashBackoff {
    /// The delay before the next start of a process that ran for `ran_for`.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= BACKOFF_RESET_AFTER {
            self.next = BACKOFF_INITIAL;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }
}

/// Whether `restartPolicy` restarts a container that exited with `code`.
pub fn should_restart(policy: Option<&str>, code: i32) -> bool {
    match policy {
        Some("Never") => false,
        Some("OnFailure") => code != 0,
        _ => true,
    }
}

/// How long a deleted pod may take to stop: what the deletion asked for, else the spec's
/// `terminationGracePeriodSeconds`, else 30 s.
pub fn termination_grace(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// The container's preStop hook, as far as it can run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreStop {
    None,
    Sleep(Duration),
    HttpGet(String),
}

/// Reads `lifecycle.preStop`; `exec` hooks cannot run outside a container and are skipped.
pub fn pre_stop(container: &Container) -> PreStop {
    let Some(handler) = container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
        return PreStop::None;
    };
    if let Some(sleep) = &handler.sleep {
        PreStop::Sleep(Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0)))
    } else if let Some(get) = &handler.http_get {
        let path = get.path.clone().unwrap_or_default();
        PreStop::HttpGet(if path.starts_with('/') { path } else { format!("/{path}") })
    } else {
        PreStop::None
    }
}

/// Why a process pod stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The pod has a deletionTimestamp: stop gracefully, then remove the pod object.
    Deleted,
    /// The pod object is already gone: stop gracefully, nothing to report.
    Vanished,
    /// localnode is stopping: stop quickly, leave the pod for the next agent to adopt.
    Shutdown,
}

/// The latest pod object and the shutdown signal.
struct Signals {
    pod: watch::Receiver<Arc<Pod>>,
    shutdown: watch::Receiver<bool>,
    vanished: bool,
}

impl Signals {
    fn pod(&self) -> Arc<Pod> {
        self.pod.borrow().clone()
    }

    fn requested_stop(&self) -> Option<Stop> {
        if *self.shutdown.borrow() {
            Some(Stop::Shutdown)
        } else if self.vanished {
            Some(Stop::Vanished)
        } else if self.pod.borrow().metadata.deletion_timestamp.is_some() {
            Some(Stop::Deleted)
        } else {
            None
        }
    }

    /// Waits until the pod must stop. Cancel-safe.
    async fn next_stop(&mut self) -> Stop {
        loop {
            if let Some(stop) = self.requested_stop() {
                return stop;
            }
            tokio::select! {
                changed = self.pod.changed() => if changed.is_err() { self.vanished = true },
                changed = self.shutdown.changed() => if changed.is_err() { return Stop::Shutdown },
            }
        }
    }

    /// Waits for `delay`, or less if the pod must stop meanwhile.
    async fn wait_or_stop(&mut self, delay: Duration) -> Option<Stop> {
        tokio::select! {
            stop = self.next_stop() => Some(stop),
            () = sleep(delay) => None,
        }
    }
}

/// The readiness probe of the running process.
struct Prober {
    spec: Option<ProbeSpec>,
    state: ProbeState,
    next_at: Instant,
}

impl Prober {
    fn new(spec: Option<ProbeSpec>) -> Prober {
        let mut state = ProbeState::started();
        // Without a readiness probe a started container is ready, as with the kubelet.
        state.ready = spec.is_none();
        let next_at = Instant::now() + spec.as_ref().map_or(Duration::ZERO, |s| s.initial_delay);
        Prober { spec, state, next_at }
    }

    /// Completes when the next probe is due; never without a probe.
    async fn due(&self) {
        if self.spec.is_some() {
            sleep_until(self.next_at).await;
        } else {
            std::future::pending::<()>().await;
        }
    }

    async fn check(&mut self, client: &super::http::HttpClient, addr: SocketAddr) {
        let Some(spec) = &self.spec else { return };
        let ok = probe_once(client, addr, spec).await;
        if self.state.observe(ok, spec) {
            tracing::debug!(%addr, ready = self.state.ready, "readiness changed");
        }
        self.next_at = Instant::now() + self.state.next_interval(spec);
    }
}

/// Everything needed to run one process pod.
pub struct ProcessPod {
    ctx: Arc<AgentCtx>,
    api: Api<Pod>,
    uid: String,
    namespace: String,
    name: String,
    key: String,
    binary: PathBuf,
    container: usize,
    addr: SocketAddr,
    ip: Ipv4Addr,
    signals: Signals,
    prober: Prober,
    restarts: i32,
    last: Option<LastTermination>,
    container_id: String,
    reported: Option<PodReport>,
}

/// Where a process pod runs; the agent chose these.
pub struct Placement {
    pub binary: PathBuf,
    pub container: usize,
    pub addr: SocketAddr,
    pub ip: Ipv4Addr,
}

impl ProcessPod {
    pub fn new(
        ctx: Arc<AgentCtx>,
        pod: watch::Receiver<Arc<Pod>>,
        placement: Placement,
    ) -> ProcessPod {
        let current = pod.borrow().clone();
        let namespace = current.metadata.namespace.clone().unwrap_or_default();
        let name = current.metadata.name.clone().unwrap_or_default();
        let uid = current.metadata.uid.clone().unwrap_or_default();
        let container_name = current
            .spec
            .as_ref()
            .and_then(|s| s.containers.get(placement.container))
            .map(|c| c.name.clone())
            .unwrap_or_default();
        // Keep the restart count across agent restarts.
        let restarts = current
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == container_name))
            .map_or(0, |c| c.restart_count);
        ProcessPod {
            api: Api::namespaced(ctx.client.clone(), &namespace),
            key: super::directory::pod_key(&namespace, &name),
            signals: Signals { pod, shutdown: ctx.shutdown.clone(), vanished: false },
            ctx,
            uid,
            namespace,
            name,
            binary: placement.binary,
            container: placement.container,
            addr: placement.addr,
            ip: placement.ip,
            prober: Prober::new(None),
            restarts,
            last: None,
            container_id: String::new(),
            reported: None,
        }
    }

    /// Runs the pod until it is deleted (then removes the pod object) or localnode stops.
    pub async fn run(mut self) {
        self.ctx.directory.insert(&self.key, &self.uid, self.addr);
        let stop = self.lifecycle().await;
        self.ctx.directory.remove(&self.key, &self.uid);
        if stop == Stop::Deleted {
            // Like the kubelet: once the containers are gone, finish the deletion.
            if let Err(error) = delete_now(&self.api, &self.name, &self.uid).await {
                tracing::warn!(pod = %self.key, %error, "could not remove the pod object");
            }
        }
        tracing::info!(pod = %self.key, ?stop, "process pod finished");
    }

    async fn lifecycle(&mut self) -> Stop {
        let mut backoff = CrashBackoff::default();
        loop {
            if let Some(stop) = self.signals.requested_stop() {
                return stop;
            }
            let pod = self.signals.pod();
            let started_at = now_rfc3339();
            let mut child = match self.spawn(&pod).await {
                Ok(child) => child,
                Err(error) => {
                    // A configuration error is waited out; a binary that cannot start counts
                    // as a crash.
                    let reason = match &error {
                        Error::ContainerConfig(_) | Error::Kube(_) => "CreateContainerConfigError",
                        _ => {
                            self.restarts += 1;
                            "CrashLoopBackOff"
                        }
                    };
                    tracing::warn!(pod = %self.key, %error, reason, "process not started");
                    let state = ContainerState::Waiting {
                        reason: reason.to_string(),
                        message: error.to_string(),
                    };
                    self.sync("Running", state, false).await;
                    if let Some(stop) =
                        self.signals.wait_or_stop(backoff.next_delay(Duration::ZERO)).await
                    {
                        return stop;
                    }
                    continue;
                }
            };
            let ran_since = Instant::now();
            let container = container_of(&pod, self.container);
            self.prober = Prober::new(
                container.and_then(|c| c.readiness_probe.as_ref()).map(ProbeSpec::from_probe),
            );
            let running = ContainerState::Running { started_at: started_at.clone() };
            self.sync("Running", running.clone(), self.prober.state.ready).await;

            let exit = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    () = self.prober.due() => {
                        self.prober.check(&self.ctx.probe_client, self.addr).await;
                        self.sync("Running", running.clone(), self.prober.state.ready).await;
                    }
                    stop = self.signals.next_stop() => {
                        self.terminate(child, stop, &running).await;
                        return stop;
                    }
                }
            };
            let code = exit_code(exit);
            let finished_at = now_rfc3339();
            tracing::warn!(pod = %self.key, code, restarts = self.restarts, "process exited");
            self.last = Some(LastTermination {
                exit_code: code,
                reason: if code == 0 { "Completed" } else { "Error" }.to_string(),
                started_at: started_at.clone(),
                finished_at: finished_at.clone(),
            });
            let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
            if !should_restart(policy, code) {
                let phase = if code == 0 { "Succeeded" } else { "Failed" };
                let state = ContainerState::Terminated {
                    exit_code: code,
                    reason: if code == 0 { "Completed" } else { "Error" }.to_string(),
                    started_at,
                    finished_at,
                };
                self.last = None;
                self.sync(phase, state, false).await;
                return self.signals.next_stop().await;
            }
            self.restarts += 1;
            let delay = backoff.next_delay(ran_since.elapsed());
            let state = ContainerState::Waiting {
                reason: "CrashLoopBackOff".to_string(),
                message: format!("back-off {delay:?} restarting failed container"),
            };
            self.sync("Running", state, false).await;
            if let Some(stop) = self.signals.wait_or_stop(delay).await {
                return stop;
            }
        }
    }

    /// preStop, SIGTERM, then SIGKILL when the grace period is over. The process keeps serving
    /// and being probed until it exits.
    async fn terminate(&mut self, mut child: Child, stop: Stop, running: &ContainerState) {
        let pod = self.signals.pod();
        let grace = match stop {
            Stop::Shutdown => SHUTDOWN_GRACE,
            Stop::Deleted | Stop::Vanished => termination_grace(&pod),
        };
        let deadline = Instant::now() + grace;
        let report = stop == Stop::Deleted;
        tracing::info!(pod = %self.key, ?stop, ?grace, "stopping process");

        if stop != Stop::Shutdown {
            match container_of(&pod, self.container).map(pre_stop) {
                Some(PreStop::Sleep(duration)) => {
                    let until = (Instant::now() + duration).min(deadline);
                    loop {
                        tokio::select! {
                            status = child.wait() => {
                                tracing::info!(pod = %self.key, code = exit_code(status), "process exited during preStop");
                                return;
                            }
                            () = self.prober.due() => {
                                self.prober.check(&self.ctx.probe_client, self.addr).await;
                                if report {
                                    self.sync("Running", running.clone(), self.prober.state.ready).await;
                                }
                            }
                            () = sleep_until(until) => break,
                        }
                    }
                }
                Some(PreStop::HttpGet(path)) => {
                    let request =
                        Request::get(format!("http://{}{path}", self.addr)).body(Body::empty());
                    if let Ok(request) = request {
                        let call = self.ctx.probe_client.request(request);
                        let _ = tokio::time::timeout_at(deadline, call).await;
                    }
                }
                Some(PreStop::None) | None => {}
            }
        }

        if let Some(pid) = child.id() {
            if let Err(error) = signal(pid, Signal::SIGTERM) {
                tracing::warn!(pod = %self.key, pid, %error, "SIGTERM failed");
            } else {
                tracing::info!(pod = %self.key, pid, "sent SIGTERM");
            }
        }
        let kill_at = deadline.max(Instant::now() + MIN_TERM_GRACE);
        loop {
            tokio::select! {
                status = child.wait() => {
                    tracing::info!(pod = %self.key, code = exit_code(status), "process exited");
                    return;
                }
                () = self.prober.due(), if report => {
                    self.prober.check(&self.ctx.probe_client, self.addr).await;
                    self.sync("Running", running.clone(), self.prober.state.ready).await;
                }
                () = sleep_until(kill_at) => {
                    tracing::warn!(pod = %self.key, "grace period over; sending SIGKILL");
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return;
                }
            }
        }
    }

    async fn spawn(&mut self, pod: &Pod) -> Result<Child> {
        let container = container_of(pod, self.container)
            .ok_or_else(|| Error::ContainerConfig("container vanished from the spec".into()))?;
        let env = resolve_env(&self.ctx.client, pod, container, self.ip).await?;
        let vars: HashMap<String, String> = env.iter().cloned().collect();
        let args: Vec<String> =
            container.args.iter().flatten().map(|arg| expand(arg, &vars)).collect();

        let short_uid: String = self.uid.chars().take(8).collect();
        let dir = self.ctx.log_dir.join(format!("{}_{}_{short_uid}", self.namespace, self.name));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(Error::io(format!("create {}", dir.display())))?;
        let log_path = dir.join(format!("{}.log", container.name));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::io(format!("open {}", log_path.display())))?;
        // A marker between incarnations makes crash loops readable.
        let _ = writeln!(
            log,
            "--- localnode: start {} (restarts {}): {} {}",
            now_rfc3339(),
            self.restarts,
            self.binary.display(),
            args.join(" ")
        );
        let stderr = log.try_clone().map_err(Error::io(format!("open {}", log_path.display())))?;

        let mut command = Command::new(&self.binary);
        command.args(&args).env_clear();
        for name in HOST_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .envs(env)
            .env("MODELSHIP_LISTEN", self.addr.to_string())
            .env("MODELSHIP_POD_NAME", &self.name)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let child =
            command.spawn().map_err(Error::io(format!("start {}", self.binary.display())))?;
        let pid = child.id().unwrap_or_default();
        self.container_id = format!("localnode://{pid}");
        tracing::info!(
            pod = %self.key, pid, listen = %self.addr, ip = %self.ip,
            binary = %self.binary.display(), log = %log_path.display(),
            "process started"
        );
        Ok(child)
    }

    /// Patches the pod status when what it should say changed. A failed patch is retried on
    /// the next call, which comes at least once a probe period while the process runs.
    async fn sync(&mut self, phase: &'static str, state: ContainerState, ready: bool) {
        let pod = self.signals.pod();
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        let pod_started = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or_else(now_rfc3339, |t| t.0.to_string());
        let containers = spec
            .containers
            .iter()
            .enumerate()
            .map(|(index, c)| {
                if index == self.container {
                    ContainerReport {
                        name: c.name.clone(),
                        image: c.image.clone().unwrap_or_default(),
                        container_id: self.container_id.clone(),
                        state: state.clone(),
                        ready,
                        restart_count: self.restarts,
                        last: self.last.clone(),
                    }
                } else {
                    // Sidecars of a process pod are not run; they are reported ready.
                    ContainerReport {
                        name: c.name.clone(),
                        image: c.image.clone().unwrap_or_default(),
                        container_id: format!("localnode://fake/{}/{}", self.uid, c.name),
                        state: ContainerState::Running { started_at: pod_started.clone() },
                        ready: true,
                        restart_count: 0,
                        last: None,
                    }
                }
            })
            .collect();
        let report = PodReport { phase, pod_ip: self.ip, containers };
        if self.reported.as_ref() == Some(&report) {
            return;
        }
        let patch = status_patch(&report, pod.status.as_ref(), &now_rfc3339());
        match patch_status(&self.api, &self.name, &patch).await {
            Ok(()) => {
                tracing::info!(pod = %self.key, ready = report.ready(), restarts = self.restarts, "status reported");
                self.reported = Some(report);
            }
            Err(error) => {
                tracing::warn!(pod = %self.key, %error, "status patch failed");
            }
        }
    }
}

fn container_of(pod: &Pod, index: usize) -> Option<&Container> {
    pod.spec.as_ref().and_then(|s| s.containers.get(index))
}

fn exit_code(status: std::io::Result<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(_) => -1,
    }
}

fn signal(pid: u32, signal: Signal) -> Result<()> {
    let pid = i32::try_from(pid).map_err(|_| Error::Invalid {
        what: "pid",
        value: pid.to_string(),
        reason: "out of range",
    })?;
    kill(Pid::from_raw(pid), signal)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut backoff = CrashBackoff::default();
        let quick = Duration::from_millis(10);
        let delays: Vec<u64> = (0..6).map(|_| backoff.next_delay(quick).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff.next_delay(Duration::from_secs(60)), Duration::from_secs(1));
    }

    #[test]
    fn restart_policy() {
        assert!(should_restart(None, 0));
        assert!(should_restart(Some("Always"), 0));
        assert!(should_restart(Some("OnFailure"), 1));
        assert!(!should_restart(Some("OnFailure"), 0));
        assert!(!should_restart(Some("Never"), 1));
    }

    #[test]
    fn grace_comes_from_the_deletion_first() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "terminationGracePeriodSeconds": 7}
        }))
        .unwrap();
        assert_eq!(termination_grace(&pod), Duration::from_secs(7));
        pod.metadata.deletion_grace_period_seconds = Some(2);
        assert_eq!(termination_grace(&pod), Duration::from_secs(2));
        pod.spec.as_mut().unwrap().termination_grace_period_seconds = None;
        pod.metadata.deletion_grace_period_seconds = None;
        assert_eq!(termination_grace(&pod), Duration::from_secs(30));
    }

    #[test]
    fn pre_stop_hooks() {
        let container = |lifecycle: serde_json::Value| -> Container {
            serde_json::from_value(json!({"name": "c", "lifecycle": lifecycle})).unwrap()
        };
        assert_eq!(
            pre_stop(&container(json!({"preStop": {"sleep": {"seconds": 5}}}))),
            PreStop::Sleep(Duration::from_secs(5))
        );
        assert_eq!(
            pre_stop(&container(json!({"preStop": {"httpGet": {"path": "drain", "port": 1}}}))),
            PreStop::HttpGet("/drain".into())
        );
        assert_eq!(
            pre_stop(&container(json!({"preStop": {"exec": {"command": ["sleep", "1"]}}}))),
            PreStop::None
        );
        assert_eq!(pre_stop(&container(json!({}))), PreStop::None);
    }
}
