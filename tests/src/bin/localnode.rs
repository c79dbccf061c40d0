//! `localnode`: runs pods for a local Kubernetes control plane and proxies Services to them.
//! See `modelship_tests::localnode` and `localnode --help`.

use std::io::IsTerminal;

use clap::Parser;
use modelship_tests::localnode::{self, Config};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if config.log_json {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    match localnode::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, category = error.category(), "localnode failed");
            std::process::ExitCode::FAILURE
        }
    }
}
