//! Dynamic batching: concurrent requests share one model call, when sharing pays.
//!
//! A call expected to cost no more than [`BatchConfig::inline_call_max`] runs on the request's
//! own task: batching can save a request at most its call's fixed cost, and for such a call
//! that is less than the hop to the batching task (a channel, a oneshot and two task
//! wake-ups). Every other call goes through the queue.
//!
//! Each model has a bounded queue and one task that owns the batch buffers. The task takes the
//! first waiting request, then everything else already queued up to the batch size. It waits
//! (yielding, up to the batch delay) only while other requests are being decoded right now: an
//! idle server answers a lone request without any added delay. The drift window is shared
//! with calls made on the spot, behind a lock held only to add rows.
//!
//! The model call itself runs on the task while it is cheap; a call expected to take longer
//! than [`CallCost::OFFLOAD_ABOVE`] moves to the blocking pool, so a large model never stalls
//! the async workers that read, decode and answer the other requests.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::drift::DriftWindow;
use crate::error::{Error, Result};
use crate::metrics::ModelMetrics;
use crate::runtime::{Backend, Predictions, RowOutputs, Rows};

/// What one row costs the model, measured at warm-up: it decides where a call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallCost {
    per_row: Duration,
}

impl CallCost {
    /// Calls expected to take longer than this leave the async workers. Handing a call to
    /// the blocking pool costs a few microseconds, so cheap calls stay where they are.
    pub const OFFLOAD_ABOVE: Duration = Duration::from_micros(100);

    pub fn per_row(per_row: Duration) -> Self {
        Self { per_row }
    }

    /// The measured time of one row.
    pub fn row_time(self) -> Duration {
        self.per_row
    }

    /// What a call on `rows` rows is expected to take.
    pub fn estimate(self, rows: usize) -> Duration {
        self.per_row.saturating_mul(u32::try_from(rows).unwrap_or(u32::MAX))
    }

    /// Whether a call on `rows` rows should run on the blocking pool.
    pub fn offload(self, rows: usize) -> bool {
        self.estimate(rows) > Self::OFFLOAD_ABOVE
    }

    /// Whether a call on `rows` rows is cheap enough to run on the request's own task, given
    /// the configured ceiling (zero: never).
    pub fn on_the_spot(self, rows: usize, inline_call_max: Duration) -> bool {
        !inline_call_max.is_zero() && self.estimate(rows) <= inline_call_max
    }
}

#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    pub max_rows: usize,
    pub max_delay: Duration,
    pub queue_capacity: usize,
    /// Calls expected to take at most this long skip the queue; zero queues every call.
    pub inline_call_max: Duration,
}

struct Job {
    x: Rows,
    rows: usize,
    reply: oneshot::Sender<Result<RowOutputs>>,
}

/// Handle to a model's batching task. Dropping every handle stops the task.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    arriving: Arc<AtomicUsize>,
    model: Arc<Model>,
    inline_call_max: Duration,
}

/// What the batching task and the calls made on the spot share.
struct Model {
    backend: Arc<dyn Backend>,
    cost: CallCost,
    metrics: ModelMetrics,
    drift: Option<Mutex<DriftWindow>>,
}

thread_local! {
    /// Outputs of calls made on the spot, reused by every call on this thread.
    static SPOT_OUTPUTS: RefCell<Predictions> = RefCell::new(Predictions::default());
}

impl Model {
    /// Count a finished call and feed its rows to the drift window.
    fn called(&self, x: &[f32], rows: usize) {
        self.metrics.batch(rows);
        if let Some(drift) = &self.drift {
            let mut window = drift.lock().unwrap_or_else(PoisonError::into_inner);
            window.push(x);
            self.metrics.set_drift(window.score());
        }
    }

    /// One call on the caller's own task, for a cheap call with nothing to gain from company.
    fn call_on_the_spot(&self, x: &[f32], rows: usize) -> Result<RowOutputs> {
        let outputs = SPOT_OUTPUTS
            .with_borrow_mut(|out| self.backend.predict(x, rows, out).map(|()| out.slice(0, rows)));
        match outputs {
            Ok(outputs) => {
                self.called(x, rows);
                Ok(outputs)
            }
            Err(e) => {
                tracing::error!(error = %e, rows, "model call failed");
                Err(Error::Inference(e.to_string()))
            }
        }
    }
}

/// Marks a request as on its way to the queue for as long as it lives.
pub struct Arriving(Arc<AtomicUsize>);

impl Drop for Arriving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Batcher {
    /// Spawn the batching task on the current runtime.
    pub fn spawn(
        backend: Arc<dyn Backend>,
        config: BatchConfig,
        cost: CallCost,
        metrics: ModelMetrics,
        drift: Option<DriftWindow>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let arriving = Arc::new(AtomicUsize::new(0));
        let model = Arc::new(Model { backend, cost, metrics, drift: drift.map(Mutex::new) });
        let worker = Worker { rx, model: model.clone(), config, arriving: arriving.clone() };
        tokio::spawn(worker.run());
        Self { tx, arriving, model, inline_call_max: config.inline_call_max }
    }

    /// What one row costs this model, as measured at warm-up.
    pub fn cost(&self) -> CallCost {
        self.model.cost
    }

    /// Call before decoding a request, so a forming batch knows one more is coming.
    pub fn arriving(&self) -> Arriving {
        self.arriving.fetch_add(1, Ordering::Relaxed);
        Arriving(self.arriving.clone())
    }

