//! Time controls of real games: how a banked clock runs inside a turn and what
//! a move earns (API.md "Time controls"; the rules with worked examples are in
//! docs/TIME-CONTROLS.md).
//!
//! Like the rest of the domain this is pure and "calculates, does not count":
//! a participant's stored [`Clock`] is its value as of `cycle_started_at`, and
//! [`TimeControl::run`] derives the clock any time later. Nothing is written
//! when a delay ends or a byo-yomi period is lost; only a move, a pause and the
//! final flag write, and the flag's instant is [`TimeControl::to_flag`] away
//! from the cycle's start.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::create::{FieldError, NewParticipant, int_in, optional, required_at};
use super::session::{Participant, SyncMode};

/// A session's time control, as created and echoed in the state. A banked
/// session without one keeps the v2 rule: the Fischer increment `increment_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TimeControl {
    /// After a move the bank gains `increment_ms`.
    Fischer {
        increment_ms: i64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stages: Vec<Stage>,
    },
    /// After a move the bank gets back what the turn used, up to `delay_ms`.
    Bronstein {
        delay_ms: i64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stages: Vec<Stage>,
    },
    /// US delay: the bank waits `delay_ms` at the start of every turn.
    SimpleDelay {
        delay_ms: i64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stages: Vec<Stage>,
    },
    /// Japanese byo-yomi: once the bank is spent, `periods` periods of
    /// `period_ms`; a move inside a period keeps it.
    Byoyomi { periods: u32, period_ms: i64 },
    /// Canadian overtime: once the bank is spent, `moves` moves per `period_ms`.
    Canadian { moves: u32, period_ms: i64 },
    /// Two sides: what one spends, the other gains.
    Hourglass,
    /// Auctions (`global` only): a switch with less than `window_ms` left puts
    /// the session clock back to `window_ms`, up to `max_extension_ms` in all.
    SoftClose {
        window_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_extension_ms: Option<i64>,
    },
}

/// A stage of a multi-stage control: `add_ms` joins the bank when a
/// participant completes its `after_moves`-th move (FIDE's "40 moves in 90
/// minutes, then 30 minutes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub after_moves: u64,
    pub add_ms: i64,
}

/// A participant's overtime as of `cycle_started_at` (byo-yomi and Canadian
/// only). The live values derived from it are the participant's
/// `periods_left`, `moves_left` and `period_remaining_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overtime {
    /// Byo-yomi: periods not yet lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periods_left: Option<u32>,
    /// Canadian: moves still owed in the current period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moves_left: Option<u32>,
    /// Time used of the current period before the cycle started: a pause
    /// inside a period keeps what is left of it.
    #[serde(default)]
    pub period_used_ms: i64,
}

/// What a participant's clock holds: its main-time bank and its overtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    pub bank: i64,
    pub overtime: Option<Overtime>,
}

impl Clock {
    /// The stored clock of `p`.
    pub fn of(p: &Participant) -> Self {
        Self {
            bank: p.total_time_ms,
            overtime: p.overtime,
        }
    }

    /// Writes the clock back into `p`.
    pub fn store(self, p: &mut Participant) {
        p.total_time_ms = self.bank;
        p.overtime = self.overtime;
    }
}

/// The live values a time control adds to a participant on the wire (each
/// present only where the control has it; names are in openapi.yaml).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Face {
    /// The main-time bank, live: what a clock face shows before overtime.
    pub bank_remaining_ms: i64,
    /// How much longer this turn can last at no cost to the bank.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_remaining_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub periods_left: Option<u32>,
    /// Canadian: moves owed in the current period; stages: moves to the next stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moves_left: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_remaining_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_overtime: Option<bool>,
}

/// The rule of a banked session without a `time_control` while a turn runs:
/// the bank simply runs down (its increment is the session's `increment_ms`).
pub static PLAIN: TimeControl = TimeControl::Fischer {
    increment_ms: 0,
    stages: Vec::new(),
};

