//! Test helpers: real models from the fixtures, the real router, requests through `oneshot`.
#![allow(dead_code)]

pub mod process;

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use modelship_serving::config::Config;
use modelship_serving::loader::{self, ModelSource};
use modelship_serving::state::{AppState, Settings};
use serde_json::Value;
use tower::ServiceExt;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn fixture(file: &str) -> String {
    fixtures().join(file).display().to_string()
}

/// `name` served at `version` from `fixtures/<file>.onnx`, with the drift reference if asked.
pub fn source(name: &str, version: &str, file: &str, reference: bool) -> ModelSource {
    ModelSource {
        name: name.into(),
        version: version.into(),
        uri: fixture(&format!("{file}.onnx")),
        sha256: None,
        reference: reference.then(|| fixture("reference.json")),
    }
}

pub fn config() -> Config {
    Config::for_tests()
}

/// State with nothing loaded yet.
pub fn empty_state(config: &Config, token: Option<&str>) -> AppState {
    AppState::new(Settings::from_config(config), token.map(str::to_owned))
}

pub async fn state_with(sources: &[ModelSource], config: &Config, token: Option<&str>) -> AppState {
    let state = empty_state(config, token);
    let models = loader::load_all(&state, sources, loader::batch_config(config)).await.unwrap();
    state.set_models(models).unwrap();
    state
}

/// The random forest as `fraud`, version 1, with drift reference.
pub async fn rf_app() -> (AppState, Router) {
    let state = state_with(&[source("fraud", "1", "rf", true)], &config(), None).await;
    let app = modelship_serving::app(state.clone());
    (state, app)
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

pub async fn send(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, headers, text, json }
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub fn post(uri: &str, body: impl Into<String>) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.into()))
        .unwrap()
}

pub async fn get_json(app: &Router, uri: &str) -> Reply {
    send(app, get(uri)).await
}

pub async fn post_json(app: &Router, uri: &str, body: impl Into<String>) -> Reply {
    send(app, post(uri, body)).await
}

/// First `n` rows of a shared fixture input file.
pub fn rows(file: &str, n: usize) -> Vec<Vec<f32>> {
    let v: Value = serde_json::from_slice(&std::fs::read(fixtures().join(file)).unwrap()).unwrap();
    serde_json::from_value::<Vec<Vec<f32>>>(v["inputs"].clone())
        .unwrap()
        .into_iter()
        .take(n)
        .collect()
}

pub fn expected(name: &str) -> Value {
    serde_json::from_slice(
        &std::fs::read(fixtures().join(format!("{name}.expected.json"))).unwrap(),
    )
    .unwrap()
}

/// The error body every failure carries, checked for shape.
pub fn error_of(r: &Reply) -> String {
    let obj = r.json.as_object().unwrap_or_else(|| panic!("not a JSON object: {}", r.text));
    assert_eq!(obj.len(), 1, "error body has extra fields: {}", r.text);
    obj["error"].as_str().unwrap().to_owned()
}

/// Sample lines in a metrics exposition (no comments).
pub fn series(text: &str) -> Vec<String> {
    text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(str::to_owned).collect()
}

pub fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
