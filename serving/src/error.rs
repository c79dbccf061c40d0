//! The crate's one error type and its single mapping onto HTTP responses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent something we cannot serve; the message names the field.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("inference queue is full; retry later")]
    QueueFull,
    #[error("{0}")]
    NotReady(String),
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("request timed out after {0} ms")]
    Timeout(u64),
    /// The caller did not send its whole body before the deadline.
    #[error("request body not received within {0} ms")]
    BodyTimeout(u64),
    /// A model was refused at load time: bad file, unsupported operator or output shape.
    #[error("cannot load model: {0}")]
    ModelLoad(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("cannot fetch {uri}: {reason}")]
    Fetch { uri: String, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidRequest(msg.into())
    }

    pub fn load(msg: impl Into<String>) -> Self {
        Self::ModelLoad(msg.into())
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }

    /// Stable snake_case category for logs and metrics; never the message text.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::QueueFull => "queue_full",
            Self::NotReady(_) => "not_ready",
            Self::ShuttingDown => "shutting_down",
            Self::Timeout(_) => "timeout",
            Self::BodyTimeout(_) => "body_timeout",
            Self::ModelLoad(_) => "model_load",
            Self::Inference(_) => "inference",
            Self::Fetch { .. } => "fetch",
            Self::Config(_) => "config",
            Self::Io { .. } => "io",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::QueueFull => StatusCode::TOO_MANY_REQUESTS,
            Self::NotReady(_) | Self::ShuttingDown | Self::Timeout(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::ModelLoad(_)
            | Self::Inference(_)
            | Self::Fetch { .. }
            | Self::Config(_)
            | Self::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(serde::Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            // Internal details go to the log, not to the caller.
            tracing::error!(error_type = self.error_type(), error = %self, "request failed");
            "internal server error".to_owned()
        } else {
            self.to_string()
        };
        (status, axum::Json(ErrorBody { error: &message })).into_response()
    }
}
