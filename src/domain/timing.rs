//! Derived time: deadlines and live remaining time, computed from stored
//! timestamps and banks at a given `now` ("calculate, don't count").

use serde::Serialize;
use serde_json::Value;

use super::ids::{GroupId, ParticipantId, SessionId, Timestamp};
use super::session::{ActionOnTimeout, Participant, Session, Status, SyncMode};

/// The budget of the running cycle: the time from `cycle_started_at` to the
/// deadline. `None` when no clock runs (not running, or no active participant).
pub fn cycle_budget(s: &Session) -> Option<i64> {
    if s.status != Status::Running {
        return None;
    }
    let active = s.active_index()?;
    let p = &s.participants[active];
    let budget = match s.sync_mode {
        SyncMode::PerParticipant => p.total_time_ms,
        SyncMode::PerCycle => s.time_per_cycle_ms.unwrap_or(0) - s.cycle_time_used_ms,
        // The group flags as soon as its first member's bank is empty, so no
        // member's bank can go negative.
        SyncMode::PerGroup => s
            .running_indices()
            .iter()
            .map(|&i| s.participants[i].total_time_ms)
            .min()
            .unwrap_or(0),
        SyncMode::Global => s.total_time_ms - global_used(s),
        SyncMode::CountUp => s.count_up_cap() - p.time_used_ms,
    };
    Some(budget.max(0))
}

/// The instant at which the running cycle times out; `None` unless running.
pub fn deadline(s: &Session) -> Option<Timestamp> {
    let start = s.cycle_started_at?;
    cycle_budget(s).map(|b| Timestamp(start.ms() + b))
}

/// Time since the running cycle started (0 when no clock runs; never negative,
/// even if the clock stepped back).
pub fn elapsed(s: &Session, now: Timestamp) -> i64 {
    match (s.status, s.cycle_started_at) {
        (Status::Running, Some(start)) => (now.ms() - start.ms()).max(0),
        _ => 0,
    }
}

/// Session clock consumed in `global` mode as of `cycle_started_at`: every
/// participant's `time_used_ms` records how long it held the turn.
fn global_used(s: &Session) -> i64 {
    s.participants.iter().map(|p| p.time_used_ms).sum()
}

/// Live remaining time of participant `i` at `now`, floored at 0.
pub fn remaining(s: &Session, i: usize, now: Timestamp) -> i64 {
    let p = &s.participants[i];
    // `is_active` marks exactly the participants whose clocks run in the current
    // cycle (the whole group in per_group); checking it keeps a view O(n).
    let live = if p.is_active { elapsed(s, now) } else { 0 };
    let left = match s.sync_mode {
        SyncMode::PerParticipant => p.total_time_ms - live,
        // A team clock is one clock: every member shows the distance to the
        // group's deadline, set by its smallest bank.
        SyncMode::PerGroup => group_bank(s, p) - live,
        SyncMode::PerCycle => {
            let cycle = s.time_per_cycle_ms.unwrap_or(0);
            if p.is_active {
                cycle - s.cycle_time_used_ms - live
            } else {
                cycle
            }
        }
        SyncMode::Global => {
            let clock_live = if s.status == Status::Running {
                elapsed(s, now)
            } else {
                0
            };
            s.total_time_ms - global_used(s) - clock_live
        }
        SyncMode::CountUp => s.count_up_cap() - p.time_used_ms - live,
    };
    left.max(0)
}

/// The bank of `p`'s group: its members' smallest bank (`p`'s own if it has no group).
fn group_bank(s: &Session, p: &Participant) -> i64 {
    s.participants
        .iter()
        .filter(|m| p.group_id.is_some() && m.group_id == p.group_id)
        .map(|m| m.total_time_ms)
        .min()
        .unwrap_or(p.total_time_ms)
}

/// A participant as sent on the wire: stored fields plus the live remaining time.
#[derive(Debug, Serialize)]
pub struct ParticipantView<'a> {
    #[serde(flatten)]
    pub stored: &'a Participant,
    pub time_remaining_ms: i64,
}

/// A session as sent on the wire (`SyncState`): stored fields plus the values
/// derived at `server_time_ms`.
#[derive(Debug, Serialize)]
pub struct SessionView<'a> {
    pub session_id: SessionId,
    pub sync_mode: SyncMode,
    pub status: Status,
    pub version: u64,
    pub participants: Vec<ParticipantView<'a>>,
    pub active_participant_id: Option<ParticipantId>,
    pub total_time_ms: i64,
    pub time_per_cycle_ms: Option<i64>,
    pub increment_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_time_ms: Option<i64>,
    pub cycle_started_at: Option<Timestamp>,
    pub cycle_time_used_ms: i64,
    pub session_started_at: Option<Timestamp>,
    pub session_completed_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a Value>,
    pub server_time_ms: i64,
    pub action_on_timeout: &'a ActionOnTimeout,
    pub auto_advance: bool,
    pub active_group_id: Option<GroupId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_participant_id: Option<ParticipantId>,
}

/// Derives the wire view of `s` at `now`.
pub fn view(s: &Session, now: Timestamp) -> SessionView<'_> {
    SessionView {
        session_id: s.session_id,
        sync_mode: s.sync_mode,
        status: s.status,
        version: s.version,
        participants: participant_views(s, now),
        active_participant_id: s.active_participant_id,
        total_time_ms: s.total_time_ms,
        time_per_cycle_ms: s.time_per_cycle_ms,
        increment_ms: s.increment_ms,
        max_time_ms: s.max_time_ms,
        cycle_started_at: s.cycle_started_at,
        cycle_time_used_ms: s.cycle_time_used_ms,
        session_started_at: s.session_started_at,
        session_completed_at: s.session_completed_at,
        created_at: s.created_at,
        updated_at: s.updated_at,
        metadata: s.metadata.as_ref(),
        server_time_ms: now.ms(),
        action_on_timeout: &s.action_on_timeout,
        auto_advance: s.auto_advance,
        active_group_id: s.active_group_id,
        expired_participant_id: s.expired_participant_id,
    }
}

/// The switch endpoint's smaller payload (v2 "switch result").
#[derive(Debug, Serialize)]
pub struct SwitchView<'a> {
    pub session_id: SessionId,
    pub active_participant_id: Option<ParticipantId>,
    pub cycle_started_at: Option<Timestamp>,
    pub participants: Vec<ParticipantView<'a>>,
    pub status: Status,
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_participant_id: Option<ParticipantId>,
    pub server_time_ms: i64,
}

/// Derives the switch result of `s` at `now`.
pub fn switch_view(s: &Session, now: Timestamp) -> SwitchView<'_> {
    SwitchView {
        session_id: s.session_id,
        active_participant_id: s.active_participant_id,
        cycle_started_at: s.cycle_started_at,
        participants: participant_views(s, now),
        status: s.status,
        version: s.version,
        expired_participant_id: s.expired_participant_id,
        server_time_ms: now.ms(),
    }
}

fn participant_views(s: &Session, now: Timestamp) -> Vec<ParticipantView<'_>> {
    (0..s.participants.len())
        .map(|i| ParticipantView {
            stored: &s.participants[i],
            time_remaining_ms: remaining(s, i, now),
        })
        .collect()
}
