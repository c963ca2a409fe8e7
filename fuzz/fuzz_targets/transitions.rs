//! Any sequence of commands at any instants, in every sync mode and under
//! every time control: `decide`
//! never panics, each write bumps the version by exactly one, remaining time
//! is never negative, and a timeout applied twice equals once.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use synckairos::domain::{Command, NewSession, ParticipantId, SyncMode, Timestamp, decide, view};

const ACTIONS: [&str; 3] = ["end_session", "skip_cycle", "auto_action"];

fuzz_target!(|data: &[u8]| {
    let [mode, n, action, inc, rest @ ..] = data else {
        return;
    };
    let n = usize::from(n % 4) + 1;
    let participants: Vec<_> = (0..n)
        .map(|i| {
            json!({
                "participant_id": pid(i).to_string(),
                "participant_index": i,
                "group_id": if i % 2 == 0 { "00000000-0000-4000-8000-0000000000a0" } else { "00000000-0000-4000-8000-0000000000a1" },
                "total_time_ms": 1_000 + 7_000 * i,
            })
        })
        .collect();
    // The low bits of `inc` pick a time control (0: none, the v2 rule).
    let control = match inc % 8 {
        1 => json!({"type": "fischer", "increment_ms": 1_000, "stages": [{"after_moves": 2, "add_ms": 3_000}]}),
        2 => json!({"type": "bronstein", "delay_ms": 2_000}),
        3 => json!({"type": "simple_delay", "delay_ms": 2_000, "stages": [{"after_moves": 1, "add_ms": 500}]}),
        4 => json!({"type": "byoyomi", "periods": 2, "period_ms": 1_000}),
        5 => json!({"type": "canadian", "moves": 2, "period_ms": 3_000}),
        6 => json!({"type": "hourglass"}),
        7 => json!({"type": "soft_close", "window_ms": 2_000, "max_extension_ms": 5_000}),
        _ => serde_json::Value::Null,
    };
    let body = json!({
        "session_id": "00000000-0000-4000-8000-000000000001",
        "sync_mode": SyncMode::ALL[usize::from(*mode) % SyncMode::ALL.len()].as_str(),
        "participants": participants,
        "total_time_ms": 30_000,
        "time_per_cycle_ms": 5_000,
        "increment_ms": if control.is_null() { u64::from(*inc / 8) * 100 } else { 0 },
        "time_control": control,
        "action_on_timeout": {"type": ACTIONS[usize::from(*action) % ACTIONS.len()]},
    });
    let Ok(new) = NewSession::parse(&body) else {
        return;
    };
    let mut now = Timestamp(1_700_000_000_000);
    let mut s = new.into_created(now).session;
    for op in rest.chunks(2) {
        let (code, dt) = (op[0], op.get(1).copied().unwrap_or(0));
        now = now.plus(i64::from(dt) * 250);
        let cmd = match code % 8 {
            0 => Command::Start,
            1 | 2 => Command::Switch {
                next_participant_id: None,
                expected_version: None,
                by: None,
            },
            3 => Command::Switch {
                next_participant_id: Some(pid(usize::from(code / 8) % (n + 1))),
                expected_version: (code & 0x80 != 0).then_some(s.version),
                by: (code & 0x40 != 0).then(|| pid(usize::from(code / 16) % n)),
            },
            4 => Command::Pause,
            5 => Command::Resume,
            6 => Command::Complete,
            _ => Command::Timeout,
        };
        let before = s.version;
        if let Some(w) = decide(&s, &cmd, now).write {
            assert_eq!(w.session.version, before + 1, "{cmd:?}");
            s = w.session;
        }
        assert!(
            view(&s, now)
                .participants
                .iter()
                .all(|p| p.time_remaining_ms >= 0)
        );
        assert!(
            decide(&s, &Command::Timeout, now).write.is_none(),
            "timeout twice != once"
        );
    }
});

/// Participant i's id; `n` (one past the last) names a stranger.
fn pid(i: usize) -> ParticipantId {
    ParticipantId::parse(&format!("00000000-0000-4000-8000-{i:012}")).expect("a valid uuid")
}
