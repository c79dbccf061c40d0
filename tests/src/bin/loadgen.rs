//! `loadgen`: bounded load to a Service's ClusterIP (found through the API server in
//! KUBECONFIG; kube-proxy routes each connection to a ready pod), with a summary of what
//! answered. Used by the demo to show that a rollout loses no request.
//!
//! loadgen --service NAME --namespace NS [--rate 50] [--seconds 30] [--path /predict]
//!         [--body JSON] [--stop-file PATH]

use std::time::Duration;

use clap::Parser;
use modelship_tests::load::Load;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    service: String,
    #[arg(long)]
    namespace: String,
    #[arg(long, default_value = "/predict")]
    path: String,
    /// Request body; defaults to 20 features for the demo models.
    #[arg(long)]
    body: Option<String>,
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Longest run; at most 600 seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Stop early once this file exists.
    #[arg(long)]
    stop_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let body = args.body.unwrap_or_else(|| {
        let features: Vec<String> =
            (0..20).map(|i| format!("{:.1}", f64::from(i) / 10.0 - 1.0)).collect();
        format!("{{\"features\": [{}]}}", features.join(", "))
    });
    let limit = Duration::from_secs(args.seconds.min(600));
    let client = modelship_tests::harness::client().await;
    let target =
        modelship_tests::harness::service_addr(&client, &args.namespace, &args.service).await;
    let load = Load::start(target, &args.path, &body, args.rate, limit);
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if args.stop_file.as_ref().is_some_and(|f| f.exists()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = load.stop().await;
    let versions: Vec<String> = report
        .by_version()
        .iter()
        .map(|(v, n)| format!("version {}: {n}", if v.is_empty() { "-" } else { v }))
        .collect();
    println!(
        "{} requests in {:.1}s, {} failed; {}; p50 {:.1} ms, p99 {:.1} ms",
        report.sent(),
        started.elapsed().as_secs_f64(),
        report.failures().len(),
        versions.join(", "),
        report.latency_quantile(0.5).as_secs_f64() * 1000.0,
        report.latency_quantile(0.99).as_secs_f64() * 1000.0,
    );
    if !report.failures().is_empty() {
        println!("{}", report.describe_failures());
        std::process::exit(1);
    }
}
