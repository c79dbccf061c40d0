//! Hardening seen through real sockets: a slowloris client is disconnected once the header
//! read timeout passes while an idle keep-alive connection is not, a model slower than the request deadline is answered 503 within the
//! deadline plus 100 ms, a client that sends an oversized body whole before reading (Python's
//! urllib) reads the 413, and the process exits 0 on SIGTERM.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{Guard, free_addr, http, spawn, stop, wait_ready};
use modelship_serving::batching::{Batcher, CallCost};
use modelship_serving::error::Result;
use modelship_serving::feedback::Feedback;
use modelship_serving::models::{Models, ServedModel};
use modelship_serving::runtime::{
    Backend, DataType, ModelKind, Predictions, Signature, TensorInfo,
};
use modelship_serving::server::{Limits, serve};
use modelship_serving::{AppState, loader};

/// The tests of this file measure times against bounds of a few hundred milliseconds: they
/// run one at a time, so none of them competes with another for the CPU.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn predict_body() -> String {
    serde_json::json!({"features": common::rows("inputs_binary.json", 1)[0]}).to_string()
}

/// Writes request headers one byte at a time on a new connection, never finishing them;
/// returns how long the server kept the connection open, or `None` if it still was after
/// `give_up`.
fn trickle_headers(addr: SocketAddr, every: Duration, give_up: Duration) -> Option<Duration> {
    // From before the connection exists, so the server's clock cannot start earlier.
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    trickle_headers_on(&mut stream, started, every, give_up)
}

