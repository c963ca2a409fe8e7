//! The WebSocket protocol of API.md against in-process instances on the
//! embedded backend (the fan-out across instances over Redis is in
//! `tests/fanout.rs`).

mod common;

use std::time::Duration;

use serde_json::json;
use synckairos::clock::Clock;

use common::ws::{Closed, WsClient};
use common::*;

/// A created session; returns its id.
async fn created(app: &TestApp, mode: &str, participants: usize, bank_ms: i64) -> String {
    let body = session_body(mode, participants, bank_ms);
    app.create(&body).await;
    body["session_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn connected_then_state_sync_then_an_update_per_write() {
    let app = spawn_app().await;
    let id = created(&app, "per_participant", 2, 60_000).await;
    let mut ws = WsClient::watch(&app.base, &id).await;

    let connected = ws.next().await;
    assert_eq!(
        (connected["type"].as_str(), connected["sessionId"].as_str()),
        (Some("CONNECTED"), Some(id.as_str()))
    );
    assert!(connected["timestamp"].is_i64());
    let sync = ws.next().await;
    assert_eq!(sync["type"], "STATE_SYNC");
    assert_eq!(sync["state"]["version"], 1);
    assert!(
        sync["state"]["server_time_ms"].is_i64(),
        "derived fields are present"
    );
    assert!(sync["state"]["participants"][0]["time_remaining_ms"].is_i64());

    app.command(&id, "start").await;
    let r = app.post(&format!("/v1/sessions/{id}/switch"), None).await;
    assert_eq!(r.status, 200);
    for version in [2, 3] {
        let update = ws.next().await;
        assert_eq!(
            (update["type"].as_str(), update["state"]["version"].as_u64()),
            (Some("STATE_UPDATE"), Some(version))
        );
    }
}

#[tokio::test]
async fn a_session_that_does_not_exist_yet_can_be_watched() {
    let app = spawn_app().await;
    let body = session_body("per_cycle", 2, 60_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    let mut ws = WsClient::watch(&app.base, &id).await;
    assert_eq!(ws.next().await["type"], "CONNECTED");
    app.create(&body).await;
    let update = ws.next().await;
    assert_eq!(
        (update["type"].as_str(), update["state"]["version"].as_u64()),
        (Some("STATE_UPDATE"), Some(1))
    );
}

#[tokio::test]
async fn ping_gets_a_pong_with_server_timestamps() {
    let (clock, time) = Clock::manual(T0);
    let app = spawn_with(test_config(), clock, Some(time)).await;
    let id = created(&app, "per_participant", 2, 60_000).await;
    let mut ws = WsClient::watch(&app.base, &id).await;
    ws.next_of("STATE_SYNC").await;
    ws.send_json(json!({"type": "PING", "client_time": 12345}))
        .await;
    let pong = ws.next().await;
    assert_eq!(pong["type"], "PONG");
    assert_eq!(pong["client_time"], 12345);
    assert_eq!(pong["timestamp"], T0.ms());
    assert_eq!(pong["server_receive_ms"], T0.ms());
    assert_eq!(pong["server_send_ms"], T0.ms());
    ws.send_json(json!({"type": "PING"})).await;
    assert!(ws.next().await.get("client_time").is_none());
}

#[tokio::test]
async fn reconnect_resends_the_state_and_bad_messages_get_errors_without_closing() {
    let app = spawn_app().await;
    let id = created(&app, "per_participant", 2, 60_000).await;
    let mut ws = WsClient::watch(&app.base, &id).await;
    ws.next_of("STATE_SYNC").await;

    ws.send_json(json!({"type": "RECONNECT"})).await;
    let sync = ws.next().await;
    assert_eq!(
        (sync["type"].as_str(), sync["state"]["version"].as_u64()),
        (Some("STATE_SYNC"), Some(1))
    );

    for (send, code) in [
        ("not json", "INVALID_MESSAGE"),
        ("[1,2]", "INVALID_MESSAGE"),
        ("{\"type\": \"DANCE\"}", "UNKNOWN_MESSAGE_TYPE"),
    ] {
        ws.send_text(send).await;
        let error = ws.next().await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("ERROR"), Some(code)),
            "{send}"
        );
    }
    ws.send_binary(vec![1, 2, 3]).await;
    assert_eq!(ws.next().await["code"], "UNSUPPORTED_FRAME");

    // Still open: a PING is answered.
    ws.send_json(json!({"type": "PING"})).await;
    assert_eq!(ws.next().await["type"], "PONG");
}

