//! Phases 2 to 6, with the operator running: cold start, steady state, memory,
//! apply-to-children and blue-green switches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use modelship_crds::{ModelDeployment, labels};
use modelship_operator::desired;
use modelship_operator::plan::Track;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::time::Instant;

use crate::apiserver;
use crate::cluster::{
    apply_model, create_models, ensure_namespace, model, progress, scale_model, signed_ms, since,
    wait,
};
use crate::operator::Operator;
use crate::procs::{cpu_shares, cpu_snapshot, load_avg, round};
use crate::summary::{
    BlueGreenModel, BlueGreenResult, ColdStartResult, LatencyResult, MemoryResult, Stats,
    SteadyResult,
};
use crate::watch::{Timeline, all_ready, pod_tracker, settled_group, spawn_watch, watch_namespace};
use crate::{BLUE_GREEN_PREFIX, LATENCY_PREFIX, OPERATOR_NS, Res, RunArgs, SCALE_PREFIX};

pub struct OperatorPhases {
    pub cold_start: ColdStartResult,
    pub steady: SteadyResult,
    pub memory: MemoryResult,
    pub apply_latency: LatencyResult,
    pub blue_green: BlueGreenResult,
}

pub async fn operator_phases(
    client: &Client,
    args: &RunArgs,
    procs: &[(String, u32)],
) -> Res<OperatorPhases> {
    let n = args.n;
    let timeout = Duration::from_secs(args.timeout_seconds);
    ensure_namespace(client, OPERATOR_NS).await?;
    let timeline = Arc::new(Timeline::default());
    let watches = watch_namespace(client, OPERATOR_NS, &timeline, true).await?;
    eprintln!("cold start: creating {n} ModelDeployments before the operator starts (not timed)");
    let objects = (0..n).map(|i| scale_model(&format!("{SCALE_PREFIX}{i:05}"))).collect();
    create_models(client, OPERATOR_NS, objects, args.create_concurrency).await?;
    wait(timeout, "the bench's watch to see every ModelDeployment", async || {
        Ok(timeline.count("md-seen", SCALE_PREFIX) >= n)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // --- cold start ---
    let load = load_avg();
    eprintln!("cold start: starting the operator (load {load})");
    let cpu_before = cpu_snapshot(procs);
    let api_before = apiserver::counters(client).await?;
    let profile = apiserver::profile(client, args.out_dir.join("apiserver-cold-start.pprof"));
    let started = Instant::now();
    let mut operator = Operator::start(args)?;
    let mut procs = procs.to_vec();
    procs.push(("modelship-operator".into(), operator.pid));

    let kinds = ["dep-exists", "svc-exists", "hpa-exists"];
    wait(timeout, "every child to exist", async || {
        operator.check_alive()?;
        Ok(kinds.iter().all(|k| timeline.count(k, SCALE_PREFIX) >= n))
    })
    .await?;
    let children_at =
        kinds.iter().filter_map(|k| timeline.latest(k, SCALE_PREFIX)).max().ok_or("no children")?;
    let first_child = kinds
        .iter()
        .filter_map(|k| timeline.earliest(k, SCALE_PREFIX))
        .min()
        .ok_or("no children")?;
    eprintln!("cold start: {} children after {:.2}s", 3 * n, since(started, children_at));
    wait(timeout, "every ModelDeployment to be Healthy", async || {
        operator.check_alive()?;
        Ok(timeline.count("md-healthy", SCALE_PREFIX) >= n)
    })
    .await?;
    let healthy_at = timeline.latest("md-healthy", SCALE_PREFIX).ok_or("none healthy")?;
    let cpu_after = cpu_snapshot(&procs);
    let cpu_wall = started.elapsed().as_secs_f64();
    let api_until_healthy = apiserver::cost(&api_before, &apiserver::counters(client).await?);
    profile.await??;
    eprintln!("cold start: every ModelDeployment Healthy after {:.2}s", since(started, healthy_at));
    let at_healthy = operator.metrics().await?;
    let rss_at_healthy = operator.rss_mib();
    let cold_start = ColdStartResult {
        load_avg: load,
        first_child_seconds: round(since(started, first_child), 3),
        children_seconds: round(since(started, children_at), 3),
        healthy_seconds: round(since(started, healthy_at), 3),
        children_progress: progress(
            started,
            kinds.iter().flat_map(|k| timeline.times(k, SCALE_PREFIX)).collect(),
        ),
        healthy_progress: progress(started, timeline.times("md-healthy", SCALE_PREFIX)),
        writes: at_healthy.writes.clone(),
        reconciles: at_healthy.reconciles,
        reconcile_errors: at_healthy.errors.clone(),
        reconcile_mean_ms: round(
            at_healthy.duration_sum / at_healthy.duration_count.max(1.0) * 1000.0,
            3,
        ),
        cpu_until_healthy: cpu_shares(&cpu_before, &cpu_after, cpu_wall),
        api_until_healthy,
    };

    // --- steady state ---
    // Settled: no write for 5 s (at most 60 s). Then count over the window.
    let settle_started = Instant::now();
    let mut last = operator.metrics().await?.total_writes();
    let mut quiet = 0;
    while quiet < 5 && settle_started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        operator.check_alive()?;
        let now = operator.metrics().await?.total_writes();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    let before = operator.metrics().await?;
    let cpu_before = cpu_snapshot(&procs);
    let window = Duration::from_secs(args.steady_window_seconds);
    eprintln!("steady: counting writes for {window:?} (resync every {}s)", args.resync_seconds);
    tokio::time::sleep(window).await;
    operator.check_alive()?;
    let after = operator.metrics().await?;
    let steady = SteadyResult {
        writes_while_settling: before.total_writes() - at_healthy.total_writes(),
        settle_seconds: round(settle_started.elapsed().as_secs_f64() - window.as_secs_f64(), 1),
        window_seconds: window.as_secs_f64(),
        resync_seconds: args.resync_seconds,
        writes_in_window: after.total_writes() - before.total_writes(),
        writes_in_window_by_kind: after.writes_since(&before),
        reconciles_in_window: after.reconciles - before.reconciles,
        cpu_in_window: cpu_shares(&cpu_before, &cpu_snapshot(&procs), window.as_secs_f64()),
    };
    eprintln!(
        "steady: {} writes, {} reconciles in the window",
        steady.writes_in_window, steady.reconciles_in_window
    );
    let rss_after_steady = operator.rss_mib();
    let hwm_after_steady = operator.hwm_mib();

    // --- apply to children ---
    let apply_latency = latency_phase(client, args, &timeline, &mut operator).await?;

    // --- blue-green ---
    let blue_green = blue_green_phase(client, args, &timeline, &mut operator).await?;

    let memory = MemoryResult {
        rss_at_healthy_mib: round(rss_at_healthy, 1),
        rss_after_steady_mib: round(rss_after_steady, 1),
        hwm_after_steady_mib: round(hwm_after_steady, 1),
        hwm_at_end_mib: round(operator.hwm_mib(), 1),
        cached_objects: cached_objects(client).await?,
    };
    watches.stop();
    operator.stop();
    Ok(OperatorPhases { cold_start, steady, memory, apply_latency, blue_green })
}

/// What the operator's caches hold, measured as JSON: (objects, KiB) per kind.
async fn cached_objects(client: &Client) -> Res<BTreeMap<String, (usize, f64)>> {
    let managed = ListParams::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE
    ));
    let mut out = BTreeMap::new();
    let ns = OPERATOR_NS;
    let c = client.clone();
    out.insert(
        "modeldeployment".into(),
        json_size(Api::<ModelDeployment>::namespaced(c.clone(), ns), &ListParams::default(), false)
            .await?,
    );
    out.insert(
        "deployment".into(),
        json_size(Api::<Deployment>::namespaced(c.clone(), ns), &managed, true).await?,
    );
    out.insert(
        "service".into(),
        json_size(Api::<Service>::namespaced(c.clone(), ns), &managed, true).await?,
    );
    out.insert(
        "hpa".into(),
        json_size(Api::<HorizontalPodAutoscaler>::namespaced(c.clone(), ns), &managed, true)
            .await?,
    );
    let sliced = ListParams::default().labels(labels::NAME);
    out.insert(
        "endpointslice".into(),
        json_size(Api::<EndpointSlice>::namespaced(c, ns), &sliced, true).await?,
    );
    Ok(out)
}