/// Writes request headers one byte at a time on `stream`, never finishing them; returns how
/// long after `started` the server closed the connection, or `None` if it had not after
/// `give_up`.
fn trickle_headers_on(
    stream: &mut TcpStream,
    started: Instant,
    every: Duration,
    give_up: Duration,
) -> Option<Duration> {
    stream.set_read_timeout(Some(every)).unwrap();
    stream.write_all(b"POST /predict HTTP/1.1\r\nHost: slow\r\nX-Slow: ").unwrap();
    let mut buf = [0_u8; 512];
    while started.elapsed() < give_up {
        if stream.write_all(b"a").is_err() {
            return Some(started.elapsed());
        }
        match stream.read(&mut buf) {
            // Closed, or answered and closed: either way the server is done with it.
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// The server on `addr` with a header read timeout of `timeout` and no drain, ready.
fn server_with_header_timeout(addr: SocketAddr, timeout: Duration) -> Guard {
    let mut server = Guard(spawn(
        addr,
        &[
            ("MODELSHIP_HEADER_READ_TIMEOUT_MS", timeout.as_millis().to_string()),
            ("MODELSHIP_DRAIN_SECONDS", "0".into()),
        ],
    ));
    wait_ready(addr, &mut server.0);
    server
}

#[test]
fn a_slowloris_client_is_disconnected_and_others_are_served() {
    let _alone = one_at_a_time();
    let addr = free_addr();
    let timeout = Duration::from_millis(600);
    let mut server = server_with_header_timeout(addr, timeout);
    let slow = std::thread::spawn(move || {
        trickle_headers(addr, Duration::from_millis(50), Duration::from_secs(5))
    });
    // The server keeps answering everyone else meanwhile.
    for _ in 0..10 {
        assert_eq!(http(addr, "POST", "/predict", &predict_body()).unwrap().0, 200);
        std::thread::sleep(Duration::from_millis(30));
    }
    let held =
        slow.join().unwrap().expect("a client trickling headers is still connected after 5 s");
    println!("slowloris connection closed after {held:?} (header read timeout {timeout:?})");
    assert!(held >= timeout, "closed after {held:?}, before the timeout");
    assert!(held < timeout + Duration::from_millis(1500), "closed only after {held:?}");
    assert_eq!(stop(&mut server.0, Duration::from_secs(10)), Some(0), "exit code after SIGTERM");
}

/// Reads one HTTP/1.1 response with a `content-length` from `stream`; its status, or `None` if
/// the server closed the connection first.
fn read_response(stream: &mut TcpStream) -> Option<u16> {
    let mut received = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return head.split(' ').nth(1).and_then(|s| s.parse().ok());
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// A keep-alive connection left idle for longer than the header read timeout stays open and
/// answers its next request: closing it would race with a client sending on it, which then
/// sees "connection closed before message completed", a lost request. A head trickling in after
/// such a pause is still cut off once the timeout has passed since its first byte.
#[test]
fn an_idle_keep_alive_connection_outlives_the_header_timeout() {
    let _alone = one_at_a_time();
    let addr = free_addr();
    let timeout = Duration::from_millis(600);
    let mut server = server_with_header_timeout(addr, timeout);
    let body = predict_body();
    let request = format!(
        "POST /predict HTTP/1.1\r\nHost: idle\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for round in 0..3 {
        stream.write_all(request.as_bytes()).unwrap();
        assert_eq!(read_response(&mut stream), Some(200), "request {round} on the connection");
        std::thread::sleep(timeout * 3);
    }

    let held = trickle_headers_on(
        &mut stream,
        Instant::now(),
        Duration::from_millis(50),
        Duration::from_secs(5),
    )
    .expect("a head trickling after the pauses is still connected after 5 s");
    println!("after the pauses, a trickling head was cut off after {held:?} (timeout {timeout:?})");
    assert!(held >= timeout, "cut off after {held:?}, before the timeout");
    assert!(held < timeout + Duration::from_millis(1500), "cut off only after {held:?}");
    assert_eq!(stop(&mut server.0, Duration::from_secs(10)), Some(0), "exit code after SIGTERM");
}

/// A model whose every call takes `delay`: the deadline, not the model, decides the answer.
struct Slow {
    signature: Signature,
    delay: Duration,
}

impl Slow {
    fn new(delay: Duration) -> Slow {
        let signature = Signature {
            input: TensorInfo { name: "X".into(), datatype: DataType::Fp32, shape: vec![-1, 4] },
            features: 4,
            outputs: vec![TensorInfo {
                name: "variable".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 1],
            }],
            kind: ModelKind::Regressor { value_output: 0, targets: 1 },
        };
        Slow { signature, delay }
    }
}

impl Backend for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn predict(&self, _x: &[f32], rows: usize, out: &mut Predictions) -> Result<()> {
        std::thread::sleep(self.delay);
        out.rows = rows;
        out.width = 1;
        out.labels.clear();
        out.scores.clear();
        out.scores.resize(rows, 0.5);
        Ok(())
    }
}

/// The real router behind the real accept loop on 127.0.0.1, serving `Slow` as `slow`.
async fn slow_server(request_timeout_ms: u64, delay: Duration) -> SocketAddr {
    let mut config = common::config();
    config.request_timeout_ms = request_timeout_ms;
    let state: AppState = common::empty_state(&config, None);
    let backend: Arc<dyn Backend> = Arc::new(Slow::new(delay));
    let metrics = state.metrics.model("slow", "1", false);
    let batcher = Batcher::spawn(
        backend.clone(),
        loader::batch_config(&config),
        CallCost::per_row(delay),
        metrics.clone(),
        None,
    );
    let model = ServedModel {
        name: "slow".into(),
        version: "1".into(),
        backend,
        batcher,
        metrics,
        feedback: Mutex::new(Feedback::new(10, 10, 10)),
        drift: false,
    };
    state.set_models(Models::new(vec![Arc::new(model)])).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = modelship_serving::app(state);
    let limits =
        Limits { header_read_timeout: Duration::from_secs(5), drain_cap: Duration::from_secs(1) };
    tokio::spawn(serve(listener, app, std::future::pending(), limits));
    addr
}

#[test]
fn a_model_slower_than_the_deadline_is_answered_503_within_the_deadline_plus_100ms() {
    let _alone = one_at_a_time();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(slow_model_answers_within_the_deadline());
}

async fn slow_model_answers_within_the_deadline() {
    let deadline = Duration::from_millis(200);
    let addr = slow_server(deadline.as_millis() as u64, Duration::from_secs(2)).await;
    let requests = [
        ("/predict", r#"{"features":[1,2,3,4]}"#),
        (
            "/v2/models/slow/infer",
            r#"{"inputs":[{"name":"X","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
        ),
        ("/predict", r#"{"instances":[[1,2,3,4],[5,6,7,8]]}"#),
    ];
    // Concurrently, as a slow model meets traffic: each request has its own deadline.
    let calls = requests.map(|(path, body)| {
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let answer = http(addr, "POST", path, body);
            (path, answer, started.elapsed())
        })
    });
    for call in calls {
        let (path, answer, took) = call.await.unwrap();
        let (status, body) = answer.unwrap_or_else(|| panic!("{path}: no answer"));
        println!("{path}: {status} after {took:?}");
        assert_eq!(status, 503, "{path}: {body}");
        assert!(body.contains("timed out after 200 ms"), "{path}: {body}");
        assert!(took >= deadline, "{path}: answered after {took:?}, before the deadline");
        assert!(
            took <= deadline + Duration::from_millis(100),
            "{path}: answered after {took:?}, later than the deadline plus 100 ms"
        );
    }
}

/// Python's urllib sends the whole body before it reads the answer.
const URLLIB_POST: &str = r#"
import sys, urllib.request, urllib.error
url, size, chunked = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "chunked"
body = b'{"features": [' + b'1,' * (size // 2) + b'1]}'
data = iter([body[i:i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(request, timeout=20)
    print("accepted")
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except Exception as e:
    print("transport error:", repr(e))
"#;

fn urllib_post(addr: SocketAddr, size: usize, chunked: bool) -> String {
    let output = Command::new("python3")
        .args(["-c", URLLIB_POST, &format!("http://{addr}/predict"), &size.to_string()])
        .arg(if chunked { "chunked" } else { "whole" })
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn a_client_sending_an_oversized_body_whole_reads_the_413() {
    let _alone = one_at_a_time();
    let addr = free_addr();
    let limit = 64 * 1024;
    let mut server = Guard(spawn(
        addr,
        &[("MODELSHIP_MAX_BODY_BYTES", limit.to_string()), ("MODELSHIP_DRAIN_SECONDS", "0".into())],
    ));
    wait_ready(addr, &mut server.0);
    // 16 times the limit, well past what the socket buffers hold, with a Content-Length and
    // chunked.
    for (size, chunked) in [(1 << 20, false), (1 << 20, true), (2 << 20, false)] {
        for _ in 0..3 {
            let answer = urllib_post(addr, size, chunked);
            assert!(
                answer.starts_with("413") && answer.contains(&format!("limit of {limit} bytes")),
                "{size} bytes, chunked {chunked}: {answer}"
            );
        }
    }
    // The server is unharmed.
    assert_eq!(http(addr, "POST", "/predict", &predict_body()).unwrap().0, 200);
    assert_eq!(stop(&mut server.0, Duration::from_secs(10)), Some(0), "exit code after SIGTERM");
}
