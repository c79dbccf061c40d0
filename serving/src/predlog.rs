//! Prediction logging: one JSON record per predicted row, for later training and audit.
//!
//! A record holds the time, the request id, the model and version, the prediction and its
//! confidence, and the SHA-256 of the row's features (the features themselves only when
//! asked). The request path decides whether to log (a counter, so a sample rate of 0.1 logs
//! exactly every tenth request) and hashes the rows before they go to the model, so it need
//! not keep a copy of them; once the model has answered it formats the request's records,
//! as JSON lines, into a small buffer moved onto the log's pending bytes when full (see
//! `Appended`); a thread of its own takes what is pending every `POLL` and writes it (to
//! a standard output pipe widened to hold a poll's worth). When the pending bytes would pass
//! [`PENDING_LIMIT_BYTES`] a request's records are dropped and counted
//! (`ml_prediction_log_records_total{outcome="dropped"}`): a slow sink never slows inference.
//! A stopping server has the writer write what is left before it exits
//! ([`PredictionLog::finish`]).
//!
//! Formatting where the record is made costs no more than formatting it on the writer (a
//! measured alternative), and saves what a queue of records costs: copying each one in and
//! out, and a queue's memory that the requests walk through cold.
//!
//! Sinks: JSON lines on standard output (for the node's log collector), or an HTTP collector
//! that receives batches as a JSON array per POST (failed batches are counted, not retried).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use sha2::{Digest, Sha256};
use smallvec::SmallVec;

use crate::metrics::PredictionLogCounters as Counters;
use crate::models::ServedModel;
use crate::runtime::{Predicted, RowOutputs};

/// Formatted records waiting for the writer, at most; a request whose records would pass it
/// has them dropped. About 8,000 records of 250 bytes: three and a half polls' worth at
/// 120,000 requests a second, with as much again in the pipe.
pub const PENDING_LIMIT_BYTES: usize = 2 << 20;
/// Records are moved from the request path's small buffer onto the pending bytes once it
/// holds this many bytes (about 70 records).
const STAGED_BYTES: usize = 16 << 10;
/// How often the writer takes what is pending. It polls rather than waits, so a request
/// never has to wake it; each wake-up interrupts the requests on a busy core, so it wakes
/// seldom (every 4 ms cost about 0.8 points more at 140,000 requests a second).
const POLL: Duration = Duration::from_millis(20);
/// How long a stopping server waits for the writer's last records (see
/// [`PredictionLog::finish`]): inside the 5 s the operator gives a pod to stop after its
/// drain, so a collector that is down still lets the pod exit cleanly.
const FINISH_LIMIT: Duration = Duration::from_secs(3);

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

/// One predicted row, as a record says it.
struct Record<'a> {
    at: SystemTime,
    request_id: RequestId<'a>,
    model: &'a str,
    version: &'a str,
    /// The row's index within its request, for batch requests.
    row: Option<usize>,
    /// As `/predict` answers: the model's own f32s, shorter than f64s and the same values.
    prediction: Predicted,
    confidence: f32,
    features_sha256: &'a [u8; 32],
    /// The features themselves, when the log includes them.
    features: Option<&'a [f32]>,
}

#[derive(Clone, Copy)]
enum RequestId<'a> {
    Given(&'a str),
    /// No id in the request: the log's own sequence number.
    Numbered(u64),
}

/// JSON lines waiting for the writer.
#[derive(Debug, Default)]
struct Pending {
    lines: Vec<u8>,
    records: u64,
}

impl Pending {
    /// Empty, keeping the capacity for the next records.
    fn clear(&mut self) {
        self.lines.clear();
        self.records = 0;
    }

    /// Move `staged`'s records onto the end of these.
    fn take_from(&mut self, staged: &mut Pending) {
        self.lines.extend_from_slice(&staged.lines);
        self.records += staged.records;
        staged.clear();
    }
}

/// Records not yet taken by the writer. A request formats its records into `staged`, a
/// buffer of at most about [`STAGED_BYTES`] that is used again and again and so stays in the
/// core's cache; full, it is moved onto `pending` in one copy. Formatting straight onto
/// `pending`, memory last touched by the writer a poll ago, made each request wait for its
/// stores to reach that memory (about half a point of the log's cost).
#[derive(Debug, Default)]
struct Appended {
    staged: Pending,
    pending: Pending,
    /// The next number for a request without an id: given under the lock, so numbers rise
    /// along the log (a gap is a dropped request).
    next_number: u64,
}

/// What a sampled request keeps for its records while its rows are with the model.
#[derive(Debug)]
pub struct Sampled {
    /// SHA-256 of each row's features.
    digests: SmallVec<[[u8; 32]; 1]>,
    /// The rows, when the log includes features.
    features: Option<Box<[f32]>>,
}

