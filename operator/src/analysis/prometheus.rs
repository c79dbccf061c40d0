//! Measuring through a Prometheus server: one PromQL query per metric over the analysis
//! window. Building and reading the queries is pure; [`Prometheus::connect`] (the source's
//! Secret) and [`Prometheus::measure`] are the I/O.

use futures::future::join_all;
use modelship_contract::metrics::{
    DATA_DRIFT_SCORE, MODEL_ACCURACY, REQUEST_DURATION_SECONDS_BUCKET, REQUESTS_TOTAL,
    RequestStatus, STATUS, VERSION,
};
use modelship_crds::{PrometheusQueries, PrometheusSource};
use serde::Deserialize;
use tracing::{debug, info};

use super::Measurement;
use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::error::Result;
use crate::http::ApiClient;

/// Labels the scrape configuration adds to every serving pod's series (the chart's PodMonitor
/// does): the namespace, the ModelDeployment and the track.
pub const NAMESPACE_LABEL: &str = "namespace";
pub const MODEL_DEPLOYMENT_LABEL: &str = "modelship_name";
pub const TRACK_LABEL: &str = "track";

/// What the query templates are filled with.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryScope<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub version: &'a str,
    pub track: &'a str,
    /// The analysis window as PromQL writes a duration, such as `30s`.
    pub window: String,
}

/// The metrics a measurement needs, each with its query template.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Metric {
    Requests,
    ErrorRate,
    LatencyP95,
    LatencyP99,
    Drift,
    Accuracy,
}

const METRICS: [Metric; 6] = [
    Metric::Requests,
    Metric::ErrorRate,
    Metric::LatencyP95,
    Metric::LatencyP99,
    Metric::Drift,
    Metric::Accuracy,
];

/// The series selector every built-in query starts from.
fn selector(extra: &str) -> String {
    format!(
        "{NAMESPACE_LABEL}=\"{{{{namespace}}}}\",{MODEL_DEPLOYMENT_LABEL}=\"{{{{name}}}}\",{VERSION}=\"{{{{version}}}}\"{extra}"
    )
}

/// The built-in query template of a metric.
fn built_in(metric: Metric) -> String {
    let failed: Vec<&str> = RequestStatus::ALL
        .into_iter()
        .filter(|s| s.counts_as_failure())
        .map(|s| s.as_str())
        .collect();
    let all = selector("");
    let failures = selector(&format!(",{STATUS}=~\"{}\"", failed.join("|")));
    let requests = format!("sum(increase({REQUESTS_TOTAL}{{{all}}}[{{{{window}}}}]))");
    let quantile = |q: &str| {
        format!(
            "histogram_quantile({q}, sum by (le) (increase({REQUEST_DURATION_SECONDS_BUCKET}{{{all}}}[{{{{window}}}}])))"
        )
    };
    match metric {
        Metric::Requests => requests,
        Metric::ErrorRate => {
            format!("sum(increase({REQUESTS_TOTAL}{{{failures}}}[{{{{window}}}}])) / {requests}")
        }
        Metric::LatencyP95 => quantile("0.95"),
        Metric::LatencyP99 => quantile("0.99"),
        Metric::Drift => format!("max({DATA_DRIFT_SCORE}{{{all}}})"),
        Metric::Accuracy => format!("min({MODEL_ACCURACY}{{{all}}})"),
    }
}

fn user_query(queries: &PrometheusQueries, metric: Metric) -> Option<&String> {
    match metric {
        Metric::Requests => queries.requests.as_ref(),
        Metric::ErrorRate => queries.error_rate.as_ref(),
        Metric::LatencyP95 => queries.latency_p95_seconds.as_ref(),
        Metric::LatencyP99 => queries.latency_p99_seconds.as_ref(),
        Metric::Drift => queries.drift_score.as_ref(),
        Metric::Accuracy => queries.accuracy.as_ref(),
    }
}

/// Fill `{{namespace}}`, `{{name}}`, `{{version}}`, `{{track}}` and `{{window}}`.
pub fn render(template: &str, scope: &QueryScope<'_>) -> String {
    template
        .replace("{{namespace}}", scope.namespace)
        .replace("{{name}}", scope.name)
        .replace("{{version}}", scope.version)
        .replace("{{track}}", scope.track)
        .replace("{{window}}", &scope.window)
}

