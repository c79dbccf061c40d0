#![no_main]

use libfuzzer_sys::fuzz_target;

// The source design's `/predict` decoder; the corpus replay test calls the same entry point.
fuzz_target!(|data: &[u8]| modelship_serving::decode::fuzz_predict(data));
