//! Static checks of the rendered chart: lint, value combinations, the Kubernetes schemas,
//! monitoring objects, Pod Security `restricted` on every pod template.

use super::*;

#[test]
pub(crate) fn helm_lint_is_clean_in_strict_mode() {
    for (variant, args) in variants() {
        let out = run_ok(helm().args(["lint", "--strict"]).arg(chart()).args(&args), "helm lint");
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "helm lint ({variant}) reported problems:\n{out}"
        );
        assert!(out.contains("1 chart(s) linted, 0 chart(s) failed"), "{out}");
    }
    // The values schema refuses unknown keys and wrong types.
    for bad in
        ["replicaCount=two", "operator.logFormat=yaml", "unknownKey=1", "image.digest=latest"]
    {
        let (ok, out, err) =
            run(helm().args(["lint", "--strict"]).arg(chart()).args(["--set", bad]));
        assert!(!ok, "helm lint accepted --set {bad}:\n{out}{err}");
    }
}

/// Value combinations a user may choose: each renders what it promises, and the unsafe or
/// incomplete ones are refused with a message that says what is missing.
#[test]
pub(crate) fn value_combinations_render_or_fail_with_a_reason() {
    let set = |sets: &[&str]| -> Vec<String> {
        sets.iter().flat_map(|s| ["--set".to_string(), s.to_string()]).collect()
    };
    let kinds = |objects: &[Value]| -> BTreeSet<String> {
        objects.iter().map(|o| kind(o).to_string()).collect()
    };
    let args_of = |objects: &[Value]| -> Vec<String> {
        strings(&one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"])
    };

    // One replica without leader election: no Lease Role, no PodDisruptionBudget.
    let single = render(&set(&["replicaCount=1", "leaderElection.enabled=false"]));
    assert!(args_of(&single).contains(&"--leader-elect=false".to_string()));
    assert!(!args_of(&single).iter().any(|a| a.starts_with("--lease-")));
    assert!(!kinds(&single).contains("PodDisruptionBudget"));
    assert!(!single.iter().any(|o| name(o).ends_with("-leader-election")));

    // An existing ServiceAccount, bound by the chart's RBAC.
    let existing = render(&set(&["serviceAccount.create=false", "serviceAccount.name=existing"]));
    assert!(!kinds(&existing).contains("ServiceAccount"));
    let pod = &one(&existing, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "existing");
    assert!(!operator_rules(&existing, "existing").is_empty());

    // No RBAC, no metrics Service, a pinned digest, each anti-affinity preset.
    let bare = render(&set(&["rbac.create=false", "metrics.service.enabled=false"]));
    for absent in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service"] {
        assert!(!kinds(&bare).contains(absent), "{absent} rendered");
    }
    let digest = "sha256:".to_string() + &"0123456789abcdef".repeat(4);
    let pinned = render(&set(&[&format!("image.digest={digest}")]));
    let image = &one(&pinned, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image.as_str().unwrap(), format!("ghcr.io/modelship/operator:0.1.0@{digest}"));
    for (preset, key) in [
        ("soft", Some("preferredDuringSchedulingIgnoredDuringExecution")),
        ("hard", Some("requiredDuringSchedulingIgnoredDuringExecution")),
        ("none", None),
    ] {
        let objects = render(&set(&[&format!("podAntiAffinity={preset}")]));
        let affinity = &one(&objects, "Deployment")["spec"]["template"]["spec"]["affinity"];
        match key {
            Some(key) => assert!(affinity["podAntiAffinity"][key].is_array(), "{preset}"),
            None => assert!(affinity.is_null(), "{preset}"),
        }
    }

    // Refused, with the reason.
    for (sets, reason) in [
        (
            &["replicaCount=2", "leaderElection.enabled=false"][..],
            "replicaCount > 1 needs leaderElection.enabled",
        ),
        (
            &["metrics.service.enabled=false", "metrics.serviceMonitor.enabled=true"][..],
            "metrics.serviceMonitor.enabled needs metrics.service.enabled",
        ),
        (&["serviceAccount.create=false"][..], "serviceAccount.name is required"),
        (
            &["kubeStateMetrics.rbac.create=true"][..],
            "kubeStateMetrics.rbac.serviceAccountName is required",
        ),
    ] {
        let (ok, _, stderr) = run(helm().args(["template", RELEASE]).arg(chart()).args(set(sets)));
        assert!(!ok && stderr.contains(reason), "{sets:?}: {stderr}");
    }
}

