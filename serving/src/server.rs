//! Accept loop and process lifecycle: load in the background, serve, and on SIGTERM turn
//! unready at once, keep serving for the drain delay, then close keep-alive connections after
//! their next response, drain what is left and return.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::state::{AppState, Settings};
use crate::{loader, routes};

mod connection;

use connection::{Activity, Watched};

/// After shutdown begins, how long keep-alive connections get to carry one more request, whose
/// response closes them. Closing an idle connection races with a client sending on it (the
/// client sees "connection closed before message completed"); a connection closed after a
/// response does not.
const CLOSE_AFTER_RESPONSE_GRACE: Duration = Duration::from_secs(2);
const CONNECTIONS_POLL: Duration = Duration::from_millis(10);

/// How connections are served.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A connection whose request head takes longer than this to arrive, from its first byte
    /// (or from the connection's opening), is closed (slowloris guard). Idle keep-alive
    /// connections are closed after `connection::IDLE_TIMEOUT`.
    pub header_read_timeout: Duration,
    /// After shutdown, in-flight requests get at most this long to finish.
    pub drain_cap: Duration,
}

/// Serve `app` on `listener` until `shutdown` completes. Then stop accepting, answer every
/// request with `Connection: close` until the connections are gone or
/// `CLOSE_AFTER_RESPONSE_GRACE` has passed, and let in-flight requests finish for at most
/// `limits.drain_cap`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) {
    let graceful = GracefulShutdown::new();
    let closing = Arc::new(AtomicBool::new(false));
    let mut http = hyper::server::conn::http1::Builder::new();
    // Without hyper's header-read timeout, which also closes idle keep-alive connections:
    // `connection` keeps that clock.
    http.timer(TokioTimer::new()).header_read_timeout(None).keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let closing = closing.clone();
                let activity = Activity::opened();
                let serving = activity.clone();
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let (app, closing, activity) = (app.clone(), closing.clone(), serving.clone());
                    activity.request_started();
                    async move {
                        let mut response = app.oneshot(req).await?;
                        if closing.load(Ordering::Relaxed) {
                            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                        }
                        activity.request_finished();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let io = TokioIo::new(Watched::new(stream, activity.clone()));
                let conn = graceful.watch(http.serve_connection(io, service));
                let header_read_timeout = limits.header_read_timeout;
                tokio::spawn(async move {
                    tokio::select! {
                        ended = conn => if let Err(e) = ended {
                            tracing::debug!(error = %e, "connection ended with an error");
                        },
                        () = activity.timed_out(header_read_timeout) => {
                            tracing::debug!(phase = ?activity.phase(), "connection closed: too long waiting for a request");
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    closing.store(true, Ordering::Relaxed);
    let grace = tokio::time::Instant::now() + CLOSE_AFTER_RESPONSE_GRACE;
    while graceful.count() > 0 && tokio::time::Instant::now() < grace {
        tokio::time::sleep(CONNECTIONS_POLL).await;
    }
    tracing::info!(open_connections = graceful.count(), "closing the remaining connections");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(limits.drain_cap) => tracing::warn!("drain cap reached; closing remaining connections"),
    }
}

/// Run the server described by `config` on `listener` until SIGTERM/SIGINT.
pub async fn run(config: Config, listener: TcpListener) -> Result<()> {
    let token = match &config.auth_token_file {
        Some(path) => {
            let raw = std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            let token = raw.trim().to_owned();
            if token.is_empty() {
                return Err(Error::Config(format!("auth token file {} is empty", path.display())));
            }
            Some(token)
        }
        None => None,
    };
    let sources = loader::sources(&config)?;
    let state = AppState::new(Settings::from_config(&config), token);
    let app = routes::app(state.clone());
    tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), models = sources.len(), "serving");

    let failure: Arc<Mutex<Option<Error>>> = Arc::default();
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<()>();
    let batch = loader::batch_config(&config);
    let load_state = state.clone();
    let load_failure = failure.clone();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        match loader::load_all(&load_state, &sources, batch)
            .await
            .and_then(|m| load_state.set_models(m))
        {
            Ok(()) => {
                tracing::info!(elapsed_us = started.elapsed().as_micros() as u64, "ready")
            }
            Err(e) => {
                tracing::error!(error = %e, "model load failed");
                *load_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                let _ = failed_tx.send(());
            }
        }
    });

    let drain = config.drain();
    let shutdown_state = state.clone();
    let shutdown = async move {
        tokio::select! {
            () = terminate_signal() => {
                shutdown_state.begin_shutdown();
                tracing::info!(drain_seconds = drain.as_secs(), "shutdown signal: readiness off, still serving");
                // A second signal skips the drain.
                tokio::select! {
                    () = tokio::time::sleep(drain) => {}
                    () = terminate_signal() => tracing::warn!("second signal: draining now"),
                }
            }
            Ok(()) = failed_rx => {}
        }
    };
    let limits = Limits {
        header_read_timeout: config.header_read_timeout(),
        // In-flight requests cannot outlive their own deadline; a second more covers the write.
        drain_cap: config.request_timeout() + Duration::from_secs(1),
    };
    serve(listener, app, shutdown, limits).await;
    if let Some(log) = &state.prediction_log {
        log.finish().await;
    }
    let failed = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failed {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

async fn terminate_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
