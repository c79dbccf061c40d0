use std::process::ExitCode;

use clap::Parser;
use modelship_serving::config::{Cli, Command};
use modelship_serving::{healthcheck, server, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Validate(args)) = &cli.command {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let report = match runtime {
            Ok(runtime) => runtime.block_on(modelship_serving::validate::run(args)),
            Err(e) => {
                eprintln!("cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        print!("{}", report.render());
        return if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    if let Some(Command::Healthcheck { url }) = cli.command {
        let url = url.unwrap_or_else(|| healthcheck::default_url(cli.config.listen));
        return match healthcheck::check(&url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("healthcheck failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = cli.config;
    telemetry::init(config.log_format);
    let threads = config
        .worker_threads
        .map(|t| t as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map(usize::from).unwrap_or(1));
    let span = match &config.pod_name {
        Some(pod) => tracing::info_span!("serving", pod = %pod),
        None => tracing::info_span!("serving"),
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let thread_span = span.clone();
    let runtime = builder
        .enable_all()
        .on_thread_start(move || telemetry::enter_for_this_thread(&thread_span))
        .on_thread_stop(telemetry::leave_on_this_thread)
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    // `block_on` runs the accept loop on this thread.
    let _in_span = span.entered();
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| modelship_serving::Error::io(format!("binding {}", config.listen), e))?;
        server::run(config, listener).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, error_type = e.error_type(), "exiting");
            ExitCode::FAILURE
        }
    }
}
