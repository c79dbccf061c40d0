//! Reading what a serving pod exposes on `/metrics`: the Prometheus text exposition, reduced
//! to the series canary analysis judges. Pure: text in, numbers out.

use std::collections::BTreeMap;

use crate::metrics::{
    DATA_DRIFT_SCORE, MODEL_ACCURACY, REQUEST_DURATION_SECONDS_BUCKET, REQUESTS_TOTAL, STATUS,
    VERSION,
};

/// The histogram bucket label of the exposition format.
const BUCKET_BOUND: &str = "le";
/// The bound of the last bucket, which counts everything.
const INFINITE_BOUND: &str = "+Inf";

/// The series of one scrape that analysis reads, for one model version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodSample {
    /// [`REQUESTS_TOTAL`] by its [`STATUS`] label.
    pub requests_by_status: BTreeMap<String, f64>,
    /// [`REQUEST_DURATION_SECONDS_BUCKET`] by upper bound (`f64::INFINITY` for `+Inf`),
    /// cumulative, in ascending order.
    pub latency_buckets: Vec<(f64, f64)>,
    /// The highest [`DATA_DRIFT_SCORE`].
    pub drift_score: Option<f64>,
    /// The lowest [`MODEL_ACCURACY`].
    pub accuracy: Option<f64>,
}

/// Read the metrics of one pod, keeping only series whose [`VERSION`] label equals `version`
/// (or that carry none).
pub fn parse_sample(text: &str, version: &str) -> PodSample {
    let mut sample = PodSample::default();
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = split_series(line) else {
            continue;
        };
        if labels.get(VERSION).is_some_and(|v| v != version) {
            continue;
        }
        match name {
            REQUESTS_TOTAL => {
                let status = labels.get(STATUS).cloned().unwrap_or_default();
                *sample.requests_by_status.entry(status).or_default() += value;
            }
            REQUEST_DURATION_SECONDS_BUCKET => {
                let bound = match labels.get(BUCKET_BOUND).map(String::as_str) {
                    Some(INFINITE_BOUND) => f64::INFINITY,
                    Some(le) => match le.parse::<f64>() {
                        Ok(b) => b,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                let entry = buckets.entry(bound.to_bits()).or_insert((bound, 0.0));
                entry.1 += value;
            }
            DATA_DRIFT_SCORE => {
                sample.drift_score = Some(sample.drift_score.map_or(value, |d: f64| d.max(value)));
            }
            MODEL_ACCURACY => {
                sample.accuracy = Some(sample.accuracy.map_or(value, |a: f64| a.min(value)));
            }
            _ => {}
        }
    }
    sample.latency_buckets = buckets.into_values().collect();
    sample.latency_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    sample
}

/// Split `name{a="b",c="d"} 12.5` into its parts.
fn split_series(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    let (series, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].find('}')? + open;
            (&line[..close + 1], &line[close + 1..])
        }
        None => {
            let space = line.find(' ')?;
            (&line[..space], &line[space..])
        }
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match series.find('{') {
        Some(open) => (&series[..open], parse_labels(&series[open + 1..series.len() - 1])),
        None => (series, BTreeMap::new()),
    };
    Some((name, labels, value))
}

fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let Some(after) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(match escaped {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                other => value.push(other),
            }
        }
        let Some(end) = end else { break };
        labels.insert(key, value);
        rest = &after[end + 1..];
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP ml_requests_total Requests.
# TYPE ml_requests_total counter
ml_requests_total{model="fraud",version="2",status="success"} 90
ml_requests_total{model="fraud",version="2",status="error"} 6
ml_requests_total{model="fraud",version="2",status="invalid"} 4
ml_requests_total{model="fraud",version="1",status="error"} 1000
# TYPE ml_request_duration_seconds histogram
ml_request_duration_seconds_bucket{model="fraud",version="2",le="0.001"} 50
ml_request_duration_seconds_bucket{model="fraud",version="2",le="0.01"} 90
ml_request_duration_seconds_bucket{model="fraud",version="2",le="0.1"} 100
ml_request_duration_seconds_bucket{model="fraud",version="2",le="+Inf"} 100
ml_request_duration_seconds_sum{model="fraud",version="2"} 0.5
ml_request_duration_seconds_count{model="fraud",version="2"} 100
ml_data_drift_score{model="fraud",version="2"} 0.25
ml_model_accuracy{model="fraud",version="2"} 0.875
ml_model_accuracy{model="fraud",version="1"} 0.5
# EOF
"#;

    #[test]
    fn parses_only_the_candidate_version() {
        let sample = parse_sample(SCRAPE, "2");
        assert_eq!(sample.requests_by_status.get("success"), Some(&90.0));
        assert_eq!(sample.requests_by_status.get("error"), Some(&6.0));
        assert_eq!(sample.latency_buckets.len(), 4);
        assert_eq!(sample.latency_buckets.last(), Some(&(f64::INFINITY, 100.0)));
        assert_eq!(sample.drift_score, Some(0.25));
        assert_eq!(sample.accuracy, Some(0.875));
    }

    #[test]
    fn labels_with_escapes() {
        let (name, labels, value) = split_series(r#"x{a="q\"uote",b="c,d"} 3"#).expect("parses");
        assert_eq!(name, "x");
        assert_eq!(labels["a"], "q\"uote");
        assert_eq!(labels["b"], "c,d");
        assert_eq!(value, 3.0);
    }
}
