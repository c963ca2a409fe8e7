//! Early answers that keep the connection usable. A request refused before
//! its body is read (a 429, 401/403, 413, a 400 on the path) leaves the body
//! unread; hyper then drains only what it already buffered and otherwise
//! closes the keep-alive connection after the answer *without* saying
//! `Connection: close`, so a client that reuses it fails. Clients that send
//! the headers and the body in separate writes (Python's `http.client`, …)
//! hit this all the time.
//!
//! [`guard`] wraps every request body in a [`Tracked`] body that, when
//! dropped before its end, hands the remainder back instead of letting
//! hyper see it dropped. After the answer, a small remainder is read and
//! thrown away and the connection kept; anything else gets
//! `Connection: close`, so the client knows to reconnect.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONNECTION, EXPECT};
use axum::http::{HeaderValue, StatusCode, Version};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// The most of an unread body drained to keep its connection: far above the
/// small JSON bodies refused in bulk (a rate-limited switch sends `{}`),
/// small enough that discarding it costs less than the client's reconnect.
pub const MAX_DRAIN_BYTES: u64 = 64 * 1024;

/// The longest the answer waits for an unread body's remainder. A client
/// that writes headers and body back to back delivers the body within a
/// round trip, plus up to 200 ms when Nagle holds it for a delayed ACK; a
/// body later than that is a slow or stalled upload, cheaper to cut off.
/// A client can hold a connection this long with a slow body anyway
/// (`REQUEST_TIMEOUT`), so waiting costs nothing new.
pub const MAX_DRAIN_WAIT: Duration = Duration::from_millis(500);

/// What a body dropped before its end leaves behind.
enum Leftover {
    /// The rest of the body, not yet read.
    Unread(Body),
    /// Reading it failed: the connection is in no state to be reused.
    Failed,
}

/// Where a dropped [`Tracked`] body leaves its [`Leftover`] for
/// [`guard`]; shared because the body moves into the request.
type Slot = Arc<Mutex<Option<Leftover>>>;

/// [`guard`] as a middleware of its own (the metrics port's router).
pub async fn unread_body(req: Request, next: Next) -> Response {
    guard(req, |req| next.run(req)).await
}

/// Answers `req` with `inner` and makes the answer safe for keep-alive:
/// drains a small unread body, or says `Connection: close`. Requests
/// without a body pass untouched, with no allocation.
pub async fn guard<F, Fut>(req: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    if req.body().is_end_stream() {
        return inner(req).await;
    }
    // Draining would make hyper send `100 Continue` and invite the body
    // the client held back; closing is the honest answer there.
    let held_back = req.headers().contains_key(EXPECT);
    let http1 = matches!(req.version(), Version::HTTP_10 | Version::HTTP_11);
    let slot = Slot::default();
    let req = req.map(|inner| {
        Body::new(Tracked {
            inner,
            slot: slot.clone(),
            ended: false,
            failed: false,
        })
    });
    let mut response = inner(req).await;
    let leftover = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    // An upgrade hands the connection over; its headers are not ours.
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }
    let keep = match leftover {
        None => true,
        Some(Leftover::Failed) => false,
        Some(Leftover::Unread(_)) if held_back => false,
        Some(Leftover::Unread(body)) => drain(body).await,
    };
    if !keep && http1 {
        tracing::debug!("request body left unread; closing the connection");
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads and discards what is left of `body`; `true` if it ended within
/// [`MAX_DRAIN_BYTES`] and [`MAX_DRAIN_WAIT`].
async fn drain(mut body: Body) -> bool {
    // A declared length past the bound is refused without waiting for it.
    if body.size_hint().lower() > MAX_DRAIN_BYTES {
        return false;
    }
    let read = async {
        let mut left = MAX_DRAIN_BYTES;
        loop {
            match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                None => return true,
                Some(Err(_)) => return false,
                Some(Ok(frame)) => {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    match left.checked_sub(n) {
                        Some(rest) => left = rest,
                        None => return false,
                    }
                }
            }
        }
    };
    tokio::time::timeout(MAX_DRAIN_WAIT, read)
        .await
        .unwrap_or(false)
}

/// A request body that, dropped before its end, leaves the rest in its
/// [`Slot`] instead of dropping it (which would make hyper close the
/// connection unannounced).
struct Tracked {
    inner: Body,
    slot: Slot,
    /// The inner body said it ended: nothing to hand back.
    ended: bool,
    /// The inner body failed: the connection must close.
    failed: bool,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Err(_))) => self.failed = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let leftover = if self.failed {
            Leftover::Failed
        } else if self.ended || self.inner.is_end_stream() {
            return;
        } else {
            Leftover::Unread(std::mem::take(&mut self.inner))
        };
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(leftover);
    }
}
