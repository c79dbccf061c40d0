//! The reconcile loop: observe (watch caches) -> plan (pure) -> build (pure) -> apply
//! (server-side apply, skipped when unchanged) -> status (written only when it changed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use modelship_crds::{ModelDeployment, ModelDeploymentStatus, labels};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::desired::{self, Defaults};
use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::metrics::{CategoryLabels, Metrics};
use crate::plan::{self, Input, Plan, PlannedEvent, Track};
use crate::status::{self, Problem, StatusInput};
use crate::{analysis, observe};

/// The one field manager every write of the operator uses.
pub const FIELD_MANAGER: &str = "modelship-operator";

/// Operator settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    pub defaults: Defaults,
    /// Where to scrape a serving pod's metrics: `{ip}`, `{port}`, `{namespace}`, `{name}`.
    pub pod_metrics_url: String,
    pub concurrency: u16,
    /// Every ModelDeployment is reconciled at least this often.
    pub resync: Duration,
    /// Name and instance reported on events.
    pub identity: String,
}

/// The watch caches of the children.
#[derive(Clone)]
pub struct Stores {
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub hpas: Store<HorizontalPodAutoscaler>,
    pub slices: Store<EndpointSlice>,
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub stores: Stores,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub http: HttpClient,
    /// Consecutive failures per object, for the retry backoff.
    failures: Mutex<HashMap<ObjectRef<ModelDeployment>, u32>>,
    /// Our last status write per object: a cache older than its resourceVersion is stale and
    /// must not drive decisions; its time paces counts-only writes.
    written: Mutex<HashMap<ObjectRef<ModelDeployment>, StatusWrite>>,
    /// Every child cache has completed its initial list.
    pub synced: Arc<AtomicBool>,
}

type Guarded = DeserializeGuard<ModelDeployment>;

#[derive(Clone, Copy)]
struct StatusWrite {
    resource_version: u64,
    at: Instant,
}

/// Run the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    synced_flag: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let ns = settings.namespace.as_deref();
    let managed = watcher::Config::default()
        .labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE))
        .any_semantic();
    let sliced = watcher::Config::default().labels(labels::NAME).any_semantic();

    let (deployments, deployment_events) =
        cached::<Deployment>(&client, ns, managed.clone(), &metrics);
    let (services, service_events) = cached::<Service>(&client, ns, managed.clone(), &metrics);
    let (hpas, hpa_events) = cached::<HorizontalPodAutoscaler>(&client, ns, managed, &metrics);
    let (slices, slice_events) = cached::<EndpointSlice>(&client, ns, sliced, &metrics);
    let stores = Stores { deployments, services, hpas, slices };

    let reporter =
        Reporter { controller: FIELD_MANAGER.into(), instance: Some(settings.identity.clone()) };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        stores: stores.clone(),
        metrics: metrics.clone(),
        http: HttpClient::default(),
        failures: Mutex::default(),
        written: Mutex::default(),
        synced: synced_flag.clone(),
        settings: settings.clone(),
    });
    let models: Api<Guarded> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // An EndpointSlice belongs to the ModelDeployment named by its label.
    let slice_owner = |slice: EndpointSlice| {
        let name = slice.labels().get(labels::NAME).cloned();
        let namespace = slice.namespace();
        name.zip(namespace).map(|(name, ns)| ObjectRef::<Guarded>::new(&name).within(&ns))
    };
    // The ModelDeployments' own cache, trimmed like the children's.
    let (model_store, model_writer) = reflector::store();
    let model_events = watcher(models, watcher::Config::default().any_semantic())
        .backoff(WatchBackoff::default())
        .modify(|guarded: &mut Guarded| guarded.meta_mut().managed_fields = None)
        .reflect(model_writer)
        .inspect(watch_health::<Guarded>(&metrics))
        .applied_objects();
    let controller = Controller::for_stream(model_events, model_store)
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .owns_stream(hpa_events)
        .watches_stream(slice_events, slice_owner)
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrency))
        // The controller pauses all its triggers after any watch error; kube's default pause
        // grows to 30 s, which kept recovered watches idle long after an outage.
        .trigger_backoff(WatchBackoff::default())
        .graceful_shutdown_on(shutdown);
    // Decisions need complete caches: reconciles wait until every child store has listed.
    let synced = context.synced.clone();
    tokio::spawn(async move {
        let _ = stores.deployments.wait_until_ready().await;
        let _ = stores.services.wait_until_ready().await;
        let _ = stores.hpas.wait_until_ready().await;
        let _ = stores.slices.wait_until_ready().await;
        synced.store(true, Ordering::Release);
        info!("child caches synced");
    });
    info!(namespace = ns.unwrap_or("<all>"), "controller starting");
    let run_metrics = metrics.clone();
    controller
        .run(
            move |md, ctx: Arc<Context>| {
                let span = info_span!(
                    "reconcile",
                    namespace = md.namespace().unwrap_or_default(),
                    name = md.name_any()
                );
                async move { reconcile_guarded(md, ctx).await }.instrument(span)
            },
            error_policy,
            context,
        )
        .for_each(|result| {
            if let Err(error) = result {
                debug!(%error, "controller event");
                if matches!(error, kube::runtime::controller::Error::QueueError(_)) {
                    run_metrics.watch_failed(Timestamp::now().as_second());
                }
            }
            futures::future::ready(())
        })
        .await;
    info!("controller stopped");
    Ok(())
}

