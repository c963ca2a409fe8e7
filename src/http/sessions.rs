//! `/v1/sessions`: create, read, drive and delete sessions. Handlers parse,
//! call the engine, and render the view at the engine's `now`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, SessionPath};
use crate::domain::{self, Command, FieldError, NewSession, ParticipantId};
use crate::engine::Snapshot;

/// The success envelope `{ "data": … }`.
#[derive(Serialize)]
struct Data<T> {
    data: T,
}

fn state_response(status: StatusCode, s: &Snapshot) -> Response {
    (
        status,
        Json(Data {
            data: domain::view(&s.session, s.at),
        }),
    )
        .into_response()
}

/// POST /v1/sessions
pub async fn create(
    State(app): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let body = body.ok_or_else(|| ApiError::field("body", "is required"))?;
    let new = NewSession::parse(&body).map_err(|details| ApiError::Validation { details })?;
    let snapshot = app.engine.create(new).await?;
    Ok(state_response(StatusCode::CREATED, &snapshot))
}

/// GET /v1/sessions/{id}
pub async fn get(
    State(app): State<AppState>,
    SessionPath(id): SessionPath,
) -> Result<Response, ApiError> {
    let snapshot = app.engine.get(id).await?;
    Ok(state_response(StatusCode::OK, &snapshot))
}

/// DELETE /v1/sessions/{id}: idempotent, 204 for unknown ids too.
pub async fn delete(
    State(app): State<AppState>,
    SessionPath(id): SessionPath,
) -> Result<StatusCode, ApiError> {
    app.engine.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// POST /v1/sessions/{id}/switch with an optional
/// `{ next_participant_id?, expected_version? }`; an empty body advances.
pub async fn switch(
    State(app): State<AppState>,
    SessionPath(id): SessionPath,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let cmd = parse_switch(body.as_ref())?;
    let s = app.engine.execute(id, cmd).await?;
    Ok(Json(Data {
        data: domain::switch_view(&s.session, s.at),
    })
    .into_response())
}

fn parse_switch(body: Option<&Value>) -> Result<Command, ApiError> {
    let Some(body) = body else {
        return Ok(Command::Switch {
            next_participant_id: None,
            expected_version: None,
        });
    };
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::field("body", "must be a JSON object"))?;
    let mut details = Vec::new();
    let next_participant_id = match obj.get("next_participant_id") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let id = v.as_str().and_then(ParticipantId::parse);
            if id.is_none() {
                details.push(FieldError::new(
                    "next_participant_id",
                    "must be a UUID string",
                ));
            }
            id
        }
    };
    let expected_version = match obj.get("expected_version") {
        None | Some(Value::Null) => None,
        Some(v) => {
            // Integral floats (2.0) count: JavaScript clients cannot tell them apart.
            let n = v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 1.0 && *f < 9.0e15)
                        .map(|f| f as u64)
                })
                .filter(|&n| n >= 1);
            if n.is_none() {
                details.push(FieldError::new(
                    "expected_version",
                    "must be a positive integer",
                ));
            }
            n
        }
    };
    if !details.is_empty() {
        return Err(ApiError::Validation { details });
    }
    Ok(Command::Switch {
        next_participant_id,
        expected_version,
    })
}

/// Handlers for the body-less commands (any body is ignored, as in v2).
macro_rules! command_handler {
    ($(#[$doc:meta])* $name:ident, $cmd:expr) => {
        $(#[$doc])*
        pub async fn $name(State(app): State<AppState>, SessionPath(id): SessionPath) -> Result<Response, ApiError> {
            let s = app.engine.execute(id, $cmd).await?;
            Ok(state_response(StatusCode::OK, &s))
        }
    };
}

command_handler!(
    /// POST /v1/sessions/{id}/start: only from `pending`.
    start,
    Command::Start
);
command_handler!(
    /// POST /v1/sessions/{id}/pause: only from `running`; banks charged up to now.
    pause,
    Command::Pause
);
command_handler!(
    /// POST /v1/sessions/{id}/resume: only from `paused`; the cycle continues now.
    resume,
    Command::Resume
);
command_handler!(
    /// POST /v1/sessions/{id}/complete: from any non-terminal status.
    complete,
    Command::Complete
);
