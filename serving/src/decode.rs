//! Request decoders: bytes in, validated rows out. Pure functions, so the fuzz target and the
//! corpus replay test exercise exactly what the handlers run.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, DeserializeSeed, SeqAccess, Visitor};
use smallvec::SmallVec;

use crate::error::{Error, Result};
use crate::runtime::Rows;

/// What every decoded inference request carries, whatever its wire format.
pub trait Decoded {
    /// The id a later `/feedback` may name the answer by.
    fn id(&self) -> Option<&str>;
    /// Take the rows out, with their count.
    fn take_rows(&mut self) -> (Rows, usize);
}

macro_rules! decoded {
    ($($input:ident),*) => {$(
        impl Decoded for $input<'_> {
            fn id(&self) -> Option<&str> {
                self.id.as_deref()
            }

            fn take_rows(&mut self) -> (Rows, usize) {
                (std::mem::take(&mut self.rows), self.n_rows)
            }
        }
    )*};
}

decoded!(PredictInput, InferInput);

/// A decoded `/predict` body. `width` is the values per row the caller sent.
#[derive(Debug)]
pub struct PredictInput<'a> {
    pub model: Option<Cow<'a, str>>,
    pub model_version: Option<Cow<'a, str>>,
    pub id: Option<Cow<'a, str>>,
    pub rows: Rows,
    pub n_rows: usize,
    pub width: usize,
    /// `instances` form: answer with a list.
    pub batch: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPredict<'a> {
    #[serde(default)]
    features: Option<Rows>,
    #[serde(default)]
    instances: Option<Vec<Rows>>,
    #[serde(default, borrow)]
    model_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
}

/// Parse with serde_json; on failure parse again tracking the path, so the message names the
/// field (only the error path pays for that).
fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    match serde_json::from_slice::<T>(bytes) {
        Ok(v) => Ok(v),
        Err(first) => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let err = match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Err(e) => {
                    let path = e.path().to_string();
                    if path == "." || path.is_empty() {
                        format!("invalid JSON body: {}", e.inner())
                    } else {
                        format!("invalid JSON body at `{path}`: {}", e.inner())
                    }
                }
                Ok(_) => format!("invalid JSON body: {first}"),
            };
            Err(Error::InvalidRequest(err))
        }
    }
}

/// Owned variant for bodies we do not keep borrowing from.
pub fn parse_owned<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    parse::<T>(bytes)
}

pub fn decode_predict(bytes: &[u8]) -> Result<PredictInput<'_>> {
    let raw: RawPredict<'_> = parse(bytes)?;
    let (rows, n_rows, width, batch) = match (raw.features, raw.instances) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid("send either `features` or `instances`, not both"));
        }
        (None, None) => {
            return Err(Error::invalid("`features` (one row) or `instances` (rows) is required"));
        }
        (Some(f), None) => {
            if f.is_empty() {
                return Err(Error::invalid("`features` cannot be empty"));
            }
            let width = f.len();
            (f, 1, width, false)
        }
        (None, Some(instances)) => {
            let width = instances.first().map(|r| r.len()).unwrap_or(0);
            if instances.is_empty() || width == 0 {
                return Err(Error::invalid("`instances` must hold at least one non-empty row"));
            }
            let mut rows = Rows::with_capacity(instances.len() * width);
            for (i, r) in instances.iter().enumerate() {
                if r.len() != width {
                    return Err(Error::invalid(format!(
                        "`instances[{i}]` has {} values; `instances[0]` has {width}",
                        r.len()
                    )));
                }
                rows.extend_from_slice(r);
            }
            (rows, instances.len(), width, true)
        }
    };
    let field = if batch { "instances" } else { "features" };
    check_finite(&rows, field)?;
    check_id(raw.id.as_deref())?;
    Ok(PredictInput {
        model: raw.model,
        model_version: raw.model_version,
        id: raw.id,
        rows,
        n_rows,
        width,
        batch,
    })
}

/// Ids are remembered for feedback, so they stay short.
pub const MAX_ID_BYTES: usize = 256;

fn check_id(id: Option<&str>) -> Result<()> {
    match id {
        Some(id) if id.len() > MAX_ID_BYTES => Err(Error::invalid(format!(
            "`id` is {} bytes long; the limit is {MAX_ID_BYTES}",
            id.len()
        ))),
        _ => Ok(()),
    }
}

fn check_finite(values: &[f32], field: &str) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => {
            Err(Error::invalid(format!("`{field}` value #{i} is not a finite 32-bit float")))
        }
    }
}

/// A decoded Open Inference Protocol request with its one input tensor.
#[derive(Debug)]
pub struct InferInput<'a> {
    pub id: Option<Cow<'a, str>>,
    pub input_name: Cow<'a, str>,
    pub rows: Rows,
    pub n_rows: usize,
    pub width: usize,
    /// Requested outputs; `None` means all.
    pub outputs: Option<SmallVec<[Cow<'a, str>; 2]>>,
}

