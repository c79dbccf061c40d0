//! `modelship.io/v1alpha1`: the `ModelDeployment` resource.
//!
//! Every rule a user can break is checked by the API server itself, through the OpenAPI
//! schema (ranges, lengths, patterns, enums) and CEL rules (`x-kubernetes-validations`).
//! Each CEL message names the field it guards, so `kubectl apply` tells the user exactly
//! what to fix.
//!
//! Why this file is long: it is the whole API version, spec and status, read top to bottom
//! like the CRD it generates; every field carries its documentation and its rules, which
//! become the schema's descriptions and validations.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The longest `metadata.name` accepted: children are named `<name>-preview`, `<name>-canary`
/// and so on, and must stay valid DNS labels (63 characters).
pub const MAX_NAME_LENGTH: usize = 50;

/// A model served on Kubernetes and rolled out version by version.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "modelship.io",
    version = "v1alpha1",
    kind = "ModelDeployment",
    plural = "modeldeployments",
    singular = "modeldeployment",
    shortname = "md",
    category = "modelship",
    namespaced,
    status = "ModelDeploymentStatus",
    derive = "PartialEq",
    doc = "A machine-learning model served by Modelship and rolled out version by version",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.model.version", description = "Desired model version"),
    printcolumn(name = "Stable", type_ = "string", json_path = ".status.stableVersion", description = "Version that serves when no rollout is in progress"),
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy.type", priority = 1),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Weight", type_ = "integer", json_path = ".status.canaryWeight", description = "Share of traffic requested for the candidate version"),
    printcolumn(name = "Effective", type_ = "integer", json_path = ".status.effectiveWeight", description = "Share of ready pods, and so of traffic, on the candidate version"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 50")
        .message("metadata.name must be at most 50 characters: child objects append suffixes such as -preview"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.candidateVersion) || self.spec.strategy.type == oldSelf.spec.strategy.type")
        .message("spec.strategy.type cannot change while a rollout is in progress (status.candidateVersion is set): promote it or set spec.model.version back to status.stableVersion first")
        .field_path(".spec.strategy.type"),
)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// The model artifact and the version to serve.
    pub model: ModelSpec,

    /// Total number of serving pods across all versions. This is the `/scale` subresource:
    /// when `autoscaling` is set, the HorizontalPodAutoscaler owns this field, so leave it
    /// out of manifests that also set `autoscaling`.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// The serving container: image, port, resources, batching, authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ServingSpec>,

    /// A HorizontalPodAutoscaler that targets this ModelDeployment's `/scale` subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// How a new `model.version` reaches production.
    #[serde(default)]
    pub strategy: StrategySpec,

    /// The Service in front of the pods: type, port and annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ExposureSpec>,

    /// A PodDisruptionBudget over every pod of the model, so a node drain evicts at most
    /// `maxUnavailable` pods at a time. On by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<DisruptionBudgetSpec>,

    /// Webhook notifications of rollout events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<NotificationsSpec>,
}

impl ModelDeploymentSpec {
    /// The Service settings, defaults when unset.
    pub fn exposure(&self) -> ExposureSpec {
        self.service.clone().unwrap_or_default()
    }

    /// The disruption budget, defaults (on, one pod at a time) when unset.
    pub fn disruption_budget(&self) -> DisruptionBudgetSpec {
        self.disruption_budget.clone().unwrap_or_default()
    }
}

fn default_replicas() -> i32 {
    1
}

