//! Command line and environment: every flag has a `MODELSHIP_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use modelship_contract::env;

use crate::predlog;

#[derive(Debug, Parser)]
#[command(name = "modelship-serving", version, about = "Modelship model server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// GET the server's own /health and exit 0 on 200, 1 otherwise (container HEALTHCHECK).
    Healthcheck {
        /// Defaults to http://127.0.0.1:<port of --listen>/health.
        #[arg(long)]
        url: Option<String>,
    },
    /// Load a model as the server would, run sample inputs, compare with expected outputs
    /// and print a verdict: exit 0 when it passes, 1 when it does not.
    Validate(ValidateArgs),
}

/// What `modelship-serving validate` checks, and against what.
#[derive(Clone, Debug, Args)]
pub struct ValidateArgs {
    /// The model: file:///path, a plain path, or http(s)://.
    #[arg(long)]
    pub model: String,
    /// Expected SHA-256 of the model file (hex).
    #[arg(long)]
    pub sha256: Option<String>,
    /// Sample inputs: {"inputs": [[...], ...]} or [[...], ...].
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    /// Expected outputs for the inputs: {"labels", "probabilities"} or {"values"}.
    #[arg(long, requires = "inputs")]
    pub expected: Option<PathBuf>,
    /// Largest difference allowed between an output value and the expected one.
    #[arg(long, default_value_t = 1e-5)]
    pub tolerance: f64,
    /// Longest one row's inference may take, in milliseconds (the slowest row counts).
    #[arg(long)]
    pub max_latency_ms: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = env::LISTEN, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Name the model is served under (/v2/models/{name}); defaults to the file stem.
    #[arg(long, env = env::MODEL_NAME)]
    pub model_name: Option<String>,
    /// Version string reported and matched against `model_version`.
    #[arg(long, env = env::MODEL_VERSION, default_value = "1")]
    pub model_version: String,
    /// file:///path, a plain path, or http(s)://.
    #[arg(long, env = env::MODEL_URI)]
    pub model_uri: Option<String>,
    /// Expected hex SHA-256 of the model bytes; checked after download.
    #[arg(long, env = env::MODEL_SHA256)]
    pub model_sha256: Option<String>,
    /// Feature statistics for drift (same schemes as the model URI).
    #[arg(long, env = env::REFERENCE_DATA)]
    pub reference_data: Option<String>,
    /// Serve every `<dir>/<name>/<version>/model.onnx` (with an optional reference.json beside it).
    #[arg(long, env = env::MODEL_DIR)]
    pub model_dir: Option<PathBuf>,
    /// Most rows in one model call.
    #[arg(long, env = env::MAX_BATCH_SIZE, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_batch_size: u32,
    /// Longest a batch waits for more requests, only while more are on their way.
    #[arg(long, env = env::MAX_BATCH_DELAY_MICROS, default_value_t = 500)]
    pub max_batch_delay_micros: u64,
    /// Requests waiting per model before new ones get 429.
    #[arg(long, env = env::QUEUE_CAPACITY, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue_capacity: u32,
    /// A call expected to take at most this long (the model's warm-up cost per row × the
    /// request's rows) runs on the request's own task instead of the batching queue; 0
    /// queues every call.
    #[arg(long, env = env::INLINE_CALL_MAX_MICROS, default_value_t = 5)]
    pub inline_call_max_micros: u64,
    /// Largest accepted request body; larger bodies get 413.
    #[arg(long, env = env::MAX_BODY_BYTES, default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Deadline for an inference request, body included; past it the answer is 503.
    #[arg(long, env = env::REQUEST_TIMEOUT_MS, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// A connection whose request headers take longer than this to arrive is closed
    /// (slowloris guard).
    #[arg(long, env = env::HEADER_READ_TIMEOUT_MS, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,
    /// File holding a bearer token required on inference routes.
    #[arg(long, env = env::AUTH_TOKEN_FILE)]
    pub auth_token_file: Option<PathBuf>,
    /// After SIGTERM: seconds to keep serving with readiness false, before draining.
    #[arg(long, env = env::DRAIN_SECONDS, default_value_t = 5)]
    pub drain_seconds: u64,
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Added to log lines when set.
    #[arg(long, env = env::POD_NAME)]
    pub pod_name: Option<String>,
    /// Runtime worker threads; 1 runs everything on one thread. Default: available cores.
    #[arg(long, env = env::WORKER_THREADS, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub worker_threads: Option<u32>,
    /// Prediction log: off, stdout (JSON lines) or http (batches POSTed to the URL).
    #[arg(long, env = env::PREDICTION_LOG, value_enum, default_value_t = predlog::Sink::Off)]
    pub prediction_log: predlog::Sink,
    /// The collector the http prediction log POSTs to.
    #[arg(long, env = env::PREDICTION_LOG_URL, required_if_eq("prediction_log", "http"))]
    pub prediction_log_url: Option<String>,
    /// Share of requests logged, 0 to 1.
    #[arg(long, env = env::PREDICTION_LOG_SAMPLE_RATE, default_value_t = 1.0, value_parser = share)]
    pub prediction_log_sample_rate: f64,
    /// Also log the features themselves, not only their SHA-256.
    #[arg(long, env = env::PREDICTION_LOG_FEATURES, default_value_t = false, action = clap::ArgAction::Set)]
    pub prediction_log_features: bool,
}

