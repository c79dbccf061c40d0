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
//!
//! Modules: `cluster` (ModelDeployments, namespaces, waits), `watch` (the milestones the
//! bench's watches see), `procs` (CPU, memory and load from /proc), `operator` (the operator
//! process and its metrics), `direct` and `phases` (the measurements), `summary` (what a run
//! produces) and `record` (targets, results.md and BENCHMARKS.md).

mod apiserver;
mod cluster;
mod direct;
mod operator;
mod phases;
mod procs;
mod record;
mod summary;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kube::Client;

use crate::direct::direct_phase;
use crate::phases::operator_phases;
use crate::procs::{machine_cpu_model, machine_memory_gib, processes};
use crate::record::{checks, record, results_markdown};
use crate::summary::{Machine, Summary};

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
