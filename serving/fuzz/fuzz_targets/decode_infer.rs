#![no_main]

use libfuzzer_sys::fuzz_target;

// The Open Inference Protocol decoder; the corpus replay test calls the same entry point.
fuzz_target!(|data: &[u8]| modelship_serving::decode::fuzz_infer(data));
