//! The Helm chart, the container images and the CI workflow.
//!
//! Static checks: `helm lint --strict`; the rendered manifests against the Kubernetes 1.37
//! schemas; Pod Security `restricted` on every pod template; the RBAC rules (no wildcards,
//! the documented table); the alert rules and dashboard queries with promtool, including unit
//! tests of every alert; every value documented; hadolint; actionlint; the images built with
//! podman and inspected.
//!
//! On the local cluster: an install with the chart's defaults into a namespace that enforces
//! `restricted` (the operator image runs in two pods on the node, one holds the Lease), an
//! upgrade and an uninstall that leaves nothing behind; and the operator binary run with a
//! token of the chart's ServiceAccount through blue-green rollouts of real serving pods, whose
//! requests in the API server's audit log must match the chart's RBAC in both directions.
//!
//! Tools come from the environment `make test` prepares: helm and kubectl (the control plane's
//! env file), kubernetes-validate and hadolint (`tests/python-tools.sh`), actionlint and
//! promtool (`tests/go-tools.sh`, called from here), podman (`tests/images.sh` installs it). A
//! missing tool fails the test and says where the tool comes from; nothing is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodSpec;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use modelship_crds::ModelDeployment;
use modelship_operator::desired::pod_security;
use modelship_tests::harness::{self, unique_name, wait_until};
use modelship_tests::operator::{free_port, operator_bin};
use serde::Deserialize;
use serde_json::{Value, json};

const RESTRICTED: &[(&str, &str)] = &[
    ("pod-security.kubernetes.io/enforce", "restricted"),
    ("pod-security.kubernetes.io/warn", "restricted"),
];
const KUBE_HINT: &str =
    "run the tests with `make test`, or `source STATE_DIR/env` after tests/controlplane/up.sh";
const PYTHON_HINT: &str =
    "put the directory printed by tests/python-tools.sh on PATH (make test does)";

// ---------------------------------------------------------------------------------------
// Tools, files and rendering
// ---------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repository root")
}

fn chart() -> PathBuf {
    repo().join("charts/modelship")
}

/// The chart's appVersion: the tag of the images it runs by default.
fn app_version() -> String {
    let chart: Value = serde_yaml::from_str(&read(chart().join("Chart.yaml"))).expect("Chart.yaml");
    chart["appVersion"].as_str().expect("appVersion").to_string()
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `tool` from PATH; panics with where it comes from.
fn tool(name: &str, hint: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} is not on PATH: {hint}"))
}

/// actionlint or promtool, built into the cache by `tests/go-tools.sh` on first use.
fn go_tool(name: &str) -> PathBuf {
    let out =
        run_ok(Command::new("bash").arg(repo().join("tests/go-tools.sh")), "tests/go-tools.sh");
    let path = PathBuf::from(out.trim()).join(name);
    assert!(path.is_file(), "tests/go-tools.sh did not provide {}", path.display());
    path
}

/// Runs a command and returns (success, stdout, stderr).
fn run(command: &mut Command) -> (bool, String, String) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs a command that must succeed; returns its stdout.
fn run_ok(command: &mut Command, what: &str) -> String {
    let (ok, stdout, stderr) = run(command);
    assert!(ok, "{what} failed: {command:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    stdout
}

/// Runs a command with `input` on stdin; it must succeed.
fn run_with_input(command: &mut Command, input: &str, what: &str) -> String {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn helm() -> Command {
    Command::new(tool("helm", KUBE_HINT))
}

fn kubectl() -> Command {
    Command::new(tool("kubectl", KUBE_HINT))
}

/// A directory under the system temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every document of a multi-document YAML text, as JSON values (empty documents dropped).
fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The chart's values files under `ci/` and the defaults: (name, helm arguments).
fn variants() -> Vec<(&'static str, Vec<String>)> {
    let ci = chart().join("ci");
    vec![
        ("defaults", vec![]),
        (
            "all-features",
            vec!["-f".into(), ci.join("all-features-values.yaml").display().to_string()],
        ),
        ("namespaced", vec!["-f".into(), ci.join("namespaced-values.yaml").display().to_string()]),
    ]
}

const RELEASE: &str = "ms";
const NAMESPACE: &str = "modelship-system";

/// `helm template` of the chart with `args`.
fn render(args: &[String]) -> Vec<Value> {
    let out = run_ok(
        helm().args(["template", RELEASE]).arg(chart()).args(["--namespace", NAMESPACE]).args(args),
        "helm template",
    );
    yaml_documents(&out)
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn of_kind<'a>(objects: &'a [Value], wanted: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o) == wanted).collect()
}

fn one<'a>(objects: &'a [Value], wanted: &str) -> &'a Value {
    let found = of_kind(objects, wanted);
    assert_eq!(found.len(), 1, "expected one {wanted}, found {}", found.len());
    found[0]
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
}

// ---------------------------------------------------------------------------------------
// Static checks
// ---------------------------------------------------------------------------------------

