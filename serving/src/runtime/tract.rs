//! General ONNX graphs through `tract-onnx`, for models with operators outside the ONNX-ML set.

use std::sync::Arc;

use tract_onnx::prelude::*;

use super::proto::GraphProto;
use super::{Backend, DataType, ModelKind, Predictions, Signature, TensorInfo};
use crate::error::{Error, Result};

type Plan = Arc<TypedRunnableModel>;

pub struct Tract {
    plan: Plan,
    signature: Signature,
}

impl Tract {
    pub fn new(bytes: &[u8], graph: &GraphProto) -> Result<Self> {
        let (input_name, features) = super::graph_input(graph)?;
        let plan = build(bytes, features).map_err(|e| Error::load(format!("tract: {e:#}")))?;
        // One zero row tells us the output types and widths, and warms the plan up.
        let outs = plan
            .run(tvec!(Tensor::zero::<f32>(&[1, features]).map_err(load_err)?.into()))
            .map_err(load_err)?;
        let outputs: Vec<TensorInfo> = graph
            .output
            .iter()
            .zip(outs.iter())
            .map(|(info, t)| tensor_info(&info.name, t))
            .collect::<Result<_>>()?;
        let kind = kind_of(&outputs)?;
        let signature = Signature {
            input: TensorInfo {
                name: input_name,
                datatype: DataType::Fp32,
                shape: vec![-1, features as i64],
            },
            features,
            outputs,
            kind,
        };
        Ok(Self { plan, signature })
    }
}

fn build(bytes: &[u8], features: usize) -> TractResult<Plan> {
    let mut model = tract_onnx::onnx().model_for_read(&mut &*bytes)?;
    let batch = model.symbols.sym("N");
    model = model
        .with_input_fact(0, f32::fact([TDim::Sym(batch), TDim::Val(features as i64)]).into())?;
    model.into_optimized()?.into_runnable()
}

fn load_err(e: impl std::fmt::Display) -> Error {
    Error::load(format!("tract: {e}"))
}

fn infer_err(e: impl std::fmt::Display) -> Error {
    Error::Inference(format!("tract: {e}"))
}

fn tensor_info(name: &str, t: &TValue) -> Result<TensorInfo> {
    let dt = t.datum_type();
    let datatype = if dt.is_float() {
        DataType::Fp32
    } else if dt.is_integer() || dt == TDim::datum_type() {
        DataType::Int64
    } else {
        return Err(Error::load(format!("output {name} has unsupported type {dt:?}")));
    };
    let shape = match (datatype, t.shape()) {
        (DataType::Int64, [_]) | (DataType::Int64, [_, 1]) => vec![-1],
        (DataType::Fp32, [_, cols]) => vec![-1, *cols as i64],
        (DataType::Fp32, [_]) => vec![-1, 1],
        (_, s) => {
            return Err(Error::load(format!("output {name} has unsupported shape {s:?}")));
        }
    };
    Ok(TensorInfo { name: name.to_owned(), datatype, shape })
}

fn kind_of(outputs: &[TensorInfo]) -> Result<ModelKind> {
    let find = |dt| outputs.iter().position(|o| o.datatype == dt);
    match (outputs.len(), find(DataType::Int64), find(DataType::Fp32)) {
        (2, Some(label_output), Some(prob_output)) => {
            let classes = outputs[prob_output].shape[1] as usize;
            Ok(ModelKind::Classifier {
                label_output,
                prob_output,
                classes,
                labels: (0..classes as i64).collect(),
            })
        }
        (1, None, Some(value_output)) => Ok(ModelKind::Regressor {
            value_output,
            targets: outputs[value_output].shape[1] as usize,
        }),
        _ => Err(Error::load(
            "unsupported outputs: expected INT64 label + FLOAT probabilities, or one FLOAT output",
        )),
    }
}

impl Backend for Tract {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn predict(&self, x: &[f32], rows: usize, out: &mut Predictions) -> Result<()> {
        let input = Tensor::from_shape(&[rows, self.signature.features], x).map_err(infer_err)?;
        let outs = self.plan.run(tvec!(input.into())).map_err(infer_err)?;
        out.rows = rows;
        out.width = self.signature.width();
        out.labels.clear();
        out.scores.clear();
        let scores_at = match self.signature.kind {
            ModelKind::Classifier { label_output, prob_output, .. } => {
                let labels = outs[label_output].cast_to::<i64>().map_err(infer_err)?;
                out.labels.extend(
                    labels.to_plain_array_view::<i64>().map_err(infer_err)?.iter().copied(),
                );
                prob_output
            }
            ModelKind::Regressor { value_output, .. } => value_output,
        };
        let scores = outs[scores_at].cast_to::<f32>().map_err(infer_err)?;
        out.scores.extend(scores.to_plain_array_view::<f32>().map_err(infer_err)?.iter().copied());
        if out.scores.len() != rows * out.width
            || (!out.labels.is_empty() && out.labels.len() != rows)
        {
            return Err(Error::Inference("tract returned outputs of an unexpected size".into()));
        }
        Ok(())
    }
}
