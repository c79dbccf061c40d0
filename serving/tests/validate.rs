//! `modelship-serving validate`, the real binary: a model checked as the server would load
//! it, against sample inputs and expected outputs, with a verdict and an exit code, and a
//! clear error for each kind of bad file.

use std::path::PathBuf;
use std::process::Command;

use modelship_serving::runtime::proto::{GraphProto, ModelProto, NodeProto};
use prost::Message;

const BIN: &str = env!("CARGO_BIN_EXE_modelship-serving");

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name).display().to_string()
}

/// Run `validate` with `args`; (exit code, stdout and stderr).
fn validate(args: &[&str]) -> (i32, String) {
    let output = Command::new(BIN).arg("validate").args(args).output().expect("run the binary");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_good_model_passes_against_its_expected_outputs() {
    for (model, expected) in [
        ("logreg.onnx", "logreg.expected.json"),
        ("rf.onnx", "rf.expected.json"),
        ("rfreg.onnx", "rfreg.expected.json"),
        ("gb3.onnx", "gb3.expected.json"),
    ] {
        let inputs = if model == "gb3.onnx" { "inputs_3class.json" } else { "inputs_binary.json" };
        let (code, text) = validate(&[
            "--model",
            &fixture(model),
            "--inputs",
            &fixture(inputs),
            "--expected",
            &fixture(expected),
            "--max-latency-ms",
            "1000",
        ]);
        assert_eq!(code, 0, "{model}: {text}");
        assert!(text.ends_with("PASS\n"), "{model}: {text}");
        assert!(text.contains("1000 rows"), "{model}: {text}");
        assert!(text.contains("within 1e-5"), "{model}: {text}");
    }
}

#[test]
fn wrong_outputs_fail_naming_the_row() {
    // The gradient boosting model's expected outputs are not the logistic regression's.
    let (code, text) = validate(&[
        "--model",
        &fixture("logreg.onnx"),
        "--inputs",
        &fixture("inputs_binary.json"),
        "--expected",
        &fixture("gb.expected.json"),
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL outputs") && text.contains("row "), "{text}");
    assert!(text.ends_with("FAIL\n"), "{text}");
}

#[test]
fn a_latency_limit_is_enforced() {
    let (code, text) = validate(&[
        "--model",
        &fixture("rf.onnx"),
        "--inputs",
        &fixture("inputs_binary.json"),
        "--max-latency-ms",
        "0.000001",
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("more than --max-latency-ms"), "{text}");
}

#[test]
fn a_model_alone_is_loaded_and_warmed_up() {
    let (code, text) = validate(&["--model", &format!("file://{}", fixture("linreg.onnx"))]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("ok   load") && text.contains("20 features"), "{text}");
    assert!(text.contains("ok   warm-up"), "{text}");
}

#[test]
fn bad_files_get_an_error_that_names_what_is_wrong() {
    let not_onnx = temp_file("notes.onnx", b"these are meeting notes, not a model");
    let zipmap = {
        let graph = GraphProto {
            node: vec![NodeProto {
                op_type: "ZipMap".into(),
                domain: "ai.onnx.ml".into(),
                input: vec!["x".into()],
                output: vec!["y".into()],
                ..NodeProto::default()
            }],
            ..GraphProto::default()
        };
        let model = ModelProto { ir_version: 8, graph: Some(graph), ..ModelProto::default() };
        temp_file("zipmap.onnx", &model.encode_to_vec())
    };
    let narrow = temp_file("narrow.json", br#"{"inputs": [[1.0, 2.0, 3.0, 4.0, 5.0]]}"#);
    let garbage = temp_file("garbage.json", b"[1, 2");
    let logreg = fixture("logreg.onnx");
    let zeros = "0".repeat(64);
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("not ONNX", vec!["--model", not_onnx.to_str().unwrap()], "not an ONNX model"),
        (
            "an unsupported operator",
            vec!["--model", zipmap.to_str().unwrap()],
            "ai.onnx.ml:ZipMap is not supported",
        ),
        (
            "a width mismatch",
            vec!["--model", &logreg, "--inputs", narrow.to_str().unwrap()],
            "row 0 has 5 features; the model takes 20",
        ),
        (
            "an inputs file that is not JSON",
            vec!["--model", &logreg, "--inputs", garbage.to_str().unwrap()],
            "not an inputs file",
        ),
        ("a missing model", vec!["--model", "/nonexistent/model.onnx"], "FAIL fetch"),
        ("a wrong SHA-256", vec!["--model", &logreg, "--sha256", &zeros], "SHA-256 mismatch"),
    ];
    for (what, args, words) in cases {
        let (code, text) = validate(&args);
        assert_eq!(code, 1, "{what}: {text}");
        assert!(text.contains(words), "{what}: expected {words:?} in:\n{text}");
    }
}