/// The model artifact.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Name served at `/v2/models/{name}`; defaults to `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"))]
    pub name: Option<String>,

    /// The model version. Any change starts a rollout. It becomes a label value, so it is at
    /// most 63 characters of letters, digits, `.`, `_` and `-`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
    )]
    pub version: String,

    /// Where the model file lives: `pvc://<claim>/<path>`, `http(s)://...` or `file:///<path>`
    /// (a path inside the serving image or on the node).
    #[x_kube(
        validation = Rule::new("self.startsWith('pvc://') || self.startsWith('http://') || self.startsWith('https://') || self.startsWith('file:///')")
            .message("spec.model.uri must start with pvc://, http://, https:// or file:///"),
        validation = Rule::new("!self.startsWith('pvc://') || self.matches('^pvc://[^/]+/[^/].*$')")
            .message("spec.model.uri needs a claim and a path: pvc://<claim>/<path>"),
        validation = Rule::new("!(self.startsWith('http://') || self.startsWith('https://')) || self.matches('^https?://[^/?#]+')")
            .message("spec.model.uri needs a host after http:// or https://"),
        validation = Rule::new("!self.startsWith('file:///') || self.size() > 8")
            .message("spec.model.uri needs a path after file:///"),
    )]
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,

    /// The model format.
    #[serde(default)]
    pub format: ModelFormat,

    /// Optional feature statistics the serving pods compare live traffic with to compute
    /// `ml_data_drift_score`. Same URI schemes as `uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self.startsWith('pvc://') || self.startsWith('http://') || self.startsWith('https://') || self.startsWith('file:///')")
            .message("spec.model.referenceData must start with pvc://, http://, https:// or file:///"),
        validation = Rule::new("!self.startsWith('pvc://') || self.matches('^pvc://[^/]+/[^/].*$')")
            .message("spec.model.referenceData needs a claim and a path: pvc://<claim>/<path>"),
        validation = Rule::new("!(self.startsWith('http://') || self.startsWith('https://')) || self.matches('^https?://[^/?#]+')")
            .message("spec.model.referenceData needs a host after http:// or https://"),
        validation = Rule::new("!self.startsWith('file:///') || self.size() > 8")
            .message("spec.model.referenceData needs a path after file:///"),
    )]
    #[schemars(length(min = 1, max = 2048))]
    pub reference_data: Option<String>,

    /// Expected SHA-256 of the model file (hex). Downloads that do not match are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: Option<String>,
}

/// Model file formats the serving binary loads.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// ONNX, including the ONNX-ML operators that scikit-learn models export to.
    #[default]
    Onnx,
}

/// The serving container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServingSpec {
    /// Serving image; defaults to the image the operator was configured with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Image pull policy of the serving container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Container port for HTTP (inference, health and metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: Option<i32>,

    /// CPU and memory requests and limits of the serving container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra annotations on every serving pod (for example for a service mesh or a log
    /// collector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Extra environment variables for the serving container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,

    /// Dynamic batching of concurrent inference requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<BatchingSpec>,

    /// Name of a Secret in the same namespace whose `token` key is the bearer token required
    /// for inference requests. Health and metrics never require it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub auth_secret_name: Option<String>,

    /// Seconds a terminating pod keeps serving before it drains, so that endpoint removal
    /// reaches every proxy first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 120))]
    pub drain_seconds: Option<i32>,

    /// Grace period for a terminating serving pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("spec.serving.terminationGracePeriodSeconds must be at least 1"))]
    #[schemars(range(max = 600))]
    pub termination_grace_period_seconds: Option<i64>,

    /// Secrets for pulling the serving image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Nodes the serving pods may run on, by label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the serving pods tolerate (for example a dedicated GPU node pool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tolerations: Vec<Toleration>,

    /// Node and pod affinity of the serving pods, passed to the pods as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How the serving pods spread over zones or nodes, passed to the pods as it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// ServiceAccount the serving pods run as. Its token is never mounted: the serving
    /// binary does not call the Kubernetes API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,

    /// Extra labels on every serving pod. The operator's own labels (`modelship.io/...`,
    /// `app.kubernetes.io/name`, `app.kubernetes.io/instance`) cannot be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(key, !key.startsWith('modelship.io/') && key != 'app.kubernetes.io/name' && key != 'app.kubernetes.io/instance')")
        .message("spec.serving.podLabels must not set the operator's labels (modelship.io/..., app.kubernetes.io/name, app.kubernetes.io/instance): it sets them to select and describe its pods"))]
    pub pod_labels: BTreeMap<String, String>,

    /// PriorityClass of the serving pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// One structured record per prediction, for later training and audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_log: Option<PredictionLogSpec>,
}

impl ServingSpec {
    /// Container port when `port` is not set.
    pub const DEFAULT_PORT: i32 = 8080;
    /// `preStop` sleep when `drainSeconds` is not set.
    pub const DEFAULT_DRAIN_SECONDS: i32 = 5;
    /// Grace period when `terminationGracePeriodSeconds` is not set.
    pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;

    pub fn port(&self) -> i32 {
        self.port.unwrap_or(Self::DEFAULT_PORT)
    }

    pub fn drain_seconds(&self) -> i32 {
        self.drain_seconds.unwrap_or(Self::DEFAULT_DRAIN_SECONDS)
    }

