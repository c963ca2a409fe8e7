//! Domain tests: every mode × command × status, the semantics of each mode,
//! timeouts for each action, and property tests for the invariants of DESIGN.md.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::timing::{cycle_budget, remaining};
use super::*;

pub(super) const T0: Timestamp = Timestamp(1_767_261_600_000);
const MIN: i64 = 60_000;

pub(super) fn at(ms: i64) -> Timestamp {
    Timestamp(T0.ms() + ms)
}

pub(super) fn pid(i: usize) -> ParticipantId {
    ParticipantId::parse(&format!("00000000-0000-4000-8000-{:012}", i + 1)).unwrap()
}

pub(super) fn gid(i: usize) -> String {
    format!("00000000-0000-4000-9000-{:012}", i + 1)
}

/// A create body for `mode` with `n` participants of 60 s each; `extra` is merged in.
pub(super) fn body(mode: SyncMode, n: usize, extra: Value) -> Value {
    let participants: Vec<Value> = (0..n)
        .map(|i| {
            let mut p = json!({
                "participant_id": pid(i).to_string(),
                "participant_index": i,
                "total_time_ms": MIN,
            });
            if mode == SyncMode::PerGroup {
                p["group_id"] = json!(gid(i / 2)); // groups of two
            }
            p
        })
        .collect();
    let mut b = json!({
        "session_id": "11111111-1111-4111-8111-111111111111",
        "sync_mode": mode.as_str(),
        "participants": participants,
        "total_time_ms": 10 * MIN,
        "time_per_cycle_ms": 30_000,
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

pub(super) fn new(mode: SyncMode, n: usize, extra: Value) -> Session {
    NewSession::parse(&body(mode, n, extra))
        .unwrap()
        .into_created(T0)
        .session
}

/// Applies a command that must succeed and write.
pub(super) fn run(s: &Session, cmd: Command, t: Timestamp) -> Session {
    let d = decide(s, &cmd, t);
    d.result.unwrap();
    d.write.expect("a successful command writes").session
}

pub(super) fn switch() -> Command {
    Command::Switch {
        next_participant_id: None,
        expected_version: None,
        by: None,
    }
}

pub(super) fn kinds(t: &Transition) -> Vec<EventKind> {
    t.events.iter().map(|e| e.kind).collect()
}

/// A session of `mode` brought into `status` by real commands (cancelled is
/// set by hand: no command produces it).
fn in_status(mode: SyncMode, status: Status) -> Session {
    let s = new(mode, 2, json!({}));
    match status {
        Status::Pending => s,
        Status::Running => run(&s, Command::Start, at(0)),
        Status::Paused => run(&run(&s, Command::Start, at(0)), Command::Pause, at(1000)),
        Status::Completed => run(&s, Command::Complete, at(0)),
        Status::Expired => {
            let s = run(
                &new(
                    mode,
                    1,
                    json!({"action_on_timeout": {"type": "end_session"}}),
                ),
                Command::Start,
                at(0),
            );
            let due = deadline(&s).unwrap();
            run(&s, Command::Timeout, due)
        }
        Status::Cancelled => Session {
            status: Status::Cancelled,
            ..s
        },
    }
}

#[test]
fn every_mode_command_and_status() {
    let commands = [
        Command::Start,
        switch(),
        Command::Pause,
        Command::Resume,
        Command::Complete,
        Command::Timeout,
    ];
    for mode in SyncMode::ALL {
        for status in Status::ALL {
            let s = in_status(mode, status);
            assert_eq!(s.status, status);
            for cmd in &commands {
                let allowed = match cmd {
                    Command::Start => status == Status::Pending,
                    Command::Switch { .. } | Command::Pause => status == Status::Running,
                    Command::Resume => status == Status::Paused,
                    Command::Complete => !status.is_terminal(),
                    Command::Timeout => true,
                };
                // Well before any deadline, so nothing is settled on the way.
                let d = decide(&s, cmd, at(2000));
                match (&d.result, allowed) {
                    (Ok(()), true) => {
                        if *cmd == Command::Timeout {
                            assert!(d.write.is_none(), "{mode:?} {status:?}: nothing is due");
                        } else {
                            let w = d.write.as_ref().unwrap();
                            assert_eq!(w.session.version, s.version + 1);
                            assert_eq!(w.events.len(), 1, "{mode:?} {status:?} {cmd:?}");
                        }
                    }
                    (Err(DomainError::InvalidTransition { status: st, .. }), false) => {
                        assert_eq!(*st, status);
                        assert!(d.write.is_none());
                        let msg = d.result.unwrap_err().to_string();
                        assert!(
                            msg.contains(&format!("(current status: {})", status.as_str())),
                            "{msg}"
                        );
                    }
                    (r, _) => panic!("{mode:?} {status:?} {cmd:?}: unexpected {r:?}"),
                }
            }
        }
    }
}

#[test]
fn invalid_transition_messages_match_v2() {
    let s = in_status(SyncMode::PerParticipant, Status::Running);
    let err = decide(&s, &Command::Start, at(10)).result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Session 11111111-1111-4111-8111-111111111111 cannot be started (current status: running)"
    );
    let s = in_status(SyncMode::PerParticipant, Status::Pending);
    let err = decide(&s, &switch(), at(10)).result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Session 11111111-1111-4111-8111-111111111111 not running (current status: pending)"
    );
}

#[test]
fn per_participant_is_a_chess_clock_with_fischer_increment() {
    let s = new(SyncMode::PerParticipant, 2, json!({"increment_ms": 2000}));
    let s = run(&s, Command::Start, at(0));
    assert_eq!(s.active_participant_id, Some(pid(0)));
    assert!(s.participants[0].is_active && !s.participants[1].is_active);
    assert_eq!(deadline(&s), Some(at(MIN)));
    assert_eq!(
        view(&s, at(3000)).participants[0].time_remaining_ms,
        MIN - 3000
    );
    assert_eq!(view(&s, at(3000)).participants[1].time_remaining_ms, MIN);

    let s = run(&s, switch(), at(3000));
    let p0 = &s.participants[0];
    assert_eq!(
        (p0.total_time_ms, p0.time_used_ms, p0.cycle_count),
        (MIN - 3000 + 2000, 3000, 1)
    );
    assert_eq!(s.active_participant_id, Some(pid(1)));
    assert_eq!(s.cycle_started_at, Some(at(3000)));
    assert_eq!(deadline(&s), Some(at(3000 + MIN)));

    // The next switch wraps around to the first participant.
    let s = run(&s, switch(), at(8000));
    assert_eq!(s.active_participant_id, Some(pid(0)));
    assert_eq!(s.participants[1].total_time_ms, MIN - 5000 + 2000);
}

#[test]
fn switch_to_a_named_participant_and_its_errors() {
    let s = run(
        &new(SyncMode::PerParticipant, 3, json!({})),
        Command::Start,
        at(0),
    );
    let to = |id| Command::Switch {
        next_participant_id: Some(id),
        expected_version: None,
        by: None,
    };
    let s2 = run(&s, to(pid(2)), at(1000));
    assert_eq!(s2.active_participant_id, Some(pid(2)));

    let stranger = ParticipantId::parse("99999999-0000-4000-8000-000000000000").unwrap();
    let d = decide(&s, &to(stranger), at(1000));
    assert_eq!(d.result, Err(DomainError::UnknownParticipant(stranger)));
    assert!(d.write.is_none());

    let d = decide(
        &s,
        &Command::Switch {
            next_participant_id: None,
            expected_version: Some(s.version + 5),
            by: None,
        },
        at(1000),
    );
    assert_eq!(
        d.result,
        Err(DomainError::VersionMismatch {
            expected: s.version + 5,
            actual: s.version
        })
    );
    let d = decide(
        &s,
        &Command::Switch {
            next_participant_id: None,
            expected_version: Some(s.version),
            by: None,
        },
        at(1000),
    );
    assert!(d.result.is_ok());
}

#[test]
fn per_cycle_gives_a_fresh_cycle_each_turn_and_pause_keeps_the_remainder() {
    let s = run(
        &new(SyncMode::PerCycle, 2, json!({})),
        Command::Start,
        at(0),
    );
    assert_eq!(deadline(&s), Some(at(30_000)));
    let s = run(&s, switch(), at(10_000));
    assert_eq!(s.participants[0].time_used_ms, 10_000);
    assert_eq!(
        s.participants[0].total_time_ms, MIN,
        "the bank is not drawn in per_cycle"
    );
    assert_eq!(deadline(&s), Some(at(40_000)), "fresh 30 s cycle");
    assert_eq!(
        view(&s, at(10_000)).participants[0].time_remaining_ms,
        30_000
    );

    // Pause after 5 s, resume later: the cycle continues with 25 s left.
    let s = run(&s, Command::Pause, at(15_000));
    assert_eq!(deadline(&s), None);
    assert_eq!(
        view(&s, at(99_000)).participants[1].time_remaining_ms,
        25_000
    );
    let s = run(&s, Command::Resume, at(100_000));
    assert_eq!(deadline(&s), Some(at(125_000)));
    let s = run(&s, switch(), at(101_000));
    assert_eq!(s.participants[1].time_used_ms, 6_000);
}

#[test]
fn per_group_runs_the_whole_group_down_together() {
    // Four participants in two groups; increments go to every member.
    let s = new(SyncMode::PerGroup, 4, json!({"increment_ms": 1000}));
    let s = run(&s, Command::Start, at(0));
    assert_eq!(s.active_group_id.map(|g| g.to_string()), Some(gid(0)));
    let active: Vec<bool> = s.participants.iter().map(|p| p.is_active).collect();
    assert_eq!(active, [true, true, false, false]);
    assert_eq!(
        view(&s, at(4000)).participants[1].time_remaining_ms,
        MIN - 4000
    );

    let s = run(&s, switch(), at(4000));
    for p in &s.participants[..2] {
        assert_eq!((p.total_time_ms, p.time_used_ms), (MIN - 4000 + 1000, 4000));
    }
    assert_eq!(s.active_group_id.map(|g| g.to_string()), Some(gid(1)));
    assert_eq!(s.active_participant_id, Some(pid(2)));

    // Naming a member of the first group hands the turn to that group.
    let s = run(
        &s,
        Command::Switch {
            next_participant_id: Some(pid(1)),
            expected_version: None,
            by: None,
        },
        at(5000),
    );
    assert_eq!(s.active_group_id.map(|g| g.to_string()), Some(gid(0)));
    assert!(s.participants[0].is_active && s.participants[1].is_active);
}

#[test]
fn per_group_deadline_is_the_smallest_bank_of_the_group() {
    let mut b = body(SyncMode::PerGroup, 2, json!({}));
    b["participants"][1]["total_time_ms"] = json!(20_000);
    let s = NewSession::parse(&b).unwrap().into_created(T0).session;
    let s = run(&s, Command::Start, at(0));
    assert_eq!(deadline(&s), Some(at(20_000)));
    let s = run(&s, Command::Timeout, at(20_000));
    assert_eq!(s.status, Status::Expired);
    assert_eq!(s.participants[1].total_time_ms, 0);
    assert_eq!(s.participants[0].total_time_ms, MIN - 20_000);
    assert!(s.participants.iter().all(|p| p.has_expired));
}

#[test]
fn global_is_one_clock_that_switches_do_not_reset_and_pause_stops() {
    let s = run(&new(SyncMode::Global, 2, json!({})), Command::Start, at(0));
    let total = 10 * MIN;
    assert_eq!(deadline(&s), Some(at(total)));
    let s = run(&s, switch(), at(60_000));
    assert_eq!(deadline(&s), Some(at(total)), "not reset by a switch");
    assert_eq!(
        s.participants[0].time_used_ms, 60_000,
        "records how long it held the turn"
    );
    for p in view(&s, at(70_000)).participants {
        assert_eq!(p.time_remaining_ms, total - 70_000);
    }
    let s = run(&s, Command::Pause, at(70_000));
    let s = run(&s, Command::Resume, at(100_000));
    assert_eq!(
        deadline(&s),
        Some(at(total + 30_000)),
        "start + total + paused time"
    );
}

#[test]
fn count_up_is_a_stopwatch_with_a_cap() {
    let s = run(
        &new(SyncMode::CountUp, 2, json!({"max_time_ms": 5000})),
        Command::Start,
        at(0),
    );
    assert_eq!(deadline(&s), Some(at(5000)));
    assert_eq!(view(&s, at(1500)).participants[0].time_remaining_ms, 3500);
    let s = run(&s, switch(), at(2000));
    assert_eq!(s.participants[0].time_used_ms, 2000);
    let s = run(&s, switch(), at(3000));
    // Back to the first: its stopwatch resumes at 2 s, so 3 s remain.
    assert_eq!(deadline(&s), Some(at(6000)));

    // Without max_time_ms the cap is the session's total_time_ms.
    let s = run(&new(SyncMode::CountUp, 1, json!({})), Command::Start, at(0));
    assert_eq!(deadline(&s), Some(at(10 * MIN)));
}

#[test]
fn end_session_timeout_expires_at_the_deadline_instant() {
    let s = run(
        &new(SyncMode::PerParticipant, 2, json!({})),
        Command::Start,
        at(0),
    );
    // Detected 250 ms late: everything is still dated at the deadline.
    let d = decide(&s, &Command::Timeout, at(MIN + 250));
    let w = d.write.unwrap();
    assert_eq!(
        kinds(&w),
        [EventKind::ParticipantExpired, EventKind::SessionExpired]
    );
    assert!(w.events.iter().all(|e| e.at == at(MIN)));
    let s = w.session;
    assert_eq!(s.status, Status::Expired);
    assert_eq!(s.cycle_started_at, None);
    assert_eq!(s.expired_participant_id, Some(pid(0)));
    assert!(s.participants[0].has_expired && !s.participants[1].has_expired);
    assert_eq!(s.participants[0].total_time_ms, 0);
    assert_eq!(s.session_completed_at, Some(at(MIN)));
}

#[test]
fn skip_cycle_hands_over_at_the_deadline_and_expires_when_nobody_is_left() {
    for kind in ["skip_cycle", "auto_action"] {
        let extra = json!({"action_on_timeout": {"type": kind, "action": "fold"}});
        let s = run(
            &new(SyncMode::PerParticipant, 3, extra),
            Command::Start,
            at(0),
        );
        // Everybody silent: three chained timeouts, each exactly one bank long.
        let w = decide(&s, &Command::Timeout, at(3 * MIN + 999))
            .write
            .unwrap();
        let expired: Vec<_> = w
            .events
            .iter()
            .filter(|e| e.kind == EventKind::ParticipantExpired)
            .collect();
        assert_eq!(
            expired.iter().map(|e| e.at).collect::<Vec<_>>(),
            [at(MIN), at(2 * MIN), at(3 * MIN)]
        );
        assert_eq!(w.events.last().unwrap().kind, EventKind::SessionExpired);
        assert_eq!(w.session.status, Status::Expired);
        assert_eq!(
            w.session.version,
            s.version + 1,
            "one write however many timeouts"
        );

        // Only the first timed out: the second player runs from the deadline.
        let s1 = run(&s, Command::Timeout, at(MIN + 10));
        assert_eq!(s1.status, Status::Running);
        assert_eq!(s1.active_participant_id, Some(pid(1)));
        assert_eq!(s1.cycle_started_at, Some(at(MIN)));
        assert_eq!(s1.expired_participant_id, Some(pid(0)));
        // ... and the expired one is skipped by later rotation.
        let s2 = run(&s1, switch(), at(MIN + 1000));
        let s3 = run(&s2, switch(), at(MIN + 2000));
        assert_eq!(s3.active_participant_id, Some(pid(1)));
    }
}

#[test]
fn auto_advance_means_skip_cycle() {
    let s = new(SyncMode::PerParticipant, 2, json!({"auto_advance": true}));
    assert_eq!(s.action_on_timeout.kind, TimeoutKind::SkipCycle);
    let err = NewSession::parse(&body(
        SyncMode::PerParticipant,
        2,
        json!({"auto_advance": true, "action_on_timeout": {"type": "end_session"}}),
    ))
    .unwrap_err();
    assert_eq!(err[0].field, "auto_advance");
}

#[test]
fn per_cycle_skips_forever_with_exact_cadence() {
    let s = run(
        &new(SyncMode::PerCycle, 2, json!({})),
        Command::Start,
        at(0),
    );
    let s = run(&s, Command::Timeout, at(95_000));
    // Cycles ended at 30, 60 and 90 s; the fourth started at 90 s.
    assert_eq!(s.status, Status::Running);
    assert_eq!(s.cycle_started_at, Some(at(90_000)));
    assert_eq!(s.active_participant_id, Some(pid(1)));
    assert!(s.participants.iter().all(|p| !p.has_expired));
    assert_eq!(s.participants[0].time_used_ms, 60_000);
    assert_eq!(s.participants[1].time_used_ms, 30_000);
}

#[test]
fn timeouts_per_mode_with_end_session() {
    for mode in SyncMode::ALL {
        let s = new(
            mode,
            2,
            json!({"action_on_timeout": {"type": "end_session"}}),
        );
        let s = run(&s, Command::Start, at(0));
        let due = deadline(&s).unwrap();
        assert!(
            decide(&s, &Command::Timeout, Timestamp(due.ms() - 1))
                .write
                .is_none(),
            "{mode:?}"
        );
        let s = run(&s, Command::Timeout, due);
        assert_eq!(s.status, Status::Expired, "{mode:?}");
        assert!(s.participants[0].has_expired, "{mode:?}");
        assert!(
            view(&s, due)
                .participants
                .iter()
                .take(1)
                .all(|p| p.time_remaining_ms == 0)
        );
    }
}

#[test]
fn global_clock_ends_the_session_whatever_the_action() {
    let s = new(
        SyncMode::Global,
        2,
        json!({"action_on_timeout": {"type": "skip_cycle"}}),
    );
    let s = run(&s, Command::Start, at(0));
    let s = run(&s, Command::Timeout, at(10 * MIN));
    assert_eq!(s.status, Status::Expired);
}

#[test]
fn per_group_skip_expires_the_whole_group() {
    let s = new(
        SyncMode::PerGroup,
        4,
        json!({"action_on_timeout": {"type": "skip_cycle"}}),
    );
    let s = run(&s, Command::Start, at(0));
    let s = run(&s, Command::Timeout, at(MIN));
    assert_eq!(s.status, Status::Running);
    assert!(s.participants[0].has_expired && s.participants[1].has_expired);
    assert_eq!(s.active_group_id.map(|g| g.to_string()), Some(gid(1)));
    assert_eq!(s.cycle_started_at, Some(at(MIN)));
}

#[test]
fn count_up_timeout_at_the_cap() {
    let s = run(
        &new(SyncMode::CountUp, 1, json!({"max_time_ms": 2000})),
        Command::Start,
        at(0),
    );
    let s = run(&s, Command::Timeout, at(2500));
    assert_eq!(s.status, Status::Expired);
    assert_eq!(s.participants[0].time_used_ms, 2000, "capped, not 2500");
}

#[test]
fn a_command_after_the_deadline_acts_on_the_timed_out_state() {
    let s = run(
        &new(SyncMode::PerParticipant, 2, json!({})),
        Command::Start,
        at(0),
    );
    let d = decide(&s, &switch(), at(MIN + 1));
    // The switch is refused, but the timeout it uncovered is written.
    assert!(matches!(
        d.result,
        Err(DomainError::InvalidTransition {
            status: Status::Expired,
            ..
        })
    ));
    assert_eq!(d.write.unwrap().session.status, Status::Expired);

    // With skip_cycle the switch applies to the next participant's cycle.
    let s = new(SyncMode::PerParticipant, 3, json!({"auto_advance": true}));
    let s = run(&s, Command::Start, at(0));
    let d = decide(&s, &switch(), at(MIN + 5000));
    d.result.unwrap();
    let w = d.write.unwrap();
    assert_eq!(
        kinds(&w),
        [EventKind::ParticipantExpired, EventKind::CycleSwitched]
    );
    assert_eq!(
        w.session.participants[1].time_used_ms, 5000,
        "charged from the deadline"
    );
    assert_eq!(w.session.active_participant_id, Some(pid(2)));
}

#[test]
fn expected_version_refuses_a_switch_that_a_settled_timeout_overtook() {
    // per_cycle, A's cycle timed out at 30 s; B has been active since then.
    let s = run(
        &new(SyncMode::PerCycle, 3, json!({})),
        Command::Start,
        at(0),
    );
    let d = decide(
        &s,
        &Command::Switch {
            next_participant_id: None,
            expected_version: Some(s.version),
            by: None,
        },
        at(30_001),
    );
    assert_eq!(
        d.result,
        Err(DomainError::VersionMismatch {
            expected: s.version,
            actual: s.version + 1
        })
    );
    // The timeout is still written; B's turn was not ended by the stale switch.
    let w = d.write.unwrap();
    assert_eq!(kinds(&w), [EventKind::ParticipantExpired]);
    assert_eq!(w.session.active_participant_id, Some(pid(1)));
}

#[test]
fn switching_to_oneself_earns_no_increment() {
    let s = new(SyncMode::PerParticipant, 2, json!({"increment_ms": 5000}));
    let s = run(&s, Command::Start, at(0));
    let to_self = Command::Switch {
        next_participant_id: Some(pid(0)),
        expected_version: None,
        by: None,
    };
    let s = run(&s, to_self, at(1000));
    assert_eq!(s.participants[0].total_time_ms, MIN - 1000);
    assert_eq!(s.active_participant_id, Some(pid(0)));
    // A lone participant advancing to itself earns nothing either.
    let s = run(
        &new(SyncMode::PerParticipant, 1, json!({"increment_ms": 5000})),
        Command::Start,
        at(0),
    );
    let s = run(&s, switch(), at(1000));
    assert_eq!(s.participants[0].total_time_ms, MIN - 1000);
}

#[test]
fn per_group_members_all_show_the_distance_to_the_group_deadline() {
    let mut b = body(SyncMode::PerGroup, 2, json!({}));
    b["participants"][0]["total_time_ms"] = json!(5_000);
    let s = NewSession::parse(&b).unwrap().into_created(T0).session;
    let s = run(&s, Command::Start, at(0));
    let v = view(&s, at(4_000));
    assert_eq!(
        (
            v.participants[0].time_remaining_ms,
            v.participants[1].time_remaining_ms
        ),
        (1_000, 1_000)
    );
    let s = run(&s, Command::Timeout, at(5_000));
    assert!(
        view(&s, at(5_000))
            .participants
            .iter()
            .all(|p| p.time_remaining_ms == 0)
    );
}

#[test]
fn a_read_after_the_deadline_shows_zero() {
    let s = run(
        &new(SyncMode::PerParticipant, 1, json!({})),
        Command::Start,
        at(0),
    );
    assert_eq!(
        view(&s, at(MIN + 5000)).participants[0].time_remaining_ms,
        0
    );
}

#[test]
fn complete_from_pending_and_events_carry_times() {
    let s = new(SyncMode::PerParticipant, 2, json!({}));
    let w = decide(&s, &Command::Complete, at(5)).write.unwrap();
    assert_eq!(w.session.status, Status::Completed);
    assert_eq!(w.session.session_completed_at, Some(at(5)));

    let s = run(&s, Command::Start, at(0));
    let w = decide(&s, &switch(), at(1234)).write.unwrap();
    let e = &w.events[0];
    assert_eq!(
        (e.participant_id, e.time_elapsed_ms, e.time_remaining_ms),
        (Some(pid(0)), Some(1234), Some(MIN - 1234))
    );
}

#[test]
fn complete_leaves_nobody_on_turn_as_in_v2() {
    let running = run(
        &new(SyncMode::PerParticipant, 2, json!({})),
        Command::Start,
        at(0),
    );
    let w = decide(&running, &Command::Complete, at(700)).write.unwrap();
    let s = &w.session;
    assert_eq!(s.active_participant_id, None);
    assert_eq!(s.cycle_started_at, None);
    assert!(s.participants.iter().all(|p| !p.is_active));
    // The event still names who was on turn, and what it was charged.
    let e = &w.events[0];
    assert_eq!(
        (e.participant_id, e.time_elapsed_ms),
        (Some(pid(0)), Some(700))
    );
    assert_eq!(s.participants[0].time_used_ms, 700);
}

#[test]
fn create_validation_names_every_field() {
    let cases: Vec<(Value, &str)> = vec![
        (json!(null), "body"),
        (json!([1, 2]), "body"),
        (json!({}), "session_id"),
        (json!({"session_id": "nope"}), "session_id"),
        (
            body(SyncMode::PerParticipant, 1, json!({"sync_mode": "chess"})),
            "sync_mode",
        ),
        (
            body(SyncMode::PerParticipant, 1, json!({"total_time_ms": 999})),
            "total_time_ms",
        ),
        (
            body(SyncMode::PerParticipant, 1, json!({"total_time_ms": 1e300})),
            "total_time_ms",
        ),
        (
            body(SyncMode::PerParticipant, 1, json!({"total_time_ms": -5})),
            "total_time_ms",
        ),
        (
            body(
                SyncMode::PerParticipant,
                1,
                json!({"total_time_ms": "60000"}),
            ),
            "total_time_ms",
        ),
        (
            body(SyncMode::PerParticipant, 1, json!({"increment_ms": 60_001})),
            "increment_ms",
        ),
        (
            body(SyncMode::PerParticipant, 1, json!({"max_time_ms": 0})),
            "max_time_ms",
        ),
        (
            body(SyncMode::PerParticipant, 1, json!({"metadata": [1]})),
            "metadata",
        ),
        (
            body(
                SyncMode::PerParticipant,
                1,
                json!({"metadata": {"x": "a".repeat(17_000)}}),
            ),
            "metadata",
        ),
        (
            body(SyncMode::PerParticipant, 1, json!({"participants": []})),
            "participants",
        ),
        (
            body(SyncMode::PerParticipant, 1, json!({"participants": {}})),
            "participants",
        ),
        (
            body(
                SyncMode::PerParticipant,
                1,
                json!({"action_on_timeout": {"type": "explode"}}),
            ),
            "action_on_timeout.type",
        ),
        (
            body(SyncMode::PerParticipant, 1, json!({"auto_advance": "yes"})),
            "auto_advance",
        ),
        (
            body(SyncMode::PerCycle, 1, json!({"time_per_cycle_ms": null})),
            "time_per_cycle_ms",
        ),
    ];
    for (b, field) in cases {
        let errs = NewSession::parse(&b).unwrap_err();
        assert!(errs.iter().any(|e| e.field == field), "{field}: {errs:?}");
    }

    let mut b = body(SyncMode::PerGroup, 2, json!({}));
    b["participants"][1]
        .as_object_mut()
        .unwrap()
        .remove("group_id");
    let errs = NewSession::parse(&b).unwrap_err();
    assert_eq!(errs[0].field, "participants[1].group_id");

    let mut b = body(SyncMode::PerParticipant, 2, json!({}));
    b["participants"][1]["participant_id"] = b["participants"][0]["participant_id"].clone();
    b["participants"][1]["participant_index"] = json!(0);
    let fields: Vec<String> = NewSession::parse(&b)
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(
        fields,
        [
            "participants[1].participant_id",
            "participants[1].participant_index"
        ]
    );

    assert!(NewSession::parse(&body(SyncMode::PerParticipant, 1000, json!({}))).is_ok());
    let errs = NewSession::parse(&body(SyncMode::PerParticipant, 1001, json!({}))).unwrap_err();
    assert_eq!(errs[0].field, "participants");
}

#[test]
fn create_sorts_by_index_and_ignores_unknown_fields() {
    let mut b = body(
        SyncMode::PerParticipant,
        3,
        json!({"whatever": {"deep": true}}),
    );
    b["participants"][0]["participant_index"] = json!(7);
    let s = NewSession::parse(&b).unwrap().into_created(T0).session;
    let order: Vec<u32> = s.participants.iter().map(|p| p.participant_index).collect();
    assert_eq!(order, [1, 2, 7]);
    assert_eq!((s.version, s.status), (1, Status::Pending));
}

// ---------------------------------------------------------------- properties

/// One step of a random session history.
#[derive(Clone, Debug)]
pub(super) enum Step {
    Start,
    Switch(Option<usize>),
    Pause,
    Resume,
    Complete,
    Timeout,
}

fn step() -> impl Strategy<Value = (Step, i64)> {
    let s = prop_oneof![
        1 => Just(Step::Start),
        4 => proptest::option::of(0usize..4).prop_map(Step::Switch),
        1 => Just(Step::Pause),
        1 => Just(Step::Resume),
        1 => Just(Step::Complete),
        2 => Just(Step::Timeout),
    ];
    (s, 0i64..40_000)
}

fn mode() -> impl Strategy<Value = SyncMode> {
    proptest::sample::select(SyncMode::ALL.to_vec())
}

fn action() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec!["end_session", "skip_cycle", "auto_action"])
}

