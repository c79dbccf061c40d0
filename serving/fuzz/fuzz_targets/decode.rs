#![no_main]

use libfuzzer_sys::fuzz_target;

// The same entry point the corpus replay test calls.
fuzz_target!(|data: &[u8]| modelship_serving::decode::fuzz_one(data));
