//! Microseconds per row for each fixture, in-process (no HTTP), at batch 1 and batch 64.
//! `cargo run --release -p modelship-serving --example runtime_speed`

use std::path::Path;
use std::time::Instant;

use modelship_serving::runtime::{self, Predictions};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let inputs = |file: &str| -> Vec<f32> {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap()).unwrap();
        serde_json::from_value::<Vec<Vec<f32>>>(v["inputs"].clone()).unwrap().concat()
    };
    let binary = inputs("inputs_binary.json");
    let three = inputs("inputs_3class.json");
    println!(
        "{:<14} {:>8} {:>12} {:>14} {:>12}",
        "model", "backend", "load (µs)", "bs1 (µs/row)", "bs64 (µs/row)"
    );
    for name in ["logreg", "logreg3", "rf", "gb", "gb3", "rfreg", "linreg", "scaled_logreg", "ovr3"]
    {
        let bytes = std::fs::read(dir.join(format!("{name}.onnx"))).unwrap();
        let t = Instant::now();
        let Ok(model) = runtime::load(&bytes) else { continue };
        let load = t.elapsed();
        let x = if name.ends_with('3') { &three } else { &binary };
        let f = model.signature().features;
        let mut out = Predictions::default();
        // Best of 7 rounds: the minimum is the least disturbed by other work on the machine.
        let per_row = |batch: usize, out: &mut Predictions| {
            let reps = 5_000 / batch;
            (0..7)
                .map(|_| {
                    let t = Instant::now();
                    for r in 0..reps {
                        let start = (r * batch) % (1000 - batch);
                        model.predict(&x[start * f..(start + batch) * f], batch, out).unwrap();
                    }
                    t.elapsed().as_secs_f64() * 1e6 / (reps * batch) as f64
                })
                .fold(f64::INFINITY, f64::min)
        };
        per_row(64, &mut out); // warm caches
        let b1 = per_row(1, &mut out);
        let b64 = per_row(64, &mut out);
        println!(
            "{name:<14} {:>8} {:>12.0} {b1:>14.3} {b64:>12.3}",
            model.name(),
            load.as_secs_f64() * 1e6
        );
    }
}
