//! Replays the committed fuzz corpora through the fuzz targets' own entry points, so a decoder
//! or loader regression fails `cargo test` without libFuzzer. `tests/fuzz.sh` runs the targets
//! themselves (coverage-guided, time-bounded) in `make test`.

use std::path::Path;

/// A fuzz target's entry point.
type Entry = fn(&[u8]);

/// Each fuzz target (a directory of `fuzz/corpus`) and its entry point.
const TARGETS: [(&str, Entry); 3] = [
    ("decode_predict", modelship_serving::decode::fuzz_predict),
    ("decode_infer", modelship_serving::decode::fuzz_infer),
    ("load_model", modelship_serving::loader::fuzz_load),
];

#[test]
fn every_corpus_file_passes_its_target_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut dirs: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    names.sort();
    assert_eq!(dirs, names, "one corpus per fuzz target");
    for (target, entry) in TARGETS {
        let mut replayed = 0;
        for file in std::fs::read_dir(root.join(target)).unwrap() {
            let path = file.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| entry(&data));
            assert!(outcome.is_ok(), "{target} panicked on {}", path.display());
            replayed += 1;
        }
        assert!(replayed >= 5, "the {target} corpus looks empty: {replayed} files");
    }
}

/// The targets' binaries and corpora match (`fuzz/Cargo.toml` names each binary).
#[test]
fn every_fuzz_target_has_a_corpus() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
            .unwrap();
    let mut bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|name| *name != "modelship-serving-fuzz")
        .collect();
    bins.sort();
    let mut names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    names.sort();
    assert_eq!(bins, names);
}
