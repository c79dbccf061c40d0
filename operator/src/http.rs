//! A small HTTP/1 client for scraping serving pods' metrics.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::{Error, Result};

/// Largest metrics page read; serving pods expose a few kilobytes.
const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(1)));
        HttpClient { inner: Client::builder(TokioExecutor::new()).build(connector) }
    }
}

impl HttpClient {
    pub async fn get_text(&self, url: &str) -> Result<String> {
        let uri: hyper::Uri = url.parse().map_err(|e| Error::Http(format!("{url}: {e}")))?;
        let response = self.inner.get(uri).await.map_err(|e| Error::Http(e.to_string()))?;
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
}