#[test]
fn helm_lint_is_clean_in_strict_mode() {
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
fn value_combinations_render_or_fail_with_a_reason() {
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
fn rendered_manifests_are_valid_for_kubernetes_1_37() {
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

fn check_monitoring_object(object: &Value, all: &[Value]) {
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
fn sanitize(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

/// The pod template of a serving Deployment, as the operator builds it: the snapshot that the
/// operator's own tests keep identical to its builder's output.
fn serving_pod_template() -> Value {
    let path = repo().join("operator/src/desired/snapshots/deployment-canary.yaml");
    let deployment = &yaml_documents(&read(path))[0];
    assert_eq!(kind(deployment), "Deployment");
    deployment["spec"]["template"].clone()
}

/// The operator's Pod Security `restricted` checker, on a rendered PodSpec.
fn restricted_violations(pod: &Value) -> Vec<String> {
    let pod: PodSpec = serde_json::from_value(pod.clone()).expect("a PodSpec");
    pod_security::restricted_violations(&pod)
}

#[test]
fn every_pod_template_passes_pod_security_restricted() {
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

/// (verb, API group, resource[/subresource]).
type Access = (String, String, String);

/// The operator's rules in rendered manifests, expanded into accesses, and the resourceNames
/// each access is limited to (empty: not limited).
fn operator_rules(objects: &[Value], account: &str) -> BTreeMap<Access, Vec<String>> {
    let bound: BTreeSet<(String, String)> = objects
        .iter()
        .filter(|o| matches!(kind(o), "RoleBinding" | "ClusterRoleBinding"))
        .filter(|b| b["subjects"].as_array().unwrap().iter().any(|s| s["name"] == account))
        .map(|b| {
            (
                b["roleRef"]["kind"].as_str().unwrap().into(),
                b["roleRef"]["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut rules = BTreeMap::new();
    for role in objects.iter().filter(|o| matches!(kind(o), "Role" | "ClusterRole")) {
        if !bound.contains(&(kind(role).to_string(), name(role).to_string())) {
            continue;
        }
        for rule in role["rules"].as_array().unwrap() {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        let names = strings(&rule["resourceNames"]);
                        let previous = rules.insert((verb, group.clone(), resource.clone()), names);
                        assert!(previous.is_none(), "a verb is granted twice in {}", name(role));
                    }
                }
            }
        }
    }
    rules
}

#[test]
fn rbac_is_least_privilege_without_wildcards() {
    let readme = read(chart().join("README.md"));
    for (variant, args) in variants() {
        let objects = render(&args);
        for role in objects.iter().filter(|o| matches!(kind(o), "Role" | "ClusterRole")) {
            for rule in role["rules"].as_array().unwrap() {
                for field in ["apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"]
                {
                    assert!(
                        !strings(&rule[field]).iter().any(|v| v.contains('*')),
                        "{variant}/{}: wildcard in {field}",
                        name(role)
                    );
                }
                for resource in strings(&rule["resources"]) {
                    assert!(
                        !matches!(
                            resource.as_str(),
                            "pods" | "pods/exec" | "customresourcedefinitions"
                        ) || name(role).ends_with("-kube-state-metrics"),
                        "{variant}/{}: grants {resource}",
                        name(role)
                    );
                    // Secrets: only get, only the webhook Secrets, by name.
                    if resource == "secrets" {
                        assert_eq!(strings(&rule["verbs"]), ["get"], "{variant}: secrets verbs");
                        assert_eq!(
                            strings(&rule["resourceNames"]),
                            ["modelship-webhook"],
                            "{variant}: secrets by name"
                        );
                    }
                }
            }
        }
        let rules = operator_rules(&objects, "ms-modelship");
        // Leases: create is not limited by name (it cannot be); the rest is, to the one lease.
        for ((verb, group, resource), names) in &rules {
            if resource == "leases" {
                assert_eq!(group, "coordination.k8s.io");
                match verb.as_str() {
                    "create" => assert!(names.is_empty()),
                    "get" | "patch" => assert_eq!(names, &["ms-modelship".to_string()]),
                    other => panic!("{variant}: lease verb {other} is not used by the operator"),
                }
            } else if resource == "secrets" {
                assert_eq!(
                    (verb.as_str(), names.as_slice()),
                    ("get", &["modelship-webhook".to_string()][..])
                );
                assert!(readme.contains(
                    "| `\"\"` | `secrets`, only `resourceNames: rbac.webhookSecretNames` | get |"
                ));
            } else {
                assert!(names.is_empty(), "{verb} {resource} limited by name");
                // The README's RBAC table lists the same verbs.
                let shown = if group.is_empty() { "\"\"" } else { group.as_str() };
                let row = readme
                    .lines()
                    .find(|l| l.contains(&format!("| `{shown}` | `{resource}` |")))
                    .unwrap_or_else(|| panic!("README has no RBAC row for {group} {resource}"));
                assert!(
                    row.contains(verb.as_str()),
                    "README row for {resource} lacks {verb}: {row}"
                );
            }
        }
        let granted: BTreeSet<String> =
            rules.keys().map(|(v, g, r)| format!("{v} {g}/{r}")).collect();
        assert_eq!(granted.len(), 31, "{variant}: {granted:#?}");
        let deployment = one(&objects, "Deployment");
        let args = strings(&deployment["spec"]["template"]["spec"]["containers"][0]["args"]);
        if variant == "namespaced" {
            // Confined: a Role in the watched namespace, no ClusterRole for the operator.
            assert!(args.contains(&"--namespace=ml".to_string()), "{args:?}");
            let role =
                of_kind(&objects, "Role").into_iter().find(|r| name(r) == "ms-modelship").unwrap();
            assert_eq!(role["metadata"]["namespace"], "ml");
            assert!(of_kind(&objects, "ClusterRole").is_empty());
            assert!(of_kind(&objects, "ClusterRoleBinding").is_empty());
        } else {
            assert!(!args.iter().any(|a| a.starts_with("--namespace")), "{args:?}");
        }
        assert!(args.contains(&"--leader-elect=true".to_string()));
        assert!(args.contains(&format!("--lease-namespace={NAMESPACE}")));
        assert!(args.contains(&"--lease-name=ms-modelship".to_string()));
    }
}

/// The alert rules pass `promtool check rules`, and each alert fires above its threshold and
/// stays quiet below it (`promtool test rules` with synthetic series). Every dashboard query
/// parses, and every metric the rules and the dashboard read exists: the operator's from its
/// registry, the rollout state from the kube-state-metrics configuration.
#[test]
fn alert_rules_and_dashboard_queries_are_valid_and_fire_at_the_thresholds() {
    let promtool = go_tool("promtool");
    let dir = TempDir::new("chart-rules");
    let objects = render(&variants()[1].1);
    let rule = one(&objects, "PrometheusRule");
    let rules_file = dir.write("rules.yaml", &serde_yaml::to_string(&rule["spec"]).unwrap());
    run_ok(
        Command::new(&promtool).args(["check", "rules"]).arg(&rules_file),
        "promtool check rules",
    );
    // Every alert of the chart is tested, firing once and quiet once; a new alert without a
    // promtool case fails here.
    let alerts: BTreeSet<String> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    let (firing, quiet) = alert_test_coverage(ALERT_TESTS);
    assert!(alerts.len() >= 9, "the rules lost alerts: {alerts:?}");
    assert_eq!(firing, alerts, "alerts with a promtool case where they fire");
    assert_eq!(quiet, alerts, "alerts with a promtool case where they stay quiet");
    let test_file = dir.write("rules_test.yaml", ALERT_TESTS);
    let out = run_ok(
        Command::new(&promtool).args(["test", "rules"]).arg(&test_file).current_dir(&dir.0),
        "promtool test rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");

    // Dashboard queries, with Grafana's variables filled in, as recording rules.
    let configmap = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| name(c).ends_with("-dashboard"))
        .expect("dashboard ConfigMap");
    assert_eq!(configmap["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: Value =
        serde_json::from_str(configmap["data"]["modelship.json"].as_str().unwrap()).expect("JSON");
    let mut titles = BTreeSet::new();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        titles.insert(panel["title"].as_str().unwrap().to_string());
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for wanted in [
        "Request rate",
        "Error rate",
        "Latency p50 and p95",
        "Accuracy",
        "Data drift score",
        "Canary weight",
        "Phase",
        "Versions",
        "Reconciles",
        "Leader",
    ] {
        assert!(titles.contains(wanted), "dashboard lacks panel {wanted}: {titles:?}");
    }
    let recording: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let q = q
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$model", ".*");
            json!({"record": format!("dashboard:query_{i}"), "expr": q})
        })
        .collect();
    let file = dir.write(
        "dashboard-rules.yaml",
        &serde_yaml::to_string(&json!({"groups": [{"name": "dashboard", "rules": recording}]}))
            .unwrap(),
    );
    run_ok(
        Command::new(&promtool).args(["check", "rules"]).arg(&file),
        "promtool check (dashboard)",
    );

    // Every metric name read exists.
    let exprs: Vec<String> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .chain(queries)
        .collect();
    let known = known_metrics(&objects);
    for expr in &exprs {
        for metric in metric_names(expr) {
            assert!(known.contains(&metric), "{metric} (in {expr}) is exported by nothing");
        }
    }
}

/// The alerts a promtool test file expects to fire somewhere, and those it expects quiet
/// somewhere (an `alert_rule_test` with empty `exp_alerts`).
fn alert_test_coverage(tests: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let file: Value = serde_yaml::from_str(tests).expect("the promtool tests are YAML");
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for case in file["tests"].as_array().into_iter().flatten() {
        for check in case["alert_rule_test"].as_array().into_iter().flatten() {
            let name = check["alertname"].as_str().unwrap_or_default().to_string();
            let expected = check["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected == 0 {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    (firing, quiet)
}

/// Metric names in a PromQL expression that belong to Modelship.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic()
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == '_'))
        {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_') {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            if word.starts_with("ml_") || word.starts_with("modelship_") {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Series names the operator, the serving pods and kube-state-metrics export.
fn known_metrics(objects: &[Value]) -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    // The operator's registry, as it encodes itself.
    let metrics = modelship_operator::metrics::Metrics::default();
    // Families without samples are not encoded: give each labelled family one.
    metrics
        .reconcile_errors
        .get_or_create(&modelship_operator::metrics::CategoryLabels { category: "conflict" })
        .inc();
    metrics.count_write("deployment", "apply");
    let operator = metrics.encode();
    for line in operator.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (family, kind) = (parts.next().unwrap(), parts.next().unwrap());
            match kind {
                "counter" => {
                    known.insert(format!("{family}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        known.insert(format!("{family}{suffix}"));
                    }
                }
                _ => {
                    known.insert(family.to_string());
                }
            }
        }
    }
    // The serving pods' documented families.
    for family in [
        "ml_requests_total",
        "ml_request_duration_seconds_bucket",
        "ml_request_duration_seconds_sum",
        "ml_request_duration_seconds_count",
        "ml_predictions_total",
        "ml_data_drift_score",
        "ml_model_accuracy",
        "ml_queue_depth",
        "ml_batch_size_bucket",
    ] {
        known.insert(family.to_string());
    }
    // kube-state-metrics custom resource state: prefix + name of every metric configured.
    let configmap = of_kind(objects, "ConfigMap")
        .into_iter()
        .find(|c| name(c).ends_with("-kube-state-metrics"))
        .expect("kube-state-metrics ConfigMap");
    let config = &yaml_documents(configmap["data"]["config.yaml"].as_str().unwrap())[0];
    assert_eq!(config["kind"], "CustomResourceStateMetrics");
    for resource in config["spec"]["resources"].as_array().unwrap() {
        let gvk = &resource["groupVersionKind"];
        assert_eq!(
            (gvk["group"].as_str(), gvk["version"].as_str(), gvk["kind"].as_str()),
            (Some("modelship.io"), Some("v1alpha1"), Some("ModelDeployment"))
        );
        let prefix = resource["metricNamePrefix"].as_str().unwrap();
        for metric in resource["metrics"].as_array().unwrap() {
            known.insert(format!("{prefix}_{}", metric["name"].as_str().unwrap()));
            // Paths point into the CRD's schema.
            let each = &metric["each"];
            let body = &each[lower_first(each["type"].as_str().unwrap())];
            let path = strings(&body["path"]);
            assert!(crd_has_path(&path), "{path:?} is not a field of ModelDeployment");
            if path.is_empty() {
                for (label, from) in body["labelsFromPath"].as_object().into_iter().flatten() {
                    let from = strings(from);
                    assert!(crd_has_path(&from), "label {label} reads {from:?}, not a field");
                }
            }
        }
    }
    assert!(operator.contains("modelship_operator_leader"), "{operator}");
    known
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_ascii_lowercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// Whether `path` (as in kube-state-metrics: [status, phase]) is a field of the CRD schema.
fn crd_has_path(path: &[String]) -> bool {
    if path.is_empty() {
        return true;
    }
    let crd = &yaml_documents(&read(chart().join("crds/modeldeployments.modelship.io.yaml")))[0];
    let mut schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    for segment in path {
        schema = &schema["properties"][segment.as_str()];
        if schema.is_null() {
            return false;
        }
    }
    true
}

/// promtool unit tests of the alerts with the default thresholds (error rate 0.05, p95 latency
/// 1 s, drift 0.3, accuracy drop 0.1). In each case one model version is just past the
/// threshold and another stays below it; only the first may fire.
const ALERT_TESTS: &str = r#"
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - name: error rate
    interval: 1m
    input_series:
      - series: 'ml_requests_total{namespace="ml",model="fraud",version="2",status="success"}'
        values: '0+90x30'
      - series: 'ml_requests_total{namespace="ml",model="fraud",version="2",status="error"}'
        values: '0+6x30'
      - series: 'ml_requests_total{namespace="ml",model="fraud",version="2",status="rejected"}'
        values: '0+4x30'
      - series: 'ml_requests_total{namespace="ml",model="fraud",version="1",status="success"}'
        values: '0+96x30'
      - series: 'ml_requests_total{namespace="ml",model="fraud",version="1",status="invalid"}'
        values: '0+20x30'
      - series: 'ml_requests_total{namespace="ml",model="fraud",version="1",status="error"}'
        values: '0+4x30'
    alert_rule_test:
      - eval_time: 3m
        alertname: ModelshipHighErrorRate
        exp_alerts: []
      - eval_time: 15m
        alertname: ModelshipHighErrorRate
        exp_alerts:
          - exp_labels: {severity: critical, team: ml-platform, namespace: ml, model: fraud, version: "2"}
            exp_annotations:
              summary: "Model fraud version 2 fails 10% of its requests"
              description: "More than 0.05 of the requests to ml/fraud version 2 failed over 5m (status error or rejected)."
  - name: p95 latency
    interval: 1m
    input_series:
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="2",le="0.5"}'
        values: '0x30'
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="2",le="1"}'
        values: '0x30'
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="2",le="2.5"}'
        values: '0+100x30'
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="2",le="+Inf"}'
        values: '0+100x30'
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="1",le="0.5"}'
        values: '0x30'
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="1",le="1"}'
        values: '0+100x30'
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="1",le="2.5"}'
        values: '0+100x30'
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="1",le="+Inf"}'
        values: '0+100x30'
    alert_rule_test:
      - eval_time: 3m
        alertname: ModelshipHighLatencyP95
        exp_alerts: []
      - eval_time: 15m
        alertname: ModelshipHighLatencyP95
        exp_alerts:
          - exp_labels: {severity: warning, team: ml-platform, namespace: ml, model: fraud, version: "2"}
            exp_annotations:
              summary: "Model fraud version 2 p95 latency is 2.425s"
              description: "The 95th-percentile latency of ml/fraud version 2 is above 1 s over 5m."
  - name: drift
    interval: 1m
    input_series:
      - series: 'ml_data_drift_score{namespace="ml",model="fraud",version="2",pod="a"}'
        values: '0.31x40'
      - series: 'ml_data_drift_score{namespace="ml",model="fraud",version="2",pod="b"}'
        values: '0.1x40'
      - series: 'ml_data_drift_score{namespace="ml",model="fraud",version="1",pod="c"}'
        values: '0.29x40'
    alert_rule_test:
      - eval_time: 10m
        alertname: ModelshipDataDrift
        exp_alerts: []
      - eval_time: 20m
        alertname: ModelshipDataDrift
        exp_alerts:
          - exp_labels: {severity: warning, team: ml-platform, namespace: ml, model: fraud, version: "2"}
            exp_annotations:
              summary: "Input drift on model fraud version 2: score 0.31"
              description: "Live feature means of ml/fraud moved more than 0.3 reference standard deviations on average from the reference data."
  - name: accuracy drop
    interval: 5m
    input_series:
      - series: 'ml_model_accuracy{namespace="ml",model="fraud",version="2",pod="a"}'
        values: '0.95x6 0.8x12'
      - series: 'ml_model_accuracy{namespace="ml",model="fraud",version="1",pod="b"}'
        values: '0.95x6 0.86x12'
    alert_rule_test:
      - eval_time: 30m
        alertname: ModelshipAccuracyDrop
        exp_alerts: []
      - eval_time: 60m
        alertname: ModelshipAccuracyDrop
        exp_alerts:
          - exp_labels: {severity: warning, team: ml-platform, namespace: ml, model: fraud, version: "2"}
            exp_annotations:
              summary: "Accuracy of model fraud version 2 dropped by 15%"
              description: "The accuracy of ml/fraud version 2 is more than 0.1 below its best over the last 1d."
  - name: operator
    interval: 1m
    input_series:
      - series: 'modelship_operator_leader{job="ms-modelship-metrics",namespace="modelship-system",pod="a"}'
        values: '1x5 0x20'
      - series: 'modelship_operator_leader{job="ms-modelship-metrics",namespace="modelship-system",pod="b"}'
        values: '0x25'
      - series: 'modelship_operator_reconcile_errors_total{job="ms-modelship-metrics",namespace="modelship-system",pod="a",category="forbidden"}'
        values: '0x5 1+1x20'
      - series: 'modelship_modeldeployment_phase{namespace="ml",name="fraud",phase="Degraded"}'
        values: '0x5 1x20'
      - series: 'modelship_modeldeployment_phase{namespace="ml",name="churn",phase="Degraded"}'
        values: '0x25'
    alert_rule_test:
      - eval_time: 4m
        alertname: ModelshipOperatorNoLeader
        exp_alerts: []
      - eval_time: 12m
        alertname: ModelshipOperatorNoLeader
        exp_alerts:
          - exp_labels: {severity: warning, team: ml-platform}
            exp_annotations:
              summary: "No Modelship operator holds the leader lease in modelship-system"
              description: "ModelDeployments are not reconciled: no rollout progresses and no rollback happens until an operator leads again."
      - eval_time: 4m
        alertname: ModelshipOperatorForbidden
        exp_alerts: []
      - eval_time: 8m
        alertname: ModelDeploymentDegraded
        exp_alerts: []
      - eval_time: 8m
        alertname: ModelshipOperatorForbidden
        exp_alerts:
          - exp_labels: {severity: critical, team: ml-platform}
            exp_annotations:
              summary: "The API server refuses the Modelship operator's requests (403)"
              description: "The operator's RBAC does not cover a request it makes: check the chart's ClusterRole or Role against operator.watchNamespace."
      - eval_time: 20m
        alertname: ModelDeploymentDegraded
        exp_alerts:
          - exp_labels: {severity: warning, team: ml-platform, namespace: ml, name: fraud}
            exp_annotations:
              summary: "ModelDeployment ml/fraud is Degraded"
              description: "kubectl describe modeldeployment fraud -n ml shows the Degraded condition and why."
  - name: reconcile errors
    interval: 1m
    input_series:
      - series: 'modelship_operator_reconcile_errors_total{job="ms-modelship-metrics",namespace="modelship-system",pod="a",category="kube"}'
        values: '0x5 1+1x30'
      - series: 'modelship_operator_reconcile_errors_total{job="ms-modelship-metrics",namespace="modelship-system",pod="a",category="conflict"}'
        values: '0+5x35'
    alert_rule_test:
      - eval_time: 12m
        alertname: ModelshipOperatorReconcileErrors
        exp_alerts: []
      - eval_time: 25m
        alertname: ModelshipOperatorReconcileErrors
        exp_alerts:
          - exp_labels: {severity: warning, team: ml-platform, category: kube}
            exp_annotations:
              summary: "Modelship reconciles keep failing (kube)"
              description: "Reconciles have failed with category kube for 15m; see the operator's logs and the events of the ModelDeployments."
  - name: rolled back
    interval: 1m
    input_series:
      - series: 'modelship_modeldeployment_phase{namespace="ml",name="fraud",phase="RolledBack"}'
        values: '0x5 1x10'
      - series: 'modelship_modeldeployment_phase{namespace="ml",name="churn",phase="RolledBack"}'
        values: '0x15'
    alert_rule_test:
      - eval_time: 3m
        alertname: ModelDeploymentRolledBack
        exp_alerts: []
      - eval_time: 8m
        alertname: ModelDeploymentRolledBack
        exp_alerts:
          - exp_labels: {severity: warning, team: ml-platform, namespace: ml, name: fraud}
            exp_annotations:
              summary: "ModelDeployment ml/fraud rolled its candidate back"
              description: "The candidate failed its analysis; status.abortedVersion names it and status.analysis says why."
