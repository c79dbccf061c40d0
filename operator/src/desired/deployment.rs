//! The Deployment of one track: the serving container, its probes, volumes and the
//! restricted security context every pod runs with.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, SleepAction, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use modelship_contract::env as serving_env;
use modelship_contract::routes;
use modelship_crds::{ModelDeployment, ModelSource, PredictionLogSink, ServingSpec, labels};

use super::{
    Defaults, HTTP_PORT_NAME, app_labels, child_meta, deployment_name, track_selector, with_hash,
};
use crate::plan::DesiredTrack;

/// Non-root user every pod runs as.
pub const RUN_AS_USER: i64 = 65532;
const MODEL_MOUNT_ROOT: &str = "/mnt/models";
const AUTH_MOUNT: &str = "/var/run/modelship/auth";
/// Seconds a pod may take to stop beyond its drain.
const STOP_MARGIN_SECONDS: i64 = 5;

/// A `pvc://claim/path` URI split into claim and path.
pub fn parse_pvc_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("pvc://")?;
    let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
    (!claim.is_empty()).then_some((claim, path))
}

/// Where the serving container finds a model URI: PVC URIs become paths under the mount.
pub(super) fn container_uri(uri: &str) -> String {
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
    let port = serving.port();
    // The user's labels first: the operator's own are set over them.
    let mut pod_labels = serving.pod_labels.clone();
    pod_labels.extend(track_selector(&name, desired.track));
    pod_labels.insert(labels::VERSION.into(), desired.version.clone());
    pod_labels.extend(app_labels(&name));

    let storage = Storage::of(&desired.source, &serving);
    let mut env = serving_env(md, desired, &serving);
    env.extend(storage.env);
    env.extend(serving.env.iter().cloned());
    let container = container(&serving, defaults, env, storage.mounts);
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(pod_annotations(&serving, port)),
            ..ObjectMeta::default()
        }),
        spec: Some(pod(container, storage.volumes, &serving)),
    };
    let track = desired.track.as_str();
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
            template,
            ..DeploymentSpec::default()
        },
        status: None,
    })
}

/// The serving binary's configuration: which model, where to listen, how to batch.
fn serving_env(md: &ModelDeployment, desired: &DesiredTrack, serving: &ServingSpec) -> Vec<EnvVar> {
    let model = &desired.source;
    let mut vars = vec![
        env(serving_env::LISTEN, format!("0.0.0.0:{}", serving.port())),
        env(serving_env::MODEL_NAME, md.served_model_name()),
        env(serving_env::MODEL_VERSION, desired.version.clone()),
        env(serving_env::MODEL_URI, container_uri(&model.uri)),
        // The preStop sleep already keeps the pod serving while endpoints update.
        env(serving_env::DRAIN_SECONDS, "0"),
        EnvVar {
            name: serving_env::POD_NAME.into(),
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
        vars.push(env(serving_env::MODEL_SHA256, sha.clone()));
    }
    if let Some(reference) = &model.reference_data {
        vars.push(env(serving_env::REFERENCE_DATA, container_uri(reference)));
    }
    if let Some(log) = &serving.prediction_log {
        let sink = match log.sink {
            PredictionLogSink::Stdout => "stdout",
            PredictionLogSink::Http => "http",
        };
        vars.push(env(serving_env::PREDICTION_LOG, sink));
        vars.push(env(serving_env::PREDICTION_LOG_SAMPLE_RATE, log.sample_rate.to_string()));
        if let Some(url) = &log.url {
            vars.push(env(serving_env::PREDICTION_LOG_URL, url.clone()));
        }
        if log.include_features {
            vars.push(env(serving_env::PREDICTION_LOG_FEATURES, "true"));
        }
    }
    if let Some(batching) = &serving.batching {
        vars.push(env(serving_env::MAX_BATCH_SIZE, batching.max_batch_size.to_string()));
        vars.push(env(serving_env::MAX_BATCH_DELAY_MICROS, batching.max_delay_micros.to_string()));
        vars.push(env(serving_env::QUEUE_CAPACITY, batching.queue_capacity.to_string()));
    }
    vars
}

/// What the pod mounts: a scratch `/tmp` (the root filesystem is read-only), the model's
/// claims read-only, and the token Secret; with the variable that names the token file.
struct Storage {
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    env: Vec<EnvVar>,
}

impl Storage {
    fn of(model: &ModelSource, serving: &ServingSpec) -> Storage {
        let mut storage = Storage { volumes: Vec::new(), mounts: Vec::new(), env: Vec::new() };
        storage.mount(
            Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("1Gi".into())),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            },
            "/tmp".into(),
            None,
        );
        let mut claims: Vec<&str> = [Some(model.uri.as_str()), model.reference_data.as_deref()]
            .into_iter()
            .flatten()
            .filter_map(|uri| parse_pvc_uri(uri).map(|(claim, _)| claim))
            .collect();
        claims.dedup();
        for (index, claim) in claims.iter().enumerate() {
            let volume = Volume {
                name: format!("models-{index}"),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: (*claim).to_string(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            };
            storage.mount(volume, format!("{MODEL_MOUNT_ROOT}/{claim}"), Some(true));
        }
        if let Some(secret) = &serving.auth_secret_name {
            let volume = Volume {
                name: "auth".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.clone()),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            };
            storage.mount(volume, AUTH_MOUNT.into(), Some(true));
            storage.env.push(env(serving_env::AUTH_TOKEN_FILE, format!("{AUTH_MOUNT}/token")));
        }
        storage
    }

    fn mount(&mut self, volume: Volume, mount_path: String, read_only: Option<bool>) {
        self.mounts.push(VolumeMount {
            name: volume.name.clone(),
            mount_path,
            read_only,
            ..VolumeMount::default()
        });
        self.volumes.push(volume);
    }
}

