//! `POST /predict`: the source design's request and response, plus an `instances` batch form.

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde::{Serialize, Serializer};
use tokio::time::Instant;

use super::guard::read_body;
use super::health::now;
use crate::batching::{Arriving, Rows};
use crate::decode::{PredictInput, decode_predict};
use crate::error::{Error, Result};
use crate::feedback::Labels;
use crate::metrics::Outcome;
use crate::runtime::{ModelKind, RowOutputs};
use crate::state::{AppState, ServedModel};

/// The source design answers regressors with this fixed confidence; kept for its clients.
pub const REGRESSION_CONFIDENCE: f32 = 0.95;

// The request is taken whole: a `HeaderMap` extractor would copy every header.
pub async fn predict(State(state): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let timeout = state.settings.request_timeout;
    let deadline = started + timeout;
    let bytes = match read_body(
        &parts.headers,
        body,
        state.settings.max_body_bytes,
        deadline,
        timeout.as_millis() as u64,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let input = match decode_predict(&bytes) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let model = match state
        .models()
        .and_then(|m| m.select(input.model.as_deref(), input.model_version.as_deref()))
    {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let result = answer(model, input, deadline, timeout.as_millis() as u64).await;
    model.metrics.request(Outcome::of(&result.as_ref().map(|_| ())), started.elapsed());
    match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn answer(
    model: &ServedModel,
    input: PredictInput<'_>,
    deadline: Instant,
    timeout_ms: u64,
) -> Result<Response> {
    let features = model.backend.signature().features;
    if input.width != features {
        let field = if input.batch { "`instances` rows have" } else { "`features` has" };
        return Err(Error::invalid(format!(
            "{field} {} values; model {} expects {features}",
            input.width, model.name
        )));
    }
    let arriving = model.batcher.arriving();
    let out = infer(model, input.rows, input.n_rows, arriving, deadline, timeout_ms).await?;
    let sig = model.backend.signature();
    let width = sig.width();
    let row = |i: usize| -> Prediction {
        let scores = &out.scores[i * width..(i + 1) * width];
        match sig.kind {
            ModelKind::Classifier { .. } => Prediction {
                prediction: Number::Label(out.labels[i]),
                confidence: scores.iter().copied().fold(0.0, f32::max),
            },
            ModelKind::Regressor { .. } => Prediction {
                prediction: Number::Value(scores[0]),
                confidence: REGRESSION_CONFIDENCE,
            },
        }
    };
    if let (Some(id), true) = (input.id.as_deref(), sig.is_classifier()) {
        model.feedback().log.insert(id, Labels::from_slice(&out.labels));
    }
    let id = input.id.as_deref();
    let version = model.version.as_str();
    Ok(if input.batch {
        let predictions = (0..input.n_rows).map(row).collect();
        Json(BatchResponse { predictions, model_version: version, timestamp: now(), id })
            .into_response()
    } else {
        let p = row(0);
        Json(Response1 {
            prediction: p.prediction,
            confidence: p.confidence,
            model_version: version,
            timestamp: now(),
            id,
        })
        .into_response()
    })
}

/// Queue rows on the model's batcher and wait, within the request deadline.
pub(super) async fn infer(
    model: &ServedModel,
    rows: Rows,
    n: usize,
    arriving: Arriving,
    deadline: Instant,
    timeout_ms: u64,
) -> Result<RowOutputs> {
    tokio::time::timeout_at(deadline, model.batcher.infer(rows, n, arriving))
        .await
        .map_err(|_| Error::Timeout(timeout_ms))?
}

/// A label serialises as the source design's float (`1.0`); a regression value as itself.
#[derive(Clone, Copy)]
enum Number {
    Label(i64),
    Value(f32),
}

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match *self {
            Self::Label(l) => s.serialize_f64(l as f64),
            Self::Value(v) => s.serialize_f32(v),
        }
    }
}

#[derive(Serialize)]
struct Prediction {
    prediction: Number,
    #[serde(serialize_with = "f32_plain")]
    confidence: f32,
}

fn f32_plain<S: Serializer>(v: &f32, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f32(*v)
}

#[derive(Serialize)]
struct Response1<'a> {
    prediction: Number,
    #[serde(serialize_with = "f32_plain")]
    confidence: f32,
    model_version: &'a str,
    timestamp: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

#[derive(Serialize)]
struct BatchResponse<'a> {
    predictions: Vec<Prediction>,
    model_version: &'a str,
    timestamp: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}
