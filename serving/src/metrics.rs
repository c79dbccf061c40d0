//! Prometheus metrics on an explicit registry.
//!
//! Every labelled series is created when its model loads, from the model's own name and
//! version and a fixed status set. Nothing a caller sends (paths, unknown model names, ids)
//! can add a series. Handlers hold [`ModelMetrics`], clones of the series' atomics, so
//! recording never touches the registry's maps.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use modelship_contract::metrics as names;

use crate::error::Error;

pub use modelship_contract::metrics::RequestStatus;

/// The status a request is counted under: 2xx, caller mistakes (4xx), server faults (5xx),
/// load shedding (429 and 503).
pub fn status_of(result: &Result<(), &Error>) -> RequestStatus {
    match result {
        Ok(()) => RequestStatus::Success,
        Err(e) => match e.status().as_u16() {
            429 | 503 => RequestStatus::Rejected,
            400..=499 => RequestStatus::Invalid,
            _ => RequestStatus::Error,
        },
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    version: String,
    status: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily = Family<ModelLabels, Histogram, fn() -> Histogram>;

/// 50 µs to 5 s, dense below 10 ms where this server lives.
const DURATION_BUCKETS: [f64; 22] = [
    0.00005, 0.0001, 0.00015, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
    0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn batch_histogram() -> Histogram {
    Histogram::new(BATCH_BUCKETS)
}

/// The prediction log's records by outcome: written, dropped (the writer too far behind),
/// failed (the sink refused them).
#[derive(Clone, Debug, Default)]
pub struct PredictionLogCounters {
    pub written: Counter,
    pub dropped: Counter,
    pub failed: Counter,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    predictions: Family<ModelLabels, Counter>,
    drift: Family<ModelLabels, FloatGauge>,
    accuracy: Family<ModelLabels, FloatGauge>,
    batch_size: HistogramFamily,
    queue_depth: Family<ModelLabels, Gauge>,
    prediction_log: Family<OutcomeLabels, Counter>,
}

/// The outcome of a prediction log record: written, dropped (queue full) or failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let predictions = Family::<ModelLabels, Counter>::default();
        let drift = Family::<ModelLabels, FloatGauge>::default();
        let accuracy = Family::<ModelLabels, FloatGauge>::default();
        let batch_size: HistogramFamily = Family::new_with_constructor(batch_histogram);
        let queue_depth = Family::<ModelLabels, Gauge>::default();
        registry.register(names::REQUESTS, "Inference requests by outcome", requests.clone());
        registry.register(
            names::REQUEST_DURATION_SECONDS,
            "Latency of successful inference requests, body read to response",
            duration.clone(),
        );
        registry.register("ml_predictions", "Rows predicted", predictions.clone());
        registry.register(
            names::DATA_DRIFT_SCORE,
            "Mean over features of |window mean - reference mean| / (reference std + 1e-8)",
            drift.clone(),
        );
        registry.register(
            names::MODEL_ACCURACY,
            "Share of correct predictions among the recent rows with ground-truth feedback",
            accuracy.clone(),
        );
        registry.register("ml_batch_size", "Rows per model call", batch_size.clone());
        registry.register("ml_queue_depth", "Requests waiting for the model", queue_depth.clone());
        let prediction_log = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "ml_prediction_log_records",
            "Prediction log records by outcome: written, dropped (the queue was full) or failed (the sink refused them)",
            prediction_log.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        Self {
            registry,
            requests,
            duration,
            predictions,
            drift,
            accuracy,
            batch_size,
            queue_depth,
            prediction_log,
        }
    }

    /// The prediction log's outcome counters (their series appear once the log is on).
    pub fn prediction_log_counters(&self) -> PredictionLogCounters {
        let counter =
            |outcome| self.prediction_log.get_or_create(&OutcomeLabels { outcome }).clone();
        PredictionLogCounters {
            written: counter("written"),
            dropped: counter("dropped"),
            failed: counter("failed"),
        }
    }

    /// Create every series of one model and hand out its recording handles.
    pub fn model(&self, name: &str, version: &str, drift: bool) -> ModelMetrics {
        let labels = ModelLabels { model: name.to_owned(), version: version.to_owned() };
        let request = |status: RequestStatus| {
            let l = RequestLabels {
                model: name.to_owned(),
                version: version.to_owned(),
                status: status.as_str(),
            };
            self.requests.get_or_create(&l).clone()
        };
        ModelMetrics {
            requests: RequestStatus::ALL.map(request),
            duration: self.duration.get_or_create(&labels).clone(),
            predictions: self.predictions.get_or_create(&labels).clone(),
            // Without reference statistics there is no drift to report, so no series.
            drift: drift.then(|| self.drift.get_or_create(&labels).clone()),
            accuracy: (self.accuracy.clone(), labels.clone()),
            batch_size: self.batch_size.get_or_create(&labels).clone(),
            queue_depth: self.queue_depth.get_or_create(&labels).clone(),
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Recording handles for one model; all atomics, cheap to clone.
#[derive(Clone, Debug)]
pub struct ModelMetrics {
    requests: [Counter; 4],
    duration: Histogram,
    predictions: Counter,
    drift: Option<FloatGauge>,
    /// Created on the first feedback: until then there is no accuracy to report.
    accuracy: (Family<ModelLabels, FloatGauge>, ModelLabels),
    batch_size: Histogram,
    queue_depth: Gauge,
}

impl ModelMetrics {
    pub fn request(&self, status: RequestStatus, elapsed: Duration) {
        let i = RequestStatus::ALL.iter().position(|s| *s == status).unwrap_or(2);
        self.requests[i].inc();
        if status == RequestStatus::Success {
            self.duration.observe(elapsed.as_secs_f64());
        }
    }

    pub fn batch(&self, rows: usize) {
        self.batch_size.observe(rows as f64);
        self.predictions.inc_by(rows as u64);
    }

    pub fn queued(&self) {
        self.queue_depth.inc();
    }

    pub fn dequeued(&self) {
        self.queue_depth.dec();
    }

    pub fn set_drift(&self, score: f64) {
        if let Some(g) = &self.drift {
            g.set(score);
        }
    }

    pub fn set_accuracy(&self, accuracy: f64) {
        let (family, labels) = &self.accuracy;
        family.get_or_create(labels).set(accuracy);
    }
}

/// `process_*` metrics read from /proc/self at scrape time.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(stats) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stats.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new(stats.resident_bytes as i64);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            rss.metric_type(),
        )?)?;
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

impl ProcessStats {
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Some(Self { cpu_seconds: cpu_seconds(&stat)?, resident_bytes: resident_bytes(&status)? })
    }
}

/// utime + stime from /proc/self/stat, in seconds. Linux reports them in USER_HZ, which is
/// 100 on every architecture Kubernetes runs on.
fn cpu_seconds(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime field 14, stime field 15 (1-based, man proc).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use modelship_contract::exposition::parse_sample;

    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_command_names() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(cpu_seconds(stat), Some(3.0));
    }

    #[test]
    fn parses_vm_rss() {
        assert_eq!(resident_bytes("Name:\tx\nVmRSS:\t    2048 kB\n"), Some(2048 * 1024));
    }

    #[test]
    fn reads_this_process() {
        let s = ProcessStats::read().unwrap();
        assert!(s.resident_bytes > 0);
    }

    #[test]
    fn series_exist_from_load_and_outcomes_map_statuses() {
        let m = Metrics::new();
        let mm = m.model("iris", "1", false);
        mm.request(RequestStatus::Success, Duration::from_micros(80));
        let text = m.encode();
        assert!(text.contains(r#"ml_requests_total{model="iris",version="1",status="success"} 1"#));
        assert!(
            text.contains(r#"ml_requests_total{model="iris",version="1",status="rejected"} 0"#)
        );
        assert!(text.contains("process_resident_memory_bytes"));
        assert!(!text.contains("ml_data_drift_score{"));
        assert_eq!(status_of(&Err(&Error::QueueFull)), RequestStatus::Rejected);
        assert_eq!(status_of(&Err(&Error::invalid("x"))), RequestStatus::Invalid);
        assert_eq!(status_of(&Err(&Error::Inference("x".into()))), RequestStatus::Error);
    }

    /// What this server writes, read back the way canary analysis reads it.
    #[test]
    fn analysis_reads_what_is_written() {
        let m = Metrics::new();
        let mm = m.model("fraud", "2", true);
        let other = m.model("fraud", "1", false);
        mm.request(RequestStatus::Success, Duration::from_micros(80));
        mm.request(RequestStatus::Success, Duration::from_millis(3));
        mm.request(RequestStatus::Rejected, Duration::from_micros(10));
        other.request(RequestStatus::Error, Duration::from_micros(10));
        mm.set_drift(0.25);
        let sample = parse_sample(&m.encode(), "2");
        let count = |s: RequestStatus| sample.requests_by_status.get(s.as_str()).copied();
        assert_eq!(count(RequestStatus::Success), Some(2.0));
        assert_eq!(count(RequestStatus::Rejected), Some(1.0));
        assert_eq!(count(RequestStatus::Error), Some(0.0), "version 1's error is not version 2's");
        assert_eq!(sample.latency_buckets.last(), Some(&(f64::INFINITY, 2.0)));
        assert!(sample.latency_buckets.iter().any(|&(le, n)| le == 0.0001 && n == 1.0));
        assert_eq!(sample.drift_score, Some(0.25));
    }
}