impl TimeControl {
    /// The wire name of the control.
    pub fn name(&self) -> &'static str {
        match self {
            TimeControl::Fischer { .. } => "fischer",
            TimeControl::Bronstein { .. } => "bronstein",
            TimeControl::SimpleDelay { .. } => "simple_delay",
            TimeControl::Byoyomi { .. } => "byoyomi",
            TimeControl::Canadian { .. } => "canadian",
            TimeControl::Hourglass => "hourglass",
            TimeControl::SoftClose { .. } => "soft_close",
        }
    }

    /// A new participant's overtime.
    pub fn initial_overtime(&self) -> Option<Overtime> {
        match *self {
            TimeControl::Byoyomi { periods, .. } => Some(Overtime {
                periods_left: Some(periods),
                ..Overtime::default()
            }),
            TimeControl::Canadian { moves, .. } => Some(Overtime {
                moves_left: Some(moves),
                ..Overtime::default()
            }),
            _ => None,
        }
    }

    /// Time from now until the flag of `c` falls if it runs without a move,
    /// its turn having used `turn_ms` already.
    pub fn to_flag(&self, c: Clock, turn_ms: i64) -> i64 {
        let ot = c.overtime.unwrap_or_default();
        match *self {
            TimeControl::SimpleDelay { delay_ms, .. } => (delay_ms - turn_ms).max(0) + c.bank,
            TimeControl::Byoyomi { period_ms, .. } => {
                c.bank + i64::from(ot.periods_left.unwrap_or(0)) * period_ms - ot.period_used_ms
            }
            TimeControl::Canadian { period_ms, .. } => c.bank + period_ms - ot.period_used_ms,
            _ => c.bank,
        }
    }

    /// Runs `c` for `e` ms of a turn that had used `turn_ms` before; `e` is at
    /// most [`Self::to_flag`], so the bank never goes negative. A byo-yomi
    /// period that runs out on the instant is lost (as the flag falls on its
    /// instant).
    pub fn run(&self, c: &mut Clock, turn_ms: i64, e: i64) {
        let costs = match *self {
            TimeControl::SimpleDelay { delay_ms, .. } => (e - (delay_ms - turn_ms).max(0)).max(0),
            _ => e,
        };
        let from_bank = costs.min(c.bank);
        c.bank -= from_bank;
        let over = costs - from_bank;
        let Some(ot) = c.overtime.as_mut() else {
            return;
        };
        match *self {
            TimeControl::Byoyomi { period_ms, .. } => {
                let into = ot.period_used_ms + over;
                let left = i64::from(ot.periods_left.unwrap_or(0));
                let kept = (left - into / period_ms).max(0);
                ot.periods_left = Some(kept as u32);
                ot.period_used_ms = if kept == 0 { 0 } else { into % period_ms };
            }
            TimeControl::Canadian { .. } => ot.period_used_ms += over,
            _ => {}
        }
    }

    /// Credits a move to the clock `c` of a participant that has now completed
    /// `moves` moves, its turn having run `turn_ms` in all.
    pub fn on_move(&self, c: &mut Clock, turn_ms: i64, moves: u64) {
        match *self {
            TimeControl::Fischer { increment_ms, .. } => c.bank += increment_ms,
            TimeControl::Bronstein { delay_ms, .. } => c.bank += turn_ms.min(delay_ms),
            _ => {}
        }
        let in_overtime = c.bank == 0;
        if let Some(ot) = c.overtime.as_mut() {
            match *self {
                // The next turn starts a fresh period.
                TimeControl::Byoyomi { .. } => ot.period_used_ms = 0,
                TimeControl::Canadian { moves: quota, .. } if in_overtime => {
                    match ot.moves_left.unwrap_or(quota).saturating_sub(1) {
                        0 => {
                            ot.moves_left = Some(quota);
                            ot.period_used_ms = 0;
                        }
                        owed => ot.moves_left = Some(owed),
                    }
                }
                _ => {}
            }
        }
        c.bank += self
            .stages()
            .iter()
            .filter(|st| st.after_moves == moves)
            .map(|st| st.add_ms)
            .sum::<i64>();
    }

    /// The live values of clock `c` (already run forward), its turn having
    /// used `turn_ms` (0 while waiting), after `moves` completed moves.
    pub fn face(&self, c: Clock, turn_ms: i64, moves: u64) -> Face {
        let ot = c.overtime.unwrap_or_default();
        let mut face = Face {
            bank_remaining_ms: c.bank,
            delay_remaining_ms: None,
            periods_left: None,
            moves_left: None,
            period_remaining_ms: None,
            in_overtime: None,
        };
        match *self {
            TimeControl::Bronstein { delay_ms, .. } | TimeControl::SimpleDelay { delay_ms, .. } => {
                face.delay_remaining_ms = Some((delay_ms - turn_ms).max(0));
            }
            TimeControl::Byoyomi { period_ms, .. } => {
                let left = ot.periods_left.unwrap_or(0);
                face.periods_left = Some(left);
                face.period_remaining_ms = Some(if left == 0 {
                    0
                } else {
                    period_ms - ot.period_used_ms
                });
                face.in_overtime = Some(c.bank == 0);
            }
            TimeControl::Canadian { period_ms, .. } => {
                face.moves_left = ot.moves_left.map(u64::from);
                face.period_remaining_ms = Some(period_ms - ot.period_used_ms);
                face.in_overtime = Some(c.bank == 0);
            }
            _ => {}
        }
        if let Some(next) = self.stages().iter().find(|st| st.after_moves > moves) {
            face.moves_left = Some(next.after_moves - moves);
        }
        face
    }

    /// The stages of a control that has them (else none).
    pub fn stages(&self) -> &[Stage] {
        match self {
            TimeControl::Fischer { stages, .. }
            | TimeControl::Bronstein { stages, .. }
            | TimeControl::SimpleDelay { stages, .. } => stages,
            _ => &[],
        }
    }

    /// Whether the control needs the turn's running time across pauses
    /// (`cycle_time_used_ms`): the delays, which belong to a turn.
    pub fn tracks_turn(&self) -> bool {
        matches!(
            self,
            TimeControl::Bronstein { .. } | TimeControl::SimpleDelay { .. }
        )
    }
}