    pub fn termination_grace_period_seconds(&self) -> i64 {
        self.termination_grace_period_seconds
            .unwrap_or(Self::DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS)
    }
}

/// Image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Dynamic batching: concurrent requests are grouped into one model call.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BatchingSpec {
    /// Largest number of rows in one model call.
    #[serde(default = "default_max_batch_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_batch_size: i32,

    /// Longest time a request waits for others to join its batch.
    #[serde(default = "default_max_delay_micros")]
    #[schemars(range(min = 0, max = 100_000))]
    pub max_delay_micros: i32,

    /// Requests waiting beyond this queue length are answered 429.
    #[serde(default = "default_queue_capacity")]
    #[schemars(range(min = 1, max = 65536))]
    pub queue_capacity: i32,
}

impl Default for BatchingSpec {
    fn default() -> Self {
        Self {
            max_batch_size: default_max_batch_size(),
            max_delay_micros: default_max_delay_micros(),
            queue_capacity: default_queue_capacity(),
        }
    }
}

fn default_max_batch_size() -> i32 {
    32
}
fn default_max_delay_micros() -> i32 {
    500
}
fn default_queue_capacity() -> i32 {
    1024
}

/// Prediction logging in the serving pods: one JSON record per prediction with the time,
/// request id, model, version, prediction, confidence and the SHA-256 of the features.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.sink != 'Http' || has(self.url)")
        .message("spec.serving.predictionLog.url is required when spec.serving.predictionLog.sink is Http")
        .field_path(".url"),
    validation = Rule::new("self.sink == 'Http' || !has(self.url)")
        .message("spec.serving.predictionLog.url is allowed only when spec.serving.predictionLog.sink is Http")
        .field_path(".url"),
)]
pub struct PredictionLogSpec {
    /// Share of predictions logged, from 0 to 1.
    #[serde(default = "default_sample_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_rate: f64,

    /// `Stdout` (JSON lines on the container's standard output, for the node's log
    /// collector) or `Http` (batches POSTed to `url`).
    #[serde(default)]
    pub sink: PredictionLogSink,

    /// The collector that receives batches of records (a JSON array per POST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("spec.serving.predictionLog.url must start with http:// or https://"))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: Option<String>,

    /// Also log the features themselves, not only their hash.
    #[serde(default)]
    pub include_features: bool,
}

impl Default for PredictionLogSpec {
    fn default() -> Self {
        Self {
            sample_rate: default_sample_rate(),
            sink: PredictionLogSink::default(),
            url: None,
            include_features: false,
        }
    }
}

fn default_sample_rate() -> f64 {
    1.0
}

/// Where prediction records go.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PredictionLogSink {
    /// JSON lines on standard output.
    #[default]
    Stdout,
    /// Batches POSTed to an HTTP collector.
    Http,
}

/// The Service in front of the model's pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExposureSpec {
    /// `ClusterIP`, `NodePort` or `LoadBalancer`.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,

    /// Annotations on the Service (for example a cloud load balancer's settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: BTreeMap<String, String>,

    /// Port the Service exposes; it forwards to the serving container's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// The preview Service (blue-green): it follows these settings unless told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewExposureSpec>,
}

impl ExposureSpec {
    /// Service port when `port` is not set.
    pub const DEFAULT_PORT: i32 = 80;

    pub fn port(&self) -> i32 {
        self.port.unwrap_or(Self::DEFAULT_PORT)
    }

    /// The preview Service's type: its own, else the main Service's.
    pub fn preview_type(&self) -> ServiceType {
        self.preview.as_ref().and_then(|p| p.type_).unwrap_or(self.type_)
    }

    /// The preview Service's annotations: its own, else the main Service's.
    pub fn preview_annotations(&self) -> &BTreeMap<String, String> {
        self.preview.as_ref().and_then(|p| p.annotations.as_ref()).unwrap_or(&self.annotations)
    }
}

/// Settings of the preview Service that differ from the main Service's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewExposureSpec {
    /// The preview Service's type; the main Service's when unset.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,

    /// The preview Service's annotations; the main Service's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Service types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through the cloud's load balancer.
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The PodDisruptionBudget over every pod of the model, whatever its track.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudgetSpec {
    /// Create the PodDisruptionBudget.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Pods a voluntary disruption (a node drain) may take away at once, over all tracks.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_unavailable: i32,
}

