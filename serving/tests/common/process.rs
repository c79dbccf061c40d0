//! The real binary as a process on 127.0.0.1, and plain HTTP/1.1 over std sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use super::fixture;

pub const BIN: &str = env!("CARGO_BIN_EXE_modelship-serving");

/// A free address on 127.0.0.1 for a server to listen on, with a port below the kernel's
/// ephemeral range (32768 and up by default). A port from `bind(:0)` comes from that range,
/// where the tests' own client connections, a new one per request, can take it as their local
/// port before the server binds it (seen once: the server exited before becoming ready).
/// Each test process takes its ports from its own block of 100.
pub fn free_addr() -> SocketAddr {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block = 20_000 + (std::process::id() % 100) as u16 * 100;
    for _ in 0..100 {
        let port = block + NEXT.fetch_add(1, Ordering::Relaxed) % 100;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free port in 127.0.0.1:{block}-{}", block + 99);
}

/// The random forest as `fraud` version 1 on `addr`, one worker thread, with `extra`
/// environment on top.
pub fn spawn(addr: SocketAddr, extra: &[(&str, String)]) -> Child {
    spawn_with_stdout(addr, extra, Stdio::null())
}

/// As [`spawn`], with the server's standard output (its log) going to `stdout`.
pub fn spawn_with_stdout(addr: SocketAddr, extra: &[(&str, String)], stdout: Stdio) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.env("MODELSHIP_LISTEN", addr.to_string())
        .env("MODELSHIP_MODEL_NAME", "fraud")
        .env("MODELSHIP_MODEL_VERSION", "1")
        .env("MODELSHIP_MODEL_URI", format!("file://{}", fixture("rf.onnx")))
        .env("MODELSHIP_REFERENCE_DATA", fixture("reference.json"))
        .env("MODELSHIP_WORKER_THREADS", "1")
        .env("RUST_LOG", "warn")
        .stdout(stdout)
        .stderr(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// One request on a fresh connection; `None` when nothing answers.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let out = String::from_utf8_lossy(&out);
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Waits until `/ready` answers 200; returns how long that took.
pub fn wait_ready(addr: SocketAddr, child: &mut Child) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Some((200, _)) = http(addr, "GET", "/ready", "") {
            return started.elapsed();
        }
        assert!(child.try_wait().unwrap().is_none(), "server exited before becoming ready");
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("not ready within 10 s");
}

pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

pub fn sigterm(child: &Child) {
    let ok =
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
    assert!(ok);
}

/// SIGTERM, then the exit code, which must come within `within`.
pub fn stop(child: &mut Child, within: Duration) -> Option<i32> {
    sigterm(child);
    let status = wait_exit(child, within);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server did not exit within {within:?} of SIGTERM");
    }
    status.and_then(|s| s.code())
}

/// Kills the process if a test fails before stopping it.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
