#![no_main]

use libfuzzer_sys::fuzz_target;

// Hostile model files: loading, warm-up and a prediction must refuse with an error, never
// panic; libFuzzer's memory limits (tests/fuzz.sh) catch unbounded allocations.
fuzz_target!(|data: &[u8]| modelship_serving::loader::fuzz_load(data));