/// Core kinds are validated by kubernetes-validate against the 1.37 OpenAPI schemas (the release the local control plane runs), strictly
/// (unknown fields are errors). It has no schemas for the Prometheus Operator's kinds, and
/// installing their CRDs here would mean vendoring another project's files, so those are
/// checked by meaning instead: the ServiceMonitor against the metrics Service, the PodMonitor
/// against the pods the operator really builds, and the PrometheusRule with promtool (below).
#[test]
pub(crate) fn rendered_manifests_are_valid_for_kubernetes_1_37() {
    let validate = tool("kubernetes-validate", PYTHON_HINT);
    let dir = TempDir::new("chart-validate");
    for (variant, args) in variants() {
        let objects = render(&args);
        let (monitoring, core): (Vec<&Value>, Vec<&Value>) = objects.iter().partition(|o| {
            o["apiVersion"].as_str().unwrap_or("").starts_with("monitoring.coreos.com/")
        });
        let text: String =
            core.iter().map(|o| format!("---\n{}", serde_yaml::to_string(o).unwrap())).collect();
        let file = dir.write(&format!("{variant}.yaml"), &text);
        let crd = chart().join("crds/modeldeployments.modelship.io.yaml");
        let out = run_ok(
            Command::new(&validate).args(["--strict", "-k", "1.37.0"]).arg(&crd).arg(&file),
            "kubernetes-validate",
        );
        let passed =
            out.lines().filter(|l| l.starts_with("INFO") && l.contains(" passed ")).count();
        assert_eq!(passed, core.len() + 1, "{variant}: not every object passed:\n{out}");
        assert!(
            !out.lines().any(|l| l.starts_with("WARN") || l.starts_with("ERROR")),
            "{variant}: kubernetes-validate warned:\n{out}"
        );
        for object in monitoring {
            check_monitoring_object(object, &objects);
        }
    }
}

