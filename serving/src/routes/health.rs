//! Liveness, readiness, the model list and metrics: the source design's operational routes.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::runtime::ModelKind;
use crate::state::AppState;

pub fn now() -> f64 {
    seconds(std::time::SystemTime::now())
}

/// Seconds since the epoch, as the responses' `timestamp` says it.
pub fn seconds(at: std::time::SystemTime) -> f64 {
    at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
    timestamp: f64,
}

/// Liveness: the process answers. Never depends on the model.
pub async fn health() -> Json<Health> {
    Json(Health { status: "healthy", timestamp: now() })
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
}

pub async fn ready(State(state): State<AppState>) -> Response {
    match state.readiness() {
        Ok(()) => Json(Ready { status: "ready" }).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Serialize)]
struct ModelList<'a> {
    /// Versions, as the source design listed them (what `model_version` accepts).
    models: Vec<&'a str>,
    details: Vec<ModelDetail<'a>>,
}

#[derive(Serialize)]
struct ModelDetail<'a> {
    name: &'a str,
    version: &'a str,
    backend: &'static str,
    kind: &'static str,
    features: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    classes: Option<&'a [i64]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    targets: Option<usize>,
    drift: bool,
    ready: bool,
}

pub async fn models(State(state): State<AppState>) -> Response {
    let models = match state.models() {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let ready = !state.shutting_down();
    let mut versions: Vec<&str> = models.all().iter().map(|m| m.version.as_str()).collect();
    versions.sort_unstable();
    versions.dedup();
    let details = models
        .all()
        .iter()
        .map(|m| {
            let sig = m.backend.signature();
            let (kind, classes, targets) = match &sig.kind {
                ModelKind::Classifier { labels, .. } => {
                    ("classifier", Some(labels.as_slice()), None)
                }
                ModelKind::Regressor { targets, .. } => ("regressor", None, Some(*targets)),
            };
            ModelDetail {
                name: &m.name,
                version: &m.version,
                backend: m.backend.name(),
                kind,
                features: sig.features,
                classes,
                targets,
                drift: m.drift,
                ready,
            }
        })
        .collect();
    Json(ModelList { models: versions, details }).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
        .into_response()
}
