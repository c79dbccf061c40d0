//! Loading: every refusal happens at load and names its cause; sources from URI, HTTP, dir.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use common::*;
use modelship_serving::loader::{self, ModelSource};
use modelship_serving::runtime::proto::*;
use modelship_serving::runtime::{self, ModelKind};
use prost::Message;
use sha2::{Digest, Sha256};

fn tensor_input(name: &str, elem: i32, features: i64) -> ValueInfoProto {
    let dims = vec![
        Dimension { dim_value: None, dim_param: Some("N".into()) },
        Dimension { dim_value: Some(features), dim_param: None },
    ];
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: elem,
                shape: Some(TensorShapeProto { dim: dims }),
            }),
        }),
    }
}

fn node(
    domain: &str,
    op: &str,
    input: &str,
    outputs: &[&str],
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: vec![input.into()],
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: format!("{op}_0"),
        op_type: op.into(),
        attribute,
        domain: domain.into(),
    }
}

fn model(nodes: Vec<NodeProto>, input: ValueInfoProto, outputs: &[&str]) -> Vec<u8> {
    let graph = GraphProto {
        node: nodes,
        name: "g".into(),
        initializer: vec![],
        input: vec![input],
        output: outputs
            .iter()
            .map(|o| ValueInfoProto { name: o.to_string(), r#type: None })
            .collect(),
    };
    ModelProto {
        ir_version: 8,
        producer_name: "test".into(),
        producer_version: String::new(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
    }
    .encode_to_vec()
}

fn load_error(bytes: &[u8]) -> String {
    match runtime::load(bytes) {
        Ok(_) => panic!("expected a load error"),
        Err(e) => {
            assert_eq!(e.error_type(), "model_load");
            e.to_string()
        }
    }
}

#[test]
fn an_unknown_operator_fails_at_load_and_is_named() {
    let bytes = model(
        vec![node("com.example", "Frobnicate", "X", &["Y"], vec![])],
        tensor_input("X", 1, 4),
        &["Y"],
    );
    let msg = load_error(&bytes);
    assert!(msg.contains("com.example:Frobnicate"), "{msg}");
    println!("{msg}");
}

#[test]
fn zipmap_is_refused_with_the_export_fix() {
    let bytes = model(
        vec![node("ai.onnx.ml", "ZipMap", "X", &["Y"], vec![])],
        tensor_input("X", 1, 4),
        &["Y"],
    );
    let msg = load_error(&bytes);
    assert!(msg.contains("ZipMap") && msg.contains("zipmap"), "{msg}");
}

#[test]
fn double_inputs_are_refused() {
    let coef = AttributeProto {
        name: "coefficients".into(),
        floats: vec![1.0; 4],
        r#type: 6,
        ..Default::default()
    };
    let bytes = model(
        vec![node("ai.onnx.ml", "LinearRegressor", "X", &["Y"], vec![coef])],
        tensor_input("X", 11, 4),
        &["Y"],
    );
    let msg = load_error(&bytes);
    assert!(msg.contains("DOUBLE"), "{msg}");
}

#[test]
fn a_linear_regressor_built_by_hand_runs() {
    let coef = AttributeProto {
        name: "coefficients".into(),
        floats: vec![1.0, 2.0, 3.0, 4.0],
        r#type: 6,
        ..Default::default()
    };
    let icpt = AttributeProto {
        name: "intercepts".into(),
        floats: vec![0.5],
        r#type: 6,
        ..Default::default()
    };
    let bytes = model(
        vec![node("ai.onnx.ml", "LinearRegressor", "X", &["Y"], vec![coef, icpt])],
        tensor_input("X", 1, 4),
        &["Y"],
    );
    let m = runtime::load(&bytes).unwrap();
    assert!(matches!(m.signature().kind, ModelKind::Regressor { targets: 1, .. }));
    let mut out = runtime::Predictions::default();
    m.predict(&[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0], 2, &mut out).unwrap();
    assert_eq!(out.scores, vec![10.5, 4.5]);
}

#[test]
fn a_tree_that_loops_is_refused() {
    let ints = |name: &str, v: Vec<i64>| AttributeProto {
        name: name.into(),
        ints: v,
        r#type: 7,
        ..Default::default()
    };
    let floats = |name: &str, v: Vec<f32>| AttributeProto {
        name: name.into(),
        floats: v,
        r#type: 6,
        ..Default::default()
    };
    let strings = |name: &str, v: &[&str]| AttributeProto {
        name: name.into(),
        strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        r#type: 8,
        ..Default::default()
    };
    // Node 1 sends both branches back to node 0.
    let attrs = vec![
        ints("nodes_treeids", vec![0, 0, 0]),
        ints("nodes_nodeids", vec![0, 1, 2]),
        ints("nodes_featureids", vec![0, 0, 0]),
        strings("nodes_modes", &["BRANCH_LEQ", "BRANCH_LEQ", "LEAF"]),
        floats("nodes_values", vec![0.0, 0.0, 0.0]),
        ints("nodes_truenodeids", vec![1, 0, 0]),
        ints("nodes_falsenodeids", vec![2, 0, 0]),
        ints("target_treeids", vec![0]),
        ints("target_nodeids", vec![2]),
        ints("target_ids", vec![0]),
        floats("target_weights", vec![1.0]),
    ];
    let bytes = model(
        vec![node("ai.onnx.ml", "TreeEnsembleRegressor", "X", &["Y"], attrs)],
        tensor_input("X", 1, 4),
        &["Y"],
    );
    let msg = load_error(&bytes);
    assert!(msg.contains("TreeEnsembleRegressor"), "{msg}");
}

#[test]
fn truncated_files_are_refused() {
    let bytes = std::fs::read(fixtures().join("rf.onnx")).unwrap();
    load_error(&bytes[..bytes.len() / 2]);
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// A model store on 127.0.0.1 serving the random forest, a redirect to it, and a 404.
async fn model_store() -> String {
    let bytes = std::fs::read(fixtures().join("rf.onnx")).unwrap();
    let app =
        Router::new().route("/models/rf.onnx", get(move || async move { bytes.clone() })).route(
            "/moved",
            get(|| async {
                (StatusCode::FOUND, [(header::LOCATION, "/models/rf.onnx")]).into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn http_source(uri: String, sha256: Option<String>) -> ModelSource {
    ModelSource { name: "fraud".into(), version: "1".into(), uri, sha256, reference: None }
}

#[tokio::test]
async fn models_download_over_http_and_checksums_are_enforced() {
    let base = model_store().await;
    let good = sha256_hex(&std::fs::read(fixtures().join("rf.onnx")).unwrap());
    let cfg = config();
    let state = empty_state(&cfg, None);
    let batch = loader::batch_config(&cfg);
    for uri in [format!("{base}/models/rf.onnx"), format!("{base}/moved")] {
        let models =
            loader::load_all(&state, &[http_source(uri, Some(good.clone()))], batch).await.unwrap();
        assert_eq!(models.all()[0].backend.signature().features, 20);
    }
    let bad = loader::load_all(
        &state,
        &[http_source(format!("{base}/models/rf.onnx"), Some("00".repeat(32)))],
        batch,
    )
    .await;
    let msg = bad.err().unwrap().to_string();
    assert!(msg.contains("SHA-256 mismatch"), "{msg}");
    let missing =
        loader::load_all(&state, &[http_source(format!("{base}/nope.onnx"), None)], batch).await;
    let msg = missing.err().unwrap().to_string();
    assert!(msg.contains("404"), "{msg}");
}

fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "modelship-serving-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_model_directory_serves_every_name_and_version() {
    let dir = temp_dir();
    for (name, version, file) in
        [("fraud", "1", "rf"), ("fraud", "2", "gb"), ("price", "7", "linreg")]
    {
        let d = dir.join(name).join(version);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(fixtures().join(format!("{file}.onnx")), d.join("model.onnx")).unwrap();
    }
    std::fs::copy(fixtures().join("reference.json"), dir.join("fraud/2/reference.json")).unwrap();
    std::fs::write(dir.join("README"), "not a model").unwrap();
    let mut cfg = config();
    cfg.model_dir = Some(dir.clone());
    let sources = loader::sources(&cfg).unwrap();
    let names: Vec<_> = sources
        .iter()
        .map(|s| (s.name.as_str(), s.version.as_str(), s.reference.is_some()))
        .collect();
    assert_eq!(names, [("fraud", "1", false), ("fraud", "2", true), ("price", "7", false)]);
    let state = state_with(&sources, &cfg, None).await;
    let app = modelship_serving::app(state);
    let r = get_json(&app, "/v2/models/fraud").await;
    assert_eq!(r.json["versions"], serde_json::json!(["1", "2"]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sources_need_exactly_one_of_uri_and_dir() {
    let mut cfg = config();
    assert!(loader::sources(&cfg).is_err());
    cfg.model_uri = Some(fixture("rf.onnx"));
    let s = loader::sources(&cfg).unwrap();
    assert_eq!((s[0].name.as_str(), s[0].version.as_str()), ("rf", "1"));
    cfg.model_dir = Some(fixtures());
    assert!(loader::sources(&cfg).is_err());
    cfg.model_dir = None;
    cfg.model_name = Some("bad/name".into());
    assert!(loader::sources(&cfg).is_err());
}

#[tokio::test]
async fn reference_data_must_fit_the_model() {
    let dir = temp_dir();
    let reference = dir.join("ref.json");
    std::fs::write(&reference, r#"{"mean":[0,0],"std":[1,1]}"#).unwrap();
    let mut src = source("fraud", "1", "rf", false);
    src.reference = Some(format!("file://{}", reference.display()));
    let cfg = config();
    let err = loader::load_all(&empty_state(&cfg, None), &[src], loader::batch_config(&cfg))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("20 features"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
