//! The main Service and the preview Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use modelship_crds::ModelDeployment;

use super::{HTTP_PORT_NAME, child_meta, preview_service_name, service_selector, with_hash};
use crate::plan::Track;

/// The main Service (`preview == false`) or the preview Service, selecting `track` (every
/// track when `None`), of the type, port and annotations `spec.service` asks for (the
/// preview Service's own type and annotations when it has them).
pub fn service(md: &ModelDeployment, track: Option<Track>, preview: bool) -> Service {
    let md_name = md.name_any();
    let exposure = md.spec.exposure();
    let name = if preview { preview_service_name(&md_name) } else { md_name.clone() };
    let role = if preview { "preview" } else { "main" };
    let (type_, annotations) = if preview {
        (exposure.preview_type(), exposure.preview_annotations().clone())
    } else {
        (exposure.type_, exposure.annotations.clone())
    };
    let mut metadata = child_meta(md, name, &[("modelship.io/service", role)]);
    if !annotations.is_empty() {
        metadata.annotations = Some(annotations);
    }
    with_hash(Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(type_.as_str().into()),
            selector: Some(service_selector(&md_name, track)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.into()),
                port: exposure.port(),
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}
