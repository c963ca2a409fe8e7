//! Every request's way through the server, as one middleware, in this order:
//!
//! 1. the keep-alive guard ([`keepalive`]): an answer given before the body
//!    was read leaves the connection usable, or says it closes;
//! 2. the request id ([`request_id`]) and the request's log span;
//! 3. metrics: duration by route and status, requests in flight;
//! 4. authentication ([`extract::authenticate`]), once per request;
//! 5. the request's store budget ([`deadline`]: all its Redis calls
//!    together answer within `REDIS_TIMEOUT_MS`) and the client rate limit
//!    ([`ratelimit`]);
//! 6. the time limit ([`REQUEST_TIMEOUT`], 408) and the declared body size
//!    (413 before a byte is read);
//!
//! then the route, behind the panic guard and the body limit.
//!
//! One function rather than a layer per concern, because axum clones the
//! inner service of every `from_fn` layer on every request, and each
//! `Router::layer` boxes the stack once more: twelve layers cost about 150
//! allocations per request, a third of a switch's CPU (measured in
//! docs/PERFORMANCE.md).

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::ApiError;
use super::{AppState, extract, keepalive, ratelimit, request_id};
use crate::deadline;

/// Longest a request may take, body upload included; a client that trickles
/// its body cannot hold a connection (or a shutdown) open for longer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The middleware: see the module documentation for what it does in turn.
pub async fn every_request(State(app): State<AppState>, req: Request, next: Next) -> Response {
    keepalive::guard(req, |mut req| async move {
        let id = request_id::assign(&mut req);
        let span = request_span(&req, &id);
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = method_label(req.method());
        let in_flight = metrics::gauge!("synckairos_http_requests_in_flight");
        in_flight.increment(1.0);
        let started = Instant::now();
        let answer = deadline::scope(app.store_budget, async {
            extract::authenticate(&app, &mut req);
            let route = route.as_ref().map(MatchedPath::as_str);
            ratelimit::limit(&app, route, req, |req| async {
                let declared = req
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if declared.is_some_and(|n| n > app.max_body as u64) {
                    return ApiError::PayloadTooLarge.into_response();
                }
                tokio::time::timeout(REQUEST_TIMEOUT, next.run(req))
                    .await
                    .unwrap_or_else(|_| ApiError::RequestTimeout.into_response())
            })
            .await
        });
        let mut response = request_id::scope(id.clone(), answer)
            .instrument(span.clone())
            .await;
        in_flight.decrement(1.0);
        let elapsed = started.elapsed();
        let status = response.status();
        metrics::histogram!(
            "synckairos_http_request_duration_seconds",
            "method" => method,
            "route" => route.as_ref().map_or("unmatched", MatchedPath::as_str).to_owned(),
            "status" => status.as_str().to_owned(),
        )
        .record(elapsed.as_secs_f64());
        span.in_scope(|| {
            let latency_ms = elapsed.as_millis();
            if status.is_server_error() {
                tracing::error!(status = status.as_u16(), latency_ms, "response failed");
            } else {
                tracing::debug!(
                    status = status.as_u16(),
                    latency_ms,
                    "finished processing request"
                );
            }
        });
        response.headers_mut().insert(request_id::HEADER, id);
        response
    })
    .await
}

/// One span per request at info level: method, path (never the query) and
/// request id; no payloads.
fn request_span(req: &Request, id: &HeaderValue) -> tracing::Span {
    let id = id.to_str().unwrap_or_default();
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
}

/// Label values come from a fixed set, so clients cannot create time series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
