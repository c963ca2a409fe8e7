//! `/v1/sessions`: create, read, drive and delete sessions. Handlers parse,
//! call the engine, and render the view at the engine's `now`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use std::time::Duration;

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, SessionPath};
use crate::auth::{Caller, Role};
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
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.operate()?;
    let body = body.ok_or_else(|| ApiError::field("body", "is required"))?;
    let new = NewSession::parse(&body).map_err(|details| ApiError::Validation { details })?;
    if let Some(url) = &new.webhook_url {
        admit_webhook_url(&app, url)?;
    }
    let snapshot = app.engine.create(new).await?;
    Ok(state_response(StatusCode::CREATED, &snapshot))
}

/// A session's own `webhook_url` must be under a prefix of
/// `WEBHOOK_ALLOWED_URLS`, so no client can make the server call anywhere.
fn admit_webhook_url(app: &AppState, url: &str) -> Result<(), ApiError> {
    let Some(deliverer) = &app.webhooks else {
        return Err(ApiError::field(
            "webhook_url",
            "webhooks are not configured on this server",
        ));
    };
    let parsed =
        crate::webhooks::parse_session_url(url).map_err(|e| ApiError::field("webhook_url", e))?;
    if !deliverer.settings.admits(&parsed) {
        return Err(ApiError::field(
            "webhook_url",
            "must be under one of the server's WEBHOOK_ALLOWED_URLS",
        ));
    }
    Ok(())
}

/// GET /v1/sessions/{id}
pub async fn get(
    State(app): State<AppState>,
    SessionPath(id): SessionPath,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.read(id)?;
    let snapshot = app.engine.get(id).await?;
    Ok(state_response(StatusCode::OK, &snapshot))
}

/// DELETE /v1/sessions/{id}: idempotent, 204 for unknown ids too.
pub async fn delete(
    State(app): State<AppState>,
    SessionPath(id): SessionPath,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    caller.operate()?;
    app.engine.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// POST /v1/sessions/{id}/switch with an optional
/// `{ next_participant_id?, expected_version? }`; an empty body advances.
/// A participant token may only pass on its own turn.
pub async fn switch(
    State(app): State<AppState>,
    SessionPath(id): SessionPath,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let by = caller.switch(id)?;
    let cmd = parse_switch(body.as_ref(), by)?;
    let s = app.engine.execute(id, cmd).await?;
    Ok(Json(Data {
        data: domain::switch_view(&s.session, s.at),
    })
    .into_response())
}

fn parse_switch(body: Option<&Value>, by: Option<ParticipantId>) -> Result<Command, ApiError> {
    let Some(body) = body else {
        return Ok(Command::Switch {
            next_participant_id: None,
            expected_version: None,
            by,
        });
    };
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::field("body", "must be a JSON object"))?;
    let mut details = Vec::new();
    let next_participant_id = optional_participant(obj, "next_participant_id", &mut details);
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
        by,
    })
}

/// An optional participant id field (`null` = absent); a malformed one is
/// added to `details`.
fn optional_participant(
    obj: &serde_json::Map<String, Value>,
    field: &str,
    details: &mut Vec<FieldError>,
) -> Option<ParticipantId> {
    let v = obj.get(field).filter(|v| !v.is_null())?;
    let id = v.as_str().and_then(ParticipantId::parse);
    if id.is_none() {
        details.push(FieldError::new(field, "must be a UUID string"));
    }
    id
}

/// Handlers for the body-less commands (any body is ignored, as in v2).
macro_rules! command_handler {
    ($(#[$doc:meta])* $name:ident, $cmd:expr) => {
        $(#[$doc])*
        pub async fn $name(State(app): State<AppState>, SessionPath(id): SessionPath, caller: Caller) -> Result<Response, ApiError> {
            caller.operate()?;
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

/// Longest lifetime of a minted token, and the default.
const MAX_TOKEN_TTL_SECONDS: u64 = 86_400;
const DEFAULT_TOKEN_TTL_SECONDS: u64 = 3_600;

/// A minted token, as returned.
#[derive(Serialize)]
struct MintedToken {
    token: String,
    token_type: &'static str,
    role: Role,
    session_id: domain::SessionId,
    #[serde(skip_serializing_if = "Option::is_none")]
    participant_id: Option<ParticipantId>,
    /// Expiry, epoch milliseconds (the token's `exp` in seconds × 1000).
    expires_at_ms: u64,
}

/// POST /v1/sessions/{id}/tokens `{ role, participant_id?, ttl_seconds? }`:
/// a participant or viewer token for this session (admin or service; needs
/// `JWT_SECRET`), so a backend need not implement JWT itself.
pub async fn mint_token(
    State(app): State<AppState>,
    SessionPath(id): SessionPath,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.operate()?;
    let body = body.ok_or_else(|| ApiError::field("body", "is required"))?;
    let (role, participant, ttl) = parse_mint(&body)?;
    let session = app.engine.get(id).await?.session;
    if let Some(p) = participant
        && !session.participants.iter().any(|x| x.participant_id == p)
    {
        return Err(ApiError::field(
            "participant_id",
            "is not a participant of this session",
        ));
    }
    let (token, exp) = app
        .auth
        .mint(id, role, participant, Duration::from_secs(ttl))?;
    let minted = MintedToken {
        token,
        token_type: "Bearer",
        role,
        session_id: id,
        participant_id: participant,
        expires_at_ms: exp * 1000,
    };
    Ok((StatusCode::CREATED, Json(Data { data: minted })).into_response())
}

fn parse_mint(body: &Value) -> Result<(Role, Option<ParticipantId>, u64), ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::field("body", "must be a JSON object"))?;
    let mut details = Vec::new();
    let role = match obj.get("role").and_then(Value::as_str) {
        Some("participant") => Some(Role::Participant),
        Some("viewer") => Some(Role::Viewer),
        _ => {
            details.push(FieldError::new(
                "role",
                "must be \"participant\" or \"viewer\"",
            ));
            None
        }
    };
    let participant = optional_participant(obj, "participant_id", &mut details);
    match (role, participant) {
        (Some(Role::Participant), None) if details.is_empty() => details.push(FieldError::new(
            "participant_id",
            "is required for a participant token",
        )),
        (Some(Role::Viewer), Some(_)) => details.push(FieldError::new(
            "participant_id",
            "must be absent for a viewer token",
        )),
        _ => {}
    }
    let ttl = match obj.get("ttl_seconds") {
        None | Some(Value::Null) => Some(DEFAULT_TOKEN_TTL_SECONDS),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_TOKEN_TTL_SECONDS).contains(n)),
    };
    if ttl.is_none() {
        details.push(FieldError::new(
            "ttl_seconds",
            format!("must be an integer between 1 and {MAX_TOKEN_TTL_SECONDS}"),
        ));
    }
    match (role, ttl) {
        (Some(role), Some(ttl)) if details.is_empty() => Ok((role, participant, ttl)),
        _ => Err(ApiError::Validation { details }),
    }
}