"#;

/// Every key in values.yaml has a comment (or sits under a key documented as a whole), every
/// documented key is in the README's values table, and the table names no key that is gone.
#[test]
fn every_value_is_documented() {
    let values = read(chart().join("values.yaml"));
    let readme = read(chart().join("README.md"));
    let mut stack: Vec<(usize, String, bool)> = Vec::new();
    let mut comment: Vec<String> = Vec::new();
    let mut documented = BTreeSet::new();
    for (number, line) in values.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            comment.clear();
            continue;
        }
        if let Some(text) = trimmed.strip_prefix('#') {
            comment.push(text.trim().to_string());
            continue;
        }
        if trimmed.starts_with('-') {
            comment.clear();
            continue; // a list item of a default
        }
        let Some((key, _)) = trimmed.split_once(':') else { continue };
        while stack.last().is_some_and(|(i, _, _)| *i >= indent) {
            stack.pop();
        }
        let covered = stack.iter().any(|(_, _, doc)| *doc);
        let doc = comment.first().is_some_and(|c| c.starts_with("-- "));
        let path: Vec<&str> =
            stack.iter().map(|(_, k, _)| k.as_str()).chain(std::iter::once(key)).collect();
        let path = path.join(".");
        assert!(
            covered || !comment.is_empty(),
            "values.yaml line {}: {path} has no comment",
            number + 1
        );
        if doc {
            documented.insert(path.clone());
        }
        stack.push((indent, key.to_string(), doc || covered));
        comment.clear();
    }
    assert!(documented.len() > 100, "{documented:?}");
    let (_, values_section) = readme.split_once("\n## Values\n").expect("a Values section");
    let table: BTreeSet<String> = values_section
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split_once("` |").map(|(k, _)| k.to_string()))
        .collect();
    for path in &documented {
        assert!(table.contains(path), "README's values table lacks {path}");
    }
    for key in &table {
        assert!(documented.contains(key), "README documents {key}, which values.yaml lacks");
    }
    // The schema knows every top-level key.
    let schema: Value = serde_json::from_str(&read(chart().join("values.schema.json"))).unwrap();
    for path in &documented {
        let top = path.split('.').next().unwrap();
        assert!(schema["properties"][top].is_object(), "values.schema.json lacks {top}");
    }
}

