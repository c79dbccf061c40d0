//! Analysis on real metrics, under load through the Service's ClusterIP: windows judged on
//! the serving pods' own counters, the candidate compared with stable on the same window, and
//! the same verdicts through a real Prometheus that scrapes the pods, over http and over https
//! with a CA and token from a Secret. Every rollout here must also lose no request.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use modelship_crds::{ModelDeployment, Phase, RolloutOutcome};
use modelship_tests::harness::{wait_until, with_namespace};
use modelship_tests::load::Load;
use modelship_tests::models::{
    apply, condition, fixture_uri, patch_spec, pods_of_track, prediction_load, served_model, track,
    wait_for, wait_phase,
};
use modelship_tests::operator::OperatorProcess;
use modelship_tests::prometheus::{Certificate, PrometheusServer};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);
const RATE: u32 = 100;
/// Each test stops its load; this only bounds a load a failing test leaves behind.
const LOAD_CAP: Duration = Duration::from_secs(600);

/// Load on the Service once kube-proxy routes it.
async fn load(client: &Client, service: &str, namespace: &str) -> Load {
    prediction_load(client, namespace, service, RATE, LOAD_CAP).await
}

fn version(version: &str, fixture: &str) -> Value {
    json!({"model": {"version": version, "uri": fixture_uri(fixture)}})
}

/// Wait until a rolled-back canary's Deployment and pods are gone.
async fn canary_gone(client: &Client, namespace: &str, name: &str) {
    wait_until(T, "the canary's pods gone", async || {
        track(client, namespace, name, "canary").await.is_none()
            && pods_of_track(client, namespace, name, "canary").await == 0
    })
    .await;
}

fn analysis_message(md: &ModelDeployment) -> String {
    md.status
        .as_ref()
        .and_then(|s| s.analysis.as_ref())
        .and_then(|a| a.message.clone())
        .unwrap_or_default()
}

/// Analysis in windows on real metrics: a healthy canary is measured every interval beside the
/// stable pods serving the same traffic (absolute and relative thresholds), passes every
/// window, leaves its analysis step after two passing windows in a row, and is promoted
/// without a failed request.
#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_canary_passes_every_window_and_is_promoted() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy = json!({
            "type": "Canary",
            "canary": {"steps": [{"setWeight": 50}, {"analysis": {"successfulWindows": 2}}]},
            "analysis": {"intervalSeconds": 2, "failureLimit": 0, "minRequests": 20,
                         "maxErrorRate": 0.01, "maxLatencyP99Seconds": 2.0,
                         "relative": {"maxErrorRateIncrease": 0.01, "maxLatencyP95Ratio": 50}}
        });
        apply(&client, &ns, served_model("risk", "1", "logreg.onnx", 2, strategy)).await;
        wait_phase(&client, &ns, "risk", Phase::Healthy, T).await;
        let running = load(&client, "risk", &ns).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        running.mark("canary 2 under analysis");
        let v2 = json!({"model": {"version": "2", "uri": fixture_uri("logreg.onnx")}});
        patch_spec(&client, &ns, "risk", v2).await;
        // Between the first and the second passing window, the step still holds 50 %.
        let during =
            wait_for(&client, &ns, "risk", "one window passed at the analysis step", T, |md| {
                md.status.as_ref().is_some_and(|s| {
                    s.current_step == Some(1)
                        && s.canary_weight == 50
                        && s.analysis
                            .as_ref()
                            .is_some_and(|a| a.version == "2" && a.passed_in_a_row == 1)
                })
            })
            .await;
        let md = wait_for(&client, &ns, "risk", "version 2 promoted", T, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.stable_version.as_deref() == Some("2") && s.candidate_version.is_none()
            })
        })
        .await;
        wait_phase(&client, &ns, "risk", Phase::Healthy, T).await;
        wait_until(T, "version 1's pods gone", async || {
            pods_of_track(&client, &ns, "risk", "stable").await == 2
                && pods_of_track(&client, &ns, "risk", "canary").await == 0
        })
        .await;
        running.mark("promoted");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = running.stop().await;

        assert!(report.failures().is_empty(), "{}", report.describe_failures());
        report.assert_covered(&[
            ("start", &["1"], true),
            ("canary 2 under analysis", &["1", "2"], true),
            ("promoted", &["2"], true),
        ]);
        // The analysis of version 2 stays in the status after its promotion.
        let after = md.status.clone().unwrap().analysis.unwrap();
        assert_eq!(after.version, "2");
        assert!(after.measurements - after.inconclusive >= 2, "{after:?}");
        assert_eq!(after.failures, 0, "{after:?}");
        let analysis = during.status.unwrap().analysis.unwrap();
        assert_eq!(analysis.message.as_deref(), Some("all thresholds met"), "{analysis:?}");
        // Each window counts only its own requests: at 100 requests/s split over both
        // versions, about 100 per version in 2 s, far below the totals since the pods started.
        assert!((20..=400).contains(&analysis.requests), "{analysis:?}");
        let stable = analysis.stable.unwrap();
        assert!((20..=400).contains(&stable.requests), "{stable:?}");
        assert!(stable.latency_p95_seconds.is_some() && analysis.latency_p99_seconds.is_some());
        let status = md.status.clone().unwrap();
        let last = status.history.first().expect("a rollout record");
        assert_eq!((last.version.as_str(), &last.outcome), ("2", &RolloutOutcome::Promoted));
        assert_eq!(condition(&md, "Degraded").map(|c| c.0), Some("False".to_string()));
    })
    .await;
}

