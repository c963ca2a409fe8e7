//! The API error type and its one mapping to the wire envelope
//! `{ "error": { "code", "message", "details"? } }`. Internal causes are
//! logged here and never sent to the client.

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::AuthError;
use crate::domain::{DomainError, FieldError};
use crate::engine::EngineError;
use crate::store::{RateDecision, StoreError};

/// Everything a request can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed; `details` name the fields.
    Validation { details: Vec<FieldError> },
    /// 400: the command is not allowed in the session's current status.
    InvalidTransition(String),
    /// 401: auth is on and the token is missing, invalid or expired.
    Unauthorized(String),
    /// 403: the token lacks the right; `reason` (e.g. `NOT_YOUR_TURN`) is
    /// repeated in `details` for clients to branch on.
    Forbidden {
        message: String,
        reason: Option<&'static str>,
    },
    /// 404: unknown or deleted session.
    SessionNotFound(String),
    /// 409: an optimistic write lost, or `expected_version` did not match.
    Conflict { expected: u64, actual: u64 },
    /// 409: create with an id in use.
    SessionExists(String),
    /// 429: a rate limit of `limit` requests per period is spent;
    /// `Retry-After` says when to come back, `RateLimit-*` how it stands.
    RateLimited { limit: u32, decision: RateDecision },
    /// 413: body over `MAX_BODY_BYTES`.
    PayloadTooLarge,
    /// 408: the request (its body upload included) took too long.
    RequestTimeout,
    /// 503: the state store cannot be reached.
    Unavailable,
    /// 503: the audit database cannot be reached (the cause is logged).
    AuditUnavailable(String),
    /// 503: this deployment keeps no audit trail (`DATABASE_URL` unset).
    AuditDisabled,
    /// 503: this deployment sends no webhooks (`WEBHOOK_SECRET` unset).
    WebhooksDisabled,
    /// 404: no dead letter has that event id.
    DeadLetterNotFound(String),
    /// 500: anything else; the cause is logged, not returned.
    Internal(String),
    /// 404 for a path no route matches.
    RouteNotFound(String),
    /// 405 for a known path with the wrong method.
    MethodNotAllowed,
}

impl ApiError {
    /// One invalid field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            details: vec![FieldError::new(field, message)],
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, String, Option<Value>) {
        use ApiError::*;
        match self {
            Validation { details } => {
                let summary: Vec<String> = details
                    .iter()
                    .take(5)
                    .map(|d| format!("{} {}", d.field, d.message))
                    .collect();
                let more = details.len().saturating_sub(5);
                let mut message = format!("Validation failed: {}", summary.join("; "));
                if more > 0 {
                    message.push_str(&format!(" (and {more} more)"));
                }
                (
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_ERROR",
                    message,
                    Some(json!(details)),
                )
            }
            InvalidTransition(m) => (
                StatusCode::BAD_REQUEST,
                "INVALID_STATE_TRANSITION",
                m.clone(),
                None,
            ),
            Unauthorized(m) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED", m.clone(), None),
            Forbidden { message, reason } => (
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                message.clone(),
                reason.map(|r| json!({ "reason": r })),
            ),
            SessionNotFound(m) => (StatusCode::NOT_FOUND, "SESSION_NOT_FOUND", m.clone(), None),
            Conflict { expected, actual } => (
                StatusCode::CONFLICT,
                "CONFLICT",
                format!("Session version is {actual}, expected {expected}; re-read and retry"),
                Some(json!({ "expected_version": expected, "actual_version": actual })),
            ),
            SessionExists(m) => (StatusCode::CONFLICT, "SESSION_EXISTS", m.clone(), None),
            RateLimited { decision, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMIT_EXCEEDED",
                format!(
                    "Too many requests; retry in {} s",
                    seconds(decision.retry_after_us)
                ),
                None,
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "Request body is larger than the server accepts".into(),
                None,
            ),
            RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                "Request took too long".into(),
                None,
            ),
            Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "State store unavailable; retry shortly".into(),
                None,
            ),
            AuditUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                "Audit database unavailable; retry shortly".into(),
                None,
            ),
            AuditDisabled => (
                StatusCode::SERVICE_UNAVAILABLE,
                "AUDIT_DISABLED",
                "This deployment keeps no audit trail".into(),
                None,
            ),
            WebhooksDisabled => (
                StatusCode::SERVICE_UNAVAILABLE,
                "WEBHOOKS_DISABLED",
                "This deployment sends no webhooks".into(),
                None,
            ),
            DeadLetterNotFound(m) => (StatusCode::NOT_FOUND, "NOT_FOUND", m.clone(), None),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "Internal server error".into(),
                None,
            ),
            RouteNotFound(m) => (StatusCode::NOT_FOUND, "NOT_FOUND", m.clone(), None),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "Method not allowed on this path".into(),
                None,
            ),
        }
    }
}

