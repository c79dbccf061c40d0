//! The prediction log's HTTP sink: the pending JSON lines, taken by the writer thread, sent
//! to a collector as JSON arrays.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{Counters, Pending, Shared};

/// Records per POST to a collector, at most.
pub const HTTP_BATCH: usize = 500;
/// A partial batch is sent after this long.
pub const HTTP_FLUSH: Duration = Duration::from_secs(1);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// The first `max` lines of `lines` as one JSON array, how many bytes of `lines` they took
/// and how many records it holds.
pub(super) fn json_array(lines: &[u8], max: usize) -> (Vec<u8>, usize, usize) {
    let mut body = Vec::with_capacity(lines.len().min(max * 256) + 2);
    body.push(b'[');
    let (mut used, mut count) = (0, 0);
    for line in lines.split_inclusive(|&b| b == b'\n').take(max) {
        if count > 0 {
            body.push(b',');
        }
        body.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
        used += line.len();
        count += 1;
    }
    body.push(b']');
    (body, used, count)
}

/// The HTTP writer: batches of up to [`HTTP_BATCH`] records, sent when full or
/// [`HTTP_FLUSH`] after their first record; a failed batch is counted and dropped. While a
/// batch is on its way, new records wait in the pending bytes (and are dropped past their
/// limit).
pub(super) fn post_batches(shared: &Shared, url: &str, counters: &Counters) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "prediction log: no runtime for the HTTP sink");
            return;
        }
    };
    let https = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
    {
        Ok(builder) => builder.https_or_http().enable_http1().build(),
        Err(error) => {
            tracing::error!(%error, "prediction log: TLS setup failed");
            return;
        }
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let mut taken = Pending::default();
    // Records taken but not yet sent, and when the oldest of them was taken.
    let mut waiting = Pending::default();
    let mut first_at = Instant::now();
    loop {
        let closed = shared.wait_and_take(&mut taken);
        if taken.records > 0 {
            if waiting.records == 0 {
                first_at = Instant::now();
            }
            waiting.lines.extend_from_slice(&taken.lines);
            waiting.records += taken.records;
            taken.clear();
        }
        while waiting.records >= HTTP_BATCH as u64
            || (waiting.records > 0 && (closed || first_at.elapsed() >= HTTP_FLUSH))
        {
            let (body, used, count) = json_array(&waiting.lines, HTTP_BATCH);
            waiting.lines.drain(..used);
            waiting.records -= count as u64;
            match runtime.block_on(post(&client, url, body)) {
                Ok(()) => {
                    counters.written.inc_by(count as u64);
                }
                Err(why) => {
                    tracing::warn!(
                        why,
                        records = count,
                        "prediction log: the collector did not take a batch"
                    );
                    counters.failed.inc_by(count as u64);
                }
            };
            first_at = Instant::now();
        }
        if closed {
            return;
        }
    }
}

async fn post<C>(client: &Client<C, Full<Bytes>>, url: &str, body: Vec<u8>) -> Result<(), String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let request = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad URL: {e}"))?;
    let response = tokio::time::timeout(HTTP_TIMEOUT, client.request(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let _ = response.into_body().collect().await;
    if status.is_success() { Ok(()) } else { Err(format!("HTTP {status}")) }
}