/// Comparison with stable on real metrics: a version several times slower than stable (a model
/// with a per-row 384x384 matrix product) stays within a generous absolute latency threshold,
/// yet the relative one rolls it back, with no failed request, and the status says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_latency_regression_against_stable_rolls_back() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let absolute_p95 = 5.0;
        let strategy = json!({
            "type": "Canary",
            "canary": {"weight": 50},
            "analysis": {"intervalSeconds": 2, "failureLimit": 1, "minRequests": 20,
                         "maxLatencyP95Seconds": absolute_p95,
                         "relative": {"maxLatencyP95Ratio": 2}}
        });
        apply(&client, &ns, served_model("risk", "1", "logreg.onnx", 2, strategy)).await;
        wait_phase(&client, &ns, "risk", Phase::Healthy, T).await;
        let running = load(&client, "risk", &ns).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        running.mark("slow canary 2");
        let v2 = json!({"model": {"version": "2", "uri": fixture_uri("heavy.onnx")}});
        patch_spec(&client, &ns, "risk", v2).await;
        let md = wait_phase(&client, &ns, "risk", Phase::RolledBack, T).await;
        canary_gone(&client, &ns, "risk").await;
        running.mark("rolled back");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = running.stop().await;

        assert!(report.failures().is_empty(), "{}", report.describe_failures());
        report.assert_covered(&[
            ("start", &["1"], true),
            ("slow canary 2", &["1", "2"], true),
            ("rolled back", &["1"], true),
        ]);
        let status = md.status.clone().unwrap();
        assert_eq!(status.aborted_version.as_deref(), Some("2"));
        let analysis = status.analysis.unwrap();
        let message = analysis.message.clone().unwrap_or_default();
        assert!(message.contains("above maxLatencyP95Ratio 2"), "{analysis:?}");
        assert!(message.contains("stable's"), "{analysis:?}");
        // The absolute threshold alone would have let it through.
        assert!(analysis.latency_p95_seconds.unwrap() < absolute_p95, "{analysis:?}");
        let stable = analysis.stable.clone().expect("stable's window");
        assert!(analysis.latency_p95_seconds.unwrap() > 2.0 * stable.latency_p95_seconds.unwrap());
        assert!(analysis.failures >= 2, "{analysis:?}");
        assert_eq!(condition(&md, "Degraded").unwrap(), ("True".into(), "RolledBack".into()));
        assert_eq!(track(&client, &ns, "risk", "stable").await, Some(("1".into(), 2, 2)));
    })
    .await;
}

