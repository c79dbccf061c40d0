//! Report: write the computed status when it changed, paced when it only describes pods, and
//! publish the plan's events. Remembers its own writes, so a reconcile never plans from a
//! cached object that predates them, and holds a new model's first status back for a moment
//! (with its events), so a model whose pods come up at once costs one status write.

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

/// Our status writes are remembered this long: far longer than any watch takes to deliver
/// them, and long enough to pace the updates of a rollout.
const FORGET_WRITES_AFTER: Duration = Duration::from_secs(600);

/// Longest event note sent; the API server refuses longer ones.
const MAX_NOTE_CHARS: usize = 1000;

/// Our last status write of one object.
struct StatusWrite {
    /// The resourceVersion of the object the write was computed from, when the write made a
    /// new one: a cache still holding that version has not seen the write yet.
    superseded: Option<String>,
    at: Instant,
}

impl StatusWrite {
    /// A write computed from the object at version `read` that left it at `written`.
    /// Resource versions are opaque: they are only compared for equality.
    fn new(read: Option<String>, written: Option<String>) -> Self {
        // A write that changed nothing keeps the version: nothing to wait for.
        let superseded = read.filter(|rv| written.as_ref() != Some(rv));
        StatusWrite { superseded, at: Instant::now() }
    }

    /// Whether a cached object at version `cached` predates this write: it is still the
    /// very version the write replaced.
    fn predates(&self, cached: Option<&str>) -> bool {
        self.superseded.as_deref().is_some_and(|rv| cached == Some(rv))
    }
}

/// A new model's first status, computed but not written yet, and the events that go with it.
struct Held {
    /// The object it was computed for: a model deleted and created again under the same name
    /// starts afresh.
    uid: Option<String>,
    status: ModelDeploymentStatus,
    events: Vec<PlannedEvent>,
    since: Instant,
}

pub struct Report {
    client: Client,
    recorder: Recorder,
    metrics: std::sync::Arc<Metrics>,
    written: Mutex<HashMap<ObjectRef<ModelDeployment>, StatusWrite>>,
    held: Mutex<HashMap<ObjectRef<ModelDeployment>, Held>>,
}

impl Report {
    pub fn new(client: Client, identity: String, metrics: std::sync::Arc<Metrics>) -> Self {
        let source = EventSource { controller: FIELD_MANAGER.into(), instance: Some(identity) };
        Report {
            recorder: Recorder::new(client.clone(), source),
            client,
            metrics,
            written: Mutex::default(),
            held: Mutex::default(),
        }
    }

    /// The first status held back for `md`, while none is stored: what a reconcile plans
    /// from, so that the held rollout state (its start time, its events) is not made anew.
    pub fn held_status(&self, md: &ModelDeployment) -> Option<ModelDeploymentStatus> {
        if md.status.is_some() {
            return None;
        }
        let held = self.held.lock().expect("lock");
        let entry = held.get(&ObjectRef::from_obj(md))?;
        (entry.uid == md.metadata.uid).then(|| entry.status.clone())
    }

    /// Hold `next` back as `md`'s first status, with `events`, while
    /// [`status::first_status_wait`] allows and nothing `urgent` (a refusal to report, a
    /// notification claimed in it) needs it stored: returns how long it may still wait.
    /// `None`: write it now, with [`Report::take_held_events`].
    pub fn hold_first(
        &self,
        md: &ModelDeployment,
        next: &ModelDeploymentStatus,
        events: &[PlannedEvent],
        grace: Duration,
        urgent: bool,
    ) -> Option<Duration> {
        if md.status.is_some() || urgent {
            return None;
        }
        let key = ObjectRef::from_obj(md);
        let mut held = self.held.lock().expect("lock");
        // A model deleted while its status was held leaves an entry nobody asks for again.
        held.retain(|_, entry| entry.since.elapsed() < grace * 4);
        let same = held.get(&key).is_some_and(|entry| entry.uid == md.metadata.uid);
        let since = if same { held[&key].since } else { Instant::now() };
        let wait = status::first_status_wait(next, since.elapsed(), grace)?;
        let mut entry = match same {
            true => held.remove(&key).expect("present"),
            false => {
                Held { uid: md.metadata.uid.clone(), status: next.clone(), events: vec![], since }
            }
        };
        entry.status = next.clone();
        entry.events.extend(events.iter().cloned());
        held.insert(key, entry);
        debug!(?wait, "first status held back");
        Some(wait)
    }

    /// The events held back with `md`'s first status, to publish now that it is written.
    pub fn take_held_events(&self, md: &ModelDeployment) -> Vec<PlannedEvent> {
        let entry = self.held.lock().expect("lock").remove(&ObjectRef::from_obj(md));
        entry.filter(|e| e.uid == md.metadata.uid).map(|e| e.events).unwrap_or_default()
    }

    /// Whether the cached `md` predates our last status write of it.
    pub fn is_stale(&self, md: &ModelDeployment) -> bool {
        let written = self.written.lock().expect("lock");
        let write = written.get(&ObjectRef::from_obj(md));
        write.is_some_and(|w| w.predates(md.resource_version().as_deref()))
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
        let write = StatusWrite::new(md.resource_version(), written.resource_version());
        let mut writes = self.written.lock().expect("lock");
        // Deleted models leave their entries; any cache has long caught up with these.
        writes.retain(|_, w| w.at.elapsed() < FORGET_WRITES_AFTER);
        writes.insert(key, write);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_is_stale_only_while_it_holds_the_version_our_write_replaced() {
        let write = StatusWrite::new(Some("a7".into()), Some("b2".into()));
        assert!(write.predates(Some("a7")), "the cache has not seen the write");
        assert!(!write.predates(Some("b2")), "the cache holds the write");
        assert!(!write.predates(Some("c9")), "any other version is not the one replaced");
        assert!(!write.predates(None));
        let unchanged = StatusWrite::new(Some("a7".into()), Some("a7".into()));
        assert!(!unchanged.predates(Some("a7")), "a write that changed nothing waits for nothing");
        assert!(!StatusWrite::new(None, Some("b2".into())).predates(None));
    }
}
