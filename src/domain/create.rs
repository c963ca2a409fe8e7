//! Parsing a create request into a [`NewSession`] that is valid by construction.
//! Every problem is reported with the field it concerns, so a client learns all
//! of them from one response.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::{Map, Value};

use super::events::{Event, EventKind};
use super::ids::{GroupId, ParticipantId, SessionId, Timestamp};
use super::session::{ActionOnTimeout, Participant, Session, Status, SyncMode, TimeoutKind};
use super::time_control::{self, TimeControl};
use super::transition::Transition;

/// Bounds from API.md ("Create body" and "Limits").
pub const MIN_TIME_MS: i64 = 1_000;
pub const MAX_TIME_MS: i64 = 86_400_000;
pub const MAX_INCREMENT_MS: i64 = 60_000;
pub const MAX_PARTICIPANTS: usize = 1_000;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_ACTION_CHARS: usize = 256;

/// A validation problem with one field of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path of the offending field, e.g. `participants[2].total_time_ms`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A participant of a create request, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewParticipant {
    pub participant_id: ParticipantId,
    pub participant_index: u32,
    pub group_id: Option<GroupId>,
    pub total_time_ms: i64,
}

/// A create request that passed every rule; [`NewSession::into_created`] cannot fail.
#[derive(Clone, Debug, PartialEq)]
pub struct NewSession {
    pub session_id: SessionId,
    pub sync_mode: SyncMode,
    pub participants: Vec<NewParticipant>,
    pub total_time_ms: i64,
    pub time_per_cycle_ms: Option<i64>,
    pub increment_ms: i64,
    pub max_time_ms: Option<i64>,
    pub metadata: Option<Value>,
    pub action_on_timeout: ActionOnTimeout,
    pub auto_advance: bool,
    pub time_control: Option<TimeControl>,
    /// Checked against `WEBHOOK_ALLOWED_URLS` by the HTTP layer, which knows them.
    pub webhook_url: Option<String>,
}

/// Longest `webhook_url` accepted.
pub const MAX_URL_CHARS: usize = 2_048;

impl NewSession {
    /// Parses a create body; unknown fields are ignored (API.md).
    pub fn parse(body: &Value) -> Result<Self, Vec<FieldError>> {
        let mut errs = Vec::new();
        let Some(obj) = body.as_object() else {
            return Err(vec![FieldError::new("body", "must be a JSON object")]);
        };

        let session_id = required(obj, "session_id", &mut errs)
            .and_then(|v| uuid(v, "session_id", &mut errs).map(SessionId));
        let sync_mode = required(obj, "sync_mode", &mut errs).and_then(|v| sync_mode(v, &mut errs));
        let total_time_ms = required(obj, "total_time_ms", &mut errs)
            .and_then(|v| int_in(v, "total_time_ms", MIN_TIME_MS, MAX_TIME_MS, &mut errs));
        let time_per_cycle_ms = optional(obj, "time_per_cycle_ms")
            .and_then(|v| int_in(v, "time_per_cycle_ms", MIN_TIME_MS, MAX_TIME_MS, &mut errs));
        let increment_ms = optional(obj, "increment_ms")
            .and_then(|v| int_in(v, "increment_ms", 0, MAX_INCREMENT_MS, &mut errs));
        let max_time_ms = optional(obj, "max_time_ms")
            .and_then(|v| int_in(v, "max_time_ms", MIN_TIME_MS, MAX_TIME_MS, &mut errs));
        let metadata = optional(obj, "metadata").and_then(|v| metadata(v, &mut errs));
        let auto_advance = optional(obj, "auto_advance")
            .and_then(|v| match v.as_bool() {
                Some(b) => Some(b),
                None => {
                    errs.push(FieldError::new("auto_advance", "must be a boolean"));
                    None
                }
            })
            .unwrap_or(false);
        let explicit_action = optional(obj, "action_on_timeout").and_then(|v| action(v, &mut errs));
        let participants = required(obj, "participants", &mut errs)
            .and_then(|v| participants(v, sync_mode, &mut errs));

        if sync_mode == Some(SyncMode::PerCycle)
            && time_per_cycle_ms.is_none()
            && !obj_has(obj, "time_per_cycle_ms")
        {
            errs.push(FieldError::new(
                "time_per_cycle_ms",
                "is required when sync_mode is per_cycle",
            ));
        }
        let webhook_url = optional(obj, "webhook_url").and_then(|v| match v.as_str() {
            Some(u) if u.chars().count() <= MAX_URL_CHARS => Some(u.to_owned()),
            _ => {
                errs.push(FieldError::new(
                    "webhook_url",
                    format!("must be a string of at most {MAX_URL_CHARS} characters"),
                ));
                None
            }
        });
        let time_control = optional(obj, "time_control")
            .and_then(|v| time_control::parse(v, sync_mode, &mut errs));
        if let Some(tc) = &time_control {
            time_control::check_participants(tc, sync_mode, participants.as_deref(), &mut errs);
        }
        let increment_ms = match (&time_control, increment_ms) {
            (Some(TimeControl::Fischer { increment_ms, .. }), None) => *increment_ms,
            (Some(TimeControl::Fischer { increment_ms, .. }), Some(top))
                if top != *increment_ms =>
            {
                errs.push(FieldError::new(
                    "increment_ms",
                    "differs from time_control.increment_ms (give one of them)",
                ));
                top
            }
            (Some(tc), Some(top)) if top != 0 && !matches!(tc, TimeControl::Fischer { .. }) => {
                errs.push(FieldError::new(
                    "increment_ms",
                    format!("applies to the fischer time control, not {}", tc.name()),
                ));
                top
            }
            (_, top) => top.unwrap_or(0),
        };
        if let (Some(a), true) = (&explicit_action, auto_advance)
            && a.kind == TimeoutKind::EndSession
        {
            errs.push(FieldError::new(
                "auto_advance",
                "true contradicts action_on_timeout.type end_session",
            ));
        }

        match (session_id, sync_mode, total_time_ms, participants) {
            (Some(session_id), Some(sync_mode), Some(total_time_ms), Some(participants))
                if errs.is_empty() =>
            {
                let action_on_timeout = explicit_action.unwrap_or(ActionOnTimeout {
                    kind: if auto_advance {
                        TimeoutKind::SkipCycle
                    } else {
                        sync_mode.default_timeout()
                    },
                    action: None,
                });
                Ok(NewSession {
                    session_id,
                    sync_mode,
                    participants,
                    total_time_ms,
                    time_per_cycle_ms,
                    increment_ms,
                    max_time_ms,
                    metadata,
                    action_on_timeout,
                    auto_advance,
                    time_control,
                    webhook_url,
                })
            }
            _ => Err(errs),
        }
    }

