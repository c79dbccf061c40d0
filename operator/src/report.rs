//! Report: write the computed status when it changed, paced when it only describes pods, and
//! publish the plan's events. Remembers its own writes, so a reconcile never plans from a
//! cached object that predates them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::api::Patch;
use kube::runtime::events::{Event, EventType, Recorder, Reporter as EventSource};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use modelship_crds::{ModelDeployment, ModelDeploymentStatus};
use tracing::{debug, info, warn};

use crate::apply::{FIELD_MANAGER, apply_params};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::plan::PlannedEvent;
use crate::status;

/// Longest event note sent; the API server refuses longer ones.
const MAX_NOTE_CHARS: usize = 1000;

/// Our last status write of one object.
struct StatusWrite {
    /// The resourceVersion of the object the write was computed from, when the write made a
    /// new one: a cache still holding that version has not seen the write yet.
    superseded: Option<String>,
    at: Instant,
}

pub struct Report {
    client: Client,
    recorder: Recorder,
    metrics: std::sync::Arc<Metrics>,
    written: Mutex<HashMap<ObjectRef<ModelDeployment>, StatusWrite>>,
}

impl Report {
    pub fn new(client: Client, identity: String, metrics: std::sync::Arc<Metrics>) -> Self {
        let source = EventSource { controller: FIELD_MANAGER.into(), instance: Some(identity) };
        Report {
            recorder: Recorder::new(client.clone(), source),
            client,
            metrics,
            written: Mutex::default(),
        }
    }

    /// Whether the cached `md` predates our last status write of it. Resource versions are
    /// opaque, so they are only compared for equality: the cache is stale while it still
    /// holds the very version the write replaced.
    pub fn is_stale(&self, md: &ModelDeployment) -> bool {
        let written = self.written.lock().expect("lock");
        let superseded = written.get(&ObjectRef::from_obj(md)).and_then(|w| w.superseded.clone());
        superseded.is_some_and(|rv| md.resource_version().as_deref() == Some(rv.as_str()))
    }

    /// Write `next` when it differs from `previous`. A change that only describes the pods
    /// waits for the pacing interval, unless events come with it (they are keyed on the stored
    /// status, so it must be written now or they would repeat): then the wait is returned.
    pub async fn status(
        &self,
        md: &ModelDeployment,
        previous: &ModelDeploymentStatus,
        next: &ModelDeploymentStatus,
        with_events: bool,
    ) -> Result<Option<Duration>> {
        if !status::changed(previous, next) {
            return Ok(None);
        }
        let key = ObjectRef::from_obj(md);
        let since = self.written.lock().expect("lock").get(&key).map(|w| w.at.elapsed());
        if let Some(wait) = status::hold_back(previous, next, since.filter(|_| !with_events)) {
            return Ok(Some(wait));
        }
        let namespace = md.namespace().ok_or(Error::MissingField(".metadata.namespace"))?;
        let api: Api<ModelDeployment> = Api::namespaced(self.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": ModelDeployment::api_version(&()),
            "kind": ModelDeployment::kind(&()),
            "status": next,
        });
        self.metrics.count_write("status", "apply");
        let written =
            api.patch_status(&md.name_any(), &apply_params(), &Patch::Apply(&patch)).await?;
        let read = md.resource_version();
        let superseded = read.filter(|rv| written.resource_version().as_ref() != Some(rv));
        let write = StatusWrite { superseded, at: Instant::now() };
        self.written.lock().expect("lock").insert(key, write);
        debug!(phase = ?next.phase, "status written");
        Ok(None)
    }

    /// Publish the plan's events. They are informative: a failure to publish one is logged
    /// and never fails the reconcile.
    pub async fn events(&self, md: &ModelDeployment, events: &[PlannedEvent]) {
        let reference = md.object_ref(&());
        for event in events {
            info!(reason = %event.reason, note = %event.note, "rollout event");
            let published = self
                .recorder
                .publish(
                    &Event {
                        type_: if event.warning { EventType::Warning } else { EventType::Normal },
                        reason: event.reason.to_string(),
                        note: Some(event.note.chars().take(MAX_NOTE_CHARS).collect()),
                        action: "Reconcile".into(),
                        secondary: None,
                    },
                    &reference,
                )
                .await;
            if let Err(error) = published {
                warn!(%error, reason = %event.reason, "could not publish event");
            }
        }
    }
}
