//! Post transforms and the element-wise operators (Scaler, Normalizer), written to follow
//! onnxruntime's arithmetic so outputs agree to float rounding.

use super::attrs;
use crate::error::Result;
use crate::runtime::proto::NodeProto;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostTransform {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
}

impl PostTransform {
    pub fn from_node(node: &NodeProto) -> Result<Self> {
        match attrs::string(node, "post_transform").as_deref() {
            None | Some("NONE") => Ok(Self::None),
            Some("LOGISTIC") => Ok(Self::Logistic),
            Some("SOFTMAX") => Ok(Self::Softmax),
            Some("SOFTMAX_ZERO") => Ok(Self::SoftmaxZero),
            Some(other) => {
                Err(attrs::bad(node, "post_transform", &format!("value {other} is not supported")))
            }
        }
    }

    /// Apply to one row of scores in place.
    pub fn apply(self, row: &mut [f32]) {
        match self {
            Self::None => {}
            Self::Logistic => row.iter_mut().for_each(|v| *v = logistic(*v)),
            Self::Softmax => softmax(row),
            Self::SoftmaxZero => softmax_zero(row),
        }
    }
}

/// onnxruntime's `ComputeLogistic`: symmetric, so it never overflows.
pub fn logistic(v: f32) -> f32 {
    let p = 1.0 / (1.0 + (-v.abs()).exp());
    if v < 0.0 { 1.0 - p } else { p }
}

pub fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// Softmax that keeps exact zeros at zero (onnxruntime's `ComputeSoftmaxZero`).
pub fn softmax_zero(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        if v.abs() > 1e-7 {
            *v = (*v - max).exp();
            sum += *v;
        } else {
            *v = 0.0;
        }
    }
    if sum > 0.0 {
        row.iter_mut().for_each(|v| *v /= sum);
    }
}

/// First index of the largest value; ties go to the lower index as in onnxruntime.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate().skip(1) {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// `y = (x - offset) * scale`, each either one value or one per column.
#[derive(Clone, Debug)]
pub struct Scaler {
    offset: Vec<f32>,
    scale: Vec<f32>,
}

impl Scaler {
    pub fn new(node: &NodeProto, cols: usize) -> Result<Self> {
        let offset = attrs::floats(node, "offset")?.unwrap_or_else(|| vec![0.0]);
        let scale = attrs::floats(node, "scale")?.unwrap_or_else(|| vec![1.0]);
        let fit = |v: Vec<f32>, name: &str| match v.len() {
            1 => Ok(vec![v[0]; cols]),
            n if n == cols => Ok(v),
            n => Err(attrs::bad(node, name, &format!("has {n} values for {cols} columns"))),
        };
        Ok(Self { offset: fit(offset, "offset")?, scale: fit(scale, "scale")? })
    }

    pub fn run(&self, x: &[f32], out: &mut Vec<f32>) {
        let cols = self.scale.len();
        out.clear();
        out.reserve(x.len());
        for row in x.chunks_exact(cols) {
            out.extend(
                row.iter().zip(&self.offset).zip(&self.scale).map(|((v, o), s)| (v - o) * s),
            );
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    Max,
    L1,
    L2,
}

impl Norm {
    pub fn from_node(node: &NodeProto) -> Result<Self> {
        match attrs::string(node, "norm").as_deref() {
            None | Some("MAX") => Ok(Self::Max),
            Some("L1") => Ok(Self::L1),
            Some("L2") => Ok(Self::L2),
            Some(other) => {
                Err(attrs::bad(node, "norm", &format!("value {other} is not supported")))
            }
        }
    }

    pub fn apply(self, row: &mut [f32]) {
        let d = match self {
            Self::Max => row.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            Self::L1 => row.iter().map(|v| v.abs()).sum(),
            Self::L2 => row.iter().map(|v| v * v).sum::<f32>().sqrt(),
        };
        if d != 0.0 && d.is_finite() {
            row.iter_mut().for_each(|v| *v /= d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logistic_is_symmetric_and_saturates_without_nan() {
        assert!((logistic(0.0) - 0.5).abs() < 1e-7);
        assert!((logistic(2.0) + logistic(-2.0) - 1.0).abs() < 1e-6);
        assert_eq!(logistic(-1000.0), 0.0);
        assert_eq!(logistic(1000.0), 1.0);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut r = [1.0, 2.0, 3.0];
        softmax(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(argmax(&r), 2);
    }

    #[test]
    fn softmax_zero_keeps_zeros() {
        let mut r = [0.0, 1.0, 1.0];
        softmax_zero(&mut r);
        assert_eq!(r, [0.0, 0.5, 0.5]);
    }

    #[test]
    fn argmax_prefers_the_first_of_equal_values() {
        assert_eq!(argmax(&[0.5, 0.5]), 0);
    }

    #[test]
    fn norms() {
        let mut r = [1.0, -3.0];
        Norm::L1.apply(&mut r);
        assert_eq!(r, [0.25, -0.75]);
        let mut r = [3.0, 4.0];
        Norm::L2.apply(&mut r);
        assert_eq!(r, [0.6, 0.8]);
        let mut r = [2.0, 4.0];
        Norm::Max.apply(&mut r);
        assert_eq!(r, [0.5, 1.0]);
    }
}
