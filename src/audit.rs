//! Audit records: domain events stamped by the engine with an id, the version
//! written and a snapshot, ready for the outbox. The PostgreSQL drain comes
//! with the audit issue; until then the outbox lives in the store.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::{Event, EventKind, GroupId, ParticipantId, Session, SessionId, Timestamp};

/// One row of `sync_events`, created before the write so that a retried
/// insert is idempotent (`ON CONFLICT (id) DO NOTHING`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// UUIDv7: time-ordered, so the table's primary key index stays append-mostly.
    pub id: Uuid,
    pub session_id: SessionId,
    pub event_type: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<ParticipantId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_remaining_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_elapsed_ms: Option<i64>,
    pub timestamp: Timestamp,
    /// The version written together with this event.
    pub version: u64,
    /// The state right after the write (absent for deletions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_snapshot: Option<Value>,
}

impl AuditEvent {
    /// Stamps a domain event produced by the write that created `state`.
    pub fn stamp(event: &Event, state: &Session, snapshot: &Value) -> Self {
        Self {
            id: Uuid::now_v7(),
            session_id: state.session_id,
            event_type: event.kind,
            participant_id: event.participant_id,
            group_id: event.group_id,
            time_remaining_ms: event.time_remaining_ms,
            time_elapsed_ms: event.time_elapsed_ms,
            timestamp: event.at,
            version: state.version,
            state_snapshot: Some(snapshot.clone()),
        }
    }

    /// The `session_deleted` record for a session last written at `version`.
    pub fn deleted(session_id: SessionId, version: u64, at: Timestamp) -> Self {
        Self {
            id: Uuid::now_v7(),
            session_id,
            event_type: EventKind::SessionDeleted,
            participant_id: None,
            group_id: None,
            time_remaining_ms: None,
            time_elapsed_ms: None,
            timestamp: at,
            version,
            state_snapshot: None,
        }
    }
}
