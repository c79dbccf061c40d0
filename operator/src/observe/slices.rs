//! Which EndpointSlices belong to which Service, kept beside the slice cache from the same
//! watch events: a reconcile looks its model's slices up by Service instead of scanning every
//! slice the operator watches, so its cost does not grow with the number of models.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::watcher::Event;

use super::SERVICE_NAME_LABEL;

/// A namespace and a name in it.
type Key = (String, String);

/// Slice names by Service, and each slice's Service to move or drop it.
#[derive(Debug, Default)]
struct Index {
    by_service: HashMap<Key, BTreeSet<String>>,
    service_of: HashMap<Key, Key>,
}

impl Index {
    fn insert(&mut self, slice: &EndpointSlice) {
        self.remove(slice);
        let namespace = slice.namespace().unwrap_or_default();
        let Some(service) = slice.labels().get(SERVICE_NAME_LABEL) else {
            return;
        };
        let (name, service) = ((namespace.clone(), slice.name_any()), (namespace, service.clone()));
        self.by_service.entry(service.clone()).or_default().insert(name.1.clone());
        self.service_of.insert(name, service);
    }

    fn remove(&mut self, slice: &EndpointSlice) {
        let name = (slice.namespace().unwrap_or_default(), slice.name_any());
        let Some(service) = self.service_of.remove(&name) else {
            return;
        };
        if let Some(names) = self.by_service.get_mut(&service) {
            names.remove(&name.1);
            if names.is_empty() {
                self.by_service.remove(&service);
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    live: Index,
    /// A relist in progress: replaces `live` when it completes, as the cache does.
    relisting: Option<Index>,
}

/// The index, shared by the watch that feeds it and the reconciles that read it.
#[derive(Clone, Debug, Default)]
pub struct SliceIndex(Arc<RwLock<State>>);

impl SliceIndex {
    /// Follow one event of the slice watch.
    pub fn observe(&self, event: &Event<EndpointSlice>) {
        let mut state = self.0.write().expect("lock");
        match event {
            Event::Apply(slice) => state.live.insert(slice),
            Event::Delete(slice) => state.live.remove(slice),
            Event::Init => state.relisting = Some(Index::default()),
            Event::InitApply(slice) => state.relisting.get_or_insert_default().insert(slice),
            Event::InitDone => {
                if let Some(fresh) = state.relisting.take() {
                    state.live = fresh;
                }
            }
        }
    }

    /// The names of the slices of `service` in `namespace`.
    pub fn of_service(&self, namespace: &str, service: &str) -> Vec<String> {
        let state = self.0.read().expect("lock");
        let key = (namespace.to_string(), service.to_string());
        state
            .live
            .by_service
            .get(&key)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(namespace: &str, name: &str, service: Option<&str>) -> EndpointSlice {
        let mut slice = EndpointSlice::default();
        slice.metadata.namespace = Some(namespace.into());
        slice.metadata.name = Some(name.into());
        slice.metadata.labels =
            service.map(|s| [(SERVICE_NAME_LABEL.to_string(), s.to_string())].into());
        slice
    }

    #[test]
    fn slices_are_found_by_their_service_and_namespace() {
        let index = SliceIndex::default();
        index.observe(&Event::Apply(slice("ml", "m-a", Some("m"))));
        index.observe(&Event::Apply(slice("ml", "m-b", Some("m"))));
        index.observe(&Event::Apply(slice("ml", "p-a", Some("m-preview"))));
        index.observe(&Event::Apply(slice("other", "m-c", Some("m"))));
        index.observe(&Event::Apply(slice("ml", "loose", None)));
        assert_eq!(index.of_service("ml", "m"), ["m-a", "m-b"]);
        assert_eq!(index.of_service("ml", "m-preview"), ["p-a"]);
        assert_eq!(index.of_service("other", "m"), ["m-c"]);
        assert!(index.of_service("ml", "n").is_empty());
    }

    #[test]
    fn a_slice_that_changes_service_or_goes_is_moved_or_dropped() {
        let index = SliceIndex::default();
        index.observe(&Event::Apply(slice("ml", "m-a", Some("m"))));
        index.observe(&Event::Apply(slice("ml", "m-a", Some("n"))));
        assert!(index.of_service("ml", "m").is_empty());
        assert_eq!(index.of_service("ml", "n"), ["m-a"]);
        index.observe(&Event::Delete(slice("ml", "m-a", Some("n"))));
        assert!(index.of_service("ml", "n").is_empty());
        index.observe(&Event::Delete(slice("ml", "never-seen", Some("n"))));
    }

    #[test]
    fn a_relist_replaces_the_index_when_it_completes() {
        let index = SliceIndex::default();
        index.observe(&Event::Apply(slice("ml", "gone", Some("m"))));
        index.observe(&Event::Init);
        index.observe(&Event::InitApply(slice("ml", "kept", Some("m"))));
        assert_eq!(index.of_service("ml", "m"), ["gone"], "the old index serves until done");
        index.observe(&Event::InitDone);
        assert_eq!(index.of_service("ml", "m"), ["kept"]);
    }
}