/// A number from 0 to 1.
fn share(value: &str) -> Result<f64, String> {
    let rate: f64 = value.parse().map_err(|e| format!("{value:?} is not a number: {e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not between 0 and 1"))
    }
}

impl Config {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn max_batch_delay(&self) -> Duration {
        Duration::from_micros(self.max_batch_delay_micros)
    }

    pub fn inline_call_max(&self) -> Duration {
        Duration::from_micros(self.inline_call_max_micros)
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }

    pub fn prediction_log(&self) -> predlog::Options {
        predlog::Options {
            sink: self.prediction_log,
            url: self.prediction_log_url.clone(),
            sample_rate: self.prediction_log_sample_rate,
            include_features: self.prediction_log_features,
        }
    }

    /// Settings for tests and embedding: defaults, nothing to load.
    pub fn for_tests() -> Self {
        Cli::parse_from(["modelship-serving"]).config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_contract() {
        let c = Cli::try_parse_from(["modelship-serving"]).unwrap().config;
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.max_batch_size, 32);
        assert_eq!(c.max_batch_delay_micros, 500);
        assert_eq!(c.queue_capacity, 1024);
        assert_eq!(c.inline_call_max_micros, 5);
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.request_timeout_ms, 5000);
        assert_eq!(c.header_read_timeout_ms, 10_000);
        assert_eq!(c.drain_seconds, 5);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn healthcheck_subcommand_parses() {
        let cli = Cli::try_parse_from([
            "modelship-serving",
            "healthcheck",
            "--url",
            "http://127.0.0.1:1/health",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Healthcheck { url: Some(_) })));
    }

    #[test]
    fn prediction_log_options() {
        let c = Cli::try_parse_from(["modelship-serving"]).unwrap().config;
        assert_eq!(c.prediction_log().sink, predlog::Sink::Off);
        let on = Cli::try_parse_from([
            "modelship-serving",
            "--prediction-log",
            "stdout",
            "--prediction-log-sample-rate",
            "0.5",
        ])
        .unwrap()
        .config;
        assert_eq!(
            (on.prediction_log().sink, on.prediction_log().sample_rate),
            (predlog::Sink::Stdout, 0.5)
        );
        let http_without_url = ["modelship-serving", "--prediction-log", "http"];
        assert!(Cli::try_parse_from(http_without_url).is_err());
        let rate = ["modelship-serving", "--prediction-log-sample-rate", "1.5"];
        assert!(Cli::try_parse_from(rate).is_err());
    }

    #[test]
    fn zero_batch_size_is_refused() {
        assert!(Cli::try_parse_from(["modelship-serving", "--max-batch-size", "0"]).is_err());
    }
}
