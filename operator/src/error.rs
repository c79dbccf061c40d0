//! The operator's one error type. Each variant has a short static category used for metric
//! labels and logs, never its payload, so label values stay bounded.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("{0} is missing")]
    MissingField(&'static str),

    #[error("cannot serialize: {0}")]
    Serialization(#[from] serde_json::Error),

    #[error("leader election: {0}")]
    Lease(String),

    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),

    #[error("HTTP: {0}")]
    Http(String),

    #[error("the API server refused a child object: {0}")]
    Refused(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) => match status.code {
                409 => "conflict",
                403 => "forbidden",
                404 => "not_found",
                422 | 400 => "refused",
                429 => "throttled",
                code if code >= 500 => "api_unavailable",
                _ => "api_error",
            },
            Error::Kube(_) => "api_unreachable",
            Error::MissingField(_) => "invalid_object",
            Error::Serialization(_) => "serialization",
            Error::Lease(_) => "lease",
            Error::Io(_) => "io",
            Error::Http(_) => "http",
            Error::Refused(_) => "refused",
        }
    }

    /// A write lost a race with another writer; retry from a fresh read, never Degraded.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(status)) if status.code == 409)
    }

    /// The API server refused what we sent: retrying the same request will not help until
    /// something changes, so it is reported in status.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(status)) if matches!(status.code, 400 | 403 | 422))
    }
}
