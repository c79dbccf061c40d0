//! `node-bench`: how fast the test node turns a ModelDeployment into ready serving pods.
//!
//! For each round, applies a ModelDeployment of `--replicas` pods (real serving pods with the
//! small logistic-regression fixture from the namespace's `models` claim), watches its pods,
//! and records for each pod the time from its creation being seen in the watch to its Ready
//! condition being seen; then deletes the ModelDeployment and waits for its pods to go. Every
//! time is taken with one monotonic clock in this process. Prints one JSON object with every
//! sample and the p50/p90. Needs an operator watching the namespace (bench/node.sh starts one).
//!
//! node-bench --namespace NS [--replicas 4] [--rounds 5] [--keep-last]

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use modelship_tests::harness::{client, wait_until};
use modelship_tests::models::{apply, model, models};
use serde_json::json;
use tokio::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    namespace: String,
    #[arg(long, default_value_t = 4)]
    replicas: i32,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Leave the last round's pods running (to measure them).
    #[arg(long)]
    keep_last: bool,
    /// Upper bound of each wait.
    #[arg(long, default_value_t = 120)]
    timeout_seconds: u64,
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The `q` quantile of `samples` (nearest rank), in seconds.
fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &args.namespace);
    let timeout = Duration::from_secs(args.timeout_seconds);
    let mut samples = Vec::new();
    let mut all_ready = Vec::new();
    for round in 0..args.rounds {
        let name = format!("node-bench-{round}");
        let selector = format!("modelship.io/name={name}");
        let mut stream =
            watcher::watcher(pods.clone(), watcher::Config::default().labels(&selector)).boxed();
        let started = Instant::now();
        let strategy = json!({"type": "RollingUpdate"});
        apply(&client, &args.namespace, model(&name, "1", args.replicas, strategy)).await;
        let mut seen: BTreeMap<String, Instant> = BTreeMap::new();
        let mut became_ready: BTreeMap<String, Instant> = BTreeMap::new();
        let deadline = started + timeout;
        while became_ready.len() < args.replicas as usize {
            let event = tokio::time::timeout_at(deadline, stream.next())
                .await
                .unwrap_or_else(|_| panic!("round {round}: pods not ready within {timeout:?}"));
            let now = Instant::now();
            let changed = match event {
                Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => vec![pod],
                Some(Ok(_)) => continue,
                Some(Err(error)) => panic!("watch: {error}"),
                None => panic!("the watch ended"),
            };
            for pod in changed {
                let pod_name = pod.name_any();
                seen.entry(pod_name.clone()).or_insert(now);
                if ready(&pod) {
                    became_ready.entry(pod_name).or_insert(now);
                }
            }
        }
        for (pod, at) in &became_ready {
            samples.push(at.duration_since(seen[pod]).as_secs_f64());
        }
        let last = became_ready.values().max().copied().unwrap_or(started);
        all_ready.push(last.duration_since(started).as_secs_f64());
        if args.keep_last && round + 1 == args.rounds {
            break;
        }
        models(&client, &args.namespace)
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete the ModelDeployment");
        wait_until(timeout, "the pods to go", async || {
            pods.list(&ListParams::default().labels(&selector))
                .await
                .is_ok_and(|list| list.items.is_empty())
        })
        .await;
    }
    let report = json!({
        "replicas": args.replicas,
        "rounds": args.rounds,
        "pod_create_to_ready_seconds": {
            "p50": quantile(&samples, 0.5),
            "p90": quantile(&samples, 0.9),
            "max": quantile(&samples, 1.0),
            "samples": samples,
        },
        "apply_to_all_ready_seconds": {
            "p50": quantile(&all_ready, 0.5),
            "max": quantile(&all_ready, 1.0),
            "samples": all_ready,
        },
    });
    println!("{report}");
}
