//! The Pod Security Standards `restricted` profile (which includes `baseline`), checked on a
//! pod spec as the admission plugin checks it. Every pod template the operator builds and
//! every one the chart renders must pass; the operator's tests and the chart's tests both use
//! this one checker. Pure.

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, ContainerPort, PodSpec, SELinuxOptions, SeccompProfile,
    SecurityContext,
};

/// Volume sources the profile allows.
const ALLOWED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Sysctls the profile allows a pod to set.
const SAFE_SYSCTLS: [&str; 7] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
];

/// SELinux types a container may ask for.
const SELINUX_TYPES: [&str; 5] =
    ["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"];

/// One container of any kind, as the profile sees it.
struct ContainerView<'a> {
    name: &'a str,
    security: Option<&'a SecurityContext>,
    ports: &'a [ContainerPort],
}

/// Every violation of the profile in `pod`, named as the admission plugin would name it; empty
/// when the pod passes.
pub fn restricted_violations(pod: &PodSpec) -> Vec<String> {
    let mut found = Vec::new();
    let pod_sc = pod.security_context.clone().unwrap_or_default();
    for (field, set) in
        [("hostNetwork", pod.host_network), ("hostPID", pod.host_pid), ("hostIPC", pod.host_ipc)]
    {
        if set == Some(true) {
            found.push(format!("{field} is true"));
        }
    }
    for volume in pod.volumes.iter().flatten() {
        let source = serde_json::to_value(volume).unwrap_or_default();
        let keys = source.as_object().into_iter().flat_map(|o| o.keys());
        for key in keys.filter(|k| *k != "name" && !ALLOWED_VOLUMES.contains(&k.as_str())) {
            found.push(format!("volume {} uses {key}", volume.name));
        }
    }
    for sysctl in pod_sc.sysctls.iter().flatten() {
        if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
            found.push(format!("unsafe sysctl {}", sysctl.name));
        }
    }
    if !app_armor_ok(pod_sc.app_armor_profile.as_ref()) {
        found.push("pod appArmorProfile".into());
    }
    if !se_linux_ok(pod_sc.se_linux_options.as_ref()) {
        found.push("pod seLinuxOptions".into());
    }
    if pod_sc.run_as_user == Some(0) {
        found.push("pod runAsUser is 0".into());
    }
    if profile_type(pod_sc.seccomp_profile.as_ref()) == Some("Unconfined") {
        found.push("pod seccompProfile is Unconfined".into());
    }
    for c in containers(pod) {
        let n = c.name;
        let sc = c.security.cloned().unwrap_or_default();
        if sc.privileged == Some(true) {
            found.push(format!("{n}: privileged"));
        }
        if sc.windows_options.as_ref().and_then(|w| w.host_process) == Some(true) {
            found.push(format!("{n}: hostProcess"));
        }
        if !matches!(sc.proc_mount.as_deref(), None | Some("Default")) {
            found.push(format!("{n}: procMount"));
        }
        if !app_armor_ok(sc.app_armor_profile.as_ref()) {
            found.push(format!("{n}: appArmorProfile"));
        }
        if !se_linux_ok(sc.se_linux_options.as_ref()) {
            found.push(format!("{n}: seLinuxOptions"));
        }
        if c.ports.iter().any(|p| p.host_port.is_some_and(|port| port != 0)) {
            found.push(format!("{n}: hostPort"));
        }
        if sc.allow_privilege_escalation != Some(false) {
            found.push(format!("{n}: allowPrivilegeEscalation is not false"));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !drops_all(&caps) {
            found.push(format!("{n}: capabilities.drop lacks ALL"));
        }
        for add in caps.add.iter().flatten().filter(|c| *c != "NET_BIND_SERVICE") {
            found.push(format!("{n}: adds capability {add}"));
        }
        if !sc.run_as_non_root.or(pod_sc.run_as_non_root).unwrap_or(false) {
            found.push(format!("{n}: runAsNonRoot is not true"));
        }
        if sc.run_as_user == Some(0) {
            found.push(format!("{n}: runAsUser is 0"));
        }
        let seccomp = sc.seccomp_profile.as_ref().or(pod_sc.seccomp_profile.as_ref());
        if !matches!(profile_type(seccomp), Some("RuntimeDefault" | "Localhost")) {
            found.push(format!("{n}: seccompProfile is not RuntimeDefault or Localhost"));
        }
    }
    found
}

/// Regular, init and ephemeral containers alike.
fn containers(pod: &PodSpec) -> impl Iterator<Item = ContainerView<'_>> {
    let regular =
        pod.containers.iter().chain(pod.init_containers.iter().flatten()).map(|c| ContainerView {
            name: &c.name,
            security: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or_default(),
        });
    let ephemeral = pod.ephemeral_containers.iter().flatten().map(|c| ContainerView {
        name: &c.name,
        security: c.security_context.as_ref(),
        ports: c.ports.as_deref().unwrap_or_default(),
    });
    regular.chain(ephemeral)
}

fn profile_type(profile: Option<&SeccompProfile>) -> Option<&str> {
    profile.map(|p| p.type_.as_str())
}

fn app_armor_ok(profile: Option<&AppArmorProfile>) -> bool {
    profile.is_none_or(|p| matches!(p.type_.as_str(), "RuntimeDefault" | "Localhost"))
}

fn se_linux_ok(options: Option<&SELinuxOptions>) -> bool {
    options.is_none_or(|o| {
        o.type_.as_deref().is_none_or(|t| SELINUX_TYPES.contains(&t))
            && o.user.is_none()
            && o.role.is_none()
    })
}

fn drops_all(caps: &Capabilities) -> bool {
    caps.drop.iter().flatten().any(|c| c == "ALL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_pod_breaks_most_controls() {
        let bare: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 80}]}],
            "initContainers": [{"name": "i", "image": "x", "securityContext": {"privileged": true, "capabilities": {"add": ["SYS_ADMIN"]}}}],
            "hostNetwork": true,
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}, {"name": "ok", "emptyDir": {}}],
            "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}], "runAsUser": 0,
                                "seLinuxOptions": {"user": "root"}},
        }))
        .unwrap();
        let found = restricted_violations(&bare);
        for expected in [
            "hostNetwork is true",
            "volume h uses hostPath",
            "unsafe sysctl kernel.msgmax",
            "pod seLinuxOptions",
            "pod runAsUser is 0",
            "c: hostPort",
            "c: allowPrivilegeEscalation is not false",
            "c: capabilities.drop lacks ALL",
            "c: runAsNonRoot is not true",
            "c: seccompProfile is not RuntimeDefault or Localhost",
            "i: privileged",
            "i: adds capability SYS_ADMIN",
        ] {
            assert!(found.iter().any(|f| f == expected), "{expected} not in {found:?}");
        }
        assert!(!found.iter().any(|f| f.contains("volume ok")), "{found:?}");
    }

    #[test]
    fn a_hardened_pod_passes() {
        let pod: PodSpec = serde_json::from_value(serde_json::json!({
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "x",
                            "securityContext": {"allowPrivilegeEscalation": false,
                                                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
            "volumes": [{"name": "m", "persistentVolumeClaim": {"claimName": "models"}}],
        }))
        .unwrap();
        assert_eq!(restricted_violations(&pod), Vec::<String>::new());
    }
}
