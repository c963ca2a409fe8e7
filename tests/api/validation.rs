//! Malformed input of every kind gets 400 (or 413) in the envelope, naming
//! the field; nothing panics and nothing is written.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn malformed_bodies_are_400_validation_errors() {
    let app = spawn_app().await;
    let cases: Vec<(Option<&str>, Vec<u8>, &str)> = vec![
        (JSON, b"".to_vec(), "body"),
        (JSON, b"null".to_vec(), "body"),
        (JSON, b"[1,2,3]".to_vec(), "body"),
        (JSON, b"\"just a string\"".to_vec(), "body"),
        (JSON, b"{\"session_id\": ".to_vec(), "body"),
        (JSON, b"{'single': 'quotes'}".to_vec(), "body"),
        (JSON, vec![0xff, 0xfe, 0x00], "body"),
        (
            JSON,
            b"{\"total_time_ms\": 99999999999999999999999999999}".to_vec(),
            "total_time_ms",
        ),
        (Some("text/plain"), b"{}".to_vec(), "Content-Type"),
        (None, b"{}".to_vec(), "Content-Type"),
        (
            Some("application/x-www-form-urlencoded"),
            b"a=b".to_vec(),
            "Content-Type",
        ),
    ];
    for (ct, body, field) in cases {
        let shown = String::from_utf8_lossy(&body).to_string();
        let r = app.raw(Method::POST, "/v1/sessions", ct, body).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "VALIDATION_ERROR"),
            "{shown}: {}",
            r.text
        );
        assert!(
            r.fields().contains(&field.to_owned()),
            "{shown}: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn every_field_rule_is_enforced_and_named() {
    let app = spawn_app().await;
    let base = session_body("per_participant", 2, 60_000);
    let long = "x".repeat(10_000);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"session_id": null}), "session_id"),
        (json!({"session_id": long}), "session_id"),
        (json!({"session_id": "ünïcødé"}), "session_id"),
        (json!({"sync_mode": "chess"}), "sync_mode"),
        (json!({"sync_mode": 7}), "sync_mode"),
        (json!({"total_time_ms": -1}), "total_time_ms"),
        (json!({"total_time_ms": 1e20}), "total_time_ms"),
        (json!({"total_time_ms": 86_400_001}), "total_time_ms"),
        (json!({"total_time_ms": 1000.5}), "total_time_ms"),
        (json!({"increment_ms": -1}), "increment_ms"),
        (json!({"max_time_ms": 999}), "max_time_ms"),
        (json!({"time_per_cycle_ms": "soon"}), "time_per_cycle_ms"),
        (json!({"metadata": "text"}), "metadata"),
        (
            json!({"metadata": {"blob": "y".repeat(16_400)}}),
            "metadata",
        ),
        (json!({"participants": []}), "participants"),
        (json!({"participants": [null]}), "participants[0]"),
        (
            json!({"participants": [{"participant_id": long, "participant_index": 0, "total_time_ms": 1000}]}),
            "participants[0].participant_id",
        ),
        (
            json!({"participants": [{"participant_id": uuid(), "participant_index": -1, "total_time_ms": 1000}]}),
            "participants[0].participant_index",
        ),
        (
            json!({"participants": [{"participant_id": uuid(), "participant_index": 0, "total_time_ms": 0}]}),
            "participants[0].total_time_ms",
        ),
        (
            json!({"participants": [{"participant_id": uuid(), "participant_index": 0}]}),
            "participants[0].total_time_ms",
        ),
        (
            json!({"participants": [{"participant_id": uuid(), "participant_index": 0, "total_time_ms": 1000, "group_id": "g1"}]}),
            "participants[0].group_id",
        ),
        (json!({"action_on_timeout": "skip"}), "action_on_timeout"),
        (
            json!({"action_on_timeout": {"type": "skip_cycle", "action": long}}),
            "action_on_timeout.action",
        ),
        (json!({"auto_advance": 1}), "auto_advance"),
    ];
    for (patch, field) in cases {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = app.post("/v1/sessions", Some(body)).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "VALIDATION_ERROR"),
            "{field}: {}",
            r.text
        );
        assert!(
            r.fields().contains(&field.to_owned()),
            "{field}: {}",
            r.text
        );
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains(field),
            "message names {field}"
        );
    }
}

