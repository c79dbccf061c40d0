//! Pure builders: (ModelDeployment, plan) -> the Deployments, Services and HPA to apply.
//!
//! Every object carries a controller owner reference, so deleting the ModelDeployment
//! deletes its children, and an `applied-hash` annotation, so an unchanged object is never
//! sent again.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use modelship_crds::{ModelDeployment, labels};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::plan::{DesiredTrack, Track};

/// Annotation holding the hash of what the operator last applied to a child.
pub const APPLIED_HASH: &str = "modelship.io/applied-hash";
/// Port the Services expose.
pub const SERVICE_PORT: i32 = 80;
/// Container port when `spec.serving.port` is not set.
pub const DEFAULT_CONTAINER_PORT: i32 = 8080;
/// Non-root user every pod runs as.
pub const RUN_AS_USER: i64 = 65532;
const MODEL_MOUNT_ROOT: &str = "/mnt/models";
const AUTH_MOUNT: &str = "/var/run/modelship/auth";
const DEFAULT_DRAIN_SECONDS: i32 = 5;

/// Settings that come from the operator's configuration, not from the resource.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub serving_image: String,
}

pub fn deployment_name(md_name: &str, track: Track) -> String {
    format!("{md_name}-{}", track.as_str())
}

pub fn preview_service_name(md_name: &str) -> String {
    format!("{md_name}-preview")
}

/// Labels that select the pods of one track.
pub fn track_selector(md_name: &str, track: Track) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_string(), md_name.to_string()),
        (labels::TRACK.to_string(), track.as_str().to_string()),
    ])
}

/// Selector of a Service: one track, or every track of the model.
pub fn service_selector(md_name: &str, track: Option<Track>) -> BTreeMap<String, String> {
    match track {
        Some(track) => track_selector(md_name, track),
        None => BTreeMap::from([(labels::NAME.to_string(), md_name.to_string())]),
    }
}

