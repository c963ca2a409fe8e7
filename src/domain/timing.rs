//! Derived time: deadlines and live remaining time, computed from stored
//! timestamps and banks at a given `now` ("calculate, don't count").

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::ids::{GroupId, ParticipantId, SessionId, Timestamp};
use super::session::{ActionOnTimeout, Participant, Session, Status, SyncMode};
use super::time_control::{Clock, Face, TimeControl};

/// The budget of the running cycle: the time from `cycle_started_at` to the
/// deadline. `None` when no clock runs (not running, or no active participant).
pub fn cycle_budget(s: &Session) -> Option<i64> {
    if s.status != Status::Running {
        return None;
    }
    let active = s.active_index()?;
    let p = &s.participants[active];
    let budget = match s.sync_mode {
        SyncMode::PerParticipant => running_to_flag(s, p),
        // The group flags as soon as its first member's clock runs out, so no
        // member's bank can go negative. `is_active` marks exactly the
        // participants whose clocks run.
        SyncMode::PerGroup => s
            .participants
            .iter()
            .filter(|m| m.is_active)
            .map(|m| running_to_flag(s, m))
            .min()
            .unwrap_or(0),
        SyncMode::PerCycle => s.time_per_cycle_ms.unwrap_or(0) - s.cycle_time_used_ms,
        SyncMode::Global => s.global_budget() - global_used(s),
        SyncMode::CountUp => s.count_up_cap() - p.time_used_ms,
    };
    Some(budget.max(0))
}

/// Time from the running cycle's start until running participant `p`'s flag.
fn running_to_flag(s: &Session, p: &Participant) -> i64 {
    s.control().to_flag(Clock::of(p), s.cycle_time_used_ms)
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

/// Time the running cycle has run at `now`, capped at its budget: a read
/// after the deadline (before the timeout is written) shows the flag fallen.
fn run_time(s: &Session, now: Timestamp) -> i64 {
    cycle_budget(s).map_or(0, |b| elapsed(s, now).min(b))
}

/// Participant `i`'s clock after the running cycle has run `run` ms, with the
/// time its turn has run: the stored clock run forward while its turn runs;
/// in hourglass, while the other side's runs, credited with what it spends.
pub fn live_clock(s: &Session, i: usize, run: i64) -> (Clock, i64) {
    let p = &s.participants[i];
    let mut c = Clock::of(p);
    let tc = s.control();
    if p.is_active {
        let turn = s.cycle_time_used_ms;
        tc.run(&mut c, turn, run);
        (c, turn + run)
    } else {
        if *tc == TimeControl::Hourglass {
            c.bank += run;
        }
        (c, 0)
    }
}

/// Live time until banked participant `i`'s own flag falls if it does not move.
fn own_to_flag(s: &Session, i: usize, run: i64) -> i64 {
    let (c, turn) = live_clock(s, i, run);
    s.control().to_flag(c, turn)
}

/// Live remaining time of participant `i` at `now`, floored at 0: the time
/// until its flag falls if it does not move.
pub fn remaining(s: &Session, i: usize, now: Timestamp) -> i64 {
    match (s.sync_mode, s.participants[i].group_id) {
        // A team clock is one clock: every member shows the distance to the
        // group's flag, set by its first member to run out.
        (SyncMode::PerGroup, Some(group)) => {
            let run = run_time(s, now);
            s.members_of(group)
                .into_iter()
                .map(|m| own_to_flag(s, m, run))
                .min()
                .unwrap_or(0)
        }
        (SyncMode::PerParticipant | SyncMode::PerGroup, _) => own_to_flag(s, i, run_time(s, now)),
        _ => unbanked_remaining(s, i, now),
    }
}

/// Remaining time in the modes without banks of their own.
fn unbanked_remaining(s: &Session, i: usize, now: Timestamp) -> i64 {
    let p = &s.participants[i];
    let live = if p.is_active { elapsed(s, now) } else { 0 };
    let left = match s.sync_mode {
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
            s.global_budget() - global_used(s) - clock_live
        }
        SyncMode::CountUp => s.count_up_cap() - p.time_used_ms - live,
        // Banks run by their time control: `remaining` owns them.
        SyncMode::PerParticipant | SyncMode::PerGroup => return remaining(s, i, now),
    };
    left.max(0)
}

/// A participant as sent on the wire: stored fields plus the live remaining time.
#[derive(Debug, Serialize)]
pub struct ParticipantView<'a> {
    #[serde(flatten)]
    pub stored: &'a Participant,
    pub time_remaining_ms: i64,
    /// The live values of the session's time control, if it has one.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub clock: Option<Face>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_control: Option<&'a TimeControl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<&'a str>,
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
        time_control: s.time_control.as_ref(),
        extension_ms: s.extension_ms,
        webhook_url: s.webhook_url.as_deref(),
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
    /// Soft close: a bid is a switch, and its answer shows the extension.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension_ms: Option<i64>,
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
        extension_ms: s.extension_ms,
    }
}

fn participant_views(s: &Session, now: Timestamp) -> Vec<ParticipantView<'_>> {
    let run = run_time(s, now);
    let remaining = remaining_all(s, now, run);
    let faces = s.banked() && s.time_control.is_some();
    s.participants
        .iter()
        .zip(remaining)
        .enumerate()
        .map(|(i, (p, time_remaining_ms))| ParticipantView {
            stored: p,
            time_remaining_ms,
            clock: faces.then(|| {
                let (c, turn) = live_clock(s, i, run);
                s.control().face(c, turn, p.cycle_count)
            }),
        })
        .collect()
}

/// Every participant's [`remaining`] in one pass: a team's members share one
/// value, so `per_group` takes each group's minimum once instead of per member.
fn remaining_all(s: &Session, now: Timestamp, run: i64) -> Vec<i64> {
    match s.sync_mode {
        SyncMode::PerGroup => {}
        SyncMode::PerParticipant => {
            return (0..s.participants.len())
                .map(|i| own_to_flag(s, i, run))
                .collect();
        }
        _ => {
            return (0..s.participants.len())
                .map(|i| unbanked_remaining(s, i, now))
                .collect();
        }
    }
    let own: Vec<i64> = (0..s.participants.len())
        .map(|i| own_to_flag(s, i, run))
        .collect();
    let mut team: HashMap<Option<GroupId>, i64> = HashMap::new();
    for (p, &t) in s.participants.iter().zip(&own) {
        team.entry(p.group_id)
            .and_modify(|m| *m = (*m).min(t))
            .or_insert(t);
    }
    s.participants
        .iter()
        .zip(own)
        .map(|(p, t)| match p.group_id {
            Some(_) => team[&p.group_id],
            None => t,
        })
        .collect()
}
