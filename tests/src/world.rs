//! Everything a rollout of one ModelDeployment touches, as watches deliver it: the object
//! (with every status it ever had, in order), its Deployments and its Services. Tests wait on
//! it, read the histories, and compare the end state of two runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use modelship_crds::{ModelDeployment, ModelDeploymentStatus};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// What the watches have shown so far.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub model: Option<ModelDeployment>,
    pub deployments: BTreeMap<String, Deployment>,
    pub services: BTreeMap<String, Service>,
    /// Every status the ModelDeployment had, with when it was seen (repeats folded).
    pub statuses: Vec<(Timestamp, ModelDeploymentStatus)>,
    /// Every selector the main Service had (repeats folded).
    pub selectors: Vec<BTreeMap<String, String>>,
}

impl Snapshot {
    pub fn status(&self) -> Option<&ModelDeploymentStatus> {
        self.model.as_ref()?.status.as_ref()
    }

    /// The spec's model version.
    pub fn spec_version(&self) -> Option<&str> {
        Some(self.model.as_ref()?.spec.model.version.as_str())
    }

    /// A track's Deployment: (version in its template, spec.replicas, ready replicas).
    pub fn track(&self, name: &str, track: &str) -> Option<(String, i32, i32)> {
        let d = self.deployments.get(&format!("{name}-{track}"))?;
        let version = modelship_operator::observe::template_version(d).to_string();
        let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
        Some((version, d.spec.replicas.unwrap_or(0), ready))
    }

    /// What two runs of one scenario must agree on at the end: the status without times,
    /// counters of measurements and messages, each Deployment's version and size, and each
    /// Service's selector.
    pub fn end_state(&self) -> Value {
        let status = self.status().cloned().unwrap_or_default();
        let conditions: Vec<Value> =
            status.conditions.iter().map(|c| json!([c.type_, c.status, c.reason])).collect();
        let history: Vec<Value> =
            status.history.iter().map(|r| json!([r.version, r.outcome])).collect();
        let analysis = status.analysis.as_ref().map(|a| json!([a.version, a.failures]));
        let deployments: BTreeMap<&String, Value> = self
            .deployments
            .iter()
            .map(|(name, d)| {
                let version = modelship_operator::observe::template_version(d).to_string();
                (name, json!([version, d.spec.replicas]))
            })
            .collect();
        let services: BTreeMap<&String, Value> = self
            .services
            .iter()
            .map(|(name, s)| (name, json!(s.spec.as_ref().and_then(|s| s.selector.clone()))))
            .collect();
        json!({
            "phase": status.phase,
            "stableVersion": status.stable_version,
            "candidateVersion": status.candidate_version,
            "abortedVersion": status.aborted_version,
            "activeColor": status.active_color,
            "canaryWeight": status.canary_weight,
            "currentStep": status.current_step,
            "scaleDownAt": status.scale_down_at.is_some(),
            "replicas": status.replicas,
            "readyReplicas": status.ready_replicas,
            "selector": status.selector,
            "conditions": conditions,
            "history": history,
            "analysis": analysis,
            "deployments": deployments,
            "services": services,
        })
    }
}

/// Watches of one ModelDeployment and the children in its namespace.
pub struct World {
    name: String,
    shared: Arc<Mutex<Snapshot>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A watch's events as (object, deleted), with a relist replacing what it had.
fn changes<K>(api: Api<K>, config: watcher::Config) -> impl Stream<Item = Change<K>> + Send
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, config).filter_map(|event| async move {
        match event.ok()? {
            watcher::Event::Apply(k) | watcher::Event::InitApply(k) => Some(Change::Put(k)),
            watcher::Event::Delete(k) => Some(Change::Gone(k)),
            watcher::Event::Init | watcher::Event::InitDone => None,
        }
    })
}

enum Change<K> {
    Put(K),
    Gone(K),
}

impl World {
    /// Start watching `name` and the children of the namespace.
    pub fn watch(client: &Client, namespace: &str, name: &str) -> World {
        let shared = Arc::new(Mutex::new(Snapshot::default()));
        let service_name = name.to_string();
        let mut tasks = Vec::new();

        let models: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let sink = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(changes(models, config));
            while let Some(change) = stream.next().await {
                let mut world = sink.lock().expect("lock");
                match change {
                    Change::Put(md) => {
                        if let Some(status) = md.status.clone()
                            && world.statuses.last().map(|(_, s)| s) != Some(&status)
                        {
                            world.statuses.push((Timestamp::now(), status));
                        }
                        world.model = Some(md);
                    }
                    Change::Gone(_) => world.model = None,
                }
            }
        }));

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let sink = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(changes(deployments, watcher::Config::default()));
            while let Some(change) = stream.next().await {
                let mut world = sink.lock().expect("lock");
                match change {
                    Change::Put(d) => {
                        world.deployments.insert(d.name_any(), d);
                    }
                    Change::Gone(d) => {
                        world.deployments.remove(&d.name_any());
                    }
                }
            }
        }));

        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        let sink = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = std::pin::pin!(changes(services, watcher::Config::default()));
            while let Some(change) = stream.next().await {
                let mut world = sink.lock().expect("lock");
                match change {
                    Change::Put(s) => {
                        let selector = s.spec.as_ref().and_then(|s| s.selector.clone());
                        if s.name_any() == service_name
                            && let Some(selector) = selector
                            && world.selectors.last() != Some(&selector)
                        {
                            world.selectors.push(selector);
                        }
                        world.services.insert(s.name_any(), s);
                    }
                    Change::Gone(s) => {
                        world.services.remove(&s.name_any());
                    }
                }
            }
        }));
        World { name: name.to_string(), shared, tasks }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn now(&self) -> Snapshot {
        self.shared.lock().expect("lock").clone()
    }

    /// Whether `check` holds now.
    pub fn holds(&self, check: impl Fn(&Snapshot) -> bool) -> bool {
        check(&self.shared.lock().expect("lock"))
    }

    /// Waits (polling every 10 ms) until `check` holds; panics with `what` and the last
    /// status after `timeout`.
    pub async fn until(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Snapshot) -> bool,
    ) -> Snapshot {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.holds(&check) {
                return self.now();
            }
            if tokio::time::Instant::now() >= deadline {
                let status = serde_json::to_string(&self.now().status()).unwrap_or_default();
                panic!("timed out after {timeout:?} waiting for {what}; status {status}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
