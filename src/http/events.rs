//! `GET /v1/sessions/{id}/events`: a session's audit history, read from
//! PostgreSQL (never from the hot path's store), newest first.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Serialize;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::extract::SessionPath;
use crate::audit::postgres::HistoryEvent;
use crate::auth::Caller;

/// Events per page unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

/// One page of history; `next_before` is the cursor for the next (older)
/// page, absent on the last one.
#[derive(Serialize)]
pub struct Page {
    events: Vec<HistoryEvent>,
    next_before: Option<Uuid>,
}

#[derive(Serialize)]
pub struct Data {
    data: Page,
}

/// GET /v1/sessions/{id}/events?limit=&before=
pub async fn list(
    State(app): State<AppState>,
    SessionPath(id): SessionPath,
    caller: Caller,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Data>, ApiError> {
    caller.read(id)?;
    let Query(params) =
        query.map_err(|_| ApiError::field("query", "is not a valid query string"))?;
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::field("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))
            })?,
    };
    let before = params
        .get("before")
        .map(|s| {
            Uuid::try_parse(s).map_err(|_| ApiError::field("before", "must be an event id (UUID)"))
        })
        .transpose()?;
    let db = app.audit.as_ref().ok_or(ApiError::AuditDisabled)?;
    // The drain is failing to reach the database right now: no point
    // waiting `DATABASE_TIMEOUT_MS` for a connection to find that out.
    if db.known_unreachable() {
        return Err(ApiError::AuditUnavailable(
            "the audit drain finds the database unreachable".into(),
        ));
    }
    let events = db
        .history(id, limit, before)
        .await
        .map_err(|e| ApiError::AuditUnavailable(e.to_string()))?;
    if events.is_empty() && before.is_none() {
        // Nothing recorded: a session too new for the drain to have written
        // yet has an empty history; one the store does not know is a 404.
        app.engine.get(id).await?;
    }
    let next_before = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.id))
        .flatten();
    Ok(Json(Data {
        data: Page {
            events,
            next_before,
        },
    }))
}
