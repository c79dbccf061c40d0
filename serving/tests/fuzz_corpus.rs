//! Replays the committed fuzz corpus through the fuzz target's own entry point, so a
//! decoder regression fails `cargo test` without libFuzzer.

use std::path::Path;

#[test]
fn every_corpus_file_decodes_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for target in std::fs::read_dir(&root).unwrap() {
        for file in std::fs::read_dir(target.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| modelship_serving::decode::fuzz_one(&data));
            assert!(outcome.is_ok(), "decoder panicked on {}", path.display());
            replayed += 1;
        }
    }
    assert!(replayed >= 20, "corpus looks empty: {replayed} files");
}