/// What the request path and the writer share.
#[derive(Debug, Default)]
struct Shared {
    appended: Mutex<Appended>,
    /// Every handle is gone: the writer writes what is left and stops.
    closed: AtomicBool,
}

impl Shared {
    fn appended(&self) -> MutexGuard<'_, Appended> {
        // A panic while appending bytes cannot leave them worse than a torn line; keep going.
        self.appended.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append a request's `records`, as `write` formats them, or drop them when the writer
    /// is too far behind. The writer holds the lock only for a swap once a poll.
    fn append(
        &self,
        records: u64,
        counters: &Counters,
        write: impl FnOnce(&mut Vec<u8>, &mut u64),
    ) {
        let mut appended = self.appended();
        let Appended { staged, pending, next_number } = &mut *appended;
        let before = staged.lines.len();
        write(&mut staged.lines, next_number);
        if pending.lines.len() + staged.lines.len() > PENDING_LIMIT_BYTES {
            staged.lines.truncate(before);
            drop(appended);
            counters.dropped.inc_by(records);
            return;
        }
        staged.records += records;
        if staged.lines.len() >= STAGED_BYTES {
            pending.take_from(staged);
        }
    }

    /// Swap every record not yet taken with `spare` (empty, its capacity kept for the next
    /// records).
    fn take(&self, spare: &mut Pending) {
        let mut appended = self.appended();
        let Appended { staged, pending, .. } = &mut *appended;
        pending.take_from(staged);
        std::mem::swap(pending, spare);
    }

    /// A writer's step: wait one [`POLL`], then take what is pending into `taken` (empty).
    /// True when every handle is gone, and so this take holds the last records.
    fn wait_and_take(&self, taken: &mut Pending) -> bool {
        std::thread::sleep(POLL);
        // Read before taking: records appended before the last handle went are in this take.
        let closed = self.closed.load(Ordering::SeqCst);
        self.take(taken);
        closed
    }
}

/// The log's handle, cheap to clone.
#[derive(Clone, Debug)]
pub struct PredictionLog(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    /// Requests seen, for sampling.
    seen: AtomicU64,
    sample_rate: f64,
    include_features: bool,
    counters: Counters,
    /// The writer thread, until [`PredictionLog::finish`] waits for it.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
    }
}

impl PredictionLog {
    /// Start the writer thread; `None` when logging is off.
    pub fn start(options: &Options, counters: Counters) -> Option<PredictionLog> {
        let shared = Arc::new(Shared::default());
        let (writer_shared, writer_counters) = (shared.clone(), counters.clone());
        let spawned = match (options.sink, options.url.clone()) {
            (Sink::Off, _) => return None,
            (Sink::Stdout, _) => std::thread::Builder::new()
                .name("prediction-log".into())
                .spawn(move || stdout::write_stdout(&writer_shared, &writer_counters)),
            (Sink::Http, url) => {
                let url = url.unwrap_or_default();
                std::thread::Builder::new()
                    .name("prediction-log".into())
                    .spawn(move || http::post_batches(&writer_shared, &url, &writer_counters))
            }
        };
        let writer = match spawned {
            Ok(writer) => writer,
            Err(error) => {
                tracing::error!(%error, "cannot start the prediction log writer; logging is off");
                return None;
            }
        };
        tracing::info!(sink = ?options.sink, sample_rate = options.sample_rate, "prediction log on");
        Some(PredictionLog(Arc::new(Inner {
            shared,
            seen: AtomicU64::new(0),
            sample_rate: options.sample_rate.clamp(0.0, 1.0),
            include_features: options.include_features,
            counters,
            writer: Mutex::new(Some(writer)),
        })))
    }

    /// Have the writer write (or send) every record made so far, then stop; wait for it up to
    /// `FINISH_LIMIT`. A stopping server calls this once it has answered its last request,
    /// so the records of its last moments are not lost with the process.
    pub async fn finish(&self) {
        self.0.shared.closed.store(true, Ordering::SeqCst);
        let writer = self.0.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(writer) = writer else { return };
        let joined = tokio::task::spawn_blocking(move || writer.join());
        match tokio::time::timeout(FINISH_LIMIT, joined).await {
            Ok(Ok(Ok(()))) => tracing::debug!("prediction log: last records written"),
            Ok(_) => {
                tracing::error!("prediction log: the writer failed; its last records are lost")
            }
            Err(_) => tracing::warn!(
                limit_seconds = FINISH_LIMIT.as_secs(),
                "prediction log: the writer did not finish in time; the records it holds are lost"
            ),
        }
    }

