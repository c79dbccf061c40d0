//! An HTTP fuzzer against the live server process: seeded random methods, paths, headers and
//! bodies (mutations of real requests and plain noise), each on its own connection. Whatever
//! the caller sends, the answer is never a 5xx, every well-framed request gets an answer, the
//! process stays up and healthy, and no caller-chosen text becomes a metric label.
//!
//! `MODELSHIP_HTTP_FUZZ_SEED` repeats a run (the seed is printed); `MODELSHIP_HTTP_FUZZ_REQUESTS`
//! changes how many requests are sent (default 3000).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::process::{Guard, free_addr, http, spawn, stop, wait_ready};

/// A small xorshift generator: reproducible draws from a printed seed.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO", "get", "M-SEARCH",
];

const PATHS: &[&str] = &[
    "/",
    "/health",
    "/ready",
    "/models",
    "/metrics",
    "/predict",
    "/feedback",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models",
    "/v2/models/fraud",
    "/v2/models/fraud/ready",
    "/v2/models/fraud/infer",
    "/v2/models/fraud/versions/1",
    "/v2/models/fraud/versions/1/ready",
    "/v2/models/fraud/versions/1/infer",
    "/v2/models/fraud/versions/9/infer",
    "/v2/models/other/infer",
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "",
    "\u{1}junk",
];

