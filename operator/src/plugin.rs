//! `kubectl modelship`: sugar over spec edits. Every action is a JSON merge patch of
//! `spec` that a GitOps user could write by hand; the functions here build them (pure).

use std::fmt::Write;

use modelship_crds::{ModelDeployment, StrategyType};
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
        let _ = writeln!(out, "  canary weight    {}%{step}", status.canary_weight);
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
            "  history: {} {:?} at {}{reason}",
            record.version, record.outcome, record.finished_at
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
mod tests {
    use super::*;

    fn md(strategy: Value, status: Value) -> ModelDeployment {
        serde_json::from_value(json!({
            "apiVersion": "modelship.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m", "namespace": "ml"},
            "spec": {"model": {"version": "2", "uri": "file:///2.onnx"}, "strategy": strategy},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn promote_depends_on_the_strategy() {
        let in_flight = json!({"stableVersion": "1", "candidateVersion": "2"});
        let manual = md(json!({"type": "Canary", "canary": {"weight": 10}}), in_flight.clone());
        assert_eq!(
            promote_patch(&manual).unwrap(),
            json!({"spec": {"strategy": {"canary": {"weight": 100}}}})
        );
        let stepped =
            md(json!({"type": "Canary", "canary": {"steps": [{"pause": {}}]}}), in_flight.clone());
        assert_eq!(
            promote_patch(&stepped).unwrap(),
            json!({"spec": {"strategy": {"approvedVersion": "2"}}})
        );
        let blue_green = md(json!({"type": "BlueGreen"}), in_flight);
        assert_eq!(
            promote_patch(&blue_green).unwrap(),
            json!({"spec": {"strategy": {"approvedVersion": "2"}}})
        );
        let idle = md(json!({"type": "BlueGreen"}), json!({"stableVersion": "2"}));
        assert!(promote_patch(&idle).unwrap_err().contains("no rollout in progress"));
    }

    #[test]
    fn rollback_restores_version_and_file() {
        let status = json!({"stableVersion": "1", "candidateVersion": "2",
                            "stableModel": {"uri": "file:///1.onnx", "sha256": null}});
        let m = md(json!({"type": "Canary", "canary": {"weight": 10}}), status);
        assert_eq!(
            rollback_patch(&m).unwrap(),
            json!({"spec": {"model": {"version": "1", "uri": "file:///1.onnx", "sha256": null, "referenceData": null}}})
        );
        let idle = md(json!({"type": "RollingUpdate"}), json!({"stableVersion": "2"}));
        assert!(rollback_patch(&idle).is_err());
    }

    #[test]
    fn weight_only_for_manual_canaries() {
        let manual = md(json!({"type": "Canary", "canary": {"weight": 10}}), json!({}));
        assert_eq!(
            weight_patch(&manual, 40).unwrap(),
            json!({"spec": {"strategy": {"canary": {"weight": 40}}}})
        );
        assert!(weight_patch(&manual, 140).is_err());
        let blue_green = md(json!({"type": "BlueGreen"}), json!({}));
        assert!(weight_patch(&blue_green, 40).is_err());
    }

    #[test]
    fn status_summary() {
        let m = md(
            json!({"type": "Canary", "canary": {"weight": 10}}),
            json!({"phase": "Paused", "stableVersion": "1", "candidateVersion": "2", "canaryWeight": 10,
                   "replicas": 4, "readyReplicas": 4,
                   "tracks": [{"name": "stable", "version": "1", "replicas": 3, "readyReplicas": 3}]}),
        );
        let text = render_status(&m);
        assert!(text.contains("m: Paused (Canary)"), "{text}");
        assert!(text.contains("canary weight    10%"), "{text}");
        assert!(text.contains("track stable"), "{text}");
    }

    #[test]
    fn status_shows_both_analysis_windows() {
        let m = md(
            json!({"type": "Canary", "canary": {"weight": 10}}),
            json!({"analysis": {"version": "2", "measurements": 3, "failures": 0, "inconclusive": 1,
                                "message": "all thresholds met", "requests": 120, "errorRate": 0.0,
                                "latencyP95Seconds": 0.0021, "accuracy": 0.91,
                                "stable": {"requests": 480, "errorRate": 0.002, "latencyP95Seconds": 0.002}}}),
        );
        let text = render_status(&m);
        assert!(
            text.contains(
                "last window: 120 requests, error rate 0.0000, p95 0.0021s, accuracy 0.9100"
            ),
            "{text}"
        );
        assert!(
            text.contains("stable:      480 requests, error rate 0.0020, p95 0.0020s"),
            "{text}"
        );
    }
}
