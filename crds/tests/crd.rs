//! The committed CRD matches the types, and the CEL rules accept every example and refuse
//! the invalid fixtures (client-side, with kube's CEL evaluator; the API-server tests in
//! `tests/` check the same fixtures against a real kube-apiserver).

use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use modelship_crds::{CHART_CRD_PATH, CRD_PATH, ModelDeployment, crd_yaml};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schema() -> serde_json::Value {
    let crd = ModelDeployment::crd();
    let version = &crd.spec.versions[0];
    serde_json::to_value(version.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap())
        .unwrap()
}

fn yaml_files(dir: &str) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn committed_crd_matches_the_types() {
    let generated = crd_yaml();
    for path in [CRD_PATH, CHART_CRD_PATH] {
        let committed = std::fs::read_to_string(root().join(path)).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is out of date: run `cargo run -p modelship-crds --bin crdgen`"
        );
    }
}

#[test]
fn crd_has_subresources_columns_and_names() {
    let crd = ModelDeployment::crd();
    assert_eq!(crd.spec.names.short_names, Some(vec!["md".to_string()]));
    assert_eq!(crd.spec.names.categories, Some(vec!["modelship".to_string()]));
    let version = &crd.spec.versions[0];
    let scale = version.subresources.as_ref().unwrap().scale.as_ref().unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(scale.label_selector_path.as_deref(), Some(".status.selector"));
    let columns: Vec<_> =
        version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
    for column in ["Version", "Phase", "Weight", "Ready", "Age"] {
        assert!(columns.contains(&column), "missing column {column}: {columns:?}");
    }
}

#[test]
fn examples_are_valid() {
    let validator = Validator::new();
    let schema = schema();
    for (name, text) in yaml_files("examples") {
        let md: ModelDeployment =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name} does not decode: {e}"));
        let value = serde_json::to_value(&md).unwrap();
        if let Err(errors) = validator.validate(&schema, &value, None) {
            panic!("{name} breaks a rule: {errors:?}");
        }
    }
}

/// The fixtures whose expected message comes from a CEL rule; the others are schema checks
/// (ranges, patterns, enums) that only the API server evaluates.
fn is_cel_message(expect: &str) -> bool {
    ["must", "needs", "allowed only", "required when", "exactly one"]
        .iter()
        .any(|w| expect.contains(w))
}

#[test]
fn cel_rules_refuse_the_invalid_fixtures() {
    let validator = Validator::new();
    let schema = schema();
    let mut checked = 0;
    for (name, text) in yaml_files("crds/tests/invalid") {
        let expect = text.lines().next().unwrap().trim_start_matches("# expect: ").to_string();
        if !is_cel_message(&expect) {
            continue;
        }
        let value: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let errors = match validator.validate(&schema, &value, None) {
            Ok(()) => panic!("{name} was accepted"),
            Err(errors) => errors.into_vec(),
        };
        assert!(
            errors.iter().any(|e| e.message.contains(&expect)),
            "{name}: expected a message containing {expect:?}, got {errors:?}"
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} CEL fixtures checked");
}

#[test]
fn strategy_type_cannot_change_mid_rollout() {
    let validator = Validator::new();
    let schema = schema();
    let old: serde_json::Value = serde_yaml::from_str(
        r#"
apiVersion: modelship.io/v1alpha1
kind: ModelDeployment
metadata: {name: m}
spec:
  model: {version: "2", uri: "file:///m.onnx"}
  strategy: {type: Canary, canary: {weight: 10}}
status: {candidateVersion: "2", stableVersion: "1"}
"#,
    )
    .unwrap();
    let mut new = old.clone();
    new["spec"]["strategy"] = serde_json::json!({"type": "RollingUpdate"});
    let errors = validator.validate(&schema, &new, Some(&old)).unwrap_err().into_vec();
    assert!(errors.iter().any(|e| {
        e.message.contains("spec.strategy.type cannot change while a rollout is in progress")
    }));
    // Once the rollout is over, the strategy may change.
    let mut idle = old.clone();
    idle["status"] = serde_json::json!({"stableVersion": "2"});
    let mut changed = idle.clone();
    changed["spec"]["strategy"] = serde_json::json!({"type": "RollingUpdate"});
    assert!(validator.validate(&schema, &changed, Some(&idle)).is_ok());
}
