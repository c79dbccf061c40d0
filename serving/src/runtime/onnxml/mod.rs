//! In-house evaluator for graphs made of the ONNX-ML operators scikit-learn exports.
//!
//! At load the graph becomes a list of steps over numbered value slots, with every shape and
//! element type checked; `predict` then only runs arithmetic.

mod attrs;
mod linear;
mod transform;
mod tree;

use std::collections::HashMap;

use linear::{LinearClassifier, LinearRegressor};
use transform::{Norm, Scaler};
use tree::{TreeEnsembleClassifier, TreeEnsembleRegressor};

use super::proto::{GraphProto, NodeProto, data_type};
use super::{Backend, DataType, ModelKind, Predictions, Signature, TensorInfo};
use crate::error::{Error, Result};

/// Static type of a value slot: FLOAT `[N, cols]` or INT64 `[N]` (labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    F32(usize),
    I64,
}

#[derive(Clone, Debug)]
enum Op {
    LinearClassifier(LinearClassifier),
    LinearRegressor(LinearRegressor),
    TreeClassifier(TreeEnsembleClassifier),
    TreeRegressor(TreeEnsembleRegressor),
    Scaler(Scaler),
    Normalizer(Norm),
    Cast(Ty),
    Identity,
}

#[derive(Clone, Debug)]
struct Step {
    op: Op,
    input: usize,
    /// Output slots; `None` where the node leaves an optional output unnamed.
    outputs: [Option<usize>; 2],
}

#[derive(Clone, Debug, Default)]
enum Value {
    #[default]
    Empty,
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// Slot 0 is the graph input, which is never copied: steps read the caller's slice.
const INPUT: usize = 0;

pub struct OnnxMl {
    steps: Vec<Step>,
    slots: usize,
    output_slots: Vec<usize>,
    features: usize,
    signature: Signature,
}

impl OnnxMl {
    pub fn new(graph: &GraphProto) -> Result<Self> {
        let (input_name, features) = super::graph_input(graph)?;
        let mut names: HashMap<&str, (usize, Ty)> = HashMap::new();
        names.insert(&input_name, (INPUT, Ty::F32(features)));
        let mut steps = Vec::with_capacity(graph.node.len());
        let mut labels: Option<Vec<i64>> = None;

        for node in &graph.node {
            let [input] = node.input.as_slice() else {
                return Err(Error::load(format!(
                    "{} node {:?} must have one input",
                    node.qualified_op(),
                    node.name
                )));
            };
            let &(slot, ty) = names.get(input.as_str()).ok_or_else(|| {
                Error::load(format!(
                    "{} node {:?} reads {input:?}, which no earlier node produces",
                    node.qualified_op(),
                    node.name
                ))
            })?;
            let (op, out_tys, class_labels) = build_op(node, ty)?;
            if class_labels.is_some() {
                labels = class_labels;
            }
            let mut outputs = [None, None];
            for (k, name) in node.output.iter().enumerate() {
                if name.is_empty() {
                    continue;
                }
                let ty = *out_tys.get(k).ok_or_else(|| {
                    Error::load(format!(
                        "{} node {:?} has too many outputs",
                        node.qualified_op(),
                        node.name
                    ))
                })?;
                let new = names.len();
                if names.insert(name, (new, ty)).is_some() {
                    return Err(Error::load(format!("value {name:?} is produced twice")));
                }
                outputs[k] = Some(new);
            }
            steps.push(Step { op, input: slot, outputs });
        }

        let mut outputs = Vec::new();
        let mut output_slots = Vec::new();
        for out in &graph.output {
            let &(slot, ty) = names.get(out.name.as_str()).ok_or_else(|| {
                Error::load(format!("graph output {:?} is never produced", out.name))
            })?;
            output_slots.push(slot);
            outputs.push(match ty {
                Ty::F32(cols) => TensorInfo {
                    name: out.name.clone(),
                    datatype: DataType::Fp32,
                    shape: vec![-1, cols as i64],
                },
                Ty::I64 => TensorInfo {
                    name: out.name.clone(),
                    datatype: DataType::Int64,
                    shape: vec![-1],
                },
            });
        }
        let kind = kind_of(&outputs, labels)?;
        let signature = Signature {
            input: TensorInfo {
                name: input_name.clone(),
                datatype: DataType::Fp32,
                shape: vec![-1, features as i64],
            },
            features,
            outputs,
            kind,
        };
        Ok(Self { steps, slots: names.len(), output_slots, features, signature })
    }