#[test]
fn dockerfiles_pass_hadolint() {
    let hadolint = tool("hadolint", PYTHON_HINT);
    let root = repo();
    run_ok(
        Command::new(hadolint)
            .arg("--config")
            .arg(root.join(".hadolint.yaml"))
            .arg(root.join("Dockerfile.operator"))
            .arg(root.join("Dockerfile.serving")),
        "hadolint",
    );
    for component in ["operator", "serving"] {
        let text = read(root.join(format!("Dockerfile.{component}")));
        let last_from = text.lines().rfind(|l| l.starts_with("FROM ")).unwrap();
        assert_eq!(last_from, "FROM scratch", "Dockerfile.{component}");
        assert!(text.contains("\nUSER 65532:65532\n"), "Dockerfile.{component}: numeric user");
        assert!(
            text.contains(&format!("ENTRYPOINT [\"/modelship-{component}\"]")),
            "Dockerfile.{component}: entrypoint"
        );
        assert!(text.contains("target-feature=+crt-static"), "Dockerfile.{component}: static");
        assert!(
            text.contains(r#"--cfg getrandom_backend="linux_getrandom""#),
            "Dockerfile.{component}: getrandom without dlsym"
        );
    }
    assert!(
        read(root.join("Dockerfile.serving"))
            .contains("CMD [\"/modelship-serving\", \"healthcheck\"]"),
        "the serving image checks its health with its own binary"
    );
}

#[test]
fn ci_workflow_passes_actionlint() {
    let actionlint = go_tool("actionlint");
    let workflow = repo().join(".github/workflows/ci.yaml");
    let out = run_ok(Command::new(actionlint).arg(&workflow).current_dir(repo()), "actionlint");
    assert!(out.trim().is_empty(), "{out}");
    let text = read(&workflow);
    for needed in ["cargo fmt", "cargo clippy", "make test", "helm lint", "kind", "helm install"] {
        assert!(text.contains(needed), "the workflow lacks {needed}");
    }
}

/// Builds both images with podman from binaries built here (tests/images.sh) and checks what
/// is inside; fails with podman's own error when podman cannot build. That the images run is
/// shown on the node: the chart's operator pods and every model pod run them.
#[test]
fn images_are_static_scratch_images_of_the_binaries_built_here() {
    let (ok, stdout, stderr) = run(Command::new("bash")
        .arg(repo().join("tests/images.sh"))
        .arg("test")
        .current_dir(repo()));
    eprintln!("{stdout}");
    assert!(ok, "tests/images.sh failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    let mut digests = BTreeMap::new();
    for component in ["operator", "serving"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{component}: localhost/")))
            .unwrap_or_else(|| panic!("no inspection line for {component}:\n{stdout}"));
        assert!(line.contains("user 65532:65532"), "{line}");
        assert!(line.contains(&format!("entrypoint ['/modelship-{component}']")), "{line}");
        assert!(line.contains("ports ['8080/tcp']"), "{line}");
        assert!(line.contains(&format!("files ['modelship-{component}']")), "{line}");
        assert!(
            stdout.contains(&format!(
                "{component}: /modelship-{component} --version in an empty root"
            )),
            "{stdout}"
        );
        let digest = line.rsplit("sha256 ").next().unwrap().trim().to_string();
        digests.insert(component, digest);
    }

    // The binary in the image is the one built here.
    let binary = repo().join("target/x86_64-unknown-linux-gnu/release/modelship-operator");
    let sum = run_ok(Command::new("sha256sum").arg(&binary), "sha256sum");
    assert_eq!(sum.split_whitespace().next(), Some(digests["operator"].as_str()));
}

// ---------------------------------------------------------------------------------------
// On the local cluster
// ---------------------------------------------------------------------------------------

/// Objects of a rendered release: (kind, namespace, name).
fn release_objects(manifest: &str, namespace: &str) -> Vec<(String, String, String)> {
    yaml_documents(manifest)
        .iter()
        .map(|o| {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or(namespace).to_string();
            (kind(o).to_string(), ns, name(o).to_string())
        })
        .collect()
}

/// Uninstalls a release when dropped, so a failing test leaves no cluster-scoped objects.
struct Release {
    name: String,
    namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = run(helm().args([
            "uninstall",
            &self.name,
            "-n",
            &self.namespace,
            "--ignore-not-found",
        ]));
    }
}

fn exists(kind: &str, namespace: &str, name: &str) -> bool {
    let cluster_scoped = matches!(kind, "ClusterRole" | "ClusterRoleBinding");
    let mut command = kubectl();
    command.args(["get", kind, name, "--ignore-not-found", "-o", "name"]);
    if !cluster_scoped {
        command.args(["-n", namespace]);
    }
    !run_ok(&mut command, "kubectl get").trim().is_empty()
}

#[tokio::test(flavor = "multi_thread")]
async fn chart_installs_into_a_restricted_namespace_upgrades_and_uninstalls() {
    harness::with_namespace_labels(RESTRICTED, async |client: Client, namespace: String| {
        let release = unique_name("chart");
        let _guard = Release { name: release.clone(), namespace: namespace.clone() };
        let ksm_account = format!("serviceAccountName={release}-ksm");
        // Everything that needs no Prometheus Operator CRDs.
        let install = run_ok(
            helm()
                .args(["install", &release])
                .arg(chart())
                .args(["--namespace", &namespace, "--wait", "--timeout", "120s"])
                // Its operator pods watch this namespace only, so they leave the models of
                // tests running beside this one alone.
                .args(["--set", &format!("operator.watchNamespace={namespace}")])
                .args(["--set", "dashboard.enabled=true"])
                .args(["--set", "kubeStateMetrics.customResourceState.enabled=true"])
                .args(["--set", "kubeStateMetrics.rbac.create=true"])
                .args(["--set", &format!("kubeStateMetrics.rbac.{ksm_account}")])
                .args(["--set", "networkPolicy.enabled=true"]),
            "helm install",
        );
        assert!(install.contains("STATUS: deployed"), "{install}");
        let fullname = format!("{release}-modelship");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        let ready = |d: &Deployment| d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
        let deployment = deployments.get(&fullname).await.expect("operator Deployment");
        assert_eq!(ready(&deployment), 2, "{:?}", deployment.status);

        // The admission plugin let the pods in, and the pods as stored pass the profile.
        let pods: Value = serde_json::from_str(&run_ok(
            kubectl()
                .args(["get", "pods", "-n", &namespace, "-o", "json", "-l"])
                .arg(format!("app.kubernetes.io/instance={release}")),
            "kubectl get pods",
        ))
        .unwrap();
        let pods = pods["items"].as_array().unwrap();
        assert_eq!(pods.len(), 2);
        for pod in pods {
            let found = restricted_violations(&pod["spec"]);
            assert!(found.is_empty(), "{}: {found:?}", name(pod));
        }
        let refused = run_ok(
            kubectl().args([
                "get",
                "events",
                "-n",
                &namespace,
                "--field-selector",
                "reason=FailedCreate",
                "-o",
                "name",
            ]),
            "kubectl get events",
        );
        assert!(refused.trim().is_empty(), "pods were refused: {refused}");

        // The pods run the operator image on the node; one of them holds the Lease, through
        // the in-cluster API (the `kubernetes` Service and the pod's ServiceAccount token).
        let pod_names: Vec<String> = pods.iter().map(|p| name(p).to_string()).collect();
        for pod in pods {
            let status = &pod["status"]["containerStatuses"][0];
            assert_eq!(status["image"], format!("ghcr.io/modelship/operator:{}", app_version()));
            assert!(status["state"]["running"].is_object(), "{}: {status}", name(pod));
        }
        let holder =
            wait_until(Duration::from_secs(60), "an operator pod to hold the Lease", async || {
                let lease = run(
                    kubectl().args(["get", "lease", &fullname, "-n", &namespace, "-o", "json"])
                )
                .1;
                let holder = serde_json::from_str::<Value>(&lease)
                    .ok()
                    .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
                    .unwrap_or_default();
                pod_names.iter().any(|p| holder.starts_with(p.as_str())).then_some(holder)
            })
            .await;
        for pod in &pod_names {
            let logs = run_ok(kubectl().args(["logs", pod, "-n", &namespace]), "kubectl logs");
            assert!(
                logs.lines().any(|l| l.contains("\"level\"")),
                "{pod} logs no JSON lines:\n{logs}"
            );
        }
        eprintln!("operator pods {pod_names:?}, Lease held by {holder}");

        // The in-cluster operator rolls a model out: its serving pod runs the serving image.
        let models: Api<ModelDeployment> = Api::namespaced(client.clone(), &namespace);
        let md =
            modelship_tests::models::model("in-cluster", "1", 1, json!({"type": "RollingUpdate"}));
        modelship_tests::models::apply(&client, &namespace, md).await;
        wait_for_version(&models, "in-cluster", "1").await;
        let service = harness::routed_service_addr(&client, &namespace, "in-cluster").await;
        let features: Vec<f64> = (0..20).map(|i| f64::from(i) / 10.0).collect();
        let answer = harness::TestHttp::new()
            .request(
                service,
                axum::http::Method::POST,
                "/predict",
                Some(json!({"features": features}).to_string().into()),
            )
            .await
            .expect("predict through the Service");
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json()["model_version"], "1");
        let logs = run_ok(
            kubectl().args(["logs", "-n", &namespace, "-l", "modelship.io/name=in-cluster"]),
            "kubectl logs of the serving pod",
        );
        assert!(logs.contains("in-cluster"), "the serving log does not name its model:\n{logs}");
        models.delete("in-cluster", &Default::default()).await.expect("delete the model");

        let manifest = run_ok(
            helm().args(["get", "manifest", &release, "-n", &namespace]),
            "helm get manifest",
        );
        let objects = release_objects(&manifest, &namespace);
        assert!(objects.len() >= 12, "{objects:?}");

        // Upgrade: change values; the Deployment rolls to the new settings.
        run_ok(
            helm()
                .args(["upgrade", &release])
                .arg(chart())
                .args(["--namespace", &namespace, "--reuse-values", "--wait", "--timeout", "120s"])
                .args(["--set", "replicaCount=3", "--set", "operator.concurrency=8"]),
            "helm upgrade",
        );
        let deployment = deployments.get(&fullname).await.unwrap();
        assert_eq!(ready(&deployment), 3, "{:?}", deployment.status);
        let args = deployment.spec.template.spec.unwrap().containers[0].args.clone().unwrap();
        assert!(args.contains(&"--concurrency=8".to_string()), "{args:?}");
        let history = run_ok(
            helm().args(["history", &release, "-n", &namespace, "-o", "json"]),
            "helm history",
        );
        let history: Value = serde_json::from_str(&history).unwrap();
        assert_eq!(history.as_array().unwrap().last().unwrap()["revision"], 2);
        assert_eq!(history.as_array().unwrap().last().unwrap()["status"], "deployed");

        // Uninstall: every object of the release goes, the CRD stays by design.
        run_ok(helm().args(["uninstall", &release, "-n", &namespace, "--wait"]), "helm uninstall");
        for (kind, ns, name) in &objects {
            assert!(!exists(kind, ns, name), "{kind} {ns}/{name} survived helm uninstall");
        }
        let selector = format!("app.kubernetes.io/instance={release}");
        wait_until(Duration::from_secs(60), "the release's pods to go", async || {
            run_ok(
                kubectl().args([
                    "get",
                    "pods,replicasets",
                    "-n",
                    &namespace,
                    "-o",
                    "name",
                    "-l",
                    &selector,
                ]),
                "kubectl get",
            )
            .trim()
            .is_empty()
        })
        .await;
        let cluster = run_ok(
            kubectl().args([
                "get",
                "clusterroles,clusterrolebindings",
                "-o",
                "name",
                "-l",
                &selector,
            ]),
            "kubectl get",
        );
        assert!(cluster.trim().is_empty(), "cluster-scoped leftovers: {cluster}");
        assert!(exists("CustomResourceDefinition", "", "modeldeployments.modelship.io"));
    })
    .await;
}

