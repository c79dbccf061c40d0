//! Fault injection between one client and the API server: a TCP forwarder on 127.0.0.1
//! that can be cut (every connection closed, new ones refused) and restored, and a kubeconfig
//! that sends one process through it. TLS passes through untouched.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct FaultyLink {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut, so open connections notice and close.
    epoch: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyLink {
    /// Forward 127.0.0.1:<new port> to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultyLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a local port");
        let addr = listener.local_addr().expect("local address");
        let cut = Arc::new(AtomicBool::new(false));
        let (epoch, _) = watch::channel(0u64);
        let (flag, epochs) = (cut.clone(), epoch.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut changed = epochs.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = changed.changed() => {}
                    }
                });
            }
        });
        FaultyLink { addr, cut, epoch, task }
    }

    /// Close every open connection and refuse new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The API server address in a kubeconfig (`server: https://127.0.0.1:PORT`).
pub fn api_server(kubeconfig: &Path) -> SocketAddr {
    let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig");
    let server = text
        .split("server:")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .expect("a server in the kubeconfig");
    server.trim_start_matches("https://").parse().expect("server is IP:PORT")
}

/// A copy of `kubeconfig` that reaches the API server through `link`.
pub fn kubeconfig_via(kubeconfig: &Path, link: &FaultyLink, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig");
    let upstream = api_server(kubeconfig);
    let rewritten = text.replace(&format!("https://{upstream}"), &format!("https://{}", link.addr));
    let path = dir.join(format!("kubeconfig-via-{}", link.addr.port()));
    std::fs::write(&path, rewritten).expect("write kubeconfig");
    path
}