/// An error burst on real traffic: the candidate answers many requests 503 (its request
/// deadline is shorter than its model takes), the windows see it, and it is rolled back after
/// exactly `failureLimit` + 1 failed windows; once it is gone no request fails.
#[tokio::test(flavor = "multi_thread")]
async fn an_error_burst_rolls_back_after_failure_limit_windows() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy = json!({
            "type": "Canary",
            "canary": {"weight": 50},
            "analysis": {"intervalSeconds": 2, "failureLimit": 1, "minRequests": 20,
                         "maxErrorRate": 0.05}
        });
        apply(&client, &ns, served_model("risk", "1", "logreg.onnx", 2, strategy)).await;
        wait_phase(&client, &ns, "risk", Phase::Healthy, T).await;
        let running = load(&client, "risk", &ns).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        running.mark("failing canary 2");
        // The new version's pods give up after 2 ms; its model takes several.
        let mut v2 = version("2", "heavy.onnx");
        v2["serving"] = json!({"env": [{"name": "MODELSHIP_REQUEST_TIMEOUT_MS", "value": "2"}]});
        patch_spec(&client, &ns, "risk", v2).await;
        let md = wait_phase(&client, &ns, "risk", Phase::RolledBack, T).await;
        canary_gone(&client, &ns, "risk").await;
        running.mark("rolled back");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let report = running.stop().await;

        let analysis = md.status.clone().unwrap().analysis.unwrap();
        assert_eq!(analysis.failures, 2, "rolled back at failureLimit + 1: {analysis:?}");
        let message = analysis.message.clone().unwrap_or_default();
        assert!(message.contains("above maxErrorRate 0.05"), "{message}");
        assert!(analysis.error_rate.unwrap() > 0.05, "{analysis:?}");
        // The burst reached callers while the canary served, and ended with it.
        let phases = report.by_phase();
        let (burst, after) = (&phases[1], &phases[2]);
        let failed_in = |from: Duration, to: Duration| {
            report.failures().iter().filter(|f| f.sent_at >= from && f.sent_at < to).count()
        };
        assert!(failed_in(burst.from, burst.to) > 0, "no failure during the burst");
        assert_eq!(failed_in(after.from, after.to), 0, "{}", report.describe_failures());
        report.assert_covered(&[
            ("start", &["1"], true),
            ("failing canary 2", &["1"], false),
            ("rolled back", &["1"], true),
        ]);
    })
    .await;
}

/// Blue-green analysis before the switch, on the traffic sent to the preview Service: a slow
/// candidate fails there and is removed without the main Service ever selecting it; a fast one
/// passes its windows and only then takes the production traffic, which loses no request.
#[tokio::test(flavor = "multi_thread")]
async fn a_blue_green_candidate_is_judged_behind_the_preview_service_before_the_switch() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let strategy = json!({
            "type": "BlueGreen",
            "blueGreen": {"prePromotionAnalysis": {"successfulWindows": 2},
                          "scaleDownDelaySeconds": 2},
            "analysis": {"intervalSeconds": 2, "failureLimit": 1, "minRequests": 20,
                         "maxLatencyP95Seconds": 0.002}
        });
        apply(&client, &ns, served_model("m", "1", "logreg.onnx", 2, strategy)).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        let production = load(&client, "m", &ns).await;
        let preview = load(&client, "m-preview", &ns).await;
        tokio::time::sleep(Duration::from_secs(1)).await;

        let mark = |phase: &str| {
            production.mark(phase);
            preview.mark(phase);
        };
        mark("slow 2 in preview");
        patch_spec(&client, &ns, "m", version("2", "heavy.onnx")).await;
        let md = wait_phase(&client, &ns, "m", Phase::RolledBack, T).await;
        let message = analysis_message(&md);
        assert!(message.contains("p95 latency"), "{message}");
        let status = md.status.clone().unwrap();
        assert_eq!(status.aborted_version.as_deref(), Some("2"));
        assert!(status.analysis.as_ref().is_some_and(|a| a.failures == 2), "{status:?}");
        let (_, reason) = condition(&md, "Degraded").unwrap();
        assert_eq!(reason, "RolledBack");
        wait_until(T, "version 2's pods gone", async || {
            let idle =
                if status.active_color.as_deref() == Some("blue") { "green" } else { "blue" };
            pods_of_track(&client, &ns, "m", idle).await == 0
        })
        .await;

        mark("fast 3 in preview");
        patch_spec(&client, &ns, "m", version("3", "logreg.onnx")).await;
        wait_for(&client, &ns, "m", "version 3 promoted", T, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.stable_version.as_deref() == Some("3") && s.candidate_version.is_none()
            })
        })
        .await;
        let md = wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        let active = md.status.as_ref().and_then(|s| s.active_color.clone()).unwrap();
        let old = if active == "blue" { "green" } else { "blue" };
        wait_until(T, "version 1's pods gone", async || {
            pods_of_track(&client, &ns, "m", old).await == 0
        })
        .await;
        mark("3 serves");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (production, preview) = (production.stop().await, preview.stop().await);

        assert!(production.failures().is_empty(), "{}", production.describe_failures());
        production.assert_covered(&[
            ("start", &["1"], true),
            // The slow candidate never answered production traffic.
            ("slow 2 in preview", &["1"], true),
            ("fast 3 in preview", &["1", "3"], true),
            ("3 serves", &["3"], true),
        ]);
        // The windows judged what the preview Service sent the candidates.
        let phases = preview.by_phase();
        for (phase, version) in [(1, "2"), (2, "3")] {
            let answered = phases[phase].versions.get(version).copied().unwrap_or(0);
            assert!(
                answered > 0,
                "preview phase {:?}: {:?}",
                phases[phase].name,
                phases[phase].versions
            );
        }
        let history = &md.status.as_ref().unwrap().history;
        assert_eq!(history[0].outcome, RolloutOutcome::Promoted);
        assert_eq!(history[1].outcome, RolloutOutcome::RolledBack);
    })
    .await;
}

