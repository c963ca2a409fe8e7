//! Time controls through the real API: a byo-yomi game over REST and
//! WebSocket on the embedded backend and on Redis, then server-side byo-yomi
//! and soft-close timeouts applied once by three instances on one Redis.
//! Time passes for real here (the scenario needs a player to think); every
//! assertion is an exact identity between fields the server returned.

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use synckairos::domain::Timestamp;

use common::process::instances;
use common::redis::RedisServer;
use common::ws::WsClient;
use common::*;

const BANK: i64 = 1_000;
const PERIODS: i64 = 2;
const PERIOD: i64 = 1_000;

fn byoyomi_body() -> Value {
    let mut body = session_body("per_participant", 2, BANK);
    body["time_control"] = json!({"type": "byoyomi", "periods": PERIODS, "period_ms": PERIOD});
    body
}

fn ts(v: &Value) -> Timestamp {
    Timestamp::parse_rfc3339(v.as_str().expect("a timestamp")).expect("RFC 3339")
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("an integer, got {v}"))
}

/// Lets a player think: the scenario itself needs time to pass.
async fn think(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// A byo-yomi game on the instance at `base`: the control is echoed, the
/// second player moves in overtime and keeps its period, and the server
/// flags the first player when its last period runs out.
async fn byoyomi_game(base: &str) {
    let app = Rest::new(base);
    let body = byoyomi_body();
    let id = body["session_id"].as_str().unwrap().to_owned();
    let created = app.create(&body).await;
    assert_eq!(created["time_control"], body["time_control"]);
    let p = &created["participants"][0];
    assert_eq!(
        p["overtime"],
        json!({"periods_left": PERIODS, "period_used_ms": 0})
    );
    assert_eq!(
        (
            &p["periods_left"],
            &p["in_overtime"],
            &p["time_remaining_ms"]
        ),
        (
            &json!(PERIODS),
            &json!(false),
            &json!(BANK + PERIODS * PERIOD)
        )
    );

    let mut ws = WsClient::watch(base, &id).await;
    let sync = ws.next_of("STATE_SYNC").await;
    assert_eq!(sync["state"]["time_control"]["type"], "byoyomi");
    app.command(&id, "start").await;
    assert_eq!(
        ws.next_of("STATE_UPDATE").await["state"]["status"],
        "running"
    );

    // The first player moves at once, in main time.
    let first = app.command(&id, "switch").await;
    let p0 = &first["participants"][0];
    assert_eq!(int(&p0["total_time_ms"]) + int(&p0["time_used_ms"]), BANK);
    assert_eq!(
        ws.next_of("STATE_UPDATE").await["state"]["version"],
        first["version"]
    );

    // The second thinks past its bank into the first period, then moves.
    think(1_300).await;
    let second = app.command(&id, "switch").await;
    let p1 = &second["participants"][1];
    let used = int(&p1["time_used_ms"]);
    let lost = (used - BANK) / PERIOD;
    assert!(used > BANK, "{second}");
    assert_eq!(p1["total_time_ms"], 0);
    assert_eq!(p1["in_overtime"], true);
    assert_eq!(p1["periods_left"], json!(PERIODS - lost));
    assert_eq!(
        p1["period_remaining_ms"],
        json!(PERIOD),
        "the next turn starts it afresh"
    );
    let update = ws.next_of("STATE_UPDATE").await;
    assert_eq!(update["state"]["version"], second["version"]);
    assert_eq!(
        update["state"]["participants"][1]["overtime"]["period_used_ms"],
        0
    );

    // Nobody moves: the server flags the first player on its last period's instant.
    let p0 = &second["participants"][0];
    let flag = ts(&second["cycle_started_at"]).plus(int(&p0["total_time_ms"]) + PERIODS * PERIOD);
    let expired = ws.next_of("STATE_UPDATE").await;
    let timeout = ws.next_of("TIMEOUT").await;
    assert_eq!(timeout["participant_id"], p0["participant_id"]);
    let state = &expired["state"];
    assert_eq!(state["status"], "expired");
    assert_eq!(ts(&state["session_completed_at"]), flag);
    let p0 = &state["participants"][0];
    assert_eq!(
        (
            &p0["periods_left"],
            &p0["time_remaining_ms"],
            &p0["has_expired"]
        ),
        (&json!(0), &json!(0), &json!(true))
    );
    assert_eq!(int(&p0["time_used_ms"]), BANK + PERIODS * PERIOD);
}

#[tokio::test]
async fn a_byoyomi_game_over_rest_and_websocket_on_the_embedded_backend() {
    let app = spawn_app().await;
    byoyomi_game(&app.base).await;
}

#[tokio::test]
async fn a_byoyomi_game_over_rest_and_websocket_on_redis() {
    let redis = RedisServer::start();
    let app = spawn_app_redis(&redis).await;
    byoyomi_game(&app.base).await;
}

/// On each watcher, the update that expired the session and the TIMEOUT
/// right after it (the updates before it are the game's moves).
async fn timeouts(watchers: &mut [WsClient]) -> Vec<(Value, Value)> {
    let mut seen = Vec::new();
    for ws in watchers {
        let update = loop {
            let update = ws.next_of("STATE_UPDATE").await;
            if update["state"]["status"] == "expired" {
                break update;
            }
        };
        let timeout = ws.next().await;
        assert_eq!(timeout["type"], "TIMEOUT", "right after its update");
        seen.push((update, timeout));
    }
    seen
}

#[tokio::test]
async fn three_instances_apply_byoyomi_and_soft_close_timeouts_once() {
    let redis = RedisServer::start();
    let nodes = instances(&redis, 3);
    let apps: Vec<Rest> = nodes.iter().map(|n| Rest::new(&n.base())).collect();

    // Byo-yomi: created on one instance, started on another, watched on all.
    let body = byoyomi_body();
    let game = body["session_id"].as_str().unwrap().to_owned();
    apps[0].create(&body).await;
    // Soft close: an auction of 4 s, a 3 s window, at most 1 s added.
    let mut auction_body = session_body("global", 2, 1_000);
    auction_body["total_time_ms"] = json!(4_000);
    auction_body["time_control"] =
        json!({"type": "soft_close", "window_ms": 3_000, "max_extension_ms": 1_000});
    let auction = auction_body["session_id"].as_str().unwrap().to_owned();
    apps[1].create(&auction_body).await;

    let mut game_watchers = Vec::new();
    let mut auction_watchers = Vec::new();
    for node in &nodes {
        let mut ws = WsClient::watch(&node.base(), &game).await;
        ws.next_of("STATE_SYNC").await;
        game_watchers.push(ws);
        let mut ws = WsClient::watch(&node.base(), &auction).await;
        ws.next_of("STATE_SYNC").await;
        auction_watchers.push(ws);
    }
    apps[1].command(&game, "start").await;
    apps[2].command(&auction, "start").await;
    let moved = apps[2].command(&game, "switch").await;

    // A late bid, 1.5 s in: less than the window is left, so the clock goes
    // back to the window (as far as the cap allows).
    think(1_500).await;
    let bid = apps[0].command(&auction, "switch").await;
    let bid_at = ts(&bid["cycle_started_at"]);
    let used: i64 = bid["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| int(&p["time_used_ms"]))
        .sum();
    let extension = int(&bid["extension_ms"]);
    assert_eq!(extension, (3_000 - (4_000 - used)).min(1_000), "{bid}");
    assert!(extension > 0, "{bid}");
    let left = int(&bid["participants"][0]["time_remaining_ms"]);
    assert_eq!(left, 4_000 + extension - used);

    // Nobody moves again: each timeout arrives on every instance, once.
    let p1 = &moved["participants"][1];
    let flag = ts(&moved["cycle_started_at"]).plus(BANK + PERIODS * PERIOD);
    for (update, timeout) in timeouts(&mut game_watchers).await {
        assert_eq!(timeout["participant_id"], p1["participant_id"]);
        assert_eq!(ts(&update["state"]["session_completed_at"]), flag);
        assert_eq!(update["state"]["participants"][1]["periods_left"], 0);
        assert_eq!(
            update["state"]["version"], 4,
            "created, started, switched, expired"
        );
    }
    for (update, _) in timeouts(&mut auction_watchers).await {
        let state = &update["state"];
        assert_eq!(ts(&state["session_completed_at"]), bid_at.plus(left));
        assert_eq!(state["extension_ms"], json!(extension));
        assert_eq!(state["version"], 4, "created, started, bid, expired");
    }
    for app in &apps {
        for id in [&game, &auction] {
            let r = app.get(&format!("/v1/sessions/{id}")).await;
            assert_eq!(r.data()["status"], "expired");
        }
    }
}

#[tokio::test]
async fn a_bad_time_control_is_a_400_naming_each_field() {
    let app = spawn_app().await;
    let mut body = session_body("per_participant", 3, 60_000);
    body["time_control"] = json!({"type": "hourglass"});
    let r = app.post("/v1/sessions", Some(body.clone())).await;
    assert_eq!((r.status.as_u16(), r.code()), (400, "VALIDATION_ERROR"));
    assert_eq!(r.fields(), ["participants"]);

    body["time_control"] = json!({"type": "byoyomi", "periods": 0, "period_ms": 10});
    let r = app.post("/v1/sessions", Some(body.clone())).await;
    assert_eq!(
        r.fields(),
        ["time_control.periods", "time_control.period_ms"]
    );

    let mut body = session_body("per_cycle", 2, 60_000);
    body["time_control"] = json!({"type": "simple_delay", "delay_ms": 1000});
    let r = app.post("/v1/sessions", Some(body)).await;
    assert_eq!(r.fields(), ["time_control.type"]);
    assert!(
        r.text.contains("per_participant or per_group"),
        "{}",
        r.text
    );
}