async fn json_size<K>(api: Api<K>, params: &ListParams, strip: bool) -> Res<(usize, f64)>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let list = api.list(params).await?;
    let mut bytes = 0;
    for mut object in list.items.iter().cloned() {
        if strip {
            object.meta_mut().managed_fields = None;
        }
        bytes += serde_json::to_vec(&object)?.len();
    }
    Ok((list.items.len(), round(bytes as f64 / 1024.0, 1)))
}

async fn latency_phase(
    client: &Client,
    args: &RunArgs,
    timeline: &Timeline,
    operator: &mut Operator,
) -> Res<LatencyResult> {
    eprintln!("apply-to-children: {} ModelDeployments, one at a time", args.latency_samples);
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), OPERATOR_NS);
    let (mut to_deployment, mut to_all, mut from_sent, mut lag) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.latency_samples {
        let name = format!("{LATENCY_PREFIX}{i:03}");
        let sent = Instant::now();
        apply_model(&api, &scale_model(&name)).await?;
        let acked = Instant::now();
        wait(Duration::from_secs(30), &format!("the children of {name}"), async || {
            operator.check_alive()?;
            Ok(["dep-exists", "svc-exists", "hpa-exists", "md-seen"]
                .iter()
                .all(|g| timeline.get(g, &name_of(g, &name)).is_some()))
        })
        .await?;
        let at = |group: &str| timeline.get(group, &name_of(group, &name)).expect("waited for");
        let deployment = at("dep-exists");
        let all = ["dep-exists", "svc-exists", "hpa-exists"].map(at).into_iter().max().expect("3");
        to_deployment.push(signed_ms(acked, deployment));
        to_all.push(signed_ms(acked, all));
        from_sent.push(signed_ms(sent, deployment));
        lag.push(signed_ms(acked, at("md-seen")));
        // Apart, so that each one is measured alone.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(LatencyResult {
        samples: args.latency_samples,
        ack_to_deployment_ms: Stats::of(&to_deployment),
        ack_to_all_children_ms: Stats::of(&to_all),
        sent_to_deployment_ms: Stats::of(&from_sent),
        watch_lag_ms: Stats::of(&lag),
    })
}