#[tokio::test]
async fn deletion_sends_session_deleted_then_closes_1000_and_reconnect_reports_it() {
    let app = spawn_app().await;
    let id = created(&app, "per_participant", 2, 60_000).await;
    let mut ws = WsClient::watch(&app.base, &id).await;
    let mut late = WsClient::watch(&app.base, &id).await;
    ws.next_of("STATE_SYNC").await;
    late.next_of("STATE_SYNC").await;

    let r = app
        .call(reqwest::Method::DELETE, &format!("/v1/sessions/{id}"), None)
        .await;
    assert_eq!(r.status, 204);
    let (closed, before) = ws.until_closed().await;
    assert_eq!(before.last().unwrap()["type"], "SESSION_DELETED");
    assert_eq!(closed.code, 1000);

    // A client asking for the state of a deleted session gets an error.
    let mut fresh = WsClient::watch(&app.base, &id).await;
    assert_eq!(fresh.next().await["type"], "CONNECTED");
    fresh.send_json(json!({"type": "RECONNECT"})).await;
    assert_eq!(fresh.next().await["code"], "SESSION_NOT_FOUND");
}

#[tokio::test]
async fn a_missing_or_malformed_session_id_closes_1008() {
    let app = spawn_app().await;
    let ws_base = app.base.replacen("http", "ws", 1);
    for url in [
        format!("{ws_base}/ws"),
        format!("{ws_base}/ws?sessionId=nope"),
        format!("{ws_base}/ws?other=1"),
    ] {
        let mut ws = WsClient::connect(&url).await;
        let (closed, seen) = ws.until_closed().await;
        assert!(seen.is_empty(), "{url}: {seen:?}");
        assert_eq!(closed.code, 1008, "{url}");
        assert!(closed.reason.contains("sessionId"), "{closed:?}");
    }
    // A plain GET without the upgrade is a 400 in the envelope.
    let r = app.get("/ws?sessionId=x").await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "VALIDATION_ERROR"));
}

#[tokio::test]
async fn server_timeouts_reach_sockets_as_update_and_timeout() {
    let app = spawn_app_manual_clock().await;
    let mut body = session_body("per_participant", 2, 5_000);
    body["action_on_timeout"] = json!({"type": "auto_action", "action": "fold"});
    let id = body["session_id"].as_str().unwrap().to_owned();
    let ids = participant_ids(&body);
    app.create(&body).await;
    app.command(&id, "start").await;
    let mut ws = WsClient::watch(&app.base, &id).await;
    ws.next_of("STATE_SYNC").await;

    app.advance(5_000);
    let update = ws.next().await;
    assert_eq!(
        (update["type"].as_str(), update["state"]["version"].as_u64()),
        (Some("STATE_UPDATE"), Some(3))
    );
    let timeout = ws.next().await;
    assert_eq!(timeout["type"], "TIMEOUT");
    assert_eq!(timeout["participant_id"], json!(ids[0]));
    assert_eq!(
        timeout["action_on_timeout"],
        json!({"type": "auto_action", "action": "fold"})
    );
    assert_eq!(timeout["state"]["active_participant_id"], json!(ids[1]));
}

#[tokio::test]
async fn connection_limits_close_with_a_clear_reason() {
    let mut config = test_config();
    config.ws_max_connections = 2;
    let app = spawn_with(config, Clock::System, None).await;
    let id = created(&app, "per_participant", 2, 60_000).await;
    let mut a = WsClient::watch(&app.base, &id).await;
    let mut b = WsClient::watch(&app.base, &id).await;
    a.next_of("STATE_SYNC").await;
    b.next_of("STATE_SYNC").await;
    let mut c = WsClient::watch(&app.base, &id).await;
    let (closed, _) = c.until_closed().await;
    assert_eq!(
        closed,
        Closed {
            code: 1013,
            reason: "too many connections on this instance".into()
        }
    );

    let mut config = test_config();
    config.ws_max_connections_per_session = 1;
    let app = spawn_with(config, Clock::System, None).await;
    let id = created(&app, "per_participant", 2, 60_000).await;
    let mut a = WsClient::watch(&app.base, &id).await;
    a.next_of("STATE_SYNC").await;
    let mut b = WsClient::watch(&app.base, &id).await;
    assert_eq!(
        b.until_closed().await.0.reason,
        "too many connections for this session"
    );
}