type Parameters = serde_json::Map<String, serde_json::Value>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInfer<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Parameters>,
    #[serde(borrow)]
    inputs: Vec<RawTensor<'a>>,
    #[serde(default, borrow)]
    outputs: Option<Vec<RawOutput<'a>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    shape: SmallVec<[i64; 4]>,
    #[serde(borrow)]
    datatype: Cow<'a, str>,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Parameters>,
    data: Flat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Parameters>,
}

pub fn decode_infer(bytes: &[u8]) -> Result<InferInput<'_>> {
    let raw: RawInfer<'_> = parse(bytes)?;
    let n_inputs = raw.inputs.len();
    let Some(tensor) = raw.inputs.into_iter().next().filter(|_| n_inputs == 1) else {
        return Err(Error::invalid(format!(
            "`inputs` must hold exactly one tensor, it holds {n_inputs}"
        )));
    };
    let (n_rows, width) = rows_and_width(&tensor.shape)?;
    let expected = n_rows
        .checked_mul(width)
        .ok_or_else(|| Error::invalid("`inputs[0].shape` is too large"))?;
    if tensor.data.0.len() != expected {
        return Err(Error::invalid(format!(
            "`inputs[0].data` has {} values but `inputs[0].shape` {:?} needs {expected}",
            tensor.data.0.len(),
            tensor.shape.as_slice()
        )));
    }
    let rows = convert(&tensor.datatype, &tensor.data.0)?;
    check_id(raw.id.as_deref())?;
    let outputs = raw.outputs.map(|o| o.into_iter().map(|o| o.name).collect());
    Ok(InferInput { id: raw.id, input_name: tensor.name, rows, n_rows, width, outputs })
}

/// `[rows, features]`, or `[features]` for one row.
fn rows_and_width(shape: &[i64]) -> Result<(usize, usize)> {
    let dim = |i: usize| {
        usize::try_from(shape[i]).ok().filter(|&d| d > 0).ok_or_else(|| {
            Error::invalid(format!(
                "`inputs[0].shape[{i}]` must be a positive integer, got {}",
                shape[i]
            ))
        })
    };
    match shape.len() {
        1 => Ok((1, dim(0)?)),
        2 => Ok((dim(0)?, dim(1)?)),
        n => Err(Error::invalid(format!(
            "`inputs[0].shape` must be [rows, features] or [features], got {n} dimensions"
        ))),
    }
}

/// Numbers of any accepted datatype as finite f32, checking each against its declared type.
fn convert(datatype: &str, values: &[f64]) -> Result<Rows> {
    let range = match datatype {
        "FP32" | "FP64" => None,
        "INT8" => Some((i8::MIN as f64, i8::MAX as f64)),
        "INT16" => Some((i16::MIN as f64, i16::MAX as f64)),
        "INT32" => Some((i32::MIN as f64, i32::MAX as f64)),
        "INT64" => Some((i64::MIN as f64, i64::MAX as f64)),
        "UINT8" => Some((0.0, u8::MAX as f64)),
        "UINT16" => Some((0.0, u16::MAX as f64)),
        "UINT32" => Some((0.0, u32::MAX as f64)),
        "UINT64" => Some((0.0, u64::MAX as f64)),
        "BOOL" | "BYTES" | "FP16" | "BF16" => {
            return Err(Error::invalid(format!(
                "`inputs[0].datatype` {datatype} is not supported; send FP32, FP64 or an integer type"
            )));
        }
        other => {
            return Err(Error::invalid(format!(
                "`inputs[0].datatype` {other:?} is not a known datatype"
            )));
        }
    };
    let mut rows = Rows::with_capacity(values.len());
    for (i, &v) in values.iter().enumerate() {
        if let Some((lo, hi)) = range
            && (v.fract() != 0.0 || v < lo || v > hi)
        {
            return Err(Error::invalid(format!(
                "`inputs[0].data` value #{i} ({v}) is not a valid {datatype}"
            )));
        }
        let f = v as f32;
        if !f.is_finite() {
            return Err(Error::invalid(format!(
                "`inputs[0].data` value #{i} is not a finite 32-bit float"
            )));
        }
        rows.push(f);
    }
    Ok(rows)
}

/// Tensor data, flat or nested to any depth, flattened row-major.
#[derive(Debug, Default)]
struct Flat(SmallVec<[f64; 32]>);

impl<'de> Deserialize<'de> for Flat {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut out = SmallVec::new();
        d.deserialize_seq(FlatVisitor { out: &mut out })?;
        Ok(Flat(out))
    }
}

struct FlatVisitor<'v> {
    out: &'v mut SmallVec<[f64; 32]>,
}

impl<'de> Visitor<'de> for FlatVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a (nested) list of numbers")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<(), E> {
        self.out.push(v);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<(), E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<(), E> {
        self.visit_f64(v as f64)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while seq.next_element_seed(FlatSeed { out: &mut *self.out })?.is_some() {}
        Ok(())
    }
}

