//! The controller: runs the watches and, for each ModelDeployment that changed, the
//! reconcile pipeline, read top to bottom in `reconcile`:
//!
//! observe (watch caches) -> plan (pure) -> build the children (pure) -> apply (server-side
//! apply, skipped when unchanged) -> report (status when it changed, events).
//!
//! Each step lives in its own module; this one only wires them, and retries failures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use modelship_crds::{ModelDeployment, ModelDeploymentStatus, labels};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::analysis::prometheus::{Prometheus, QueryScope};
use crate::analysis::scrape::Scraper;
use crate::analysis::{Comparison, Measurement};
pub use crate::apply::FIELD_MANAGER;
use crate::apply::Writer;
use crate::desired::{self, Defaults};
use crate::error::{Error, Result};
use crate::expect::Expectations;
use crate::metrics::{CategoryLabels, Metrics};
use crate::notify::{self, send::Notifier};
use crate::observe::{self, SliceIndex, Stores};
use crate::plan::{self, Input, Track};
use crate::report::Report;
use crate::status::{self, Problem, StatusInput};
use crate::watch::{self, NoTriggerPause, WatchBackoff, cached, watch_health};

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
    /// How long a new ModelDeployment's first status may wait for its pods (zero: no wait).
    pub first_status_grace: Duration,
    /// Name and instance reported on events.
    pub identity: String,
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub stores: Stores,
    pub metrics: Arc<Metrics>,
    pub scraper: Scraper,
    /// Measures through Prometheus for models whose analysis names a server.
    pub prometheus: Prometheus,
    pub report: Report,
    pub notifier: Notifier,
    /// Our child writes the caches have not shown yet.
    expected: Expectations,
    /// Consecutive failures per object, for the retry backoff.
    failures: Mutex<HashMap<ObjectRef<ModelDeployment>, u32>>,
    /// Every child cache has completed its initial list.
    pub synced: Arc<AtomicBool>,
}

