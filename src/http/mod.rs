//! The HTTP layer: axum routes over the engine. It never talks to the state
//! store directly; everything goes through [`Engine`] (the history endpoint
//! reads the audit database).
//!
//! - [`sessions`]: the `/v1/sessions` resource.
//! - [`events`]: a session's audit history, from PostgreSQL.
//! - [`health`]: `/health`, `/ready`, `/v1/time`, `/metrics`.
//! - [`docs`]: the OpenAPI document.
//! - [`demo`]: the browser demo at `/demo`.
//! - [`extract`]: extractors that turn framework rejections into the envelope.
//! - [`error`]: [`ApiError`], the one mapping to `{ "error": … }`.
//! - [`keepalive`]: early answers that leave the body unread keep the
//!   connection, or say `Connection: close`.
//!
//! Routes are registered through [`RouteTable`], which remembers them, so a
//! test can check that the OpenAPI document lists exactly the routes served.

pub mod demo;
pub mod docs;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod keepalive;
pub mod listener;
pub mod ratelimit;
pub mod request_id;
pub mod sessions;
pub mod ws;

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any as AnyOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::audit::postgres::AuditDb;
use crate::auth::Auth;
use crate::config::{AuthMode, Config};
use crate::engine::Engine;
use crate::fanout::Hub;
use error::ApiError;
use tokio_util::task::TaskTracker;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub hub: Arc<Hub>,
    pub ws: Arc<ws::WsLimits>,
    /// Every socket task, so shutdown can wait for their close frames.
    pub ws_tasks: TaskTracker,
    /// The audit trail's database, for the history endpoint (read-only).
    pub audit: Option<AuditDb>,
    /// Token verification (and minting, with a shared secret).
    pub auth: Arc<Auth>,
    pub limits: ratelimit::RateLimits,
}

/// A router that records the `(method, path)` of every route it is given.
pub struct RouteTable {
    router: Router<AppState>,
    routes: Vec<(Method, &'static str)>,
}

impl RouteTable {
    fn new() -> Self {
        Self {
            router: Router::new(),
            routes: Vec::new(),
        }
    }

    fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        // Routing the same path again merges the methods.
        self.router = self.router.route(path, on(filter, handler));
        self.routes.push((method, path));
        self
    }
}

/// Every route the server serves.
fn route_table() -> RouteTable {
    RouteTable::new()
        .add(Method::POST, "/v1/sessions", sessions::create)
        .add(Method::GET, "/v1/sessions/{id}", sessions::get)
        .add(Method::DELETE, "/v1/sessions/{id}", sessions::delete)
        .add(Method::GET, "/v1/sessions/{id}/events", events::list)
        .add(
            Method::POST,
            "/v1/sessions/{id}/tokens",
            sessions::mint_token,
        )
        .add(Method::POST, "/v1/sessions/{id}/start", sessions::start)
        .add(Method::POST, "/v1/sessions/{id}/switch", sessions::switch)
        .add(Method::POST, "/v1/sessions/{id}/pause", sessions::pause)
        .add(Method::POST, "/v1/sessions/{id}/resume", sessions::resume)
        .add(
            Method::POST,
            "/v1/sessions/{id}/complete",
            sessions::complete,
        )
        .add(Method::GET, "/v1/time", health::time)
        .add(Method::GET, "/health", health::health)
        .add(Method::GET, "/ready", health::ready)
        .add(Method::GET, "/metrics", health::metrics)
        .add(Method::GET, "/openapi.yaml", docs::yaml)
        .add(Method::GET, "/api-docs.json", docs::json)
        .add(Method::GET, "/ws", ws::upgrade)
        .add(Method::GET, "/demo", demo::page)
        .add(Method::GET, "/demo/{file}", demo::file)
}

/// `METRICS_PORT`'s router: `/metrics` and nothing else.
pub fn metrics_router() -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(health::metrics))
        .fallback(not_found)
        .layer(middleware::from_fn(keepalive::unread_body))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::RouteNotFound(format!(
        "No route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// The `(method, path)` of every route, as registered.
pub fn routes() -> Vec<(Method, &'static str)> {
    route_table().routes
}

/// Builds the application router with its middleware.
pub fn router(state: AppState, config: &Config) -> Router {
    let max_body = usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX);
    let router = route_table()
        .router
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(max_body, reject_oversized))
        .layer(middleware::from_fn(time_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit,
        ))
        // Outside the rate limiter, which counts a token's subject.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            extract::authenticate,
        ))
        .layer(middleware::from_fn(record_metrics))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(CatchPanicLayer::custom(panic_response))
        // Outermost, so even a panic's response carries the id.
        .layer(middleware::from_fn(request_id::scope))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(middleware::from_fn(request_id::sanitize))
        .with_state(state);
    let router = match cors(config) {
        Some(layer) => router.layer(layer),
        None => router,
    };
    // Outermost, so every answer (a rate limit's, a panic's, a CORS
    // preflight's) leaves the connection usable or says it closes.
    router.layer(middleware::from_fn(keepalive::unread_body))
}

/// One span per request at info level: method, path (never the query) and
/// request id; no payloads.
fn request_span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get(request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
}

/// A handler panic becomes a 500 in the envelope instead of a dropped connection.
fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::Internal("handler panicked".into()).into_response()
}

/// `CORS_ORIGINS`, or by default any origin while no credentials are asked
/// for (`AUTH_MODE=none`) and none with tokens.
fn cors(config: &Config) -> Option<CorsLayer> {
    let origins = match config.cors_origins.as_deref() {
        Some(origins) => origins.trim(),
        None if config.auth_mode == AuthMode::None => "*",
        None => return None,
    };
    let allow = if origins == "*" {
        AllowOrigin::from(AnyOrigin)
    } else {
        let list: Vec<HeaderValue> = origins
            .split(',')
            .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
            .collect();
        AllowOrigin::list(list)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers(AnyOrigin),
    )
}

/// Longest a request may take, body upload included; a client that trickles
/// its body cannot hold a connection (or a shutdown) open for longer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Any route, body read or not: a declared body over the limit is a 413
/// before a byte of it is read.
async fn reject_oversized(State(max): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max as u64 => ApiError::PayloadTooLarge.into_response(),
        _ => next.run(req).await,
    }
}

/// Bounds every request by [`REQUEST_TIMEOUT`].
async fn time_limit(req: Request, next: Next) -> Response {
    tokio::time::timeout(REQUEST_TIMEOUT, next.run(req))
        .await
        .unwrap_or_else(|_| ApiError::RequestTimeout.into_response())
}

/// Request duration by route template and status, and requests in flight.
async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    // Labels come from a fixed set, so clients cannot create time series.
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let in_flight = metrics::gauge!("synckairos_http_requests_in_flight");
    in_flight.increment(1.0);
    let started = Instant::now();
    let response = next.run(req).await;
    in_flight.decrement(1.0);
    metrics::histogram!(
        "synckairos_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}