    fn read<'a>(&self, slots: &'a [Value], x: &'a [f32], slot: usize) -> Result<Input<'a>> {
        if slot == INPUT {
            return Ok(Input::F32(x));
        }
        match &slots[slot] {
            Value::F32(v) => Ok(Input::F32(v)),
            Value::I64(v) => Ok(Input::I64(v)),
            Value::Empty => {
                Err(Error::Inference("internal: slot read before it was written".into()))
            }
        }
    }
}

enum Input<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
}

/// Build one operator for an input of type `ty`; returns it with its output types and, for
/// classifiers, the class labels.
fn build_op(node: &NodeProto, ty: Ty) -> Result<(Op, Vec<Ty>, Option<Vec<i64>>)> {
    let q = node.qualified_op();
    let cols = match ty {
        Ty::F32(c) => Some(c),
        Ty::I64 => None,
    };
    let need_f32 =
        || cols.ok_or_else(|| Error::load(format!("{q} node {:?} needs a FLOAT input", node.name)));
    Ok(match q.as_str() {
        "ai.onnx.ml:LinearClassifier" => {
            let op = LinearClassifier::new(node, need_f32()?)?;
            let (c, l) = (op.classes(), op.labels().to_vec());
            (Op::LinearClassifier(op), vec![Ty::I64, Ty::F32(c)], Some(l))
        }
        "ai.onnx.ml:LinearRegressor" => {
            let op = LinearRegressor::new(node, need_f32()?)?;
            let t = op.targets();
            (Op::LinearRegressor(op), vec![Ty::F32(t)], None)
        }
        "ai.onnx.ml:TreeEnsembleClassifier" => {
            let op = TreeEnsembleClassifier::new(node, need_f32()?)?;
            let (c, l) = (op.classes(), op.labels().to_vec());
            (Op::TreeClassifier(op), vec![Ty::I64, Ty::F32(c)], Some(l))
        }
        "ai.onnx.ml:TreeEnsembleRegressor" => {
            let op = TreeEnsembleRegressor::new(node, need_f32()?)?;
            let t = op.targets();
            (Op::TreeRegressor(op), vec![Ty::F32(t)], None)
        }
        "ai.onnx.ml:Scaler" => {
            let c = need_f32()?;
            (Op::Scaler(Scaler::new(node, c)?), vec![Ty::F32(c)], None)
        }
        "ai.onnx.ml:Normalizer" => {
            (Op::Normalizer(Norm::from_node(node)?), vec![Ty::F32(need_f32()?)], None)
        }
        "ai.onnx:Identity" => (Op::Identity, vec![ty], None),
        "ai.onnx:Cast" => {
            let to = attrs::int(node, "to").ok_or_else(|| attrs::missing(node, "to"))?;
            let out = match (i32::try_from(to).unwrap_or(-1), ty) {
                (data_type::FLOAT, Ty::F32(c)) => Ty::F32(c),
                (data_type::FLOAT, Ty::I64) => Ty::F32(1),
                (data_type::INT64, Ty::I64) => Ty::I64,
                (data_type::INT64, Ty::F32(1)) => Ty::I64,
                (t, _) => {
                    return Err(attrs::bad(
                        node,
                        "to",
                        &format!(
                            "casts to {} from this input, which is not supported",
                            data_type::name(t)
                        ),
                    ));
                }
            };
            (Op::Cast(out), vec![out], None)
        }
        other => {
            return Err(Error::load(format!(
                "operator {other} is not supported by the ONNX-ML evaluator"
            )));
        }
    })
}

/// Classifier: an INT64 label output and one FLOAT output; regressor: a single FLOAT output.
fn kind_of(outputs: &[TensorInfo], labels: Option<Vec<i64>>) -> Result<ModelKind> {
    let find = |dt: DataType| outputs.iter().position(|o| o.datatype == dt);
    match (outputs.len(), find(DataType::Int64), find(DataType::Fp32)) {
        (2, Some(label_output), Some(prob_output)) => {
            let classes = outputs[prob_output].shape[1] as usize;
            let labels = labels.unwrap_or_else(|| (0..classes as i64).collect());
            Ok(ModelKind::Classifier { label_output, prob_output, classes, labels })
        }
        (1, None, Some(value_output)) => Ok(ModelKind::Regressor {
            value_output,
            targets: outputs[value_output].shape[1] as usize,
        }),
        _ => Err(Error::load(format!(
            "unsupported outputs {:?}: expected INT64 label + FLOAT probabilities, or one FLOAT output",
            outputs.iter().map(|o| (o.name.as_str(), o.datatype.as_str())).collect::<Vec<_>>()
        ))),
    }
}

