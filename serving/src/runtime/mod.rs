//! Model runtime: one [`Backend`] trait, chosen per model at load time by the operators it uses.
//!
//! Models made only of the ONNX-ML operators scikit-learn exports run on the in-house evaluator
//! ([`onnxml`]); any other graph goes to `tract` (cargo feature `tract`). Every refusal happens
//! here, at load, with the operator named: a loaded model never fails a request for lack of
//! support.

pub mod onnxml;
pub mod proto;
#[cfg(feature = "tract")]
pub mod tract;

use std::sync::Arc;

use prost::Message;
use smallvec::SmallVec;

use crate::error::{Error, Result};
use proto::{GraphProto, ModelProto, data_type};

/// Element type of a model tensor, as the Open Inference Protocol names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    Fp32,
    Int64,
}

impl DataType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fp32 => "FP32",
            Self::Int64 => "INT64",
        }
    }
}

/// Name, element type and shape of a model tensor; `-1` marks the batch dimension.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ModelKind {
    /// `label` (INT64 `[-1]`) and `probabilities` (FP32 `[-1, classes]`).
    Classifier { label_output: usize, prob_output: usize, classes: usize, labels: Vec<i64> },
    /// One FP32 output `[-1, targets]`.
    Regressor { value_output: usize, targets: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Signature {
    pub input: TensorInfo,
    pub features: usize,
    pub outputs: Vec<TensorInfo>,
    pub kind: ModelKind,
}

impl Signature {
    /// Floats per row in [`Predictions::scores`]: class probabilities or regression targets.
    pub fn width(&self) -> usize {
        match self.kind {
            ModelKind::Classifier { classes, .. } => classes,
            ModelKind::Regressor { targets, .. } => targets,
        }
    }

    pub fn is_classifier(&self) -> bool {
        matches!(self.kind, ModelKind::Classifier { .. })
    }
}

/// Outputs of one model call on `rows` rows, row-major. `labels` is empty for regressors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Predictions {
    pub rows: usize,
    pub width: usize,
    pub labels: Vec<i64>,
    pub scores: Vec<f32>,
}

/// Rows of one request, row-major; one 20-feature row stays inline.
pub type Rows = SmallVec<[f32; 32]>;

/// The outputs of one row or a few rows, small enough to live inline for a single row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowOutputs {
    pub labels: SmallVec<[i64; 2]>,
    pub scores: SmallVec<[f32; 8]>,
}

/// The source design answers regressors with this fixed confidence; kept for its clients.
pub const REGRESSION_CONFIDENCE: f32 = 0.95;

/// What a row predicts: a classifier's label or a regressor's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Predicted {
    Label(i64),
    Value(f32),
}

impl RowOutputs {
    /// Row `row`'s prediction and confidence, as the source design reports them: a
    /// classifier's label and its top score, or a regressor's (first) value and
    /// [`REGRESSION_CONFIDENCE`].
    pub fn answer(&self, signature: &Signature, row: usize) -> (Predicted, f32) {
        let width = signature.width();
        let scores = &self.scores[row * width..(row + 1) * width];
        match (signature.is_classifier(), self.labels.get(row)) {
            (true, Some(&label)) => {
                (Predicted::Label(label), scores.iter().copied().fold(0.0, f32::max))
            }
            _ => (
                Predicted::Value(scores.first().copied().unwrap_or_default()),
                REGRESSION_CONFIDENCE,
            ),
        }
    }
}

impl Predictions {
    pub fn clear(&mut self) {
        self.rows = 0;
        self.labels.clear();
        self.scores.clear();
    }

    /// Copy rows `start..start + n` out, to answer one request of a batch.
    pub fn slice(&self, start: usize, n: usize) -> RowOutputs {
        let labels = if self.labels.is_empty() {
            SmallVec::new()
        } else {
            SmallVec::from_slice(&self.labels[start..start + n])
        };
        let scores =
            SmallVec::from_slice(&self.scores[start * self.width..(start + n) * self.width]);
        RowOutputs { labels, scores }
    }
}

/// A loaded model. `predict` takes `rows * features` finite f32 values, row-major.
pub trait Backend: Send + Sync + 'static {
    /// Short backend name for metadata and logs.
    fn name(&self) -> &'static str;
    fn signature(&self) -> &Signature;
    fn predict(&self, x: &[f32], rows: usize, out: &mut Predictions) -> Result<()>;
}

/// The ONNX-ML operators the in-house evaluator runs (plus the plumbing skl2onnx emits).
pub const ONNXML_OPS: &[&str] = &[
    "ai.onnx.ml:LinearClassifier",
    "ai.onnx.ml:LinearRegressor",
    "ai.onnx.ml:TreeEnsembleClassifier",
    "ai.onnx.ml:TreeEnsembleRegressor",
    "ai.onnx.ml:Scaler",
    "ai.onnx.ml:Normalizer",
    "ai.onnx:Cast",
    "ai.onnx:Identity",
];