    /// The session at version 1, `pending`, with its `session_created` event.
    pub fn into_created(self, now: Timestamp) -> Transition {
        let mut participants: Vec<Participant> = self
            .participants
            .into_iter()
            .map(|p| Participant {
                participant_id: p.participant_id,
                participant_index: p.participant_index,
                group_id: p.group_id,
                total_time_ms: p.total_time_ms,
                time_used_ms: 0,
                cycle_count: 0,
                is_active: false,
                has_expired: false,
                overtime: self
                    .time_control
                    .as_ref()
                    .and_then(TimeControl::initial_overtime),
            })
            .collect();
        participants.sort_by_key(|p| p.participant_index);
        let session = Session {
            session_id: self.session_id,
            sync_mode: self.sync_mode,
            status: Status::Pending,
            version: 1,
            participants,
            active_participant_id: None,
            total_time_ms: self.total_time_ms,
            time_per_cycle_ms: self.time_per_cycle_ms,
            increment_ms: self.increment_ms,
            max_time_ms: self.max_time_ms,
            cycle_started_at: None,
            cycle_time_used_ms: 0,
            session_started_at: None,
            session_completed_at: None,
            created_at: now,
            updated_at: now,
            metadata: self.metadata,
            action_on_timeout: self.action_on_timeout,
            auto_advance: self.auto_advance,
            active_group_id: None,
            expired_participant_id: None,
            extension_ms: matches!(self.time_control, Some(TimeControl::SoftClose { .. }))
                .then_some(0),
            time_control: self.time_control,
            webhook_url: self.webhook_url,
        };
        Transition {
            session,
            events: vec![Event::new(EventKind::SessionCreated, now)],
        }
    }
}

fn obj_has(obj: &Map<String, Value>, key: &str) -> bool {
    obj.get(key).is_some_and(|v| !v.is_null())
}

/// A present, non-null top-level field, or an error naming it.
fn required<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    errs: &mut Vec<FieldError>,
) -> Option<&'a Value> {
    required_at(obj, key, key, errs)
}

/// A present, non-null field `key` of `obj`, or an error naming its path `field`.
pub(super) fn required_at<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &str,
    errs: &mut Vec<FieldError>,
) -> Option<&'a Value> {
    let found = optional(obj, key);
    if found.is_none() {
        errs.push(FieldError::new(field, "is required"));
    }
    found
}

/// An optional field; `null` counts as absent, as in v2.
pub(super) fn optional<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn uuid(v: &Value, field: &str, errs: &mut Vec<FieldError>) -> Option<uuid::Uuid> {
    match v.as_str().and_then(|s| uuid::Uuid::try_parse(s).ok()) {
        Some(u) => Some(u),
        None => {
            errs.push(FieldError::new(field, "must be a UUID string"));
            None
        }
    }
}

