//! The crate's one error type.

use std::net::SocketAddr;

/// Everything that can go wrong in localnode and the test harness.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("watch: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid {what} {value:?}: {reason}")]
    Invalid { what: &'static str, value: String, reason: &'static str },

    #[error("upstream {addr}: {message}")]
    Upstream { addr: SocketAddr, message: String },

    #[error("container config: {0}")]
    ContainerConfig(String),

    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),

    #[error("signal: {0}")]
    Signal(#[from] nix::errno::Errno),
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
            Error::Watch(_) => "watch",
            Error::Io { .. } => "io",
            Error::Invalid { .. } => "invalid",
            Error::Upstream { .. } => "upstream",
            Error::ContainerConfig(_) => "container_config",
            Error::Json(_) => "json",
            Error::Signal(_) => "signal",
        }
    }
}