/// A kubeconfig for the local API server that authenticates with `token`.
fn token_kubeconfig(dir: &TempDir, token: &str) -> PathBuf {
    let config: Value = serde_json::from_str(&run_ok(
        kubectl().args(["config", "view", "--minify", "--raw", "-o", "json"]),
        "kubectl config view",
    ))
    .unwrap();
    let cluster = &config["clusters"][0]["cluster"];
    let mut cluster_entry = json!({"server": cluster["server"]});
    for key in ["certificate-authority", "certificate-authority-data"] {
        if !cluster[key].is_null() {
            cluster_entry[key] = cluster[key].clone();
        }
    }
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster_entry}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
    });
    dir.write("kubeconfig.json", &kubeconfig.to_string())
}

/// The operator binary, authenticated as the chart's ServiceAccount.
struct OperatorAs(std::process::Child, PathBuf);

impl Drop for OperatorAs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for_version(api: &Api<ModelDeployment>, name: &str, version: &str) {
    wait_until(
        Duration::from_secs(90),
        &format!("{name} to serve version {version}"),
        async || {
            let md = api.get(name).await.map_err(|e| e.to_string())?;
            let status = md.status.clone().unwrap_or_default();
            let done = status.observed_generation == md.metadata.generation
                && status.stable_version.as_deref() == Some(version)
                && status.candidate_version.is_none()
                && status.phase.map(|p| format!("{p:?}")).as_deref() == Some("Healthy");
            if done { Ok(()) } else { Err(format!("status {status:?}")) }
        },
    )
    .await;
}

