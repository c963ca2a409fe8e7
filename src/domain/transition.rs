//! Commands and the pure transitions they cause.
//!
//! Every command first *settles* the session: timeouts whose deadline has
//! passed are applied at their deadline instant, exactly as the scheduler would
//! have applied them. A command arriving after a deadline therefore acts on the
//! state the server should already be in (a move made after the flag fell does
//! not count), and the scheduler and a client can never both apply the same
//! timeout: whichever write wins the compare-and-set carries it.

use thiserror::Error;

use super::events::{Event, EventKind};
use super::ids::{ParticipantId, SessionId, Timestamp};
use super::session::{Session, Status, SyncMode, TimeoutKind};
use super::time_control::{Clock, PLAIN, TimeControl};
use super::timing::{cycle_budget, deadline, elapsed, remaining};

/// Upper bound on timeouts applied in one write. Only `per_cycle` with
/// `skip_cycle` can chain without end; if a session was left alone for that many
/// cycles the rest is applied by the next write.
pub const MAX_TIMEOUTS_PER_WRITE: usize = 100;

/// What a client (or the scheduler) asks of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Start,
    Switch {
        /// Hand the turn to this participant instead of the next in order.
        next_participant_id: Option<ParticipantId>,
        /// Refuse the switch unless the session is still at this version.
        expected_version: Option<u64>,
        /// Who asks, when the caller is scoped to one participant (a
        /// participant token): only the holder of the turn may pass it on.
        by: Option<ParticipantId>,
    },
    Pause,
    Resume,
    Complete,
    /// Apply every timeout that is due at `now`; does nothing otherwise.
    Timeout,
}

impl Command {
    /// A stable lowercase name, for metric labels and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Start => "start",
            Command::Switch { .. } => "switch",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Complete => "complete",
            Command::Timeout => "timeout",
        }
    }
}

/// Why a command was refused. The state is left untouched by a refused command
/// (but timeouts settled before it are still written).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DomainError {
    #[error("Session {session_id} {verb} (current status: {})", status.as_str())]
    InvalidTransition {
        session_id: SessionId,
        status: Status,
        /// e.g. "cannot be started", "not running".
        verb: &'static str,
    },
    #[error("Session is at version {actual}, not the expected version {expected}")]
    VersionMismatch { expected: u64, actual: u64 },
    #[error("next_participant_id {0} is not a participant of this session")]
    UnknownParticipant(ParticipantId),
    #[error("next_participant_id {0} has expired and cannot take the turn")]
    ParticipantExpired(ParticipantId),
    #[error("It is not participant {0}'s turn")]
    NotYourTurn(ParticipantId),
}

/// A successful write: the next state (version already bumped) and its events.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub session: Session,
    pub events: Vec<Event>,
}

/// The outcome of [`decide`]: what to write, and whether the command itself
/// succeeded. Both can be set: a refused command may still have settled a
/// timeout that must be written.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub write: Option<Transition>,
    pub result: Result<(), DomainError>,
}

/// The one pure transition function: `s` is the stored state, `now` the server time.
pub fn decide(s: &Session, cmd: &Command, now: Timestamp) -> Decision {
    let expected_version = match cmd {
        Command::Switch {
            expected_version, ..
        } => *expected_version,
        _ => None,
    };
    if let Some(expected) = expected_version
        && expected != s.version
    {
        return Decision {
            write: None,
            result: Err(DomainError::VersionMismatch {
                expected,
                actual: s.version,
            }),
        };
    }

    let mut next = s.clone();
    let mut events = Vec::new();
    settle(&mut next, now, &mut events);
    let settled = !events.is_empty();
    // Each command checks everything before it mutates, so a refusal leaves
    // `next` exactly as settled.
    let result = match cmd {
        // The client decided on the version it named; a timeout settled since
        // means it no longer describes the state, so the switch is refused
        // (and the timeout written, at the next version).
        Command::Switch { .. } if settled && expected_version.is_some() => {
            Err(DomainError::VersionMismatch {
                expected: s.version,
                actual: s.version + 1,
            })
        }
        // Turn ownership is judged on the settled state: a timeout that
        // already passed the turn hands it to the next participant.
        Command::Switch { by: Some(by), .. }
            if next.status == Status::Running && !holds_turn(&next, *by) =>
        {
            Err(DomainError::NotYourTurn(*by))
        }
        Command::Start => start(&mut next, now, &mut events),
        Command::Switch {
            next_participant_id,
            ..
        } => switch(&mut next, *next_participant_id, now, &mut events),
        Command::Pause => pause(&mut next, now, &mut events),
        Command::Resume => resume(&mut next, now, &mut events),
        Command::Complete => complete(&mut next, now, &mut events),
        Command::Timeout => Ok(()),
    };
    let write = (!events.is_empty()).then(|| {
        next.version = s.version + 1;
        next.updated_at = now;
        Transition {
            session: next,
            events,
        }
    });
    Decision { write, result }
}

