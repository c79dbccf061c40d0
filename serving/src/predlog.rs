//! Prediction logging: one JSON record per predicted row, for later training and audit.
//!
//! A record holds the time, the request id, the model and version, the prediction and its
//! confidence, and the SHA-256 of the row's features (the features themselves only when
//! asked). The request path only decides whether to log (a counter, so a sample rate of 0.1
//! logs exactly every tenth request), copies the row and hands it to a bounded queue; a
//! thread of its own hashes, formats and writes. When the queue is full the record is
//! dropped and counted (`ml_prediction_log_records_total{outcome="dropped"}`): a slow log
//! sink never slows inference.
//!
//! Sinks: JSON lines on standard output (for the node's log collector), or an HTTP collector
//! that receives batches as a JSON array per POST (failed batches are counted, not retried).

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::ValueEnum;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};

use crate::batching::Rows;
use crate::runtime::RowOutputs;
use crate::state::ServedModel;

/// Records waiting for the writer; beyond this they are dropped.
pub const QUEUE_CAPACITY: usize = 8192;
/// Records per POST to a collector, at most.
pub const HTTP_BATCH: usize = 500;
/// A partial batch is sent after this long.
pub const HTTP_FLUSH: Duration = Duration::from_secs(1);
/// How often the writer takes what is queued.
const POLL: Duration = Duration::from_millis(10);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Confidence reported for a regression, as `/predict` does.
const REGRESSION_CONFIDENCE: f32 = crate::routes::predict::REGRESSION_CONFIDENCE;

/// Where records go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Sink {
    /// No prediction log.
    #[default]
    Off,
    /// JSON lines on standard output.
    Stdout,
    /// Batches POSTed to `--prediction-log-url`.
    Http,
}

/// What the configuration asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub sink: Sink,
    pub url: Option<String>,
    pub sample_rate: f64,
    pub include_features: bool,
}

/// The outcome counters, from the metrics registry.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub written: Counter,
    pub dropped: Counter,
    pub failed: Counter,
}

/// One row to log, as the request path hands it over.
struct Entry {
    at: SystemTime,
    request_id: RequestId,
    model: String,
    version: String,
    classifier: bool,
    /// The row's index within its request, for batch requests.
    row: Option<usize>,
    features: Rows,
    label: Option<i64>,
    scores: smallvec::SmallVec<[f32; 8]>,
}

enum RequestId {
    Given(String),
    /// No id in the request: the log's own sequence number.
    Numbered(u64),
}

/// The log's handle, cheap to clone.
#[derive(Clone, Debug)]
pub struct PredictionLog(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    queue: SyncSender<Entry>,
    /// Requests seen, for sampling.
    seen: AtomicU64,
    /// Requests logged without an id, for their numbers.
    numbered: AtomicU64,
    sample_rate: f64,
    counters: Counters,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("model", &self.model).finish_non_exhaustive()
    }
}

impl PredictionLog {
    /// Start the writer thread; `None` when logging is off.
    pub fn start(options: &Options, counters: Counters) -> Option<PredictionLog> {
        let (queue, records) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        let writer_counters = counters.clone();
        let include = options.include_features;
        let spawned = match (options.sink, options.url.clone()) {
            (Sink::Off, _) => return None,
            (Sink::Stdout, _) => std::thread::Builder::new()
                .name("prediction-log".into())
                .spawn(move || write_stdout(&records, include, &writer_counters)),
            (Sink::Http, url) => {
                let url = url.unwrap_or_default();
                std::thread::Builder::new()
                    .name("prediction-log".into())
                    .spawn(move || post_batches(&records, &url, include, &writer_counters))
            }
        };
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the prediction log writer; logging is off");
            return None;
        }
        tracing::info!(sink = ?options.sink, sample_rate = options.sample_rate, "prediction log on");
        Some(PredictionLog(Arc::new(Inner {
            queue,
            seen: AtomicU64::new(0),
            numbered: AtomicU64::new(0),
            sample_rate: options.sample_rate.clamp(0.0, 1.0),
            counters,
        })))
    }

    /// Whether this request is logged: exactly `sample_rate` of the requests, evenly spread.
    pub fn sampled(&self) -> bool {
        let rate = self.0.sample_rate;
        if rate >= 1.0 {
            return true;
        }
        let n = self.0.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * rate).floor() > (n * rate).floor()
    }

    /// Queue one record per row of a request; rows that do not fit are dropped and counted.
    pub fn record(
        &self,
        model: &ServedModel,
        request_id: Option<&str>,
        features: &Rows,
        rows: usize,
        outputs: &RowOutputs,
    ) {
        let at = SystemTime::now();
        let signature = model.backend.signature();
        let (width, per_row) = (signature.width(), signature.features);
        let classifier = signature.is_classifier();
        let request_id = || match request_id {
            Some(id) => RequestId::Given(id.to_owned()),
            None => RequestId::Numbered(self.0.numbered.fetch_add(1, Ordering::Relaxed)),
        };
        let shared_id = (rows > 1).then(request_id);
        for row in 0..rows {
            let id = match &shared_id {
                Some(RequestId::Given(id)) => RequestId::Given(id.clone()),
                Some(RequestId::Numbered(n)) => RequestId::Numbered(*n),
                None => request_id(),
            };
            let entry = Entry {
                at,
                request_id: id,
                model: model.name.clone(),
                version: model.version.clone(),
                classifier,
                row: (rows > 1).then_some(row),
                features: Rows::from_slice(&features[row * per_row..(row + 1) * per_row]),
                label: outputs.labels.get(row).copied(),
                scores: smallvec::SmallVec::from_slice(
                    &outputs.scores[row * width..(row + 1) * width],
                ),
            };
            match self.0.queue.try_send(entry) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.0.counters.dropped.inc();
                }
            }
        }
    }
}

