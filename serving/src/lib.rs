//! Modelship serving: the model server that runs in every model pod.
//!
//! - [`runtime`]: ONNX models behind one `Backend` trait (in-house ONNX-ML evaluator, tract);
//! - [`models`]: the served models, and how a request selects one;
//! - [`routes`]: the HTTP API (source-design routes and the Open Inference Protocol);
//! - [`batching`]: per-model dynamic batching with a bounded queue;
//! - [`metrics`], [`drift`], [`feedback`]: what canary analysis reads;
//! - [`predlog`]: one record per prediction, written off the request path;
//! - [`validate`]: `modelship-serving validate`, a model file checked before it is deployed;
//! - [`server`]: accept loop and SIGTERM handling.

pub mod batching;
pub mod config;
pub mod decode;
pub mod drift;
pub mod error;
pub mod feedback;
pub mod fetch;
pub mod healthcheck;
pub mod loader;
pub mod metrics;
pub mod models;
pub mod predlog;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod validate;

pub use error::{Error, Result};
pub use routes::app;
pub use state::AppState;
