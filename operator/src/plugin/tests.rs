//! The plugin's patches and its status rendering.
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
fn abort_and_retry_are_spec_edits() {
    let in_flight = json!({"stableVersion": "1", "candidateVersion": "2",
                           "stableModel": {"uri": "file:///1.onnx"}});
    let m = md(json!({"type": "Canary", "canary": {"weight": 10}}), in_flight);
    assert_eq!(
        abort_patch(&m).unwrap()["spec"]["model"],
        json!({"version": "1", "uri": "file:///1.onnx", "sha256": null, "referenceData": null})
    );
    let idle =
        md(json!({"type": "Canary", "canary": {"weight": 10}}), json!({"stableVersion": "1"}));
    assert!(abort_patch(&idle).unwrap_err().contains("no rollout in progress"));

    let aborted = md(
        json!({"type": "Canary", "canary": {"weight": 10}}),
        json!({"stableVersion": "1", "abortedVersion": "2"}),
    );
    assert_eq!(
        retry_patch(&aborted).unwrap(),
        json!({"spec": {"strategy": {"approvedVersion": "2"}}})
    );
    let approved_before = md(
        json!({"type": "BlueGreen", "approvedVersion": "2"}),
        json!({"stableVersion": "1", "abortedVersion": "2", "abortedApproval": "2"}),
    );
    assert!(retry_patch(&approved_before).unwrap_err().contains("set spec.model.version"));
    assert!(retry_patch(&idle).unwrap_err().contains("nothing to retry"));
}

#[test]
fn history_shows_how_long_each_rollout_took() {
    let m = md(
        json!({"type": "BlueGreen"}),
        json!({"history": [
            {"version": "3", "outcome": "Aborted", "startedAt": "2026-01-01T00:00:00Z",
             "finishedAt": "2026-01-01T00:10:00Z", "reason": "no progress"},
            {"version": "2", "outcome": "Promoted", "startedAt": "2025-12-31T00:00:00Z",
             "readyAt": "2025-12-31T00:00:12.5Z", "finishedAt": "2025-12-31T00:00:40Z"},
            {"version": "1", "outcome": "Promoted", "finishedAt": "2025-12-30T00:00:00Z"}
        ]}),
    );
    let text = render_history(&m);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("VERSION"), "{text}");
    assert!(
        lines[1].contains("Aborted")
            && lines[1].contains("+10.0m")
            && lines[1].contains("no progress"),
        "{text}"
    );
    assert!(lines[2].contains("+12.5s") && lines[2].contains("+40.0s"), "{text}");
    assert!(
        lines[3].contains("Promoted") && lines[3].contains(" - "),
        "an old record without times: {text}"
    );
    let summary = render_status(&m);
    assert!(summary.contains("ready after 12.5s, finished after 40.0s"), "{summary}");
}

#[test]
fn list_has_a_line_per_model() {
    let a = md(
        json!({"type": "Canary", "canary": {"weight": 10}}),
        json!({"phase": "Paused", "stableVersion": "1", "canaryWeight": 10, "effectiveWeight": 20,
                      "replicas": 5, "readyReplicas": 5}),
    );
    let text = render_list(&[a]);
    let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["ml", "m", "Canary", "2", "1", "Paused", "10%", "20%", "5/5"]);
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
        text.contains("last window: 120 requests, error rate 0.0000, p95 0.0021s, accuracy 0.9100"),
        "{text}"
    );
    assert!(text.contains("stable:      480 requests, error rate 0.0020, p95 0.0020s"), "{text}");
}