struct FlatSeed<'v> {
    out: &'v mut SmallVec<[f64; 32]>,
}

impl<'de> DeserializeSeed<'de> for FlatSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(FlatVisitor { out: self.out })
    }
}

/// Fuzz entry point of the source design's decoder (`/predict`): it may refuse any input, never
/// panic, and what it accepts must be consistent.
pub fn fuzz_predict(data: &[u8]) {
    if let Ok(p) = decode_predict(data) {
        assert_eq!(p.rows.len(), p.n_rows * p.width);
        assert!(p.n_rows > 0 && p.width > 0);
        assert!(p.rows.iter().all(|v| v.is_finite()));
    }
}

/// Fuzz entry point of the Open Inference Protocol decoder (`/v2/models/{m}/infer`), with the
/// same promises.
pub fn fuzz_infer(data: &[u8]) {
    if let Ok(i) = decode_infer(data) {
        assert_eq!(i.rows.len(), i.n_rows * i.width);
        assert!(i.n_rows > 0 && i.width > 0);
        assert!(i.rows.iter().all(|v| v.is_finite()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predict_single_row() {
        let p = decode_predict(br#"{"features":[1,2.5,-3],"model_version":"v1"}"#).unwrap();
        assert_eq!(p.rows.as_slice(), &[1.0, 2.5, -3.0]);
        assert_eq!((p.n_rows, p.width, p.batch), (1, 3, false));
        assert_eq!(p.model_version.as_deref(), Some("v1"));
    }

    #[test]
    fn predict_instances() {
        let p = decode_predict(br#"{"instances":[[1,2],[3,4]],"model":"m"}"#).unwrap();
        assert_eq!((p.n_rows, p.width, p.batch), (2, 2, true));
        assert_eq!(p.rows.as_slice(), &[1.0, 2.0, 3.0, 4.0]);
    }

    fn predict_err(body: &str) -> String {
        decode_predict(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn predict_errors_name_the_field() {
        assert!(predict_err(r#"{"features":[]}"#).contains("`features` cannot be empty"));
        assert!(predict_err(r#"{"features":[1,"a"]}"#).contains("`features[1]`"));
        assert!(predict_err(r#"{"features":[1],"extra":1}"#).contains("unknown field `extra`"));
        assert!(predict_err(r#"{"features":[1e39]}"#).contains("finite"));
        assert!(predict_err(r#"{"instances":[[1,2],[3]]}"#).contains("`instances[1]`"));
        assert!(predict_err(r#"{}"#).contains("required"));
        assert!(predict_err(r#"{"features":[1],"instances":[[1]]}"#).contains("not both"));
        assert!(predict_err(r#"[1,2"#).contains("invalid JSON"));
        let long = format!(r#"{{"features":[1],"id":"{}"}}"#, "x".repeat(257));
        assert!(predict_err(&long).contains("`id` is 257 bytes"));
    }

    #[test]
    fn infer_flat_and_nested() {
        let flat = br#"{"id":"7","inputs":[{"name":"X","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        let nested = br#"{"inputs":[{"name":"X","shape":[2,2],"datatype":"FP64","data":[[1,2],[3,4]]}],"outputs":[{"name":"label"}]}"#;
        let a = decode_infer(flat).unwrap();
        let b = decode_infer(nested).unwrap();
        assert_eq!(a.rows, b.rows);
        assert_eq!((a.n_rows, a.width), (2, 2));
        assert_eq!(a.id.as_deref(), Some("7"));
        assert_eq!(b.outputs.unwrap().as_slice(), &[Cow::Borrowed("label")]);
    }

    fn infer_err(body: &str) -> String {
        decode_infer(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn infer_errors_name_the_field() {
        let t = |shape: &str, dt: &str, data: &str| {
            infer_err(&format!(
                r#"{{"inputs":[{{"name":"X","shape":{shape},"datatype":"{dt}","data":{data}}}]}}"#
            ))
        };
        assert!(t("[2,2]", "FP32", "[1,2,3]").contains("`inputs[0].data` has 3 values"));
        assert!(t("[0,2]", "FP32", "[]").contains("`inputs[0].shape[0]`"));
        assert!(t("[1,1]", "INT32", "[1.5]").contains("not a valid INT32"));
        assert!(t("[1,1]", "UINT8", "[-1]").contains("not a valid UINT8"));
        assert!(t("[1,1]", "BYTES", "[1]").contains("BYTES is not supported"));
        assert!(t("[1,1]", "FP99", "[1]").contains("not a known datatype"));
        assert!(t("[1,1]", "FP64", "[1e300]").contains("finite"));
        assert!(t("[1,1,1]", "FP32", "[1]").contains("3 dimensions"));
        assert!(t("[1,1]", "FP32", r#"["x"]"#).contains("inputs[0].data"));
        assert!(infer_err(r#"{"inputs":[]}"#).contains("exactly one tensor"));
        assert!(infer_err(r#"{"inputs":[],"bogus":1}"#).contains("unknown field `bogus`"));
    }
}