// ------------------------------------------------------------------ parsing

/// Bounds from API.md "Time controls".
pub const MAX_INCREMENT_MS: i64 = 3_600_000;
pub const MAX_DELAY_MS: i64 = 3_600_000;
pub const MAX_PERIODS: i64 = 100;
pub const MAX_PERIOD_MS: i64 = 86_400_000;
pub const MIN_PERIOD_MS: i64 = 1_000;
pub const MAX_MOVES: i64 = 1_000;
pub const MAX_STAGES: usize = 10;
pub const MAX_STAGE_ADD_MS: i64 = 86_400_000;

const TYPES: &str = "fischer, bronstein, simple_delay, byoyomi, canadian, hourglass, soft_close";

/// Parses the create body's `time_control` for a session of `mode`, reporting
/// every problem with its field.
pub(super) fn parse(
    v: &Value,
    mode: Option<SyncMode>,
    errs: &mut Vec<FieldError>,
) -> Option<TimeControl> {
    let Some(obj) = v.as_object() else {
        errs.push(FieldError::new("time_control", "must be an object"));
        return None;
    };
    let before = errs.len();
    let mut param = |key: &str, min: i64, max: i64| {
        let field = format!("time_control.{key}");
        required_at(obj, key, &field, errs).and_then(|v| int_in(v, &field, min, max, errs))
    };
    let kind = obj.get("type").and_then(Value::as_str);
    let tc = match kind {
        Some("fischer") => {
            param("increment_ms", 0, MAX_INCREMENT_MS).map(|increment_ms| TimeControl::Fischer {
                increment_ms,
                stages: Vec::new(),
            })
        }
        Some("bronstein") => {
            param("delay_ms", 0, MAX_DELAY_MS).map(|delay_ms| TimeControl::Bronstein {
                delay_ms,
                stages: Vec::new(),
            })
        }
        Some("simple_delay") => {
            param("delay_ms", 0, MAX_DELAY_MS).map(|delay_ms| TimeControl::SimpleDelay {
                delay_ms,
                stages: Vec::new(),
            })
        }
        Some("byoyomi") => {
            let periods = param("periods", 1, MAX_PERIODS);
            let period_ms = param("period_ms", MIN_PERIOD_MS, MAX_PERIOD_MS);
            periods
                .zip(period_ms)
                .map(|(periods, period_ms)| TimeControl::Byoyomi {
                    periods: periods as u32,
                    period_ms,
                })
        }
        Some("canadian") => {
            let moves = param("moves", 1, MAX_MOVES);
            let period_ms = param("period_ms", MIN_PERIOD_MS, MAX_PERIOD_MS);
            moves
                .zip(period_ms)
                .map(|(moves, period_ms)| TimeControl::Canadian {
                    moves: moves as u32,
                    period_ms,
                })
        }
        Some("hourglass") => Some(TimeControl::Hourglass),
        Some("soft_close") => {
            let window_ms = param("window_ms", MIN_PERIOD_MS, MAX_PERIOD_MS);
            let max_extension_ms = optional(obj, "max_extension_ms")
                .and_then(|v| int_in(v, "time_control.max_extension_ms", 0, MAX_PERIOD_MS, errs));
            window_ms.map(|window_ms| TimeControl::SoftClose {
                window_ms,
                max_extension_ms,
            })
        }
        _ => {
            errs.push(FieldError::new(
                "time_control.type",
                format!("must be one of {TYPES}"),
            ));
            None
        }
    };
    let mut tc = tc?;

    if let Some(mode) = mode {
        let fits = match tc {
            TimeControl::SoftClose { .. } => mode == SyncMode::Global,
            _ => matches!(mode, SyncMode::PerParticipant | SyncMode::PerGroup),
        };
        if !fits {
            let needs = match tc {
                TimeControl::SoftClose { .. } => "global",
                _ => "per_participant or per_group",
            };
            errs.push(FieldError::new(
                "time_control.type",
                format!(
                    "{} needs sync_mode {needs}, not {}",
                    tc.name(),
                    mode.as_str()
                ),
            ));
        }
    }
    if let Some(v) = optional(obj, "stages") {
        match &mut tc {
            TimeControl::Fischer { stages, .. }
            | TimeControl::Bronstein { stages, .. }
            | TimeControl::SimpleDelay { stages, .. } => *stages = parse_stages(v, errs),
            _ => errs.push(FieldError::new(
                "time_control.stages",
                "only fischer, bronstein and simple_delay have stages",
            )),
        }
    }
    (errs.len() == before).then_some(tc)
}

