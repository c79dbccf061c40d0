//! Observe without a cluster: caches filled by hand, as the watches would fill them.

use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::core::v1::{ObjectReference, PodTemplateSpec, ServiceSpec};
use k8s_openapi::api::discovery::v1::{
    Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use modelship_crds::ModelDeploymentSpec;

use super::*;

const UID: &str = "6f1c1f43-0000-4000-8000-000000000001";

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

fn service(selector: &[(&str, &str)]) -> Service {
    Service {
        spec: Some(ServiceSpec {
            selector: Some(selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn endpoint(pod: &str, ip: &str, ready: Option<bool>) -> SliceEndpoint {
    SliceEndpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions { ready, ..EndpointConditions::default() }),
        target_ref: Some(ObjectReference {
            name: Some(pod.to_string()),
            ..ObjectReference::default()
        }),
        ..SliceEndpoint::default()
    }
}

fn slice(endpoints: Vec<SliceEndpoint>) -> EndpointSlice {
    EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: Some(endpoints),
        ports: Some(vec![EndpointPort {
            name: Some(HTTP_PORT_NAME.into()),
            port: Some(8080),
            ..EndpointPort::default()
        }]),
        metadata: ObjectMeta::default(),
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
    assert_eq!(selected_track(&service(&[(labels::NAME, "m")])), None);
    assert_eq!(
        selected_track(&service(&[(labels::NAME, "m"), (labels::TRACK, "green")])),
        Some(Track::Green)
    );
}

#[test]
fn endpoints_and_scrape_targets() {
    let slice = slice(vec![
        endpoint("m-canary-abc-1", "192.0.2.1", Some(true)),
        endpoint("m-stable-def-1", "192.0.2.2", None),
        endpoint("m-canary-abc-2", "192.0.2.3", Some(false)),
    ]);
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

fn model() -> ModelDeployment {
    let spec: ModelDeploymentSpec =
        serde_json::from_value(serde_json::json!({"model": {"version": "2", "uri": "file:///m"}}))
            .expect("a minimal spec");
    let mut md = ModelDeployment::new("m", spec);
    md.metadata.namespace = Some("ml".into());
    md.metadata.uid = Some(UID.into());
    md
}

/// Place `object` at `name` in namespace `ml`, owned by the model when `uid` is its uid.
fn cached<K: Resource<DynamicType = ()> + Clone>(
    writer: &mut Writer<K>,
    mut object: K,
    name: &str,
    uid: Option<&str>,
) {
    let meta = object.meta_mut();
    meta.name = Some(name.into());
    meta.namespace = Some("ml".into());
    meta.owner_references = uid.map(|uid| {
        vec![OwnerReference {
            uid: uid.into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]
    });
    writer.apply_watcher_event(&watcher::Event::Apply(object));
}

#[test]
fn a_snapshot_holds_only_what_the_model_owns() {
    let (deployments, mut deployment_writer) = reflector::store();
    let (services, mut service_writer) = reflector::store();
    let (hpas, mut hpa_writer) = reflector::store();
    let (pdbs, mut pdb_writer) = reflector::store();
    let (slices, mut slice_writer) = reflector::store();
    let ready = DeploymentStatus {
        replicas: Some(2),
        updated_replicas: Some(2),
        ready_replicas: Some(2),
        ..DeploymentStatus::default()
    };
    cached(&mut deployment_writer, deployment(1, 2, ready.clone()), "m-stable", Some(UID));
    // Same name pattern, another owner (a deleted and recreated model): not ours.
    cached(&mut deployment_writer, deployment(1, 2, ready), "m-canary", Some("other"));
    cached(&mut service_writer, service(&[(labels::NAME, "m")]), "m", Some(UID));
    cached(&mut service_writer, service(&[(labels::NAME, "m")]), "m-preview", None);
    cached(&mut hpa_writer, HorizontalPodAutoscaler::default(), "m", Some(UID));
    cached(&mut pdb_writer, PodDisruptionBudget::default(), "m", Some(UID));
    let mut main = slice(vec![endpoint("m-stable-abc-1", "192.0.2.1", Some(true))]);
    main.metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), "m".to_string())].into());
    cached(&mut slice_writer, main.clone(), "m-x1", None);
    let mut elsewhere = main;
    elsewhere.metadata.namespace = Some("other".into());
    elsewhere.metadata.name = Some("m-x2".into());
    slice_writer.apply_watcher_event(&watcher::Event::Apply(elsewhere));
    let slice_index = SliceIndex::default();
    for slice in slices.state() {
        slice_index.observe(&watcher::Event::Apply((*slice).clone()));
    }

    let stores = Stores { deployments, services, hpas, pdbs, slices, slice_index };
    let seen = snapshot(&stores, &model(), "ml");
    assert_eq!(seen.running.deployments.keys().copied().collect::<Vec<_>>(), [Track::Stable]);
    assert!(seen.running.service.is_some());
    assert!(seen.running.preview.is_none(), "a preview Service the model does not own");
    assert!(seen.running.hpa.is_some());
    assert!(seen.running.pdb.is_some());
    assert_eq!(seen.slices.len(), 1, "only the main Service's slices in the namespace");
    assert_eq!(seen.observed.tracks[&Track::Stable].ready, 2);
    assert_eq!(seen.observed.service_track, Some(None));
    assert_eq!(seen.observed.endpoints, [Endpoint { pod: "m-stable-abc-1".into(), ready: true }]);
    let targets = seen.scrape_targets("m", "ml", Track::Stable);
    assert_eq!(targets.iter().map(|t| t.ip.as_str()).collect::<Vec<_>>(), ["192.0.2.1"]);
}
