//! The real binary as a process on 127.0.0.1: cold start, SIGTERM drain, exit, healthcheck.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{
    BIN, Guard, free_addr, http, sigterm, spawn, spawn_with_stdout, stop, wait_exit, wait_ready,
};

fn predict_body() -> String {
    serde_json::json!({"features": common::rows("inputs_binary.json", 1)[0]}).to_string()
}

#[test]
fn sigterm_turns_readiness_off_keeps_serving_through_the_drain_then_exits() {
    let addr = free_addr();
    let drain = Duration::from_secs(2);
    let mut child = spawn(addr, &[("MODELSHIP_DRAIN_SECONDS", drain.as_secs().to_string())]);
    let cold = wait_ready(addr, &mut child);
    println!("cold start to ready (spawn to first 200 on /ready): {cold:?}");
    assert_eq!(http(addr, "POST", "/predict", &predict_body()).unwrap().0, 200);

    let signalled = Instant::now();
    sigterm(&child);
    // Readiness flips at once...
    let flipped = loop {
        match http(addr, "GET", "/ready", "") {
            Some((503, body)) => {
                assert!(body.contains("shutting down"), "{body}");
                break signalled.elapsed();
            }
            Some((200, _)) if signalled.elapsed() < Duration::from_millis(500) => continue,
            other => panic!("readiness did not flip: {other:?}"),
        }
    };
    assert!(flipped < Duration::from_millis(500), "{flipped:?}");
    assert_eq!(http(addr, "GET", "/v2/health/ready", "").unwrap().0, 503);
    // ...while requests keep succeeding for the drain period.
    let mut served = 0;
    while signalled.elapsed() < drain - Duration::from_millis(300) {
        let (status, body) = http(addr, "POST", "/predict", &predict_body())
            .expect("server stopped during the drain");
        assert_eq!(status, 200, "{body}");
        assert_eq!(http(addr, "GET", "/health", "").unwrap().0, 200);
        served += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(served > 10);
    // Then it drains and exits well within a 30 s grace period.
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("did not exit");
    let total = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(total >= drain && total < drain + Duration::from_secs(3), "{total:?}");
    assert!(http(addr, "GET", "/health", "").is_none(), "still accepting after exit");
}

#[test]
fn healthcheck_subcommand_reports_the_servers_health() {
    let addr = free_addr();
    let mut child = spawn(addr, &[("MODELSHIP_DRAIN_SECONDS", "0".into())]);
    wait_ready(addr, &mut child);
    let check = |url: String| {
        Command::new(BIN)
            .args(["healthcheck", "--url", &url])
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    assert!(check(format!("http://{addr}/health")).success());
    assert!(!check(format!("http://{addr}/nope")).success());
    // Without --url it derives the address from MODELSHIP_LISTEN.
    let derived = Command::new(BIN)
        .arg("healthcheck")
        .env("MODELSHIP_LISTEN", addr.to_string())
        .status()
        .unwrap();
    assert!(derived.success());
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10)).unwrap().success());
    assert!(!check(format!("http://{addr}/health")).success());
}

#[test]
fn a_model_that_cannot_load_makes_the_process_fail() {
    let addr = free_addr();
    let mut child = spawn(addr, &[("MODELSHIP_MODEL_URI", "/nonexistent/model.onnx".into())]);
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("did not exit");
    assert!(!status.success());
}

#[test]
fn bad_configuration_is_refused_before_serving() {
    let out = Command::new(BIN).args(["--max-batch-size", "0"]).output().unwrap();
    assert!(!out.status.success());
    let out = Command::new(BIN)
        .env("MODELSHIP_LISTEN", free_addr().to_string())
        .env_remove("MODELSHIP_MODEL_URI")
        .env_remove("MODELSHIP_MODEL_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("MODELSHIP_MODEL_URI"));
}

/// One request on an open keep-alive connection: (status, lower-cased head, body).
fn request_on(stream: &mut TcpStream, path: &str, body: &str) -> (u16, String, String) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).expect("send on the kept-alive connection");
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("a response on the kept-alive connection");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0_u8; length];
    stream.read_exact(&mut body).unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// After the drain, a kept-alive connection gets one more answer, marked `Connection: close`,
/// and is then closed by the server: a client never sends on a connection the server is
/// closing. An idle connection is closed once the grace has passed, and the process exits.
#[test]
fn kept_alive_connections_close_after_their_next_response_at_shutdown() {
    let addr = free_addr();
    let drain = Duration::from_secs(1);
    let mut child = spawn(addr, &[("MODELSHIP_DRAIN_SECONDS", drain.as_secs().to_string())]);
    wait_ready(addr, &mut child);
    let mut busy = TcpStream::connect(addr).unwrap();
    let mut idle = TcpStream::connect(addr).unwrap();
    for stream in [&mut busy, &mut idle] {
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (status, head, body) = request_on(stream, "/predict", &predict_body());
        assert_eq!(status, 200, "{body}");
        assert!(!head.contains("connection: close"), "{head}");
    }

    let signalled = Instant::now();
    sigterm(&child);
    std::thread::sleep(drain + Duration::from_millis(300));
    let (status, head, body) = request_on(&mut busy, "/predict", &predict_body());
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    assert_eq!(busy.read_to_end(&mut rest).unwrap(), 0, "the server closed after the answer");

    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).unwrap(), 0, "the idle connection is closed");
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("did not exit");
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < drain + Duration::from_secs(4), "{:?}", signalled.elapsed());
}

/// Every log line names the pod, whichever thread writes it: the accept loop, the model's
/// loading, a connection's task on a worker thread, on one runtime thread or several.
#[test]
fn every_log_line_carries_the_pod_name() {
    for threads in ["1", "2"] {
        let addr = free_addr();
        let env = [
            ("MODELSHIP_POD_NAME", "fraud-7d9f".to_owned()),
            ("MODELSHIP_LOG_FORMAT", "json".to_owned()),
            ("MODELSHIP_WORKER_THREADS", threads.to_owned()),
            ("MODELSHIP_DRAIN_SECONDS", "0".to_owned()),
            ("RUST_LOG", "modelship_serving=debug,info".to_owned()),
        ];
        let mut server = Guard(spawn_with_stdout(addr, &env, Stdio::piped()));
        wait_ready(addr, &mut server.0);
        assert_eq!(http(addr, "POST", "/predict", &predict_body()).unwrap().0, 200);
        // A request that is not HTTP ends its connection with an error, logged by its task.
        let mut garbage = TcpStream::connect(addr).unwrap();
        garbage.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
        let _ = garbage.read_to_end(&mut Vec::new());
        assert_eq!(stop(&mut server.0, Duration::from_secs(10)), Some(0));
        let mut log = String::new();
        server.0.stdout.take().unwrap().read_to_string(&mut log).unwrap();
        let lines: Vec<serde_json::Value> =
            log.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
        for message in ["serving", "ready", "connection ended with an error"] {
            assert!(
                lines.iter().any(|l| l["fields"]["message"] == message),
                "{threads} thread(s): no {message:?} line in {log}"
            );
        }
        for line in &lines {
            assert_eq!(line["span"]["pod"], "fraud-7d9f", "{threads} thread(s): {line}");
        }
    }
}
