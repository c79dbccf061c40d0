//! Alert rules and dashboard queries: promtool checks and unit tests of every alert, and every
//! metric they read exists.

use super::*;

/// The alert rules pass `promtool check rules`, and each alert fires above its threshold and
/// stays quiet below it (`promtool test rules` with synthetic series). Every dashboard query
/// parses, and every metric the rules and the dashboard read exists: the operator's from its
/// registry, the rollout state from the kube-state-metrics configuration.
#[test]
pub(crate) fn alert_rules_and_dashboard_queries_are_valid_and_fire_at_the_thresholds() {
    let promtool = go_tool("promtool");
    let dir = TempDir::new("chart-rules");
    let objects = render(&variants()[1].1);
    let rule = one(&objects, "PrometheusRule");
    let rules_file = dir.write("rules.yaml", &serde_yaml::to_string(&rule["spec"]).unwrap());
    run_ok(
        Command::new(&promtool).args(["check", "rules"]).arg(&rules_file),
        "promtool check rules",
    );
    // Every alert of the chart is tested, firing once and quiet once; a new alert without a
    // promtool case fails here.
    let alerts: BTreeSet<String> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    let (firing, quiet) = alert_test_coverage(ALERT_TESTS);
    assert!(alerts.len() >= 9, "the rules lost alerts: {alerts:?}");
    assert_eq!(firing, alerts, "alerts with a promtool case where they fire");
    assert_eq!(quiet, alerts, "alerts with a promtool case where they stay quiet");
    let test_file = dir.write("rules_test.yaml", ALERT_TESTS);
    let out = run_ok(
        Command::new(&promtool).args(["test", "rules"]).arg(&test_file).current_dir(&dir.0),
        "promtool test rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");

    // Dashboard queries, with Grafana's variables filled in, as recording rules.
    let configmap = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| name(c).ends_with("-dashboard"))
        .expect("dashboard ConfigMap");
    assert_eq!(configmap["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: Value =
        serde_json::from_str(configmap["data"]["modelship.json"].as_str().unwrap()).expect("JSON");
    let mut titles = BTreeSet::new();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        titles.insert(panel["title"].as_str().unwrap().to_string());
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for wanted in [
        "Request rate",
        "Error rate",
        "Latency p50 and p95",
        "Accuracy",
        "Data drift score",
        "Canary weight",
        "Phase",
        "Versions",
        "Reconciles",
        "Leader",
    ] {
        assert!(titles.contains(wanted), "dashboard lacks panel {wanted}: {titles:?}");
    }
    let recording: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let q = q
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$model", ".*");
            json!({"record": format!("dashboard:query_{i}"), "expr": q})
        })
        .collect();
    let file = dir.write(
        "dashboard-rules.yaml",
        &serde_yaml::to_string(&json!({"groups": [{"name": "dashboard", "rules": recording}]}))
            .unwrap(),
    );
    run_ok(
        Command::new(&promtool).args(["check", "rules"]).arg(&file),
        "promtool check (dashboard)",
    );

    // Every metric name read exists.
    let exprs: Vec<String> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .chain(queries)
        .collect();
    let known = known_metrics(&objects);
    for expr in &exprs {
        for metric in metric_names(expr) {
            assert!(known.contains(&metric), "{metric} (in {expr}) is exported by nothing");
        }
    }
}