impl Backend for OnnxMl {
    fn name(&self) -> &'static str {
        "onnx-ml"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn predict(&self, x: &[f32], rows: usize, out: &mut Predictions) -> Result<()> {
        debug_assert_eq!(x.len(), rows * self.features);
        let mut slots = vec![Value::Empty; self.slots];
        for step in &self.steps {
            let input = self.read(&slots, x, step.input)?;
            let (a, b) = run_step(&step.op, input, rows)?;
            if let Some(s) = step.outputs[0] {
                slots[s] = a;
            }
            if let (Some(s), Some(b)) = (step.outputs[1], b) {
                slots[s] = b;
            }
        }
        out.rows = rows;
        out.width = self.signature.width();
        out.labels.clear();
        out.scores.clear();
        let (label_slot, score_slot) = match self.signature.kind {
            ModelKind::Classifier { label_output, prob_output, .. } => {
                (Some(self.output_slots[label_output]), self.output_slots[prob_output])
            }
            ModelKind::Regressor { value_output, .. } => (None, self.output_slots[value_output]),
        };
        if let Some(s) = label_slot {
            match std::mem::take(&mut slots[s]) {
                Value::I64(v) => out.labels = v,
                _ => return Err(Error::Inference("internal: label output missing".into())),
            }
        }
        match (score_slot, std::mem::take(&mut slots[score_slot])) {
            (_, Value::F32(v)) => out.scores = v,
            (INPUT, _) => out.scores.extend_from_slice(x),
            _ => return Err(Error::Inference("internal: score output missing".into())),
        }
        Ok(())
    }
}

fn run_step(op: &Op, input: Input<'_>, rows: usize) -> Result<(Value, Option<Value>)> {
    let f32_in = || match input {
        Input::F32(v) => Ok(v),
        Input::I64(_) => Err(Error::Inference("internal: FLOAT input expected".into())),
    };
    let mut labels = Vec::new();
    let mut scores = Vec::new();
    Ok(match op {
        Op::LinearClassifier(op) => {
            op.run(f32_in()?, rows, &mut labels, &mut scores);
            (Value::I64(labels), Some(Value::F32(scores)))
        }
        Op::TreeClassifier(op) => {
            op.run(f32_in()?, rows, &mut labels, &mut scores);
            (Value::I64(labels), Some(Value::F32(scores)))
        }
        Op::LinearRegressor(op) => {
            op.run(f32_in()?, rows, &mut scores);
            (Value::F32(scores), None)
        }
        Op::TreeRegressor(op) => {
            op.run(f32_in()?, rows, &mut scores);
            (Value::F32(scores), None)
        }
        Op::Scaler(op) => {
            op.run(f32_in()?, &mut scores);
            (Value::F32(scores), None)
        }
        Op::Normalizer(norm) => {
            let x = f32_in()?;
            let mut v = x.to_vec();
            let cols = (x.len() / rows.max(1)).max(1);
            v.chunks_exact_mut(cols).for_each(|r| norm.apply(r));
            (Value::F32(v), None)
        }
        Op::Identity => (copy(input), None),
        Op::Cast(Ty::F32(_)) => match input {
            Input::F32(v) => (Value::F32(v.to_vec()), None),
            Input::I64(v) => (Value::F32(v.iter().map(|&l| l as f32).collect()), None),
        },
        Op::Cast(Ty::I64) => match input {
            Input::I64(v) => (Value::I64(v.to_vec()), None),
            // Truncation toward zero, as a C++ static_cast does.
            Input::F32(v) => (Value::I64(v.iter().map(|&f| f as i64).collect()), None),
        },
    })
}

fn copy(input: Input<'_>) -> Value {
    match input {
        Input::F32(v) => Value::F32(v.to_vec()),
        Input::I64(v) => Value::I64(v.to_vec()),
    }
}