/// `{ "error": { "code", "message", "details"? } }`, keys in that order.
#[derive(Serialize)]
struct Envelope {
    error: ErrorBody,
}

#[derive(Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Value>,
    /// The `x-request-id` of the request (an addition to the v2 envelope).
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "internal error"),
            ApiError::AuditUnavailable(cause) => {
                tracing::warn!(%cause, "audit database unavailable")
            }
            _ => {}
        }
        let (status, code, message, details) = self.parts();
        let body = Envelope {
            error: ErrorBody {
                code,
                message,
                details,
                request_id: super::request_id::current(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        match self {
            ApiError::Unauthorized(_) => {
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                );
            }
            ApiError::RateLimited { limit, decision } => {
                rate_limit_headers(response.headers_mut(), limit, &decision);
            }
            _ => {}
        }
        response
    }
}

// The `RateLimit-*` names, parsed at compile time: they go on every limited
// answer.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// `RateLimit-Limit`, `-Remaining`, `-Reset` of a limit's decision, and
/// `Retry-After` when it refused.
pub fn rate_limit_headers(h: &mut HeaderMap, limit: u32, d: &RateDecision) {
    h.insert(RATELIMIT_LIMIT, HeaderValue::from(limit));
    h.insert(RATELIMIT_REMAINING, HeaderValue::from(d.remaining));
    h.insert(RATELIMIT_RESET, HeaderValue::from(seconds(d.reset_us)));
    if !d.allowed {
        h.insert(RETRY_AFTER, HeaderValue::from(seconds(d.retry_after_us)));
    }
}

/// Whole seconds, rounded up, at least 1 (`Retry-After` must be > 0).
fn seconds(us: u64) -> u64 {
    us.div_ceil(1_000_000).max(1)
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::InvalidTransition { .. } => ApiError::InvalidTransition(e.to_string()),
            DomainError::VersionMismatch { expected, actual } => {
                ApiError::Conflict { expected, actual }
            }
            DomainError::UnknownParticipant(_) | DomainError::ParticipantExpired(_) => {
                ApiError::field("next_participant_id", e.to_string())
            }
            DomainError::NotYourTurn(_) => ApiError::Forbidden {
                message: e.to_string(),
                reason: Some("NOT_YOUR_TURN"),
            },
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized(m) => ApiError::Unauthorized(m.to_owned()),
            AuthError::Forbidden(m) => ApiError::Forbidden {
                message: m.to_owned(),
                reason: None,
            },
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Domain(d) => d.into(),
            EngineError::NotFound(_) => ApiError::SessionNotFound(e.to_string()),
            EngineError::Exists(_) => ApiError::SessionExists(e.to_string()),
            EngineError::Conflict { expected, actual } => ApiError::Conflict { expected, actual },
            EngineError::SwitchLimited { limit, decision } => {
                ApiError::RateLimited { limit, decision }
            }
            EngineError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "state store unavailable");
                ApiError::Unavailable
            }
            e => ApiError::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::seconds;

    #[test]
    fn header_seconds_round_up() {
        assert_eq!((seconds(0), seconds(1), seconds(1_000_001)), (1, 1, 2));
    }
}
