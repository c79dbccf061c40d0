//! Small HTTP/1 clients: one for scraping serving pods' metrics, one for remote APIs that may
//! need TLS and a bearer token (a Prometheus server).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// Largest body read; serving pods expose a few kilobytes, a PromQL answer is smaller.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// A peer that does not accept the connection within this long is down.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        HttpClient { inner: Client::builder(TokioExecutor::new()).build(connector) }
    }
}

impl HttpClient {
    pub async fn get_text(&self, url: &str) -> Result<String> {
        let uri: hyper::Uri = url.parse().map_err(|e| Error::Http(format!("{url}: {e}")))?;
        let response = self.inner.get(uri).await.map_err(|e| Error::Http(e.to_string()))?;
        text(url, response).await
    }
}

/// A client for a remote API over http or https, trusting the given CA certificates or else
/// the public roots, and sending a bearer token when it has one.
#[derive(Clone)]
pub struct ApiClient {
    inner: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    bearer: Option<HeaderValue>,
}

impl ApiClient {
    /// `ca_pem`: PEM certificates to trust instead of the public roots.
    pub fn new(ca_pem: Option<&[u8]>, token: Option<&str>) -> Result<Self> {
        let provider = || rustls::crypto::ring::default_provider();
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match ca_pem {
            Some(pem) => {
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::Http(format!("TLS setup: {e}")))?
                    .with_root_certificates(trusted(pem)?)
                    .with_no_client_auth();
                builder.with_tls_config(config)
            }
            None => builder
                .with_provider_and_webpki_roots(provider())
                .map_err(|e| Error::Http(format!("TLS setup: {e}")))?,
        };
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.enforce_http(false);
        let https = builder.https_or_http().enable_http1().wrap_connector(http);
        let bearer = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| Error::Http("the token holds characters a header cannot carry".into()))?
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        Ok(Self { inner: Client::builder(TokioExecutor::new()).build(https), bearer })
    }

    pub async fn get_text(&self, url: &str) -> Result<String> {
        let uri: hyper::Uri = url.parse().map_err(|e| Error::Http(format!("{url}: {e}")))?;
        let mut request = hyper::Request::get(uri);
        if let Some(bearer) = &self.bearer {
            request = request.header(AUTHORIZATION, bearer.clone());
        }
        let request = request.body(Empty::new()).map_err(|e| Error::Http(e.to_string()))?;
        let response = self.inner.request(request).await.map_err(|e| Error::Http(chain(&e)))?;
        text(url, response).await
    }
}

/// The certificates of a PEM bundle, as the only roots trusted.
fn trusted(pem: &[u8]) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| Error::Http(format!("ca.crt: {e}")))?;
        roots.add(cert).map_err(|e| Error::Http(format!("ca.crt: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::Http("ca.crt holds no PEM certificate".into()));
    }
    Ok(roots)
}

/// An error with its causes: a TLS failure hides under "client error (Connect)".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text = format!("{text}: {inner}");
        cause = inner.source();
    }
    text
}

/// A successful response's body as text, read up to [`MAX_BODY`].
async fn text(url: &str, response: hyper::Response<Incoming>) -> Result<String> {
    if !response.status().is_success() {
        return Err(Error::Http(format!("{url} answered {}", response.status())));
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| Error::Http(e.to_string()))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|e| Error::Http(e.to_string()))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A one-request HTTP server on 127.0.0.1: answers `ok` and hands back the request head.
    async fn one_request() -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/v1/query", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before the end of the head");
                head.extend_from_slice(&buf[..n]);
            }
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
            socket.write_all(answer).await.unwrap();
            String::from_utf8(head).unwrap()
        });
        (url, served)
    }

    #[tokio::test]
    async fn the_token_goes_as_a_bearer_header() {
        let (url, served) = one_request().await;
        let client = ApiClient::new(None, Some("s3cret")).unwrap();
        assert_eq!(client.get_text(&url).await.unwrap(), "ok");
        let head = served.await.unwrap().to_ascii_lowercase();
        assert!(head.contains("\r\nauthorization: bearer s3cret\r\n"), "{head}");
    }

    #[tokio::test]
    async fn without_a_token_no_authorization_is_sent() {
        let (url, served) = one_request().await;
        let client = ApiClient::new(None, None).unwrap();
        assert_eq!(client.get_text(&url).await.unwrap(), "ok");
        assert!(!served.await.unwrap().to_ascii_lowercase().contains("authorization"));
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_refused() {
        let refused = |pem: &[u8]| ApiClient::new(Some(pem), None).err().unwrap().to_string();
        assert!(refused(b"not a certificate").contains("ca.crt holds no PEM certificate"));
        let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(refused(broken).contains("ca.crt"), "{}", refused(broken));
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused() {
        let error = ApiClient::new(None, Some("line\nbreak")).err().unwrap().to_string();
        assert!(error.contains("the token holds characters a header cannot carry"), "{error}");
    }
}
