//! The watches: a trimmed reflector per child kind, retried quickly after an outage, each
//! event feeding the liveness check.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::metrics::Metrics;

/// The annotation `kubectl apply` leaves: a full copy of the object, never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An API over every namespace, or over the one watched.
pub fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A reflector over `K`: the store to read, and the stream of changed objects to trigger on.
/// `follow` sees every event the store applies, to keep an index beside it.
pub fn cached<K>(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
    metrics: &Arc<Metrics>,
    follow: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> (Store<K>, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api::<K>(client, namespace), config)
        .backoff(WatchBackoff::default())
        // Managed fields are most of an object's size and never read here.
        .modify(|object: &mut K| {
            object.meta_mut().managed_fields = None;
            if let Some(annotations) = object.meta_mut().annotations.as_mut() {
                annotations.remove(LAST_APPLIED);
            }
        })
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                follow(event);
            }
        })
        .inspect(watch_health::<K>(metrics))
        .touched_objects();
    (reader, stream)
}

/// Watch retries double from 0.5 s to at most 5 s, and start over after a success: a watch
/// resumes within seconds of the API server coming back (kube's default waits up to 30 s),
/// at the cost of one attempt per watch every 5 s during an outage.
#[derive(Clone, Copy)]
pub struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(wait)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Feeds the liveness check: every watch event or error of `K`'s watch.
pub fn watch_health<K: Resource<DynamicType = ()>>(
    metrics: &Arc<Metrics>,
) -> impl Fn(&Result<watcher::Event<K>, watcher::Error>) + Send + 'static {
    let metrics = metrics.clone();
    move |event| match event {
        Ok(_) => metrics.watch_ok(),
        Err(error) => {
            warn!(%error, kind = %K::kind(&()), "watch failed");
            metrics.watch_failed(Timestamp::now().as_second());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_retries_double_up_to_five_seconds_and_start_over() {
        use kube::runtime::utils::Backoff;
        let mut backoff = WatchBackoff::default();
        let waits: Vec<u64> = backoff.by_ref().take(6).map(|d| d.as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(500)));
    }
}
