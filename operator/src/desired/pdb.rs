//! The PodDisruptionBudget: one per ModelDeployment, over every pod of the model whatever
//! its track, so a node drain (an eviction) takes at most `maxUnavailable` pods at a time.
//!
//! It is the same in every strategy and phase. Its selector is the model's name label, which
//! every track's pods carry, so a canary, a surge pod or a second color counts in the budget;
//! evictions are refused while they would leave fewer than all pods minus `maxUnavailable`
//! ready. Pods that are not ready (a broken candidate) may always be evicted, so they never
//! block a drain. The budget only limits evictions: the operator's own scaling and the
//! Deployments' rolling updates are not evictions and never wait for it.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use modelship_crds::ModelDeployment;

use super::{child_meta, service_selector, with_hash};

/// `unhealthyPodEvictionPolicy`: pods that are not ready can always be evicted.
const ALWAYS_ALLOW: &str = "AlwaysAllow";

/// The budget `spec.disruptionBudget` asks for; `None` when it is turned off.
pub fn pdb(md: &ModelDeployment) -> Option<PodDisruptionBudget> {
    let budget = md.spec.disruption_budget();
    if !budget.enabled {
        return None;
    }
    let name = md.name_any();
    Some(with_hash(PodDisruptionBudget {
        metadata: child_meta(md, name.clone(), &[]),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(budget.max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(service_selector(&name, None)),
                match_expressions: None,
            }),
            unhealthy_pod_eviction_policy: Some(ALWAYS_ALLOW.into()),
            min_available: None,
        }),
        status: None,
    }))
}