/// The query of every metric for one version, in [`METRICS`] order.
fn queries(source: &PrometheusSource, scope: &QueryScope<'_>) -> Vec<String> {
    METRICS
        .into_iter()
        .map(|metric| {
            let template =
                user_query(&source.queries, metric).cloned().unwrap_or_else(|| built_in(metric));
            render(&template, scope)
        })
        .collect()
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<AnswerData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum AnswerData {
    Vector(Vec<VectorSample>),
    Scalar((f64, String)),
}

#[derive(Deserialize)]
struct VectorSample {
    value: (f64, String),
}

/// The one number a query answered, `None` for an empty result (no series, or a ratio with
/// no requests: `NaN`).
pub fn read_answer(body: &str) -> Result<Option<f64>, String> {
    let answer: Answer =
        serde_json::from_str(body).map_err(|e| format!("not a Prometheus answer: {e}"))?;
    if answer.status != "success" {
        return Err(answer.error.unwrap_or(answer.status));
    }
    let text = match answer.data {
        Some(AnswerData::Scalar((_, value))) => value,
        Some(AnswerData::Vector(samples)) => match samples.as_slice() {
            [] => return Ok(None),
            [one] => one.value.1.clone(),
            many => return Err(format!("{} series, expected one number", many.len())),
        },
        None => return Err("an answer without data".to_string()),
    };
    let value: f64 = text.parse().map_err(|_| format!("not a number: {text}"))?;
    Ok(value.is_finite().then_some(value))
}

/// The measurement from the answers to [`queries`], in [`METRICS`] order.
fn measurement(answers: Vec<Option<f64>>) -> Measurement {
    let [requests, error_rate, p95, p99, drift, accuracy] = answers[..] else {
        unreachable!("one answer per metric");
    };
    Measurement {
        // `increase` extrapolates: a count of 99.6 requests is 100.
        requests: requests.map_or(0, |r| r.round() as i64),
        error_rate,
        latency_p95_seconds: p95,
        latency_p99_seconds: p99,
        drift_score: drift,
        accuracy,
        ..Measurement::default()
    }
}

/// Keys of a Prometheus source's Secret.
pub const TOKEN_KEY: &str = "token";
pub const CA_KEY: &str = "ca.crt";

/// What a source's Secret holds: the bearer token and the CA certificates, each optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub token: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
}

impl Access {
    /// Read from a Secret's data; empty values count as absent.
    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Self {
        let value = |key: &str| data.get(key).map(|v| v.0.clone()).filter(|v| !v.is_empty());
        Access {
            token: value(TOKEN_KEY).map(|t| String::from_utf8_lossy(&t).trim().to_string()),
            ca_pem: value(CA_KEY),
        }
    }
}

/// Queries Prometheus servers: a shared client for sources without a Secret, a client of
/// their own for the others.
#[derive(Clone)]
pub struct Prometheus {
    client: Client,
    public: ApiClient,
}

impl Prometheus {
    pub fn new(client: Client) -> Result<Self> {
        Ok(Prometheus { client, public: ApiClient::new(None, None)? })
    }

