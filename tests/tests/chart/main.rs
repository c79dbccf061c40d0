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

mod files;
mod install;
mod manifests;
mod monitoring;
mod rbac;

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
use modelship_tests::audit;
use modelship_tests::harness::{self, unique_name, wait_until};
use modelship_tests::operator::{free_port, operator_bin};
use serde::Deserialize;
use serde_json::{Value, json};

#[allow(unused_imports)]
use {files::*, install::*, manifests::*, monitoring::*, rbac::*};

const RESTRICTED: &[(&str, &str)] = &[
    ("pod-security.kubernetes.io/enforce", "restricted"),
    ("pod-security.kubernetes.io/warn", "restricted"),
];
const KUBE_HINT: &str =
    "run the tests with `make test`, or `source STATE_DIR/env` after tests/controlplane/up.sh";
const PYTHON_HINT: &str =
    "put the directory printed by tests/python-tools.sh on PATH (make test does)";

// Tools, files and rendering

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
