//! Request guards: bearer token, body limit, deadline.

use std::task::Poll;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::state::AppState;

pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = state.auth_token()
        && !token_matches(req.headers(), token)
    {
        let mut resp = Error::Unauthorized.into_response();
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return resp;
    }
    next.run(req).await
}

/// Constant-time comparison: the time taken says nothing about how much of a guess was right.
fn token_matches(headers: &HeaderMap, token: &[u8]) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(presented) = value.strip_prefix(b"Bearer ").or_else(|| value.strip_prefix(b"bearer "))
    else {
        return false;
    };
    presented.ct_eq(token).into()
}

/// A body over the limit is still read and thrown away, up to this many times the limit (and
/// at least [`DISCARD_AT_LEAST`] bytes), before the 413 goes out: a client that sends its whole
/// body before reading the answer (Python's urllib, for one) would otherwise have the
/// connection reset under it and never see the 413.
const DISCARD_FACTOR: usize = 4;
const DISCARD_AT_LEAST: usize = 4 << 20;

/// Read the whole body within `limit` bytes and before `deadline`.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    deadline: Instant,
    timeout_ms: u64,
) -> Result<Bytes> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let discard_up_to = limit.saturating_mul(DISCARD_FACTOR).max(DISCARD_AT_LEAST);
    if let Some(declared) = declared.filter(|&n| n > limit as u64) {
        // A client waiting for `100 Continue` has not sent the body: answer at once. A body
        // too large to discard is answered at once too, and the connection closes under it.
        if !expects_continue(headers) && declared <= discard_up_to as u64 {
            let _ = tokio::time::timeout_at(deadline, discard(body, discard_up_to)).await;
        }
        return Err(Error::PayloadTooLarge { limit });
    }
    let mut collecting = std::pin::pin!(collect(body, limit, discard_up_to));
    // A small body is usually in hand already: no timer for it.
    let first = std::future::poll_fn(|cx| Poll::Ready(collecting.as_mut().poll(cx))).await;
    if let Poll::Ready(result) = first {
        return result;
    }
    // A body that does not arrive in time is the caller's delay, not the model's: 408.
    tokio::time::timeout_at(deadline, collecting)
        .await
        .map_err(|_| Error::BodyTimeout(timeout_ms))?
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The body's bytes, refused past `limit` (after discarding the rest up to `discard_up_to`).
/// A body of one frame, the usual case, is returned without a copy.
async fn collect(mut body: Body, limit: usize, discard_up_to: usize) -> Result<Bytes> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut seen = 0_usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Error::invalid(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen > limit {
            drain(&mut body, seen, discard_up_to).await;
            return Err(Error::PayloadTooLarge { limit });
        }
        if let Some(buf) = joined.as_mut() {
            buf.extend_from_slice(&data);
        } else if let Some(head) = first.take() {
            let mut buf = BytesMut::with_capacity(head.len() + data.len());
            buf.extend_from_slice(&head);
            buf.extend_from_slice(&data);
            joined = Some(buf);
        } else {
            first = Some(data);
        }
    }
    Ok(match (first, joined) {
        (_, Some(buf)) => buf.freeze(),
        (Some(head), None) => head,
        (None, None) => Bytes::new(),
    })
}

/// Read and drop the whole body, or its first `up_to` bytes.
async fn discard(mut body: Body, up_to: usize) {
    drain(&mut body, 0, up_to).await;
}

async fn drain(body: &mut Body, mut seen: usize, up_to: usize) {
    while seen <= up_to {
        match body.frame().await {
            Some(Ok(frame)) => {
                seen = seen.saturating_add(frame.data_ref().map_or(0, Bytes::len));
            }
            Some(Err(_)) | None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn bearer_tokens() {
        assert!(token_matches(&headers("Bearer s3cret"), b"s3cret"));
        assert!(!token_matches(&headers("Bearer s3cre"), b"s3cret"));
        assert!(!token_matches(&headers("Basic s3cret"), b"s3cret"));
        assert!(!token_matches(&HeaderMap::new(), b"s3cret"));
    }
}