pub(super) fn to_command(step: &Step, n: usize) -> Command {
    match step {
        Step::Start => Command::Start,
        Step::Switch(i) => Command::Switch {
            next_participant_id: i.map(|i| pid(i % n)),
            expected_version: None,
            by: None,
        },
        Step::Pause => Command::Pause,
        Step::Resume => Command::Resume,
        Step::Complete => Command::Complete,
        Step::Timeout => Command::Timeout,
    }
}

/// The time a participant was allotted so far: its initial bank plus every
/// increment it received (one per switch that ended its own or its group's turn).
fn check_conservation(s: &Session, initial: &[i64], increments: &[i64], now: Timestamp) {
    let v = view(s, now);
    let live = super::timing::elapsed(s, now);
    for (i, p) in s.participants.iter().enumerate() {
        assert!(p.total_time_ms >= 0, "bank went negative: {p:?}");
        assert!(v.participants[i].time_remaining_ms >= 0);
        let running = if p.is_active { live } else { 0 };
        match s.sync_mode {
            SyncMode::PerParticipant => {
                assert_eq!(p.time_used_ms + p.total_time_ms, initial[i] + increments[i]);
                assert_eq!(
                    running + v.participants[i].time_remaining_ms,
                    p.total_time_ms
                );
            }
            SyncMode::PerGroup => {
                assert_eq!(p.time_used_ms + p.total_time_ms, initial[i] + increments[i]);
                let group_bank = s
                    .participants
                    .iter()
                    .filter(|m| m.group_id == p.group_id)
                    .map(|m| m.total_time_ms)
                    .min()
                    .unwrap();
                assert_eq!(running + v.participants[i].time_remaining_ms, group_bank);
            }
            SyncMode::CountUp => {
                assert_eq!(
                    p.time_used_ms + running + v.participants[i].time_remaining_ms,
                    s.count_up_cap()
                );
            }
            SyncMode::PerCycle if p.is_active => {
                let cycle = s.time_per_cycle_ms.unwrap();
                assert_eq!(
                    s.cycle_time_used_ms + running + v.participants[i].time_remaining_ms,
                    cycle
                );
            }
            SyncMode::PerCycle => {}
            SyncMode::Global => {
                let used: i64 = s.participants.iter().map(|p| p.time_used_ms).sum();
                let clock = if s.status == Status::Running { live } else { 0 };
                assert_eq!(
                    used + clock + v.participants[i].time_remaining_ms,
                    s.total_time_ms
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Versions go up by exactly one per write; banks never go negative; time is
    /// conserved; a timeout applied twice equals once.
    #[test]
    fn random_histories_keep_the_invariants(
        mode in mode(),
        n in 1usize..5,
        increment in 0i64..5000,
        action in action(),
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let mut s = new(mode, n, json!({
            "increment_ms": increment,
            "action_on_timeout": {"type": action},
            "total_time_ms": 90_000,
        }));
        let initial: Vec<i64> = s.participants.iter().map(|p| p.total_time_ms).collect();
        let mut increments = vec![0i64; n];
        let mut now = T0;
        for (st, dt) in &steps {
            now = Timestamp(now.ms() + dt);
            let before = s.clone();
            let d = decide(&s, &to_command(st, n), now);
            if let Some(w) = d.write {
                prop_assert_eq!(w.session.version, before.version + 1);
                prop_assert!(!w.events.is_empty());
                // Track increments: a successful switch credits the outgoing unit.
                if d.result.is_ok() && matches!(st, Step::Switch(_))
                    && matches!(mode, SyncMode::PerParticipant | SyncMode::PerGroup)
                {
                    let settled = decide(&before, &Command::Timeout, now).write.map(|w| w.session).unwrap_or(before.clone());
                    let outgoing = settled.running_indices();
                    // Credited only when the turn passed to another unit.
                    if !outgoing.contains(&w.session.active_index().unwrap()) {
                        for i in outgoing {
                            increments[i] += increment;
                        }
                    }
                }
                s = w.session;
            } else {
                prop_assert_eq!(&s, &before);
            }
            check_conservation(&s, &initial, &increments, now);
            // Settled at `now`: nothing is due any more, so a second timeout is a no-op.
            let again = decide(&s, &Command::Timeout, now);
            prop_assert!(again.write.is_none(), "timeout twice != once");
            if let Some(due) = deadline(&s) {
                prop_assert!(due > now);
                prop_assert_eq!(Some(due.ms() - s.cycle_started_at.unwrap().ms()), cycle_budget(&s));
            }
        }
    }

    /// Applying a timeout at any instant is idempotent, wherever the session is.
    #[test]
    fn timeout_twice_equals_once(mode in mode(), action in action(), n in 1usize..4, late in 0i64..400_000) {
        let s = new(mode, n, json!({"action_on_timeout": {"type": action}}));
        let s = run(&s, Command::Start, at(0));
        let now = at(late);
        let once = decide(&s, &Command::Timeout, now).write.map(|w| w.session).unwrap_or(s.clone());
        let twice = decide(&once, &Command::Timeout, now).write.map(|w| w.session).unwrap_or(once.clone());
        prop_assert_eq!(once, twice);
    }

    /// A switch right after a resume charges only the running time, not the pause.
    #[test]
    fn switch_after_resume_charges_only_running_time(
        mode in mode(), a in 0i64..14_000, paused in 0i64..1_000_000, c in 0i64..14_000,
    ) {
        let s = run(&new(mode, 2, json!({})), Command::Start, at(0));
        let s = run(&s, Command::Pause, at(a));
        let s = run(&s, Command::Resume, at(a + paused));
        let s = run(&s, switch(), at(a + paused + c));
        prop_assert_eq!(s.participants[0].time_used_ms, a + c);
    }
}

#[test]
fn remaining_is_never_negative_even_long_after() {
    for mode in SyncMode::ALL {
        let s = run(&new(mode, 2, json!({})), Command::Start, at(0));
        for i in 0..2 {
            assert!(remaining(&s, i, at(100 * MIN)) >= 0);
        }
    }
}

pub(super) fn switch_by(p: usize) -> Command {
    Command::Switch {
        next_participant_id: None,
        expected_version: None,
        by: Some(pid(p)),
    }
}

#[test]
fn only_the_holder_of_the_turn_may_pass_it_on() {
    let skip = json!({"action_on_timeout": {"type": "skip_cycle"}});
    let s = run(
        &new(SyncMode::PerParticipant, 2, skip),
        Command::Start,
        at(0),
    );
    let d = decide(&s, &switch_by(1), at(1000));
    assert_eq!(d.result, Err(DomainError::NotYourTurn(pid(1))));
    assert!(d.write.is_none(), "a refused switch writes nothing");
    let s = run(&s, switch_by(0), at(1000));
    assert_eq!(s.active_participant_id, Some(pid(1)));
    // Once participant 1's bank has run out, the timeout settles first and
    // the turn is 0's again: 1 may no longer switch, 0 may.
    let late = at(1000 + MIN + 1);
    assert_eq!(
        decide(&s, &switch_by(1), late).result,
        Err(DomainError::NotYourTurn(pid(1)))
    );
    // Not running: the status is what refuses, not the turn.
    let paused = run(&s, Command::Pause, at(2000));
    assert!(matches!(
        decide(&paused, &switch_by(0), at(3000)).result,
        Err(DomainError::InvalidTransition { .. })
    ));
}

#[test]
fn any_member_of_the_active_group_holds_the_turn() {
    let s = run(
        &new(SyncMode::PerGroup, 4, json!({})),
        Command::Start,
        at(0),
    );
    assert!(decide(&s, &switch_by(1), at(1000)).result.is_ok());
    assert_eq!(
        decide(&s, &switch_by(2), at(1000)).result,
        Err(DomainError::NotYourTurn(pid(2)))
    );
}

// ------------------------------------------------------- SDK test vectors

/// One SDK vector: the state written at `written` and what the domain says
/// of it at several instants after (past its deadline too).
pub(super) fn vector_case(name: &str, s: &Session, written: Timestamp) -> Value {
    let samples: Vec<Value> = [0, 1_234, 2_500, 40_000, 200_000]
        .iter()
        .map(|dt| {
            let now = Timestamp(written.ms() + dt);
            let live = super::timing::elapsed(s, now);
            let v = view(s, now);
            let per = |f: &dyn Fn(usize) -> Value| -> Value {
                (0..s.participants.len())
                    .map(|i| (s.participants[i].participant_id.to_string(), f(i)))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            };
            let mut sample = json!({
                "now_ms": now.ms(),
                "elapsed_ms": live,
                "remaining_ms": per(&|i| json!(remaining(s, i, now))),
                "used_ms": per(&|i| {
                    let p = &s.participants[i];
                    json!(p.time_used_ms + if p.is_active { live } else { 0 })
                }),
            });
            if v.participants.iter().any(|p| p.clock.is_some()) {
                sample["clock"] = per(&|i| json!(v.participants[i].clock));
            }
            sample
        })
        .collect();
    json!({"name": name, "state": view(s, written), "samples": samples})
}

/// The TypeScript SDK computes remaining time on the client with the same
/// formulas; `sdk/typescript/test/vectors.json` holds what this domain says
/// for a history in every mode, read back by the SDK's tests. Regenerate with
/// `UPDATE_VECTORS=1 cargo test --lib sdk_vectors`; without it the test fails
/// when the file no longer matches the rules.
#[test]
fn sdk_vectors_match_the_domain() {
    let mut cases = Vec::new();
    for mode in SyncMode::ALL {
        let n = if mode == SyncMode::PerGroup { 4 } else { 2 };
        let s = new(
            mode,
            n,
            json!({"increment_ms": 2000, "max_time_ms": 45_000, "total_time_ms": 100_000}),
        );
        let mut history = vec![("created", s.clone(), T0)];
        let steps = [
            ("started", Command::Start, at(0)),
            ("switched", switch(), at(7_000)),
            ("paused", Command::Pause, at(9_500)),
            ("resumed", Command::Resume, at(20_000)),
            ("timed_out", Command::Timeout, at(500_000)),
        ];
        let mut s = s;
        for (name, cmd, t) in steps {
            if let Some(w) = decide(&s, &cmd, t).write {
                s = w.session;
                history.push((name, s.clone(), t));
            }
        }
        for (name, s, written) in history {
            cases.push(vector_case(
                &format!("{} {name}", mode.as_str()),
                &s,
                written,
            ));
        }
    }
    cases.extend(super::time_control_tests::vector_cases());
    let generated = serde_json::to_string_pretty(&json!({
        "generated_by": "src/domain/tests.rs sdk_vectors_match_the_domain",
        "cases": cases,
    }))
    .unwrap()
        + "\n";
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sdk/typescript/test/vectors.json"
    );
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "{path} is out of date: run UPDATE_VECTORS=1 cargo test --lib sdk_vectors"
    );
}
