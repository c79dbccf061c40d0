//! Targets met or not, results.md, and the runs in BENCHMARKS.md.

use std::collections::BTreeMap;

use crate::apiserver;
use crate::summary::{Check, CpuShare, Summary};
use crate::{RecordArgs, Res};

const SECTION: &str = "## Operator at scale";
const ROWS_START: &str = "<!-- operator-bench:runs -->";
const ROWS_END: &str = "<!-- /operator-bench:runs -->";
const DETAILS_START: &str = "<!-- operator-bench:details -->";
const DETAILS_END: &str = "<!-- /operator-bench:details -->";

pub fn checks(summary: &Summary) -> Vec<Check> {
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

pub fn results_markdown(summary: &Summary) -> String {
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
        text.push_str(&format!(
            "\n  API server until the direct writes were accepted: {}.",
            apiserver::describe(&d.api_until_accepted)
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
    text.push_str(&format!(
        "\n  API server until all Healthy: {}.",
        apiserver::describe(&cold.api_until_healthy)
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

pub fn record(args: &RecordArgs) -> Res<()> {
    let summary: Summary = serde_json::from_str(&std::fs::read_to_string(&args.summary)?)?;
    let existing = std::fs::read_to_string(&args.file).unwrap_or_default();
    let updated = record_into(&existing, &row(&summary), &details(&summary))?;
    std::fs::write(&args.file, updated)?;
    eprintln!("recorded run {} in {}", summary.run_id, args.file.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