impl Default for DisruptionBudgetSpec {
    fn default() -> Self {
        Self { enabled: default_true(), max_unavailable: default_max_unavailable() }
    }
}

fn default_max_unavailable() -> i32 {
    1
}

/// Where rollout events are sent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationsSpec {
    /// A webhook that receives each event as a JSON POST.
    pub webhook: WebhookSpec,
}

/// A webhook receiver of rollout events.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// Secret in the ModelDeployment's namespace: its `url` key is the address to POST to,
    /// its optional `hmacKey` key signs each body (header `X-Modelship-Signature:
    /// sha256=<hex HMAC-SHA256 of the body>`).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,

    /// The events to send; all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6))]
    pub events: Vec<NotificationEvent>,
}

impl WebhookSpec {
    /// Whether `event` is one of the chosen events.
    pub fn wants(&self, event: NotificationEvent) -> bool {
        self.events.is_empty() || self.events.contains(&event)
    }
}

/// Rollout events a webhook can receive.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum NotificationEvent {
    /// A new version started rolling out.
    Started,
    /// The rollout waits for time or for approval.
    Paused,
    /// The candidate became the stable version.
    Promoted,
    /// The candidate was removed and the stable version serves: set back by the user, or
    /// aborted at the progress deadline.
    RolledBack,
    /// The candidate failed its analysis and was rolled back.
    AnalysisFailed,
    /// Something needs attention: the Degraded condition became true.
    Degraded,
}

impl NotificationEvent {
    pub const ALL: [NotificationEvent; 6] = [
        Self::Started,
        Self::Paused,
        Self::Promoted,
        Self::RolledBack,
        Self::AnalysisFailed,
        Self::Degraded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "Started",
            Self::Paused => "Paused",
            Self::Promoted => "Promoted",
            Self::RolledBack => "RolledBack",
            Self::AnalysisFailed => "AnalysisFailed",
            Self::Degraded => "Degraded",
        }
    }
}

/// A HorizontalPodAutoscaler on the ModelDeployment's `/scale` subresource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas")
    .field_path(".minReplicas"))]
pub struct AutoscalingSpec {
    /// Fewest replicas the autoscaler keeps.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,

    /// Most replicas the autoscaler may create.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,

    /// Target average CPU use, in percent of the request. Defaults to 80 when no target is set.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization_percentage: Option<i32>,

    /// Target average memory use, in percent of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_memory_utilization_percentage: Option<i32>,

    /// Scaling behaviour, passed to the HorizontalPodAutoscaler as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

impl AutoscalingSpec {
    /// CPU utilization target when neither target is set.
    pub const DEFAULT_CPU_UTILIZATION_PERCENTAGE: i32 = 80;

    /// The CPU target: the one set, or the default when no target at all is set.
    pub fn cpu_target(&self) -> Option<i32> {
        match (self.target_cpu_utilization_percentage, self.target_memory_utilization_percentage) {
            (Some(cpu), _) => Some(cpu),
            (None, None) => Some(Self::DEFAULT_CPU_UTILIZATION_PERCENTAGE),
            (None, Some(_)) => None,
        }
    }
}

fn default_min_replicas() -> i32 {
    1
}

/// How a new version reaches production.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type == 'BlueGreen' || !has(self.blueGreen)")
        .message("spec.strategy.blueGreen is allowed only when spec.strategy.type is BlueGreen")
        .field_path(".blueGreen"),
    validation = Rule::new("self.type == 'Canary' || !has(self.canary)")
        .message("spec.strategy.canary is allowed only when spec.strategy.type is Canary")
        .field_path(".canary"),
    validation = Rule::new("self.type != 'Canary' || has(self.canary)")
        .message("spec.strategy.canary is required when spec.strategy.type is Canary: set canary.weight or canary.steps")
        .field_path(".type"),
    validation = Rule::new("self.type != 'RollingUpdate' || !has(self.analysis)")
        .message("spec.strategy.analysis needs a BlueGreen or Canary strategy: a RollingUpdate has no candidate to analyse")
        .field_path(".analysis"),
    validation = Rule::new("!has(self.canary) || !has(self.canary.steps) || !self.canary.steps.exists(s, has(s.analysis)) || has(self.analysis)")
        .message("spec.strategy.canary.steps holds an analysis step: set the thresholds in spec.strategy.analysis")
        .field_path(".canary.steps"),
    validation = Rule::new("!has(self.blueGreen) || !has(self.blueGreen.prePromotionAnalysis) || has(self.analysis)")
        .message("spec.strategy.blueGreen.prePromotionAnalysis needs thresholds in spec.strategy.analysis")
        .field_path(".blueGreen.prePromotionAnalysis"),
    validation = Rule::new("!has(self.blueGreen) || !has(self.blueGreen.prePromotionAnalysis) || !has(self.blueGreen.previewService) || self.blueGreen.previewService")
        .message("spec.strategy.blueGreen.prePromotionAnalysis needs the preview Service: it measures the traffic sent there")
        .field_path(".blueGreen.previewService"),
    validation = Rule::new("self.type == 'Canary' || !has(self.analysis) || !has(self.analysis.relative)")
        .message("spec.strategy.analysis.relative needs a Canary strategy: only a canary has stable pods serving the same traffic to compare with")
        .field_path(".analysis.relative"),
    validation = Rule::new("self.type != 'RollingUpdate' || !has(self.abortOnDeadline) || !self.abortOnDeadline")
        .message("spec.strategy.abortOnDeadline needs a BlueGreen or Canary strategy: a RollingUpdate has no candidate to remove")
        .field_path(".abortOnDeadline"),
)]
pub struct StrategySpec {
    /// `RollingUpdate`, `BlueGreen` or `Canary`.
    #[serde(default, rename = "type")]
    pub type_: StrategyType,