/// The alerts a promtool test file expects to fire somewhere, and those it expects quiet
/// somewhere (an `alert_rule_test` with empty `exp_alerts`).
pub(crate) fn alert_test_coverage(tests: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let file: Value = serde_yaml::from_str(tests).expect("the promtool tests are YAML");
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for case in file["tests"].as_array().into_iter().flatten() {
        for check in case["alert_rule_test"].as_array().into_iter().flatten() {
            let name = check["alertname"].as_str().unwrap_or_default().to_string();
            let expected = check["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected == 0 {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    (firing, quiet)
}

/// Metric names in a PromQL expression that belong to Modelship.
pub(crate) fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic()
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == '_'))
        {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_') {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            if word.starts_with("ml_") || word.starts_with("modelship_") {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Series names the operator, the serving pods and kube-state-metrics export.
pub(crate) fn known_metrics(objects: &[Value]) -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    // The operator's registry, as it encodes itself.
    let metrics = modelship_operator::metrics::Metrics::default();
    // Families without samples are not encoded: give each labelled family one.
    metrics
        .reconcile_errors
        .get_or_create(&modelship_operator::metrics::CategoryLabels { category: "conflict" })
        .inc();
    metrics.count_write("deployment", "apply");
    let operator = metrics.encode();
    for line in operator.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (family, kind) = (parts.next().unwrap(), parts.next().unwrap());
            match kind {
                "counter" => {
                    known.insert(format!("{family}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        known.insert(format!("{family}{suffix}"));
                    }
                }
                _ => {
                    known.insert(family.to_string());
                }
            }
        }
    }
    // The serving pods' documented families.
    for family in [
        "ml_requests_total",
        "ml_request_duration_seconds_bucket",
        "ml_request_duration_seconds_sum",
        "ml_request_duration_seconds_count",
        "ml_predictions_total",
        "ml_data_drift_score",
        "ml_model_accuracy",
        "ml_queue_depth",
        "ml_batch_size_bucket",
    ] {
        known.insert(family.to_string());
    }
    // kube-state-metrics custom resource state: prefix + name of every metric configured.
    let configmap = of_kind(objects, "ConfigMap")
        .into_iter()
        .find(|c| name(c).ends_with("-kube-state-metrics"))
        .expect("kube-state-metrics ConfigMap");
    let config = &yaml_documents(configmap["data"]["config.yaml"].as_str().unwrap())[0];
    assert_eq!(config["kind"], "CustomResourceStateMetrics");
    for resource in config["spec"]["resources"].as_array().unwrap() {
        let gvk = &resource["groupVersionKind"];
        assert_eq!(
            (gvk["group"].as_str(), gvk["version"].as_str(), gvk["kind"].as_str()),
            (Some("modelship.io"), Some("v1alpha1"), Some("ModelDeployment"))
        );
        let prefix = resource["metricNamePrefix"].as_str().unwrap();
        for metric in resource["metrics"].as_array().unwrap() {
            known.insert(format!("{prefix}_{}", metric["name"].as_str().unwrap()));
            // Paths point into the CRD's schema.
            let each = &metric["each"];
            let body = &each[lower_first(each["type"].as_str().unwrap())];
            let path = strings(&body["path"]);
            assert!(crd_has_path(&path), "{path:?} is not a field of ModelDeployment");
            if path.is_empty() {
                for (label, from) in body["labelsFromPath"].as_object().into_iter().flatten() {
                    let from = strings(from);
                    assert!(crd_has_path(&from), "label {label} reads {from:?}, not a field");
                }
            }
        }
    }
    assert!(operator.contains("modelship_operator_leader"), "{operator}");
    known
}

pub(crate) fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_ascii_lowercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// Whether `path` (as in kube-state-metrics: [status, phase]) is a field of the CRD schema.
pub(crate) fn crd_has_path(path: &[String]) -> bool {
    if path.is_empty() {
        return true;
    }
    let crd = &yaml_documents(&read(chart().join("crds/modeldeployments.modelship.io.yaml")))[0];
    let mut schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    for segment in path {
        schema = &schema["properties"][segment.as_str()];
        if schema.is_null() {
            return false;
        }
    }
    true
}

