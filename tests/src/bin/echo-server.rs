//! A tiny HTTP server that stands in for a model server in localnode's own tests.
//!
//! Environment:
//! - `MODELSHIP_LISTEN` (required): address to listen on.
//! - `MODELSHIP_POD_NAME`, `MODELSHIP_MODEL_VERSION`: echoed back in every answer.
//! - `ECHO_READY_DELAY_MS`: `/ready` answers 503 until this long after start.
//! - `ECHO_EXIT_CODE`: exit at once with this code (a crashing container).
//! - `ECHO_TERM_DIR`: on SIGTERM, create `<dir>/<pod>.term` (so tests can see the signal).
//! - `ECHO_SHOW_ENV`: comma-separated variable names whose values every answer includes.
//!
//! Routes: `GET /ready`, `GET /health`, `POST /control/ready` with body `true` or `false`
//! (flips readiness), and any other path answers `{"pod", "version", "path", "args", "env"}`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use modelship_tests::{Error, Result};
use serde_json::{Value, json};

struct Echo {
    pod: String,
    version: String,
    /// Command-line arguments and the variables named in `ECHO_SHOW_ENV`, shown in answers.
    args: Vec<String>,
    env: serde_json::Map<String, Value>,
    ready: AtomicBool,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> Result<()> {
    if let Some(code) = env("ECHO_EXIT_CODE") {
        eprintln!("echo-server: exiting at once with code {code} as asked");
        std::process::exit(code.parse().unwrap_or(1));
    }
    let listen = env("MODELSHIP_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".to_string());
    let addr: SocketAddr = listen.parse().map_err(|_| Error::Invalid {
        what: "MODELSHIP_LISTEN",
        value: listen.clone(),
        reason: "expected IP:PORT",
    })?;
    let echo = Arc::new(Echo {
        pod: env("MODELSHIP_POD_NAME").unwrap_or_default(),
        version: env("MODELSHIP_MODEL_VERSION").unwrap_or_default(),
        args: std::env::args().skip(1).collect(),
        env: env("ECHO_SHOW_ENV")
            .unwrap_or_default()
            .split(',')
            .filter(|name| !name.is_empty())
            .map(|name| (name.to_string(), json!(std::env::var(name).ok())))
            .collect(),
        ready: AtomicBool::new(false),
    });
    let delay = env("ECHO_READY_DELAY_MS")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    let ready_later = echo.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        ready_later.ready.store(true, Ordering::SeqCst);
    });

    let app = Router::new()
        .route("/ready", get(ready))
        .route("/health", get(|| async { "ok" }))
        .route("/control/ready", post(set_ready))
        .fallback(echo_path)
        .with_state(echo.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(Error::io(format!("listen on {addr}")))?;
    println!("echo-server: pod {} listening on {addr}", echo.pod);
    let term_dir = env("ECHO_TERM_DIR").map(PathBuf::from);
    axum::serve(listener, app)
        .with_graceful_shutdown(on_sigterm(echo.clone(), term_dir))
        .await
        .map_err(Error::io("serve"))?;
    println!("echo-server: stopped");
    Ok(())
}

async fn on_sigterm(echo: Arc<Echo>, term_dir: Option<PathBuf>) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
        }
        Err(error) => {
            eprintln!("echo-server: no SIGTERM handler: {error}");
            std::future::pending::<()>().await;
        }
    }
    println!("echo-server: SIGTERM, draining");
    echo.ready.store(false, Ordering::SeqCst);
    if let Some(dir) = term_dir {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{}.term", echo.pod)), b"SIGTERM\n");
    }
}

async fn ready(State(echo): State<Arc<Echo>>) -> (StatusCode, &'static str) {
    if echo.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn set_ready(State(echo): State<Arc<Echo>>, body: String) -> StatusCode {
    match body.trim() {
        "true" => echo.ready.store(true, Ordering::SeqCst),
        "false" => echo.ready.store(false, Ordering::SeqCst),
        _ => return StatusCode::BAD_REQUEST,
    }
    StatusCode::NO_CONTENT
}

async fn echo_path(State(echo): State<Arc<Echo>>, request: Request) -> axum::Json<Value> {
    axum::Json(json!({
        "pod": echo.pod,
        "version": echo.version,
        "path": request.uri().path(),
        "args": echo.args,
        "env": echo.env,
    }))
}
