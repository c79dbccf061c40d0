//! Every endpoint through the real router and real models, success and error paths.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};

fn row_json(r: &[f32]) -> String {
    serde_json::to_string(r).unwrap()
}

#[tokio::test]
async fn health_has_the_source_design_shape() {
    let (_, app) = rf_app().await;
    let r = get_json(&app, "/health").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["status"], "healthy");
    assert!(r.json["timestamp"].as_f64().unwrap() > 1.6e9);
}

#[tokio::test]
async fn readiness_is_false_before_load_then_true() {
    let cfg = config();
    let state = empty_state(&cfg, None);
    let app = modelship_serving::app(state.clone());
    let r = get_json(&app, "/ready").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_of(&r).contains("loading"));
    let r = get_json(&app, "/v2/health/ready").await;
    assert_eq!(
        (r.status, r.json.clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!({"ready": false}))
    );
    // Liveness does not depend on the model.
    assert_eq!(get_json(&app, "/health").await.status, StatusCode::OK);
    assert_eq!(get_json(&app, "/v2/health/live").await.json, json!({"live": true}));
    // Inference and metadata answer 503 while loading.
    let r = post_json(&app, "/predict", r#"{"features":[1]}"#).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    error_of(&r);
    assert_eq!(get_json(&app, "/v2/models/fraud").await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get_json(&app, "/models").await.status, StatusCode::SERVICE_UNAVAILABLE);

    let models = modelship_serving::loader::load_all(
        &state,
        &[source("fraud", "1", "rf", false)],
        modelship_serving::loader::batch_config(&cfg),
    )
    .await
    .unwrap();
    state.set_models(models).unwrap();
    let r = get_json(&app, "/ready").await;
    assert_eq!((r.status, r.json.clone()), (StatusCode::OK, json!({"status": "ready"})));
    assert_eq!(get_json(&app, "/v2/health/ready").await.json, json!({"ready": true}));
}

#[tokio::test]
async fn shutdown_turns_readiness_off_but_keeps_serving() {
    let (state, app) = rf_app().await;
    state.begin_shutdown();
    let r = get_json(&app, "/ready").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_of(&r).contains("shutting down"));
    assert_eq!(get_json(&app, "/v2/health/ready").await.status, StatusCode::SERVICE_UNAVAILABLE);
    let r = get_json(&app, "/v2/models/fraud/ready").await;
    assert_eq!(
        (r.status, r.json.clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!({"name": "fraud", "ready": false}))
    );
    let row = &rows("inputs_binary.json", 1)[0];
    let r = post_json(&app, "/predict", format!(r#"{{"features":{}}}"#, row_json(row))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn models_lists_versions_like_the_source_design_plus_details() {
    let (_, app) = rf_app().await;
    let r = get_json(&app, "/models").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["models"], json!(["1"]));
    let d = &r.json["details"][0];
    assert_eq!(d["name"], "fraud");
    assert_eq!(d["kind"], "classifier");
    assert_eq!(d["backend"], "onnx-ml");
    assert_eq!(d["features"], 20);
    assert_eq!(d["classes"], json!([0, 1]));
    assert_eq!(d["drift"], true);
}

