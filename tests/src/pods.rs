//! Serving pods as the node runs them: their containers' processes (through the container's
//! cgroup, as containerd made it), a hard kill of those processes, and a watch on one pod's
//! states.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher;
use kube::{Api, Client};

/// The ID containerd gave the pod's first container (`containerd://ID` in its status).
pub fn container_id(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let id = status.container_id.as_deref()?;
    Some(id.rsplit("://").next()?.to_string())
}

/// The cgroup of a container: containerd puts each under `k8s.io/<id>` in every hierarchy.
fn cgroup_procs(id: &str) -> PathBuf {
    let v1 = PathBuf::from(format!("/sys/fs/cgroup/pids/k8s.io/{id}/cgroup.procs"));
    if v1.exists() { v1 } else { PathBuf::from(format!("/sys/fs/cgroup/k8s.io/{id}/cgroup.procs")) }
}

/// The process IDs (on this host) running in a container.
pub fn container_pids(id: &str) -> Vec<i32> {
    let path = cgroup_procs(id);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {} (the container's processes): {e}", path.display()));
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// SIGKILL every process of a container, as the kernel's OOM killer or a crash would end it.
/// Returns the processes killed.
pub fn sigkill_container(id: &str) -> Vec<i32> {
    let pids = container_pids(id);
    assert!(!pids.is_empty(), "container {id} has no process to kill");
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    pids
}

/// One state of a pod, as a watch delivered it.
#[derive(Clone, Debug)]
pub struct PodState {
    pub seen: Timestamp,
    pub ready: bool,
    pub deleting: bool,
    pub restarts: i32,
    /// The container's exit code, once it has terminated (this run or the last one).
    pub exit_code: Option<i32>,
    pub running: bool,
}

/// Records every state of one pod from now on, including its last one before deletion.
pub struct PodRecorder {
    states: Arc<Mutex<Vec<PodState>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodRecorder {
    pub fn start(client: &Client, namespace: &str, name: &str) -> PodRecorder {
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let states = Arc::new(Mutex::new(Vec::new()));
        let sink = states.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, config));
            while let Some(event) = stream.next().await {
                let pod = match event {
                    Ok(
                        watcher::Event::Apply(pod)
                        | watcher::Event::Delete(pod)
                        | watcher::Event::InitApply(pod),
                    ) => pod,
                    _ => continue,
                };
                sink.lock().expect("lock").push(state_of(&pod));
            }
        });
        PodRecorder { states, task }
    }

    pub fn states(&self) -> Vec<PodState> {
        self.states.lock().expect("lock").clone()
    }
}

impl Drop for PodRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn state_of(pod: &Pod) -> PodState {
    let status = pod.status.clone().unwrap_or_default();
    let ready =
        status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    let container = status.container_statuses.as_ref().and_then(|c| c.first());
    let state = container.and_then(|c| c.state.clone()).unwrap_or_default();
    let last = container.and_then(|c| c.last_state.clone()).unwrap_or_default();
    let exit_code = state.terminated.as_ref().or(last.terminated.as_ref()).map(|t| t.exit_code);
    PodState {
        seen: Timestamp::now(),
        ready,
        deleting: pod.metadata.deletion_timestamp.is_some(),
        restarts: container.map_or(0, |c| c.restart_count),
        exit_code,
        running: state.running.is_some(),
    }
}