#[tokio::test]
async fn a_flood_beyond_the_per_ip_limit_is_refused_while_admitted_clients_keep_working() {
    let mut config = test_config();
    config.ws_max_connections_per_ip = 3;
    let app = spawn_with(config, Clock::System, None).await;
    let id = created(&app, "per_participant", 2, 60_000).await;
    app.command(&id, "start").await;
    let mut admitted = Vec::new();
    for _ in 0..3 {
        let mut ws = WsClient::watch(&app.base, &id).await;
        ws.next_of("STATE_SYNC").await;
        admitted.push(ws);
    }

    // 50 more from the same address, all at once.
    let flood = (0..50).map(|_| async {
        let mut ws = WsClient::watch(&app.base, &id).await;
        ws.until_closed().await
    });
    for (closed, seen) in futures_util::future::join_all(flood).await {
        assert_eq!(
            closed,
            Closed {
                code: 1013,
                reason: "too many connections from this address".into()
            }
        );
        assert!(
            seen.is_empty(),
            "a refused socket is sent nothing: {seen:?}"
        );
    }

    // The admitted ones still receive every update.
    app.post(&format!("/v1/sessions/{id}/switch"), None).await;
    for ws in &mut admitted {
        let update = ws.next_of("STATE_UPDATE").await;
        assert_eq!(update["state"]["version"], 3);
    }
    // Refusals held no slot, and a closed client gives its slot back.
    drop(admitted.pop());
    app.await_watchers(&id, 2).await;
    let mut again = WsClient::watch(&app.base, &id).await;
    again.next_of("STATE_SYNC").await;
}

/// A started session of 1,000 participants on a manual clock (its states
/// are ~110 KB, so a client that does not read backs up after a few),
/// watched by a client that reads and one that does not.
async fn watched_large_session(queue: u64) -> (TestApp, String, WsClient, WsClient) {
    let mut config = test_config();
    config.ws_send_queue = queue;
    config.ws_ping_interval_ms = 600_000; // the stalled client must not be dropped for silence
    let (clock, handle) = Clock::manual(T0);
    let app = spawn_with(config, clock, Some(handle)).await;
    let mut body = session_body("per_participant", 1000, 5_000);
    body["action_on_timeout"] = json!({"type": "auto_action", "action": "fold"});
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    app.command(&id, "start").await;
    let mut reader = WsClient::watch(&app.base, &id).await;
    let stalled = WsClient::watch_stalled(&app.base, &id).await;
    reader.next_of("STATE_SYNC").await;
    app.await_watchers(&id, 2).await;
    (app, id, reader, stalled)
}

/// The participants of the TIMEOUTs among `messages`, in order.
fn timeouts_in(messages: &[serde_json::Value]) -> Vec<&str> {
    messages
        .iter()
        .filter(|m| m["type"] == "TIMEOUT")
        .map(|m| m["participant_id"].as_str().unwrap())
        .collect()
}

/// Switches `n` times; `reader` must get every update, in order.
async fn switch(app: &TestApp, id: &str, reader: &mut WsClient, n: usize) {
    for _ in 0..n {
        let r = app.post(&format!("/v1/sessions/{id}/switch"), None).await;
        assert_eq!(r.status, 200);
        let update = reader.next().await;
        assert_eq!(update["type"], "STATE_UPDATE");
        assert_eq!(
            update["state"]["version"],
            r.data()["version"],
            "the reader misses nothing"
        );
    }
}

/// Lets the active participant's 5 s run out; `reader` must get the update and its TIMEOUT.
async fn time_out(app: &TestApp, reader: &mut WsClient) -> String {
    app.advance(5_000);
    assert_eq!(reader.next().await["type"], "STATE_UPDATE");
    let timeout = reader.next().await;
    assert_eq!(timeout["type"], "TIMEOUT");
    timeout["participant_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_client_that_stops_reading_gets_the_newest_state_and_every_timeout_in_order() {
    let (app, id, mut reader, mut stalled) = watched_large_session(64).await;

    // While it does not read, the others get everything at once, and it
    // stays connected.
    switch(&app, &id, &mut reader, 30).await;
    let mut flagged = Vec::new();
    for _ in 0..3 {
        flagged.push(time_out(&app, &mut reader).await);
        switch(&app, &id, &mut reader, 10).await;
    }
    let last = app.get(&format!("/v1/sessions/{id}")).await.data()["version"]
        .as_u64()
        .unwrap();
    app.await_watchers(&id, 2).await;
    app.call(reqwest::Method::DELETE, &format!("/v1/sessions/{id}"), None)
        .await;
    reader.next_of("SESSION_DELETED").await;

    // Then it reads: stale states were skipped, never a TIMEOUT, versions
    // only go up, the newest state came last, and the deletion closed it.
    let (closed, seen) = stalled.until_closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1000, "session deleted")
    );
    let kinds: Vec<&str> = seen.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.last(), Some(&"SESSION_DELETED"));
    assert_eq!(timeouts_in(&seen), flagged, "every TIMEOUT, in order");
    let mut version = 0;
    for m in &seen {
        match m["type"].as_str() {
            Some("STATE_SYNC" | "STATE_UPDATE") => {
                let v = m["state"]["version"].as_u64().unwrap();
                assert!(v > version, "versions only go up: {v} after {version}");
                version = v;
            }
            Some("TIMEOUT") => assert_eq!(m["state"]["version"].as_u64(), Some(version)),
            _ => {}
        }
    }
    assert_eq!(version, last, "the newest state arrived");
    let updates = kinds.iter().filter(|k| **k == "STATE_UPDATE").count();
    assert!(
        updates < 30 + 3 * 11,
        "stale states were skipped: {updates} updates for {} versions",
        30 + 3 * 11
    );
}