#[tokio::test]
async fn predict_answers_like_the_source_design_and_matches_onnxruntime() {
    let (_, app) = rf_app().await;
    let want = expected("rf");
    for (i, row) in rows("inputs_binary.json", 5).iter().enumerate() {
        let r = post_json(
            &app,
            "/predict",
            format!(r#"{{"features":{},"model_version":"1"}}"#, row_json(row)),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let obj = r.json.as_object().unwrap();
        let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["confidence", "model_version", "prediction", "timestamp"]);
        assert_eq!(r.json["prediction"].as_f64().unwrap(), want["labels"][i].as_f64().unwrap());
        let best = want["probabilities"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .fold(0.0, f64::max);
        assert!((r.json["confidence"].as_f64().unwrap() - best).abs() < 1e-5);
        assert_eq!(r.json["model_version"], "1");
    }
}

#[tokio::test]
async fn predict_batch_form_returns_one_prediction_per_instance() {
    let (_, app) = rf_app().await;
    let rs = rows("inputs_binary.json", 3);
    let want = expected("rf");
    let r = post_json(&app, "/predict", json!({"instances": rs, "id": "b-1"}).to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let preds = r.json["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 3);
    for (i, p) in preds.iter().enumerate() {
        assert_eq!(p["prediction"].as_f64().unwrap(), want["labels"][i].as_f64().unwrap());
    }
    assert_eq!(r.json["model_version"], "1");
    assert_eq!(r.json["id"], "b-1");
}

#[tokio::test]
async fn predict_regressor_uses_the_source_design_confidence() {
    let state = state_with(&[source("price", "3", "linreg", false)], &config(), None).await;
    let app = modelship_serving::app(state);
    let row = &rows("inputs_binary.json", 1)[0];
    let r = post_json(&app, "/predict", format!(r#"{{"features":{}}}"#, row_json(row))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let want = expected("linreg")["values"][0][0].as_f64().unwrap();
    assert!((r.json["prediction"].as_f64().unwrap() - want).abs() < 1e-5);
    assert!((r.json["confidence"].as_f64().unwrap() - 0.95).abs() < 1e-6);
}

#[tokio::test]
async fn predict_errors_are_json_and_name_the_field() {
    let (_, app) = rf_app().await;
    let cases: &[(&str, StatusCode, &str)] = &[
        (
            r#"{"features":[1,2,3]}"#,
            StatusCode::BAD_REQUEST,
            "`features` has 3 values; model fraud expects 20",
        ),
        (r#"{"features":[]}"#, StatusCode::BAD_REQUEST, "`features` cannot be empty"),
        (r#"{"features":[1,"x"]}"#, StatusCode::BAD_REQUEST, "`features[1]`"),
        (r#"{"features":[1],"colour":"red"}"#, StatusCode::BAD_REQUEST, "unknown field `colour`"),
        (r#"{"features":[1e40]}"#, StatusCode::BAD_REQUEST, "finite"),
        (r#"{"features":"#, StatusCode::BAD_REQUEST, "invalid JSON"),
        (r#"{"instances":[[1],[1,2]]}"#, StatusCode::BAD_REQUEST, "`instances[1]`"),
        (r#"{"features":[1],"model_version":"v9"}"#, StatusCode::NOT_FOUND, "v9"),
        (r#"{"features":[1],"model":"nope"}"#, StatusCode::NOT_FOUND, "nope"),
    ];
    for (body, status, needle) in cases {
        let r = post_json(&app, "/predict", *body).await;
        assert_eq!(r.status, *status, "{body}: {}", r.text);
        let msg = error_of(&r);
        assert!(msg.contains(needle), "{body}: {msg}");
    }
}

#[tokio::test]
async fn several_models_are_selected_by_the_model_field() {
    let sources = [
        source("fraud", "1", "rf", false),
        source("fraud", "2", "gb", false),
        source("price", "1", "linreg", false),
    ];
    let state = state_with(&sources, &config(), None).await;
    let app = modelship_serving::app(state);
    let row = row_json(&rows("inputs_binary.json", 1)[0]);
    let r = post_json(&app, "/predict", format!(r#"{{"features":{row}}}"#)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(error_of(&r).contains("set `model`"));
    let r = post_json(&app, "/predict", format!(r#"{{"features":{row},"model":"fraud"}}"#)).await;
    assert_eq!(
        (r.status, r.json["model_version"].clone()),
        (StatusCode::OK, json!("2")),
        "newest version by default"
    );
    let r = post_json(
        &app,
        "/predict",
        format!(r#"{{"features":{row},"model":"fraud","model_version":"1"}}"#),
    )
    .await;
    assert_eq!(r.json["model_version"], "1");
    let r = get_json(&app, "/v2/models").await;
    assert_eq!(r.json, json!({"models": ["fraud", "price"]}));
    let r = get_json(&app, "/v2/models/fraud").await;
    assert_eq!(r.json["versions"], json!(["1", "2"]));
}

#[tokio::test]
async fn server_metadata_and_model_metadata() {
    let (_, app) = rf_app().await;
    let r = get_json(&app, "/v2").await;
    assert_eq!(r.json["name"], "modelship-serving");
    assert!(r.json["extensions"].is_array());
    let r = get_json(&app, "/v2/models/fraud").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json,
        json!({
            "name": "fraud",
            "versions": ["1"],
            "platform": "onnx_onnxv1",
            "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 20]}],
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}
            ]
        })
    );
    let r = get_json(&app, "/v2/models/fraud/versions/1").await;
    assert_eq!(r.json["name"], "fraud");
    assert_eq!(
        get_json(&app, "/v2/models/fraud/ready").await.json,
        json!({"name": "fraud", "ready": true})
    );
    assert_eq!(get_json(&app, "/v2/models/fraud/versions/1/ready").await.status, StatusCode::OK);
    for uri in [
        "/v2/models/nope",
        "/v2/models/fraud/versions/9",
        "/v2/models/nope/ready",
        "/v2/models/fraud/versions/9/ready",
    ] {
        let r = get_json(&app, uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        error_of(&r);
    }
}

fn infer_body(rows: &[Vec<f32>], extra: Value) -> String {
    let mut body = json!({
        "inputs": [{"name": "X", "shape": [rows.len(), 20], "datatype": "FP32", "data": rows.concat()}]
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body.to_string()
}

#[tokio::test]
async fn infer_returns_labels_and_probabilities_matching_onnxruntime() {
    let (_, app) = rf_app().await;
    let rs = rows("inputs_binary.json", 4);
    let want = expected("rf");
    let r =
        post_json(&app, "/v2/models/fraud/infer", infer_body(&rs, json!({"id": "req-1"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["model_name"], "fraud");
    assert_eq!(r.json["model_version"], "1");
    assert_eq!(r.json["id"], "req-1");
    let outs = r.json["outputs"].as_array().unwrap();
    assert_eq!(outs[0]["name"], "label");
    assert_eq!(outs[0]["datatype"], "INT64");
    assert_eq!(outs[0]["shape"], json!([4]));
    assert_eq!(outs[0]["data"], json!(want["labels"].as_array().unwrap()[..4]));
    assert_eq!(outs[1]["name"], "probabilities");
    assert_eq!(outs[1]["datatype"], "FP32");
    assert_eq!(outs[1]["shape"], json!([4, 2]));
    let got: Vec<f64> =
        outs[1]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let exp: Vec<f64> = want["probabilities"].as_array().unwrap()[..4]
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    for (g, e) in got.iter().zip(&exp) {
        assert!((g - e).abs() < 1e-5);
    }
    // Versioned path, nested data, FP64 and an output filter.
    let nested = json!({
        "inputs": [{"name": "X", "shape": [4, 20], "datatype": "FP64", "data": rs}],
        "outputs": [{"name": "label"}]
    });
    let r = post_json(&app, "/v2/models/fraud/versions/1/infer", nested.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["outputs"][0]["data"], json!(want["labels"].as_array().unwrap()[..4]));
    assert!(r.json.get("id").is_none());
}

#[tokio::test]
async fn infer_accepts_integer_datatypes() {
    let (_, app) = rf_app().await;
    let body =
        json!({"inputs": [{"name": "X", "shape": [20], "datatype": "INT32", "data": vec![1; 20]}]});
    let r = post_json(&app, "/v2/models/fraud/infer", body.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["outputs"][0]["shape"], json!([1]));
}

#[tokio::test]
async fn infer_regressor_outputs_variable() {
    let state = state_with(&[source("price", "1", "rfreg", false)], &config(), None).await;
    let app = modelship_serving::app(state);
    let rs = rows("inputs_binary.json", 2);
    let r = post_json(&app, "/v2/models/price/infer", infer_body(&rs, json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let out = &r.json["outputs"][0];
    assert_eq!(
        (out["name"].clone(), out["datatype"].clone(), out["shape"].clone()),
        (json!("variable"), json!("FP32"), json!([2, 1]))
    );
    let want = expected("rfreg");
    for i in 0..2 {
        let w = want["values"][i][0].as_f64().unwrap();
        assert!((out["data"][i].as_f64().unwrap() - w).abs() < 1e-5);
    }
}

#[tokio::test]
async fn infer_errors_are_400_404_with_named_fields() {
    let (_, app) = rf_app().await;
    let one = |shape: &str, dt: &str, data: &str, name: &str| {
        format!(
            r#"{{"inputs":[{{"name":"{name}","shape":{shape},"datatype":"{dt}","data":{data}}}]}}"#
        )
    };
    let ones = serde_json::to_string(&vec![1.0; 20]).unwrap();
    let cases = [
        (one("[1,3]", "FP32", "[1,2,3]", "X"), StatusCode::BAD_REQUEST, "expects 20"),
        (
            one("[1,20]", "FP32", "[1,2,3]", "X"),
            StatusCode::BAD_REQUEST,
            "`inputs[0].data` has 3 values",
        ),
        (one("[1,20]", "BYTES", &ones, "X"), StatusCode::BAD_REQUEST, "`inputs[0].datatype`"),
        (one("[1,20]", "FP32", &ones, "input-0"), StatusCode::BAD_REQUEST, "`inputs[0].name`"),
        (one("[-1,20]", "FP32", &ones, "X"), StatusCode::BAD_REQUEST, "`inputs[0].shape[0]`"),
        (r#"{"inputs":[]}"#.to_owned(), StatusCode::BAD_REQUEST, "exactly one tensor"),
        (
            r#"{"inputs":[], "extra": true}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "unknown field `extra`",
        ),
        (
            format!(
                r#"{{"inputs":[{{"name":"X","shape":[1,20],"datatype":"FP32","data":{ones}}}],"outputs":[{{"name":"nope"}}]}}"#
            ),
            StatusCode::BAD_REQUEST,
            "`outputs[0].name`",
        ),
    ];
    for (body, status, needle) in &cases {
        let r = post_json(&app, "/v2/models/fraud/infer", body.clone()).await;
        assert_eq!(r.status, *status, "{body}: {}", r.text);
        let msg = error_of(&r);
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let r = post_json(&app, "/v2/models/nope/infer", one("[1,20]", "FP32", &ones, "X")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    error_of(&r);
    let r = post_json(&app, "/v2/models/fraud/versions/7/infer", one("[1,20]", "FP32", &ones, "X"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let (_, app) = rf_app().await;
    let r = get_json(&app, "/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(error_of(&r).contains("/nope"));
    let r = get_json(&app, "/predict").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    error_of(&r);
}

#[tokio::test]
async fn feedback_by_predictions_and_by_id_feeds_accuracy() {
    let (state, app) = rf_app().await;
    let r = post_json(&app, "/feedback", r#"{"predictions":[1,0,1,1],"labels":[1,0,0,1]}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["accuracy"], 0.75);
    assert_eq!(r.json["window"], 4);

    let row = row_json(&rows("inputs_binary.json", 1)[0]);
    let p = post_json(&app, "/predict", format!(r#"{{"features":{row},"id":"abc"}}"#)).await;
    assert_eq!(p.json["id"], "abc");
    let predicted = p.json["prediction"].as_f64().unwrap();
    let r = post_json(
        &app,
        "/feedback",
        json!({"model": "fraud", "id": "abc", "labels": [predicted]}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["accuracy"], 0.8);
    let text = state.metrics.encode();
    assert_eq!(metric_value(&text, r#"ml_model_accuracy{model="fraud",version="1"}"#), Some(0.8));
    // An id is judged once.
    let r = post_json(&app, "/feedback", r#"{"id":"abc","labels":[1]}"#).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    error_of(&r);
    for (body, needle) in [
        (r#"{"predictions":[1],"labels":[1,0]}"#, "`labels` has 2 values for 1"),
        (r#"{"labels":[1]}"#, "`predictions` or `id` is required"),
        (r#"{"predictions":[0.5],"labels":[1]}"#, "`predictions[0]`"),
        (r#"{"predictions":[1],"labels":[1],"x":1}"#, "unknown field `x`"),
    ] {
        let r = post_json(&app, "/feedback", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(error_of(&r).contains(needle), "{body}: {}", r.text);
    }
}

#[tokio::test]
async fn feedback_on_a_regressor_is_refused() {
    let state = state_with(&[source("price", "1", "linreg", false)], &config(), None).await;
    let app = modelship_serving::app(state);
    let r = post_json(&app, "/feedback", r#"{"predictions":[1],"labels":[1]}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(error_of(&r).contains("regressor"));
}

#[tokio::test]
async fn metrics_expose_every_family_and_count_requests() {
    let (_, app) = rf_app().await;
    let rs = rows("inputs_binary.json", 3);
    let r = post_json(&app, "/predict", json!({"instances": rs}).to_string()).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = post_json(&app, "/predict", r#"{"features":[1]}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let m = get_json(&app, "/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(m.headers["content-type"].to_str().unwrap().contains("openmetrics"));
    let t = &m.text;
    let l = r#"{model="fraud",version="1""#;
    assert_eq!(metric_value(t, &format!(r#"ml_requests_total{l},status="success"}}"#)), Some(1.0));
    assert_eq!(metric_value(t, &format!(r#"ml_requests_total{l},status="invalid"}}"#)), Some(1.0));
    assert_eq!(metric_value(t, &format!(r#"ml_requests_total{l},status="error"}}"#)), Some(0.0));
    assert_eq!(metric_value(t, &format!(r#"ml_requests_total{l},status="rejected"}}"#)), Some(0.0));
    assert_eq!(metric_value(t, &format!("ml_predictions_total{l}}}")), Some(3.0));
    assert_eq!(metric_value(t, &format!("ml_request_duration_seconds_count{l}}}")), Some(1.0));
    assert!(
        t.contains(r#"ml_request_duration_seconds_bucket{le="0.00005",model="fraud",version="1"}"#),
        "{t}"
    );
    assert_eq!(metric_value(t, &format!("ml_batch_size_count{l}}}")), Some(1.0));
    assert_eq!(metric_value(t, &format!("ml_queue_depth{l}}}")), Some(0.0));
    let drift = metric_value(t, &format!("ml_data_drift_score{l}}}")).unwrap();
    assert!(drift > 0.0 && drift.is_finite(), "{drift}");
    // No feedback yet: no accuracy series, rather than a misleading 0.
    assert!(!t.contains("ml_model_accuracy{"));
    assert!(metric_value(t, "process_cpu_seconds_total").is_some());
    assert!(metric_value(t, "process_resident_memory_bytes").unwrap() > 0.0);
}

#[tokio::test]
async fn metric_series_stay_constant_under_random_paths_and_names() {
    let (_, app) = rf_app().await;
    let before = series(&get_json(&app, "/metrics").await.text).len();
    let row = row_json(&rows("inputs_binary.json", 1)[0]);
    for i in 0..2000u32 {
        let uri = match i % 5 {
            0 => format!("/random/{i}"),
            1 => format!("/v2/models/m{i}/infer"),
            2 => format!("/v2/models/m{i}"),
            3 => format!("/v2/models/fraud/versions/{i}/infer"),
            _ => "/predict".to_owned(),
        };
        let body = format!(r#"{{"features":{row},"model":"x{i}","id":"id-{i}"}}"#);
        let r = post_json(&app, &uri, body).await;
        assert!(r.status.is_client_error(), "{uri}: {}", r.status);
    }
    let after = series(&get_json(&app, "/metrics").await.text).len();
    assert_eq!(before, after);
}