/// The Prometheus provider beside direct scraping, on the same run: a real Prometheus
/// discovers the serving pods through the API server and scrapes them with the chart's
/// PodMonitor labels; two ModelDeployments roll out the same versions under the same load, one
/// measured through Prometheus and one from the pods. Both roll the slow version back for the
/// same reason and both promote the healthy one. Without Prometheus, windows are inconclusive
/// and say why.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_reaches_the_verdicts_of_direct_scraping() {
    with_namespace(async |client, ns| {
        let prometheus = PrometheusServer::start(&client, &ns).await;
        let _operator = OperatorProcess::start(&ns);
        let strategy = |source: Option<String>| {
            let mut analysis = json!({"intervalSeconds": 4, "failureLimit": 1, "minRequests": 20,
                                      "maxLatencyP95Seconds": 5.0,
                                      "relative": {"maxLatencyP95Ratio": 3}});
            if let Some(address) = source {
                analysis["prometheus"] = json!({"address": address});
            }
            json!({"type": "Canary",
                   "canary": {"steps": [{"setWeight": 50}, {"pause": {"seconds": 10}}]},
                   "analysis": analysis})
        };
        let models = ["direct", "prom"];
        apply(&client, &ns, served_model("direct", "1", "logreg.onnx", 2, strategy(None))).await;
        let prom = strategy(Some(prometheus.address()));
        apply(&client, &ns, served_model("prom", "1", "logreg.onnx", 2, prom)).await;
        for name in models {
            wait_phase(&client, &ns, name, Phase::Healthy, T).await;
        }
        let running = [load(&client, "direct", &ns).await, load(&client, "prom", &ns).await];
        tokio::time::sleep(Duration::from_secs(1)).await;

        for name in models {
            patch_spec(&client, &ns, name, version("2", "heavy.onnx")).await;
        }
        let mut reasons = Vec::new();
        for name in models {
            let md = wait_phase(&client, &ns, name, Phase::RolledBack, T).await;
            let message = analysis_message(&md);
            assert!(message.contains("above maxLatencyP95Ratio 3"), "{name}: {message}");
            reasons.push(message);
        }
        // Prometheus held the candidate's series under the labels the provider queries. Over a
        // range, since the rolled-back pods may be gone by now, and an instant query skips the
        // series Prometheus marked stale when their targets went away.
        let seen = format!(
            r#"sum(max_over_time(ml_requests_total{{namespace="{ns}",modelship_name="prom",version="2",track="canary"}}[10m]))"#
        );
        assert!(prometheus.query(&seen).await.unwrap_or(0.0) > 0.0, "{seen}: no series");

        for name in models {
            patch_spec(&client, &ns, name, version("3", "logreg.onnx")).await;
        }
        for name in models {
            let md = wait_for(&client, &ns, name, "version 3 promoted", T, |md| {
                md.status.as_ref().is_some_and(|s| {
                    s.stable_version.as_deref() == Some("3") && s.candidate_version.is_none()
                })
            })
            .await;
            let last = md.status.unwrap().history.first().cloned().expect("a rollout record");
            assert_eq!((last.version.as_str(), last.outcome), ("3", RolloutOutcome::Promoted));
        }

        drop(prometheus);
        patch_spec(&client, &ns, "prom", version("4", "logreg.onnx")).await;
        let md = wait_for(&client, &ns, "prom", "a window without Prometheus", T, |md| {
            analysis_message(md).contains("no measurement: Prometheus at http://127.0.0.1:")
        })
        .await;
        assert_eq!(md.status.unwrap().stable_version.as_deref(), Some("3"));

        for (name, running) in models.into_iter().zip(running) {
            let report = running.stop().await;
            assert!(report.failures().is_empty(), "{name}: {}", report.describe_failures());
        }
        println!("verdicts: direct {:?}, prometheus {:?}", reasons[0], reasons[1]);
    })
    .await;
}