/// `status.selector`: the pods the autoscaler measures, as a label-selector string.
pub fn selector_string(md_name: &str, track: Option<Track>) -> String {
    service_selector(md_name, track)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn owner(md: &ModelDeployment) -> OwnerReference {
    OwnerReference {
        api_version: ModelDeployment::api_version(&()).into_owned(),
        kind: ModelDeployment::kind(&()).into_owned(),
        name: md.name_any(),
        uid: md.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

fn child_meta(md: &ModelDeployment, name: String, extra: &[(&str, &str)]) -> ObjectMeta {
    let mut object_labels = BTreeMap::from([
        (labels::NAME.to_string(), md.name_any()),
        (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
        ("app.kubernetes.io/name".to_string(), "modelship-serving".to_string()),
        ("app.kubernetes.io/instance".to_string(), md.name_any()),
    ]);
    for (k, v) in extra {
        object_labels.insert((*k).to_string(), (*v).to_string());
    }
    ObjectMeta {
        name: Some(name),
        namespace: md.namespace(),
        labels: Some(object_labels),
        owner_references: Some(vec![owner(md)]),
        ..ObjectMeta::default()
    }
}

/// Stamp the object's content hash into its annotations.
pub fn with_hash<T: Serialize + Resource>(mut object: T) -> T {
    let body = serde_json::to_vec(&object).expect("Kubernetes objects serialize to JSON");
    let digest = Sha256::digest(&body);
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(APPLIED_HASH.into(), hash);
    object
}

/// The hash an object was applied with, if any.
pub fn applied_hash<T: Resource>(object: &T) -> Option<&str> {
    object.meta().annotations.as_ref()?.get(APPLIED_HASH).map(String::as_str)
}

/// A `pvc://claim/path` URI split into claim and path.
pub fn parse_pvc_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("pvc://")?;
    let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
    (!claim.is_empty()).then_some((claim, path))
}

/// Where the serving container finds a model URI: PVC URIs become paths under the mount.
fn container_uri(uri: &str) -> String {
    match parse_pvc_uri(uri) {
        Some((claim, path)) => format!("file://{MODEL_MOUNT_ROOT}/{claim}/{path}"),
        None => uri.to_string(),
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value.into()), value_from: None }
}

/// The Deployment of one track.
pub fn deployment(md: &ModelDeployment, desired: &DesiredTrack, defaults: &Defaults) -> Deployment {
    let name = md.name_any();
    let serving = md.spec.serving.clone().unwrap_or_default();
    let port = serving.port.unwrap_or(DEFAULT_CONTAINER_PORT);
    let track = desired.track.as_str();
    let mut pod_labels = track_selector(&name, desired.track);
    pod_labels.insert(labels::VERSION.into(), desired.version.clone());
    pod_labels.insert("app.kubernetes.io/name".into(), "modelship-serving".into());
    pod_labels.insert("app.kubernetes.io/instance".into(), name.clone());

    let model = &desired.source;
    let mut env_vars = vec![
        env("MODELSHIP_LISTEN", format!("0.0.0.0:{port}")),
        env("MODELSHIP_MODEL_NAME", md.served_model_name()),
        env("MODELSHIP_MODEL_VERSION", desired.version.clone()),
        env("MODELSHIP_MODEL_URI", container_uri(&model.uri)),
        // The preStop sleep below already keeps the pod serving while endpoints update.
        env("MODELSHIP_DRAIN_SECONDS", "0"),
        EnvVar {
            name: "MODELSHIP_POD_NAME".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
    ];
    if let Some(sha) = &model.sha256 {
        env_vars.push(env("MODELSHIP_MODEL_SHA256", sha.clone()));
    }
    if let Some(reference) = &model.reference_data {
        env_vars.push(env("MODELSHIP_REFERENCE_DATA", container_uri(reference)));
    }
    if let Some(batching) = &serving.batching {
        env_vars.push(env("MODELSHIP_MAX_BATCH_SIZE", batching.max_batch_size.to_string()));
        env_vars
            .push(env("MODELSHIP_MAX_BATCH_DELAY_MICROS", batching.max_delay_micros.to_string()));
        env_vars.push(env("MODELSHIP_QUEUE_CAPACITY", batching.queue_capacity.to_string()));
    }

    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("1Gi".into())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }];
    let mut claims: Vec<&str> = [Some(model.uri.as_str()), model.reference_data.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|uri| parse_pvc_uri(uri).map(|(claim, _)| claim))
        .collect();
    claims.dedup();
    for (index, claim) in claims.iter().enumerate() {
        let volume = format!("models-{index}");
        volumes.push(Volume {
            name: volume.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: (*claim).to_string(),
                read_only: Some(true),
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: format!("{MODEL_MOUNT_ROOT}/{claim}"),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    if let Some(secret) = &serving.auth_secret_name {
        volumes.push(Volume {
            name: "auth".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "auth".into(),
            mount_path: AUTH_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        env_vars.push(env("MODELSHIP_AUTH_TOKEN_FILE", format!("{AUTH_MOUNT}/token")));
    }
    env_vars.extend(serving.env.iter().cloned());

    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    };
    let drain = i64::from(serving.drain_seconds.unwrap_or(DEFAULT_DRAIN_SECONDS));
    let container = Container {
        name: "serving".into(),
        image: Some(serving.image.clone().unwrap_or_else(|| defaults.serving_image.clone())),
        image_pull_policy: serving.image_pull_policy.map(|p| format!("{p:?}")),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(env_vars),
        resources: Some(serving.resources.clone().unwrap_or_else(default_resources)),
        readiness_probe: Some(probe("/ready", 2, 2)),
        liveness_probe: Some(probe("/health", 10, 3)),
        lifecycle: (drain > 0).then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: drain }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(
            serving.termination_grace_period_seconds.unwrap_or(30).max(drain + 5),
        ),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    };
    let mut annotations = serving.pod_annotations.clone();
    annotations.extend([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), port.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ]);
    with_hash(Deployment {
        metadata: child_meta(md, deployment_name(&name, desired.track), &[(labels::TRACK, track)]),
        spec: DeploymentSpec {
            replicas: Some(desired.replicas),
            selector: LabelSelector {
                match_labels: Some(track_selector(&name, desired.track)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                // Never remove a ready pod before its replacement is ready.
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(2),
            progress_deadline_seconds: Some(md.spec.strategy.progress_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    })
}

/// The Deployment as it runs now, resized: for tracks whose template must not change.
/// Server-set metadata and annotations other controllers own are left out of the apply.
pub fn resized(running: &Deployment, replicas: i32) -> Deployment {
    let mut spec = running.spec.clone();
    spec.replicas = Some(replicas);
    with_hash(Deployment {
        metadata: ObjectMeta {
            name: running.metadata.name.clone(),
            namespace: running.metadata.namespace.clone(),
            labels: running.metadata.labels.clone(),
            owner_references: running.metadata.owner_references.clone(),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    })
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("64Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), Quantity("512Mi".into()))])),
        ..ResourceRequirements::default()
    }
}

/// The main Service (`preview == false`) or the preview Service, selecting `track` (every
/// track when `None`).
pub fn service(md: &ModelDeployment, track: Option<Track>, preview: bool) -> Service {
    let md_name = md.name_any();
    let name = if preview { preview_service_name(&md_name) } else { md_name.clone() };
    let role = if preview { "preview" } else { "main" };
    with_hash(Service {
        metadata: child_meta(md, name, &[("modelship.io/service", role)]),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(service_selector(&md_name, track)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The HorizontalPodAutoscaler on the ModelDeployment's `/scale` subresource.
pub fn hpa(md: &ModelDeployment) -> Option<HorizontalPodAutoscaler> {
    let autoscaling = md.spec.autoscaling.as_ref()?;
    let utilization = |resource: &str, percent: i32| MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: resource.into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(percent),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    };
    let mut metrics = Vec::new();
    let cpu = autoscaling.target_cpu_utilization_percentage;
    let memory = autoscaling.target_memory_utilization_percentage;
    if let Some(percent) = cpu.or(if memory.is_none() { Some(80) } else { None }) {
        metrics.push(utilization("cpu", percent));
    }
    if let Some(percent) = memory {
        metrics.push(utilization("memory", percent));
    }
    Some(with_hash(HorizontalPodAutoscaler {
        metadata: child_meta(md, md.name_any(), &[]),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(ModelDeployment::api_version(&()).into_owned()),
                kind: ModelDeployment::kind(&()).into_owned(),
                name: md.name_any(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(metrics),
            behavior: autoscaling.behavior.clone(),
        },
        status: None,
    }))
}

#[cfg(test)]
mod tests;
