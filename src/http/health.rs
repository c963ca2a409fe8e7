//! Operational endpoints: liveness, readiness, server time, metrics.

use crate::webhooks::deliver::FAILING_AFTER;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::Duration;

use super::AppState;

/// The API compatibility level announced by `/v1/time` (the v2 service's),
/// not the crate version, which is `build_version`.
pub const SERVER_VERSION: &str = "2.0.0";
/// Clock drift clients may tolerate before re-syncing (v2's value).
pub const DRIFT_TOLERANCE_MS: i64 = 50;

/// GET /health: liveness only; no dependency is checked, so a store outage
/// never gets healthy instances restarted.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Longest `/ready` waits for the audit database's answer.
const AUDIT_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// GET /ready: whether this instance can serve sessions (its store answers).
/// An unreachable audit database makes it `degraded`, still 200: audit is
/// off the hot path, and its events wait in the outbox meanwhile.
pub async fn ready(State(app): State<AppState>) -> Response {
    let store = app.engine.store();
    match store.ping().await {
        Ok(()) => {
            let audit = match &app.audit {
                None => "off",
                Some(db) => match tokio::time::timeout(AUDIT_PING_TIMEOUT, db.ping()).await {
                    Ok(Ok(())) => "ok",
                    _ => "unreachable",
                },
            };
            // Webhooks that keep failing degrade the instance, but it still
            // serves: the deliveries wait on the schedule.
            let webhooks = app.webhooks.as_ref().map(|d| {
                let now = app.engine.clock().now().ms();
                match d.health.failing_for(now) {
                    Some(failing) if failing >= FAILING_AFTER => {
                        format!("failing for {} s", failing.as_secs())
                    }
                    _ => "ok".to_owned(),
                }
            });
            let status = if audit == "unreachable" || webhooks.as_deref().is_some_and(|w| w != "ok")
            {
                "degraded"
            } else {
                "ready"
            };
            let mut body = json!({ "status": status, "backend": store.backend(), "audit": audit });
            body["webhooks"] = json!(webhooks.as_deref().unwrap_or("off"));
            Json(body).into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "error": e.to_string() })),
        )
            .into_response(),
    }
}

/// GET /v1/time: server epoch ms for client clock sync; a plain object, no
/// `data` envelope, as in v2.
pub async fn time(State(app): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "timestamp_ms": app.engine.clock().now().ms(),
        "server_version": SERVER_VERSION,
        "build_version": env!("CARGO_PKG_VERSION"),
        "drift_tolerance_ms": DRIFT_TOLERANCE_MS,
    }))
}

/// GET /metrics: Prometheus text format.
pub async fn metrics() -> Response {
    let body = crate::telemetry::metrics().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
