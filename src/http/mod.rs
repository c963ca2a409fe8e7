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
//! - [`pipeline`]: what every request goes through before its route, in
//!   one middleware: [`keepalive`], [`request_id`], metrics, auth,
//!   [`ratelimit`], time and size limits.
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
pub mod pipeline;
pub mod ratelimit;
pub mod request_id;
pub mod sessions;
pub mod webhooks;
pub mod ws;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::handler::Handler;
use axum::http::{HeaderValue, Method};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any as AnyOrigin, CorsLayer};

use crate::audit::postgres::AuditDb;
use crate::auth::Auth;
use crate::config::{AuthMode, Config};
use crate::engine::Engine;
use crate::fanout::Hub;
use crate::webhooks::deliver::Deliverer;
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
    /// `MAX_BODY_BYTES`: a larger declared body is a 413 before it is read.
    pub max_body: usize,
    /// `REDIS_TIMEOUT_MS`: what all of one request's store calls may take.
    pub store_budget: Duration,
    /// The webhook deliverer, when webhooks are configured: its settings
    /// admit sessions' own URLs, its health shows on `/ready`.
    pub webhooks: Option<Arc<Deliverer>>,
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
        .add(Method::GET, "/v1/webhooks/failed", webhooks::failed)
        .add(
            Method::POST,
            "/v1/webhooks/failed/{event_id}/retry",
            webhooks::retry,
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

/// Builds the application router with its middleware: CORS, then
/// [`pipeline::every_request`], then the panic guard and the body limit,
/// applied as one stack (each `Router::layer` call would box the routes
/// again, and every request would clone each box).
pub fn router(state: AppState, config: &Config) -> Router {
    let max_body = usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX);
    let middleware = ServiceBuilder::new()
        .option_layer(cors(config))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            pipeline::every_request,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(DefaultBodyLimit::max(max_body));
    route_table()
        .router
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware)
        .with_state(state)
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
