//! Time controls: a table of tests per control with its edge cases, the
//! combinations with pause, groups, skip_cycle, turn ownership and settled
//! timeouts, validation, and property tests that banks never go negative and
//! that time is conserved per control.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::tests::{Step, T0, at, body, kinds, pid, run, switch, switch_by, to_command};
use super::time_control::Face;
use super::timing::remaining;
use super::*;

/// A started-or-not session of `mode` with one bank per participant and `tc`
/// as its time control (`extra` merged into the body).
fn game_in(mode: SyncMode, tc: Value, banks: &[i64], extra: Value) -> Session {
    let mut b = body(mode, banks.len(), extra);
    b["time_control"] = tc;
    for (i, bank) in banks.iter().enumerate() {
        b["participants"][i]["total_time_ms"] = json!(bank);
    }
    NewSession::parse(&b).unwrap().into_created(T0).session
}

/// A two-player chess game under `tc`, started at 0.
fn game(tc: Value, banks: &[i64]) -> Session {
    run(
        &game_in(SyncMode::PerParticipant, tc, banks, json!({})),
        Command::Start,
        at(0),
    )
}

fn face(s: &Session, i: usize, t: i64) -> Face {
    view(s, at(t)).participants[i]
        .clock
        .expect("a time control has a face")
}

fn left(s: &Session, i: usize, t: i64) -> i64 {
    remaining(s, i, at(t))
}

fn bank(s: &Session, i: usize) -> i64 {
    s.participants[i].total_time_ms
}

/// Nothing to write at `t`: no timeout is due (a delay ending or a period
/// lost is derived, never written).
fn quiet(s: &Session, t: i64) -> bool {
    decide(s, &Command::Timeout, at(t)).write.is_none()
}

fn to(i: usize) -> Command {
    Command::Switch {
        next_participant_id: Some(pid(i)),
        expected_version: None,
        by: None,
    }
}

// ------------------------------------------------------------------ fischer

#[test]
fn explicit_fischer_is_the_v2_increment() {
    let s = game(
        json!({"type": "fischer", "increment_ms": 2000}),
        &[60_000, 60_000],
    );
    assert_eq!(s.increment_ms, 2000, "echoed in the v2 field");
    let s = run(&s, switch(), at(3000));
    assert_eq!(bank(&s, 0), 60_000 - 3000 + 2000);
    assert_eq!(face(&s, 0, 3000).moves_left, None, "no stages, no count");
    assert_eq!(deadline(&s), Some(at(63_000)));
}

#[test]
fn stages_add_their_time_on_the_move_that_completes_them() {
    // FIDE: 40 moves in 90 minutes, then 30 minutes, 30 s per move (here scaled).
    let tc = json!({"type": "fischer", "increment_ms": 1000,
        "stages": [{"after_moves": 2, "add_ms": 30_000}, {"after_moves": 3, "add_ms": 5_000}]});
    let mut s = game(tc, &[60_000, 60_000]);
    assert_eq!(face(&s, 0, 0).moves_left, Some(2));
    for t in [1000, 2000, 3000] {
        s = run(&s, switch(), at(t));
    }
    // Participant 0 made moves 1 and 2 (1 s each): +1 s each, and stage 1.
    assert_eq!(s.participants[0].cycle_count, 2);
    assert_eq!(bank(&s, 0), 60_000 - 2000 + 2000 + 30_000);
    assert_eq!(face(&s, 0, 3000).moves_left, Some(1));
    assert_eq!(face(&s, 1, 3000).moves_left, Some(1));
    let s = run(&s, switch(), at(4000));
    assert_eq!(bank(&s, 1), 60_000 - 2000 + 2000 + 30_000);
    let s = run(&run(&s, switch(), at(5000)), switch(), at(6000));
    assert_eq!(bank(&s, 0), 60_000 - 3000 + 3000 + 35_000);
    assert_eq!(face(&s, 0, 6000).moves_left, None, "past the last stage");
}

#[test]
fn a_stage_reached_by_a_move_that_also_flags_is_not_added() {
    let tc = json!({"type": "fischer", "increment_ms": 0,
        "stages": [{"after_moves": 1, "add_ms": 60_000}]});
    let s = game(tc, &[10_000, 10_000]);
    // The move lands exactly on the flag: the timeout settles first.
    let d = decide(&s, &switch(), at(10_000));
    assert!(d.result.is_err());
    let w = d.write.unwrap();
    assert_eq!(w.session.status, Status::Expired);
    assert_eq!(bank(&w.session, 0), 0);
    assert_eq!(
        kinds(&w),
        [EventKind::ParticipantExpired, EventKind::SessionExpired]
    );
    // One millisecond earlier it counts.
    let s = run(&s, switch(), at(9_999));
    assert_eq!(bank(&s, 0), 1 + 60_000);
}

// ---------------------------------------------------------------- bronstein

