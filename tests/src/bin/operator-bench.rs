//! `operator-bench`: the operator at scale on a real local control plane, started by
//! `bench/operator.sh` (which also starts the control plane and KWOK, whose fake node turns
//! every pod scheduled there Running and Ready without running anything).
//!
//! `operator-bench run` measures, in one run against one API server:
//!
//! 1. **direct**: N ModelDeployments in a namespace no operator watches, then the 3N children
//!    the operator would write for them (built by the operator's own builders: Deployment,
//!    Service, HPA) server-side applied directly with bounded parallelism. Times: until the
//!    last write is accepted, and until every Deployment has its pod ready. The namespace is
//!    then deleted and awaited, so that phase 2 starts on a quiet cluster.
//! 2. **cold start**: N ModelDeployments, then the operator process is started. Times from
//!    the process start: until every child exists, and until every ModelDeployment is
//!    `Healthy` with its pod ready.
//! 3. **steady state**: operator writes (and reconciles) over a window covering several
//!    resyncs.
//! 4. **memory**: the operator's VmRSS and VmHWM.
//! 5. **apply-to-children**: one ModelDeployment at a time, from the create response to its
//!    children appearing in a watch.
//! 6. **blue-green switch**: ModelDeployments with fake pods move to a new version; from the
//!    new color being ready to the Service selecting it.
//!
//! Every time is taken with one monotonic clock in this process: a watch event's time is
//! when this process received it.
//!
//! `operator-bench record` adds a run's summary to BENCHMARKS.md.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child as ProcessChild, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use modelship_crds::{ModelDeployment, Phase, labels};
use modelship_operator::controller::FIELD_MANAGER;
use modelship_operator::desired::{self, Defaults};
use modelship_operator::plan::{DesiredTrack, Track};
use modelship_tests::harness::TestHttp;
use modelship_tests::operator::free_port;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = std::result::Result<T, BoxError>;

/// The image of the benchmark's pods. KWOK makes them Ready without running anything, so it
/// is never pulled.
const FAKE_IMAGE: &str = "localhost/modelship/serving:kwok";
const DIRECT_NS: &str = "bench-direct";
const OPERATOR_NS: &str = "bench-operator";
/// Prefixes of the ModelDeployments of each phase.
const SCALE_PREFIX: &str = "m-";
const LATENCY_PREFIX: &str = "lat-";
const BLUE_GREEN_PREFIX: &str = "bg-";
/// Field manager of the bench's own ModelDeployment writes, as a user's `kubectl apply`.
const USER_MANAGER: &str = "operator-bench";
const POLL: Duration = Duration::from_millis(20);
const SECTION: &str = "## Operator at scale";
const ROWS_START: &str = "<!-- operator-bench:runs -->";
const ROWS_END: &str = "<!-- /operator-bench:runs -->";
const DETAILS_START: &str = "<!-- operator-bench:details -->";
const DETAILS_END: &str = "<!-- /operator-bench:details -->";

#[derive(Parser, Debug)]
#[command(about = "The Modelship operator at scale on a local control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the benchmark against the control plane in KUBECONFIG and its KWOK node.
    Run(Box<RunArgs>),
    /// Add a run's summary.json to BENCHMARKS.md (section "Operator at scale").
    Record(RecordArgs),
}

#[derive(Parser, Debug, Clone)]
struct RunArgs {
    /// ModelDeployments in the scale phases.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// The operator binary (a release build).
    #[arg(long)]
    operator_bin: PathBuf,
    /// Extra operator flag, repeatable (e.g. `--operator-arg=--concurrency=32`).
    #[arg(long = "operator-arg", allow_hyphen_values = true)]
    operator_args: Vec<String>,
    /// The operator's `--resync-seconds`.
    #[arg(long, default_value_t = 10)]
    resync_seconds: u64,
    /// Length of the steady-state window in which writes are counted.
    #[arg(long, default_value_t = 25)]
    steady_window_seconds: u64,
    /// Parallel server-side applies of the direct phase.
    #[arg(long, default_value_t = 32)]
    direct_concurrency: usize,
    /// Parallel creations of ModelDeployments (not timed).
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,
    /// ModelDeployments created one at a time for the apply-to-children latency.
    #[arg(long, default_value_t = 100)]
    latency_samples: usize,
    /// ModelDeployments switched in the blue-green phase.
    #[arg(long, default_value_t = 20)]
    blue_green: usize,
    /// Pods per blue-green ModelDeployment.
    #[arg(long, default_value_t = 2)]
    blue_green_replicas: i32,
    /// Upper bound of every wait.
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
    /// Skip the direct phase (for quick iterations; the ratio is then not measured).
    #[arg(long)]
    skip_direct: bool,
    /// The control plane's state directory: its `pids` file names the processes whose CPU
    /// time is reported, and the operator's pid is added to it so that down.sh stops it.
    #[arg(long)]
    state_dir: PathBuf,
    /// Where summary.json, results.md and the operator log go.
    #[arg(long)]
    out_dir: PathBuf,
    /// Load average when the benchmark lock was taken.
    #[arg(long, default_value = "")]
    load_at_start: String,
    /// The command that started the run, for the record.
    #[arg(long, default_value = "bash bench/operator.sh")]
    command_line: String,
    /// Source revision, for the record.
    #[arg(long, default_value = "")]
    revision: String,
    /// KWOK's version, for the record.
    #[arg(long, default_value = "")]
    kwok_version: String,
    /// The KWOK stage configs in use, comma separated, for the record.
    #[arg(long, value_delimiter = ',')]
    kwok_stages: Vec<String>,
    /// The delay KWOK's pod-ready stage puts between a pod's scheduling and Ready, for the
    /// record.
    #[arg(long, default_value = "none")]
    kwok_ready_delay: String,
}

