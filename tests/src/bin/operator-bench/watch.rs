//! The bench's own watches: the first time each milestone (a child exists, a Deployment is
//! settled, a ModelDeployment is Healthy, a Service selects a color, pods are Ready) was seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use modelship_crds::{ModelDeployment, Phase, labels};
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Res;

/// The first time each (group, name) milestone was seen.
#[derive(Default)]
pub struct Timeline {
    marks: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

impl Timeline {
    pub fn mark(&self, group: &str, name: &str, when: Instant) {
        let mut marks = self.marks.lock().expect("timeline lock");
        marks.entry(group.to_string()).or_default().entry(name.to_string()).or_insert(when);
    }

    pub fn get(&self, group: &str, name: &str) -> Option<Instant> {
        self.marks.lock().expect("timeline lock").get(group)?.get(name).copied()
    }

    pub fn times(&self, group: &str, prefix: &str) -> Vec<Instant> {
        let marks = self.marks.lock().expect("timeline lock");
        marks
            .get(group)
            .map(|names| {
                names.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, t)| *t).collect()
            })
            .unwrap_or_default()
    }

    pub fn count(&self, group: &str, prefix: &str) -> usize {
        self.times(group, prefix).len()
    }

    pub fn latest(&self, group: &str, prefix: &str) -> Option<Instant> {
        self.times(group, prefix).into_iter().max()
    }

    pub fn earliest(&self, group: &str, prefix: &str) -> Option<Instant> {
        self.times(group, prefix).into_iter().min()
    }
}

pub fn settled_group(version: &str, replicas: i32) -> String {
    format!("dep-settled:{version}:{replicas}")
}

/// Deployments: exists; settled at (version, replicas) the way the operator judges a track
/// (caught up with its spec, every pod from the latest template, all of them ready).
fn on_deployment(d: &Deployment, deleted: bool, now: Instant, timeline: &Timeline) {
    if deleted {
        return;
    }
    let name = d.name_any();
    timeline.mark("dep-exists", &name, now);
    let replicas = d.spec.replicas.unwrap_or(1);
    let Some(status) = d.status.as_ref() else { return };
    let version = modelship_operator::observe::template_version(d);
    let rolled_out = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
        && status.updated_replicas.unwrap_or(0) == replicas
        && status.replicas.unwrap_or(0) == replicas;
    if rolled_out && status.ready_replicas.unwrap_or(0) >= replicas {
        timeline.mark(&settled_group(version, replicas), &name, now);
    }
}

fn on_service(s: &Service, deleted: bool, now: Instant, timeline: &Timeline) {
    if deleted {
        return;
    }
    let name = s.name_any();
    timeline.mark("svc-exists", &name, now);
    let selector = s.spec.as_ref().and_then(|spec| spec.selector.as_ref());
    let track = selector.and_then(|sel| sel.get(labels::TRACK)).map_or("all", String::as_str);
    timeline.mark(&format!("svc-selects:{track}"), &name, now);
}

fn on_hpa(h: &HorizontalPodAutoscaler, deleted: bool, now: Instant, timeline: &Timeline) {
    if !deleted {
        timeline.mark("hpa-exists", &h.name_any(), now);
    }
}

fn on_model(md: &ModelDeployment, deleted: bool, now: Instant, timeline: &Timeline) {
    if deleted {
        return;
    }
    let name = md.name_any();
    timeline.mark("md-seen", &name, now);
    if let Some(status) = md.status.as_ref()
        && status.phase == Some(Phase::Healthy)
        && status.observed_generation == md.metadata.generation
        && status.ready_replicas >= md.spec.replicas
    {
        timeline.mark("md-healthy", &name, now);
    }
}

/// Pods of blue-green tracks: marks `pods-ready:{track}:{version}` for a ModelDeployment once
/// `replicas` of its pods on that track and version are Ready.
pub fn pod_tracker(replicas: i32) -> impl FnMut(&Pod, bool, Instant, &Timeline) + Send + 'static {
    // pod name -> (model, track, version, ready)
    let mut pods: HashMap<String, (String, String, String, bool)> = HashMap::new();
    move |pod: &Pod, deleted: bool, now: Instant, timeline: &Timeline| {
        let name = pod.name_any();
        if deleted {
            pods.remove(&name);
            return;
        }
        let label = |key: &str| pod.labels().get(key).cloned().unwrap_or_default();
        let ready = pod.metadata.deletion_timestamp.is_none()
            && pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let key = (label(labels::NAME), label(labels::TRACK), label(labels::VERSION));
        pods.insert(name, (key.0.clone(), key.1.clone(), key.2.clone(), ready));
        if ready {
            let count = pods
                .values()
                .filter(|(m, t, v, r)| *r && (m, t, v) == (&key.0, &key.1, &key.2))
                .count();
            if count >= replicas as usize {
                timeline.mark(&format!("pods-ready:{}:{}", key.1, key.2), &key.0, now);
            }
        }
    }
}

/// Follows `api` and feeds every object to `on_event`; the receiver fires once the initial
/// list is complete.
pub fn spawn_watch<K, F>(
    api: Api<K>,
    config: watcher::Config,
    timeline: Arc<Timeline>,
    mut on_event: F,
) -> (JoinHandle<()>, oneshot::Receiver<()>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: FnMut(&K, bool, Instant, &Timeline) + Send + 'static,
{
    let (ready_tx, ready_rx) = oneshot::channel();
    let handle = tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
        while let Some(event) = events.next().await {
            let now = Instant::now();
            match event {
                Ok(Event::Apply(object) | Event::InitApply(object)) => {
                    on_event(&object, false, now, &timeline);
                }
                Ok(Event::Delete(object)) => on_event(&object, true, now, &timeline),
                Ok(Event::InitDone) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Init) => {}
                Err(error) => eprintln!("watch error: {error}"),
            }
        }
    });
    (handle, ready_rx)
}

pub struct Watches {
    handles: Vec<JoinHandle<()>>,
}

impl Watches {
    pub fn stop(self) {
        for handle in self.handles {
            handle.abort();
        }
    }
}

pub async fn all_ready(receivers: Vec<oneshot::Receiver<()>>) -> Res<()> {
    for receiver in receivers {
        tokio::time::timeout(Duration::from_secs(60), receiver)
            .await
            .map_err(|_| "a watch did not complete its initial list within 60 s")?
            .map_err(|_| "a watch stopped")?;
    }
    Ok(())
}

fn managed() -> watcher::Config {
    watcher::Config::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE
    ))
}

/// Watches on the children (and optionally the ModelDeployments) of a namespace.
pub async fn watch_namespace(
    client: &Client,
    namespace: &str,
    timeline: &Arc<Timeline>,
    models: bool,
) -> Res<Watches> {
    let mut handles = Vec::new();
    let mut ready = Vec::new();
    let mut add = |(handle, rx): (JoinHandle<()>, oneshot::Receiver<()>)| {
        handles.push(handle);
        ready.push(rx);
    };
    add(spawn_watch(
        Api::<Deployment>::namespaced(client.clone(), namespace),
        managed(),
        timeline.clone(),
        on_deployment,
    ));
    add(spawn_watch(
        Api::<Service>::namespaced(client.clone(), namespace),
        managed(),
        timeline.clone(),
        on_service,
    ));
    add(spawn_watch(
        Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), namespace),
        managed(),
        timeline.clone(),
        on_hpa,
    ));
    if models {
        add(spawn_watch(
            Api::<ModelDeployment>::namespaced(client.clone(), namespace),
            watcher::Config::default(),
            timeline.clone(),
            on_model,
        ));
    }
    all_ready(ready).await?;
    Ok(Watches { handles })
}