#[test]
fn bronstein_refunds_what_the_turn_used_up_to_the_delay() {
    let s = game(
        json!({"type": "bronstein", "delay_ms": 3000}),
        &[60_000, 60_000],
    );
    assert_eq!(deadline(&s), Some(at(60_000)), "the refund needs a move");
    let f = face(&s, 0, 1000);
    assert_eq!(
        (f.delay_remaining_ms, f.bank_remaining_ms),
        (Some(2000), 59_000)
    );
    assert_eq!(left(&s, 0, 1000), 59_000);
    // A quick move costs nothing; a slow one costs what exceeds the delay.
    let s = run(&s, switch(), at(1000));
    assert_eq!(bank(&s, 0), 60_000);
    let s = run(&s, switch(), at(11_000));
    assert_eq!(bank(&s, 1), 60_000 - 10_000 + 3000);
    // A move exactly at the end of the delay costs nothing.
    let s = run(&s, switch(), at(14_000));
    assert_eq!(bank(&s, 0), 60_000);
    assert_eq!(s.participants[0].time_used_ms, 4000);
    // The waiting side sees its full delay ahead.
    assert_eq!(face(&s, 0, 14_000).delay_remaining_ms, Some(3000));
}

#[test]
fn bronstein_flag_falls_when_the_bank_is_spent_even_inside_the_delay() {
    let s = game(
        json!({"type": "bronstein", "delay_ms": 5000}),
        &[2000, 60_000],
    );
    assert_eq!(deadline(&s), Some(at(2000)));
    let s = run(&s, Command::Timeout, at(2000));
    assert_eq!(s.status, Status::Expired);
}

#[test]
fn a_pause_inside_a_bronstein_turn_keeps_its_refund() {
    let s = game(
        json!({"type": "bronstein", "delay_ms": 3000}),
        &[60_000, 60_000],
    );
    let s = run(&s, Command::Pause, at(1000));
    assert_eq!(s.cycle_time_used_ms, 1000);
    let s = run(&s, Command::Resume, at(50_000));
    assert_eq!(face(&s, 0, 50_500).delay_remaining_ms, Some(1500));
    let s = run(&s, switch(), at(51_500));
    // The turn ran 2.5 s in all; all of it comes back.
    assert_eq!(bank(&s, 0), 60_000);
    assert_eq!(s.cycle_time_used_ms, 0, "the next turn starts afresh");
}

// ------------------------------------------------------------- simple delay

#[test]
fn simple_delay_holds_the_bank_for_the_first_part_of_each_turn() {
    let s = game(
        json!({"type": "simple_delay", "delay_ms": 5000}),
        &[60_000, 60_000],
    );
    assert_eq!(deadline(&s), Some(at(65_000)));
    assert_eq!(left(&s, 0, 0), 65_000, "the delay is part of the time left");
    assert_eq!(
        left(&s, 1, 0),
        65_000,
        "the waiting side has its delay ahead"
    );
    let f = face(&s, 0, 2000);
    assert_eq!(
        (f.delay_remaining_ms, f.bank_remaining_ms),
        (Some(3000), 60_000)
    );
    let f = face(&s, 0, 8000);
    assert_eq!(
        (f.delay_remaining_ms, f.bank_remaining_ms),
        (Some(0), 57_000)
    );
    assert!(quiet(&s, 8000), "the end of a delay writes nothing");
    // A move exactly at the end of the delay costs nothing.
    let s = run(&s, switch(), at(5000));
    assert_eq!(bank(&s, 0), 60_000);
    let s = run(&s, switch(), at(12_000));
    assert_eq!(bank(&s, 1), 58_000);
}

#[test]
fn a_pause_inside_a_delay_keeps_what_is_left_of_it() {
    let s = game(
        json!({"type": "simple_delay", "delay_ms": 5000}),
        &[60_000, 60_000],
    );
    let s = run(&s, Command::Pause, at(2000));
    assert_eq!(face(&s, 0, 30_000).delay_remaining_ms, Some(3000));
    assert_eq!(left(&s, 0, 30_000), 63_000);
    let s = run(&s, Command::Resume, at(100_000));
    assert_eq!(
        deadline(&s),
        Some(at(163_000)),
        "the delay is not restarted"
    );
    let s = run(&s, switch(), at(104_000));
    assert_eq!(bank(&s, 0), 59_000);
}

#[test]
fn simple_delay_flags_at_delay_plus_bank() {
    let s = game(
        json!({"type": "simple_delay", "delay_ms": 2000}),
        &[1000, 60_000],
    );
    assert!(quiet(&s, 2999));
    let s = run(&s, Command::Timeout, at(3000));
    assert_eq!((s.status, bank(&s, 0)), (Status::Expired, 0));
    assert_eq!(s.participants[0].time_used_ms, 3000);
}

// ----------------------------------------------------------------- byo-yomi

fn byoyomi() -> Value {
    json!({"type": "byoyomi", "periods": 3, "period_ms": 10_000})
}

