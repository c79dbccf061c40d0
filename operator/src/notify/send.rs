//! Sending notifications: read the webhook's Secret, POST the body, retry a receiver that is
//! down with a bounded backoff. Each notification is sent on a task of its own, so a slow or
//! dead receiver never holds a reconcile; at most [`MAX_IN_FLIGHT`] are in flight, beyond
//! that new ones are dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tracing::{debug, info, warn};

use super::{EVENT_HEADER, Notification, SIGNATURE_HEADER, hmac_sha256};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The Secret key holding the webhook's URL.
pub const URL_KEY: &str = "url";
/// The Secret key holding the HMAC key, when bodies are signed.
pub const HMAC_KEY: &str = "hmacKey";
/// Attempts per notification; between them the wait doubles from `FIRST_RETRY`.
pub const ATTEMPTS: u32 = 6;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(8);
/// Notifications being sent at once, across all models.
pub const MAX_IN_FLIGHT: usize = 256;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The wait before attempt `attempt` (1-based; the first attempt does not wait).
pub fn retry_delay(attempt: u32) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    (FIRST_RETRY * 2u32.saturating_pow(attempt - 2)).min(MAX_RETRY)
}

/// What one attempt's outcome means for the next.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Delivered,
    /// The receiver may recover (no answer, 5xx, 408, 429).
    Retry(String),
    /// Sending again will not help (another 4xx, a bad URL).
    GiveUp(String),
}

#[derive(Clone)]
pub struct Notifier {
    client: Client,
    http: HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    metrics: Arc<Metrics>,
    in_flight: Arc<AtomicUsize>,
}

impl Notifier {
    pub fn new(client: Client, metrics: Arc<Metrics>) -> Result<Self> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| Error::Http(format!("TLS setup: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let http = HttpClient::builder(TokioExecutor::new()).build(https);
        Ok(Notifier { client, http, metrics, in_flight: Arc::default() })
    }

    /// Send `notifications` of a model in `namespace` to the webhook its Secret names, in the
    /// background.
    pub fn send(&self, namespace: &str, secret: &str, notifications: Vec<Notification>) {
        if notifications.is_empty() {
            return;
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            for n in &notifications {
                warn!(
                    id = n.id,
                    event = n.event.as_str(),
                    "too many notifications in flight; dropped"
                );
                self.metrics.count_notification("dropped");
            }
            return;
        }
        let this = self.clone();
        let (namespace, secret) = (namespace.to_string(), secret.to_string());
        tokio::spawn(async move {
            // One model's notifications go in order.
            for notification in notifications {
                let outcome = this.deliver(&namespace, &secret, &notification).await;
                this.metrics.count_notification(outcome);
            }
            this.in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }

    async fn deliver(
        &self,
        namespace: &str,
        secret: &str,
        notification: &Notification,
    ) -> &'static str {
        let (id, event) = (notification.id, notification.event.as_str());
        let target = match self.target(namespace, secret).await {
            Ok(target) => target,
            Err(error) => {
                warn!(%error, id, event, secret, "cannot read the webhook Secret; not sent");
                return "failed";
            }
        };
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            tokio::time::sleep(retry_delay(attempt)).await;
            match self.post(&target, notification).await {
                Attempt::Delivered => {
                    info!(id, event, attempt, "notification sent");
                    return "sent";
                }
                Attempt::GiveUp(why) => {
                    warn!(id, event, attempt, why, "the webhook refused the notification");
                    return "failed";
                }
                Attempt::Retry(why) => {
                    debug!(id, event, attempt, why, "webhook not reached; retrying");
                    last = why;
                }
            }
        }
        warn!(id, event, attempts = ATTEMPTS, last, "webhook unreachable; notification dropped");
        "failed"
    }

    /// The URL and HMAC key from the Secret.
    async fn target(&self, namespace: &str, secret: &str) -> Result<Target> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = api.get(secret).await?;
        let data = secret.data.unwrap_or_default();
        let text =
            |key: &str| data.get(key).map(|v| String::from_utf8_lossy(&v.0).trim().to_string());
        let url = text(URL_KEY).ok_or(Error::MissingField("the webhook Secret's url key"))?;
        Ok(Target { url, hmac_key: text(HMAC_KEY).filter(|k| !k.is_empty()) })
    }

    async fn post(&self, target: &Target, notification: &Notification) -> Attempt {
        let uri: hyper::Uri = match target.url.parse() {
            Ok(uri) => uri,
            Err(error) => return Attempt::GiveUp(format!("bad URL: {error}")),
        };
        let mut request = hyper::Request::post(uri)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(EVENT_HEADER, notification.event.as_str());
        if let Some(key) = &target.hmac_key {
            let signature = hmac_sha256(key.as_bytes(), notification.body.as_bytes());
            request = request.header(SIGNATURE_HEADER, format!("sha256={signature}"));
        }
        let request = match request.body(Full::new(Bytes::from(notification.body.clone()))) {
            Ok(request) => request,
            Err(error) => return Attempt::GiveUp(error.to_string()),
        };
        let response = match tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request)).await
        {
            Err(_) => return Attempt::Retry("timed out".into()),
            Ok(Err(error)) => return Attempt::Retry(error.to_string()),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        // Read the body so the connection can be reused.
        let _ = response.into_body().collect().await;
        classify(status.as_u16())
    }
}

struct Target {
    url: String,
    hmac_key: Option<String>,
}

fn classify(status: u16) -> Attempt {
    match status {
        200..=299 => Attempt::Delivered,
        408 | 429 | 500..=599 => Attempt::Retry(format!("HTTP {status}")),
        _ => Attempt::GiveUp(format!("HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_and_stay_bounded() {
        let waits: Vec<u64> = (1..=ATTEMPTS).map(|a| retry_delay(a).as_millis() as u64).collect();
        assert_eq!(waits, [0, 500, 1000, 2000, 4000, 8000]);
        let total: Duration = (1..=ATTEMPTS).map(retry_delay).sum();
        assert!(total < Duration::from_secs(20), "a dead receiver is given up on: {total:?}");
    }

    #[test]
    fn which_answers_are_retried() {
        assert_eq!(classify(204), Attempt::Delivered);
        assert!(matches!(classify(503), Attempt::Retry(_)));
        assert!(matches!(classify(429), Attempt::Retry(_)));
        assert!(matches!(classify(404), Attempt::GiveUp(_)));
    }
}
