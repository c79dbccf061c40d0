//! Load time and µs/row of Modelship's in-process runtime and of onnxruntime's C API on the
//! same models, single-threaded, measured in one process so machine noise hits both alike.
//!
//! `modelship-bench-models --ort LIB [--rounds N] NAME=MODEL.onnx,INPUTS.json ...`
//! prints a markdown table. Before timing, both runtimes must agree on every benchmark row,
//! or the run stops with the first difference.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use modelship_serving::runtime::{self, Backend, Predictions};
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;

const BATCHES: [usize; 3] = [1, 8, 64];
/// Rows per timed measurement: enough that one measurement outlasts timer noise.
const ROWS_PER_MEASUREMENT: usize = 4096;
const LOAD_ROUNDS: usize = 5;
/// |modelship - onnxruntime| allowed on a score: float sums in another order differ slightly.
const ABS_TOLERANCE: f32 = 1e-5;
const REL_TOLERANCE: f32 = 1e-4;

type Failure = Box<dyn std::error::Error>;

struct Args {
    ort_lib: PathBuf,
    rounds: usize,
    models: Vec<ModelFiles>,
}

struct ModelFiles {
    name: String,
    onnx: PathBuf,
    inputs: PathBuf,
}

/// One model's outputs on a batch of rows, the same shape for both runtimes.
#[derive(Default)]
struct Outputs {
    labels: Vec<i64>,
    scores: Vec<f32>,
}

struct Timing {
    load_ms: [f64; 2],
    per_row_us: Vec<[f64; 2]>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-models: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Failure> {
    let args = parse_args(std::env::args().skip(1))?;
    let env = ort::init_from(&args.ort_lib)?.build()?;
    print_header();
    for files in &args.models {
        let timing = bench_model(&env, files, args.rounds)?;
        print_row(&files.name, &timing);
    }
    Ok(())
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, Failure> {
    let mut ort_lib = None;
    let mut rounds = 15;
    let mut models = Vec::new();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--ort" => ort_lib = it.next().map(PathBuf::from),
            "--rounds" => rounds = it.next().ok_or("--rounds needs a value")?.parse()?,
            spec => models.push(parse_model(spec)?),
        }
    }
    let ort_lib = ort_lib.ok_or("--ort LIB (path of libonnxruntime.so) is required")?;
    if models.is_empty() {
        return Err("no models given (NAME=MODEL.onnx,INPUTS.json)".into());
    }
    Ok(Args { ort_lib, rounds: rounds.max(1), models })
}

fn parse_model(spec: &str) -> Result<ModelFiles, Failure> {
    let bad = || format!("bad model {spec:?}: expected NAME=MODEL.onnx,INPUTS.json");
    let (name, files) = spec.split_once('=').ok_or_else(bad)?;
    let (onnx, inputs) = files.split_once(',').ok_or_else(bad)?;
    Ok(ModelFiles { name: name.into(), onnx: onnx.into(), inputs: inputs.into() })
}

/// Test rows as one flat row-major array: `{"inputs": [[f32, ...], ...]}`.
fn read_rows(path: &Path) -> Result<Vec<f32>, Failure> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let rows: Vec<Vec<f32>> = serde_json::from_value(v["inputs"].clone())?;
    Ok(rows.concat())
}

fn load_modelship(path: &Path) -> Result<Arc<dyn Backend>, Failure> {
    Ok(runtime::load(&std::fs::read(path)?)?)
}

/// Single-threaded, sequential: the same footing as Modelship's one worker thread.
fn load_ort(env: &Environment, path: &Path) -> Result<Session, Failure> {
    Ok(Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_intra_threads(1)?
        .with_inter_threads(1)?
        .with_parallel_execution(false)?
        .commit_from_file(path)?)
}

fn predict_modelship(
    model: &dyn Backend,
    x: &[f32],
    rows: usize,
    out: &mut Predictions,
) -> Result<(), Failure> {
    Ok(model.predict(x, rows, out)?)
}

/// Runs one batch; `keep` copies the outputs out (only when checking, not when timing).
fn predict_ort(
    session: &mut Session,
    x: &[f32],
    rows: usize,
    keep: Option<&mut Outputs>,
) -> Result<(), Failure> {
    let features = x.len() / rows;
    let input = TensorRef::from_array_view(([rows, features], x))?;
    let outputs = session.run(ort::inputs![input])?;
    let Some(keep) = keep else { return Ok(()) };
    match outputs[0].try_extract_tensor::<i64>() {
        Ok((_, labels)) => {
            keep.labels = labels.to_vec();
            keep.scores = outputs[1].try_extract_tensor::<f32>()?.1.to_vec();
        }
        Err(_) => {
            keep.labels.clear();
            keep.scores = outputs[0].try_extract_tensor::<f32>()?.1.to_vec();
        }
    }
    Ok(())
}