async fn names_of(kind: &str, namespace: &str, selector: &str) -> BTreeSet<String> {
    run_ok(
        kubectl().args(["get", kind, "-n", namespace, "-o", "name", "-l", selector]),
        "kubectl get",
    )
    .lines()
    .map(|l| l.rsplit('/').next().unwrap().to_string())
    .collect()
}

/// Accesses the chart grants the operator that a run may not exercise, with the reason. Empty:
/// the scenario below uses every rule.
const UNUSED_BY_DESIGN: &[(&str, &str, &str, &str)] = &[];

/// Runs the real operator with a token of the chart's ServiceAccount through two blue-green
/// rollouts with webhook notifications, a strategy change and the removal of the autoscaler
/// and the disruption budget, then compares the requests
/// the API server's audit log recorded for that account with the chart's rules.
#[tokio::test(flavor = "multi_thread")]
async fn operator_rbac_matches_the_audit_log() {
    let audit_log = PathBuf::from(
        std::env::var("MODELSHIP_AUDIT_LOG")
            .unwrap_or_else(|_| panic!("MODELSHIP_AUDIT_LOG is not set: {KUBE_HINT}")),
    );
    harness::with_namespace_labels(RESTRICTED, async |client: Client, chart_ns: String| {
        harness::with_namespace_labels(RESTRICTED, async |_: Client, models_ns: String| {
            let release = unique_name("rbac");
            let _guard = Release { name: release.clone(), namespace: chart_ns.clone() };
            // No operator pods: only the operator below acts as the ServiceAccount.
            run_ok(
                helm()
                    .args(["install", &release])
                    .arg(chart())
                    .args(["--namespace", &chart_ns, "--set", "replicaCount=0"]),
                "helm install",
            );
            let manifest =
                run_ok(helm().args(["get", "manifest", &release, "-n", &chart_ns]), "helm get manifest");
            // The ServiceAccount and the Lease are named after the release's full name.
            let account = format!("{release}-modelship");
            let lease = account.as_str();
            let granted = operator_rules(&yaml_documents(&manifest), &account);
            assert!(!granted.is_empty());

            let token = run_ok(
                kubectl().args(["create", "token", &account, "-n", &chart_ns, "--duration", "1h"]),
                "kubectl create token",
            );
            let dir = TempDir::new("rbac-operator");
            let kubeconfig = token_kubeconfig(&dir, token.trim());
            let log = dir.0.join("operator.log");
            let file = std::fs::File::create(&log).unwrap();
            let child = Command::new(operator_bin())
                .env("KUBECONFIG", &kubeconfig)
                .env_remove("POD_NAMESPACE")
                .env("RUST_LOG", "info,modelship_operator=debug,kube=warn")
                .args(["--namespace", &models_ns, "--lease-namespace", &chart_ns, "--lease-name", lease])
                .args(["--leader-elect=true", "--identity", "rbac-audit", "--resync-seconds", "30"])
                .arg(format!("--admin-listen=127.0.0.1:{}", free_port()))
                .stdout(Stdio::from(file.try_clone().unwrap()))
                .stderr(Stdio::from(file))
                .spawn()
                .expect("start the operator");
            let operator = OperatorAs(child, log);
            let started = std::time::Instant::now();

            // Blue-green, with an autoscaler and a preview Service.
            let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &models_ns);
            let md_name = "rbac-probe";
            let strategy = json!({"type": "BlueGreen",
                                  "blueGreen": {"autoPromote": true, "previewService": true, "scaleDownDelaySeconds": 0}});
            let mut md = modelship_tests::models::model(md_name, "1", 2, strategy);
            md["metadata"]["namespace"] = json!(models_ns);
            md["spec"].as_object_mut().unwrap().remove("replicas");
            md["spec"]["autoscaling"] = json!({"minReplicas": 2, "maxReplicas": 4});
            // Notifications read the webhook Secret; nothing listens at its URL on this
            // machine, so they are retried and given up, which the audit does not mind.
            let hook = json!({"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": "modelship-webhook", "namespace": models_ns},
                              "stringData": {"url": "http://127.0.0.1:9/hook"}});
            run_with_input(kubectl().args(["apply", "-f", "-"]), &hook.to_string(), "kubectl apply secret");
            md["spec"]["notifications"] = json!({"webhook": {"secretName": "modelship-webhook"}});
            run_with_input(kubectl().args(["apply", "-f", "-"]), &md.to_string(), "kubectl apply");
            let patch = |body: Value| {
                let api = api.clone();
                async move {
                    api.patch(md_name, &PatchParams::default(), &Patch::Merge(&body)).await.expect("patch")
                }
            };
            wait_for_version(&api, md_name, "1").await;
            // Two rollouts: the second repeats the first's events, which the recorder patches.
            patch(json!({"spec": {"model": {"version": "2"}}})).await;
            wait_for_version(&api, md_name, "2").await;
            patch(json!({"spec": {"model": {"version": "3"}}})).await;
            wait_for_version(&api, md_name, "3").await;
            let selector = format!("modelship.io/name={md_name}");
            assert_eq!(names_of("hpa", &models_ns, &selector).await.len(), 1);
            // Strategy change and no autoscaler: the colors, the preview Service and the
            // autoscaler are deleted.
            assert_eq!(names_of("pdb", &models_ns, &selector).await.len(), 1);
            patch(json!({"spec": {"autoscaling": null, "disruptionBudget": {"enabled": false},
                                  "strategy": {"type": "RollingUpdate", "blueGreen": null}}}))
                .await;
            wait_until(Duration::from_secs(90), "one Deployment, one Service, no autoscaler, no budget", async || {
                let deployments = names_of("deployments", &models_ns, &selector).await;
                let services = names_of("services", &models_ns, &selector).await;
                let hpas = names_of("hpa", &models_ns, &selector).await;
                let pdbs = names_of("pdb", &models_ns, &selector).await;
                let done = deployments.len() == 1
                    && !deployments.iter().any(|d| d.ends_with("-blue") || d.ends_with("-green"))
                    && services == BTreeSet::from([md_name.to_string()])
                    && hpas.is_empty()
                    && pdbs.is_empty();
                if done { Ok(()) } else { Err(format!("{deployments:?} {services:?} {hpas:?} {pdbs:?}")) }
            })
            .await;
            wait_for_version(&api, md_name, "3").await;
            let md = api.get(md_name).await.unwrap();
            assert!(
                md.status.as_ref().unwrap().conditions.iter().all(|c| c.reason != "ApplyFailed"),
                "{:?}",
                md.status
            );
            let elapsed = started.elapsed();
            let log_text = read(&operator.1);
            drop(operator);
            tokio::time::sleep(Duration::from_secs(1)).await;

            let user = format!("system:serviceaccount:{chart_ns}:{account}");
            let audit = audit_accesses(&audit_log, &user);
            assert!(audit.requests > 0, "no audited request from {user} in {}", audit_log.display());
            assert!(audit.refused.is_empty(), "refused requests: {:#?}\noperator log:\n{log_text}", audit.refused);
            for name in &audit.lease_names {
                assert_eq!(name, lease, "the operator touched another Lease");
            }
            let granted_set: BTreeSet<Access> = granted.keys().cloned().collect();
            let extras: BTreeSet<Access> = UNUSED_BY_DESIGN
                .iter()
                .map(|(v, g, r, _why)| (v.to_string(), g.to_string(), r.to_string()))
                .collect();
            let not_granted: Vec<&Access> = audit.used.keys().filter(|a| !granted_set.contains(*a)).collect();
            assert!(not_granted.is_empty(), "used but not granted: {not_granted:?}");
            let unused: Vec<&Access> =
                granted_set.iter().filter(|a| !audit.used.contains_key(*a) && !extras.contains(*a)).collect();
            assert!(unused.is_empty(), "granted but never used: {unused:?}");
            eprintln!(
                "operator as {user}: {} audited requests in {elapsed:.1?}, {} rules granted, all used:",
                audit.requests,
                granted_set.len()
            );
            for ((verb, group, resource), count) in &audit.used {
                eprintln!("  {count:>5}  {verb:<7} {group}/{resource}");
            }
            run_ok(helm().args(["uninstall", &release, "-n", &chart_ns, "--wait"]), "helm uninstall");
        })
        .await;
    })
    .await;
}

