//! HTTP routes. [`app`] builds the whole router so tests drive it with `oneshot`.

mod feedback;
mod guard;
mod health;
mod infer;
pub(crate) mod predict;
mod v2;

use axum::Router;
use axum::http::Uri;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use modelship_contract::routes;

use tower_http::catch_panic::CatchPanicLayer;

use crate::error::Error;
use crate::state::AppState;

pub fn app(state: AppState) -> Router {
    // Only inference and feedback need the token; health, metadata and metrics never do.
    let mut protected = Router::new()
        .route("/predict", post(predict::predict))
        .route("/feedback", post(feedback::feedback))
        .route("/v2/models/{model}/infer", post(v2::infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(v2::infer_version));
    // Without a token the guard would only cost every request a middleware hop.
    if state.auth_token().is_some() {
        protected = protected
            .route_layer(middleware::from_fn_with_state(state.clone(), guard::require_token));
    }
    Router::new()
        .route(routes::HEALTH, get(health::health))
        .route(routes::READY, get(health::ready))
        .route("/models", get(health::models))
        .route(routes::METRICS, get(health::metrics))
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/v2/models", get(v2::list))
        .route("/v2/models/{model}", get(v2::metadata))
        .route("/v2/models/{model}/ready", get(v2::model_ready))
        .route("/v2/models/{model}/versions/{version}", get(v2::metadata_version))
        .route("/v2/models/{model}/versions/{version}/ready", get(v2::model_ready_version))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // A bug must cost one request a 500, not the connection or the process.
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    Error::Inference("handler panicked".into()).into_response()
}

async fn not_found(uri: Uri) -> impl IntoResponse {
    Error::NotFound(format!("no route for {}", uri.path()))
}

async fn method_not_allowed() -> impl IntoResponse {
    Error::MethodNotAllowed
}
