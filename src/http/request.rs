//! Turns a hyper request into a fully read [`Request`]: head checks, body budget, body read.
//!
//! ```text
//!   head ─▶ check_head (415 · 413) ─▶ lane check (503) ─▶ reserve budget ≤ deadline (503)
//!        ─▶ collect body ≤ deadline (408 · 413 · 400) ─▶ (Request, Reservation)
//! ```
//!
//! One deadline, `body_read_timeout` after the head arrived, covers both the wait for budget
//! and the body itself, so a request is answered (or refused) at most `header_read_timeout +
//! body_read_timeout` after its first byte, plus handler time. The body is copied into one
//! buffer as it arrives: sized exactly from `Content-Length`, or grown by doubling (capped at
//! `max_body_bytes`) for chunked bodies, so tiny chunks cannot pin hyper's read buffers.
//! Must not: call the handler, or read a byte of a body before its budget is reserved.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::header::CONTENT_ENCODING;
use hyper::{HeaderMap, StatusCode};
use std::net::SocketAddr;
use tokio::time::Instant;

use super::budget::{BodyBudget, Reservation};
use super::{Request, Response};

/// Starting capacity for a chunked body of unknown length.
const CHUNKED_INITIAL_BYTES: usize = 16 << 10;

/// How long a client refused for overload is asked to wait before retrying (`Retry-After`).
pub(super) const RETRY_AFTER_SECONDS: u32 = 1;

/// Which admission lane a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// Within `max_connections`: everything is served.
    Normal,
    /// Beyond it, within `reserve_connections`: only requests without a body (probes, metrics).
    Reserve,
}

/// What reading a request needs besides the request.
pub(super) struct ReadContext<'a> {
    pub(super) max_body_bytes: usize,
    pub(super) body_read_timeout: Duration,
    pub(super) budget: &'a BodyBudget,
    pub(super) lane: Lane,
}

/// Why the transport answered a request itself instead of calling the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rejection {
    /// A `Content-Encoding` other than identity (the value as sent).
    UnsupportedEncoding(String),
    /// The body is larger than the limit (bytes).
    TooLarge(usize),
    /// The body did not arrive within the timeout.
    Timeout(Duration),
    /// The body could not be read (malformed chunking, client gone).
    BadBody(String),
    /// The in-flight body budget stayed exhausted for the whole timeout.
    BudgetExhausted(Duration),
    /// A body arrived on the reserve lane, which serves body-less requests only.
    ReserveLane,
}

impl Rejection {
    /// The answer to send; the connection is closed after it (the body may be unread).
    pub(super) fn response(&self) -> Response {
        let (status, message) = match self {
            Self::UnsupportedEncoding(encoding) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {encoding:?}: send the body uncompressed"),
            ),
            Self::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds the limit of {limit} bytes"),
            ),
            Self::Timeout(after) => (
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {} ms", after.as_millis()),
            ),
            Self::BadBody(reason) => (
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {reason}"),
            ),
            Self::BudgetExhausted(after) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "overloaded: no room for the request body within {} ms; retry later",
                    after.as_millis()
                ),
            ),
            Self::ReserveLane => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded: at the connection limit only requests without a body are served; \
                 retry later"
                    .to_owned(),
            ),
        };
        Response::error(status, message)
    }

    /// `Retry-After` seconds for overload answers; `None` when retrying cannot help.
    pub(super) fn retry_after(&self) -> Option<u32> {
        matches!(self, Self::BudgetExhausted(_) | Self::ReserveLane).then_some(RETRY_AFTER_SECONDS)
    }
}

/// Reads the whole request within the limits. The [`Reservation`] must be kept until the
/// handler is done with the body.
pub(super) async fn read_request(
    request: hyper::Request<Incoming>,
    remote: SocketAddr,
    ctx: &ReadContext<'_>,
) -> Result<(Request, Reservation), Rejection> {
    let deadline = Instant::now() + ctx.body_read_timeout;
    let (parts, body) = request.into_parts();
    check_head(&parts.headers, body.size_hint().lower(), ctx.max_body_bytes)?;
    let size = reservation_size(&body, ctx.max_body_bytes);
    if size > 0 && ctx.lane == Lane::Reserve {
        return Err(Rejection::ReserveLane);
    }
    let reservation = ctx
        .budget
        .reserve(size, deadline)
        .await
        .map_err(|_| Rejection::BudgetExhausted(ctx.body_read_timeout))?;
    let expected = body
        .size_hint()
        .exact()
        .and_then(|n| usize::try_from(n).ok());
    let body = match tokio::time::timeout_at(deadline, collect(body, expected, ctx.max_body_bytes))
        .await
    {
        Ok(result) => result?,
        Err(_elapsed) => return Err(Rejection::Timeout(ctx.body_read_timeout)),
    };
    let request = Request {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
        remote: Some(remote),
    };
    Ok((request, reservation))
}

