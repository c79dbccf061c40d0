//! What a run produces: summary.json, read back by `operator-bench record`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::apiserver::ApiCost;

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct Stats {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Stats {
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
pub struct Machine {
    pub nproc: usize,
    pub memory_gib: f64,
    pub cpu_model: String,
    pub kernel: String,
    pub kubernetes: String,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct CpuShare {
    pub process: String,
    pub cpu_seconds: f64,
    /// Average cores used over the phase: cpu_seconds / wall seconds.
    pub cores: f64,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct DirectResult {
    pub load_avg: String,
    pub writes: usize,
    pub concurrency: usize,
    /// First write sent to last write accepted.
    pub accepted_seconds: f64,
    pub write_latency_ms: Stats,
    pub write_latency_ms_by_kind: BTreeMap<String, Stats>,
    pub retries: usize,
    /// Seconds at which 10 ... 100 % of the writes had been accepted.
    pub accepted_progress: BTreeMap<String, f64>,
    /// First write sent to every Deployment reporting its pod ready.
    pub pods_ready_seconds: f64,
    pub pods_ready_progress: BTreeMap<String, f64>,
    pub cpu_until_accepted: Vec<CpuShare>,
    /// The API server's requests and watch events until the last write was accepted.
    #[serde(default)]
    pub api_until_accepted: ApiCost,
    pub cleanup_seconds: f64,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct ColdStartResult {
    pub load_avg: String,
    /// Operator process start to the first child seen.
    pub first_child_seconds: f64,
    /// Operator process start to the last of the 3N children seen.
    pub children_seconds: f64,
    /// Operator process start to the last ModelDeployment seen Healthy with its pods ready.
    pub healthy_seconds: f64,
    pub children_progress: BTreeMap<String, f64>,
    pub healthy_progress: BTreeMap<String, f64>,
    pub writes: BTreeMap<String, f64>,
    pub reconciles: f64,
    pub reconcile_errors: BTreeMap<String, f64>,
    pub reconcile_mean_ms: f64,
    pub cpu_until_healthy: Vec<CpuShare>,
    /// The API server's requests and watch events until every ModelDeployment was Healthy.
    #[serde(default)]
    pub api_until_healthy: ApiCost,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct SteadyResult {
    /// Writes between the last ModelDeployment turning Healthy and the start of the window.
    pub writes_while_settling: f64,
    pub settle_seconds: f64,
    pub window_seconds: f64,
    pub resync_seconds: u64,
    pub writes_in_window: f64,
    pub writes_in_window_by_kind: BTreeMap<String, f64>,
    pub reconciles_in_window: f64,
    pub cpu_in_window: Vec<CpuShare>,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct MemoryResult {
    pub rss_at_healthy_mib: f64,
    pub rss_after_steady_mib: f64,
    pub hwm_after_steady_mib: f64,
    pub hwm_at_end_mib: f64,
    /// At the end: per kind, objects the operator caches and their JSON size in KiB as it
    /// keeps them (children without managedFields; ModelDeployments as listed).
    pub cached_objects: BTreeMap<String, (usize, f64)>,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct LatencyResult {
    pub samples: usize,
    pub ack_to_deployment_ms: Stats,
    pub ack_to_all_children_ms: Stats,
    pub sent_to_deployment_ms: Stats,
    /// The bench's own create response to the bench's watch seeing that ModelDeployment:
    /// how much the watch delivery adds to the numbers above.
    pub watch_lag_ms: Stats,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct BlueGreenResult {
    pub models: usize,
    pub replicas: i32,
    /// New-color Deployment status settled (what the operator reacts to) to the Service
    /// selecting the new color.
    pub after_deployment_ready_ms: Stats,
    /// Last new-color pod Ready to the Service selecting the new color.
    pub after_pods_ready_ms: Stats,
    /// Version patched to the Service selecting the new color.
    pub patch_to_switch_ms: Stats,
    pub per_model: Vec<BlueGreenModel>,
}

/// One blue-green switch; times in ms after the version patch was sent.
#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct BlueGreenModel {
    pub name: String,
    pub new_color: String,
    /// Wall-clock time of the patch, to compare with the operator's log.
    pub patched_utc: String,
    pub pods_ready_ms: f64,
    pub deployment_ready_ms: f64,
    pub switched_ms: f64,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct Check {
    pub name: String,
    pub target: String,
    pub result: String,
    pub met: bool,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct Summary {
    pub run_id: String,
    pub n: usize,
    pub command: String,
    pub revision: String,
    pub machine: Machine,
    pub load_at_start: String,
    pub direct_concurrency: usize,
    pub operator_args: Vec<String>,
    pub kwok_version: String,
    pub kwok_stages: Vec<String>,
    pub kwok_ready_delay: String,
    pub direct: Option<DirectResult>,
    pub cold_start: ColdStartResult,
    pub steady: SteadyResult,
    pub memory: MemoryResult,
    pub apply_latency: LatencyResult,
    pub blue_green: BlueGreenResult,
    pub checks: Vec<Check>,
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
}