/// Put `ca.crt` and `token` in the Secret a Prometheus source names.
async fn prometheus_secret(client: &Client, namespace: &str, ca_pem: &[u8], token: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": PROMETHEUS_SECRET},
        "stringData": {"ca.crt": String::from_utf8_lossy(ca_pem), "token": token},
    });
    let params = PatchParams::apply("modelship-tests").force();
    secrets.patch(PROMETHEUS_SECRET, &params, &Patch::Apply(&secret)).await.expect("the Secret");
}

const PROMETHEUS_SECRET: &str = "modelship-prometheus";

/// A Prometheus that serves https only, with a certificate of its own CA: the operator reaches
/// it with the CA and a token from the Secret the ModelDeployment names, measures every window
/// and promotes a healthy version after its analysis step. With a CA that did not sign the
/// server's certificate, every window is inconclusive, says why, and nothing is promoted.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_over_https_with_the_ca_and_token_of_a_secret() {
    with_namespace(async |client, ns| {
        let dir = std::env::temp_dir().join(format!("modelship-certificates-{ns}"));
        let served = Certificate::issued(&dir, "prometheus");
        let stranger = Certificate::issued(&dir, "stranger");
        let prometheus = PrometheusServer::start_tls(&client, &ns, &served).await;
        assert!(prometheus.address().starts_with("https://127.0.0.1:"));
        let _operator = OperatorProcess::start(&ns);
        prometheus_secret(&client, &ns, &served.pem, "t0ken").await;
        let strategy = json!({
            "type": "Canary",
            "canary": {"steps": [{"setWeight": 50}, {"analysis": {"successfulWindows": 2}}]},
            "analysis": {"intervalSeconds": 4, "failureLimit": 0, "minRequests": 20,
                         "maxErrorRate": 0.01,
                         "prometheus": {"address": prometheus.address(),
                                        "secretName": PROMETHEUS_SECRET}}
        });
        apply(&client, &ns, served_model("m", "1", "logreg.onnx", 2, strategy)).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        let running = load(&client, "m", &ns).await;
        tokio::time::sleep(Duration::from_secs(1)).await;

        patch_spec(&client, &ns, "m", version("2", "logreg.onnx")).await;
        let md = wait_for(&client, &ns, "m", "version 2 promoted", T, |md| {
            md.status.as_ref().is_some_and(|s| {
                s.stable_version.as_deref() == Some("2") && s.candidate_version.is_none()
            })
        })
        .await;
        let analysis = md.status.clone().unwrap().analysis.unwrap();
        assert_eq!(analysis.version, "2");
        assert!(analysis.measurements - analysis.inconclusive >= 2, "{analysis:?}");
        assert_eq!(analysis.failures, 0, "{analysis:?}");

        prometheus_secret(&client, &ns, &stranger.pem, "t0ken").await;
        patch_spec(&client, &ns, "m", version("3", "logreg.onnx")).await;
        let refused = format!("no measurement: Prometheus at {}", prometheus.address());
        let md = wait_for(&client, &ns, "m", "a window refused by TLS", T, |md| {
            analysis_message(md).contains(&refused)
        })
        .await;
        let message = analysis_message(&md);
        assert!(message.contains("certificate"), "{message}");
        assert_eq!(md.status.unwrap().stable_version.as_deref(), Some("2"));

        let report = running.stop().await;
        assert!(report.failures().is_empty(), "{}", report.describe_failures());
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}