/// Append one record as a JSON object (no newline). Numbers and strings are written by
/// serde_json's writers, straight into the buffer.
fn format_record(out: &mut Vec<u8>, entry: &Entry, include_features: bool) {
    let timestamp = entry.at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let (prediction, confidence) = match (entry.classifier, entry.label) {
        (true, Some(label)) => (label as f64, entry.scores.iter().copied().fold(0.0, f32::max)),
        _ => (f64::from(entry.scores.first().copied().unwrap_or_default()), REGRESSION_CONFIDENCE),
    };
    out.extend_from_slice(b"{\"kind\":\"prediction\",\"timestamp\":");
    json(out, &timestamp);
    out.extend_from_slice(b",\"request_id\":");
    match &entry.request_id {
        RequestId::Given(id) => json(out, id),
        RequestId::Numbered(n) => json(out, &n.to_string()),
    }
    out.extend_from_slice(b",\"model\":");
    json(out, &entry.model);
    out.extend_from_slice(b",\"version\":");
    json(out, &entry.version);
    if let Some(row) = entry.row {
        out.extend_from_slice(b",\"row\":");
        json(out, &row);
    }
    out.extend_from_slice(b",\"prediction\":");
    json(out, &prediction);
    out.extend_from_slice(b",\"confidence\":");
    json(out, &confidence);
    out.extend_from_slice(b",\"features_sha256\":\"");
    let mut hasher = Sha256::new();
    for value in &entry.features {
        hasher.update(value.to_le_bytes());
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for byte in hasher.finalize() {
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 0xf)]);
    }
    out.push(b'"');
    if include_features {
        out.extend_from_slice(b",\"features\":");
        json(out, entry.features.as_slice());
    }
    out.push(b'}');
}

/// Write `value` as JSON (non-finite numbers, which a loaded model never produces, as null).
fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing to a Vec cannot fail, and these values always serialize.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Take what is queued, at most `limit` records, formatting each with `each`; whether the
/// queue is closed.
fn drain(records: &Receiver<Entry>, limit: usize, mut each: impl FnMut(Entry)) -> (usize, bool) {
    let mut taken = 0;
    while taken < limit {
        match records.try_recv() {
            Ok(entry) => {
                each(entry);
                taken += 1;
            }
            Err(TryRecvError::Empty) => return (taken, false),
            Err(TryRecvError::Disconnected) => return (taken, true),
        }
    }
    (taken, false)
}

/// The stdout writer: every [`POLL`] it takes what is queued and writes it in one go. It
/// polls rather than waits, so a request never has to wake it.
fn write_stdout(records: &Receiver<Entry>, include_features: bool, counters: &Counters) {
    let mut buffer = Vec::with_capacity(256 * 1024);
    loop {
        buffer.clear();
        let (count, closed) = drain(records, QUEUE_CAPACITY, |entry| {
            format_record(&mut buffer, &entry, include_features);
            buffer.push(b'\n');
        });
        if count > 0 {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&buffer).and_then(|()| stdout.flush()) {
                Ok(()) => counters.written.inc_by(count as u64),
                Err(_) => counters.failed.inc_by(count as u64),
            };
        }
        if closed {
            return;
        }
        if count < QUEUE_CAPACITY {
            std::thread::sleep(POLL);
        }
    }
}

