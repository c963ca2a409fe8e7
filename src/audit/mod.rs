//! The audit trail. The engine stamps every domain event with an id, the
//! version written and a snapshot ([`AuditEvent`]); the store appends them to
//! its outbox atomically with the state change; [`drain`] moves them to
//! PostgreSQL ([`postgres`]) asynchronously, so the hot path never waits on
//! the database and an event is never lost: it leaves the outbox only after
//! the transaction that stored it has committed.

pub mod drain;
pub mod postgres;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Event, EventKind, Session, SessionId, Timestamp};
use crate::store::StateJson;

/// One row of `sync_events`: a domain event plus what the engine knows about
/// the write that produced it. Created before the write so that a retried
/// insert is idempotent (`ON CONFLICT (id) DO NOTHING`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// UUIDv7: time-ordered, so the table's primary key index stays append-mostly.
    pub id: Uuid,
    pub session_id: SessionId,
    /// The version written together with this event.
    pub version: u64,
    /// What happened, to whom, and when.
    pub event: Event,
    /// The state right after the write (on every event of the write, so a
    /// webhook can show it), absent for deletions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_snapshot: Option<StateJson>,
    /// The session's own webhook endpoint, if it has one (a deletion has no
    /// snapshot to find it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

impl AuditEvent {
    /// Stamps a domain event produced by the write that created `state`.
    pub fn stamp(event: &Event, state: &Session, snapshot: Option<StateJson>) -> Self {
        Self {
            id: Uuid::now_v7(),
            session_id: state.session_id,
            version: state.version,
            event: event.clone(),
            state_snapshot: snapshot,
            webhook_url: state.webhook_url.clone(),
        }
    }

    /// The `session_deleted` record for `session`, at the version the
    /// deletion would have written.
    pub fn deleted(session: &Session, at: Timestamp) -> Self {
        Self {
            id: Uuid::now_v7(),
            session_id: session.session_id,
            version: session.version + 1,
            event: Event::new(EventKind::SessionDeleted, at),
            state_snapshot: None,
            webhook_url: session.webhook_url.clone(),
        }
    }
}
