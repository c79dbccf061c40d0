//! Request guards: bearer token, body limit, deadline.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
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
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::PayloadTooLarge { limit });
    }
    let collected = tokio::time::timeout_at(deadline, Limited::new(body, limit).collect())
        .await
        .map_err(|_| Error::Timeout(timeout_ms))?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Error::PayloadTooLarge { limit })
        }
        Err(e) => Err(Error::invalid(format!("could not read the request body: {e}"))),
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