/// The HTTP writer: batches of up to [`HTTP_BATCH`] records, sent when full or
/// [`HTTP_FLUSH`] after their first record; a failed batch is counted and dropped.
fn post_batches(records: &Receiver<Entry>, url: &str, include_features: bool, counters: &Counters) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "prediction log: no runtime for the HTTP sink");
            return;
        }
    };
    let https = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
    {
        Ok(builder) => builder.https_or_http().enable_http1().build(),
        Err(error) => {
            tracing::error!(%error, "prediction log: TLS setup failed");
            return;
        }
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let mut body = Vec::with_capacity(HTTP_BATCH * 256);
    let mut count = 0;
    let mut first_at = Instant::now();
    loop {
        let (taken, closed) = drain(records, HTTP_BATCH - count, |entry| {
            body.push(if count == 0 { b'[' } else { b',' });
            format_record(&mut body, &entry, include_features);
            count += 1;
            if count == 1 {
                first_at = Instant::now();
            }
        });
        let due =
            count >= HTTP_BATCH || (count > 0 && (closed || first_at.elapsed() >= HTTP_FLUSH));
        if due {
            body.push(b']');
            let sent = std::mem::replace(&mut body, Vec::with_capacity(HTTP_BATCH * 256));
            match runtime.block_on(post(&client, url, sent)) {
                Ok(()) => {
                    counters.written.inc_by(count as u64);
                }
                Err(why) => {
                    tracing::warn!(
                        why,
                        records = count,
                        "prediction log: the collector did not take a batch"
                    );
                    counters.failed.inc_by(count as u64);
                }
            };
            count = 0;
        }
        if closed {
            return;
        }
        if taken == 0 || !due {
            std::thread::sleep(POLL);
        }
    }
}

async fn post<C>(client: &Client<C, Full<Bytes>>, url: &str, body: Vec<u8>) -> Result<(), String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let request = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad URL: {e}"))?;
    let response = tokio::time::timeout(HTTP_TIMEOUT, client.request(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    if status.is_success() { Ok(()) } else { Err(format!("HTTP {status}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: RequestId, classifier: bool) -> Entry {
        Entry {
            at: UNIX_EPOCH + Duration::from_millis(1_500),
            request_id: id,
            model: "fraud".into(),
            version: "2".into(),
            classifier,
            row: None,
            features: Rows::from_slice(&[1.0, -0.5]),
            label: classifier.then_some(1),
            scores: smallvec::SmallVec::from_slice(&[0.25, 0.75]),
        }
    }

    #[test]
    fn a_record_says_what_was_predicted_and_hashes_the_features() {
        let mut line = Vec::new();
        format_record(&mut line, &entry(RequestId::Given("r\"1".into()), true), false);
        let record: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(record["kind"], "prediction");
        assert_eq!(record["timestamp"], 1.5);
        assert_eq!(record["request_id"], "r\"1");
        assert_eq!(
            (record["model"].as_str(), record["version"].as_str()),
            (Some("fraud"), Some("2"))
        );
        assert_eq!(record["prediction"], 1.0);
        assert_eq!(record["confidence"], 0.75);
        let mut bytes = Vec::new();
        bytes.extend(1.0f32.to_le_bytes());
        bytes.extend((-0.5f32).to_le_bytes());
        let want: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(record["features_sha256"], want.as_str());
        assert!(record.get("features").is_none(), "features only when asked");

        let mut line = Vec::new();
        format_record(&mut line, &entry(RequestId::Numbered(7), false), true);
        let record: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(record["request_id"], "7");
        assert_eq!(record["prediction"], 0.25, "a regression's value");
        assert_eq!(record["features"], serde_json::json!([1.0, -0.5]));
    }

    #[test]
    fn sampling_logs_exactly_the_rate() {
        for (rate, expected) in [(0.0, 0), (0.1, 100), (0.25, 250), (1.0, 1000)] {
            let log = PredictionLog(Arc::new(Inner {
                queue: std::sync::mpsc::sync_channel(1).0,
                seen: AtomicU64::new(0),
                numbered: AtomicU64::new(0),
                sample_rate: rate,
                counters: Counters::default(),
            }));
            let logged = (0..1000).filter(|_| log.sampled()).count();
            assert_eq!(logged, expected, "rate {rate}");
        }
    }
}