#[test]
fn byoyomi_periods_follow_the_bank_and_a_move_keeps_its_period() {
    let s = game(byoyomi(), &[5000, 60_000]);
    assert_eq!(deadline(&s), Some(at(35_000)), "bank + 3 periods");
    let f = face(&s, 0, 0);
    assert_eq!(
        (f.periods_left, f.period_remaining_ms, f.in_overtime),
        (Some(3), Some(10_000), Some(false))
    );
    // 2 s into the first period.
    let f = face(&s, 0, 7000);
    assert_eq!(
        (
            f.bank_remaining_ms,
            f.periods_left,
            f.period_remaining_ms,
            f.in_overtime
        ),
        (0, Some(3), Some(8000), Some(true))
    );
    // 3 s into the second: the first is lost, and nothing was written for it.
    assert!(quiet(&s, 18_000));
    let f = face(&s, 0, 18_000);
    assert_eq!(
        (f.periods_left, f.period_remaining_ms),
        (Some(2), Some(7000))
    );
    assert_eq!(left(&s, 0, 18_000), 17_000);

    // A move inside a period keeps it; the next turn starts it afresh.
    let s = run(&s, switch(), at(18_000));
    let p = &s.participants[0];
    assert_eq!((p.total_time_ms, p.time_used_ms), (0, 18_000));
    assert_eq!(
        p.overtime,
        Some(Overtime {
            periods_left: Some(2),
            moves_left: None,
            period_used_ms: 0
        })
    );
    assert_eq!(left(&s, 0, 18_000), 20_000);
    let s = run(&s, switch(), at(19_000));
    assert_eq!(deadline(&s), Some(at(39_000)));
}

#[test]
fn a_move_exactly_at_the_end_of_a_period_is_in_the_next_one() {
    let s = game(byoyomi(), &[5000, 60_000]);
    let s = run(&s, switch(), at(15_000));
    let ot = s.participants[0].overtime.unwrap();
    assert_eq!((ot.periods_left, ot.period_used_ms), (Some(2), 0));
    // And at the end of the last period, the flag has fallen.
    let s = run(&s, switch(), at(16_000));
    let d = decide(&s, &switch(), at(16_000 + 20_000));
    assert!(d.result.is_err());
    assert_eq!(d.write.unwrap().session.status, Status::Expired);
}

#[test]
fn the_last_period_is_not_lost_while_paused() {
    let s = game(
        json!({"type": "byoyomi", "periods": 1, "period_ms": 10_000}),
        &[1000, 60_000],
    );
    // Pause with 1.5 s left in the last period.
    let s = run(&s, Command::Pause, at(9500));
    assert_eq!(s.participants[0].overtime.unwrap().period_used_ms, 8500);
    assert!(quiet(&s, 500_000));
    assert_eq!(face(&s, 0, 500_000).period_remaining_ms, Some(1500));
    let s = run(&s, Command::Resume, at(600_000));
    assert_eq!(deadline(&s), Some(at(601_500)));
    let s = run(&s, Command::Timeout, at(601_500));
    assert_eq!(s.status, Status::Expired);
    let f = face(&s, 0, 601_500);
    assert_eq!(
        (f.periods_left, f.period_remaining_ms, f.in_overtime),
        (Some(0), Some(0), Some(true))
    );
    assert_eq!(left(&s, 0, 601_500), 0);
}

#[test]
fn byoyomi_with_skip_cycle_hands_the_turn_on_when_the_last_period_runs_out() {
    let s = run(
        &game_in(
            SyncMode::PerParticipant,
            byoyomi(),
            &[1000, 1000, 1000],
            json!({"action_on_timeout": {"type": "skip_cycle"}}),
        ),
        Command::Start,
        at(0),
    );
    let s = run(&s, Command::Timeout, at(31_000));
    assert_eq!(s.status, Status::Running);
    assert_eq!(s.active_participant_id, Some(pid(1)));
    assert!(s.participants[0].has_expired);
    assert_eq!(deadline(&s), Some(at(62_000)), "a full turn for the next");
}

// ----------------------------------------------------------------- canadian

#[test]
fn canadian_counts_moves_once_the_bank_is_spent() {
    let tc = json!({"type": "canadian", "moves": 2, "period_ms": 10_000});
    let s = game(tc, &[5000, 600_000]);
    assert_eq!(deadline(&s), Some(at(15_000)));
    // A move in main time does not count toward the period.
    let s = run(&run(&s, switch(), at(1000)), switch(), at(2000));
    assert_eq!(face(&s, 0, 2000).moves_left, Some(2));
    // The bank runs out at 6 s; a move at 8 s is the first of the period.
    let s = run(&run(&s, switch(), at(8000)), switch(), at(9000));
    let f = face(&s, 0, 9000);
    assert_eq!(
        (f.moves_left, f.period_remaining_ms, f.in_overtime),
        (Some(1), Some(8000), Some(true))
    );
    assert_eq!(deadline(&s), Some(at(17_000)), "the period spans turns");
    // The second move completes the period: a new one starts.
    let s = run(&run(&s, switch(), at(12_000)), switch(), at(13_000));
    let f = face(&s, 0, 13_000);
    assert_eq!(
        (f.moves_left, f.period_remaining_ms),
        (Some(2), Some(10_000))
    );
    // A pause inside the period keeps what is left of it.
    let s = run(&s, Command::Pause, at(16_000));
    let s = run(&s, Command::Resume, at(90_000));
    assert_eq!(deadline(&s), Some(at(97_000)));
    let s = run(&s, Command::Timeout, at(97_000));
    assert_eq!(s.status, Status::Expired);
}

// ---------------------------------------------------------------- hourglass

