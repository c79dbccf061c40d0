//! Pure construction of pod status patches, and the decisions about fake pods.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use serde_json::{Value, json};

use super::config::parse_duration;

/// Annotation: `"false"` keeps a fake pod Running but never Ready.
pub const READY_ANNOTATION: &str = "localnode.modelship.io/ready";
/// Annotation: overrides `--fake-ready-delay` for one fake pod (e.g. `"2s"`).
pub const READY_DELAY_ANNOTATION: &str = "localnode.modelship.io/ready-delay";

/// The node's address as seen from pods: this machine.
pub const HOST_IP: &str = "127.0.0.1";

/// What a container is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    Running { started_at: String },
    Waiting { reason: String, message: String },
    Terminated { exit_code: i32, reason: String, started_at: String, finished_at: String },
}

/// How a container last ended, shown as `lastState.terminated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastTermination {
    pub exit_code: i32,
    pub reason: String,
    pub started_at: String,
    pub finished_at: String,
}

/// One entry of `containerStatuses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerReport {
    pub name: String,
    pub image: String,
    pub container_id: String,
    pub state: ContainerState,
    pub ready: bool,
    pub restart_count: i32,
    pub last: Option<LastTermination>,
}

/// Everything localnode reports about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodReport {
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    pub phase: &'static str,
    pub pod_ip: Ipv4Addr,
    pub containers: Vec<ContainerReport>,
}

impl PodReport {
    /// A pod is ready when it runs and all its containers are ready.
    pub fn ready(&self) -> bool {
        self.phase == "Running" && self.containers.iter().all(|c| c.ready)
    }
}

/// A JSON merge patch for the pod's status subresource. Transition times of conditions whose
/// status did not change are kept from `current`.
pub fn status_patch(report: &PodReport, current: Option<&PodStatus>, now: &str) -> Value {
    let ready = report.ready();
    let unready_reason = (!ready).then_some(if report.phase == "Running" {
        "ContainersNotReady"
    } else {
        "PodCompleted"
    });
    let conditions: Vec<Value> = [
        ("PodReadyToStartContainers", true, None),
        ("Initialized", true, None),
        ("ContainersReady", ready, unready_reason),
        ("Ready", ready, unready_reason),
        ("PodScheduled", true, None),
    ]
    .into_iter()
    .map(|(kind, status, reason)| condition(kind, status, reason, current, now))
    .collect();
    let start_time = current
        .and_then(|s| s.start_time.as_ref())
        .map_or_else(|| now.to_string(), |t| t.0.to_string());
    let ip = report.pod_ip.to_string();
    json!({
        "status": {
            "phase": report.phase,
            "conditions": conditions,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": start_time,
            "containerStatuses": report.containers.iter().map(container_status).collect::<Vec<_>>(),
        }
    })
}

fn condition(
    kind: &str,
    status: bool,
    reason: Option<&str>,
    current: Option<&PodStatus>,
    now: &str,
) -> Value {
    let status = if status { "True" } else { "False" };
    let previous = current
        .and_then(|s| s.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.to_string());
    let mut value = json!({
        "type": kind,
        "status": status,
        "lastTransitionTime": previous.unwrap_or_else(|| now.to_string()),
    });
    if let Some(reason) = reason {
        value["reason"] = json!(reason);
    }
    value
}

fn container_status(container: &ContainerReport) -> Value {
    let state = match &container.state {
        ContainerState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        ContainerState::Waiting { reason, message } => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
        ContainerState::Terminated { exit_code, reason, started_at, finished_at } => {
            json!({"terminated": {
                "exitCode": exit_code, "reason": reason,
                "startedAt": started_at, "finishedAt": finished_at,
            }})
        }
    };
    let last_state = container.last.as_ref().map_or_else(
        || json!({}),
        |last| {
            json!({"terminated": {
                "exitCode": last.exit_code, "reason": last.reason,
                "startedAt": last.started_at, "finishedAt": last.finished_at,
            }})
        },
    );
    json!({
        "name": container.name,
        "image": container.image,
        "imageID": container.image,
        "containerID": container.container_id,
        "ready": container.ready,
        "started": matches!(container.state, ContainerState::Running { .. }),
        "restartCount": container.restart_count,
        "state": state,
        "lastState": last_state,
    })
}

/// What a fake pod should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeIntent {
    pub ready: bool,
    /// Wait before the first report, for a pod not yet Running.
    pub delay: Duration,
}

/// Reads the steering annotations of a fake pod; an unreadable delay falls back to the default.
pub fn fake_intent(pod: &Pod, default_delay: Duration) -> FakeIntent {
    let annotations = pod.metadata.annotations.as_ref();
    let get = |key: &str| annotations.and_then(|a| a.get(key)).map(|v| v.trim());
    FakeIntent {
        ready: get(READY_ANNOTATION) != Some("false"),
        delay: get(READY_DELAY_ANNOTATION)
            .and_then(|v| parse_duration(v).ok())
            .unwrap_or(default_delay),
    }
}