/// A reflector over `K`: the store to read, and the stream of changed objects to trigger on.
fn cached<K>(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
    metrics: &Arc<Metrics>,
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
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .backoff(WatchBackoff::default())
        // Managed fields are most of an object's size and never read here.
        .modify(|object: &mut K| {
            object.meta_mut().managed_fields = None;
            if let Some(annotations) = object.meta_mut().annotations.as_mut() {
                annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
        })
        .reflect(writer)
        .inspect(watch_health::<K>(metrics))
        .touched_objects();
    (reader, stream)
}

/// Watch retries double from 0.5 s to at most 5 s, and start over after a success: a watch
/// resumes within seconds of the API server coming back (kube's default waits up to 30 s),
/// at the cost of one attempt per watch every 5 s during an outage.
#[derive(Clone, Copy)]
struct WatchBackoff {
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
fn watch_health<K: Resource<DynamicType = ()>>(
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

async fn reconcile_guarded(guarded: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action> {
    let md = match &guarded.0 {
        Ok(md) => md,
        Err(invalid) => {
            // One undecodable object must not stop the others; the API server's schema makes
            // this rare, and a fixed object triggers a new reconcile.
            ctx.metrics.invalid_objects.inc();
            warn!(error = %invalid.error, "skipping a ModelDeployment that cannot be decoded");
            return Ok(Action::await_change());
        }
    };
    let _timer = ctx.metrics.time_reconcile();
    let result = reconcile(md, &ctx).await;
    let key = ObjectRef::from_obj(md);
    match &result {
        Ok(_) => {
            ctx.failures.lock().expect("lock").remove(&key);
        }
        Err(error) => {
            ctx.metrics
                .reconcile_errors
                .get_or_create(&CategoryLabels { category: error.category() })
                .inc();
        }
    }
    result
}

fn error_policy(guarded: Arc<Guarded>, error: &Error, ctx: Arc<Context>) -> Action {
    let Ok(md) = &guarded.0 else {
        return Action::await_change();
    };
    let key = ObjectRef::from_obj(md);
    let mut failures = ctx.failures.lock().expect("lock");
    let count = failures.entry(key).or_insert(0);
    *count = (*count + 1).min(16);
    let delay = retry_delay(*count, jitter(md));
    if error.is_conflict() {
        debug!(%error, ?delay, "conflict; retrying from a fresh read");
    } else {
        warn!(%error, category = error.category(), ?delay, "reconcile failed; retrying");
    }
    Action::requeue(delay)
}

/// Exponential backoff from 250 ms to 30 s with up to 25% jitter.
pub fn retry_delay(failures: u32, jitter: f64) -> Duration {
    let base = 0.25 * 2f64.powi(failures.saturating_sub(1) as i32);
    Duration::from_secs_f64(base.min(30.0) * (1.0 + 0.25 * jitter.clamp(0.0, 1.0)))
}

/// A stable per-object fraction, so retries of many objects spread out.
fn jitter(md: &ModelDeployment) -> f64 {
    let uid = md.metadata.uid.as_deref().unwrap_or("");
    let nanos = Timestamp::now().subsec_nanosecond() as u64;
    let seed = uid.bytes().fold(nanos, |acc, b| acc.wrapping_mul(31).wrapping_add(u64::from(b)));
    (seed % 1000) as f64 / 1000.0
}

async fn reconcile(md: &ModelDeployment, ctx: &Context) -> Result<Action> {
    if md.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children.
        return Ok(Action::await_change());
    }
    let name = md.name_any();
    let namespace = md.namespace().ok_or(Error::MissingField(".metadata.namespace"))?;
    let key = ObjectRef::from_obj(md);
    if !ctx.synced.load(Ordering::Acquire) {
        return Ok(Action::requeue(Duration::from_millis(250)));
    }
    if is_stale(md, ctx, &key) {
        debug!("cache older than our last status write; waiting for it to catch up");
        return Ok(Action::requeue(Duration::from_millis(200)));
    }

    // Observe.
    let deployments = Track::ALL.into_iter().filter_map(|track| {
        let object = ctx
            .stores
            .deployments
            .get(&ObjectRef::new(&desired::deployment_name(&name, track)).within(&namespace))?;
        owned_by(&*object, md).then(|| (track, (*object).clone()))
    });
    let deployments: Vec<(Track, Deployment)> = deployments.collect();
    let service = ctx.stores.services.get(&ObjectRef::new(&name).within(&namespace));
    let service = service.filter(|s| owned_by(&**s, md));
    let main_slices = ctx.stores.slices.state_filter(|slice| {
        slice.namespace().as_deref() == Some(namespace.as_str())
            && slice.labels().get(observe::SERVICE_NAME_LABEL) == Some(&name)
    });
    let slice_refs: Vec<&EndpointSlice> = main_slices.iter().map(|s| &**s).collect();
    let observed = observe::observed(deployments, service.as_deref(), &slice_refs);

    let previous = md.status.clone().unwrap_or_default();
    let now = Timestamp::now();

    // Measure the candidate when an analysis interval is due.
    let measurement = match plan::analysis_due(&md.spec, &previous, &observed, now) {
        Some(track) => {
            let targets = observe::scrape_targets(
                &namespace,
                &desired::deployment_name(&name, track),
                slice_refs.iter().copied(),
            );
            let candidate = previous.candidate_version.clone().unwrap_or_default();
            let m = analysis::measure(
                &ctx.http,
                &ctx.settings.pod_metrics_url,
                &targets,
                &candidate,
                Duration::from_secs(2),
            )
            .await;
            info!(track = track.as_str(), pods = targets.len(), requests = m.requests, error_rate = ?m.error_rate, p95 = ?m.latency_p95_seconds, drift = ?m.drift_score, "analysis measurement");
            Some(m)
        }
        None => None,
    };

    // Plan.
    let plan = plan::plan(&Input {
        name: &name,
        spec: &md.spec,
        status: &previous,
        observed: &observed,
        measurement,
        now,
    });

    // Build and apply.
    let problem = match apply_children(md, &namespace, &plan, ctx).await {
        Ok(()) => None,
        Err(error) if error.is_refusal() => {
            Some(Problem { reason: "ApplyFailed", message: error.to_string() })
        }
        Err(error) => return Err(error),
    };

    // Status.
    let next = status::compute(&StatusInput {
        name: &name,
        generation: md.metadata.generation,
        strategy: md.spec.strategy.type_,
        total: md.spec.replicas.max(0),
        previous: &previous,
        plan: &plan,
        observed: &observed,
        problem: problem.clone(),
        now,
    });
    let mut requeue =
        plan.requeue_after.map_or(ctx.settings.resync, |d| d.min(ctx.settings.resync));
    if status::changed(&previous, &next) {
        // A planned event is keyed on the stored status: write it now, or it would repeat.
        let since = ctx.written.lock().expect("lock").get(&key).map(|w| w.at.elapsed());
        let since = since.filter(|_| plan.events.is_empty());
        match status::hold_back(&previous, &next, since) {
            Some(wait) => requeue = requeue.min(wait),
            None => write_status(md, &namespace, &next, ctx, &key).await?,
        }
    }
    publish_events(md, &plan.events, ctx).await;
    if let Some(problem) = problem {
        return Err(Error::Refused(problem.message));
    }
    Ok(Action::requeue(requeue))
}

/// Whether the cached object predates our own last status write.
fn is_stale(md: &ModelDeployment, ctx: &Context, key: &ObjectRef<ModelDeployment>) -> bool {
    let written = ctx.written.lock().expect("lock").get(key).map(|w| w.resource_version);
    let current = md.resource_version().and_then(|rv| rv.parse::<u64>().ok());
    matches!((written, current), (Some(w), Some(c)) if c < w)
}

fn owned_by<K: Resource>(object: &K, md: &ModelDeployment) -> bool {
    let uid = md.metadata.uid.as_deref();
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

async fn apply_children(
    md: &ModelDeployment,
    namespace: &str,
    plan: &Plan,
    ctx: &Context,
) -> Result<()> {
    let name = md.name_any();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), namespace);

    // Capacity first: Deployments, then Service selectors, then removals.
    for track in &plan.tracks {
        let key = ObjectRef::new(&desired::deployment_name(&name, track.track)).within(namespace);
        let existing = ctx.stores.deployments.get(&key);
        let object = match (track.frozen, existing.as_deref()) {
            (true, Some(running)) if running.spec.replicas == Some(track.replicas) => continue,
            (true, Some(running)) => desired::resized(running, track.replicas),
            _ => desired::deployment(md, track, &ctx.settings.defaults),
        };
        apply(&deployments, &object, existing.as_deref(), "deployment", ctx).await?;
    }
    let main = desired::service(md, plan.service_track, false);
    let existing = ctx.stores.services.get(&ObjectRef::from_obj(&main));
    apply(&services, &main, existing.as_deref(), "service", ctx).await?;
    let preview_name = desired::preview_service_name(&name);
    match plan.preview_track {
        Some(track) => {
            let preview = desired::service(md, Some(track), true);
            let existing = ctx.stores.services.get(&ObjectRef::from_obj(&preview));
            apply(&services, &preview, existing.as_deref(), "service", ctx).await?;
        }
        None => {
            let existing =
                ctx.stores.services.get(&ObjectRef::new(&preview_name).within(namespace));
            if existing.is_some_and(|s| owned_by(&*s, md)) {
                delete(&services, &preview_name, "service", ctx).await?;
            }
        }
    }
    match desired::hpa(md) {
        Some(hpa) => {
            let existing = ctx.stores.hpas.get(&ObjectRef::from_obj(&hpa));
            apply(&hpas, &hpa, existing.as_deref(), "hpa", ctx).await?;
        }
        None => {
            let existing = ctx.stores.hpas.get(&ObjectRef::new(&name).within(namespace));
            if existing.is_some_and(|h| owned_by(&*h, md)) {
                delete(&hpas, &name, "hpa", ctx).await?;
            }
        }
    }
    for track in &plan.remove {
        delete(&deployments, &desired::deployment_name(&name, *track), "deployment", ctx).await?;
    }
    Ok(())
}

/// Server-side apply `object`, unless the cached copy was applied from the same content.
async fn apply<K>(
    api: &Api<K>,
    object: &K,
    existing: Option<&K>,
    kind: &'static str,
    ctx: &Context,
) -> Result<()>
where
    K: Resource + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    let wanted = desired::applied_hash(object);
    if existing.is_some_and(|e| desired::applied_hash(e) == wanted) {
        return Ok(());
    }
    let name = object.meta().name.clone().ok_or(Error::MissingField(".metadata.name"))?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    ctx.metrics.count_write(kind, "apply");
    api.patch(&name, &params, &Patch::Apply(object)).await?;
    debug!(kind, child = %name, "applied");
    Ok(())
}

async fn delete<K>(api: &Api<K>, name: &str, kind: &'static str, ctx: &Context) -> Result<()>
where
    K: Resource + DeserializeOwned + Clone + std::fmt::Debug,
{
    ctx.metrics.count_write(kind, "delete");
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            info!(kind, child = %name, "deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

async fn write_status(
    md: &ModelDeployment,
    namespace: &str,
    status: &ModelDeploymentStatus,
    ctx: &Context,
    key: &ObjectRef<ModelDeployment>,
) -> Result<()> {
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "apiVersion": ModelDeployment::api_version(&()),
        "kind": ModelDeployment::kind(&()),
        "status": status,
    });
    ctx.metrics.count_write("status", "apply");
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written = api.patch_status(&md.name_any(), &params, &Patch::Apply(&patch)).await?;
    if let Some(rv) = written.resource_version().and_then(|rv| rv.parse::<u64>().ok()) {
        let write = StatusWrite { resource_version: rv, at: Instant::now() };
        ctx.written.lock().expect("lock").insert(key.clone(), write);
    }
    debug!(phase = ?status.phase, "status written");
    Ok(())
}

async fn publish_events(md: &ModelDeployment, events: &[PlannedEvent], ctx: &Context) {
    let reference = md.object_ref(&());
    for event in events {
        info!(reason = event.reason, note = %event.note, "rollout event");
        let published = ctx
            .recorder
            .publish(
                &KubeEvent {
                    type_: if event.warning { EventType::Warning } else { EventType::Normal },
                    reason: event.reason.to_string(),
                    note: Some(event.note.chars().take(1000).collect()),
                    action: "Reconcile".into(),
                    secondary: None,
                },
                &reference,
            )
            .await;
        if let Err(error) = published {
            // Events are informative; a failure to publish one never fails the reconcile.
            warn!(%error, reason = event.reason, "could not publish event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_caps() {
        assert_eq!(retry_delay(1, 0.0), Duration::from_millis(250));
        assert_eq!(retry_delay(2, 0.0), Duration::from_millis(500));
        assert_eq!(retry_delay(5, 0.0), Duration::from_secs(4));
        assert_eq!(retry_delay(16, 0.0), Duration::from_secs(30));
        assert!(retry_delay(16, 1.0) <= Duration::from_secs_f64(37.5));
    }

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
