//! Snapshot tests of every object the operator builds, and a static check of the pod
//! template against the Pod Security Standards `restricted` profile.
//!
//! Snapshots live in `src/desired/snapshots/`; run with `UPDATE_SNAPSHOTS=1` to rewrite them
//! after an intended change, then review the diff.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{LocalObjectReference, Toleration};
use kube::core::ObjectMeta;
use modelship_crds::{
    AutoscalingSpec, BatchingSpec, DisruptionBudgetSpec, ExposureSpec, ModelDeploymentSpec,
    ModelSpec, PredictionLogSpec, PreviewExposureSpec, ServiceType, ServingSpec, StrategySpec,
    StrategyType,
};

use super::deployment::container_uri;
use super::pod_security::restricted_violations;
use super::*;
use crate::plan::DesiredTrack;

/// A canary model with every option the builders read.
pub(super) fn model() -> ModelDeployment {
    named("fraud")
}

/// [`model`] under another name.
pub(super) fn named(name: &str) -> ModelDeployment {
    let mut md = ModelDeployment::new(
        name,
        ModelDeploymentSpec {
            model: ModelSpec {
                name: Some("fraud-detector".into()),
                version: "2".into(),
                uri: "pvc://models/fraud/2/model.onnx".into(),
                format: Default::default(),
                reference_data: Some("pvc://models/fraud/2/reference.json".into()),
                sha256: None,
            },
            replicas: 3,
            serving: Some(ServingSpec {
                batching: Some(BatchingSpec {
                    max_batch_size: 16,
                    max_delay_micros: 200,
                    queue_capacity: 256,
                }),
                auth_secret_name: Some("fraud-token".into()),
                image_pull_secrets: vec![LocalObjectReference { name: "registry".into() }],
                node_selector: BTreeMap::from([("pool".into(), "inference".into())]),
                tolerations: vec![Toleration {
                    key: Some("nvidia.com/gpu".into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoSchedule".into()),
                    ..Toleration::default()
                }],
                affinity: Some(
                    serde_json::from_value(serde_json::json!({
                        "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 50,
                            "preference": {"matchExpressions": [
                                {"key": "zone", "operator": "In", "values": ["a"]}]}}]}
                    }))
                    .expect("an affinity"),
                ),
                topology_spread_constraints: vec![
                    serde_json::from_value(serde_json::json!({
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": {"modelship.io/name": "fraud"}}
                    }))
                    .expect("a spread constraint"),
                ],
                service_account_name: Some("fraud-serving".into()),
                pod_labels: BTreeMap::from([
                    ("team".into(), "risk".into()),
                    ("app.kubernetes.io/name".into(), "not-this".into()),
                ]),
                priority_class_name: Some("inference-high".into()),
                prediction_log: Some(PredictionLogSpec {
                    sample_rate: 0.25,
                    ..PredictionLogSpec::default()
                }),
                ..ServingSpec::default()
            }),
            autoscaling: Some(AutoscalingSpec {
                min_replicas: 2,
                max_replicas: 10,
                target_cpu_utilization_percentage: Some(70),
                target_memory_utilization_percentage: Some(80),
                behavior: None,
            }),
            strategy: StrategySpec { type_: StrategyType::Canary, ..StrategySpec::default() },
            service: None,
            disruption_budget: None,
            notifications: None,
        },
    );
    md.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some("ml".into()),
        uid: Some("6f1c1f43-0000-4000-8000-000000000001".into()),
        ..ObjectMeta::default()
    };
    md
}

fn defaults() -> Defaults {
    Defaults { serving_image: "ghcr.io/modelship/serving:0.1.0".into() }
}

fn check_snapshot(name: &str, value: &impl Serialize) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/desired/snapshots").join(name);
    let actual = serde_yaml::to_string(value).expect("serializes");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("missing snapshot {}; run with UPDATE_SNAPSHOTS=1", path.display())
    });
    assert_eq!(
        actual, expected,
        "snapshot {name} changed; rerun with UPDATE_SNAPSHOTS=1 if intended"
    );
}