/// Bytes to reserve: none without a body, the declared length, or the cap when unknown.
fn reservation_size(body: &Incoming, max_body_bytes: usize) -> usize {
    if body.is_end_stream() {
        return 0;
    }
    body.size_hint()
        .exact()
        .and_then(|n| usize::try_from(n).ok())
        .map_or(max_body_bytes, |n| n.min(max_body_bytes))
}

/// Rejects what can be rejected from the head alone, before reading any body byte.
/// `body_at_least` is the body's known minimum size (the `Content-Length`, when sent).
pub(super) fn check_head(
    headers: &HeaderMap,
    body_at_least: u64,
    max_body_bytes: usize,
) -> Result<(), Rejection> {
    if let Some(encoding) = unsupported_encoding(headers) {
        return Err(Rejection::UnsupportedEncoding(encoding));
    }
    if body_at_least > u64::try_from(max_body_bytes).unwrap_or(u64::MAX) {
        return Err(Rejection::TooLarge(max_body_bytes));
    }
    Ok(())
}

/// The `Content-Encoding` value when it names anything but identity; we never decompress.
fn unsupported_encoding(headers: &HeaderMap) -> Option<String> {
    headers.get_all(CONTENT_ENCODING).iter().find_map(|value| {
        let text = String::from_utf8_lossy(value.as_bytes());
        let only_identity = text
            .split(',')
            .map(str::trim)
            .all(|coding| coding.is_empty() || coding.eq_ignore_ascii_case("identity"));
        (!only_identity).then(|| text.into_owned())
    })
}

/// Copies the body's data frames into one buffer of at most `max` bytes (trailers ignored).
async fn collect(
    mut body: Incoming,
    expected: Option<usize>,
    max: usize,
) -> Result<Bytes, Rejection> {
    let initial = expected.unwrap_or(CHUNKED_INITIAL_BYTES).min(max);
    let mut buf = BytesMut::with_capacity(initial);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| Rejection::BadBody(err.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let needed = buf.len() + data.len();
        if needed > max {
            return Err(Rejection::TooLarge(max));
        }
        if needed > buf.capacity() {
            buf = grown(buf, needed, max);
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// A copy of `buf` with room for `needed` bytes: double the capacity, never above `max`.
/// Allocating exactly (rather than `BytesMut::reserve`, which may round past `max`) keeps the
/// buffer within what the budget reserved.
fn grown(buf: BytesMut, needed: usize, max: usize) -> BytesMut {
    let capacity = needed.max(buf.capacity().saturating_mul(2)).min(max);
    let mut bigger = BytesMut::with_capacity(capacity);
    bigger.extend_from_slice(&buf);
    bigger
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn identity_and_absent_encodings_pass() {
        assert_eq!(check_head(&headers(&[]), 0, 10), Ok(()));
        let identity = headers(&[
            ("content-encoding", "Identity"),
            ("content-encoding", " identity, "),
        ]);
        assert_eq!(check_head(&identity, 10, 10), Ok(()));
        // Accept-Encoding concerns the reply only and is never a reason to reject.
        assert_eq!(
            check_head(&headers(&[("accept-encoding", "gzip")]), 0, 10),
            Ok(())
        );
    }

    #[test]
    fn compressed_bodies_are_refused_with_the_coding_named() {
        let gzip = headers(&[
            ("content-encoding", "identity"),
            ("content-encoding", "gzip"),
        ]);
        let rejection = check_head(&gzip, 0, 10);
        assert_eq!(
            rejection,
            Err(Rejection::UnsupportedEncoding("gzip".into()))
        );
        let reply = Rejection::UnsupportedEncoding("gzip".into()).response();
        assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(String::from_utf8_lossy(&reply.body).contains("gzip"));
    }

    #[test]
    fn declared_length_over_the_cap_is_refused_before_reading() {
        assert_eq!(
            check_head(&headers(&[]), 11, 10),
            Err(Rejection::TooLarge(10))
        );
        assert_eq!(
            Rejection::TooLarge(10).response().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn overload_rejections_are_503_with_retry_after_and_others_are_not() {
        for overload in [
            Rejection::BudgetExhausted(Duration::from_millis(5)),
            Rejection::ReserveLane,
        ] {
            assert_eq!(overload.response().status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(overload.retry_after(), Some(RETRY_AFTER_SECONDS));
        }
        assert_eq!(Rejection::TooLarge(1).retry_after(), None);
        assert_eq!(Rejection::Timeout(Duration::ZERO).retry_after(), None);
    }

    #[test]
    fn growth_doubles_but_never_passes_the_cap() {
        let mut buf = BytesMut::with_capacity(4);
        buf.extend_from_slice(b"abcd");
        let doubled = grown(buf, 5, 100);
        assert!(doubled.capacity() >= 8 && doubled.capacity() <= 100);
        assert_eq!(&doubled[..], b"abcd");
        let capped = grown(doubled, 60, 70);
        assert!(
            capped.capacity() >= 60 && capped.capacity() <= 70,
            "{}",
            capped.capacity()
        );
    }
}
