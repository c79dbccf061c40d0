//! Model and reference bytes from `file://`, a plain path, or `http(s)://`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Larger downloads are refused: this server is for models that fit comfortably in memory.
const MAX_DOWNLOAD_BYTES: usize = 1 << 30;
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, PartialEq, Eq)]
enum Source<'a> {
    Path(&'a str),
    Http(&'a str),
}

fn classify(uri: &str) -> Result<Source<'_>> {
    if let Some(path) = uri.strip_prefix("file://") {
        return Ok(Source::Path(path));
    }
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return Ok(Source::Http(uri));
    }
    match uri.split_once("://") {
        Some((scheme, _)) => Err(Error::Fetch {
            uri: uri.to_owned(),
            reason: format!(
                "unsupported scheme {scheme}:// (use file://, a path, http:// or https://)"
            ),
        }),
        None => Ok(Source::Path(uri)),
    }
}

/// Read the bytes behind `uri`, then check their SHA-256 if one is given.
pub async fn fetch(uri: &str, sha256: Option<&str>) -> Result<Vec<u8>> {
    let bytes = match classify(uri)? {
        Source::Path(path) => tokio::fs::read(path)
            .await
            .map_err(|e| Error::Fetch { uri: uri.to_owned(), reason: e.to_string() })?,
        Source::Http(url) => {
            tokio::time::timeout(DOWNLOAD_TIMEOUT, download(url)).await.map_err(|_| {
                Error::Fetch { uri: uri.to_owned(), reason: "download timed out".into() }
            })??
        }
    };
    if let Some(want) = sha256 {
        verify_sha256(uri, &bytes, want)?;
    }
    Ok(bytes)
}

pub fn verify_sha256(uri: &str, bytes: &[u8], want: &str) -> Result<()> {
    let got = hex(&Sha256::digest(bytes));
    if got.eq_ignore_ascii_case(want.trim()) {
        Ok(())
    } else {
        Err(Error::Fetch {
            uri: uri.to_owned(),
            reason: format!("SHA-256 mismatch: expected {}, got {got}", want.trim()),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn download(url: &str) -> Result<Vec<u8>> {
    let fail = |reason: String| Error::Fetch { uri: url.to_owned(), reason };
    let provider = rustls::crypto::ring::default_provider();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| fail(format!("TLS setup: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let mut current = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        let uri: hyper::Uri = current.parse().map_err(|e| fail(format!("bad URL: {e}")))?;
        let resp =
            client.get(uri.clone()).await.map_err(|e| fail(format!("request failed: {e}")))?;
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| fail(format!("HTTP {status} without a Location header")))?;
            current = redirect_target(&uri, location);
            continue;
        }
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}")));
        }
        let body = Limited::new(resp.into_body(), MAX_DOWNLOAD_BYTES)
            .collect()
            .await
            .map_err(|e| fail(format!("reading body: {e}")))?;
        return Ok(body.to_bytes().to_vec());
    }
    Err(fail(format!("more than {MAX_REDIRECTS} redirects")))
}

fn redirect_target(base: &hyper::Uri, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
    format!("{scheme}://{authority}{location}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(classify("file:///m/model.onnx").unwrap(), Source::Path("/m/model.onnx"));
        assert_eq!(classify("/m/model.onnx").unwrap(), Source::Path("/m/model.onnx"));
        assert_eq!(classify("https://x/m").unwrap(), Source::Http("https://x/m"));
        let err = classify("s3://bucket/m").unwrap_err().to_string();
        assert!(err.contains("s3://"), "{err}");
    }

    #[test]
    fn sha256_is_checked() {
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(verify_sha256("x", b"", empty).is_ok());
        assert!(verify_sha256("x", b"", &empty.to_uppercase()).is_ok());
        assert!(verify_sha256("x", b"a", empty).is_err());
    }

    #[test]
    fn relative_redirects_keep_the_origin() {
        let base: hyper::Uri = "http://127.0.0.1:9/a".parse().unwrap();
        assert_eq!(redirect_target(&base, "/b"), "http://127.0.0.1:9/b");
        assert_eq!(redirect_target(&base, "https://h/c"), "https://h/c");
    }
}