    /// Options of the BlueGreen strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenSpec>,

    /// Options of the Canary strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,

    /// Promotion gate for manual steps: setting it to the candidate's version releases an
    /// indefinite canary pause or a blue-green switch that waits for approval. It names a
    /// version, so it never approves the next one by accident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub approved_version: Option<String>,

    /// Automatic analysis of the candidate against the stable version, from the serving pods'
    /// own metrics. Failures beyond `failureLimit` roll back automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSpec>,

    /// A rollout that makes no progress for this long is marked Degraded, and with
    /// `abortOnDeadline` its candidate is removed.
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 10, max = 86400))]
    pub progress_deadline_seconds: i32,

    /// At the progress deadline, remove the candidate and keep traffic on the stable version
    /// (`status.abortedVersion`). Default: true for Canary and BlueGreen; a RollingUpdate has
    /// no candidate to remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_on_deadline: Option<bool>,
}

impl StrategySpec {
    /// Whether the candidate is removed at the progress deadline.
    pub fn abort_on_deadline(&self) -> bool {
        self.abort_on_deadline.unwrap_or(self.type_ != StrategyType::RollingUpdate)
    }
}

impl Default for StrategySpec {
    fn default() -> Self {
        Self {
            type_: StrategyType::default(),
            blue_green: None,
            canary: None,
            approved_version: None,
            analysis: None,
            progress_deadline_seconds: default_progress_deadline(),
            abort_on_deadline: None,
        }
    }
}

fn default_progress_deadline() -> i32 {
    600
}

/// Rollout strategies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StrategyType {
    /// One Deployment; a new version replaces pods gradually.
    #[default]
    RollingUpdate,
    /// A second color is brought up in full, then the Service switches to it at once.
    BlueGreen,
    /// A share of the replicas, and so of the traffic, runs the new version first.
    Canary,
}

/// Options of the BlueGreen strategy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenSpec {
    /// Switch as soon as the new color is ready. When false, the switch waits until
    /// `spec.strategy.approvedVersion` names the new version.
    #[serde(default = "default_true")]
    pub auto_promote: bool,

    /// Create a `<name>-preview` Service that always selects the newest color.
    #[serde(default = "default_true")]
    pub preview_service: bool,

    /// Pods of the new color before promotion; defaults to the full replica count. Fewer
    /// pods save capacity while waiting for approval; the color is scaled to full before
    /// the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub preview_replicas: Option<i32>,

    /// How long the old color keeps running after the switch, for an instant switch back
    /// and for proxies that learn of the switch late.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_delay_seconds: i32,

    /// Analyse the new color behind the preview Service before the switch: it must pass this
    /// many windows in a row (thresholds from `spec.strategy.analysis`, on the traffic sent
    /// to the preview Service); failing more than `failureLimit` removes it without it ever
    /// serving production traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<AnalysisStep>,
}

