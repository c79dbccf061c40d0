//! Turn the children found in the watch caches into the planner's `Observed` view.
//! Pure: the controller passes in what the stores hold.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use modelship_crds::labels;

use crate::analysis::ScrapeTarget;
use crate::plan::{Endpoint, Observed, Track, TrackState};

/// The label EndpointSlices carry with their Service's name.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The model version a Deployment's pod template carries (empty when unlabelled).
pub fn template_version(deployment: &Deployment) -> &str {
    deployment
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(labels::VERSION))
        .map_or("", String::as_str)
}

/// What one track's Deployment says.
pub fn track_state(deployment: &Deployment) -> TrackState {
    let spec = Some(&deployment.spec);
    let status = deployment.status.clone().unwrap_or_default();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let version = template_version(deployment).to_string();
    let generation = deployment.metadata.generation.unwrap_or(0);
    // Caught up with the latest spec, and every pod comes from the latest template.
    let rolled_out = status.observed_generation.unwrap_or(0) >= generation
        && status.updated_replicas.unwrap_or(0) == replicas
        && status.replicas.unwrap_or(0) == replicas;
    TrackState { version, replicas, ready: status.ready_replicas.unwrap_or(0), rolled_out }
}

/// Which track a Service selects: `Some(track)` for one, `None` for all of the model's.
pub fn selected_track(service: &Service) -> Option<Track> {
    service.spec.as_ref()?.selector.as_ref()?.get(labels::TRACK).and_then(|t| Track::parse(t))
}

/// Endpoints of a Service from its EndpointSlices.
pub fn endpoints<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for slice in slices {
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(pod) = endpoint.target_ref.as_ref().and_then(|r| r.name.clone()) else {
                continue;
            };
            // A missing `ready` means ready, per the EndpointSlice API.
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            out.push(Endpoint { pod, ready });
        }
    }
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    out
}

/// Ready pods of `deployment_name` behind a Service, with the address to scrape.
pub fn scrape_targets<'a>(
    namespace: &str,
    deployment_name: &str,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Vec<ScrapeTarget> {
    let prefix = format!("{deployment_name}-");
    let mut out = Vec::new();
    for slice in slices {
        let port = slice
            .ports
            .as_ref()
            .and_then(|ports| {
                ports.iter().find(|p| p.name.as_deref() == Some("http")).or(ports.first())
            })
            .and_then(|p| p.port);
        let Some(port) = port else { continue };
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let pod = endpoint.target_ref.as_ref().and_then(|r| r.name.clone());
            if let (true, Some(pod), Some(ip)) = (ready, pod, endpoint.addresses.first())
                && pod.starts_with(&prefix)
            {
                out.push(ScrapeTarget {
                    namespace: namespace.to_string(),
                    pod,
                    ip: ip.clone(),
                    port,
                });
            }
        }
    }
    out
}

/// Assemble the planner's view.
pub fn observed(
    deployments: impl IntoIterator<Item = (Track, Deployment)>,
    service: Option<&Service>,
    main_service_slices: &[&EndpointSlice],
) -> Observed {
    let tracks: BTreeMap<Track, TrackState> =
        deployments.into_iter().map(|(track, d)| (track, track_state(&d))).collect();
    Observed {
        tracks,
        service_track: service.map(selected_track),
        endpoints: endpoints(main_service_slices.iter().copied()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::{ObjectReference, PodTemplateSpec, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(generation: i64, replicas: i32, status: DeploymentStatus) -> Deployment {
        Deployment {
            metadata: ObjectMeta { generation: Some(generation), ..ObjectMeta::default() },
            spec: DeploymentSpec {
                replicas: Some(replicas),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([(labels::VERSION.to_string(), "2".to_string())].into()),
                        ..ObjectMeta::default()
                    }),
                    spec: None,
                },
                ..DeploymentSpec::default()
            },
            status: Some(status),
        }
    }

    #[test]
    fn rolled_out_needs_the_latest_generation_and_no_old_pods() {
        let done = DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(3),
            updated_replicas: Some(3),
            ready_replicas: Some(3),
            ..DeploymentStatus::default()
        };
        let state = track_state(&deployment(3, 3, done.clone()));
        assert!(state.rolled_out);
        assert!(state.settled_at("2", 3));
        assert!(!state.settled_at("1", 3));
        assert!(!track_state(&deployment(4, 3, done.clone())).rolled_out, "stale generation");
        let surging = DeploymentStatus { replicas: Some(4), ..done };
        assert!(!track_state(&deployment(3, 3, surging)).rolled_out, "old pods remain");
    }

    #[test]
    fn reads_service_selectors() {
        let service = |selector: &[(&str, &str)]| Service {
            spec: Some(ServiceSpec {
                selector: Some(
                    selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        assert_eq!(selected_track(&service(&[(labels::NAME, "m")])), None);
        assert_eq!(
            selected_track(&service(&[(labels::NAME, "m"), (labels::TRACK, "green")])),
            Some(Track::Green)
        );
    }

    #[test]
    fn endpoints_and_scrape_targets() {
        let endpoint = |pod: &str, ip: &str, ready: Option<bool>| SliceEndpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions { ready, ..EndpointConditions::default() }),
            target_ref: Some(ObjectReference {
                name: Some(pod.to_string()),
                ..ObjectReference::default()
            }),
            ..SliceEndpoint::default()
        };
        let slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Some(vec![
                endpoint("m-canary-abc-1", "192.0.2.1", Some(true)),
                endpoint("m-stable-def-1", "192.0.2.2", None),
                endpoint("m-canary-abc-2", "192.0.2.3", Some(false)),
            ]),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                ..EndpointPort::default()
            }]),
            metadata: ObjectMeta::default(),
        };
        let seen = endpoints([&slice]);
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().find(|e| e.pod == "m-stable-def-1").unwrap().ready);
        let targets = scrape_targets("ns", "m-canary", [&slice]);
        assert_eq!(targets.len(), 1);
        assert_eq!(
            (targets[0].pod.as_str(), targets[0].ip.as_str(), targets[0].port),
            ("m-canary-abc-1", "192.0.2.1", 8080)
        );
    }
}