#[test]
fn hourglass_gives_the_other_side_what_one_spends() {
    let s = game(json!({"type": "hourglass"}), &[30_000, 30_000]);
    assert_eq!(left(&s, 1, 4000), 34_000, "the waiting side gains live");
    assert_eq!(face(&s, 1, 4000).bank_remaining_ms, 34_000);
    let s = run(&s, switch(), at(4000));
    assert_eq!((bank(&s, 0), bank(&s, 1)), (26_000, 34_000));
    let s = run(&s, Command::Pause, at(10_000));
    assert_eq!((bank(&s, 0), bank(&s, 1)), (32_000, 28_000));
    assert_eq!(left(&s, 0, 90_000), 32_000, "nothing moves while paused");
    let s = run(&s, Command::Resume, at(90_000));
    assert_eq!(deadline(&s), Some(at(118_000)));
    let s = run(&s, Command::Timeout, at(118_000));
    assert_eq!((bank(&s, 0), bank(&s, 1)), (60_000, 0));
}

#[test]
fn hourglass_between_two_groups() {
    let s = run(
        &game_in(
            SyncMode::PerGroup,
            json!({"type": "hourglass"}),
            &[30_000, 40_000, 30_000, 30_000],
            json!({}),
        ),
        Command::Start,
        at(0),
    );
    let s = run(&s, switch(), at(5000));
    let banks: Vec<i64> = (0..4).map(|i| bank(&s, i)).collect();
    assert_eq!(banks, [25_000, 35_000, 35_000, 35_000]);
    assert_eq!(left(&s, 1, 5000), 25_000, "the team shows its first flag");
}

// --------------------------------------------------------------- soft close

#[test]
fn soft_close_puts_a_late_bid_back_to_the_window_up_to_the_cap() {
    let tc = json!({"type": "soft_close", "window_ms": 5000, "max_extension_ms": 4000});
    let s = run(
        &game_in(
            SyncMode::Global,
            tc,
            &[1000, 1000],
            json!({"total_time_ms": 10_000}),
        ),
        Command::Start,
        at(0),
    );
    assert_eq!(s.extension_ms, Some(0));
    // 6 s left: no extension; exactly 5 s left: none either.
    let s = run(&s, switch(), at(4000));
    let s = run(&s, switch(), at(5000));
    assert_eq!((s.extension_ms, deadline(&s)), (Some(0), Some(at(10_000))));
    // 3 s left: back to 5 s.
    let s = run(&s, switch(), at(7000));
    assert_eq!(
        (s.extension_ms, deadline(&s)),
        (Some(2000), Some(at(12_000)))
    );
    assert_eq!(left(&s, 0, 7000), 5000);
    // Pause and resume extend nothing.
    let s = run(
        &run(&s, Command::Pause, at(11_000)),
        Command::Resume,
        at(50_000),
    );
    assert_eq!(s.extension_ms, Some(2000));
    // 0.5 s left: 4.5 s wanted, 2 s left of the cap.
    let s = run(&s, switch(), at(50_500));
    assert_eq!(
        (s.extension_ms, deadline(&s)),
        (Some(4000), Some(at(53_000)))
    );
    let s = run(&s, switch(), at(52_000));
    assert_eq!(s.extension_ms, Some(4000), "the cap is reached");
    let s = run(&s, Command::Timeout, at(53_000));
    assert_eq!(s.status, Status::Expired);
}

#[test]
fn soft_close_without_a_cap_extends_every_late_switch() {
    let tc = json!({"type": "soft_close", "window_ms": 2000});
    let mut s = run(
        &game_in(
            SyncMode::Global,
            tc,
            &[1000],
            json!({"total_time_ms": 3000}),
        ),
        Command::Start,
        at(0),
    );
    for k in 1..=10 {
        s = run(&s, switch(), at(1500 * k));
        assert_eq!(deadline(&s), Some(at(1500 * k + 2000)));
    }
}

// ------------------------------------------------------------- combinations

#[test]
fn a_switch_that_keeps_the_turn_is_not_a_move() {
    let tc = json!({"type": "simple_delay", "delay_ms": 5000,
        "stages": [{"after_moves": 1, "add_ms": 60_000}]});
    let s = game(tc, &[60_000, 60_000]);
    let s = run(&s, to(0), at(4000));
    assert_eq!(s.participants[0].cycle_count, 0, "no move counted");
    assert_eq!(bank(&s, 0), 60_000, "no stage");
    assert_eq!(
        face(&s, 0, 4000).delay_remaining_ms,
        Some(1000),
        "the delay goes on"
    );
    let s = run(&s, switch(), at(7000));
    assert_eq!(bank(&s, 0), 60_000 - 2000 + 60_000);
    assert_eq!(s.participants[0].cycle_count, 1);
}

#[test]
fn a_team_under_byoyomi_flags_with_its_first_member() {
    let s = run(
        &game_in(
            SyncMode::PerGroup,
            byoyomi(),
            &[5000, 8000, 60_000, 60_000],
            json!({}),
        ),
        Command::Start,
        at(0),
    );
    assert_eq!(deadline(&s), Some(at(35_000)));
    assert_eq!(left(&s, 0, 6000), left(&s, 1, 6000));
    let f0 = face(&s, 0, 6000);
    let f1 = face(&s, 1, 6000);
    assert_eq!((f0.in_overtime, f1.in_overtime), (Some(true), Some(false)));
    let s = run(&s, switch(), at(6000));
    assert_eq!((bank(&s, 0), bank(&s, 1)), (0, 2000));
}