impl Default for BlueGreenSpec {
    /// What a BlueGreen strategy without `blueGreen` options does.
    fn default() -> Self {
        Self {
            auto_promote: default_true(),
            preview_service: default_true(),
            preview_replicas: None,
            scale_down_delay_seconds: default_scale_down_delay(),
            pre_promotion_analysis: None,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_scale_down_delay() -> i32 {
    30
}

/// Options of the Canary strategy: either a manual `weight` or automatic `steps`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.weight) != has(self.steps)")
        .message("spec.strategy.canary needs exactly one of weight (manual) or steps (automatic)"),
)]
pub struct CanarySpec {
    /// Share of replicas, and so of traffic, on the candidate, in percent. 100 promotes the
    /// candidate; 0 sends all traffic back to the stable version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub weight: Option<i32>,

    /// Automatic progression: weights and pauses, walked in order; the candidate is
    /// promoted after the last step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 50))]
    pub steps: Option<Vec<CanaryStep>>,

    /// Canary pods that may run beyond `spec.replicas` so that a weight below 100 never
    /// takes the last stable pod away and a small weight on few replicas gets closer to what
    /// was asked (one replica at 10 %: one stable and one canary pod, instead of the only
    /// pod on the candidate). 0 never adds pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub max_surge: Option<i32>,
}

impl CanarySpec {
    /// Extra canary pods when `maxSurge` is not set.
    pub const DEFAULT_MAX_SURGE: i32 = 1;

    pub fn max_surge(&self) -> i32 {
        self.max_surge.unwrap_or(Self::DEFAULT_MAX_SURGE)
    }
}

impl Default for CanarySpec {
    /// The API server refuses a Canary strategy without canary options; an object stored
    /// before that rule existed behaves as a manual canary at weight 0.
    fn default() -> Self {
        Self { weight: Some(0), steps: None, max_surge: None }
    }
}

/// One step of a canary: set a weight, or pause.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.setWeight) ? 1 : 0) + (has(self.pause) ? 1 : 0) + (has(self.analysis) ? 1 : 0) == 1")
    .message("each entry of spec.strategy.canary.steps sets exactly one of setWeight, pause or analysis"))]
pub struct CanaryStep {
    /// Move to this weight, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub set_weight: Option<i32>,

    /// Wait: for `seconds`, or, without `seconds`, until `spec.strategy.approvedVersion`
    /// names the candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseStep>,

    /// Hold the weight until the candidate passes analysis windows in a row (thresholds from
    /// `spec.strategy.analysis`); failed windows count towards the rollback as always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStep>,
}

/// A canary step that waits for analysis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStep {
    /// Passing windows in a row, counted from the start of the step.
    #[serde(default = "default_successful_windows")]
    #[schemars(range(min = 1, max = 100))]
    pub successful_windows: i32,
}

fn default_successful_windows() -> i32 {
    1
}

/// A pause in a canary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseStep {
    /// How long to wait; absent means until approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub seconds: Option<i32>,
}

/// Candidate analysis from the serving pods' own metrics.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// Seconds between two measurements.
    #[serde(default = "default_analysis_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: i32,

    /// Failed measurements tolerated; one more rolls the candidate back.
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub failure_limit: i32,

    /// Measurements with fewer requests than this are inconclusive, neither pass nor fail.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub min_requests: i32,

    /// Highest share of failed requests (0 to 1) on the candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: Option<f64>,

    /// Highest 95th-percentile latency on the candidate, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("spec.strategy.analysis.maxLatencyP95Seconds must be greater than 0"))]
    pub max_latency_p95_seconds: Option<f64>,

    /// Highest 99th-percentile latency on the candidate, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("spec.strategy.analysis.maxLatencyP99Seconds must be greater than 0"))]
    pub max_latency_p99_seconds: Option<f64>,

    /// Highest data drift score reported by the candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0.0").message("spec.strategy.analysis.maxDriftScore must not be negative"))]
    pub max_drift_score: Option<f64>,

    /// Lowest accuracy (0 to 1) the candidate may report from ground-truth feedback. A window
    /// without feedback is not judged on accuracy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_accuracy: Option<f64>,

    /// Thresholds relative to the stable version, measured on the same window (Canary only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative: Option<RelativeThresholds>,

    /// Measure through a Prometheus server instead of scraping the serving pods directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,
}

