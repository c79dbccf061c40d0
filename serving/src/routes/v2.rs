//! Open Inference Protocol (KServe V2) REST endpoints.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use smallvec::{SmallVec, smallvec};

use super::infer::{AnsweredAt, Protocol, serve};
use crate::decode::{InferInput, decode_infer};
use crate::error::{Error, Result};
use crate::models::ServedModel;
use crate::runtime::{DataType, ModelKind, RowOutputs, TensorInfo};
use crate::state::AppState;

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
    match path(p) {
        Ok(model) => serve::<Oip>(&state, Named { model, version: None }, req).await,
        Err(e) => e.into_response(),
    }
}

pub async fn infer_version(
    State(state): State<AppState>,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Response {
    match path(p) {
        Ok((model, v)) => serve::<Oip>(&state, Named { model, version: Some(v) }, req).await,
        Err(e) => e.into_response(),
    }
}

/// The Open Inference Protocol's inference request.
struct Oip;

/// The model, and optionally its version, named in the path.
struct Named {
    model: String,
    version: Option<String>,
}

impl Protocol for Oip {
    type Route = Named;
    type Request<'b> = InferInput<'b>;

    fn routed<'s>(state: &'s AppState, route: &Named) -> Result<Option<&'s ServedModel>> {
        lookup(state, &route.model, route.version.as_deref()).map(Some)
    }

    fn decode(bytes: &[u8]) -> Result<InferInput<'_>> {
        decode_infer(bytes)
    }

    fn validate(model: &ServedModel, input: &InferInput<'_>) -> Result<()> {
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
        for (i, w) in input.outputs.iter().flatten().enumerate() {
            if !sig.outputs.iter().any(|o| o.name == *w) {
                return Err(Error::invalid(format!(
                    "`outputs[{i}].name` {w:?} is not an output of model {}",
                    model.name
                )));
            }
        }
        Ok(())
    }

    fn respond(
        model: &ServedModel,
        input: &InferInput<'_>,
        out: &RowOutputs,
        _answered: &AnsweredAt,
    ) -> Response {
        let sig = model.backend.signature();
        let (n, width) = (input.n_rows, sig.width());
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
        Json(resp).into_response()
    }
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
