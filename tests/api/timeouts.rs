//! Timeouts applied by the server itself on the embedded backend, observed
//! through the published updates (no sleeping, no client call).

use serde_json::json;
use synckairos::domain::Status;
use synckairos::engine::Update;

use crate::common::*;

fn state_of(
    update: Update,
) -> (
    synckairos::domain::Session,
    Vec<synckairos::engine::TimeoutNotice>,
) {
    match update {
        Update::State {
            state, timeouts, ..
        } => (state.decode().unwrap(), timeouts),
        Update::Deleted { .. } => panic!("unexpected deletion"),
    }
}

#[tokio::test]
async fn the_server_expires_a_session_at_its_deadline_without_any_client_call() {
    let app = spawn_app_manual_clock().await;
    let body = session_body("per_participant", 2, 5_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    let ids = participant_ids(&body);
    app.create(&body).await;
    app.command(&id, "start").await;
    let mut updates = app.watch(&id).await;

    app.advance(4_999);
    app.advance(1); // the deadline instant
    let (state, timeouts) = state_of(updates.next().await);
    assert_eq!(state.status, Status::Expired);
    assert_eq!(timeouts.len(), 1);
    assert_eq!(timeouts[0].participant_id.to_string(), ids[0]);
    assert_eq!(timeouts[0].at, T0.plus(5_000));

    let r = app.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(r.data()["status"], "expired");
    assert_eq!(r.data()["expired_participant_id"], json!(ids[0]));
    assert_eq!(r.data()["participants"][0]["has_expired"], true);
    assert_eq!(r.data()["participants"][0]["time_remaining_ms"], 0);
    assert_eq!(r.data()["cycle_started_at"], serde_json::Value::Null);

    let metrics = app.get("/metrics").await.text;
    assert!(
        metrics.contains("synckairos_timeouts_applied_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("synckairos_timeout_lag_seconds_bucket"),
        "{metrics}"
    );
}

#[tokio::test]
async fn skip_cycle_chains_keep_exact_cadence() {
    let app = spawn_app_manual_clock().await;
    let body = session_body("per_cycle", 3, 60_000); // 30 s cycles, skip_cycle by default
    let id = body["session_id"].as_str().unwrap().to_owned();
    let ids = participant_ids(&body);
    app.create(&body).await;
    app.command(&id, "start").await;
    let mut updates = app.watch(&id).await;

    for k in 1..=4 {
        app.advance(30_000);
        let (state, timeouts) = state_of(updates.next().await);
        assert_eq!(state.status, Status::Running);
        assert_eq!(
            state.cycle_started_at,
            Some(T0.plus(30_000 * k)),
            "no drift"
        );
        assert_eq!(
            state.active_participant_id.unwrap().to_string(),
            ids[(k as usize) % 3]
        );
        assert_eq!(
            timeouts[0].participant_id.to_string(),
            ids[(k as usize - 1) % 3]
        );
    }
}

#[tokio::test]
async fn a_switch_after_the_deadline_is_refused_and_the_timeout_stands() {
    let app = spawn_app_manual_clock().await;
    let mut body = session_body("per_participant", 2, 5_000);
    body["action_on_timeout"] = json!({"type": "end_session"});
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    app.command(&id, "start").await;
    let mut updates = app.watch(&id).await;
    app.advance(6_000);
    let r = app.post(&format!("/v1/sessions/{id}/switch"), None).await;
    // Whether the scheduler or this switch writes the timeout first, the
    // outcome is the same: the switch is refused and the session expired once.
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "INVALID_STATE_TRANSITION"),
        "{}",
        r.text
    );
    assert!(r.text.contains("current status: expired"));
    let (state, _) = state_of(updates.next().await);
    assert_eq!(state.status, Status::Expired);
    assert_eq!(state.version, 3, "the timeout was written exactly once");
}

#[tokio::test]
async fn a_pause_just_before_the_deadline_holds_it_and_resume_sets_a_new_one() {
    let app = spawn_app_manual_clock().await;
    let id = app.started("per_participant", 2, 5_000).await;
    let mut updates = app.watch(&id).await;

    app.advance(4_990);
    app.command(&id, "pause").await;
    let (paused, _) = state_of(updates.next().await);
    assert_eq!(paused.status, Status::Paused);
    app.advance(60_000); // far past the original deadline
    let r = app.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(r.data()["status"], "paused");
    assert_eq!(r.data()["participants"][0]["time_remaining_ms"], 10);

    app.command(&id, "resume").await;
    // The feed is ordered: had the old deadline fired while paused, its
    // update would come before the resume's.
    let (resumed, timeouts) = state_of(updates.next().await);
    assert_eq!((resumed.status, resumed.version), (Status::Running, 4));
    assert!(timeouts.is_empty());
    app.advance(10); // the new deadline: resume + the 10 ms left
    let (expired, timeouts) = state_of(updates.next().await);
    assert_eq!((expired.status, expired.version), (Status::Expired, 5));
    assert_eq!(timeouts[0].at, T0.plus(4_990 + 60_000 + 10));
}