/// Whether `p` may pass the turn on: it is the active participant, or (team
/// clocks) a member of the active group.
fn holds_turn(s: &Session, p: ParticipantId) -> bool {
    if s.active_participant_id == Some(p) {
        return true;
    }
    s.active_group_id.is_some()
        && s.participants
            .iter()
            .any(|x| x.participant_id == p && x.group_id == s.active_group_id)
}

fn refuse(s: &Session, verb: &'static str) -> Result<(), DomainError> {
    Err(DomainError::InvalidTransition {
        session_id: s.session_id,
        status: s.status,
        verb,
    })
}

fn start(s: &mut Session, now: Timestamp, events: &mut Vec<Event>) -> Result<(), DomainError> {
    if s.status != Status::Pending {
        return refuse(s, "cannot be started");
    }
    s.status = Status::Running;
    s.session_started_at = Some(now);
    s.cycle_started_at = Some(now);
    s.cycle_time_used_ms = 0;
    set_active(s, 0);
    events.push(participant_event(
        s,
        EventKind::SessionStarted,
        0,
        now,
        None,
    ));
    Ok(())
}

fn switch(
    s: &mut Session,
    target: Option<ParticipantId>,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<(), DomainError> {
    if s.status != Status::Running {
        return refuse(s, "not running");
    }
    let Some(active) = s.active_index() else {
        return refuse(s, "has no active participant");
    };
    let target = match target {
        Some(id) => {
            let i = s.index_of(id).ok_or(DomainError::UnknownParticipant(id))?;
            if s.participants[i].has_expired {
                return Err(DomainError::ParticipantExpired(id));
            }
            i
        }
        // While running, the active unit itself is eligible, so this always finds one.
        None => next_unit(s, active).unwrap_or(active),
    };

    let outgoing = s.running_indices();
    let charged = charge(s, now);
    // Handing the turn on is a move; restarting one's own cycle (a lone
    // participant, or a switch to oneself) is not, and earns nothing.
    let passes_turn = !outgoing.contains(&target);
    if s.time_control.is_some() && s.banked() && !passes_turn {
        // Under a time control the turn then simply goes on, as after a
        // pause and resume: its delay and period keep running, and the move
        // count that stages follow does not grow.
        set_active(s, target);
    } else {
        let turn = s.cycle_time_used_ms;
        let credits = passes_turn && s.banked();
        for &i in &outgoing {
            let p = &mut s.participants[i];
            p.cycle_count += 1;
            if credits {
                let mut c = Clock::of(p);
                match &s.time_control {
                    None => c.bank += s.increment_ms,
                    Some(tc) => tc.on_move(&mut c, turn, p.cycle_count),
                }
                c.store(p);
            }
        }
        s.cycle_time_used_ms = 0;
        set_active(s, target);
    }
    if let Some(TimeControl::SoftClose {
        window_ms,
        max_extension_ms,
    }) = s.time_control
    {
        soft_close(s, window_ms, max_extension_ms);
    }
    s.cycle_started_at = Some(now);
    events.push(participant_event(
        s,
        EventKind::CycleSwitched,
        active,
        now,
        Some(charged),
    ));
    Ok(())
}

/// A switch with less than `window` left on the session clock puts it back
/// to `window`, as far as the extensions granted so far allow.
fn soft_close(s: &mut Session, window: i64, max_extension: Option<i64>) {
    let left = s.global_budget() - s.participants.iter().map(|p| p.time_used_ms).sum::<i64>();
    let granted = s.extension_ms.unwrap_or(0);
    let mut add = (window - left).max(0);
    if let Some(max) = max_extension {
        add = add.min(max - granted);
    }
    s.extension_ms = Some(granted + add);
}

fn pause(s: &mut Session, now: Timestamp, events: &mut Vec<Event>) -> Result<(), DomainError> {
    if s.status != Status::Running {
        return refuse(s, "not running");
    }
    let charged = charge(s, now);
    s.status = Status::Paused;
    let active = s.active_index().unwrap_or(0);
    events.push(participant_event(
        s,
        EventKind::SessionPaused,
        active,
        now,
        Some(charged),
    ));
    Ok(())
}

fn resume(s: &mut Session, now: Timestamp, events: &mut Vec<Event>) -> Result<(), DomainError> {
    if s.status != Status::Paused {
        return refuse(s, "not paused");
    }
    s.status = Status::Running;
    s.cycle_started_at = Some(now);
    let active = s.active_index().unwrap_or(0);
    events.push(participant_event(
        s,
        EventKind::SessionResumed,
        active,
        now,
        None,
    ));
    Ok(())
}

fn complete(s: &mut Session, now: Timestamp, events: &mut Vec<Event>) -> Result<(), DomainError> {
    if s.status.is_terminal() {
        return refuse(s, "cannot be completed");
    }
    let charged = (s.status == Status::Running).then(|| charge(s, now));
    s.status = Status::Completed;
    s.session_completed_at = Some(now);
    s.cycle_started_at = None;
    let event = match s.active_index() {
        Some(active) => participant_event(s, EventKind::SessionCompleted, active, now, charged),
        None => Event::new(EventKind::SessionCompleted, now),
    };
    events.push(event);
    // As in v2: a completed session has nobody on turn.
    s.active_participant_id = None;
    s.active_group_id = None;
    for p in &mut s.participants {
        p.is_active = false;
    }
    Ok(())
}

/// Applies every timeout due at `now`, each at its own deadline instant.
fn settle(s: &mut Session, now: Timestamp, events: &mut Vec<Event>) {
    for _ in 0..MAX_TIMEOUTS_PER_WRITE {
        match deadline(s) {
            Some(due) if due <= now => time_out(s, due, events),
            _ => return,
        }
    }
}

/// The running cycle reached its deadline `due`: charge the full budget and
/// apply `action_on_timeout`. The next cycle, if any, starts at `due`, so chained
/// timeouts keep exact cadence however late they are detected.
fn time_out(s: &mut Session, due: Timestamp, events: &mut Vec<Event>) {
    let Some(active) = s.active_index() else {
        return;
    };
    let outgoing = s.running_indices();
    let charged = charge(s, due);
    for &i in &outgoing {
        s.participants[i].cycle_count += 1;
    }
    s.expired_participant_id = Some(s.participants[active].participant_id);

    // The global clock is shared: once it is out, nobody has time left.
    let skip =
        s.action_on_timeout.kind != TimeoutKind::EndSession && s.sync_mode != SyncMode::Global;
    // In per_cycle a skipped participant gets a fresh cycle next turn, so it
    // is not out of the game; in the other modes its own time is gone.
    let marks_expired = !skip || s.sync_mode != SyncMode::PerCycle;
    if marks_expired {
        for &i in &outgoing {
            s.participants[i].has_expired = true;
        }
    }
    events.push(participant_event(
        s,
        EventKind::ParticipantExpired,
        active,
        due,
        Some(charged),
    ));

    if skip && let Some(next) = next_unit(s, active) {
        s.cycle_time_used_ms = 0;
        set_active(s, next);
        s.cycle_started_at = Some(due);
        return;
    }
    s.status = Status::Expired;
    s.session_completed_at = Some(due);
    s.cycle_started_at = None;
    let mut ended = Event::new(EventKind::SessionExpired, due);
    ended.participant_id = s.expired_participant_id;
    events.push(ended);
}

/// Charges the running cycle's elapsed time (capped at its budget, so no bank
/// goes negative) to the participants whose clocks ran, and stops the cycle.
/// Returns the time charged.
fn charge(s: &mut Session, until: Timestamp) -> i64 {
    let charged = elapsed(s, until).min(cycle_budget(s).unwrap_or(0));
    let banked = s.banked();
    let turn = s.cycle_time_used_ms;
    let tc = s.time_control.as_ref().unwrap_or(&PLAIN);
    for p in &mut s.participants {
        // `is_active` marks exactly the participants whose clocks run.
        if p.is_active {
            p.time_used_ms += charged;
            if banked {
                let mut c = Clock::of(p);
                tc.run(&mut c, turn, charged);
                c.store(p);
            }
        } else if banked && *tc == TimeControl::Hourglass {
            p.total_time_ms += charged;
        }
    }
    if s.tracks_turn() {
        s.cycle_time_used_ms += charged;
    }
    s.cycle_started_at = None;
    charged
}

/// Makes participant `i` active (in `per_group`, with its whole group).
fn set_active(s: &mut Session, i: usize) {
    let p = &s.participants[i];
    s.active_participant_id = Some(p.participant_id);
    s.active_group_id = match s.sync_mode {
        SyncMode::PerGroup => p.group_id,
        _ => None,
    };
    for p in &mut s.participants {
        p.is_active = false;
    }
    for i in s.running_indices() {
        s.participants[i].is_active = true;
    }
}

/// The positions at which each turn-taking unit starts, in turn order: every
/// participant, or in `per_group` each group's first member (groups take turns
/// in order of first appearance).
fn units(s: &Session) -> Vec<usize> {
    if s.sync_mode != SyncMode::PerGroup {
        return (0..s.participants.len()).collect();
    }
    let mut seen = std::collections::HashSet::new();
    (0..s.participants.len())
        .filter(|&i| seen.insert(s.participants[i].group_id))
        .collect()
}

/// The unit after `from`'s own that has not expired, wrapping around, with
/// `from`'s own unit considered last (so a lone survivor keeps the turn).
fn next_unit(s: &Session, from: usize) -> Option<usize> {
    let units = units(s);
    let group = s.participants[from].group_id;
    let own = units.iter().position(|&u| match s.sync_mode {
        SyncMode::PerGroup => s.participants[u].group_id == group,
        _ => u == from,
    })?;
    (1..=units.len())
        .map(|k| units[(own + k) % units.len()])
        .find(|&u| !s.participants[u].has_expired)
}

fn participant_event(
    s: &Session,
    kind: EventKind,
    i: usize,
    at: Timestamp,
    charged: Option<i64>,
) -> Event {
    let p = &s.participants[i];
    Event {
        kind,
        at,
        participant_id: Some(p.participant_id),
        group_id: p.group_id,
        time_remaining_ms: Some(remaining(s, i, at)),
        time_elapsed_ms: charged,
    }
}