/// promtool unit tests of the alerts with the default thresholds (error rate 0.05, p95 latency
/// 1 s, drift 0.3, accuracy drop 0.1). In each case one model version is just past the
/// threshold and another stays below it; only the first may fire.
pub(crate) const ALERT_TESTS: &str = r#"
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - name: error rate
    interval: 1m
    input_series:
      - series: 'ml_requests_total{namespace="ml",model="fraud",version="2",status="success"}'
        values: '0+90x30'
      - series: 'ml_requests_total{namespace="ml",model="fraud",version="2",status="error"}'
        values: '0+6x30'
      - series: 'ml_requests_total{namespace="ml",model="fraud",version="2",status="rejected"}'
        values: '0+4x30'
      - series: 'ml_requests_total{namespace="ml",model="fraud",version="1",status="success"}'
        values: '0+96x30'
      - series: 'ml_requests_total{namespace="ml",model="fraud",version="1",status="invalid"}'
        values: '0+20x30'
      - series: 'ml_requests_total{namespace="ml",model="fraud",version="1",status="error"}'
        values: '0+4x30'
    alert_rule_test:
      - eval_time: 3m
        alertname: ModelshipHighErrorRate
        exp_alerts: []
      - eval_time: 15m
        alertname: ModelshipHighErrorRate
        exp_alerts:
          - exp_labels: {severity: critical, team: ml-platform, namespace: ml, model: fraud, version: "2"}
            exp_annotations:
              summary: "Model fraud version 2 fails 10% of its requests"
              description: "More than 0.05 of the requests to ml/fraud version 2 failed over 5m (status error or rejected)."
  - name: p95 latency
    interval: 1m
    input_series:
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="2",le="0.5"}'
        values: '0x30'
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="2",le="1"}'
        values: '0x30'
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="2",le="2.5"}'
        values: '0+100x30'
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="2",le="+Inf"}'
        values: '0+100x30'
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="1",le="0.5"}'
        values: '0x30'
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="1",le="1"}'
        values: '0+100x30'
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="1",le="2.5"}'
        values: '0+100x30'
      - series: 'ml_request_duration_seconds_bucket{namespace="ml",model="fraud",version="1",le="+Inf"}'
        values: '0+100x30'
    alert_rule_test:
      - eval_time: 3m
        alertname: ModelshipHighLatencyP95
        exp_alerts: []
      - eval_time: 15m
        alertname: ModelshipHighLatencyP95
        exp_alerts:
          - exp_labels: {severity: warning, team: ml-platform, namespace: ml, model: fraud, version: "2"}
            exp_annotations:
              summary: "Model fraud version 2 p95 latency is 2.425s"
              description: "The 95th-percentile latency of ml/fraud version 2 is above 1 s over 5m."
  - name: drift
    interval: 1m
    input_series:
      - series: 'ml_data_drift_score{namespace="ml",model="fraud",version="2",pod="a"}'
        values: '0.31x40'
      - series: 'ml_data_drift_score{namespace="ml",model="fraud",version="2",pod="b"}'
        values: '0.1x40'
      - series: 'ml_data_drift_score{namespace="ml",model="fraud",version="1",pod="c"}'
        values: '0.29x40'
    alert_rule_test:
      - eval_time: 10m
        alertname: ModelshipDataDrift
        exp_alerts: []
      - eval_time: 20m
        alertname: ModelshipDataDrift
        exp_alerts:
          - exp_labels: {severity: warning, team: ml-platform, namespace: ml, model: fraud, version: "2"}
            exp_annotations:
              summary: "Input drift on model fraud version 2: score 0.31"
              description: "Live feature means of ml/fraud moved more than 0.3 reference standard deviations on average from the reference data."
  - name: accuracy drop
    interval: 5m
    input_series:
      - series: 'ml_model_accuracy{namespace="ml",model="fraud",version="2",pod="a"}'
        values: '0.95x6 0.8x12'
      - series: 'ml_model_accuracy{namespace="ml",model="fraud",version="1",pod="b"}'
        values: '0.95x6 0.86x12'
    alert_rule_test:
      - eval_time: 30m
        alertname: ModelshipAccuracyDrop
        exp_alerts: []
      - eval_time: 60m
        alertname: ModelshipAccuracyDrop
        exp_alerts:
          - exp_labels: {severity: warning, team: ml-platform, namespace: ml, model: fraud, version: "2"}
            exp_annotations:
              summary: "Accuracy of model fraud version 2 dropped by 15%"
              description: "The accuracy of ml/fraud version 2 is more than 0.1 below its best over the last 1d."
  - name: operator
    interval: 1m
    input_series:
      - series: 'modelship_operator_leader{job="ms-modelship-metrics",namespace="modelship-system",pod="a"}'
        values: '1x5 0x20'
      - series: 'modelship_operator_leader{job="ms-modelship-metrics",namespace="modelship-system",pod="b"}'
        values: '0x25'
      - series: 'modelship_operator_reconcile_errors_total{job="ms-modelship-metrics",namespace="modelship-system",pod="a",category="forbidden"}'
        values: '0x5 1+1x20'
      - series: 'modelship_modeldeployment_phase{namespace="ml",name="fraud",phase="Degraded"}'
        values: '0x5 1x20'
      - series: 'modelship_modeldeployment_phase{namespace="ml",name="churn",phase="Degraded"}'
        values: '0x25'
    alert_rule_test:
      - eval_time: 4m
        alertname: ModelshipOperatorNoLeader
        exp_alerts: []
      - eval_time: 12m
        alertname: ModelshipOperatorNoLeader
        exp_alerts:
          - exp_labels: {severity: warning, team: ml-platform}
            exp_annotations:
              summary: "No Modelship operator holds the leader lease in modelship-system"
              description: "ModelDeployments are not reconciled: no rollout progresses and no rollback happens until an operator leads again."
      - eval_time: 4m
        alertname: ModelshipOperatorForbidden
        exp_alerts: []
      - eval_time: 8m
        alertname: ModelDeploymentDegraded
        exp_alerts: []
      - eval_time: 8m
        alertname: ModelshipOperatorForbidden
        exp_alerts:
          - exp_labels: {severity: critical, team: ml-platform}
            exp_annotations:
              summary: "The API server refuses the Modelship operator's requests (403)"
              description: "The operator's RBAC does not cover a request it makes: check the chart's ClusterRole or Role against operator.watchNamespace."
      - eval_time: 20m
        alertname: ModelDeploymentDegraded
        exp_alerts:
          - exp_labels: {severity: warning, team: ml-platform, namespace: ml, name: fraud}
            exp_annotations:
              summary: "ModelDeployment ml/fraud is Degraded"
              description: "kubectl describe modeldeployment fraud -n ml shows the Degraded condition and why."
  - name: reconcile errors
    interval: 1m
    input_series:
      - series: 'modelship_operator_reconcile_errors_total{job="ms-modelship-metrics",namespace="modelship-system",pod="a",category="kube"}'
        values: '0x5 1+1x30'
      - series: 'modelship_operator_reconcile_errors_total{job="ms-modelship-metrics",namespace="modelship-system",pod="a",category="conflict"}'
        values: '0+5x35'
    alert_rule_test:
      - eval_time: 12m
        alertname: ModelshipOperatorReconcileErrors
        exp_alerts: []
      - eval_time: 25m
        alertname: ModelshipOperatorReconcileErrors
        exp_alerts:
          - exp_labels: {severity: warning, team: ml-platform, category: kube}
            exp_annotations:
              summary: "Modelship reconciles keep failing (kube)"
              description: "Reconciles have failed with category kube for 15m; see the operator's logs and the events of the ModelDeployments."
  - name: rolled back
    interval: 1m
    input_series:
      - series: 'modelship_modeldeployment_phase{namespace="ml",name="fraud",phase="RolledBack"}'
        values: '0x5 1x10'
      - series: 'modelship_modeldeployment_phase{namespace="ml",name="churn",phase="RolledBack"}'
        values: '0x15'
    alert_rule_test:
      - eval_time: 3m
        alertname: ModelDeploymentRolledBack
        exp_alerts: []
      - eval_time: 8m
        alertname: ModelDeploymentRolledBack
        exp_alerts:
          - exp_labels: {severity: warning, team: ml-platform, namespace: ml, name: fraud}
            exp_annotations:
              summary: "ModelDeployment ml/fraud rolled its candidate back"
              description: "The candidate failed its analysis; status.abortedVersion names it and status.analysis says why."
"#;