    /// Infer on rows right here when the call is cheap enough (see the module docs); `None`
    /// when it is not and the rows should be queued.
    pub fn try_on_the_spot(&self, x: &[f32], rows: usize) -> Option<Result<RowOutputs>> {
        self.model
            .cost
            .on_the_spot(rows, self.inline_call_max)
            .then(|| self.model.call_on_the_spot(x, rows))
    }

    /// Queue rows for inference and wait for their outputs. A full queue fails at once.
    pub async fn queue(&self, x: Rows, rows: usize, arriving: Arriving) -> Result<RowOutputs> {
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.try_send(Job { x, rows, reply });
        drop(arriving);
        match sent {
            Ok(()) => self.model.metrics.queued(),
            Err(mpsc::error::TrySendError::Full(_)) => return Err(Error::QueueFull),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::ShuttingDown),
        }
        answer.await.map_err(|_| Error::Inference("the batching task stopped".into()))?
    }
}

struct Worker {
    rx: mpsc::Receiver<Job>,
    model: Arc<Model>,
    config: BatchConfig,
    arriving: Arc<AtomicUsize>,
}

impl Worker {
    async fn run(mut self) {
        let features = self.model.backend.signature().features;
        let mut jobs: Vec<Job> = Vec::with_capacity(self.config.max_rows);
        let mut buffers = Buffers {
            x: Vec::with_capacity(self.config.max_rows * features),
            out: Predictions::default(),
        };
        let mut carry: Option<Job> = None;
        loop {
            let first = match carry.take() {
                Some(job) => job,
                None => match self.rx.recv().await {
                    Some(job) => {
                        self.model.metrics.dequeued();
                        job
                    }
                    None => return,
                },
            };
            let mut rows = first.rows;
            jobs.push(first);
            carry = self.gather(&mut jobs, &mut rows).await;
            self.run_batch(&mut jobs, &mut buffers).await;
        }
    }

    /// Add queued jobs up to the row limit; returns a job that did not fit.
    async fn gather(&mut self, jobs: &mut Vec<Job>, rows: &mut usize) -> Option<Job> {
        let deadline = Instant::now() + self.config.max_delay;
        loop {
            while *rows < self.config.max_rows {
                match self.rx.try_recv() {
                    Ok(job) => {
                        self.model.metrics.dequeued();
                        if *rows + job.rows > self.config.max_rows {
                            return Some(job);
                        }
                        *rows += job.rows;
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            let more_coming = self.arriving.load(Ordering::Relaxed) > 0;
            if *rows >= self.config.max_rows || !more_coming || Instant::now() >= deadline {
                return None;
            }
            // Let the requests being decoded reach the queue; timers are too coarse for µs.
            tokio::task::yield_now().await;
        }
    }

    async fn run_batch(&mut self, jobs: &mut Vec<Job>, buffers: &mut Buffers) {
        // Callers that gave up (timeout, disconnect) are not worth computing for.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            return;
        }
        let rows = jobs.iter().map(|j| j.rows).sum();
        buffers.x.clear();
        jobs.iter().for_each(|j| buffers.x.extend_from_slice(&j.x));
        match self.call(buffers, rows).await {
            Ok(()) => {
                let mut start = 0;
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Ok(buffers.out.slice(start, job.rows)));
                    start += job.rows;
                }
                self.model.called(&buffers.x, rows);
            }
            Err(e) => {
                tracing::error!(error = %e, rows, "model call failed");
                let msg = e.to_string();
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(Error::Inference(msg.clone())));
                }
            }
        }
    }

    /// One model call on the rows in `buffers.x`, into `buffers.out`: inline when cheap, on
    /// the blocking pool otherwise (the buffers travel there and back).
    async fn call(&self, buffers: &mut Buffers, rows: usize) -> Result<()> {
        if !self.model.cost.offload(rows) {
            return self.model.backend.predict(&buffers.x, rows, &mut buffers.out);
        }
        let model = self.model.backend.clone();
        let mut moved = std::mem::take(buffers);
        let joined = tokio::task::spawn_blocking(move || {
            let result = model.predict(&moved.x, rows, &mut moved.out);
            (moved, result)
        })
        .await;
        match joined {
            Ok((moved, result)) => {
                *buffers = moved;
                result
            }
            Err(e) => Err(Error::Inference(format!("the model call did not finish: {e}"))),
        }
    }
}

/// The batch input and output, reused from one call to the next.
#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    out: Predictions,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_costly_calls_leave_the_async_workers() {
        let cheap = CallCost::per_row(Duration::from_micros(1));
        assert!(!cheap.offload(1));
        assert!(!cheap.offload(64));
        assert!(cheap.offload(1000));
        let costly = CallCost::per_row(Duration::from_millis(2));
        assert!(costly.offload(1));
        assert!(!CallCost::per_row(Duration::ZERO).offload(usize::MAX));
    }

    #[test]
    fn only_calls_under_the_ceiling_skip_the_queue() {
        let ceiling = Duration::from_micros(5);
        let cost = CallCost::per_row(Duration::from_micros(1));
        assert!(cost.on_the_spot(1, ceiling));
        assert!(cost.on_the_spot(5, ceiling));
        assert!(!cost.on_the_spot(6, ceiling), "a request of many rows may gain from a batch");
        assert!(!cost.on_the_spot(1, Duration::ZERO), "a zero ceiling queues every call");
        assert!(!CallCost::per_row(Duration::from_micros(20)).on_the_spot(1, ceiling));
    }
}
