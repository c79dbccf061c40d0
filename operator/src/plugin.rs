//! `kubectl modelship`: sugar over spec edits. Every action is a JSON merge patch of
//! `spec` that a GitOps user could write by hand; the functions here build them, and render
//! what the commands show (pure).

use std::fmt::Write;

use k8s_openapi::jiff::Timestamp;
use modelship_crds::{ModelDeployment, RolloutRecord, StrategyType};
use serde_json::{Value, json};

/// The patch that promotes the rollout in progress.
///
/// A manual canary goes to weight 100; a canary with steps and a blue-green rollout get
/// `approvedVersion` set to the candidate, which releases their manual gates.
pub fn promote_patch(md: &ModelDeployment) -> Result<Value, String> {
    let candidate = candidate(md)?;
    let strategy = &md.spec.strategy;
    let manual_canary = strategy.type_ == StrategyType::Canary
        && strategy.canary.as_ref().is_some_and(|c| c.weight.is_some());
    Ok(if manual_canary {
        json!({"spec": {"strategy": {"canary": {"weight": 100}}}})
    } else {
        json!({"spec": {"strategy": {"approvedVersion": candidate}}})
    })
}

/// The patch that sets a manual canary's weight.
pub fn weight_patch(md: &ModelDeployment, weight: i32) -> Result<Value, String> {
    let strategy = &md.spec.strategy;
    if strategy.type_ != StrategyType::Canary
        || strategy.canary.as_ref().is_none_or(|c| c.weight.is_none())
    {
        return Err("set-weight needs a Canary strategy with spec.strategy.canary.weight".into());
    }
    if !(0..=100).contains(&weight) {
        return Err(format!("weight {weight} is outside 0..100"));
    }
    Ok(json!({"spec": {"strategy": {"canary": {"weight": weight}}}}))
}

/// The patch that rolls back to the stable version: its version and the model file it was
/// rolled out with.
pub fn rollback_patch(md: &ModelDeployment) -> Result<Value, String> {
    let status = md.status.clone().unwrap_or_default();
    let stable = status.stable_version.ok_or("no stable version recorded yet")?;
    if stable == md.spec.model.version {
        return Err(format!("spec.model.version is already the stable version {stable}"));
    }
    let mut model = json!({"version": stable});
    if let Some(source) = status.stable_model {
        model["uri"] = json!(source.uri);
        model["sha256"] = json!(source.sha256);
        model["referenceData"] = json!(source.reference_data);
    }
    Ok(json!({"spec": {"model": model}}))
}

/// The patch that ends the rollout in progress: back to the stable version and its file,
/// so nobody edits the version by hand. The same edit as [`rollback_patch`], refused when no
/// rollout is in progress.
pub fn abort_patch(md: &ModelDeployment) -> Result<Value, String> {
    candidate(md)?;
    rollback_patch(md)
}

/// The patch that retries a version the operator rolled back (failed analysis, or no
/// progress by the deadline): `approvedVersion` newly set to it.
pub fn retry_patch(md: &ModelDeployment) -> Result<Value, String> {
    let status = md.status.clone().unwrap_or_default();
    let aborted = status.aborted_version.ok_or(
        "nothing to retry: status.abortedVersion is empty (to roll a version out again, set \
         spec.model.version)",
    )?;
    if status.aborted_approval.as_deref() == Some(aborted.as_str()) {
        return Err(format!(
            "spec.strategy.approvedVersion already named {aborted} when it was rolled back, so \
             approving it again cannot retry it: set spec.model.version to a new version"
        ));
    }
    Ok(json!({"spec": {"strategy": {"approvedVersion": aborted}}}))
}

fn candidate(md: &ModelDeployment) -> Result<String, String> {
    md.status
        .as_ref()
        .and_then(|s| s.candidate_version.clone())
        .ok_or_else(|| "no rollout in progress (status.candidateVersion is empty)".to_string())
}