/// Real request bodies of every route, for mutation.
fn seeds() -> Vec<Vec<u8>> {
    let row = common::rows("inputs_binary.json", 2);
    [
        serde_json::json!({"features": row[0]}),
        serde_json::json!({"instances": row, "model": "fraud", "model_version": "1", "id": "a"}),
        serde_json::json!({"inputs": [{"name": "X", "shape": [1, row[0].len()], "datatype": "FP32",
                                       "data": row[0]}], "id": "b"}),
        serde_json::json!({"id": "a", "labels": [1]}),
        serde_json::json!({"features": [1e308, -0.0, 5e-324]}),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .collect()
}

/// A body: a mutated real one most of the time, noise or an extreme otherwise.
fn body(draws: &mut Draws, seeds: &[Vec<u8>]) -> Vec<u8> {
    match draws.below(10) {
        0 => {
            let n = draws.below(512);
            draws.bytes(n)
        }
        1 => Vec::new(),
        2 => {
            // Deep nesting, long arrays, huge numbers.
            let depth = draws.below(5000);
            let mut b = b"{\"features\":".to_vec();
            b.extend(std::iter::repeat_n(b'[', depth));
            b.extend_from_slice(b"1e99999");
            b.extend(std::iter::repeat_n(b']', depth));
            b.push(b'}');
            b
        }
        3 => {
            let n = draws.below(40_000);
            let mut b = b"{\"features\":[".to_vec();
            for i in 0..n {
                b.extend_from_slice(if i + 1 < n { b"1," } else { b"1" });
            }
            b.extend_from_slice(b"]}");
            b
        }
        _ => {
            let mut b = draws.pick(seeds).clone();
            for _ in 0..=draws.below(6) {
                mutate(draws, &mut b);
            }
            b
        }
    }
}

fn mutate(draws: &mut Draws, b: &mut Vec<u8>) {
    const TOKENS: &[&[u8]] = &[
        b"null",
        b"NaN",
        b"-1",
        b"1e309",
        b"\"\"",
        b"[]",
        b"{}",
        b",",
        b"\"features\"",
        b"\"\\u0000\"",
        b"\"inputs\"",
        b"\"shape\"",
        b"[[1,2],[3]]",
        b"\xff\xfe",
        b"9223372036854775808",
    ];
    let at = draws.below(b.len() + 1);
    match draws.below(5) {
        0 if !b.is_empty() => {
            let i = draws.below(b.len());
            b[i] = draws.next() as u8;
        }
        1 => b.truncate(at),
        2 => {
            let token = draws.pick(TOKENS);
            b.splice(at..at, token.iter().copied());
        }
        3 if !b.is_empty() => {
            let end = (at + draws.below(16)).min(b.len());
            b.drain(at.min(end)..end);
        }
        _ => {
            let copy = b[at..].to_vec();
            b.extend_from_slice(&copy);
        }
    }
}

fn path(draws: &mut Draws) -> String {
    let mut p = draws.pick(PATHS).to_string();
    match draws.below(8) {
        0 => p.push_str(&format!("/{}", draws.next())),
        1 => p.push_str("?model=%ff%00&x"),
        2 => p = format!("/v2/models/{}/infer", "%41".repeat(draws.below(300))),
        3 => p.push_str("/../../etc/passwd"),
        4 => p = format!("/{}", "a".repeat(draws.below(6000))),
        5 => p = p.replace('/', "//"),
        _ => {}
    }
    p
}

/// One request's bytes; `framed` says whether its framing is valid HTTP/1.1 (then an answer
/// is owed).
fn request(draws: &mut Draws, seeds: &[Vec<u8>]) -> (Vec<u8>, bool) {
    let method = draws.pick(METHODS).to_string();
    let body = body(draws, seeds);
    let chunked = draws.chance(15);
    let mut head =
        format!("{method} {} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n", path(draws));
    let content_type = draws.pick(CONTENT_TYPES);
    if !content_type.is_empty() {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if draws.chance(20) {
        head.push_str(&format!("Authorization: Bearer {}\r\n", "x".repeat(draws.below(200))));
    }
    for i in 0..draws.below(30) {
        head.push_str(&format!("X-Fuzz-{i}: {}\r\n", "v".repeat(draws.below(2000))));
    }
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    }
    let mut bytes = head.into_bytes();
    if chunked {
        for chunk in body.chunks(1 + draws.below(4096)) {
            bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            bytes.extend_from_slice(chunk);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
    } else {
        bytes.extend_from_slice(&body);
    }
    // Now and then, broken framing or a broken request line: no answer is owed, only survival.
    if draws.chance(3) {
        let cut = draws.below(bytes.len());
        bytes.truncate(cut);
        return (bytes, false);
    }
    if draws.chance(2) {
        let n = 1 + draws.below(300);
        return (draws.bytes(n), false);
    }
    (bytes, true)
}

/// Sends raw bytes and returns the status code of the answer, if one came. Broken requests
/// end with the client closing its side, as a client that gave up would.
fn send(addr: SocketAddr, bytes: &[u8], framed: bool) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    // The server may answer (413, 400) and close before taking every byte: fine.
    let _ = stream.write_all(bytes);
    if !framed {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Label values of every series on a metrics page, by label name.
fn label_values(page: &str) -> BTreeSet<(String, String)> {
    let mut values = BTreeSet::new();
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else { continue };
        let Some((labels, _)) = rest.split_once('}') else { continue };
        for pair in labels.split(',') {
            if let Some((name, value)) = pair.split_once('=') {
                values.insert((name.to_string(), value.trim_matches('"').to_string()));
            }
        }
    }
    values
}

#[test]
fn random_requests_never_get_a_5xx_or_stop_the_server() {
    let seed = std::env::var("MODELSHIP_HTTP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let count: usize = std::env::var("MODELSHIP_HTTP_FUZZ_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    println!("HTTP fuzzing with MODELSHIP_HTTP_FUZZ_SEED={seed}, {count} requests");
    let addr = free_addr();
    let mut server = Guard(spawn(
        addr,
        &[
            ("MODELSHIP_MAX_BODY_BYTES", (64 * 1024).to_string()),
            ("MODELSHIP_HEADER_READ_TIMEOUT_MS", "2000".into()),
            ("MODELSHIP_REQUEST_TIMEOUT_MS", "3000".into()),
            ("MODELSHIP_DRAIN_SECONDS", "0".into()),
        ],
    ));
    wait_ready(addr, &mut server.0);
    let known = label_values(&http(addr, "GET", "/metrics", "").unwrap().1);
    let seeds = seeds();
    let mut draws = Draws(seed | 1);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..count {
        let (bytes, framed) = request(&mut draws, &seeds);
        let status = send(addr, &bytes, framed);
        assert!(
            matches!(server.0.try_wait(), Ok(None)),
            "the server exited on request {i} (seed {seed}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        );
        if let Some(status) = status {
            *statuses.entry(status).or_default() += 1;
            assert!(
                status < 500,
                "request {i} (seed {seed}) got {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            );
        } else {
            assert!(
                !framed,
                "request {i} (seed {seed}) got no answer: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            );
        }
    }
    println!("answers by status: {statuses:?}");
    assert!(statuses.get(&200).copied().unwrap_or(0) > count / 50, "too few valid requests");
    assert_eq!(http(addr, "GET", "/health", "").unwrap().0, 200);
    assert_eq!(http(addr, "GET", "/ready", "").unwrap().0, 200);
    // Label values are the server's own (models, versions, statuses, buckets), never the
    // caller's text.
    let after = label_values(&http(addr, "GET", "/metrics", "").unwrap().1);
    let models: BTreeSet<&str> =
        after.iter().filter(|(name, _)| name == "model").map(|(_, v)| v.as_str()).collect();
    assert_eq!(models, BTreeSet::from(["fraud"]), "{after:?}");
    let new: Vec<&(String, String)> =
        after.difference(&known).filter(|(name, _)| name != "status").collect();
    assert!(new.is_empty(), "label values the fuzzing added: {new:?}");
    assert_eq!(stop(&mut server.0, Duration::from_secs(10)), Some(0), "exit code after SIGTERM");
}