/// A Prometheus server that scrapes the serving pods (the chart's PodMonitor, or any scrape
/// configuration that adds the same `namespace`, `modelship_name` and `track` labels).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// Base URL of the Prometheus HTTP API, such as `http://prometheus.monitoring.svc:9090`
    /// or `https://prometheus.example:9090`.
    #[x_kube(validation = Rule::new(
        "(self.startsWith('http://') && size(self) > 7) || (self.startsWith('https://') && size(self) > 8)"
    ).message("spec.strategy.analysis.prometheus.address must be an http:// or https:// URL with a host"))]
    pub address: String,

    /// A Secret in the ModelDeployment's namespace holding what the connection needs, each
    /// key optional: `token`, sent as `Authorization: Bearer`, and `ca.crt`, PEM certificates
    /// trusted for an https address instead of the public roots. The operator must be allowed
    /// to read it (the chart's `rbac.prometheusSecretNames`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,

    /// PromQL replacing the built-in query of a metric. `{{namespace}}`, `{{name}}` (the
    /// ModelDeployment), `{{version}}`, `{{track}}` and `{{window}}` (the analysis interval,
    /// such as `30s`) are filled in; each query must return one number.
    #[serde(default, skip_serializing_if = "PrometheusQueries::is_empty")]
    pub queries: PrometheusQueries,
}

/// Queries by metric; a metric without one uses the built-in query.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusQueries {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95_seconds: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_seconds: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_score: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<String>,
}

impl PrometheusQueries {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// The candidate compared with the stable pods serving the same traffic in the same window.
/// A window in which stable answered fewer than `minRequests` requests, or the first window
/// after the operator started, is inconclusive for these thresholds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RelativeThresholds {
    /// Highest error rate above stable's, as a difference of shares (0.01 = one point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate_increase: Option<f64>,

    /// Highest candidate p95 latency as a multiple of stable's (1.2 = at most 20 % slower).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1.0").message("spec.strategy.analysis.relative.maxLatencyP95Ratio must be at least 1"))]
    pub max_latency_p95_ratio: Option<f64>,

    /// Highest candidate p99 latency as a multiple of stable's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1.0").message("spec.strategy.analysis.relative.maxLatencyP99Ratio must be at least 1"))]
    pub max_latency_p99_ratio: Option<f64>,

    /// Highest accuracy below stable's (0 to 1), judged when both versions have feedback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_accuracy_drop: Option<f64>,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            interval_seconds: default_analysis_interval(),
            failure_limit: default_failure_limit(),
            min_requests: default_min_requests(),
            max_error_rate: None,
            max_latency_p95_seconds: None,
            max_latency_p99_seconds: None,
            max_drift_score: None,
            min_accuracy: None,
            relative: None,
            prometheus: None,
        }
    }
}

fn default_analysis_interval() -> i32 {
    30
}
fn default_failure_limit() -> i32 {
    2
}
fn default_min_requests() -> i32 {
    20
}

/// Observed state, written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Progressing, Paused, Healthy, Degraded or RolledBack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// The version that serves when no rollout is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_version: Option<String>,

    /// The version being rolled out, while a rollout is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_version: Option<String>,

    /// Where the stable version's model comes from, recorded when it became stable: rolling
    /// back by setting `spec.model.version` alone restores this file, not the candidate's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_model: Option<ModelSource>,

    /// A version that was rolled back automatically (failed analysis, or no progress by the
    /// deadline). It is not tried again until `spec.model.version` names another version or
    /// `spec.strategy.approvedVersion` is newly set to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_version: Option<String>,

    /// `spec.strategy.approvedVersion` when `abortedVersion` was rolled back: setting the
    /// approval to the aborted version retries it only when it did not name it already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_approval: Option<String>,

    /// When the rollout in progress started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_started_at: Option<String>,

    /// When every pod the rollout in progress asked for the candidate was first ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_ready_at: Option<String>,

    /// BlueGreen: the color the Service selects (`blue` or `green`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_color: Option<String>,

    /// Canary: the share of traffic the rollout asks for the candidate, in percent.
    #[serde(default)]
    pub canary_weight: i32,

    /// The share of ready pods serving the candidate behind the Service, in percent: what
    /// the candidate really gets (canary: its ready pods over all ready pods; blue-green: 0
    /// before the switch, 100 after).
    #[serde(default)]
    pub effective_weight: i32,

    /// Canary with steps: index of the step in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<i32>,

    /// When the current step began (RFC 3339), so timed pauses survive operator restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<String>,

    /// When the rollout last made progress (RFC 3339); the progress deadline counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_at: Option<String>,

    /// BlueGreen: when the previous color is scaled down (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_at: Option<String>,

    /// Pods across all tracks, as the `/scale` subresource reports them.
    #[serde(default)]
    pub replicas: i32,

    /// Ready pods across all tracks.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Label selector of the pods the autoscaler measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Each Deployment the operator runs for this model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<TrackStatus>,

    /// Available, Progressing, Degraded and Paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The latest analysis of the candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,

    /// Finished rollouts, newest first, at most ten.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RolloutRecord>,

    /// The last webhook notification this object produced. Written before it is sent, so
    /// an event is sent at most once, also across operator restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notification: Option<NotificationRecord>,
}

