//! The environment of the serving binary: every flag has one of these variables, and the
//! operator configures the pods it creates through them.

/// Address to listen on.
pub const LISTEN: &str = "MODELSHIP_LISTEN";
/// Name the model is served under.
pub const MODEL_NAME: &str = "MODELSHIP_MODEL_NAME";
/// Version reported and matched against `model_version`; the `version` metric label.
pub const MODEL_VERSION: &str = "MODELSHIP_MODEL_VERSION";
/// Where the model file is.
pub const MODEL_URI: &str = "MODELSHIP_MODEL_URI";
/// Expected SHA-256 of the model file.
pub const MODEL_SHA256: &str = "MODELSHIP_MODEL_SHA256";
/// Feature statistics for drift.
pub const REFERENCE_DATA: &str = "MODELSHIP_REFERENCE_DATA";
/// A directory of models, instead of one URI.
pub const MODEL_DIR: &str = "MODELSHIP_MODEL_DIR";
/// Most rows in one model call.
pub const MAX_BATCH_SIZE: &str = "MODELSHIP_MAX_BATCH_SIZE";
/// Longest a batch waits for company.
pub const MAX_BATCH_DELAY_MICROS: &str = "MODELSHIP_MAX_BATCH_DELAY_MICROS";
/// Requests waiting per model before 429.
pub const QUEUE_CAPACITY: &str = "MODELSHIP_QUEUE_CAPACITY";
/// Calls expected to take at most this long skip the batching queue.
pub const INLINE_CALL_MAX_MICROS: &str = "MODELSHIP_INLINE_CALL_MAX_MICROS";
/// Largest accepted request body.
pub const MAX_BODY_BYTES: &str = "MODELSHIP_MAX_BODY_BYTES";
/// Deadline of an inference request.
pub const REQUEST_TIMEOUT_MS: &str = "MODELSHIP_REQUEST_TIMEOUT_MS";
/// How long a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT_MS: &str = "MODELSHIP_HEADER_READ_TIMEOUT_MS";
/// File holding the bearer token inference requires.
pub const AUTH_TOKEN_FILE: &str = "MODELSHIP_AUTH_TOKEN_FILE";
/// Seconds to keep serving, unready, after SIGTERM.
pub const DRAIN_SECONDS: &str = "MODELSHIP_DRAIN_SECONDS";
/// `text` or `json` logs.
pub const LOG_FORMAT: &str = "MODELSHIP_LOG_FORMAT";
/// The pod's name, added to log lines.
pub const POD_NAME: &str = "MODELSHIP_POD_NAME";
/// Runtime worker threads.
pub const WORKER_THREADS: &str = "MODELSHIP_WORKER_THREADS";
/// Where prediction records go: `off`, `stdout` or `http`.
pub const PREDICTION_LOG: &str = "MODELSHIP_PREDICTION_LOG";
/// The collector prediction records are POSTed to, with `http`.
pub const PREDICTION_LOG_URL: &str = "MODELSHIP_PREDICTION_LOG_URL";
/// Share of predictions logged, 0 to 1.
pub const PREDICTION_LOG_SAMPLE_RATE: &str = "MODELSHIP_PREDICTION_LOG_SAMPLE_RATE";
/// `true` to log the features themselves, not only their SHA-256.
pub const PREDICTION_LOG_FEATURES: &str = "MODELSHIP_PREDICTION_LOG_FEATURES";
