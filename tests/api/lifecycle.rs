//! The full lifecycle of every sync mode over HTTP.

use serde_json::{Value, json};

use crate::common::*;

fn version(state: &Value) -> u64 {
    state["version"].as_u64().unwrap()
}

#[tokio::test]
async fn every_mode_runs_create_start_switch_pause_resume_complete_delete() {
    let app = spawn_app_manual_clock().await;
    for mode in [
        "per_participant",
        "per_cycle",
        "per_group",
        "global",
        "count_up",
    ] {
        let body = session_body(mode, 4, 60_000);
        let id = body["session_id"].as_str().unwrap().to_owned();
        let ids = participant_ids(&body);

        let t = app.clock.as_ref().unwrap().now();
        let created = app.create(&body).await;
        assert_eq!(
            (created["status"].as_str(), version(&created)),
            (Some("pending"), 1),
            "{mode}"
        );
        assert_eq!(created["created_at"], json!(t.to_rfc3339()));

        let started = app.command(&id, "start").await;
        assert_eq!(started["status"], "running");
        assert_eq!(started["active_participant_id"], json!(ids[0]));
        assert_eq!(started["cycle_started_at"], json!(t.to_rfc3339()));

        app.advance(1_500);
        let live = app.get(&format!("/v1/sessions/{id}")).await;
        assert_eq!(live.status, 200);
        assert_eq!(live.data()["server_time_ms"], json!(t.ms() + 1_500));
        let expected_left = match mode {
            "per_cycle" => 28_500,
            "global" | "count_up" => 598_500, // count_up: cap is total_time_ms
            _ => 58_500,
        };
        assert_eq!(
            live.data()["participants"][0]["time_remaining_ms"],
            json!(expected_left),
            "{mode}"
        );

        let switched = app.post(&format!("/v1/sessions/{id}/switch"), None).await;
        assert_eq!(switched.status, 200, "{}", switched.text);
        let next = if mode == "per_group" {
            &ids[2]
        } else {
            &ids[1]
        };
        assert_eq!(
            switched.data()["active_participant_id"],
            json!(next),
            "{mode}"
        );
        assert_eq!(switched.data()["version"], 3);
        assert_eq!(switched.data()["participants"][0]["time_used_ms"], 1_500);

        let paused = app.command(&id, "pause").await;
        assert_eq!(
            (
                paused["status"].as_str(),
                paused["cycle_started_at"].clone()
            ),
            (Some("paused"), Value::Null)
        );
        app.advance(60_000); // paused time is not charged
        let resumed = app.command(&id, "resume").await;
        assert_eq!(resumed["status"], "running");
        app.advance(500);
        let switched = app.post(&format!("/v1/sessions/{id}/switch"), None).await;
        let p = if mode == "per_group" { 2 } else { 1 };
        assert_eq!(
            switched.data()["participants"][p]["time_used_ms"],
            500,
            "{mode}"
        );

        let done = app.command(&id, "complete").await;
        assert_eq!(done["status"], "completed");
        assert_eq!(version(&done), 7);

        let deleted = app
            .call(reqwest::Method::DELETE, &format!("/v1/sessions/{id}"), None)
            .await;
        assert_eq!((deleted.status.as_u16(), deleted.text.as_str()), (204, ""));
        assert_eq!(app.get(&format!("/v1/sessions/{id}")).await.status, 404);
    }
}

#[tokio::test]
async fn switch_to_a_named_participant_with_expected_version() {
    let app = spawn_app().await;
    let body = session_body("per_participant", 3, 60_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    let ids = participant_ids(&body);
    app.create(&body).await;
    let started = app.command(&id, "start").await;

    let r = app
        .post(
            &format!("/v1/sessions/{id}/switch"),
            Some(json!({"next_participant_id": ids[2].to_uppercase(), "expected_version": version(&started)})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["active_participant_id"], json!(ids[2]));
    // The switch result is the smaller v2 payload.
    let keys: Vec<&str> = r
        .data()
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "session_id",
        "active_participant_id",
        "cycle_started_at",
        "participants",
        "status",
        "version",
    ] {
        assert!(keys.contains(&k), "missing {k}");
    }
    assert!(!keys.contains(&"sync_mode"));
}

#[tokio::test]
async fn ids_are_accepted_in_any_case_and_returned_lower_case() {
    let app = spawn_app().await;
    let mut body = session_body("per_participant", 2, 60_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    body["session_id"] = json!(id.to_uppercase());
    let created = app.create(&body).await;
    assert_eq!(created["session_id"], json!(id));
    let r = app
        .get(&format!("/v1/sessions/{}", id.to_uppercase()))
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn optional_fields_are_omitted_and_extensions_present() {
    let app = spawn_app().await;
    let body = session_body("per_participant", 2, 60_000);
    let s = app.create(&body).await;
    assert!(s.get("max_time_ms").is_none());
    assert!(s.get("metadata").is_none());
    assert!(s["participants"][0].get("group_id").is_none());
    assert_eq!(s["increment_ms"], 0);
    assert_eq!(s["action_on_timeout"], json!({"type": "end_session"}));
    assert_eq!(s["auto_advance"], false);

    let mut body = session_body("count_up", 1, 60_000);
    body["max_time_ms"] = json!(5000);
    body["metadata"] = json!({"table": "7", "note": "ünïcødé ✓"});
    let s = app.create(&body).await;
    assert_eq!(s["max_time_ms"], 5000);
    assert_eq!(s["metadata"]["note"], "ünïcødé ✓");
}

#[tokio::test]
async fn concurrent_switches_never_lose_an_update() {
    let app = spawn_app().await;
    let body = session_body("per_participant", 2, 600_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    app.command(&id, "start").await;

    let path = format!("/v1/sessions/{id}/switch");
    let calls = (0..40).map(|_| app.post(&path, None));
    let replies = futures_util::future::join_all(calls).await;
    let ok = replies.iter().filter(|r| r.status == 200).count() as u64;
    for r in &replies {
        assert!(r.status == 200 || r.code() == "CONFLICT", "{}", r.text);
        if r.code() == "CONFLICT" {
            let d = &r.body["error"]["details"];
            assert!(d["actual_version"].as_u64() > d["expected_version"].as_u64());
        }
    }
    // Every accepted switch is exactly one version: none was overwritten.
    let end = app.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(version(end.data()), 2 + ok);
}
