//! Phase 1: the children the operator would write, written directly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use modelship_crds::ModelDeployment;
use modelship_operator::controller::FIELD_MANAGER;
use modelship_operator::desired::{self, Defaults};
use modelship_operator::plan::{DesiredTrack, Track};
use tokio::time::Instant;

use crate::apiserver;
use crate::cluster::{
    create_models, delete_namespace, ensure_namespace, progress, scale_model, since, wait,
};
use crate::procs::{cpu_shares, cpu_snapshot, load_avg, round};
use crate::summary::{DirectResult, Stats};
use crate::watch::{Timeline, settled_group, watch_namespace};
use crate::{DIRECT_NS, FAKE_IMAGE, Res, RunArgs, SCALE_PREFIX};

/// A child exactly as the operator builds it for a new RollingUpdate ModelDeployment.
enum ChildObject {
    Deployment(Box<Deployment>),
    Service(Box<Service>),
    Hpa(Box<HorizontalPodAutoscaler>),
}

impl ChildObject {
    fn kind(&self) -> &'static str {
        match self {
            ChildObject::Deployment(_) => "deployment",
            ChildObject::Service(_) => "service",
            ChildObject::Hpa(_) => "hpa",
        }
    }
}

fn children_of(md: &ModelDeployment) -> Res<Vec<ChildObject>> {
    let track = DesiredTrack {
        track: Track::Stable,
        version: md.spec.model.version.clone(),
        replicas: md.spec.replicas,
        frozen: false,
        source: md.spec.model.source(),
    };
    // Only used for ModelDeployments without an image; every bench model names one.
    let defaults = Defaults { serving_image: FAKE_IMAGE.into() };
    let hpa = desired::hpa(md).ok_or("the bench models have autoscaling")?;
    Ok(vec![
        ChildObject::Deployment(Box::new(desired::deployment(md, &track, &defaults))),
        ChildObject::Service(Box::new(desired::service(md, None, false))),
        ChildObject::Hpa(Box::new(hpa)),
    ])
}

async fn apply_child(client: &Client, namespace: &str, child: &ChildObject) -> kube::Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match child {
        ChildObject::Deployment(object) => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            api.patch(&object.name_any(), &params, &Patch::Apply(&**object)).await.map(drop)
        }
        ChildObject::Service(object) => {
            let api: Api<Service> = Api::namespaced(client.clone(), namespace);
            api.patch(&object.name_any(), &params, &Patch::Apply(&**object)).await.map(drop)
        }
        ChildObject::Hpa(object) => {
            let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
            api.patch(&object.name_any(), &params, &Patch::Apply(&**object)).await.map(drop)
        }
    }
}

/// One accepted write of the direct phase.
struct Written {
    kind: &'static str,
    latency_ms: f64,
    retries: usize,
    at: Instant,
}

/// One write, retried up to 3 times; the latency is the successful attempt's.
async fn write_child(client: &Client, namespace: &str, child: &ChildObject) -> Res<Written> {
    let mut retries = 0;
    loop {
        let started = Instant::now();
        match apply_child(client, namespace, child).await {
            Ok(()) => {
                let at = Instant::now();
                let latency_ms = (at - started).as_secs_f64() * 1000.0;
                return Ok(Written { kind: child.kind(), latency_ms, retries, at });
            }
            Err(error) if retries < 3 => {
                eprintln!("direct write failed, retrying: {error}");
                retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

pub async fn direct_phase(
    client: &Client,
    args: &RunArgs,
    procs: &[(String, u32)],
) -> Res<DirectResult> {
    let n = args.n;
    let timeout = Duration::from_secs(args.timeout_seconds);
    ensure_namespace(client, DIRECT_NS).await?;
    let timeline = Arc::new(Timeline::default());
    let watches = watch_namespace(client, DIRECT_NS, &timeline, false).await?;
    eprintln!("direct: creating {n} ModelDeployments (not timed; no operator watches {DIRECT_NS})");
    let objects = (0..n).map(|i| scale_model(&format!("{SCALE_PREFIX}{i:05}"))).collect();
    let models = create_models(client, DIRECT_NS, objects, args.create_concurrency).await?;
    let mut children = Vec::with_capacity(3 * n);
    for md in &models {
        children.extend(children_of(md)?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let load = load_avg();
    eprintln!(
        "direct: writing {} children, {} at a time (load {load})",
        children.len(),
        args.direct_concurrency
    );
    let cpu_before = cpu_snapshot(procs);
    let api_before = apiserver::counters(client).await?;
    let profile = apiserver::profile(client, args.out_dir.join("apiserver-direct.pprof"));
    let started = Instant::now();
    let results: Vec<Res<Written>> = stream::iter(children.iter())
        .map(|child| write_child(client, DIRECT_NS, child))
        .buffer_unordered(args.direct_concurrency.max(1))
        .collect()
        .await;
    let accepted = started.elapsed().as_secs_f64();
    let cpu_after = cpu_snapshot(procs);
    let api_until_accepted = apiserver::cost(&api_before, &apiserver::counters(client).await?);
    let mut latencies = Vec::with_capacity(results.len());
    let mut by_kind: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut done = Vec::with_capacity(results.len());
    let mut retries = 0;
    for result in results {
        let written = result?;
        latencies.push(written.latency_ms);
        by_kind.entry(written.kind.to_string()).or_default().push(written.latency_ms);
        done.push(written.at);
        retries += written.retries;
    }
    eprintln!("direct: {} writes accepted in {accepted:.2}s", latencies.len());

    let ready_group = settled_group("1", 1);
    wait(timeout, "every directly written Deployment to have its pod ready", async || {
        Ok(timeline.count(&ready_group, SCALE_PREFIX) >= n)
    })
    .await?;
    let ready_at = timeline.latest(&ready_group, SCALE_PREFIX).ok_or("no ready Deployment")?;
    let pods_ready = since(started, ready_at);
    eprintln!("direct: every Deployment ready after {pods_ready:.2}s");
    profile.await??;
    watches.stop();

    let cleanup = Instant::now();
    delete_namespace(client, DIRECT_NS, Duration::from_secs(args.timeout_seconds.max(600))).await?;
    let cleanup_seconds = cleanup.elapsed().as_secs_f64();
    eprintln!("direct: namespace deleted in {cleanup_seconds:.1}s");
    Ok(DirectResult {
        load_avg: load,
        writes: latencies.len(),
        concurrency: args.direct_concurrency,
        accepted_seconds: round(accepted, 3),
        write_latency_ms: Stats::of(&latencies),
        write_latency_ms_by_kind: by_kind.iter().map(|(k, v)| (k.clone(), Stats::of(v))).collect(),
        retries,
        accepted_progress: progress(started, done),
        pods_ready_seconds: round(pods_ready, 3),
        pods_ready_progress: progress(started, timeline.times(&ready_group, SCALE_PREFIX)),
        cpu_until_accepted: cpu_shares(&cpu_before, &cpu_after, accepted),
        api_until_accepted,
        cleanup_seconds: round(cleanup_seconds, 1),
    })
}