pub(crate) fn check_monitoring_object(object: &Value, all: &[Value]) {
    assert_eq!(object["apiVersion"], "monitoring.coreos.com/v1", "{}", name(object));
    let spec = &object["spec"];
    match kind(object) {
        "ServiceMonitor" => {
            let service = of_kind(all, "Service")
                .into_iter()
                .find(|s| name(s).ends_with("-metrics"))
                .expect("the ServiceMonitor needs the metrics Service");
            let labels = service["metadata"]["labels"].as_object().expect("service labels");
            for (k, v) in spec["selector"]["matchLabels"].as_object().expect("matchLabels") {
                assert_eq!(
                    labels.get(k),
                    Some(v),
                    "ServiceMonitor selector {k} misses the Service"
                );
            }
            let ports: Vec<&str> = service["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["name"].as_str())
                .collect();
            for endpoint in spec["endpoints"].as_array().expect("endpoints") {
                let port = endpoint["port"].as_str().unwrap();
                assert!(ports.contains(&port), "ServiceMonitor port {port} not in {ports:?}");
                assert_eq!(endpoint["path"], "/metrics");
            }
            assert_eq!(strings(&spec["namespaceSelector"]["matchNames"]), [NAMESPACE]);
        }
        "PodMonitor" => {
            // The pods the operator builds for a ModelDeployment, from its own builder.
            let pod = serving_pod_template();
            let labels = pod["metadata"]["labels"].as_object().unwrap();
            for (k, v) in spec["selector"]["matchLabels"].as_object().expect("matchLabels") {
                assert_eq!(labels.get(k), Some(v), "PodMonitor selector {k} misses serving pods");
            }
            for expression in spec["selector"]["matchExpressions"].as_array().into_iter().flatten()
            {
                assert_eq!(expression["operator"], "Exists");
                let key = expression["key"].as_str().unwrap();
                assert!(labels.contains_key(key), "serving pods lack label {key}");
            }
            let ports: Vec<&str> = pod["spec"]["containers"][0]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["name"].as_str())
                .collect();
            for endpoint in spec["podMetricsEndpoints"].as_array().expect("endpoints") {
                let port = endpoint["port"].as_str().unwrap();
                assert!(
                    ports.contains(&port),
                    "PodMonitor port {port} not in serving pods {ports:?}"
                );
                assert_eq!(endpoint["path"], "/metrics");
                // The relabelings read labels the serving pods carry.
                for relabel in endpoint["relabelings"].as_array().into_iter().flatten() {
                    for source in strings(&relabel["sourceLabels"]) {
                        if let Some(label) = source.strip_prefix("__meta_kubernetes_pod_label_") {
                            assert!(
                                labels.keys().any(|k| sanitize(k) == label),
                                "relabeling reads pod label {label}, which serving pods lack"
                            );
                        }
                    }
                }
            }
        }
        "PrometheusRule" => {
            let groups = spec["groups"].as_array().expect("groups");
            assert!(!groups.is_empty());
            for rule in groups.iter().flat_map(|g| g["rules"].as_array().unwrap()) {
                assert!(rule["alert"].is_string() && rule["expr"].is_string(), "{rule}");
                assert!(rule["labels"]["severity"].is_string(), "{rule}");
            }
        }
        other => panic!("unexpected monitoring kind {other}"),
    }
}

/// Prometheus' service discovery turns a label name into [a-zA-Z0-9_].
pub(crate) fn sanitize(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

/// The pod template of a serving Deployment, as the operator builds it: the snapshot that the
/// operator's own tests keep identical to its builder's output.
pub(crate) fn serving_pod_template() -> Value {
    let path = repo().join("operator/src/desired/snapshots/deployment-canary.yaml");
    let deployment = &yaml_documents(&read(path))[0];
    assert_eq!(kind(deployment), "Deployment");
    deployment["spec"]["template"].clone()
}

/// The operator's Pod Security `restricted` checker, on a rendered PodSpec.
pub(crate) fn restricted_violations(pod: &Value) -> Vec<String> {
    let pod: PodSpec = serde_json::from_value(pod.clone()).expect("a PodSpec");
    pod_security::restricted_violations(&pod)
}

#[test]
pub(crate) fn every_pod_template_passes_pod_security_restricted() {
    let mut checked = 0;
    for (variant, args) in variants() {
        for deployment in of_kind(&render(&args), "Deployment") {
            let pod = &deployment["spec"]["template"]["spec"];
            let found = restricted_violations(pod);
            assert!(found.is_empty(), "{variant}/{}: {found:?}", name(deployment));
            // Hardening beyond the profile.
            let container = &pod["containers"][0];
            assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
            assert_eq!(pod["securityContext"]["runAsUser"], 65532);
            assert_eq!(pod["securityContext"]["runAsGroup"], 65532);
            assert!(container["resources"]["requests"].is_object(), "resources");
            assert!(container["resources"]["limits"]["memory"].is_string(), "memory limit");
            assert_eq!(pod["automountServiceAccountToken"], true, "the operator needs its token");
            checked += 1;
        }
    }
    // The serving pods the operator creates in users' namespaces.
    let serving = serving_pod_template();
    let found = restricted_violations(&serving["spec"]);
    assert!(found.is_empty(), "serving pods: {found:?}");
    assert_eq!(serving["spec"]["automountServiceAccountToken"], false);
    assert_eq!(checked, 3);
}
