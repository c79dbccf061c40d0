//! localnode: a node agent (a tiny kubelet) and a Service proxy (a tiny kube-proxy) in one
//! process, so a real local control plane can run pods and tests can send HTTP through Service
//! selectors. Everything listens on and connects to loopback only; pod IPs are labels.

pub mod agent;
pub mod config;
pub mod directory;
pub mod env;
pub mod http;
pub mod ipam;
pub mod node;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod status;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use config::Config;

use self::agent::{Agent, AgentCtx, AgentHttp};
use self::directory::PodDirectory;
use self::node::NodeHeartbeat;
use self::proxy::ProxyState;
use crate::{Error, Result};

/// What `--state-file` holds, so scripts learn the chosen ports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateFile {
    pub agent: SocketAddr,
    pub proxy: SocketAddr,
}

/// Runs localnode until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<()> {
    let client = kube::Client::try_default().await?;
    let (shutdown_tx, shutdown) = watch::channel(false);

    let agent_listener = bind(config.agent_listen).await?;
    let proxy_listener = bind(config.proxy_listen).await?;
    let state =
        StateFile { agent: local_addr(&agent_listener)?, proxy: local_addr(&proxy_listener)? };

    let log_dir = match &config.log_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("localnode-{}", std::process::id())),
    };
    tokio::fs::create_dir_all(&log_dir)
        .await
        .map_err(Error::io(format!("create {}", log_dir.display())))?;

    let heartbeat = NodeHeartbeat::register(&client, &config.node_name).await?;
    tokio::spawn(heartbeat.run(shutdown.clone()));

    let directory = Arc::new(PodDirectory::default());
    let table = Arc::new(ArcSwap::from_pointee(proxy::RouteTable::new()));
    tokio::spawn(proxy::follow(
        client.clone(),
        config.propagation_delay,
        table.clone(),
        shutdown.clone(),
    ));
    let proxy_state =
        ProxyState { table, directory: directory.clone(), client: http::pooled_client() };
    let proxy_app = proxy::router(proxy_state);
    tokio::spawn(async move {
        let listener = proxy_listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(error) = axum::serve(listener, proxy_app).await {
            tracing::error!(%error, "proxy server stopped");
        }
    });

    let info = serde_json::json!({
        "node": config.node_name,
        "agent": state.agent,
        "proxy": state.proxy,
        "runImages": config.run_images,
        "logDir": log_dir,
    });
    let agent_app = agent::router(AgentHttp {
        directory: directory.clone(),
        client: http::pooled_client(),
        info: Arc::new(info),
    });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(agent_listener, agent_app).await {
            tracing::error!(%error, "agent server stopped");
        }
    });

    let ctx = Arc::new(AgentCtx {
        client,
        node_name: config.node_name.clone(),
        run_images: config.run_images.clone(),
        fake_ready_delay: config.fake_ready_delay,
        log_dir: log_dir.clone(),
        directory,
        probe_client: http::unpooled_client(),
        patch_permits: Arc::new(Semaphore::new(config.patch_concurrency.max(1))),
        shutdown: shutdown.clone(),
    });
    let agent = tokio::spawn(Agent::new(ctx).run());

    if let Some(path) = &config.state_file {
        write_state_file(path, &state).await?;
    }
    tracing::info!(
        node = %config.node_name, agent = %state.agent, proxy = %state.proxy,
        log_dir = %log_dir.display(), run_images = config.run_images.len(),
        "localnode ready"
    );

    wait_for_signal().await?;
    tracing::info!("stopping: terminating process pods");
    let _ = shutdown_tx.send(true);
    let _ = agent.await;
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(Error::io(format!("listen on {addr}")))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(Error::io("read the listen address"))
}

/// Written to a temporary name and renamed, so a reader never sees half a file.
async fn write_state_file(path: &Path, state: &StateFile) -> Result<()> {
    let partial = path.with_extension("partial");
    let body = serde_json::to_vec(state)?;
    tokio::fs::write(&partial, body)
        .await
        .map_err(Error::io(format!("write {}", partial.display())))?;
    tokio::fs::rename(&partial, path).await.map_err(Error::io(format!("write {}", path.display())))
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(Error::io("install SIGTERM handler"))?;
    tokio::select! {
        _ = term.recv() => {}
        result = tokio::signal::ctrl_c() => result.map_err(Error::io("wait for Ctrl-C"))?,
    }
    Ok(())
}
