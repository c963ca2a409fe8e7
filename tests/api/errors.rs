//! Every error code the API can answer with, in its envelope.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn unknown_sessions_are_404_on_every_route_and_delete_is_idempotent() {
    let app = spawn_app().await;
    let id = uuid();
    for (method, path) in [
        (Method::GET, format!("/v1/sessions/{id}")),
        (Method::POST, format!("/v1/sessions/{id}/start")),
        (Method::POST, format!("/v1/sessions/{id}/switch")),
        (Method::POST, format!("/v1/sessions/{id}/pause")),
        (Method::POST, format!("/v1/sessions/{id}/resume")),
        (Method::POST, format!("/v1/sessions/{id}/complete")),
    ] {
        let r = app.call(method.clone(), &path, None).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (404, "SESSION_NOT_FOUND"),
            "{method} {path}"
        );
        assert!(r.body["error"]["message"].as_str().unwrap().contains(&id));
    }
    let r = app
        .call(Method::DELETE, &format!("/v1/sessions/{id}"), None)
        .await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn create_on_an_existing_id_is_409_session_exists_and_does_not_overwrite() {
    let app = spawn_app().await;
    let body = session_body("per_participant", 2, 60_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    app.command(&id, "start").await;
    let r = app.post("/v1/sessions", Some(body)).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "SESSION_EXISTS"));
    let still = app.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(still.data()["status"], "running");
}

#[tokio::test]
async fn expected_version_mismatch_is_409_conflict_with_both_versions() {
    let app = spawn_app().await;
    let body = session_body("per_participant", 2, 60_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    app.command(&id, "start").await; // version 2
    let r = app
        .post(
            &format!("/v1/sessions/{id}/switch"),
            Some(json!({"expected_version": 1})),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "CONFLICT"));
    assert_eq!(
        r.body["error"]["details"],
        json!({"expected_version": 1, "actual_version": 2})
    );
    assert_eq!(
        app.get(&format!("/v1/sessions/{id}")).await.data()["version"],
        2
    );
}

#[tokio::test]
async fn invalid_transitions_name_the_current_status() {
    let app = spawn_app().await;
    let body = session_body("per_cycle", 2, 60_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;

    let cases = [
        ("switch", "not running (current status: pending)"),
        ("pause", "not running (current status: pending)"),
        ("resume", "not paused (current status: pending)"),
    ];
    for (cmd, msg) in cases {
        let r = app.post(&format!("/v1/sessions/{id}/{cmd}"), None).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "INVALID_STATE_TRANSITION"),
            "{cmd}"
        );
        assert_eq!(r.body["error"]["message"], format!("Session {id} {msg}"));
    }
    app.command(&id, "start").await;
    let r = app.post(&format!("/v1/sessions/{id}/start"), None).await;
    assert_eq!(
        r.body["error"]["message"],
        format!("Session {id} cannot be started (current status: running)")
    );
    app.command(&id, "complete").await;
    for cmd in ["start", "switch", "pause", "resume", "complete"] {
        let r = app.post(&format!("/v1/sessions/{id}/{cmd}"), None).await;
        assert_eq!(r.code(), "INVALID_STATE_TRANSITION", "{cmd}");
        assert!(r.text.contains("current status: completed"), "{}", r.text);
    }
}

#[tokio::test]
async fn switching_to_a_stranger_is_400_naming_the_field() {
    let app = spawn_app().await;
    let body = session_body("per_participant", 2, 60_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    app.command(&id, "start").await;
    let stranger = uuid();
    let r = app
        .post(
            &format!("/v1/sessions/{id}/switch"),
            Some(json!({"next_participant_id": stranger})),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "VALIDATION_ERROR"));
    assert_eq!(r.fields(), ["next_participant_id"]);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&stranger)
    );
    assert_eq!(
        app.get(&format!("/v1/sessions/{id}")).await.data()["version"],
        2,
        "nothing written"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_envelope() {
    let app = spawn_app().await;
    let r = app.get("/v2/nothing").await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "NOT_FOUND"));
    let r = app.call(Method::PUT, "/v1/sessions", None).await;
    assert_eq!((r.status.as_u16(), r.code()), (405, "METHOD_NOT_ALLOWED"));
}