#[test]
fn a_late_move_under_byoyomi_acts_on_the_flagged_state() {
    let s = game_in(
        SyncMode::PerParticipant,
        byoyomi(),
        &[5000, 5000],
        json!({"action_on_timeout": {"type": "skip_cycle"}}),
    );
    let s = run(&s, Command::Start, at(0));
    let v = s.version;
    // Participant 0 flags at 35 s; its move at 36 s is too late, and its
    // token no longer holds the turn.
    let d = decide(&s, &switch_by(0), at(36_000));
    assert_eq!(d.result, Err(DomainError::NotYourTurn(pid(0))));
    let after = d.write.unwrap().session;
    assert_eq!(after.active_participant_id, Some(pid(1)));
    // A switch that named the version it saw is refused as stale.
    let d = decide(
        &s,
        &Command::Switch {
            next_participant_id: None,
            expected_version: Some(v),
            by: None,
        },
        at(36_000),
    );
    assert!(matches!(d.result, Err(DomainError::VersionMismatch { .. })));
}

#[test]
fn auto_action_under_a_time_control_passes_the_turn_with_a_fresh_delay() {
    let s = game_in(
        SyncMode::PerParticipant,
        json!({"type": "simple_delay", "delay_ms": 3000}),
        &[1000, 1000, 1000],
        json!({"action_on_timeout": {"type": "auto_action", "action": "pass"}}),
    );
    let s = run(&s, Command::Start, at(0));
    let s = run(&s, Command::Pause, at(2000));
    let s = run(&s, Command::Resume, at(10_000));
    let s = run(&s, Command::Timeout, at(12_000));
    assert_eq!(s.active_participant_id, Some(pid(1)));
    assert_eq!(s.cycle_time_used_ms, 0);
    assert_eq!(deadline(&s), Some(at(16_000)));
}

// --------------------------------------------------------------- validation

#[test]
fn time_control_validation_names_every_field() {
    let pp = SyncMode::PerParticipant;
    let cases: Vec<(SyncMode, usize, Value, &str)> = vec![
        (pp, 2, json!("fischer"), "time_control"),
        (pp, 2, json!({"type": "sudden_death"}), "time_control.type"),
        (
            pp,
            2,
            json!({"type": "fischer"}),
            "time_control.increment_ms",
        ),
        (
            pp,
            2,
            json!({"type": "fischer", "increment_ms": 3_600_001}),
            "time_control.increment_ms",
        ),
        (
            pp,
            2,
            json!({"type": "bronstein", "delay_ms": -1}),
            "time_control.delay_ms",
        ),
        (
            pp,
            2,
            json!({"type": "simple_delay", "delay_ms": "5s"}),
            "time_control.delay_ms",
        ),
        (
            pp,
            2,
            json!({"type": "byoyomi", "periods": 0, "period_ms": 30_000}),
            "time_control.periods",
        ),
        (
            pp,
            2,
            json!({"type": "byoyomi", "periods": 101, "period_ms": 30_000}),
            "time_control.periods",
        ),
        (
            pp,
            2,
            json!({"type": "byoyomi", "periods": 5, "period_ms": 999}),
            "time_control.period_ms",
        ),
        (
            pp,
            2,
            json!({"type": "canadian", "moves": 1001, "period_ms": 60_000}),
            "time_control.moves",
        ),
        (
            pp,
            2,
            json!({"type": "canadian", "moves": 10}),
            "time_control.period_ms",
        ),
        (pp, 3, json!({"type": "hourglass"}), "participants"),
        (pp, 1, json!({"type": "hourglass"}), "participants"),
        (
            SyncMode::PerGroup,
            6,
            json!({"type": "hourglass"}),
            "participants",
        ),
        (
            pp,
            2,
            json!({"type": "soft_close", "window_ms": 5000}),
            "time_control.type",
        ),
        (
            SyncMode::Global,
            2,
            json!({"type": "fischer", "increment_ms": 0}),
            "time_control.type",
        ),
        (
            SyncMode::PerCycle,
            2,
            json!({"type": "byoyomi", "periods": 1, "period_ms": 1000}),
            "time_control.type",
        ),
        (
            SyncMode::CountUp,
            2,
            json!({"type": "hourglass"}),
            "time_control.type",
        ),
        (
            SyncMode::Global,
            2,
            json!({"type": "soft_close", "window_ms": 500}),
            "time_control.window_ms",
        ),
        (
            SyncMode::Global,
            2,
            json!({"type": "soft_close", "window_ms": 5000, "max_extension_ms": -5}),
            "time_control.max_extension_ms",
        ),
        (
            pp,
            2,
            json!({"type": "byoyomi", "periods": 1, "period_ms": 1000, "stages": []}),
            "time_control.stages",
        ),
        (
            pp,
            2,
            json!({"type": "fischer", "increment_ms": 0, "stages": {}}),
            "time_control.stages",
        ),
        (
            pp,
            2,
            json!({"type": "fischer", "increment_ms": 0, "stages": [1]}),
            "time_control.stages[0]",
        ),
        (
            pp,
            2,
            json!({"type": "fischer", "increment_ms": 0,
            "stages": [{"after_moves": 0, "add_ms": 1}]}),
            "time_control.stages[0].after_moves",
        ),
        (
            pp,
            2,
            json!({"type": "fischer", "increment_ms": 0,
            "stages": [{"after_moves": 40}]}),
            "time_control.stages[0].add_ms",
        ),
        (
            pp,
            2,
            json!({"type": "fischer", "increment_ms": 0,
            "stages": [{"after_moves": 40, "add_ms": 1}, {"after_moves": 40, "add_ms": 1}]}),
            "time_control.stages[1].after_moves",
        ),
        (
            pp,
            2,
            json!({"type": "fischer", "increment_ms": 0,
            "stages": (1..=11).map(|k| json!({"after_moves": k, "add_ms": 1})).collect::<Vec<_>>()}),
            "time_control.stages",
        ),
    ];
    for (mode, n, tc, field) in cases {
        let mut b = body(mode, n, json!({"time_control": tc.clone()}));
        if mode == SyncMode::PerGroup {
            // Three groups of two.
            b["participants"][4]["group_id"] = json!(super::tests::gid(2));
        }
        let errs = NewSession::parse(&b).unwrap_err();
        assert!(
            errs.iter().any(|e| e.field == field),
            "{tc}: wanted {field}, got {errs:?}"
        );
    }

    // The v2 increment and an explicit control must agree.
    let b = body(
        SyncMode::PerParticipant,
        2,
        json!({"increment_ms": 1000, "time_control": {"type": "fischer", "increment_ms": 2000}}),
    );
    assert_eq!(NewSession::parse(&b).unwrap_err()[0].field, "increment_ms");
    let b = body(
        SyncMode::PerParticipant,
        2,
        json!({"increment_ms": 1000, "time_control": {"type": "hourglass"}}),
    );
    assert_eq!(NewSession::parse(&b).unwrap_err()[0].field, "increment_ms");
    let b = body(
        SyncMode::PerParticipant,
        2,
        json!({"increment_ms": 2000, "time_control": {"type": "fischer", "increment_ms": 2000}}),
    );
    assert!(NewSession::parse(&b).is_ok());

    // Every field of a bad control is reported at once.
    let b = body(
        SyncMode::PerParticipant,
        2,
        json!({"time_control": {"type": "byoyomi", "periods": 0, "period_ms": 0}}),
    );
    let fields: Vec<String> = NewSession::parse(&b)
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(fields, ["time_control.periods", "time_control.period_ms"]);
}