/// The serving container: restricted, probed on its own routes, draining before it stops.
fn container(
    serving: &ServingSpec,
    defaults: &Defaults,
    env: Vec<EnvVar>,
    mounts: Vec<VolumeMount>,
) -> Container {
    let drain = i64::from(serving.drain_seconds());
    Container {
        name: "serving".into(),
        image: Some(serving.image.clone().unwrap_or_else(|| defaults.serving_image.clone())),
        image_pull_policy: serving.image_pull_policy.map(|p| format!("{p:?}")),
        ports: Some(vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.into()),
            container_port: serving.port(),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(env),
        resources: Some(serving.resources.clone().unwrap_or_else(default_resources)),
        readiness_probe: Some(probe(routes::READY, 2, 2)),
        liveness_probe: Some(probe(routes::HEALTH, 10, 3)),
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
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(HTTP_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// The pod: non-root, no service account token, no service links, a grace period that
/// covers the drain, and the user's placement (node selector, tolerations, affinity,
/// topology spread, priority), pull secrets and ServiceAccount.
fn pod(container: Container, volumes: Vec<Volume>, serving: &ServingSpec) -> PodSpec {
    let drain = i64::from(serving.drain_seconds());
    PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        image_pull_secrets: non_empty(&serving.image_pull_secrets),
        node_selector: (!serving.node_selector.is_empty()).then(|| serving.node_selector.clone()),
        tolerations: non_empty(&serving.tolerations),
        affinity: serving.affinity.clone(),
        topology_spread_constraints: non_empty(&serving.topology_spread_constraints),
        service_account_name: serving.service_account_name.clone(),
        priority_class_name: serving.priority_class_name.clone(),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(
            serving.termination_grace_period_seconds().max(drain + STOP_MARGIN_SECONDS),
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
    }
}

/// `None` for an empty list, so an unset field stays unset in the pod template.
fn non_empty<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}

/// The user's pod annotations, and where Prometheus finds the metrics.
fn pod_annotations(serving: &ServingSpec, port: i32) -> BTreeMap<String, String> {
    let mut annotations = serving.pod_annotations.clone();
    annotations.extend([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), port.to_string()),
        ("prometheus.io/path".to_string(), routes::METRICS.to_string()),
    ]);
    annotations
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
