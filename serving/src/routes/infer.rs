//! The one inference path. Every wire format goes through it in the same order:
//!
//! read the body (within the size limit and the deadline) → decode → find the model →
//! validate against it → infer through its batcher → remember the answer for feedback →
//! log the prediction when sampled → respond → count the request in the model's metrics.
//!
//! `/predict` and the Open Inference Protocol implement [`Protocol`]: they only translate
//! into this path and out of it.

use std::cell::OnceCell;
use std::time::SystemTime;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::guard::read_body;
use crate::batching::Arriving;
use crate::decode::Decoded;
use crate::error::{Error, Result};
use crate::feedback::Labels;
use crate::metrics::status_of;
use crate::models::ServedModel;
use crate::runtime::{RowOutputs, Rows};
use crate::state::AppState;

/// A wire format's side of an inference request.
pub(super) trait Protocol {
    /// What the URL says about the model: nothing for `/predict`, its name for the OIP.
    type Route;
    /// A decoded request body, borrowing from the bytes.
    type Request<'b>: Decoded;

    /// The model the route names, looked up before the body is read; `None` when the body
    /// names it.
    fn routed<'s>(state: &'s AppState, route: &Self::Route) -> Result<Option<&'s ServedModel>>;
    fn decode(bytes: &[u8]) -> Result<Self::Request<'_>>;
    /// The model the body names; asked only when the route named none.
    fn selected<'s>(state: &'s AppState, request: &Self::Request<'_>) -> Result<&'s ServedModel> {
        let _ = (state, request);
        Err(Error::invalid("the request names no model"))
    }
    /// The protocol's checks of the request against the model, each naming the field.
    fn validate(model: &ServedModel, request: &Self::Request<'_>) -> Result<()>;
    fn respond(
        model: &ServedModel,
        request: &Self::Request<'_>,
        outputs: &RowOutputs,
        answered: &AnsweredAt,
    ) -> Response;
}

/// When the answer was made, read from the clock once and only when asked: a `/predict`
/// response and the request's log records carry the same instant, and a path that shows
/// neither reads no clock.
#[derive(Default)]
pub(super) struct AnsweredAt(OnceCell<SystemTime>);

impl AnsweredAt {
    pub(super) fn get(&self) -> SystemTime {
        *self.0.get_or_init(SystemTime::now)
    }
}

/// Serve one inference request in the format of `P`.
pub(super) async fn serve<P: Protocol>(
    state: &AppState,
    route: P::Route,
    req: Request,
) -> Response {
    // One clock for every protocol, started before the body is read: a slow upload counts
    // against the deadline, and the latency histogram covers body read to response.
    let started = Instant::now();
    let mut model = None;
    let result = run::<P>(state, &route, req, started, &mut model).await;
    // A request counts in the metrics of its model once the model is known.
    if let Some(model) = model {
        model.metrics.request(status_of(&result.as_ref().map(|_| ())), started.elapsed());
    }
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn run<'s, P: Protocol>(
    state: &'s AppState,
    route: &P::Route,
    req: Request,
    started: Instant,
    model: &mut Option<&'s ServedModel>,
) -> Result<Response> {
    let timeout = state.settings.request_timeout;
    let timeout_ms = timeout.as_millis() as u64;
    let deadline = started + timeout;
    let routed = P::routed(state, route)?;
    *model = routed;
    // Tell a forming batch this request is on its way while it is read and decoded.
    let arriving = routed.map(|m| m.batcher.arriving());
    let (parts, body) = req.into_parts();
    let bytes =
        read_body(&parts.headers, body, state.settings.max_body_bytes, deadline, timeout_ms)
            .await?;
    let mut request = P::decode(&bytes)?;
    let served = match routed {
        Some(m) => m,
        None => P::selected(state, &request)?,
    };
    *model = Some(served);
    P::validate(served, &request)?;
    let arriving = arriving.unwrap_or_else(|| served.batcher.arriving());
    let (rows, n) = request.take_rows();
    // A sampled request keeps what its log records need of its rows before they go.
    let logged =
        state.prediction_log.as_ref().and_then(|log| Some((log, log.sample(served, &rows, n)?)));
    let outputs = infer(served, rows, n, arriving, deadline, timeout_ms).await?;
    remember(served, request.id(), &outputs);
    let answered = AnsweredAt::default();
    if let Some((log, sampled)) = logged {
        log.record(served, request.id(), &sampled, &outputs, answered.get());
    }
    Ok(P::respond(served, &request, &outputs, &answered))
}

/// Infer on the spot when the call is cheap; otherwise queue on the model's batcher and wait,
/// within the request deadline.
async fn infer(
    model: &ServedModel,
    rows: Rows,
    n: usize,
    arriving: Arriving,
    deadline: Instant,
    timeout_ms: u64,
) -> Result<RowOutputs> {
    if let Some(outputs) = model.batcher.try_on_the_spot(&rows, n) {
        return outputs;
    }
    tokio::time::timeout_at(deadline, model.batcher.queue(rows, n, arriving))
        .await
        .map_err(|_| Error::Timeout(timeout_ms))?
}

/// Keep a classifier's labels under the request's id, for `/feedback`.
fn remember(model: &ServedModel, id: Option<&str>, outputs: &RowOutputs) {
    if let (Some(id), true) = (id, model.backend.signature().is_classifier()) {
        model.feedback().log.insert(id, Labels::from_slice(&outputs.labels));
    }
}
