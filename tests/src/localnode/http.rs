//! HTTP forwarding shared by the Service proxy and the agent's pod proxy.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Response header naming the pod that answered.
pub const POD_HEADER: &str = "x-modelship-pod";

/// A hyper client for plain HTTP to loopback processes.
pub type HttpClient = Client<HttpConnector, Body>;

/// A keep-alive client for forwarding.
pub fn pooled_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector())
}

/// A client that opens a new connection per request, as kubelet probes do, so a restarted
/// process is never probed over a connection to its previous incarnation.
pub fn unpooled_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector())
}

fn connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector
}

/// Hop-by-hop headers belong to one connection and are not forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

/// A JSON `{"error": message}` response.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let body = serde_json::json!({ "error": message.into() }).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Sends `request` to `upstream` at `path_and_query`, streaming both bodies, with no retry, and
/// names `pod` in the response. A failure to reach the pod is a 502.
pub async fn forward(
    client: &HttpClient,
    request: Request<Body>,
    upstream: SocketAddr,
    path_and_query: &str,
    pod: &str,
) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    parts.uri = match Uri::try_from(format!("http://{upstream}{path_and_query}")) {
        Ok(uri) => uri,
        Err(_) => return json_error(StatusCode::BAD_REQUEST, "invalid request path"),
    };
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Ok(value) = HeaderValue::from_str(pod) {
                parts.headers.insert(POD_HEADER, value);
            }
            Response::from_parts(parts, Body::new(body))
        }
        Err(error) => {
            let message = error_chain(&error);
            tracing::warn!(%pod, %upstream, error = %message, "upstream request failed");
            json_error(StatusCode::BAD_GATEWAY, format!("pod {pod} at {upstream}: {message}"))
        }
    }
}

/// An error and its sources on one line (hyper's own message alone is often just "client error").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_standard_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }
}