/// The report for a fake pod: every container running since `started_at`.
pub fn fake_report(pod: &Pod, ip: Ipv4Addr, ready: bool, started_at: &str) -> PodReport {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let containers = pod
        .spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .map(|c| ContainerReport {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            container_id: format!("localnode://fake/{uid}/{}", c.name),
            state: ContainerState::Running { started_at: started_at.to_string() },
            ready,
            restart_count: 0,
            last: None,
        })
        .collect();
    PodReport { phase: "Running", pod_ip: ip, containers }
}

/// Whether a fake pod's status already shows what `ready` asks for, so no patch is needed.
pub fn fake_is_current(pod: &Pod, ready: bool) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    let want = if ready { "True" } else { "False" };
    let containers = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    status.phase.as_deref() == Some("Running")
        && status.pod_ip.is_some()
        && status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == want)
        && statuses.len() == containers
        && statuses
            .iter()
            .all(|c| c.ready == ready && c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

/// Whether the pod is being deleted.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether the pod has finished for good (`Succeeded` or `Failed`).
pub fn is_finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// The pod IP already reported, if any (kept across agent restarts).
pub fn reported_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse().ok())
}

/// Current time as the API server writes it.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn two_container_pod() -> Pod {
        pod(json!({
            "metadata": {"name": "p", "uid": "u1"},
            "spec": {"containers": [{"name": "a", "image": "x/a:1"}, {"name": "b", "image": "x/b"}]}
        }))
    }

    #[test]
    fn fake_intent_reads_annotations() {
        let default = Duration::from_millis(300);
        let plain = two_container_pod();
        assert_eq!(fake_intent(&plain, default), FakeIntent { ready: true, delay: default });
        let steered = pod(json!({"metadata": {"annotations": {
            READY_ANNOTATION: "false", READY_DELAY_ANNOTATION: "2s"}}}));
        assert_eq!(
            fake_intent(&steered, default),
            FakeIntent { ready: false, delay: Duration::from_secs(2) }
        );
        let bad_delay = pod(json!({"metadata": {"annotations": {READY_DELAY_ANNOTATION: "soon"}}}));
        assert_eq!(fake_intent(&bad_delay, default).delay, default);
    }

    #[test]
    fn patch_marks_every_container_and_the_pod() {
        let p = two_container_pod();
        let report = fake_report(&p, Ipv4Addr::new(198, 51, 100, 1), true, "T0");
        let patch = status_patch(&report, None, "T1");
        let status = &patch["status"];
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "198.51.100.1");
        assert_eq!(status["podIPs"][0]["ip"], "198.51.100.1");
        assert_eq!(status["containerStatuses"].as_array().unwrap().len(), 2);
        assert_eq!(status["containerStatuses"][1]["ready"], true);
        assert_eq!(status["containerStatuses"][0]["state"]["running"]["startedAt"], "T0");
        let ready =
            status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["lastTransitionTime"], "T1");
    }

    #[test]
    fn applied_patch_is_current_and_keeps_transition_times() {
        let mut p = two_container_pod();
        let report = fake_report(&p, Ipv4Addr::new(198, 51, 100, 1), false, "2026-01-01T00:00:00Z");
        assert!(!fake_is_current(&p, false));
        let patch = status_patch(&report, None, "2026-01-01T00:00:01Z");
        p.status = Some(serde_json::from_value(patch["status"].clone()).unwrap());
        assert!(fake_is_current(&p, false));
        assert!(!fake_is_current(&p, true));

        // Ready flips: its transition time moves, PodScheduled's does not.
        let ready = fake_report(&p, Ipv4Addr::new(198, 51, 100, 1), true, "2026-01-01T00:00:00Z");
        let patch = status_patch(&ready, p.status.as_ref(), "2026-01-01T00:00:09Z");
        let time_of = |kind: &str| {
            patch["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == kind)
                .unwrap()["lastTransitionTime"]
                .clone()
        };
        assert_eq!(time_of("Ready"), "2026-01-01T00:00:09Z");
        assert_eq!(time_of("PodScheduled"), "2026-01-01T00:00:01Z");
        assert_eq!(patch["status"]["startTime"], "2026-01-01T00:00:01Z");
    }

    #[test]
    fn waiting_container_makes_pod_unready() {
        let report = PodReport {
            phase: "Running",
            pod_ip: Ipv4Addr::new(192, 0, 2, 1),
            containers: vec![ContainerReport {
                name: "c".into(),
                image: "i".into(),
                container_id: "localnode://1".into(),
                state: ContainerState::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: "back-off".into(),
                },
                ready: false,
                restart_count: 2,
                last: Some(LastTermination {
                    exit_code: 3,
                    reason: "Error".into(),
                    started_at: "a".into(),
                    finished_at: "b".into(),
                }),
            }],
        };
        assert!(!report.ready());
        let patch = status_patch(&report, None, "T");
        let c = &patch["status"]["containerStatuses"][0];
        assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 3);
        assert_eq!(c["restartCount"], 2);
        assert_eq!(c["started"], false);
    }
}