/// Decode an ONNX model and pick its backend.
pub fn load(bytes: &[u8]) -> Result<Arc<dyn Backend>> {
    let model = ModelProto::decode(bytes)
        .map_err(|e| Error::load(format!("not an ONNX model (protobuf decode failed: {e})")))?;
    let graph = model.graph.as_ref().ok_or_else(|| Error::load("ONNX model has no graph"))?;
    if graph.node.is_empty() {
        return Err(Error::load("ONNX graph has no nodes"));
    }
    match first_foreign_op(graph) {
        None => Ok(Arc::new(onnxml::OnnxMl::new(graph)?)),
        Some(op) => general_graph(bytes, graph, &op),
    }
}

/// The first operator outside [`ONNXML_OPS`], if any.
fn first_foreign_op(graph: &GraphProto) -> Option<String> {
    graph.node.iter().map(|n| n.qualified_op()).find(|op| !ONNXML_OPS.contains(&op.as_str()))
}

#[cfg(feature = "tract")]
fn general_graph(bytes: &[u8], graph: &GraphProto, op: &str) -> Result<Arc<dyn Backend>> {
    refuse_for_tract(graph, op)?;
    let backend = tract::Tract::new(bytes, graph).map_err(|e| {
        Error::load(format!(
            "the graph uses {op}, outside the ONNX-ML set, and the general backend refused it: {e}"
        ))
    })?;
    Ok(Arc::new(backend))
}

#[cfg(not(feature = "tract"))]
fn general_graph(_bytes: &[u8], graph: &GraphProto, op: &str) -> Result<Arc<dyn Backend>> {
    refuse_for_tract(graph, op)?;
    Err(Error::load(format!(
        "operator {op} is not supported (this build has no general ONNX backend; \
         supported operators: {})",
        ONNXML_OPS.join(", ")
    )))
}

/// Operators that must not reach tract: it lacks some and evaluates tree ensembles wrongly.
fn refuse_for_tract(graph: &GraphProto, op: &str) -> Result<()> {
    for node in &graph.node {
        let q = node.qualified_op();
        if q == "ai.onnx.ml:ZipMap" {
            return Err(Error::load(
                "operator ai.onnx.ml:ZipMap is not supported; export classifiers with \
                 options={'zipmap': False}",
            ));
        }
        if node.op_type.starts_with("TreeEnsemble") {
            return Err(Error::load(format!(
                "operator {q} is only supported in graphs made of ONNX-ML operators, \
                 and this graph also uses {op}"
            )));
        }
    }
    Ok(())
}

/// The single graph input: FLOAT `[batch, features]` with a fixed feature count.
pub(crate) fn graph_input(graph: &GraphProto) -> Result<(String, usize)> {
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !graph.initializer.iter().any(|t| t.name == i.name))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(Error::load(format!(
            "the graph must have exactly one input, it has {}",
            inputs.len()
        )));
    };
    let tensor = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| Error::load(format!("input {} is not a tensor", input.name)))?;
    if tensor.elem_type != data_type::FLOAT {
        return Err(Error::load(format!(
            "input {} has element type {}; only FLOAT inputs are supported (export with float32)",
            input.name,
            data_type::name(tensor.elem_type)
        )));
    }
    let dims = tensor.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or_default();
    let features = match dims {
        [_, d] => d.dim_value.filter(|&v| v > 0),
        _ => None,
    };
    let features = features.ok_or_else(|| {
        Error::load(format!(
            "input {} must have shape [batch, features] with a fixed feature count",
            input.name
        ))
    })?;
    let features =
        usize::try_from(features).map_err(|_| Error::load("feature count out of range"))?;
    Ok((input.name.clone(), features))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_copies_the_requested_rows() {
        let p = Predictions {
            rows: 3,
            width: 2,
            labels: vec![0, 1, 1],
            scores: vec![0.9, 0.1, 0.2, 0.8, 0.3, 0.7],
        };
        let r = p.slice(1, 2);
        assert_eq!(r.labels.as_slice(), &[1, 1]);
        assert_eq!(r.scores.as_slice(), &[0.2, 0.8, 0.3, 0.7]);
    }

    fn signature(kind: ModelKind) -> Signature {
        let input = TensorInfo { name: "x".into(), datatype: DataType::Fp32, shape: vec![-1, 2] };
        Signature { input, features: 2, outputs: Vec::new(), kind }
    }

    #[test]
    fn a_row_answers_as_the_source_design_does() {
        let classifier = signature(ModelKind::Classifier {
            label_output: 0,
            prob_output: 1,
            classes: 2,
            labels: vec![0, 1],
        });
        let out = RowOutputs {
            labels: [0, 1].into_iter().collect(),
            scores: [0.9, 0.1, 0.25, 0.75].into_iter().collect(),
        };
        assert_eq!(out.answer(&classifier, 0), (Predicted::Label(0), 0.9));
        assert_eq!(out.answer(&classifier, 1), (Predicted::Label(1), 0.75), "the top score");

        let regressor = signature(ModelKind::Regressor { value_output: 0, targets: 1 });
        let out =
            RowOutputs { labels: Default::default(), scores: [3.5, -1.0].into_iter().collect() };
        assert_eq!(out.answer(&regressor, 1), (Predicted::Value(-1.0), REGRESSION_CONFIDENCE));
    }

    #[test]
    fn garbage_is_refused_at_load() {
        let err = load(b"definitely not protobuf \xff\xff").err().unwrap();
        assert_eq!(err.error_type(), "model_load");
    }
}