fn canary_track() -> DesiredTrack {
    let source = model().spec.model.source();
    DesiredTrack { track: Track::Canary, version: "2".into(), replicas: 1, frozen: false, source }
}

#[test]
fn deployment_snapshot() {
    check_snapshot("deployment-canary.yaml", &deployment(&model(), &canary_track(), &defaults()));
}

#[test]
fn services_snapshot() {
    check_snapshot("service-main.yaml", &service(&model(), None, false));
    check_snapshot("service-preview.yaml", &service(&model(), Some(Track::Green), true));
}

#[test]
fn exposed_services_snapshot() {
    let mut md = model();
    md.spec.service = Some(ExposureSpec {
        type_: ServiceType::LoadBalancer,
        annotations: BTreeMap::from([("lb.example.com/internal".into(), "true".into())]),
        port: Some(8000),
        preview: Some(PreviewExposureSpec {
            type_: Some(ServiceType::ClusterIP),
            annotations: None,
        }),
    });
    check_snapshot("service-loadbalancer.yaml", &service(&md, None, false));
    let preview = service(&md, Some(Track::Green), true);
    let spec = preview.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"), "the preview's own type");
    assert_eq!(spec.ports.unwrap()[0].port, 8000, "the port follows");
    let annotations = preview.metadata.annotations.unwrap();
    assert_eq!(annotations.get("lb.example.com/internal").map(String::as_str), Some("true"));
    // Without spec.service: ClusterIP on port 80, as before.
    let plain = service(&model(), None, false).spec.unwrap();
    assert_eq!((plain.type_.as_deref(), plain.ports.unwrap()[0].port), (Some("ClusterIP"), 80));
}

#[test]
fn pdb_snapshot() {
    check_snapshot("pdb.yaml", &pdb(&model()).expect("on by default"));
    let mut off = model();
    off.spec.disruption_budget =
        Some(DisruptionBudgetSpec { enabled: false, ..DisruptionBudgetSpec::default() });
    assert!(pdb(&off).is_none());
}

#[test]
fn pod_labels_never_override_the_operators() {
    let d = deployment(&model(), &canary_track(), &defaults());
    let labels = d.spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["team"], "risk", "the user's label");
    assert_eq!(labels["app.kubernetes.io/name"], "modelship-serving", "the operator's wins");
    assert_eq!(labels[modelship_crds::labels::TRACK], "canary");
    let pod = d.spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("fraud-serving"));
    assert_eq!(pod.automount_service_account_token, Some(false), "never the token");
    assert_eq!(pod.priority_class_name.as_deref(), Some("inference-high"));
    assert_eq!(pod.node_selector.unwrap()["pool"], "inference");
    let env = pod.containers[0].env.clone().unwrap();
    let value = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(value("MODELSHIP_PREDICTION_LOG").as_deref(), Some("stdout"));
    assert_eq!(value("MODELSHIP_PREDICTION_LOG_SAMPLE_RATE").as_deref(), Some("0.25"));
    // Unset placement stays unset.
    let mut plain = model();
    plain.spec.serving = None;
    let pod = deployment(&plain, &canary_track(), &defaults()).spec.template.spec.unwrap();
    assert!(pod.tolerations.is_none() && pod.node_selector.is_none() && pod.affinity.is_none());
}

#[test]
fn hpa_snapshot() {
    check_snapshot("hpa.yaml", &hpa(&model()).expect("autoscaling is set"));
}

#[test]
fn hpa_targets_the_scale_subresource_and_defaults_to_cpu() {
    let mut md = model();
    let autoscaling = md.spec.autoscaling.as_mut().unwrap();
    autoscaling.target_cpu_utilization_percentage = None;
    autoscaling.target_memory_utilization_percentage = None;
    let hpa = hpa(&md).unwrap();
    assert_eq!(hpa.spec.scale_target_ref.kind, "ModelDeployment");
    assert_eq!(hpa.spec.scale_target_ref.api_version.as_deref(), Some("modelship.io/v1alpha1"));
    let metrics = hpa.spec.metrics.unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0].resource.as_ref().unwrap().target.average_utilization, Some(80));
    md.spec.autoscaling = None;
    assert!(super::hpa(&md).is_none());
}