fn bench_model(env: &Environment, files: &ModelFiles, rounds: usize) -> Result<Timing, Failure> {
    let x = read_rows(&files.inputs)?;
    let load_ms = [
        best_of(LOAD_ROUNDS, || time_ms(|| load_modelship(&files.onnx).map(drop)))?,
        best_of(LOAD_ROUNDS, || time_ms(|| load_ort(env, &files.onnx).map(drop)))?,
    ];
    let model = load_modelship(&files.onnx)?;
    let mut session = load_ort(env, &files.onnx)?;
    let features = model.signature().features;
    let rows = x.len() / features;
    check_agreement(&files.name, model.as_ref(), &mut session, &x, rows)?;

    let mut per_row_us = Vec::new();
    for batch in BATCHES {
        let windows = batch_windows(rows, batch);
        let mut best = [f64::INFINITY; 2];
        let mut out = Predictions::default();
        for round in 0..rounds {
            // Alternate which runtime goes first, so neither always follows the other's cache.
            for which in [round % 2, 1 - round % 2] {
                let started = Instant::now();
                for &start in &windows {
                    let xs = &x[start * features..(start + batch) * features];
                    if which == 0 {
                        predict_modelship(model.as_ref(), xs, batch, &mut out)?;
                    } else {
                        predict_ort(&mut session, xs, batch, None)?;
                    }
                }
                let us = started.elapsed().as_secs_f64() * 1e6 / (windows.len() * batch) as f64;
                best[which] = best[which].min(us);
            }
        }
        per_row_us.push(best);
    }
    Ok(Timing { load_ms, per_row_us })
}

/// First rows of the batches one measurement runs, spread over the test rows so the branch
/// predictor cannot learn one batch by heart.
fn batch_windows(rows: usize, batch: usize) -> Vec<usize> {
    let count = ROWS_PER_MEASUREMENT / batch;
    let span = rows - batch + 1;
    (0..count).map(|k| (k * batch * 7 + k / 3) % span).collect()
}

/// All rows at once and the first 64 rows one at a time (the single-row path can differ).
fn check_agreement(
    name: &str,
    model: &dyn Backend,
    session: &mut Session,
    x: &[f32],
    rows: usize,
) -> Result<(), Failure> {
    let features = x.len() / rows;
    let mut ours = Predictions::default();
    let mut theirs = Outputs::default();
    predict_modelship(model, x, rows, &mut ours)?;
    predict_ort(session, x, rows, Some(&mut theirs))?;
    compare(name, rows, &ours, &theirs).map_err(|e| format!("{name}, all {rows} rows: {e}"))?;
    for r in 0..rows.min(64) {
        let xs = &x[r * features..(r + 1) * features];
        predict_modelship(model, xs, 1, &mut ours)?;
        predict_ort(session, xs, 1, Some(&mut theirs))?;
        compare(name, 1, &ours, &theirs).map_err(|e| format!("{name}, row {r} alone: {e}"))?;
    }
    Ok(())
}

fn compare(name: &str, rows: usize, ours: &Predictions, theirs: &Outputs) -> Result<(), String> {
    if ours.labels != theirs.labels {
        let at = ours.labels.iter().zip(&theirs.labels).position(|(a, b)| a != b);
        return Err(format!(
            "labels differ (first at row {at:?}; modelship has {}, onnxruntime {})",
            ours.labels.len(),
            theirs.labels.len()
        ));
    }
    if ours.scores.len() != theirs.scores.len() {
        return Err(format!(
            "{} scores from modelship, {} from onnxruntime",
            ours.scores.len(),
            theirs.scores.len()
        ));
    }
    let width = ours.scores.len() / rows.max(1);
    for (k, (&a, &b)) in ours.scores.iter().zip(&theirs.scores).enumerate() {
        if (a - b).abs() > ABS_TOLERANCE + REL_TOLERANCE * b.abs() {
            return Err(format!(
                "{name}: score {} of row {} is {a} in modelship, {b} in onnxruntime",
                k % width,
                k / width
            ));
        }
    }
    Ok(())
}

fn time_ms(f: impl FnOnce() -> Result<(), Failure>) -> Result<f64, Failure> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

fn best_of(n: usize, mut f: impl FnMut() -> Result<f64, Failure>) -> Result<f64, Failure> {
    (0..n).try_fold(f64::INFINITY, |best, _| Ok(best.min(f()?)))
}

fn print_header() {
    let batches: Vec<String> = BATCHES.iter().map(|b| format!("batch {b}")).collect();
    println!("| model | load (ms) | {} |", batches.join(" | "));
    println!("|---|---|{}", "---|".repeat(BATCHES.len()));
}

/// Each cell: Modelship / onnxruntime (ratio; below 1 means Modelship is faster).
fn print_row(name: &str, t: &Timing) {
    let cell = |[ours, theirs]: [f64; 2], digits: usize| {
        format!("{ours:.digits$} / {theirs:.digits$} ({:.2}x)", ours / theirs)
    };
    let speeds: Vec<String> = t.per_row_us.iter().map(|&p| cell(p, 3)).collect();
    println!("| {name} | {} | {} |", cell(t.load_ms, 2), speeds.join(" | "));
}
