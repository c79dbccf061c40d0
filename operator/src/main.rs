//! `modelship-operator`: runs the ModelDeployment controller, optionally behind leader
//! election, with an admin server for metrics and probes.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use kube::Client;
use modelship_operator::Result;
use modelship_operator::admin::{self, AdminState};
use modelship_operator::controller::{self, Settings};
use modelship_operator::desired::Defaults;
use modelship_operator::leader::{self, LeaseSettings};
use modelship_operator::metrics::Metrics;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
#[command(version, about = "Reconciles ModelDeployments into Deployments, Services and HPAs")]
struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "MODELSHIP_NAMESPACE")]
    namespace: Option<String>,

    /// Serving image for ModelDeployments that do not name one.
    #[arg(
        long,
        env = "MODELSHIP_SERVING_IMAGE",
        default_value = "ghcr.io/modelship/serving:0.1.0"
    )]
    serving_image: String,

    /// Address of the admin server (/metrics, /healthz, /readyz).
    #[arg(long, env = "MODELSHIP_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    admin_listen: SocketAddr,

    /// Where analysis scrapes a serving pod's metrics; `{ip}`, `{port}`, `{namespace}` and
    /// `{name}` are filled in.
    #[arg(long, env = "MODELSHIP_POD_METRICS_URL", default_value = "http://{ip}:{port}/metrics")]
    pod_metrics_url: String,

    /// ModelDeployments reconciled at the same time.
    #[arg(long, env = "MODELSHIP_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,

    /// Reconcile every ModelDeployment at least this often, in seconds.
    #[arg(long, env = "MODELSHIP_RESYNC_SECONDS", default_value_t = 600)]
    resync_seconds: u64,

    /// A new ModelDeployment's first status waits this long, in seconds, for its pods to come
    /// up while it would only say `Progressing`: a model ready by then gets one status write,
    /// `Healthy`. 0 writes `Progressing` at once.
    #[arg(long, env = "MODELSHIP_FIRST_STATUS_GRACE_SECONDS", default_value_t = 5)]
    first_status_grace_seconds: u64,

    /// Run the controller only while holding the leader lease.
    #[arg(long, env = "MODELSHIP_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,

    /// Name of the leader Lease.
    #[arg(long, env = "MODELSHIP_LEASE_NAME", default_value = "modelship-operator")]
    lease_name: String,

    /// Namespace of the leader Lease (default: $POD_NAMESPACE, else the watched namespace,
    /// else `default`).
    #[arg(long, env = "MODELSHIP_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,

    #[arg(long, env = "MODELSHIP_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,

    #[arg(long, env = "MODELSHIP_LEASE_GRACE_SECONDS", default_value_t = 5)]
    lease_grace_seconds: u64,

    /// Identity in the lease and on events (default: $POD_NAME or the host name, plus the
    /// process id).
    #[arg(long, env = "MODELSHIP_IDENTITY")]
    identity: Option<String>,

    /// Liveness fails after watches have failed without a success for this long.
    #[arg(long, env = "MODELSHIP_WATCH_FAILURE_SECONDS", default_value_t = 300)]
    watch_failure_seconds: i64,

    /// After SIGTERM, exit at the latest after this many seconds, even while the API server
    /// is unreachable.
    #[arg(long, env = "MODELSHIP_SHUTDOWN_SECONDS", default_value_t = 10)]
    shutdown_seconds: u64,

    /// Log format: text or json.
    #[arg(long, env = "MODELSHIP_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(&args.log_format);
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            error!(%error, category = error.category(), "operator failed");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,kube_lease_manager=warn")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn identity(args: &Args) -> String {
    args.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "modelship-operator".into());
        format!("{host}-{}", std::process::id())
    })
}

async fn run(args: Args) -> Result<ExitCode> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let synced = Arc::new(AtomicBool::new(false));

    let listener = tokio::net::TcpListener::bind(args.admin_listen).await?;
    info!(address = %listener.local_addr()?, "admin server listening");
    let admin_state = AdminState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        watch_failure_window_seconds: args.watch_failure_seconds,
    };
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, admin::router(admin_state)).await {
            error!(error = %err, "admin server stopped");
        }
    });

    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone(), Duration::from_secs(args.shutdown_seconds));

    let identity = identity(&args);
    let settings = Settings {
        namespace: args.namespace.clone(),
        defaults: Defaults { serving_image: args.serving_image.clone() },
        pod_metrics_url: args.pod_metrics_url.clone(),
        concurrency: args.concurrency,
        resync: Duration::from_secs(args.resync_seconds),
        first_status_grace: Duration::from_secs(args.first_status_grace_seconds),
        identity: identity.clone(),
    };
    ready.store(true, Ordering::Release);

    if !args.leader_elect {
        controller::run(client, settings, metrics, synced, shutdown.clone().cancelled_owned())
            .await?;
        return Ok(ExitCode::SUCCESS);
    }

    let lease = LeaseSettings {
        name: args.lease_name.clone(),
        namespace: args
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| args.namespace.clone())
            .unwrap_or_else(|| "default".into()),
        identity,
        duration_seconds: args.lease_duration_seconds,
        grace_seconds: args.lease_grace_seconds,
    };
    let Some(leadership) = leader::acquire(client.clone(), lease, shutdown.clone()).await? else {
        info!("shut down before becoming the leader");
        return Ok(ExitCode::SUCCESS);
    };
    metrics.leader.set(1);
    // The controller stops on SIGTERM or when leadership is lost, whichever comes first.
    let stop = CancellationToken::new();
    let (on_signal, on_lost, stop_trigger) =
        (shutdown.clone(), leadership.lost.clone(), stop.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = on_signal.cancelled() => {}
            () = on_lost.cancelled() => {}
        }
        stop_trigger.cancel();
    });
    let lost = leadership.lost.clone();
    let controller =
        controller::run(client, settings, metrics.clone(), synced, stop.cancelled_owned());
    tokio::select! {
        result = controller => result?,
        // A deposed leader must stop writing now: exiting aborts in-flight requests too, so
        // nothing of this instance reaches the API server once another may lead.
        () = lost.cancelled() => {}
    }
    metrics.leader.set(0);
    if leadership.lost.is_cancelled() {
        error!("leadership lost; exiting so that only the new leader writes");
        std::process::exit(1);
    }
    leadership.release().await;
    Ok(ExitCode::SUCCESS)
}

/// First SIGTERM or SIGINT: start a graceful shutdown and arm a hard deadline. Second
/// signal: exit at once.
fn spawn_signal_handler(shutdown: CancellationToken, grace: Duration) {
    tokio::spawn(async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(err) => {
                    error!(error = %err, "cannot listen for SIGTERM");
                    return;
                }
            };
        let mut next_signal = async || {
            tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            }
        };
        let first = next_signal().await;
        info!(signal = first, "shutting down");
        shutdown.cancel();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            warn!(?grace, "graceful shutdown took too long; exiting");
            std::process::exit(0);
        });
        let second = next_signal().await;
        warn!(signal = second, "second signal; exiting now");
        std::process::exit(0);
    });
}
