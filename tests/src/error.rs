//! The crate's one error type.

use std::net::SocketAddr;

/// Everything that can go wrong in the test harness.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("upstream {addr}: {message}")]
    Upstream { addr: SocketAddr, message: String },

    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what was being done, for `map_err`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// A short static category, for logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Io { .. } => "io",
            Error::Upstream { .. } => "upstream",
            Error::Json(_) => "json",
        }
    }
}
