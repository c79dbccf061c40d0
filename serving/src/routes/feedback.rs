//! `POST /feedback`: ground-truth labels for earlier predictions, feeding `ml_model_accuracy`.
//!
//! Two forms, one per request:
//! - `{"model": "m", "predictions": [1, 0], "labels": [1, 1]}`: the caller says what the model
//!   answered and what was true;
//! - `{"model": "m", "id": "req-42", "labels": [1]}`: the server looks up what it answered to the
//!   request that carried `id` (kept for the last 10,000 ids per model, usable once).

use std::borrow::Cow;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::guard::read_body;
use crate::decode::parse_owned;
use crate::error::{Error, Result};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    predictions: Option<Vec<f64>>,
    labels: Vec<f64>,
}

#[derive(Serialize)]
struct FeedbackResponse<'a> {
    model: &'a str,
    model_version: &'a str,
    accepted: usize,
    accuracy: Option<f64>,
    window: usize,
}

pub async fn feedback(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    handle(&state, &parts.headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn handle(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Response> {
    let timeout = state.settings.request_timeout;
    let deadline = Instant::now() + timeout;
    let bytes = read_body(
        headers,
        body,
        state.settings.max_body_bytes,
        deadline,
        timeout.as_millis() as u64,
    )
    .await?;
    let req: FeedbackRequest = parse_owned(&bytes)?;
    let model = state.models()?.select(req.model.as_deref(), req.model_version.as_deref())?;
    if !model.backend.signature().is_classifier() {
        return Err(Error::invalid(format!(
            "model {} is a regressor; feedback needs class labels",
            model.name
        )));
    }
    let labels = as_labels(&req.labels, "labels")?;
    if labels.is_empty() {
        return Err(Error::invalid("`labels` cannot be empty"));
    }
    let mut fb = model.feedback();
    let predicted: Cow<'_, [i64]> = match (&req.predictions, &req.id) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid("send either `predictions` or `id`, not both"));
        }
        (None, None) => return Err(Error::invalid("`predictions` or `id` is required")),
        (Some(p), None) => Cow::Owned(as_labels(p, "predictions")?),
        (None, Some(id)) => Cow::Owned(
            fb.log
                .take(id)
                .ok_or_else(|| Error::NotFound(format!("no recent prediction with `id` {id:?}")))?
                .to_vec(),
        ),
    };
    if predicted.len() != labels.len() {
        return Err(Error::invalid(format!(
            "`labels` has {} values for {} predictions",
            labels.len(),
            predicted.len()
        )));
    }
    for (p, l) in predicted.iter().zip(&labels) {
        fb.accuracy.record(p == l);
    }
    let accuracy = fb.accuracy.accuracy();
    let window = fb.accuracy.len();
    drop(fb);
    if let Some(a) = accuracy {
        model.metrics.set_accuracy(a);
    }
    Ok(Json(FeedbackResponse {
        model: &model.name,
        model_version: &model.version,
        accepted: labels.len(),
        accuracy,
        window,
    })
    .into_response())
}

/// Class labels arrive as JSON numbers (the source design answers `1.0`); they must be whole.
fn as_labels(values: &[f64], field: &str) -> Result<Vec<i64>> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.fract() == 0.0 && v.abs() < 9.0e15 {
                Ok(v as i64)
            } else {
                Err(Error::invalid(format!("`{field}[{i}]` ({v}) is not a class label")))
            }
        })
        .collect()
}