fn parse_stages(v: &Value, errs: &mut Vec<FieldError>) -> Vec<Stage> {
    let Some(items) = v.as_array().filter(|a| a.len() <= MAX_STAGES) else {
        errs.push(FieldError::new(
            "time_control.stages",
            format!("must be an array of at most {MAX_STAGES} stages"),
        ));
        return Vec::new();
    };
    let mut out: Vec<Stage> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |f: &str| format!("time_control.stages[{i}].{f}");
        let Some(obj) = item.as_object() else {
            errs.push(FieldError::new(
                format!("time_control.stages[{i}]"),
                "must be an object",
            ));
            continue;
        };
        let after = required_at(obj, "after_moves", &at("after_moves"), errs)
            .and_then(|v| int_in(v, &at("after_moves"), 1, MAX_MOVES, errs));
        let add = required_at(obj, "add_ms", &at("add_ms"), errs)
            .and_then(|v| int_in(v, &at("add_ms"), 0, MAX_STAGE_ADD_MS, errs));
        if let (Some(after), Some(prev)) = (after, out.last())
            && after as u64 <= prev.after_moves
        {
            errs.push(FieldError::new(
                at("after_moves"),
                format!(
                    "must be greater than the previous stage's ({})",
                    prev.after_moves
                ),
            ));
        }
        if let (Some(after), Some(add_ms)) = (after, add) {
            out.push(Stage {
                after_moves: after as u64,
                add_ms,
            });
        }
    }
    out
}

/// The rules a control sets on the participants: hourglass is a duel.
pub(super) fn check_participants(
    tc: &TimeControl,
    mode: Option<SyncMode>,
    participants: Option<&[NewParticipant]>,
    errs: &mut Vec<FieldError>,
) {
    let (Some(participants), TimeControl::Hourglass) = (participants, tc) else {
        return;
    };
    let (sides, unit) = if mode == Some(SyncMode::PerGroup) {
        let groups: HashSet<_> = participants.iter().map(|p| p.group_id).collect();
        (groups.len(), "groups")
    } else {
        (participants.len(), "participants")
    };
    if sides != 2 {
        errs.push(FieldError::new(
            "participants",
            format!("hourglass needs exactly 2 {unit} (got {sides})"),
        ));
    }
}