struct Audit {
    /// Accesses used, with how many requests used each.
    used: BTreeMap<Access, usize>,
    /// Requests answered 403.
    refused: Vec<String>,
    requests: usize,
    lease_names: BTreeSet<String>,
}

/// The accesses `user` made, from the API server's audit log. A server-side apply (a patch)
/// answered 201 created its object, which the API server authorized as create too.
fn audit_accesses(log: &Path, user: &str) -> Audit {
    let mut audit = Audit {
        used: BTreeMap::new(),
        refused: Vec::new(),
        requests: 0,
        lease_names: BTreeSet::new(),
    };
    // A watch is logged when its response starts and again when it ends: count it once.
    let mut seen = BTreeSet::new();
    for line in read(log).lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
        if event["user"]["username"] != user || event["stage"] == "RequestReceived" {
            continue;
        }
        if !seen.insert(event["auditID"].as_str().unwrap_or_default().to_string()) {
            continue;
        }
        let object = &event["objectRef"];
        let mut resource = object["resource"].as_str().unwrap_or_default().to_string();
        if let Some(sub) = object["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let group = object["apiGroup"].as_str().unwrap_or_default().to_string();
        let verb = event["verb"].as_str().unwrap_or_default().to_string();
        let code = event["responseStatus"]["code"].as_i64().unwrap_or(0);
        audit.requests += 1;
        if code == 403 {
            audit.refused.push(format!("{verb} {group}/{resource} {}", object["name"]));
            continue;
        }
        if resource == "leases"
            && let Some(name) = object["name"].as_str()
        {
            audit.lease_names.insert(name.to_string());
        }
        if verb == "patch" && code == 201 {
            *audit.used.entry(("create".into(), group.clone(), resource.clone())).or_default() += 1;
        }
        *audit.used.entry((verb, group, resource)).or_default() += 1;
    }
    audit
}