#[tokio::test]
async fn mode_specific_requirements() {
    let app = spawn_app().await;
    let mut body = session_body("per_cycle", 2, 60_000);
    body.as_object_mut().unwrap().remove("time_per_cycle_ms");
    let r = app.post("/v1/sessions", Some(body)).await;
    assert_eq!(r.fields(), ["time_per_cycle_ms"]);

    let mut body = session_body("per_group", 2, 60_000);
    body["participants"][1]
        .as_object_mut()
        .unwrap()
        .remove("group_id");
    let r = app.post("/v1/sessions", Some(body)).await;
    assert_eq!(r.fields(), ["participants[1].group_id"]);

    let mut body = session_body("per_participant", 2, 60_000);
    body["participants"][1]["participant_id"] = body["participants"][0]["participant_id"].clone();
    let r = app.post("/v1/sessions", Some(body)).await;
    assert_eq!(r.fields(), ["participants[1].participant_id"]);
}

#[tokio::test]
async fn a_thousand_participants_fit_and_a_thousand_and_one_do_not() {
    let app = spawn_app().await;
    let body = session_body("per_participant", 1000, 60_000);
    let size = serde_json::to_vec(&body).unwrap().len();
    assert!(size > 100_000, "the limit case is realistic ({size} bytes)");
    app.create(&body).await;

    let body = session_body("per_participant", 1001, 60_000);
    let r = app.post("/v1/sessions", Some(body)).await;
    assert_eq!(
        (r.status.as_u16(), r.fields()),
        (400, vec!["participants".to_owned()])
    );
}

#[tokio::test]
async fn oversized_and_deeply_nested_bodies() {
    let app = spawn_app().await;
    let huge = format!("{{\"metadata\": \"{}\"}}", "z".repeat(300_000));
    let r = app
        .raw(Method::POST, "/v1/sessions", JSON, huge.into_bytes())
        .await;
    assert_eq!((r.status.as_u16(), r.code()), (413, "PAYLOAD_TOO_LARGE"));

    let mut body = session_body("per_participant", 1, 60_000);
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    body["metadata"] = json!({ "deep": deep });
    let r = app.post("/v1/sessions", Some(body)).await;
    assert_eq!(
        (r.status.as_u16(), r.fields()),
        (400, vec!["body".to_owned()])
    );
    assert!(r.text.contains("deeper than 32"));

    // Deeper than serde_json's own recursion limit: still a clean 400.
    let bomb = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = app
        .raw(Method::POST, "/v1/sessions", JSON, bomb.into_bytes())
        .await;
    assert_eq!(r.code(), "VALIDATION_ERROR");
}

#[tokio::test]
async fn bad_path_ids_and_switch_bodies() {
    let app = spawn_app().await;
    for bad in ["xyz", "12345", &"a".repeat(10_000), "%F0%9F%92%A9"] {
        let r = app.get(&format!("/v1/sessions/{bad}")).await;
        assert_eq!(
            (r.status.as_u16(), r.fields()),
            (400, vec!["id".to_owned()]),
            "{}",
            &bad[..bad.len().min(20)]
        );
    }

    let body = session_body("per_participant", 2, 60_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    app.command(&id, "start").await;
    let path = format!("/v1/sessions/{id}/switch");
    for (b, field) in [
        (json!([]), "body"),
        (json!({"next_participant_id": 5}), "next_participant_id"),
        (json!({"expected_version": -3}), "expected_version"),
        (json!({"expected_version": "2"}), "expected_version"),
        (json!({"expected_version": 1e30}), "expected_version"),
    ] {
        let r = app.post(&path, Some(b.clone())).await;
        assert_eq!(
            (r.status.as_u16(), r.fields()),
            (400, vec![field.to_owned()]),
            "{b}"
        );
    }
    let r = app
        .post(&path, Some(json!({"expected_version": 2.0})))
        .await;
    assert_eq!(r.status, 200, "an integral float is an integer: {}", r.text);
    // An empty JSON object, and no body at all, both advance.
    let r = app.post(&path, Some(json!({}))).await;
    assert_eq!(r.status, 200);
    let r = app.raw(Method::POST, &path, None, Vec::new()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["version"], 5);
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_413_on_every_route() {
    let app = spawn_app().await;
    let body = session_body("per_participant", 2, 60_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    let big = vec![b' '; 300_000];
    for path in [
        format!("/v1/sessions/{id}/start"),
        format!("/v1/sessions/{id}/pause"),
    ] {
        let r = app.raw(Method::POST, &path, JSON, big.clone()).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (413, "PAYLOAD_TOO_LARGE"),
            "{path}"
        );
    }
    assert_eq!(
        app.get(&format!("/v1/sessions/{id}")).await.data()["status"],
        "pending"
    );
}