#[tokio::test]
async fn a_client_too_far_behind_even_for_coalescing_is_closed_with_1013() {
    // Two frames that must arrive may wait; the third closes the socket.
    let (app, id, mut reader, mut stalled) = watched_large_session(2).await;

    switch(&app, &id, &mut reader, 10).await;
    let mut flagged = Vec::new();
    for _ in 0..3 {
        flagged.push(time_out(&app, &mut reader).await);
    }
    // The reader is not held up and keeps receiving.
    switch(&app, &id, &mut reader, 2).await;

    let (closed, seen) = stalled.until_closed().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1013, "too slow: too far behind")
    );
    let timeouts = timeouts_in(&seen);
    assert_eq!(
        timeouts,
        &flagged[..timeouts.len()],
        "what did arrive is in order"
    );
    app.await_watchers(&id, 1).await;
    // The recorder is process-wide: no other test here moves this counter.
    let page = app.get("/metrics").await.text;
    assert!(metric(&page, "synckairos_ws_slow_client_disconnects_total") >= 1.0);
    assert!(metric(&page, "synckairos_ws_coalesced_total") >= 1.0);
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_and_a_server_close_ends_cleanly() {
    let app = spawn_app().await;
    let id = created(&app, "per_participant", 2, 60_000).await;
    // The client closes: the server answers with the client's code (RFC 6455 §5.5.1).
    for code in [1000, 4321] {
        let mut ws = WsClient::watch(&app.base, &id).await;
        ws.next_of("STATE_SYNC").await;
        let answered = ws.close(code).await;
        assert_eq!(answered.code, code, "{answered:?}");
    }
    app.await_watchers(&id, 0).await;
    // The server closes (deletion): the client's answer completes the
    // handshake, and the connection then ends without an error.
    let mut ws = WsClient::watch(&app.base, &id).await;
    ws.next_of("STATE_SYNC").await;
    app.call(reqwest::Method::DELETE, &format!("/v1/sessions/{id}"), None)
        .await;
    let (closed, _) = ws.until_closed().await;
    assert_eq!(closed.code, 1000);
    assert!(
        ws.ended_cleanly().await,
        "no reset after the close handshake"
    );
}

#[tokio::test]
async fn unresponsive_clients_are_dropped_after_two_missed_pings() {
    let mut config = test_config();
    config.ws_ping_interval_ms = 100;
    let app = spawn_with(config, Clock::System, None).await;
    let id = created(&app, "per_participant", 2, 60_000).await;
    // A client that completes the handshake and then never reads, so never
    // answers a ping; and one that keeps reading (tungstenite answers pings).
    let url = format!("{}/ws?sessionId={id}", app.base.replacen("http", "ws", 1));
    let (_silent, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let mut live = WsClient::watch(&app.base, &id).await;
    live.next_of("STATE_SYNC").await;
    app.await_watchers(&id, 2).await;

    let sid = synckairos::domain::SessionId::parse(&id).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.hub.watchers(sid) != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "silent client not dropped"
        );
        live.send_json(json!({"type": "PING"})).await;
        assert_eq!(live.next().await["type"], "PONG");
    }
    live.send_json(json!({"type": "PING"})).await;
    assert_eq!(
        live.next().await["type"],
        "PONG",
        "the live client is still served"
    );
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let mut app = spawn_app().await;
    let id = created(&app, "per_participant", 2, 60_000).await;
    let mut ws = WsClient::watch(&app.base, &id).await;
    ws.next_of("STATE_SYNC").await;
    app.shutdown();
    let (closed, _) = ws.until_closed().await;
    assert_eq!(closed.code, 1001);
}
