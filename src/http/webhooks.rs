//! `/v1/webhooks/failed`: the dead letters, for admin and service tokens.
//! A dead letter is a webhook whose every attempt failed (or that got a
//! 410); it is kept until re-sent.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::auth::Caller;
use crate::domain::{SessionId, Timestamp};
use crate::store::Delivery;
use crate::webhooks::deliver::Deliverer;

/// Most dead letters one listing returns, oldest failure first.
const LIST_LIMIT: usize = 1_000;

/// A dead letter as listed (its body is not repeated: it is the event).
#[derive(Serialize)]
struct DeadLetter {
    event_id: String,
    session_id: SessionId,
    #[serde(rename = "type")]
    kind: String,
    url: String,
    attempts: u32,
    last_error: Option<String>,
    failed_at: Option<Timestamp>,
    event_at: Timestamp,
}

impl From<Delivery> for DeadLetter {
    fn from(d: Delivery) -> Self {
        Self {
            event_id: d.event_id,
            session_id: d.session_id,
            kind: d.kind,
            url: d.url,
            attempts: d.attempts,
            last_error: d.last_error,
            failed_at: d.failed_ms.map(Timestamp),
            event_at: Timestamp(d.event_ms),
        }
    }
}

fn deliverer(app: &AppState) -> Result<&Deliverer, ApiError> {
    app.webhooks.as_deref().ok_or(ApiError::WebhooksDisabled)
}

/// GET /v1/webhooks/failed
pub async fn failed(State(app): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.operate()?;
    deliverer(&app)?;
    let dead = app.engine.store().webhook_dead_letters(LIST_LIMIT).await?;
    let data: Vec<DeadLetter> = dead.into_iter().map(DeadLetter::from).collect();
    Ok(Json(serde_json::json!({ "data": data })).into_response())
}

/// POST /v1/webhooks/failed/{event_id}/retry: delivers it again now, with
/// the full retry schedule ahead of it.
pub async fn retry(
    State(app): State<AppState>,
    Path(event_id): Path<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.operate()?;
    deliverer(&app)?;
    let now = app.engine.clock().now().ms();
    if !app.engine.store().webhook_revive(&event_id, now).await? {
        return Err(ApiError::DeadLetterNotFound(format!(
            "No dead letter with event id {event_id}"
        )));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "data": { "event_id": event_id, "scheduled": true } })),
    )
        .into_response())
}
