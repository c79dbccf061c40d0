//! `POST /predict`: the source design's request and response, plus an `instances` batch form.

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde::{Serialize, Serializer};

use super::health::seconds;
use super::infer::{AnsweredAt, Protocol, serve};
use crate::decode::{PredictInput, decode_predict};
use crate::error::{Error, Result};
use crate::models::ServedModel;
use crate::runtime::{Predicted, RowOutputs};
use crate::state::AppState;

/// The source design's wire format.
pub(super) struct Predict;

// The request is taken whole: a `HeaderMap` extractor would copy every header.
pub async fn predict(State(state): State<AppState>, req: Request) -> Response {
    serve::<Predict>(&state, (), req).await
}

impl Protocol for Predict {
    type Route = ();
    type Request<'b> = PredictInput<'b>;

    fn routed<'s>(_: &'s AppState, _: &()) -> Result<Option<&'s ServedModel>> {
        Ok(None)
    }

    fn decode(bytes: &[u8]) -> Result<PredictInput<'_>> {
        decode_predict(bytes)
    }

    /// The `model` field may be left out when one model name is served.
    fn selected<'s>(state: &'s AppState, input: &PredictInput<'_>) -> Result<&'s ServedModel> {
        let models = state.models()?;
        models.select(input.model.as_deref(), input.model_version.as_deref()).map(|m| m.as_ref())
    }

    fn validate(model: &ServedModel, input: &PredictInput<'_>) -> Result<()> {
        let features = model.backend.signature().features;
        if input.width == features {
            return Ok(());
        }
        let field = if input.batch { "`instances` rows have" } else { "`features` has" };
        Err(Error::invalid(format!(
            "{field} {} values; model {} expects {features}",
            input.width, model.name
        )))
    }

    fn respond(
        model: &ServedModel,
        input: &PredictInput<'_>,
        out: &RowOutputs,
        answered: &AnsweredAt,
    ) -> Response {
        let signature = model.backend.signature();
        let row = |i: usize| -> Prediction {
            let (prediction, confidence) = out.answer(signature, i);
            Prediction { prediction: Number(prediction), confidence }
        };
        let id = input.id.as_deref();
        let version = model.version.as_str();
        if input.batch {
            let predictions = (0..input.n_rows).map(row).collect();
            Json(BatchResponse {
                predictions,
                model_version: version,
                timestamp: seconds(answered.get()),
                id,
            })
            .into_response()
        } else {
            let p = row(0);
            Json(Response1 {
                prediction: p.prediction,
                confidence: p.confidence,
                model_version: version,
                timestamp: seconds(answered.get()),
                id,
            })
            .into_response()
        }
    }
}

/// A label serialises as the source design's float (`1.0`); a regression value as itself.
#[derive(Clone, Copy)]
struct Number(Predicted);

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Predicted::Label(l) => s.serialize_f64(l as f64),
            Predicted::Value(v) => s.serialize_f32(v),
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