/// The name a milestone group uses for ModelDeployment `md`: its Deployment is `md-stable`.
fn name_of(group: &str, md: &str) -> String {
    if group.starts_with("dep-") {
        desired::deployment_name(md, Track::Stable)
    } else {
        md.to_string()
    }
}

async fn blue_green_phase(
    client: &Client,
    args: &RunArgs,
    timeline: &Arc<Timeline>,
    operator: &mut Operator,
) -> Res<BlueGreenResult> {
    let count = args.blue_green;
    let replicas = args.blue_green_replicas;
    let timeout = Duration::from_secs(args.timeout_seconds);
    eprintln!("blue-green: {count} ModelDeployments with {replicas} fake pods each");
    let (pods_watch, pods_ready) = spawn_watch(
        Api::<Pod>::namespaced(client.clone(), OPERATOR_NS),
        watcher::Config::default().labels(&format!("{} in (blue,green)", labels::TRACK)),
        timeline.clone(),
        pod_tracker(replicas),
    );
    all_ready(vec![pods_ready]).await?;
    let names: Vec<String> = (0..count).map(|i| format!("{BLUE_GREEN_PREFIX}{i:02}")).collect();
    let strategy = json!({
        "type": "BlueGreen",
        "blueGreen": {"autoPromote": true, "previewService": true, "scaleDownDelaySeconds": 30},
    });
    let objects = names.iter().map(|n| model(n, "1", Some(replicas), strategy.clone())).collect();
    create_models(client, OPERATOR_NS, objects, args.create_concurrency).await?;
    wait(timeout, "the blue-green ModelDeployments to be Healthy", async || {
        operator.check_alive()?;
        Ok(timeline.count("md-healthy", BLUE_GREEN_PREFIX) >= count)
    })
    .await?;
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), OPERATOR_NS);
    let mut colors = HashMap::new();
    for name in &names {
        let md = api.get(name).await?;
        let active = md.status.and_then(|s| s.active_color).ok_or("no active color")?;
        let next = if active == "blue" { "green" } else { "blue" };
        colors.insert(name.clone(), next.to_string());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Every model moves to version 2 at once.
    let patch = Patch::Merge(json!({"spec": {"model": {"version": "2"}}}));
    let patched: Vec<Res<(String, Instant)>> = stream::iter(names.iter())
        .map(|name| {
            let (api, patch) = (&api, &patch);
            async move {
                let sent = Instant::now();
                api.patch(name, &PatchParams::default(), patch).await?;
                Ok((name.clone(), sent))
            }
        })
        .buffer_unordered(count.max(1))
        .collect()
        .await;
    let mut sent_at = HashMap::new();
    for result in patched {
        let (name, sent) = result?;
        sent_at.insert(name, sent);
    }
    wait(timeout, "every blue-green Service to switch", async || {
        operator.check_alive()?;
        Ok(names.iter().all(|n| timeline.get(&format!("svc-selects:{}", colors[n]), n).is_some()))
    })
    .await?;
    // Deployment status and pod readiness may arrive just after the switch in this process's
    // watches; give them a moment.
    wait(Duration::from_secs(10), "new-color readiness in the watches", async || {
        Ok(names.iter().all(|n| {
            let color = &colors[n];
            timeline.get(&settled_group("2", replicas), &format!("{n}-{color}")).is_some()
                && timeline.get(&format!("pods-ready:{color}:2"), n).is_some()
        }))
    })
    .await?;
    pods_watch.abort();

    let (mut after_deployment, mut after_pods, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_model = Vec::new();
    for name in &names {
        let color = &colors[name];
        let switched = timeline.get(&format!("svc-selects:{color}"), name).expect("waited for");
        let deployment = timeline
            .get(&settled_group("2", replicas), &format!("{name}-{color}"))
            .expect("waited for");
        let pods = timeline.get(&format!("pods-ready:{color}:2"), name).expect("waited for");
        after_deployment.push(signed_ms(deployment, switched));
        after_pods.push(signed_ms(pods, switched));
        let sent = sent_at[name];
        total.push(signed_ms(sent, switched));
        let wall = chrono::Utc::now() - chrono::Duration::from_std(sent.elapsed())?;
        per_model.push(BlueGreenModel {
            name: name.clone(),
            new_color: color.clone(),
            patched_utc: wall.format("%H:%M:%S%.3f").to_string(),
            pods_ready_ms: round(signed_ms(sent, pods), 1),
            deployment_ready_ms: round(signed_ms(sent, deployment), 1),
            switched_ms: round(signed_ms(sent, switched), 1),
        });
    }
    Ok(BlueGreenResult {
        models: count,
        replicas,
        after_deployment_ready_ms: Stats::of(&after_deployment),
        after_pods_ready_ms: Stats::of(&after_pods),
        patch_to_switch_ms: Stats::of(&total),
        per_model,
    })
}