type Guarded = DeserializeGuard<ModelDeployment>;

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
        cached::<Deployment>(&client, ns, managed.clone(), &metrics, |_| {});
    let (services, service_events) =
        cached::<Service>(&client, ns, managed.clone(), &metrics, |_| {});
    let (hpas, hpa_events) =
        cached::<HorizontalPodAutoscaler>(&client, ns, managed.clone(), &metrics, |_| {});
    let (pdbs, pdb_events) = cached::<PodDisruptionBudget>(&client, ns, managed, &metrics, |_| {});
    let slice_index = SliceIndex::default();
    let indexer = slice_index.clone();
    let (slices, slice_events) =
        cached::<EndpointSlice>(&client, ns, sliced, &metrics, move |e| indexer.observe(e));
    let stores = Stores { deployments, services, hpas, pdbs, slices, slice_index };

    let context = Arc::new(Context {
        report: Report::new(client.clone(), settings.identity.clone(), metrics.clone()),
        notifier: Notifier::new(client.clone(), metrics.clone())?,
        scraper: Scraper::new(settings.pod_metrics_url.clone()),
        prometheus: Prometheus::new(client.clone())?,
        client: client.clone(),
        stores: stores.clone(),
        metrics: metrics.clone(),
        expected: Expectations::default(),
        failures: Mutex::default(),
        synced: synced_flag.clone(),
        settings: settings.clone(),
    });
    // An EndpointSlice belongs to the ModelDeployment named by its label.
    let slice_owner = |slice: EndpointSlice| {
        let name = slice.labels().get(labels::NAME).cloned();
        let namespace = slice.namespace();
        name.zip(namespace).map(|(name, ns)| ObjectRef::<Guarded>::new(&name).within(&ns))
    };
    // The ModelDeployments' own cache, trimmed like the children's.
    let (model_store, model_writer) = reflector::store();
    let model_events =
        watcher(watch::api::<Guarded>(&client, ns), watcher::Config::default().any_semantic())
            .backoff(WatchBackoff::default())
            .modify(|guarded: &mut Guarded| watch::trim_metadata(guarded.meta_mut()))
            .reflect(model_writer)
            .inspect(watch_health::<Guarded>(&metrics))
            .applied_objects();
    let controller = Controller::for_stream(model_events, model_store)
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .owns_stream(hpa_events)
        .owns_stream(pdb_events)
        .watches_stream(slice_events, slice_owner)
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrency))
        .trigger_backoff(NoTriggerPause)
        .graceful_shutdown_on(shutdown);
    // Decisions need complete caches: reconciles wait until every child store has listed.
    let synced = context.synced.clone();
    tokio::spawn(async move {
        let _ = stores.deployments.wait_until_ready().await;
        let _ = stores.services.wait_until_ready().await;
        let _ = stores.hpas.wait_until_ready().await;
        let _ = stores.pdbs.wait_until_ready().await;
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

/// One ModelDeployment, top to bottom.
async fn reconcile(md: &ModelDeployment, ctx: &Context) -> Result<Action> {
    if md.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children.
        return Ok(Action::await_change());
    }
    let name = md.name_any();
    let namespace = md.namespace().ok_or(Error::MissingField(".metadata.namespace"))?;
    if !ctx.synced.load(Ordering::Acquire) {
        return Ok(Action::requeue(Duration::from_millis(250)));
    }
    if ctx.report.is_stale(md) {
        debug!("cache older than our last status write; waiting for it to catch up");
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let cached = |kind, child: &str| observe::cached_version(&ctx.stores, kind, &namespace, child);
    if let Some(wait) = ctx.expected.unseen(md, cached) {
        // Their watch events trigger the next reconcile; the wait is only a bound.
        debug!(?wait, "caches have not shown our last child writes yet; waiting for them");
        return Ok(Action::requeue(wait));
    }

    // Observe: what the model owns, from the watch caches.
    let seen = observe::snapshot(&ctx.stores, md, &namespace);
    let stored = md.status.clone().unwrap_or_default();
    // A new model's first status may be held back in memory for a moment: plan from it.
    let previous = ctx.report.held_status(md).unwrap_or_else(|| stored.clone());
    let now = Timestamp::now();

    // Measure the candidate when an analysis window closes: the only read beyond the caches.
    let measurement = analyse(ctx, md, &seen, &previous, now).await;

    // Plan, then build what the plan asks for: both pure.
    let plan = plan::plan(&Input {
        name: &name,
        spec: &md.spec,
        status: &previous,
        observed: &seen.observed,
        measurement,
        now,
    });
    let children = desired::children(md, &plan, &seen.running, &ctx.settings.defaults);

    // Apply. A refusal is reported in status (and retried); anything else is retried at once.
    let writer = Writer::new(&ctx.client, &namespace, &ctx.metrics);
    let problem = match writer.apply(&children, &seen.running).await {
        Ok(written) => {
            ctx.expected.record(md, written);
            None
        }
        Err(error) if error.is_refusal() => Some(Problem::refused(&error)),
        Err(error) => return Err(error),
    };

    // Report: the status, when it changed, then the events.
    let mut next = status::compute(&StatusInput {
        name: &name,
        generation: md.metadata.generation,
        strategy: md.spec.strategy.type_,
        total: md.spec.replicas.max(0),
        previous: &previous,
        plan: &plan,
        observed: &seen.observed,
        problem: problem.clone(),
        now,
    });
    // Notifications are claimed in the status before they are sent: at most once each.
    let due = notify::due(md, &previous, &next, &plan.events);
    let (sent, claimed) = notify::claim(md, &next, due, now);
    next.last_notification = claimed;
    let resync = ctx.settings.resync;
    let urgent = problem.is_some() || !sent.is_empty();
    let grace = ctx.settings.first_status_grace;
    if let Some(wait) = ctx.report.hold_first(md, &next, &plan.events, grace, urgent) {
        let requeue =
            [plan.requeue_after, Some(wait)].into_iter().flatten().fold(resync, Duration::min);
        return Ok(Action::requeue(requeue));
    }
    let announce = !plan.events.is_empty() || !sent.is_empty();
    // Compared with the stored status: a held one is not stored yet.
    let wait = ctx.report.status(md, &stored, &next, announce).await?;
    let mut events = ctx.report.take_held_events(md);
    events.extend(plan.events.iter().cloned());
    ctx.report.events(md, &events).await;
    if let Some(notifications) = &md.spec.notifications {
        ctx.notifier.send(&namespace, &notifications.webhook.secret_name, sent);
    }
    if let Some(problem) = problem {
        return Err(Error::Refused(problem.message));
    }
    let requeue = [plan.requeue_after, wait].into_iter().flatten().fold(resync, Duration::min);
    Ok(Action::requeue(requeue))
}

/// Close an analysis window when one is due: the candidate's window, and stable's on the
/// same interval when relative thresholds compare them. When the candidate's exposure begins,
/// record where the counters stand so that the first window starts there.
async fn analyse(
    ctx: &Context,
    md: &ModelDeployment,
    seen: &observe::Snapshot,
    previous: &ModelDeploymentStatus,
    now: Timestamp,
) -> Option<Measurement> {
    let name = md.name_any();
    let namespace = md.namespace().unwrap_or_default();
    let candidate = previous.candidate_version.as_deref().unwrap_or_default();
    let stable = previous.stable_version.as_deref().unwrap_or_default();
    let compare = plan::compares_with_stable(&md.spec);
    let stable_targets = || seen.scrape_targets(&name, &namespace, Track::Stable);
    let analysis = md.spec.strategy.analysis.as_ref()?;
    if let Some(source) = &analysis.prometheus {
        // Prometheus keeps the history: no counters to record, every window is a query.
        let track = plan::analysis_due(&md.spec, previous, &seen.observed, now)?;
        let scope = |version, track: Track| QueryScope {
            namespace: &namespace,
            name: &name,
            version,
            track: track.as_str(),
            window: format!("{}s", analysis.interval_seconds),
        };
        let (candidate_scope, stable_scope) =
            (scope(candidate, track), scope(stable, Track::Stable));
        let http = match ctx.prometheus.connect(&namespace, source).await {
            Ok(http) => http,
            Err(error) => return Some(Prometheus::unreachable(source, &error.to_string())),
        };
        let (mut measurement, comparison) =
            futures::join!(Prometheus::measure(&http, source, &candidate_scope), async {
                match compare {
                    true => Comparison::Stable(Box::new(
                        Prometheus::measure(&http, source, &stable_scope).await,
                    )),
                    false => Comparison::NotMeasured,
                }
            });
        measurement.stable = comparison;
        return Some(measurement);
    }
    if let Some(track) = plan::analysis_due(&md.spec, previous, &seen.observed, now) {
        let targets = seen.scrape_targets(&name, &namespace, track);
        let (mut measurement, comparison) =
            futures::join!(ctx.scraper.measure(&targets, candidate), async {
                match compare {
                    true => ctx.scraper.compare(&stable_targets(), stable).await,
                    false => Comparison::NotMeasured,
                }
            });
        measurement.stable = comparison;
        return Some(measurement);
    }
    if let Some(track) = plan::analysis_starts(&md.spec, previous, &seen.observed) {
        let targets = seen.scrape_targets(&name, &namespace, track);
        ctx.scraper.record(&targets, candidate).await;
        if compare {
            ctx.scraper.record(&stable_targets(), stable).await;
        }
    }
    None
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
}