#[test]
fn the_state_echoes_the_control() {
    let tc = json!({"type": "bronstein", "delay_ms": 3000,
        "stages": [{"after_moves": 40, "add_ms": 1_800_000}]});
    let s = game(tc.clone(), &[60_000, 60_000]);
    let v = serde_json::to_value(view(&s, at(0))).unwrap();
    assert_eq!(v["time_control"], tc);
    assert!(v.get("extension_ms").is_none());
    // Stored and read back unchanged.
    let stored: Session = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(stored, s);
    // Without a control the wire shape is v2's.
    let plain = run(
        &super::tests::new(SyncMode::PerParticipant, 2, json!({})),
        Command::Start,
        at(0),
    );
    let v = serde_json::to_value(view(&plain, at(0))).unwrap();
    assert!(v.get("time_control").is_none());
    assert!(v["participants"][0].get("bank_remaining_ms").is_none());
    assert!(v["participants"][0].get("overtime").is_none());
}

// ---------------------------------------------------------------- properties

/// The controls the properties run over, with the mode each needs.
fn control() -> impl Strategy<Value = (SyncMode, Value)> {
    let stages = proptest::collection::vec((1u64..4, 0i64..20_000), 0..3).prop_map(|v| {
        let mut after = 0;
        v.into_iter()
            .map(|(gap, add)| {
                after += gap;
                json!({"after_moves": after, "add_ms": add})
            })
            .collect::<Vec<_>>()
    });
    let banked = prop_oneof![Just(SyncMode::PerParticipant), Just(SyncMode::PerGroup)];
    prop_oneof![
        (banked.clone(), 0i64..5000, stages.clone()).prop_map(|(m, inc, st)| (
            m,
            json!({"type": "fischer", "increment_ms": inc, "stages": st})
        )),
        (banked.clone(), 0i64..8000, stages.clone())
            .prop_map(|(m, d, st)| (m, json!({"type": "bronstein", "delay_ms": d, "stages": st}))),
        (banked.clone(), 0i64..8000, stages).prop_map(|(m, d, st)| (
            m,
            json!({"type": "simple_delay", "delay_ms": d, "stages": st})
        )),
        (banked.clone(), 1i64..4, 1000i64..10_000)
            .prop_map(|(m, n, p)| (m, json!({"type": "byoyomi", "periods": n, "period_ms": p}))),
        (banked.clone(), 1i64..4, 1000i64..10_000)
            .prop_map(|(m, n, p)| (m, json!({"type": "canadian", "moves": n, "period_ms": p}))),
        banked.prop_map(|m| (m, json!({"type": "hourglass"}))),
        (1000i64..10_000, proptest::option::of(0i64..10_000)).prop_map(|(w, max)| (
            SyncMode::Global,
            json!({"type": "soft_close", "window_ms": w, "max_extension_ms": max})
        )),
    ]
}

