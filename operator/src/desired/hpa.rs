//! The HorizontalPodAutoscaler.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use kube::{Resource, ResourceExt};
use modelship_crds::ModelDeployment;

use super::{child_meta, with_hash};

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
    if let Some(percent) = autoscaling.cpu_target() {
        metrics.push(utilization("cpu", percent));
    }
    if let Some(percent) = autoscaling.target_memory_utilization_percentage {
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
