//! Time controls over HTTP on a manual clock: exact values, and proof that
//! the server writes nothing while a delay ends or a period is lost, only at
//! a move and at the final flag.

use serde_json::json;
use synckairos::domain::Status;
use synckairos::engine::Update;

use crate::common::*;

#[tokio::test]
async fn a_period_lost_is_derived_and_only_the_flag_is_written() {
    let app = spawn_app_manual_clock().await;
    let mut body = session_body("per_participant", 2, 5_000);
    body["time_control"] = json!({"type": "byoyomi", "periods": 3, "period_ms": 10_000});
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    let started = app.command(&id, "start").await;
    let mut updates = app.watch(&id).await;

    // 3 s into the second period: the first is lost, the version unchanged.
    app.advance(18_000);
    let r = app.get(&format!("/v1/sessions/{id}")).await;
    let p = &r.data()["participants"][0];
    assert_eq!(r.data()["version"], started["version"]);
    assert_eq!(
        (
            &p["periods_left"],
            &p["period_remaining_ms"],
            &p["time_remaining_ms"]
        ),
        (&json!(2), &json!(7_000), &json!(17_000))
    );
    assert_eq!(
        p["overtime"]["periods_left"], 3,
        "stored as of the cycle start"
    );

    // The flag falls on the last period's instant, and that is the next write.
    app.advance(16_999);
    app.advance(1);
    let Update::State {
        state, timeouts, ..
    } = updates.next().await
    else {
        panic!("a state update");
    };
    let state = state.decode().unwrap();
    assert_eq!(state.status, Status::Expired);
    assert_eq!(state.version, 3);
    assert_eq!(timeouts[0].at, T0.plus(35_000));
}

#[tokio::test]
async fn a_fide_classical_control_over_http() {
    // "40 moves in 90 minutes, then 30 minutes, 30 s per move from move 1",
    // scaled to 2 moves, with a US delay instead of the increment.
    let app = spawn_app_manual_clock().await;
    let mut body = session_body("per_participant", 2, 60_000);
    body["time_control"] = json!({"type": "simple_delay", "delay_ms": 5_000,
        "stages": [{"after_moves": 2, "add_ms": 30_000}]});
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    app.command(&id, "start").await;

    app.advance(3_000);
    let r = app.get(&format!("/v1/sessions/{id}")).await;
    let p = &r.data()["participants"][0];
    assert_eq!(
        (
            &p["delay_remaining_ms"],
            &p["bank_remaining_ms"],
            &p["moves_left"]
        ),
        (&json!(2_000), &json!(60_000), &json!(2))
    );
    for _ in 0..3 {
        app.command(&id, "switch").await;
        app.advance(8_000);
    }
    let moved = app.command(&id, "switch").await;
    // Each of participant 0's moves: the first after 3 s (inside the delay),
    // the second after 8 s (3 s of bank), then the stage.
    let p = &moved["participants"][0];
    assert_eq!(p["total_time_ms"], 60_000 - 3_000 + 30_000);
    assert_eq!(p["cycle_count"], 2);
    assert!(p.get("moves_left").is_none(), "past the last stage");
}
