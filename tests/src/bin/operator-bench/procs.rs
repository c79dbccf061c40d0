//! Processes, memory, CPU and load, from /proc.

use std::collections::BTreeMap;
use std::path::Path;

use crate::summary::CpuShare;

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

pub fn status_kib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn mib(kib: Option<f64>) -> f64 {
    kib.map_or(f64::NAN, |k| k / 1024.0)
}

pub fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// (name, pid) of the control plane's processes and KWOK, from the state directory.
pub fn processes(state_dir: &Path) -> Vec<(String, u32)> {
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
pub fn cpu_snapshot(processes: &[(String, u32)]) -> BTreeMap<String, f64> {
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

pub fn cpu_shares(
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

pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

pub fn machine_cpu_model() -> String {
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

pub fn machine_memory_gib() -> f64 {
    let kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    });
    round(kib.unwrap_or(0.0) / 1024.0 / 1024.0, 1)
}
