//! Open Inference Protocol (KServe V2) REST endpoints.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use smallvec::{SmallVec, smallvec};
use tokio::time::Instant;

use super::guard::read_body;
use super::predict::infer as queue_infer;
use crate::decode::decode_infer;
use crate::error::{Error, Result};
use crate::feedback::Labels;
use crate::metrics::Outcome;
use crate::runtime::{DataType, ModelKind, TensorInfo};
use crate::state::{AppState, ServedModel};

const PLATFORM: &str = "onnx_onnxv1";

#[derive(Serialize)]
pub struct ServerMetadata {
    name: &'static str,
    version: &'static str,
    extensions: [&'static str; 0],
}

pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: "modelship-serving",
        version: env!("CARGO_PKG_VERSION"),
        extensions: [],
    })
}

#[derive(Serialize)]
pub struct Live {
    live: bool,
}

pub async fn live() -> Json<Live> {
    Json(Live { live: true })
}

#[derive(Serialize)]
struct Ready {
    ready: bool,
}

pub async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.readiness().is_ok();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Ready { ready })).into_response()
}

#[derive(Serialize)]
struct ModelNames<'a> {
    models: &'a [String],
}

pub async fn list(State(state): State<AppState>) -> Response {
    match state.models() {
        Ok(m) => Json(ModelNames { models: m.names() }).into_response(),
        Err(e) => e.into_response(),
    }
}

fn path<T>(p: std::result::Result<Path<T>, PathRejection>) -> Result<T> {
    p.map(|Path(v)| v).map_err(|e| Error::invalid(format!("bad path: {e}")))
}

fn lookup<'a>(state: &'a AppState, name: &str, version: Option<&str>) -> Result<&'a ServedModel> {
    state.models()?.get(name, version).map(|m| m.as_ref())
}

#[derive(Serialize)]
struct TensorMeta<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
}

impl<'a> From<&'a TensorInfo> for TensorMeta<'a> {
    fn from(t: &'a TensorInfo) -> Self {
        Self { name: &t.name, datatype: t.datatype.as_str(), shape: &t.shape }
    }
}

#[derive(Serialize)]
struct ModelMetadata<'a> {
    name: &'a str,
    versions: Vec<&'a str>,
    platform: &'static str,
    inputs: [TensorMeta<'a>; 1],
    outputs: Vec<TensorMeta<'a>>,
}

fn metadata_of(state: &AppState, name: &str, version: Option<&str>) -> Result<Response> {
    let model = lookup(state, name, version)?;
    let sig = model.backend.signature();
    let versions = state.models()?.versions(name);
    let meta = ModelMetadata {
        name: &model.name,
        versions,
        platform: PLATFORM,
        inputs: [TensorMeta::from(&sig.input)],
        outputs: sig.outputs.iter().map(TensorMeta::from).collect(),
    };
    Ok(Json(meta).into_response())
}

pub async fn metadata(
    State(state): State<AppState>,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Response {
    path(p).and_then(|m| metadata_of(&state, &m, None)).unwrap_or_else(IntoResponse::into_response)
}

pub async fn metadata_version(
    State(state): State<AppState>,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Response {
    path(p)
        .and_then(|(m, v)| metadata_of(&state, &m, Some(&v)))
        .unwrap_or_else(IntoResponse::into_response)
}

#[derive(Serialize)]
struct ModelReady<'a> {
    name: &'a str,
    ready: bool,
}

fn model_ready_of(state: &AppState, name: &str, version: Option<&str>) -> Result<Response> {
    let model = lookup(state, name, version)?;
    let ready = !state.shutting_down();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, Json(ModelReady { name: &model.name, ready })).into_response())
}

pub async fn model_ready(
    State(state): State<AppState>,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Response {
    path(p)
        .and_then(|m| model_ready_of(&state, &m, None))
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn model_ready_version(
    State(state): State<AppState>,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Response {
    path(p)
        .and_then(|(m, v)| model_ready_of(&state, &m, Some(&v)))
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn infer(
    State(state): State<AppState>,
    p: std::result::Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    match path(p) {
        Ok(m) => infer_at(&state, &m, None, &parts.headers, body).await,
        Err(e) => e.into_response(),
    }
}

pub async fn infer_version(
    State(state): State<AppState>,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    match path(p) {
        Ok((m, v)) => infer_at(&state, &m, Some(&v), &parts.headers, body).await,
        Err(e) => e.into_response(),
    }
}

async fn infer_at(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let model = match lookup(state, name, version) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let started = Instant::now();
    let result = infer_model(state, model, headers, body, started).await;
    model.metrics.request(Outcome::of(&result.as_ref().map(|_| ())), started.elapsed());
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: SmallVec<[OutputTensor<'a>; 2]>,
}

#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: SmallVec<[usize; 2]>,
    data: OutputData<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutputData<'a> {
    Int64(&'a [i64]),
    Fp32(&'a [f32]),
}

async fn infer_model(
    state: &AppState,
    model: &ServedModel,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
) -> Result<Response> {
    let timeout = state.settings.request_timeout;
    let timeout_ms = timeout.as_millis() as u64;
    let deadline = started + timeout;
    let bytes =
        read_body(headers, body, state.settings.max_body_bytes, deadline, timeout_ms).await?;
    // Tell a forming batch this request is on its way while it decodes.
    let arriving = model.batcher.arriving();
    let input = decode_infer(&bytes)?;
    let sig = model.backend.signature();
    if input.input_name != sig.input.name {
        return Err(Error::invalid(format!(
            "`inputs[0].name` is {:?}; model {} takes {:?}",
            input.input_name, model.name, sig.input.name
        )));
    }
    if input.width != sig.features {
        return Err(Error::invalid(format!(
            "`inputs[0].shape` gives {} features per row; model {} expects {}",
            input.width, model.name, sig.features
        )));
    }
    if let Some(wanted) = &input.outputs {
        for (i, w) in wanted.iter().enumerate() {
            if !sig.outputs.iter().any(|o| o.name == *w) {
                return Err(Error::invalid(format!(
                    "`outputs[{i}].name` {w:?} is not an output of model {}",
                    model.name
                )));
            }
        }
    }
    let n = input.n_rows;
    let out = queue_infer(model, input.rows, n, arriving, deadline, timeout_ms).await?;
    if let (Some(id), true) = (input.id.as_deref(), sig.is_classifier()) {
        model.feedback().log.insert(id, Labels::from_slice(&out.labels));
    }
    let width = sig.width();
    let mut outputs = SmallVec::new();
    for (i, info) in sig.outputs.iter().enumerate() {
        if input.outputs.as_ref().is_some_and(|w| !w.iter().any(|x| *x == info.name)) {
            continue;
        }
        let is_label =
            matches!(sig.kind, ModelKind::Classifier { label_output, .. } if label_output == i);
        let (shape, data) = if is_label {
            (smallvec![n], OutputData::Int64(&out.labels))
        } else {
            (smallvec![n, width], OutputData::Fp32(&out.scores))
        };
        outputs.push(OutputTensor {
            name: &info.name,
            datatype: if info.datatype == DataType::Int64 { "INT64" } else { "FP32" },
            shape,
            data,
        });
    }
    let resp = InferResponse {
        model_name: &model.name,
        model_version: &model.version,
        id: input.id.as_deref(),
        outputs,
    };
    Ok(Json(resp).into_response())
}