/// A readable summary of a ModelDeployment's rollout.
pub fn render_status(md: &ModelDeployment) -> String {
    let status = md.status.clone().unwrap_or_default();
    let name = md.metadata.name.clone().unwrap_or_default();
    let mut out = String::new();
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "{name}: {} ({:?})",
        status.phase.map_or_else(|| "Unknown".to_string(), |p| format!("{p:?}")),
        md.spec.strategy.type_
    );
    let _ = writeln!(out, "  desired version  {}", md.spec.model.version);
    let _ = writeln!(out, "  stable version   {}", opt(&status.stable_version));
    let _ = writeln!(out, "  candidate        {}", opt(&status.candidate_version));
    if let Some(aborted) = &status.aborted_version {
        let _ = writeln!(out, "  rolled back      {aborted}");
    }
    if let Some(color) = &status.active_color {
        let _ = writeln!(out, "  active color     {color}");
    }
    if md.spec.strategy.type_ == StrategyType::Canary {
        let step = status.current_step.map(|s| format!(", step {s}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  canary weight    {}% requested, {}% of ready pods{step}",
            status.canary_weight, status.effective_weight
        );
    }
    let _ = writeln!(out, "  replicas         {}/{} ready", status.ready_replicas, status.replicas);
    for track in &status.tracks {
        let _ = writeln!(
            out,
            "  track {:<10} version {:<12} {}/{} ready",
            track.name, track.version, track.ready_replicas, track.replicas
        );
    }
    for condition in &status.conditions {
        let message = if condition.message.is_empty() {
            String::new()
        } else {
            format!(": {}", condition.message)
        };
        let _ = writeln!(
            out,
            "  {:<12} {:<5} {}{message}",
            condition.type_, condition.status, condition.reason
        );
    }
    if let Some(analysis) = &status.analysis {
        let _ = writeln!(
            out,
            "  analysis of {}: {} measurements, {} failed, {} inconclusive; {}",
            analysis.version,
            analysis.measurements,
            analysis.failures,
            analysis.inconclusive,
            analysis.message.clone().unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "    last window: {}",
            window_line(
                analysis.requests,
                analysis.error_rate,
                analysis.latency_p95_seconds,
                analysis.latency_p99_seconds,
                analysis.accuracy
            )
        );
        if let Some(stable) = &analysis.stable {
            let _ = writeln!(
                out,
                "    stable:      {}",
                window_line(
                    stable.requests,
                    stable.error_rate,
                    stable.latency_p95_seconds,
                    stable.latency_p99_seconds,
                    stable.accuracy
                )
            );
        }
    }
    for record in &status.history {
        let reason = record.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  history: {} {:?} at {}, {}{reason}",
            record.version,
            record.outcome,
            record.finished_at,
            durations(record)
        );
    }
    out
}

/// How long a rollout took to get its pods ready and to finish, from its start.
fn durations(record: &RolloutRecord) -> String {
    let at = |t: Option<&str>| t.and_then(|t| t.parse::<Timestamp>().ok());
    let started = at(record.started_at.as_deref());
    let since = |end: Option<Timestamp>| match (started, end) {
        (Some(s), Some(e)) => seconds(e.duration_since(s).as_secs_f64()),
        _ => "-".to_string(),
    };
    format!(
        "ready after {}, finished after {}",
        since(at(record.ready_at.as_deref())),
        since(at(Some(&record.finished_at)))
    )
}

fn seconds(s: f64) -> String {
    if s < 120.0 { format!("{s:.1}s") } else { format!("{:.1}m", s / 60.0) }
}

/// `kubectl modelship history`: every recorded rollout, newest first, with its times.
pub fn render_history(md: &ModelDeployment) -> String {
    let status = md.status.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<11} {:<25} {:>11} {:>11}  REASON",
        "VERSION", "OUTCOME", "STARTED", "READY", "FINISHED"
    );
    for record in &status.history {
        let at = |t: Option<&str>| t.and_then(|t| t.parse::<Timestamp>().ok());
        let started = at(record.started_at.as_deref());
        let after = |end: Option<Timestamp>| match (started, end) {
            (Some(s), Some(e)) => format!("+{}", seconds(e.duration_since(s).as_secs_f64())),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<14} {:<11} {:<25} {:>11} {:>11}  {}",
            record.version,
            format!("{:?}", record.outcome),
            record.started_at.as_deref().unwrap_or("-"),
            after(at(record.ready_at.as_deref())),
            after(at(Some(&record.finished_at))),
            record.reason.as_deref().unwrap_or("")
        );
    }
    if status.history.is_empty() {
        let _ = writeln!(out, "(no finished rollout yet)");
    }
    out
}

/// `kubectl modelship list`: one line per ModelDeployment.
pub fn render_list(mds: &[ModelDeployment]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<28} {:<12} {:<10} {:<10} {:<11} {:>6} {:>9} {:>7}",
        "NAMESPACE",
        "NAME",
        "STRATEGY",
        "VERSION",
        "STABLE",
        "PHASE",
        "WEIGHT",
        "EFFECTIVE",
        "READY"
    );
    for md in mds {
        let status = md.status.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<20} {:<28} {:<12} {:<10} {:<10} {:<11} {:>6} {:>9} {:>7}",
            md.metadata.namespace.as_deref().unwrap_or("-"),
            md.metadata.name.as_deref().unwrap_or("-"),
            format!("{:?}", md.spec.strategy.type_),
            md.spec.model.version,
            status.stable_version.as_deref().unwrap_or("-"),
            status.phase.map_or_else(|| "-".to_string(), |p| format!("{p:?}")),
            format!("{}%", status.canary_weight),
            format!("{}%", status.effective_weight),
            format!("{}/{}", status.ready_replicas, status.replicas),
        );
    }
    out
}

/// One analysis window in a line: `120 requests, error rate 0.0083, p95 0.0021s, ...`.
fn window_line(
    requests: i64,
    error_rate: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    accuracy: Option<f64>,
) -> String {
    let mut parts = vec![format!("{requests} requests")];
    if let Some(rate) = error_rate {
        parts.push(format!("error rate {rate:.4}"));
    }
    for (name, seconds) in [("p95", p95), ("p99", p99)] {
        if let Some(seconds) = seconds {
            parts.push(format!("{name} {seconds:.4}s"));
        }
    }
    if let Some(accuracy) = accuracy {
        parts.push(format!("accuracy {accuracy:.4}"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests;