/// A command of a started game (starting and completing have their own tests).
fn step() -> impl Strategy<Value = (Step, i64)> {
    let s = prop_oneof![
        5 => proptest::option::of(0usize..4).prop_map(Step::Switch),
        1 => Just(Step::Pause),
        1 => Just(Step::Resume),
        1 => Just(Step::Timeout),
    ];
    (s, 0i64..15_000)
}

/// What a participant was credited beyond its initial bank, tracked by the
/// test from what it observes (time used per turn, moves), independently of the rules' code.
#[derive(Clone, Debug, Default)]
struct Ledger {
    credits: i64,
    /// Running time of the participant's current turn.
    turn: i64,
}

/// Checks the conservation law of `tc` for every participant of `s`:
/// used + bank = initial + credits (increments, delay credits, stages,
/// hourglass transfers); with overtime, the bank is what the time used left.
fn conserved(
    s: &Session,
    tc: &Value,
    initial: &[i64],
    ledger: &[Ledger],
) -> Result<(), TestCaseError> {
    for (i, p) in s.participants.iter().enumerate() {
        prop_assert!(p.total_time_ms >= 0, "negative bank {p:?}");
        match tc["type"].as_str().unwrap() {
            "byoyomi" | "canadian" => {
                prop_assert_eq!(p.total_time_ms, (initial[i] - p.time_used_ms).max(0));
            }
            "soft_close" => {}
            // What one side spends, the other gains: each member of a side
            // spends the same, so the other side's gain is any member's use.
            "hourglass" => {
                let other_used = s
                    .participants
                    .iter()
                    .filter(|o| {
                        o.participant_id != p.participant_id
                            && (s.sync_mode != SyncMode::PerGroup || o.group_id != p.group_id)
                    })
                    .map(|o| o.time_used_ms)
                    .max()
                    .unwrap_or(0);
                prop_assert_eq!(p.time_used_ms + p.total_time_ms, initial[i] + other_used);
            }
            "simple_delay" => {
                let delay = tc["delay_ms"].as_i64().unwrap();
                let current = ledger[i].turn.min(delay);
                prop_assert_eq!(
                    p.time_used_ms + p.total_time_ms,
                    initial[i] + ledger[i].credits + current,
                    "participant {}",
                    i
                );
            }
            _ => prop_assert_eq!(
                p.time_used_ms + p.total_time_ms,
                initial[i] + ledger[i].credits,
                "participant {}",
                i
            ),
        }
        if let Some(ot) = p.overtime {
            if let Some(n) = ot.periods_left {
                prop_assert!(i64::from(n) <= tc["periods"].as_i64().unwrap());
            }
            if let Some(m) = ot.moves_left {
                prop_assert!(m >= 1 && i64::from(m) <= tc["moves"].as_i64().unwrap());
            }
            prop_assert!((0..=tc["period_ms"].as_i64().unwrap()).contains(&ot.period_used_ms));
        }
    }
    Ok(())
}

