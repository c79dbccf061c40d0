//! The ceiling of the serving benchmark (`bench/serving.sh`): an axum server that parses the
//! source design's `/predict` body into its request shape and answers a constant prediction.
//! No model, no metrics, no batching: what HTTP + JSON costs in Rust on this machine.
//!
//! `cargo build --release -p modelship-serving --example bare_axum`
//! `target/release/examples/bare_axum 127.0.0.1:18084`   (one runtime thread)

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::routing::post;
use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};

/// The source design's request: `{"features": [...], "model_version": "v1"}`.
#[derive(Deserialize)]
struct PredictionRequest {
    features: Vec<f64>,
    #[serde(default = "default_version")]
    #[allow(dead_code)]
    model_version: String,
}

fn default_version() -> String {
    "v1".to_owned()
}

#[derive(Serialize)]
struct PredictionResponse {
    prediction: f64,
    confidence: f64,
    model_version: &'static str,
    timestamp: f64,
}

async fn predict(Json(request): Json<PredictionRequest>) -> Json<PredictionResponse> {
    // The body is parsed in full; the answer does not depend on it.
    let _ = request.features.len();
    Json(PredictionResponse {
        prediction: 1.0,
        confidence: 0.99,
        model_version: "v1",
        timestamp: 1_795_591_964.5,
    })
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18084".to_owned())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        // Same socket option as modelship-serving.
        let listener = tokio::net::TcpListener::bind(addr).await?.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = Router::new().route("/predict", post(predict));
        axum::serve(listener, app).await
    })
}
