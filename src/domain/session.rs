//! The stored session model. Every field here is a value *as of the last cycle
//! boundary*; live values (remaining time) are derived in [`super::timing`] and
//! never stored, so the state in Redis is always consistent on its own.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::{GroupId, ParticipantId, SessionId, Timestamp};
use super::time_control::{Overtime, PLAIN, TimeControl};

/// How a session's clocks run; see API.md "Timing model per sync_mode".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Chess clock: each participant has a bank, Fischer increment per switch.
    PerParticipant,
    /// A fresh `time_per_cycle_ms` for every turn.
    PerCycle,
    /// Team clock: all members of the active group run down together.
    PerGroup,
    /// One session clock shared by everyone, not reset by switches.
    Global,
    /// Stopwatch with a cap.
    CountUp,
}

impl SyncMode {
    /// All modes, for exhaustive tests and error messages.
    pub const ALL: [SyncMode; 5] = [
        SyncMode::PerParticipant,
        SyncMode::PerCycle,
        SyncMode::PerGroup,
        SyncMode::Global,
        SyncMode::CountUp,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::PerParticipant => "per_participant",
            SyncMode::PerCycle => "per_cycle",
            SyncMode::PerGroup => "per_group",
            SyncMode::Global => "global",
            SyncMode::CountUp => "count_up",
        }
    }

    /// The timeout action used when the create request names none.
    pub fn default_timeout(self) -> TimeoutKind {
        match self {
            SyncMode::PerCycle => TimeoutKind::SkipCycle,
            _ => TimeoutKind::EndSession,
        }
    }
}

/// Lifecycle of a session. `expired`, `completed` and `cancelled` are terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Running,
    Paused,
    Expired,
    Completed,
    /// Kept for wire compatibility with v2; no command of ours produces it.
    Cancelled,
}

impl Status {
    /// All statuses, for exhaustive tests.
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Running,
        Status::Paused,
        Status::Expired,
        Status::Completed,
        Status::Cancelled,
    ];

    /// The wire name, used in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Expired => "expired",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
        }
    }

    /// No command can change a terminal session any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Expired | Status::Completed | Status::Cancelled
        )
    }
}

/// What the server does when a running cycle reaches its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutKind {
    /// The session expires.
    EndSession,
    /// The cycle ends at the deadline and the next eligible participant starts.
    SkipCycle,
    /// As `SkipCycle`; the TIMEOUT message carries `action` for the client.
    AutoAction,
}

/// `action_on_timeout` as stored: the effective action after defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOnTimeout {
    #[serde(rename = "type")]
    pub kind: TimeoutKind,
    /// Free text for the client application (e.g. `"auto_fold"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// One participant's stored clock data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub participant_id: ParticipantId,
    pub participant_index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<GroupId>,
    /// The participant's bank as of `cycle_started_at`. Only `per_participant`
    /// and `per_group` draw it down; other modes leave it at its initial value.
    pub total_time_ms: i64,
    /// Cumulative time consumed as of `cycle_started_at`.
    pub time_used_ms: i64,
    /// Turns completed (a cycle ended by a switch or a timeout).
    pub cycle_count: u64,
    pub is_active: bool,
    pub has_expired: bool,
    /// Byo-yomi and Canadian overtime as of `cycle_started_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overtime: Option<Overtime>,
}

/// The whole stored state of a session (the `d` field of `sk:{b}:s:<id>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: SessionId,
    pub sync_mode: SyncMode,
    pub status: Status,
    /// 1 at creation, +1 on every successful write; the compare-and-set key.
    pub version: u64,
    /// Sorted by `participant_index` (unique), which is also the turn order.
    pub participants: Vec<Participant>,
    pub active_participant_id: Option<ParticipantId>,
    pub total_time_ms: i64,
    pub time_per_cycle_ms: Option<i64>,
    pub increment_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time_ms: Option<i64>,
    pub cycle_started_at: Option<Timestamp>,
    /// Time of the running cycle consumed before the last resume. A pause must
    /// not hand a `per_cycle` participant a fresh cycle, so the deadline after a
    /// resume is `cycle_started_at + time_per_cycle_ms - cycle_time_used_ms`.
    #[serde(default)]
    pub cycle_time_used_ms: i64,
    pub session_started_at: Option<Timestamp>,
    pub session_completed_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    pub action_on_timeout: ActionOnTimeout,
    pub auto_advance: bool,
    #[serde(default)]
    pub active_group_id: Option<GroupId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_participant_id: Option<ParticipantId>,
    /// The game's time control; `None` is the v2 rule (Fischer with `increment_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_control: Option<TimeControl>,
    /// Soft close: the time added to the session clock so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ms: Option<i64>,
    /// Where this session's webhooks go instead of `WEBHOOK_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

impl Session {
    /// Position of a participant in turn order.
    pub fn index_of(&self, id: ParticipantId) -> Option<usize> {
        self.participants
            .iter()
            .position(|p| p.participant_id == id)
    }

    /// Position of the active participant (the group's first member in `per_group`).
    pub fn active_index(&self) -> Option<usize> {
        self.active_participant_id.and_then(|id| self.index_of(id))
    }

    /// Positions of the participants whose clocks run in the current cycle: the
    /// whole active group in `per_group`, else the active participant alone.
    pub fn running_indices(&self) -> Vec<usize> {
        let Some(active) = self.active_index() else {
            return Vec::new();
        };
        match (self.sync_mode, self.participants[active].group_id) {
            (SyncMode::PerGroup, Some(group)) => self.members_of(group),
            _ => vec![active],
        }
    }

    /// Positions of the members of a group, in turn order.
    pub fn members_of(&self, group: GroupId) -> Vec<usize> {
        (0..self.participants.len())
            .filter(|&i| self.participants[i].group_id == Some(group))
            .collect()
    }

    /// Whether participants draw down banks of their own (the modes time
    /// controls apply to).
    pub fn banked(&self) -> bool {
        matches!(
            self.sync_mode,
            SyncMode::PerParticipant | SyncMode::PerGroup
        )
    }

    /// The rule a banked clock runs by inside a turn.
    pub fn control(&self) -> &TimeControl {
        self.time_control.as_ref().unwrap_or(&PLAIN)
    }

    /// Whether `cycle_time_used_ms` counts the running turn across pauses:
    /// `per_cycle`'s fresh cycle and the delays both belong to a turn.
    pub fn tracks_turn(&self) -> bool {
        self.sync_mode == SyncMode::PerCycle || self.control().tracks_turn()
    }

    /// The `global` session clock: its budget plus any soft-close extension.
    pub fn global_budget(&self) -> i64 {
        self.total_time_ms + self.extension_ms.unwrap_or(0)
    }

    /// The count_up cap: `max_time_ms`, else `total_time_ms`.
    pub fn count_up_cap(&self) -> i64 {
        self.max_time_ms.unwrap_or(self.total_time_ms)
    }
}
