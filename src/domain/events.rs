//! Audit events produced by transitions. The domain says *what happened and
//! when*; the engine stamps each event with an id, the written version and a
//! state snapshot before it goes to the outbox.

use serde::{Deserialize, Serialize};

use super::ids::{GroupId, ParticipantId, Timestamp};

/// The audit event types of the v2 schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    SessionCreated,
    SessionStarted,
    CycleSwitched,
    SessionPaused,
    SessionResumed,
    ParticipantExpired,
    SessionExpired,
    SessionCompleted,
    SessionDeleted,
}

/// One thing that happened to a session, at the instant it logically happened
/// (a timeout happens at its deadline, not when it was detected).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub at: Timestamp,
    /// The participant the event is about: the one who started, ended a turn,
    /// paused, or timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<ParticipantId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    /// That participant's remaining time right after the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_remaining_ms: Option<i64>,
    /// Time charged by the event (the cycle's elapsed time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_elapsed_ms: Option<i64>,
}

impl Event {
    /// An event with no participant attached.
    pub fn new(kind: EventKind, at: Timestamp) -> Self {
        Self {
            kind,
            at,
            participant_id: None,
            group_id: None,
            time_remaining_ms: None,
            time_elapsed_ms: None,
        }
    }
}