pub(super) fn int_in(
    v: &Value,
    field: &str,
    min: i64,
    max: i64,
    errs: &mut Vec<FieldError>,
) -> Option<i64> {
    // Integral floats such as 1000.0 are accepted: JavaScript clients cannot tell them apart.
    let n = v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    });
    match n {
        Some(n) if (min..=max).contains(&n) => Some(n),
        Some(_) | None if v.is_number() => {
            errs.push(FieldError::new(
                field,
                format!("must be an integer between {min} and {max}"),
            ));
            None
        }
        _ => {
            errs.push(FieldError::new(field, "must be an integer"));
            None
        }
    }
}

fn sync_mode(v: &Value, errs: &mut Vec<FieldError>) -> Option<SyncMode> {
    let found = v
        .as_str()
        .and_then(|s| SyncMode::ALL.into_iter().find(|m| m.as_str() == s));
    if found.is_none() {
        let names: Vec<&str> = SyncMode::ALL.iter().map(|m| m.as_str()).collect();
        errs.push(FieldError::new(
            "sync_mode",
            format!("must be one of {}", names.join(", ")),
        ));
    }
    found
}

fn metadata(v: &Value, errs: &mut Vec<FieldError>) -> Option<Value> {
    if !v.is_object() {
        errs.push(FieldError::new("metadata", "must be an object"));
        return None;
    }
    let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        errs.push(FieldError::new(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes serialised (got {size})"),
        ));
        return None;
    }
    Some(v.clone())
}

fn action(v: &Value, errs: &mut Vec<FieldError>) -> Option<ActionOnTimeout> {
    let Some(obj) = v.as_object() else {
        errs.push(FieldError::new("action_on_timeout", "must be an object"));
        return None;
    };
    let kind = match obj.get("type").and_then(Value::as_str) {
        Some("end_session") => Some(TimeoutKind::EndSession),
        Some("skip_cycle") => Some(TimeoutKind::SkipCycle),
        Some("auto_action") => Some(TimeoutKind::AutoAction),
        _ => {
            errs.push(FieldError::new(
                "action_on_timeout.type",
                "must be one of end_session, skip_cycle, auto_action",
            ));
            None
        }
    };
    let action = match optional(obj, "action") {
        None => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_ACTION_CHARS => Some(s.clone()),
        Some(_) => {
            errs.push(FieldError::new(
                "action_on_timeout.action",
                format!("must be a string of at most {MAX_ACTION_CHARS} characters"),
            ));
            return None;
        }
    };
    kind.map(|kind| ActionOnTimeout { kind, action })
}

fn participants(
    v: &Value,
    mode: Option<SyncMode>,
    errs: &mut Vec<FieldError>,
) -> Option<Vec<NewParticipant>> {
    let Some(items) = v.as_array() else {
        errs.push(FieldError::new("participants", "must be an array"));
        return None;
    };
    if items.is_empty() || items.len() > MAX_PARTICIPANTS {
        errs.push(FieldError::new(
            "participants",
            format!(
                "must contain between 1 and {MAX_PARTICIPANTS} participants (got {})",
                items.len()
            ),
        ));
        return None;
    }
    let before = errs.len();
    let mut ids = HashSet::new();
    let mut indexes = HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |f: &str| format!("participants[{i}].{f}");
        let Some(obj) = item.as_object() else {
            errs.push(FieldError::new(
                format!("participants[{i}]"),
                "must be an object",
            ));
            continue;
        };
        let id = required_at(obj, "participant_id", &at("participant_id"), errs)
            .and_then(|v| uuid(v, &at("participant_id"), errs).map(ParticipantId));
        if let Some(id) = id
            && !ids.insert(id)
        {
            errs.push(FieldError::new(
                at("participant_id"),
                format!("duplicate participant_id {id}"),
            ));
        }
        let index = required_at(obj, "participant_index", &at("participant_index"), errs)
            .and_then(|v| int_in(v, &at("participant_index"), 0, i64::from(u32::MAX), errs))
            .map(|n| n as u32);
        if let Some(index) = index
            && !indexes.insert(index)
        {
            errs.push(FieldError::new(
                at("participant_index"),
                format!("duplicate participant_index {index}"),
            ));
        }
        let total = required_at(obj, "total_time_ms", &at("total_time_ms"), errs)
            .and_then(|v| int_in(v, &at("total_time_ms"), MIN_TIME_MS, MAX_TIME_MS, errs));
        let group = match optional(obj, "group_id") {
            None if mode == Some(SyncMode::PerGroup) => {
                errs.push(FieldError::new(
                    at("group_id"),
                    "is required when sync_mode is per_group",
                ));
                None
            }
            None => None,
            Some(v) => uuid(v, &at("group_id"), errs).map(GroupId),
        };
        if let (Some(participant_id), Some(participant_index), Some(total_time_ms)) =
            (id, index, total)
        {
            out.push(NewParticipant {
                participant_id,
                participant_index,
                group_id: group,
                total_time_ms,
            });
        }
    }
    (errs.len() == before).then_some(out)
}