#[test]
fn pvc_uris_become_mounted_paths() {
    let d = deployment(&model(), &canary_track(), &defaults());
    let pod = d.spec.template.spec.unwrap();
    let env = pod.containers[0].env.clone().unwrap();
    let value = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(
        value("MODELSHIP_MODEL_URI").as_deref(),
        Some("file:///mnt/models/models/fraud/2/model.onnx")
    );
    assert_eq!(
        value("MODELSHIP_REFERENCE_DATA").as_deref(),
        Some("file:///mnt/models/models/fraud/2/reference.json")
    );
    let claims: Vec<_> =
        pod.volumes.unwrap().into_iter().filter_map(|v| v.persistent_volume_claim).collect();
    assert_eq!(claims.len(), 1, "one volume for one claim");
    assert_eq!(claims[0].claim_name, "models");
    assert_eq!(parse_pvc_uri("pvc://claim"), Some(("claim", "")));
    assert_eq!(parse_pvc_uri("pvc:///x"), None);
    assert_eq!(container_uri("https://example.com/m.onnx"), "https://example.com/m.onnx");
}

#[test]
fn hash_changes_with_content_only() {
    let a = deployment(&model(), &canary_track(), &defaults());
    let b = deployment(&model(), &canary_track(), &defaults());
    assert_eq!(applied_hash(&a), applied_hash(&b));
    let scaled = DesiredTrack { replicas: 2, ..canary_track() };
    let c = deployment(&model(), &scaled, &defaults());
    assert_ne!(applied_hash(&a), applied_hash(&c));
}

#[test]
fn selectors() {
    assert_eq!(selector_string("m", None), "modelship.io/name=m");
    assert_eq!(
        selector_string("m", Some(Track::Blue)),
        "modelship.io/name=m,modelship.io/track=blue"
    );
}

#[test]
fn serving_pods_pass_pod_security_restricted() {
    let d = deployment(&model(), &canary_track(), &defaults());
    let pod = d.spec.template.spec.unwrap();
    assert_eq!(restricted_violations(&pod), Vec::<String>::new());
    assert_eq!(pod.security_context.unwrap().run_as_user, Some(RUN_AS_USER));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let container = &pod.containers[0];
    assert_eq!(container.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
    let pre_stop = container.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
    assert_eq!(pre_stop.sleep.as_ref().unwrap().seconds, 5, "drains before SIGTERM");
}

#[test]
fn the_restricted_check_catches_violations() {
    let mut pod = deployment(&model(), &canary_track(), &defaults()).spec.template.spec.unwrap();
    pod.security_context = None;
    pod.containers[0].security_context = None;
    let found = restricted_violations(&pod);
    assert!(found.len() >= 4, "{found:?}");
}

#[test]
fn a_running_deployment_holds_what_has_its_hash_and_its_size() {
    let wanted = deployment(&model(), &canary_track(), &defaults());
    assert!(wanted.clone().holds(&wanted), "applied as built");
    // Resized through the scale subresource: the hash stays, the size does not.
    let mut resized = wanted.clone();
    resized.spec.replicas = Some(wanted.spec.replicas.unwrap_or(1) + 2);
    assert!(!resized.holds(&wanted), "another size is written again");
    let mut edited = model();
    edited.spec.serving.as_mut().unwrap().image = Some("example.com/other:1".into());
    let rebuilt = deployment(&edited, &canary_track(), &defaults());
    assert!(!wanted.holds(&rebuilt), "another template is written again");
    let mut unhashed = wanted.clone();
    unhashed.metadata.annotations = None;
    assert!(!unhashed.holds(&wanted), "a child without our hash is written");
}