#[test]
fn helpers_read_the_audit_log_and_metric_names() {
    let dir = TempDir::new("audit-parse");
    let log = dir.write(
        "audit.log",
        concat!(
            r#"{"auditID":"1","stage":"ResponseComplete","verb":"patch","user":{"username":"u"},"objectRef":{"resource":"deployments","apiGroup":"apps","name":"a"},"responseStatus":{"code":201}}"#,
            "\n",
            r#"{"auditID":"2","stage":"ResponseComplete","verb":"patch","user":{"username":"u"},"objectRef":{"resource":"modeldeployments","subresource":"status","apiGroup":"modelship.io"},"responseStatus":{"code":200}}"#,
            "\n",
            r#"{"auditID":"5","stage":"ResponseStarted","verb":"watch","user":{"username":"u"},"objectRef":{"resource":"services","apiVersion":"v1"},"responseStatus":{"code":200}}"#,
            "\n",
            r#"{"auditID":"5","stage":"ResponseComplete","verb":"watch","user":{"username":"u"},"objectRef":{"resource":"services","apiVersion":"v1"},"responseStatus":{"code":200}}"#,
            "\n",
            r#"{"auditID":"3","stage":"ResponseComplete","verb":"get","user":{"username":"u"},"objectRef":{"resource":"secrets","name":"s"},"responseStatus":{"code":403}}"#,
            "\n",
            r#"{"auditID":"4","stage":"ResponseComplete","verb":"get","user":{"username":"other"},"objectRef":{"resource":"pods"},"responseStatus":{"code":200}}"#,
            "\n"
        ),
    );
    let audit = audit_accesses(&log, "u");
    let used: Vec<String> = audit.used.keys().map(|(v, g, r)| format!("{v} {g}/{r}")).collect();
    assert_eq!(
        used,
        [
            "create apps/deployments",
            "patch apps/deployments",
            "patch modelship.io/modeldeployments/status",
            "watch /services"
        ]
    );
    assert_eq!(audit.used[&("watch".into(), "".into(), "services".into())], 1);
    assert_eq!(audit.refused, [r#"get /secrets "s""#]);
    assert_eq!(audit.requests, 4);
    assert_eq!(
        metric_names(
            "sum by (le) (rate(ml_request_duration_seconds_bucket{model=~\"x\"}[5m])) / modelship_operator_leader"
        ),
        BTreeSet::from([
            "ml_request_duration_seconds_bucket".to_string(),
            "modelship_operator_leader".to_string()
        ])
    );
}