/// Updates the ledger with one write `before` → `after`.
fn account(before: &Session, after: &Session, tc: &Value, ledger: &mut [Ledger]) {
    let kind = tc["type"].as_str().unwrap();
    let spent: Vec<i64> = (0..after.participants.len())
        .map(|i| after.participants[i].time_used_ms - before.participants[i].time_used_ms)
        .collect();
    for (i, l) in ledger.iter_mut().enumerate() {
        l.turn += spent[i];
        let (b, a) = (&before.participants[i], &after.participants[i]);
        // A move: the count grew and the participant did not time out.
        let moved = a.cycle_count > b.cycle_count && !a.has_expired;
        let ended = a.cycle_count > b.cycle_count;
        if moved {
            l.credits += match kind {
                "fischer" => tc["increment_ms"].as_i64().unwrap(),
                "bronstein" | "simple_delay" => l.turn.min(tc["delay_ms"].as_i64().unwrap()),
                _ => 0,
            };
            for st in tc["stages"].as_array().into_iter().flatten() {
                if st["after_moves"].as_u64() == Some(a.cycle_count) {
                    l.credits += st["add_ms"].as_i64().unwrap();
                }
            }
        } else if ended && kind == "simple_delay" {
            l.credits += l.turn.min(tc["delay_ms"].as_i64().unwrap());
        }
        if ended {
            l.turn = 0;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Any history under any control: banks never go negative, time is
    /// conserved, the deadline is where the running clock reaches zero, the
    /// live clock runs one to one, and a timeout applied twice equals once.
    #[test]
    fn time_controls_keep_the_invariants(
        (mode, tc) in control(),
        n in 2usize..5,
        action in proptest::sample::select(vec!["end_session", "skip_cycle"]),
        banks in proptest::collection::vec(1000i64..30_000, 4),
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let n = if tc["type"] == "hourglass" { 2 } else { n };
        let n = if mode == SyncMode::PerGroup { 2 * n } else { n };
        let banks: Vec<i64> = (0..n).map(|i| banks[i % banks.len()]).collect();
        let mut s = game_in(mode, tc.clone(), &banks, json!({
            "action_on_timeout": {"type": action},
            "total_time_ms": 20_000,
        }));
        s = run(&s, Command::Start, at(0));
        let initial = banks.clone();
        let mut ledger = vec![Ledger::default(); n];
        let mut now = 0;
        for (st, dt) in &steps {
            now += dt;
            let cmd = to_command(st, n);
            let before = s.clone();
            // A refused command may still write the timeouts it settled.
            if let Some(w) = decide(&s, &cmd, at(now)).write {
                // Account the settled timeouts and the command separately.
                let settled = decide(&before, &Command::Timeout, at(now)).write.map(|w| w.session);
                let mid = settled.unwrap_or_else(|| before.clone());
                account(&before, &mid, &tc, &mut ledger);
                account(&mid, &w.session, &tc, &mut ledger);
                s = w.session;
            }
            if s.banked() {
                conserved(&s, &tc, &initial, &ledger)?;
            }
            prop_assert!(decide(&s, &Command::Timeout, at(now)).write.is_none(), "timeout twice != once");
            for i in 0..n {
                prop_assert!(remaining(&s, i, at(now)) >= 0);
            }
            if let (Some(due), Some(active)) = (deadline(&s), s.active_index()) {
                let due = due.ms() - T0.ms();
                prop_assert!(due > now);
                prop_assert_eq!(remaining(&s, active, at(due)), 0);
                prop_assert_eq!(remaining(&s, active, at(due - 1)), 1);
                let k = (due - now) / 2;
                prop_assert_eq!(remaining(&s, active, at(now + k)), remaining(&s, active, at(now)) - k);
            }
        }
    }
}

// ------------------------------------------------------- SDK test vectors

/// A history under every control for `sdk/typescript/test/vectors.json`
/// (written by `tests::sdk_vectors_match_the_domain`): the SDK derives the
/// same remaining time and clock faces to the millisecond.
pub(super) fn vector_cases() -> Vec<Value> {
    let stages = json!([{"after_moves": 1, "add_ms": 5000}, {"after_moves": 3, "add_ms": 1000}]);
    let banked = [
        (
            "fischer",
            json!({"type": "fischer", "increment_ms": 2000, "stages": stages}),
            [10_000, 20_000],
        ),
        (
            "bronstein",
            json!({"type": "bronstein", "delay_ms": 3000, "stages": stages}),
            [10_000, 20_000],
        ),
        (
            "simple_delay",
            json!({"type": "simple_delay", "delay_ms": 3000, "stages": stages}),
            [10_000, 20_000],
        ),
        (
            "byoyomi",
            json!({"type": "byoyomi", "periods": 3, "period_ms": 5000}),
            [3000, 8000],
        ),
        (
            "canadian",
            json!({"type": "canadian", "moves": 2, "period_ms": 8000}),
            [3000, 8000],
        ),
        ("hourglass", json!({"type": "hourglass"}), [10_000, 20_000]),
    ];
    // The second participant pauses inside its turn (past its delay, inside
    // an overtime period) and moves after the resume.
    let steps = |tc: &str| -> Vec<(&'static str, Command, i64)> {
        if tc == "soft_close" {
            return vec![
                ("started", Command::Start, 0),
                ("switched", switch(), 4000),
                ("extended", switch(), 7000),
                ("paused", Command::Pause, 8000),
                ("resumed", Command::Resume, 9000),
                ("capped", switch(), 11_500),
                ("timed_out", Command::Timeout, 500_000),
            ];
        }
        vec![
            ("started", Command::Start, 0),
            ("switched", switch(), 4000),
            ("paused", Command::Pause, 15_000),
            ("resumed", Command::Resume, 20_000),
            ("switched again", switch(), 23_000),
            ("timed_out", Command::Timeout, 500_000),
        ]
    };
    let mut games: Vec<(String, Session)> = banked
        .iter()
        .map(|(name, tc, banks)| {
            let s = game_in(SyncMode::PerParticipant, tc.clone(), banks, json!({}));
            (format!("per_participant {name}"), s)
        })
        .collect();
    games.push((
        "per_group byoyomi".into(),
        game_in(
            SyncMode::PerGroup,
            json!({"type": "byoyomi", "periods": 2, "period_ms": 5000}),
            &[3000, 5000, 8000, 8000],
            json!({}),
        ),
    ));
    games.push((
        "global soft_close".into(),
        game_in(
            SyncMode::Global,
            json!({"type": "soft_close", "window_ms": 5000, "max_extension_ms": 4000}),
            &[1000, 1000],
            json!({"total_time_ms": 10_000}),
        ),
    ));
    let mut cases = Vec::new();
    for (name, mut s) in games {
        let kind = s.time_control.as_ref().map_or("", |tc| tc.name());
        cases.push(super::tests::vector_case(
            &format!("{name} created"),
            &s,
            T0,
        ));
        for (step, cmd, t) in steps(kind) {
            if let Some(w) = decide(&s, &cmd, at(t)).write {
                s = w.session;
                cases.push(super::tests::vector_case(
                    &format!("{name} {step}"),
                    &s,
                    at(t),
                ));
            }
        }
    }
    cases
}