#[derive(Parser, Debug)]
struct RecordArgs {
    #[arg(long)]
    summary: PathBuf,
    #[arg(long, default_value = "BENCHMARKS.md")]
    file: PathBuf,
}

// ---------------------------------------------------------------------------------------
// Summary

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct Stats {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Stats {
    fn of(values: &[f64]) -> Stats {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            return Stats::default();
        }
        // Nearest rank.
        let rank = |q: f64| {
            let index = (q * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        Stats {
            n: sorted.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct Machine {
    nproc: usize,
    memory_gib: f64,
    cpu_model: String,
    kernel: String,
    kubernetes: String,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct CpuShare {
    process: String,
    cpu_seconds: f64,
    /// Average cores used over the phase: cpu_seconds / wall seconds.
    cores: f64,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct DirectResult {
    load_avg: String,
    writes: usize,
    concurrency: usize,
    /// First write sent to last write accepted.
    accepted_seconds: f64,
    write_latency_ms: Stats,
    write_latency_ms_by_kind: BTreeMap<String, Stats>,
    retries: usize,
    /// Seconds at which 10 ... 100 % of the writes had been accepted.
    accepted_progress: BTreeMap<String, f64>,
    /// First write sent to every Deployment reporting its pod ready.
    pods_ready_seconds: f64,
    pods_ready_progress: BTreeMap<String, f64>,
    cpu_until_accepted: Vec<CpuShare>,
    cleanup_seconds: f64,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct ColdStartResult {
    load_avg: String,
    /// Operator process start to the first child seen.
    first_child_seconds: f64,
    /// Operator process start to the last of the 3N children seen.
    children_seconds: f64,
    /// Operator process start to the last ModelDeployment seen Healthy with its pods ready.
    healthy_seconds: f64,
    children_progress: BTreeMap<String, f64>,
    healthy_progress: BTreeMap<String, f64>,
    writes: BTreeMap<String, f64>,
    reconciles: f64,
    reconcile_errors: BTreeMap<String, f64>,
    reconcile_mean_ms: f64,
    cpu_until_healthy: Vec<CpuShare>,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct SteadyResult {
    /// Writes between the last ModelDeployment turning Healthy and the start of the window.
    writes_while_settling: f64,
    settle_seconds: f64,
    window_seconds: f64,
    resync_seconds: u64,
    writes_in_window: f64,
    writes_in_window_by_kind: BTreeMap<String, f64>,
    reconciles_in_window: f64,
    cpu_in_window: Vec<CpuShare>,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct MemoryResult {
    rss_at_healthy_mib: f64,
    rss_after_steady_mib: f64,
    hwm_after_steady_mib: f64,
    hwm_at_end_mib: f64,
    /// At the end: per kind, objects the operator caches and their JSON size in KiB as it
    /// keeps them (children without managedFields; ModelDeployments as listed).
    cached_objects: BTreeMap<String, (usize, f64)>,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct LatencyResult {
    samples: usize,
    ack_to_deployment_ms: Stats,
    ack_to_all_children_ms: Stats,
    sent_to_deployment_ms: Stats,
    /// The bench's own create response to the bench's watch seeing that ModelDeployment:
    /// how much the watch delivery adds to the numbers above.
    watch_lag_ms: Stats,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct BlueGreenResult {
    models: usize,
    replicas: i32,
    /// New-color Deployment status settled (what the operator reacts to) to the Service
    /// selecting the new color.
    after_deployment_ready_ms: Stats,
    /// Last new-color pod Ready to the Service selecting the new color.
    after_pods_ready_ms: Stats,
    /// Version patched to the Service selecting the new color.
    patch_to_switch_ms: Stats,
    per_model: Vec<BlueGreenModel>,
}

/// One blue-green switch; times in ms after the version patch was sent.
#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct BlueGreenModel {
    name: String,
    new_color: String,
    /// Wall-clock time of the patch, to compare with the operator's log.
    patched_utc: String,
    pods_ready_ms: f64,
    deployment_ready_ms: f64,
    switched_ms: f64,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct Check {
    name: String,
    target: String,
    result: String,
    met: bool,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct Summary {
    run_id: String,
    n: usize,
    command: String,
    revision: String,
    machine: Machine,
    load_at_start: String,
    direct_concurrency: usize,
    operator_args: Vec<String>,
    kwok_version: String,
    kwok_stages: Vec<String>,
    kwok_ready_delay: String,
    direct: Option<DirectResult>,
    cold_start: ColdStartResult,
    steady: SteadyResult,
    memory: MemoryResult,
    apply_latency: LatencyResult,
    blue_green: BlueGreenResult,
    checks: Vec<Check>,
}

// ---------------------------------------------------------------------------------------
// Timeline: first time each (group, name) milestone was seen.

#[derive(Default)]
struct Timeline {
    marks: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

impl Timeline {
    fn mark(&self, group: &str, name: &str, when: Instant) {
        let mut marks = self.marks.lock().expect("timeline lock");
        marks.entry(group.to_string()).or_default().entry(name.to_string()).or_insert(when);
    }

    fn get(&self, group: &str, name: &str) -> Option<Instant> {
        self.marks.lock().expect("timeline lock").get(group)?.get(name).copied()
    }

    fn times(&self, group: &str, prefix: &str) -> Vec<Instant> {
        let marks = self.marks.lock().expect("timeline lock");
        marks
            .get(group)
            .map(|names| {
                names.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, t)| *t).collect()
            })
            .unwrap_or_default()
    }

    fn count(&self, group: &str, prefix: &str) -> usize {
        self.times(group, prefix).len()
    }

    fn latest(&self, group: &str, prefix: &str) -> Option<Instant> {
        self.times(group, prefix).into_iter().max()
    }

    fn earliest(&self, group: &str, prefix: &str) -> Option<Instant> {
        self.times(group, prefix).into_iter().min()
    }
}

fn settled_group(version: &str, replicas: i32) -> String {
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
fn pod_tracker(replicas: i32) -> impl FnMut(&Pod, bool, Instant, &Timeline) + Send + 'static {
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
fn spawn_watch<K, F>(
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

struct Watches {
    handles: Vec<JoinHandle<()>>,
}

impl Watches {
    fn stop(self) {
        for handle in self.handles {
            handle.abort();
        }
    }
}

async fn all_ready(receivers: Vec<oneshot::Receiver<()>>) -> Res<()> {
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
async fn watch_namespace(
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

// ---------------------------------------------------------------------------------------
// Processes, memory, CPU, load

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

fn status_kib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: Option<f64>) -> f64 {
    kib.map_or(f64::NAN, |k| k / 1024.0)
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// (name, pid) of the control plane's processes and KWOK, from the state directory.
fn processes(state_dir: &Path) -> Vec<(String, u32)> {
    let text = std::fs::read_to_string(state_dir.join("pids")).unwrap_or_default();
    let mut out: Vec<(String, u32)> = text
        .lines()
        .filter_map(|line| {
            let (pid, name) = line.split_once(' ')?;
            Some((name.trim().to_string(), pid.trim().parse().ok()?))
        })
        .collect();
    out.push(("operator-bench".into(), std::process::id()));
    out
}

/// Busy CPU seconds of the whole machine (every process, ours and others'), from /proc/stat.
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle) / USER_HZ)
}

/// CPU seconds per process, plus `machine` for the whole machine.
fn cpu_snapshot(processes: &[(String, u32)]) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = processes
        .iter()
        .filter_map(|(name, pid)| Some((name.clone(), cpu_seconds(*pid)?)))
        .collect();
    if let Some(busy) = machine_busy_seconds() {
        out.insert(MACHINE.into(), busy);
    }
    out
}

const MACHINE: &str = "machine";

fn cpu_shares(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    wall: f64,
) -> Vec<CpuShare> {
    let mut shares: Vec<CpuShare> = after
        .iter()
        .filter(|(name, _)| name.as_str() != MACHINE)
        .map(|(name, end)| {
            let used = end - before.get(name).copied().unwrap_or(0.0);
            CpuShare {
                process: name.clone(),
                cpu_seconds: round(used, 2),
                cores: round(used / wall, 2),
            }
        })
        .collect();
    shares.sort_by(|a, b| b.cpu_seconds.total_cmp(&a.cpu_seconds));
    let total: f64 = shares.iter().map(|s| s.cpu_seconds).sum();
    shares.push(CpuShare {
        process: "total".into(),
        cpu_seconds: round(total, 2),
        cores: round(total / wall, 2),
    });
    if let (Some(start), Some(end)) = (before.get(MACHINE), after.get(MACHINE)) {
        let others = end - start - total;
        shares.push(CpuShare {
            process: "other processes".into(),
            cpu_seconds: round(others, 2),
            cores: round(others / wall, 2),
        });
    }
    shares
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

fn machine_cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn machine_memory_gib() -> f64 {
    let kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    });
    round(kib.unwrap_or(0.0) / 1024.0 / 1024.0, 1)
}

/// The operator under test, started by the bench so that its start is the cold start.
struct Operator {
    child: Option<ProcessChild>,
    pid: u32,
    admin: SocketAddr,
    log: PathBuf,
    http: TestHttp,
}

impl Operator {
    fn start(args: &RunArgs) -> Res<Operator> {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let log = args.out_dir.join("operator.log");
        let file = std::fs::File::create(&log)?;
        let child = Process::new(&args.operator_bin)
            .arg("--namespace")
            .arg(OPERATOR_NS)
            .arg("--leader-elect=false")
            .arg("--identity=operator-bench")
            .arg(format!("--admin-listen={admin}"))
            .arg(format!("--resync-seconds={}", args.resync_seconds))
            .args(&args.operator_args)
            // The operator's own default filter unless OPERATOR_RUST_LOG asks for more (for a
            // diagnosis, not for a measurement).
            .env(
                "RUST_LOG",
                std::env::var("OPERATOR_RUST_LOG")
                    .unwrap_or_else(|_| "info,kube=warn,kube_lease_manager=warn".into()),
            )
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()?;
        let pid = child.id();
        // down.sh stops it too if this process dies first.
        let pids = args.state_dir.join("pids");
        let mut text = std::fs::read_to_string(&pids).unwrap_or_default();
        text.push_str(&format!("{pid} modelship-operator\n"));
        std::fs::write(&pids, text)?;
        Ok(Operator { child: Some(child), pid, admin, log, http: TestHttp::new() })
    }

    fn check_alive(&mut self) -> Res<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!("the operator exited ({status}); log:\n{}", tail.join("\n")).into());
        }
        Ok(())
    }

    async fn metrics(&self) -> Res<OperatorMetrics> {
        let response = self.http.get(self.admin, "/metrics").await?;
        Ok(OperatorMetrics::parse(&response.text()))
    }

    fn rss_mib(&self) -> f64 {
        mib(status_kib(self.pid, "VmRSS"))
    }

    fn hwm_mib(&self) -> f64 {
        mib(status_kib(self.pid, "VmHWM"))
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Default, Clone)]
struct OperatorMetrics {
    /// `kind/verb` -> writes.
    writes: BTreeMap<String, f64>,
    reconciles: f64,
    errors: BTreeMap<String, f64>,
    duration_sum: f64,
    duration_count: f64,
}

impl OperatorMetrics {
    fn parse(page: &str) -> OperatorMetrics {
        let mut out = OperatorMetrics::default();
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let label = |key: &str| {
                labels.split(',').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    (k == key).then(|| v.trim_matches('"').to_string())
                })
            };
            match name {
                "modelship_operator_writes_total" => {
                    let kind = label("kind").unwrap_or_default();
                    let verb = label("verb").unwrap_or_default();
                    *out.writes.entry(format!("{kind}/{verb}")).or_default() += value;
                }
                "modelship_operator_reconciles_total" => out.reconciles = value,
                "modelship_operator_reconcile_errors_total" => {
                    let category = label("category").unwrap_or_default();
                    *out.errors.entry(category).or_default() += value;
                }
                "modelship_operator_reconcile_duration_seconds_sum" => out.duration_sum = value,
                "modelship_operator_reconcile_duration_seconds_count" => {
                    out.duration_count = value;
                }
                _ => {}
            }
        }
        out
    }

    fn total_writes(&self) -> f64 {
        self.writes.values().sum()
    }

    fn writes_since(&self, before: &OperatorMetrics) -> BTreeMap<String, f64> {
        self.writes
            .iter()
            .map(|(k, v)| (k.clone(), v - before.writes.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v != 0.0)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Kubernetes helpers

fn model(name: &str, version: &str, replicas: Option<i32>, strategy: Value) -> Value {
    let mut spec = json!({
        "model": {"version": version, "uri": "file:///models/model.onnx"},
        "serving": {
            "image": FAKE_IMAGE,
            "drainSeconds": 0,
            // Small requests so that thousands of pods fit on the one local node.
            "resources": {
                "requests": {"cpu": "10m", "memory": "32Mi"},
                "limits": {"memory": "64Mi"},
            },
        },
        "strategy": strategy,
    });
    match replicas {
        Some(replicas) => spec["replicas"] = json!(replicas),
        // With autoscaling the HPA owns the replica count: one Deployment, one Service and
        // one HPA per ModelDeployment, the 3 children the design counts.
        None => spec["autoscaling"] = json!({"minReplicas": 1, "maxReplicas": 2}),
    }
    json!({
        "apiVersion": "modelship.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn scale_model(name: &str) -> Value {
    model(name, "1", None, json!({"type": "RollingUpdate"}))
}

async fn apply_model(api: &Api<ModelDeployment>, object: &Value) -> Res<ModelDeployment> {
    let name = object["metadata"]["name"].as_str().ok_or("a name")?.to_string();
    let params = PatchParams::apply(USER_MANAGER).force();
    Ok(api.patch(&name, &params, &Patch::Apply(object)).await?)
}

async fn create_models(
    client: &Client,
    namespace: &str,
    objects: Vec<Value>,
    concurrency: usize,
) -> Res<Vec<ModelDeployment>> {
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), namespace);
    let results: Vec<Res<ModelDeployment>> = stream::iter(objects.iter())
        .map(|object| apply_model(&api, object))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Creates `name` and waits for its default ServiceAccount, which pods need.
async fn ensure_namespace(client: &Client, name: &str) -> Res<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match namespaces.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {
            return Err(
                format!("namespace {name} exists already: use a fresh control plane").into()
            );
        }
        Err(error) => return Err(error.into()),
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    wait(Duration::from_secs(60), &format!("the default ServiceAccount of {name}"), async || {
        Ok(accounts.get_opt("default").await?.is_some())
    })
    .await
}

async fn delete_namespace(client: &Client, name: &str, timeout: Duration) -> Res<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(name, &DeleteParams::background()).await?;
    wait(timeout, &format!("namespace {name} to be deleted"), async || {
        Ok(namespaces.get_opt(name).await?.is_none())
    })
    .await
}

/// Polls `check` every 20 ms until it returns true; fails after `timeout`.
async fn wait<F>(timeout: Duration, what: &str, mut check: F) -> Res<()>
where
    F: AsyncFnMut() -> Res<bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Seconds from `start` at which 10, 25, 50, 75, 90 and 100 % of `times` had happened: the
/// shape of a phase (a straight line is a steady rate).
fn progress(start: Instant, mut times: Vec<Instant>) -> BTreeMap<String, f64> {
    times.sort();
    let mut out = BTreeMap::new();
    if times.is_empty() {
        return out;
    }
    for percent in [10usize, 25, 50, 75, 90, 100] {
        let index = (percent * times.len()).div_ceil(100).clamp(1, times.len()) - 1;
        out.insert(format!("p{percent:03}"), round(since(start, times[index]), 3));
    }
    out
}

fn since(start: Instant, end: Instant) -> f64 {
    end.saturating_duration_since(start).as_secs_f64()
}

fn signed_ms(start: Instant, end: Instant) -> f64 {
    if end >= start {
        end.duration_since(start).as_secs_f64() * 1000.0
    } else {
        -(start.duration_since(end).as_secs_f64() * 1000.0)
    }
}

// ---------------------------------------------------------------------------------------
// Phase 1: direct writes

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

async fn direct_phase(
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
    let started = Instant::now();
    let results: Vec<Res<Written>> = stream::iter(children.iter())
        .map(|child| write_child(client, DIRECT_NS, child))
        .buffer_unordered(args.direct_concurrency.max(1))
        .collect()
        .await;
    let accepted = started.elapsed().as_secs_f64();
    let cpu_after = cpu_snapshot(procs);
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
        cleanup_seconds: round(cleanup_seconds, 1),
    })
}

// ---------------------------------------------------------------------------------------
// Phase 2-6: the operator

struct OperatorPhases {
    cold_start: ColdStartResult,
    steady: SteadyResult,
    memory: MemoryResult,
    apply_latency: LatencyResult,
    blue_green: BlueGreenResult,
}

async fn operator_phases(
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

// ---------------------------------------------------------------------------------------
// Checks and output

fn checks(summary: &Summary) -> Vec<Check> {
    let mut out = Vec::new();
    let mut check = |name: &str, target: &str, result: String, met: bool| {
        out.push(Check { name: name.into(), target: target.into(), result, met });
    };
    let cold = &summary.cold_start;
    if let Some(direct) = &summary.direct {
        let ratio = cold.healthy_seconds / direct.accepted_seconds;
        check(
            "Cold start to all Healthy ÷ direct writes accepted",
            "≤ 1.5×",
            format!(
                "{ratio:.2}× ({:.2} s ÷ {:.2} s)",
                cold.healthy_seconds, direct.accepted_seconds
            ),
            ratio <= 1.5,
        );
        let ratio = cold.children_seconds / direct.accepted_seconds;
        check(
            "Cold start to all children written ÷ direct writes accepted",
            "(context)",
            format!(
                "{ratio:.2}× ({:.2} s ÷ {:.2} s)",
                cold.children_seconds, direct.accepted_seconds
            ),
            ratio <= 1.5,
        );
        let ratio = cold.healthy_seconds / direct.pods_ready_seconds;
        check(
            "Cold start to all Healthy ÷ direct writes to all pods Ready",
            "(context)",
            format!(
                "{ratio:.2}× ({:.2} s ÷ {:.2} s)",
                cold.healthy_seconds, direct.pods_ready_seconds
            ),
            ratio <= 1.5,
        );
    }
    check(
        "Cold start to all Healthy",
        "< 30 s",
        format!("{:.2} s", cold.healthy_seconds),
        cold.healthy_seconds < 30.0,
    );
    let steady = &summary.steady;
    check(
        "Writes at steady state and on resync",
        "0",
        format!(
            "{} in {} s ({} reconciles, resync {} s)",
            steady.writes_in_window,
            steady.window_seconds,
            steady.reconciles_in_window,
            steady.resync_seconds
        ),
        steady.writes_in_window == 0.0,
    );
    let memory = &summary.memory;
    let peak = memory.hwm_at_end_mib.max(memory.hwm_after_steady_mib);
    check(
        "Operator RSS at N objects (VmRSS; VmHWM)",
        "< 64 MB",
        format!(
            "{:.1} MiB; peak {peak:.1} MiB",
            memory.rss_after_steady_mib.max(memory.rss_at_healthy_mib)
        ),
        peak * 1.048_576 < 64.0,
    );
    let latency = &summary.apply_latency.ack_to_deployment_ms;
    check(
        "Apply to Deployment p50",
        "< 50 ms",
        format!("{:.1} ms (p90 {:.1}, max {:.1})", latency.p50, latency.p90, latency.max),
        latency.p50 < 50.0,
    );
    let bg = &summary.blue_green;
    check(
        "Blue-green switch after the new color's Deployment is ready",
        "≤ 100 ms",
        format!(
            "p50 {:.1} ms, max {:.1} ms",
            bg.after_deployment_ready_ms.p50, bg.after_deployment_ready_ms.max
        ),
        bg.after_deployment_ready_ms.max <= 100.0,
    );
    check(
        "Blue-green switch after the new color's last pod is Ready",
        "(context)",
        format!(
            "p50 {:.1} ms, max {:.1} ms",
            bg.after_pods_ready_ms.p50, bg.after_pods_ready_ms.max
        ),
        bg.after_pods_ready_ms.max <= 100.0,
    );
    out
}

fn results_markdown(summary: &Summary) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Operator at scale, N = {}, run {} (load average at start {})\n\n",
        summary.n, summary.run_id, summary.load_at_start
    ));
    out.push_str("| Measurement | Target | Result | Met |\n|---|---|---|---|\n");
    for c in &summary.checks {
        let met = if c.target == "(context)" {
            ""
        } else if c.met {
            "yes"
        } else {
            "**no**"
        };
        out.push_str(&format!("| {} | {} | {} | {met} |\n", c.name, c.target, c.result));
    }
    out
}

fn fmt_cpu(shares: &[CpuShare]) -> String {
    shares
        .iter()
        .filter(|s| s.cpu_seconds >= 0.05)
        .map(|s| format!("{} {:.1}", s.process, s.cpu_seconds))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_map(map: &BTreeMap<String, f64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

fn row(summary: &Summary) -> String {
    let cold = &summary.cold_start;
    let (accepted, ready, ratio) = match &summary.direct {
        Some(d) => (
            format!("{:.2} s", d.accepted_seconds),
            format!("{:.2} s", d.pods_ready_seconds),
            format!(
                "{:.2}× / {:.2}×",
                cold.healthy_seconds / d.accepted_seconds,
                cold.children_seconds / d.accepted_seconds
            ),
        ),
        None => ("—".into(), "—".into(), "—".into()),
    };
    let steady = &summary.steady;
    let memory = &summary.memory;
    let latency = &summary.apply_latency.ack_to_deployment_ms;
    let bg = &summary.blue_green;
    format!(
        "| {} | {} | {} | {} | {accepted} | {ready} | {:.2} s | {:.2} s | {ratio} | {} ({} reconciles) | {:.1} / {:.1} MiB | {:.1} ms ({:.1}) | {:.0} / {:.0} ms | {:.0} / {:.0} ms |",
        summary.run_id,
        summary.n,
        summary.load_at_start.split_whitespace().next().unwrap_or(""),
        format!("KWOK {}", summary.kwok_version).trim_end(),
        cold.children_seconds,
        cold.healthy_seconds,
        steady.writes_in_window,
        steady.reconciles_in_window,
        memory.rss_after_steady_mib,
        memory.hwm_at_end_mib,
        latency.p50,
        latency.p90,
        bg.after_deployment_ready_ms.p50,
        bg.after_deployment_ready_ms.max,
        bg.after_pods_ready_ms.p50,
        bg.after_pods_ready_ms.max,
    )
}

fn details(summary: &Summary) -> String {
    let m = &summary.machine;
    let cold = &summary.cold_start;
    let mut text = format!(
        "- **{}**: `{}`; {} × {}, {} GiB, Linux {}, Kubernetes {}; revision {}; load average at start {}; \
         direct writes {} at a time; pods from KWOK {} (stages {}; pod-ready delay {}); operator flags `{}`.",
        summary.run_id,
        summary.command,
        m.nproc,
        m.cpu_model,
        m.memory_gib,
        m.kernel,
        m.kubernetes,
        summary.revision,
        summary.load_at_start,
        summary.direct_concurrency,
        summary.kwok_version,
        summary.kwok_stages.join(", "),
        summary.kwok_ready_delay,
        summary.operator_args.join(" "),
    );
    if let Some(d) = &summary.direct {
        text.push_str(&format!(
            "\n  Direct: {} writes, latency p50 {:.1} ms / p99 {:.1} ms, {} retries; CPU seconds until accepted: {}.",
            d.writes,
            d.write_latency_ms.p50,
            d.write_latency_ms.p99,
            d.retries,
            fmt_cpu(&d.cpu_until_accepted),
        ));
    }
    text.push_str(&format!(
        "\n  Cold start: first child after {:.2} s; writes {}; {} reconciles (mean {:.2} ms), errors {}; CPU seconds until all Healthy: {}.",
        cold.first_child_seconds,
        fmt_map(&cold.writes),
        cold.reconciles,
        cold.reconcile_mean_ms,
        fmt_map(&cold.reconcile_errors),
        fmt_cpu(&cold.cpu_until_healthy),
    ));
    let l = &summary.apply_latency;
    let bg = &summary.blue_green;
    text.push_str(&format!(
        "\n  Apply to children ({} samples): Deployment p50 {:.1} / p99 {:.1} ms, all 3 children p50 {:.1} ms, watch lag p50 {:.1} ms. \
         Blue-green ({} × {} pods): patch to switch p50 {:.0} ms.",
        l.samples,
        l.ack_to_deployment_ms.p50,
        l.ack_to_deployment_ms.p99,
        l.ack_to_all_children_ms.p50,
        l.watch_lag_ms.p50,
        bg.models,
        bg.replicas,
        bg.patch_to_switch_ms.p50,
    ));
    text
}

/// A new "Operator at scale" section: what is measured; the runs go between the markers.
fn new_section() -> String {
    format!(
        "{SECTION}\n\n\
         `make bench-operator` (`bash bench/operator.sh`; `N=50 bash bench/operator.sh` for a quick run).\n\n\
         | Run (UTC) | N | Load (1 min) | Pods Ready by | Direct: 3N writes accepted | Direct: pods Ready | Operator: children written | Operator: all Healthy | Healthy ÷ accepted / children ÷ accepted | Writes in steady window | RSS / peak | Apply → Deployment p50 (p90) | BG switch after Deployment ready p50 / max | BG switch after pods Ready p50 / max |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
         {ROWS_START}\n{ROWS_END}\n\n\
         {DETAILS_START}\n{DETAILS_END}\n"
    )
}

/// Inserts `row` and `detail` before the end markers of the section; creates the file or the
/// section when missing and leaves everything else as it is.
fn record_into(existing: &str, row: &str, detail: &str) -> Res<String> {
    let mut text = if existing.trim().is_empty() {
        "# Benchmarks\n\n".to_string()
    } else {
        existing.to_string()
    };
    if !text.lines().any(|l| l.trim_end() == SECTION) {
        if !text.ends_with("\n\n") {
            text.push_str(if text.ends_with('\n') { "\n" } else { "\n\n" });
        }
        text.push_str(&new_section());
    }
    let start = text.find(SECTION).ok_or("section")?;
    let end = text[start + SECTION.len()..]
        .find("\n## ")
        .map_or(text.len(), |i| start + SECTION.len() + i + 1);
    let mut section = text[start..end].to_string();
    for (open, close, line) in [(ROWS_START, ROWS_END, row), (DETAILS_START, DETAILS_END, detail)] {
        if !section.contains(open) {
            return Err(format!("{open} is missing from the section {SECTION}").into());
        }
        let at = section.find(close).ok_or_else(|| format!("{close} is missing"))?;
        section.insert_str(at, &format!("{line}\n"));
    }
    text.replace_range(start..end, &section);
    Ok(text)
}

fn record(args: &RecordArgs) -> Res<()> {
    let summary: Summary = serde_json::from_str(&std::fs::read_to_string(&args.summary)?)?;
    let existing = std::fs::read_to_string(&args.file).unwrap_or_default();
    let updated = record_into(&existing, &row(&summary), &details(&summary))?;
    std::fs::write(&args.file, updated)?;
    eprintln!("recorded run {} in {}", summary.run_id, args.file.display());
    Ok(())
}

async fn run(args: RunArgs) -> Res<()> {
    std::fs::create_dir_all(&args.out_dir)?;
    let client = Client::try_default().await?;
    let version = client.apiserver_version().await?;
    let procs = processes(&args.state_dir);
    let run_id = chrono::Utc::now().format("%Y-%m-%d %H:%M").to_string();

    let direct =
        if args.skip_direct { None } else { Some(direct_phase(&client, &args, &procs).await?) };
    let phases = operator_phases(&client, &args, &procs).await?;
    let mut summary = Summary {
        run_id,
        n: args.n,
        command: args.command_line.clone(),
        revision: args.revision.clone(),
        machine: Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: machine_memory_gib(),
            cpu_model: machine_cpu_model(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            kubernetes: version.git_version,
        },
        load_at_start: args.load_at_start.clone(),
        direct_concurrency: args.direct_concurrency,
        operator_args: args.operator_args.clone(),
        kwok_version: args.kwok_version.clone(),
        kwok_stages: args.kwok_stages.clone(),
        kwok_ready_delay: args.kwok_ready_delay.clone(),
        direct,
        cold_start: phases.cold_start,
        steady: phases.steady,
        memory: phases.memory,
        apply_latency: phases.apply_latency,
        blue_green: phases.blue_green,
        checks: Vec::new(),
    };
    summary.checks = checks(&summary);
    let json = serde_json::to_string_pretty(&summary)?;
    std::fs::write(args.out_dir.join("summary.json"), &json)?;
    let markdown = results_markdown(&summary);
    std::fs::write(args.out_dir.join("results.md"), &markdown)?;
    println!("{json}\n\n{markdown}");
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args).await,
        Command::Record(args) => record(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("operator-bench: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let stats = Stats::of(&values);
        assert_eq!((stats.p50, stats.p90, stats.p99, stats.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(Stats::of(&[7.0]).p50, 7.0);
        assert_eq!(Stats::of(&[]).n, 0);
    }

    #[test]
    fn parses_operator_metrics() {
        let page = "# HELP x\n\
            modelship_operator_writes_total{kind=\"deployment\",verb=\"apply\"} 10\n\
            modelship_operator_writes_total{kind=\"status\",verb=\"apply\"} 4\n\
            modelship_operator_reconciles_total 20\n\
            modelship_operator_reconcile_errors_total{category=\"conflict\"} 2\n\
            modelship_operator_reconcile_duration_seconds_sum 0.5\n\
            modelship_operator_reconcile_duration_seconds_count 20\n";
        let m = OperatorMetrics::parse(page);
        assert_eq!(m.total_writes(), 14.0);
        assert_eq!(m.writes["deployment/apply"], 10.0);
        assert_eq!(m.reconciles, 20.0);
        assert_eq!(m.errors["conflict"], 2.0);
        assert_eq!(m.duration_count, 20.0);
    }

    #[test]
    fn a_row_has_a_cell_per_column() {
        let cells = |line: &str| line.matches('|').count();
        let section = new_section();
        let header = section.lines().find(|l| l.starts_with("| Run")).unwrap();
        let summary = Summary { kwok_version: "v0.8.0".into(), ..Summary::default() };
        let row = row(&summary);
        assert_eq!(cells(&row), cells(header), "{row}");
        assert!(row.contains("| KWOK v0.8.0 |"), "{row}");
    }

    #[test]
    fn records_into_its_own_section_only() {
        let serving = "# Benchmarks\n\n## Serving\n\nserving text\n";
        let once = record_into(serving, "| row 1 |", "- detail 1").unwrap();
        assert!(once.starts_with(serving));
        let twice = record_into(&once, "| row 2 |", "- detail 2").unwrap();
        let rows = twice.find("| row 1 |").unwrap() < twice.find("| row 2 |").unwrap();
        assert!(rows, "{twice}");
        // A section after ours is left alone.
        let later = format!("{twice}\n## Later\n\nlater text\n");
        let third = record_into(&later, "| row 3 |", "- detail 3").unwrap();
        assert!(third.ends_with("## Later\n\nlater text\n"), "{third}");
        assert!(third.find("| row 3 |").unwrap() < third.find("## Later").unwrap());
        assert!(third.find("- detail 3").unwrap() < third.find("## Later").unwrap());
        assert!(
            record_into("", "| r |", "- d").unwrap().starts_with("# Benchmarks\n\n## Operator")
        );
    }
}