    /// The client for `source`. Its Secret is read each time, so a rotated token or CA is
    /// used from the next window on.
    pub async fn connect(&self, namespace: &str, source: &PrometheusSource) -> Result<ApiClient> {
        let Some(name) = &source.secret_name else {
            return Ok(self.public.clone());
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = api.get(name).await?;
        let access = Access::from_data(&secret.data.unwrap_or_default());
        ApiClient::new(access.ca_pem.as_deref(), access.token.as_deref())
    }

    /// The measurement when no client could be made for the source (its Secret cannot be
    /// read, or holds no usable CA): inconclusive, saying why.
    pub fn unreachable(source: &PrometheusSource, why: &str) -> Measurement {
        let secret = source.secret_name.as_deref().unwrap_or_default();
        Measurement {
            unavailable: Some(format!(
                "Prometheus at {}: Secret {secret}: {why}",
                source.address.trim_end_matches('/')
            )),
            ..Measurement::default()
        }
    }

    /// One version's window. A query Prometheus cannot answer makes the measurement
    /// unavailable, so the window is inconclusive rather than judged on partial numbers.
    pub async fn measure(
        http: &ApiClient,
        source: &PrometheusSource,
        scope: &QueryScope<'_>,
    ) -> Measurement {
        let base = source.address.trim_end_matches('/');
        let answers = join_all(queries(source, scope).into_iter().map(|query| async move {
            let encoded: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
            let url = format!("{base}/api/v1/query?query={encoded}");
            let body = http.get_text(&url).await.map_err(|e| e.to_string())?;
            read_answer(&body).map_err(|e| format!("{query}: {e}"))
        }))
        .await;
        let answers: Result<Vec<Option<f64>>, String> = answers.into_iter().collect();
        match answers {
            Ok(answers) => {
                let m = measurement(answers);
                info!(version = scope.version, requests = m.requests, error_rate = ?m.error_rate, p95 = ?m.latency_p95_seconds, p99 = ?m.latency_p99_seconds, drift = ?m.drift_score, accuracy = ?m.accuracy, "analysis window from Prometheus");
                m
            }
            Err(why) => {
                debug!(version = scope.version, %why, "Prometheus query failed");
                Measurement {
                    unavailable: Some(format!("Prometheus at {base}: {why}")),
                    ..Measurement::default()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_gives_the_token_and_the_ca() {
        let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, ByteString> {
            pairs.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect()
        };
        let both = Access::from_data(&data(&[("token", " abc\n"), ("ca.crt", "PEM")]));
        assert_eq!(both, Access { token: Some("abc".into()), ca_pem: Some(b"PEM".to_vec()) });
        assert_eq!(Access::from_data(&data(&[("token", ""), ("other", "x")])), Access::default());
    }

    #[test]
    fn an_unreachable_source_names_its_secret() {
        let source = PrometheusSource {
            address: "https://p:9090/".into(),
            secret_name: Some("prom".into()),
            queries: PrometheusQueries::default(),
        };
        let m = Prometheus::unreachable(&source, "not found");
        assert_eq!(
            m.unavailable.as_deref(),
            Some("Prometheus at https://p:9090: Secret prom: not found")
        );
    }

    fn scope() -> QueryScope<'static> {
        QueryScope {
            namespace: "ml",
            name: "fraud",
            version: "2",
            track: "canary",
            window: "30s".into(),
        }
    }

    #[test]
    fn built_in_queries_name_the_version_and_the_window() {
        let source = PrometheusSource { address: "http://p:9090".into(), ..Default::default() };
        let q = queries(&source, &scope());
        let labels = r#"namespace="ml",modelship_name="fraud",version="2""#;
        assert_eq!(q[0], format!("sum(increase(ml_requests_total{{{labels}}}[30s]))"));
        assert_eq!(
            q[1],
            format!(
                r#"sum(increase(ml_requests_total{{{labels},status=~"error|rejected"}}[30s])) / sum(increase(ml_requests_total{{{labels}}}[30s]))"#
            )
        );
        assert_eq!(
            q[2],
            format!(
                "histogram_quantile(0.95, sum by (le) (increase(ml_request_duration_seconds_bucket{{{labels}}}[30s])))"
            )
        );
        assert!(q[3].starts_with("histogram_quantile(0.99, "));
        assert_eq!(q[4], format!("max(ml_data_drift_score{{{labels}}})"));
        assert_eq!(q[5], format!("min(ml_model_accuracy{{{labels}}})"));
    }

    #[test]
    fn a_user_query_replaces_one_metric() {
        let source = PrometheusSource {
            address: "http://p:9090".into(),
            queries: PrometheusQueries {
                error_rate: Some(
                    r#"my_errors{ns="{{namespace}}",app="{{name}}",v="{{version}}",t="{{track}}"}[{{window}}]"#
                        .into(),
                ),
                ..Default::default()
            },
            secret_name: None,
        };
        let q = queries(&source, &scope());
        assert_eq!(q[1], r#"my_errors{ns="ml",app="fraud",v="2",t="canary"}[30s]"#);
        assert!(q[0].starts_with("sum(increase(ml_requests_total"));
    }

    #[test]
    fn answers_table() {
        let vector = |v: &str| {
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000.5,"{v}"]}}]}}}}"#
            )
        };
        let table: [(String, Result<Option<f64>, &str>); 8] = [
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into(),
                Err("unknown variant `matrix`"),
            ),
            (vector("0.25"), Ok(Some(0.25))),
            (vector("NaN"), Ok(None)),
            (vector("+Inf"), Ok(None)),
            (r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.into(), Ok(None)),
            (
                r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"3"]}}"#
                    .into(),
                Ok(Some(3.0)),
            ),
            (
                r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#
                    .into(),
                Err("parse error at char 5"),
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]},{"metric":{},"value":[1,"2"]}]}}"#.into(),
                Err("2 series, expected one number"),
            ),
        ];
        for (body, expected) in table {
            let got = read_answer(&body);
            match expected {
                Ok(value) => assert_eq!(got, Ok(value), "{body}"),
                Err(words) => assert!(got.unwrap_err().contains(words), "{body}"),
            }
        }
    }

    #[test]
    fn extrapolated_counts_round_to_requests() {
        let m = measurement(vec![Some(99.6), Some(0.0), Some(0.01), None, None, Some(0.9)]);
        assert_eq!((m.requests, m.error_rate, m.accuracy), (100, Some(0.0), Some(0.9)));
        assert_eq!(measurement(vec![None; 6]).requests, 0);
    }
}