    /// Whether this request is logged: exactly `sample_rate` of the requests, evenly spread.
    fn sampled(&self) -> bool {
        let rate = self.0.sample_rate;
        if rate >= 1.0 {
            return true;
        }
        let n = self.0.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * rate).floor() > (n * rate).floor()
    }

    /// Sample a request (exactly the sample rate of them, evenly spread); for a logged one,
    /// what its records need of its `rows` rows, taken before they go to the model: each
    /// row's digest, and a copy of the features only when the log includes them.
    pub fn sample(&self, model: &ServedModel, features: &[f32], rows: usize) -> Option<Sampled> {
        if !self.sampled() {
            return None;
        }
        let per_row = model.backend.signature().features;
        let row = |i: usize| &features[i * per_row..(i + 1) * per_row];
        Some(Sampled {
            digests: (0..rows).map(|i| features_sha256(row(i))).collect(),
            features: self.0.include_features.then(|| features[..rows * per_row].into()),
        })
    }

    /// Log one record per row of a request, answered `at`; a request whose records do not
    /// fit is dropped and counted.
    pub fn record(
        &self,
        model: &ServedModel,
        request_id: Option<&str>,
        sampled: &Sampled,
        outputs: &RowOutputs,
        at: SystemTime,
    ) {
        let signature = model.backend.signature();
        let per_row = signature.features;
        let rows = sampled.digests.len();
        self.0.shared.append(rows as u64, &self.0.counters, |lines, next_number| {
            let mut numbered = || {
                let number = *next_number;
                *next_number += 1;
                RequestId::Numbered(number)
            };
            // The rows of a batch share the request's id, or one number when it has none.
            let shared_id = match request_id {
                Some(id) => Some(RequestId::Given(id)),
                None => (rows > 1).then(&mut numbered),
            };
            for row in 0..rows {
                let (prediction, confidence) = outputs.answer(signature, row);
                let record = Record {
                    at,
                    request_id: shared_id.unwrap_or_else(&mut numbered),
                    model: &model.name,
                    version: &model.version,
                    row: (rows > 1).then_some(row),
                    prediction,
                    confidence,
                    features_sha256: &sampled.digests[row],
                    features: sampled
                        .features
                        .as_deref()
                        .map(|f| &f[row * per_row..(row + 1) * per_row]),
                };
                format_record(lines, &record);
                lines.push(b'\n');
            }
        });
    }
}

/// Append one record as a JSON object (no newline). Numbers and strings are written by
/// serde_json's writers, straight into the buffer.
fn format_record(out: &mut Vec<u8>, record: &Record<'_>) {
    out.extend_from_slice(b"{\"kind\":\"prediction\",\"timestamp\":");
    write_seconds(out, record.at);
    out.extend_from_slice(b",\"request_id\":");
    match record.request_id {
        RequestId::Given(id) => json(out, id),
        RequestId::Numbered(n) => {
            out.push(b'"');
            json(out, &n);
            out.push(b'"');
        }
    }
    out.extend_from_slice(b",\"model\":");
    json(out, record.model);
    out.extend_from_slice(b",\"version\":");
    json(out, record.version);
    if let Some(row) = record.row {
        out.extend_from_slice(b",\"row\":");
        json(out, &row);
    }
    out.extend_from_slice(b",\"prediction\":");
    match record.prediction {
        // A label as a number with a fraction, as `/predict` says it.
        Predicted::Label(label) => {
            json(out, &label);
            out.extend_from_slice(b".0");
        }
        Predicted::Value(value) => json(out, &value),
    }
    out.extend_from_slice(b",\"confidence\":");
    json(out, &record.confidence);
    out.extend_from_slice(b",\"features_sha256\":\"");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 64];
    for (byte, pair) in record.features_sha256.iter().zip(hex.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    out.extend_from_slice(&hex);
    out.push(b'"');
    if let Some(features) = record.features {
        out.extend_from_slice(b",\"features\":");
        json(out, features);
    }
    out.push(b'}');
}

/// Seconds since the epoch with six decimals, as integers: a float's shortest form costs
/// more to find and says no more.
fn write_seconds(out: &mut Vec<u8>, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    json(out, &since.as_secs());
    let mut micros = since.subsec_micros();
    let mut digits = *b".000000";
    for digit in digits[1..].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.extend_from_slice(&digits);
}

/// SHA-256 of the features' little-endian bytes, fed to the hasher a block of values at a
/// time: one `update` per value costs more than the hashing itself.
fn features_sha256(features: &[f32]) -> [u8; 32] {
    const CHUNK: usize = 64;
    let mut hasher = Sha256::new();
    let mut bytes = [0u8; CHUNK * 4];
    for values in features.chunks(CHUNK) {
        for (value, out) in values.iter().zip(bytes.chunks_exact_mut(4)) {
            out.copy_from_slice(&value.to_le_bytes());
        }
        hasher.update(&bytes[..values.len() * 4]);
    }
    hasher.finalize().into()
}

/// Write `value` as JSON (non-finite numbers, which a loaded model never produces, as null).
fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing to a Vec cannot fail, and these values always serialize.
    let _ = serde_json::to_writer(&mut *out, value);
}

mod http;
mod stdout;

pub use http::{HTTP_BATCH, HTTP_FLUSH};

#[cfg(test)]
mod tests;