/// A notification claimed for sending.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    /// Sequence number, one more for each notification of this object; the payload's `id`.
    pub id: i64,
    pub event: NotificationEvent,
    /// When it was claimed (RFC 3339).
    pub at: String,
}

/// The model file of one version.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSource {
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_data: Option<String>,
}

impl ModelSpec {
    /// The model file this spec names.
    pub fn source(&self) -> ModelSource {
        ModelSource {
            uri: self.uri.clone(),
            sha256: self.sha256.clone(),
            reference_data: self.reference_data.clone(),
        }
    }
}

/// Lifecycle phase shown by `kubectl get md`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// A rollout or scale change is under way.
    Progressing,
    /// A rollout waits for time to pass or for approval.
    Paused,
    /// Every pod runs the desired version and is ready.
    Healthy,
    /// Something needs attention: see the Degraded condition.
    Degraded,
    /// The candidate failed its analysis, or made no progress by the deadline, and was
    /// removed; the stable version serves.
    RolledBack,
}

/// One Deployment run for this model.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackStatus {
    /// `main`, `stable`, `canary`, `blue` or `green`.
    pub name: String,
    /// Model version its pods run.
    pub version: String,
    /// Pods wanted.
    pub replicas: i32,
    /// Pods ready.
    pub ready_replicas: i32,
}

/// The latest analysis of the candidate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// The version analysed.
    pub version: String,
    /// Measurements taken.
    pub measurements: i32,
    /// Measurements that failed a threshold.
    pub failures: i32,
    /// Measurements without enough requests to judge.
    pub inconclusive: i32,
    /// Passing windows since the last failed one, or since the current canary step began.
    #[serde(default)]
    pub passed_in_a_row: i32,
    /// When the last measurement was taken (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_measured_at: Option<String>,
    /// Candidate error rate at the last measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Candidate 95th-percentile latency, in seconds, at the last measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95_seconds: Option<f64>,
    /// Candidate 99th-percentile latency, in seconds, at the last measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_seconds: Option<f64>,
    /// Highest drift score among candidate pods at the last measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_score: Option<f64>,
    /// Lowest accuracy among candidate pods at the last measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Candidate requests in the last measurement's window.
    #[serde(default)]
    pub requests: i64,
    /// The stable version on the same window, when relative thresholds are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<StableWindow>,
    /// Why the last measurement passed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The stable version measured on the candidate's window.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StableWindow {
    /// Stable requests in the window.
    pub requests: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
}

/// How a rollout ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    /// The candidate version.
    pub version: String,
    /// Promoted, RolledBack, Aborted, Superseded or Abandoned.
    pub outcome: RolloutOutcome,
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When every candidate pod the rollout asked for was first ready; absent when they
    /// never were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<String>,
    /// When it ended (RFC 3339).
    pub finished_at: String,
    /// Details, such as the failed analysis threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How a rollout ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutOutcome {
    /// The candidate became the stable version.
    Promoted,
    /// The candidate failed its analysis and was removed.
    RolledBack,
    /// The candidate made no progress within `progressDeadlineSeconds` and was removed.
    Aborted,
    /// A newer version replaced the candidate mid-rollout.
    Superseded,
    /// The user set `spec.model.version` back to the stable version.
    Abandoned,
}

fn conditions_schema(_: &mut schemars::generate::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {"type": "string", "format": "date-time"},
                "message": {"type": "string", "maxLength": 32768},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
                "reason": {"type": "string", "maxLength": 1024},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "type": {"type": "string", "maxLength": 316}
            }
        }
    })
}
