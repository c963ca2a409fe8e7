//! Webhooks against real parts: instances (in-process, and separate
//! processes where one is killed) on a real Redis, delivering to a local
//! receiver that checks every signature with its own implementation.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use synckairos::clock::Clock;
use synckairos::config::{AuthMode, Config};

use common::process::Instance;
use common::receiver::{Received, Receiver, SECRET};
use common::redis::RedisServer;
use common::*;

/// An instance configuration sending every event type to `receiver`, with
/// quick retries (`schedule`).
fn webhook_config(receiver: &Receiver, redis: Option<&RedisServer>, schedule: &str) -> Config {
    let mut config = test_config();
    config.redis_url = redis.map(RedisServer::url);
    config.webhook_url = Some(receiver.url("/hooks"));
    config.webhook_secret = Some(SECRET.parse().unwrap());
    config.webhook_events = "*".into();
    config.webhook_retry_schedule = schedule.into();
    config.webhook_timeout_ms = 2_000;
    config
}

/// The types received per session id.
fn types_by_session(got: &[Received]) -> BTreeMap<String, Vec<String>> {
    let mut by = BTreeMap::<String, Vec<String>>::new();
    for r in got {
        let sid = r.body["data"]["session_id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        by.entry(sid)
            .or_default()
            .push(r.body["type"].as_str().unwrap_or("").to_owned());
    }
    by
}

fn ids(got: &[Received]) -> HashSet<String> {
    got.iter().map(|r| r.id.clone()).collect()
}

/// A game played through: created, started, switched, paused, resumed,
/// completed, deleted; and one that times out. Every type arrives once,
/// signed, with its data.
async fn every_event_type_arrives_once(redis: Option<&RedisServer>) {
    let receiver = Receiver::start().await;
    let app = spawn_with(
        webhook_config(&receiver, redis, "100ms"),
        Clock::System,
        None,
    )
    .await;

    let body = session_body("per_participant", 2, 60_000);
    let game = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    for cmd in ["start", "switch", "pause", "resume", "complete"] {
        app.command(&game, cmd).await;
    }
    let r = app
        .call(Method::DELETE, &format!("/v1/sessions/{game}"), None)
        .await;
    assert_eq!(r.status, 204);

    let mut body = session_body("per_participant", 2, 1_000);
    body["action_on_timeout"] = json!({"type": "end_session", "action": "forfeit"});
    let flagged = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    app.command(&flagged, "start").await;

    let got = receiver
        .until("both sessions' events", |got| {
            let by = types_by_session(got);
            by.get(&game).map_or(0, Vec::len) >= 7 && by.get(&flagged).map_or(0, Vec::len) >= 4
        })
        .await;
    assert!(got.iter().all(|r| r.verified), "every signature checks out");
    assert!(got.iter().all(|r| r.path == "/hooks"));
    assert_eq!(ids(&got).len(), got.len(), "each event once: {got:#?}");
    let by = types_by_session(&got);
    let mut game_types = by[&game].clone();
    game_types.sort();
    assert_eq!(
        game_types,
        [
            "session.completed",
            "session.created",
            "session.deleted",
            "session.paused",
            "session.resumed",
            "session.started",
            "session.switched"
        ]
    );
    let mut flag_types = by[&flagged].clone();
    flag_types.sort();
    assert_eq!(
        flag_types,
        [
            "session.created",
            "session.expired",
            "session.started",
            "session.timeout"
        ]
    );

    let of = |sid: &str, kind: &str| -> Value {
        got.iter()
            .find(|r| r.body["data"]["session_id"] == sid && r.body["type"] == kind)
            .unwrap()
            .body
            .clone()
    };
    let timeout = of(&flagged, "session.timeout");
    let flagged_state = &timeout["data"]["state"];
    assert_eq!(
        timeout["data"]["participant_id"],
        flagged_state["participants"][0]["participant_id"]
    );
    assert_eq!(
        timeout["data"]["action_on_timeout"],
        json!({"type": "end_session", "action": "forfeit"})
    );
    assert_eq!(flagged_state["status"], "expired");
    assert_eq!(timeout["timestamp"], flagged_state["session_completed_at"]);
    let deleted = of(&game, "session.deleted");
    assert_eq!(deleted["data"]["state"], Value::Null);
    assert_eq!(deleted["data"]["version"], 7);
    let switched = of(&game, "session.switched");
    assert_eq!(switched["data"]["version"], 3);
    assert_eq!(switched["data"]["state"]["version"], 3);
}

#[tokio::test]
async fn every_event_type_arrives_once_on_redis() {
    let redis = RedisServer::start();
    every_event_type_arrives_once(Some(&redis)).await;
}

#[tokio::test]
async fn every_event_type_arrives_once_on_the_embedded_backend() {
    every_event_type_arrives_once(None).await;
}

#[tokio::test]
async fn only_the_selected_types_are_sent_and_the_default_is_the_outcomes() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let mut config = webhook_config(&receiver, Some(&redis), "100ms");
    config.webhook_events = Config::defaults().webhook_events;
    let app = spawn_with(config, Clock::System, None).await;
    let id = app.started("per_participant", 2, 60_000).await;
    app.command(&id, "switch").await;
    app.command(&id, "complete").await;
    let got = receiver
        .until("the completion", |got| !got.is_empty())
        .await;
    // The completion came after the other events: had they been sent, they
    // would have arrived first.
    assert_eq!(types_by_session(&got)[&id], ["session.completed"]);
}

#[tokio::test]
async fn a_failing_receiver_gets_retries_carrying_the_same_id() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.fail_next(2);
    let mut config = webhook_config(&receiver, Some(&redis), "100ms,200ms,300ms");
    config.webhook_events = "session.completed".into();
    let app = spawn_with(config, Clock::System, None).await;
    let id = app.started("per_participant", 2, 60_000).await;
    app.command(&id, "complete").await;
    let got = receiver
        .until("three attempts at the completion", |got| {
            got.iter()
                .filter(|r| r.body["type"] == "session.completed")
                .count()
                >= 3
        })
        .await;
    let attempts: Vec<&Received> = got
        .iter()
        .filter(|r| r.body["type"] == "session.completed")
        .collect();
    assert_eq!(
        attempts.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 500, 204]
    );
    assert!(
        attempts
            .iter()
            .all(|r| r.id == attempts[0].id && r.raw == attempts[0].raw)
    );
    assert!(attempts.iter().all(|r| r.verified));
    assert!(
        attempts
            .windows(2)
            .all(|w| w[0].timestamp <= w[1].timestamp)
    );
}

/// A separate process on `redis` sending every event type to `receiver`.
fn webhook_instance(redis: &RedisServer, receiver: &Receiver, extra: &[(&str, &str)]) -> Instance {
    let (url, hooks) = (redis.url(), receiver.url("/hooks"));
    let mut env = vec![
        ("REDIS_URL", url.as_str()),
        ("WEBHOOK_URL", hooks.as_str()),
        ("WEBHOOK_SECRET", SECRET),
        ("WEBHOOK_EVENTS", "*"),
    ];
    env.extend_from_slice(extra);
    Instance::start(&env)
}

/// Polls `/metrics` of an instance (a process: its metrics are its own)
/// until `series` reaches `at_least`.
async fn await_metric(app: &Rest, series: &str, at_least: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = app.get("/metrics").await.text;
        if metric(&page, series) >= at_least {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{series} < {at_least}: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_receiver_down_for_a_while_loses_nothing() {
    let redis = RedisServer::start();
    let mut receiver = Receiver::start().await;
    let node = webhook_instance(
        &redis,
        &receiver,
        &[("WEBHOOK_RETRY_SCHEDULE", "200ms,200ms,500ms,1s,1s,2s,5s")],
    );
    let app = Rest::new(&node.base());
    receiver.stop();
    let mut sessions = Vec::new();
    for _ in 0..20 {
        let id = app.started("per_participant", 2, 60_000).await;
        app.command(&id, "complete").await;
        sessions.push(id);
    }
    // Every event's first attempt fails while it is down.
    await_metric(
        &app,
        "synckairos_webhook_deliveries_total{outcome=\"retried\"}",
        60.0,
    )
    .await;
    receiver.restart().await;
    let got = receiver
        .until("every event of the 20 sessions", |got| {
            let by = types_by_session(got);
            sessions
                .iter()
                .all(|id| by.get(id).map_or(0, Vec::len) >= 3)
        })
        .await;
    assert!(got.iter().all(|r| r.verified));
    assert_eq!(ids(&got).len(), got.len(), "nothing twice");
    let by = types_by_session(&got);
    for id in &sessions {
        let mut types = by[id].clone();
        types.sort();
        assert_eq!(
            types,
            ["session.completed", "session.created", "session.started"],
            "{id}"
        );
    }
}

#[tokio::test]
async fn an_instance_killed_mid_delivery_leaves_it_to_another() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.hang(true);
    let lease = [
        ("WEBHOOK_CLAIM_IDLE_MS", "1000"),
        ("WEBHOOK_TIMEOUT_MS", "60000"),
    ];
    let first = webhook_instance(&redis, &receiver, &lease);
    let app = Rest::new(&first.base());
    let id = app.started("per_participant", 2, 60_000).await;
    app.command(&id, "complete").await;
    // The first instance is delivering (the receiver holds the requests).
    let held = receiver
        .until("the first instance's attempts", |got| got.len() >= 3)
        .await;
    first.kill();
    receiver.hang(false);
    // Nobody else was running: the second instance takes the deliveries
    // over once their leases lapse.
    let second = webhook_instance(&redis, &receiver, &lease);
    let got = receiver
        .until("the deliveries, answered", |got| {
            got.iter().filter(|r| r.answered == 204).count() >= 3
        })
        .await;
    let answered: HashSet<String> = got
        .iter()
        .filter(|r| r.answered == 204)
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(answered, ids(&held), "the same events, the same ids");
    assert!(got.iter().all(|r| r.verified));
    drop(second);
}

#[tokio::test]
async fn a_410_ends_an_events_deliveries_at_once() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.answer(410);
    let node = webhook_instance(
        &redis,
        &receiver,
        &[("WEBHOOK_RETRY_SCHEDULE", "100ms,100ms")],
    );
    let app = Rest::new(&node.base());
    let id = app.started("per_participant", 2, 60_000).await;
    let dead = await_dead_letters(&app, None, 2).await;
    assert!(
        dead.iter()
            .all(|d| d["attempts"] == 1 && d["last_error"] == "HTTP 410"),
        "{dead:#?}"
    );
    assert_eq!(
        receiver.received().len(),
        2,
        "no retries: {:#?}",
        receiver.received()
    );
    assert!(dead.iter().all(|d| d["session_id"] == id.as_str()));
}

/// The dead letters once there are `n`, read with `token`.
async fn await_dead_letters(app: &Rest, token: Option<&str>, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = app
            .call_as(token, Method::GET, "/v1/webhooks/failed", None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let dead = r.data().as_array().unwrap().clone();
        if dead.len() >= n {
            return dead;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dead letters: {dead:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn jwt(role: &str, extra: Value) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut claims = json!({"role": role, "exp": exp});
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

const JWT_SECRET: &str = "a-webhook-test-secret-of-32-bytes-or-more";

#[tokio::test]
async fn dead_letters_are_listed_and_sent_again_by_admins_and_services_only() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.answer(500);
    let mut config = webhook_config(&receiver, Some(&redis), "50ms,50ms");
    config.webhook_events = "session.completed".into();
    config.auth_mode = AuthMode::Jwt;
    config.jwt_secret = Some(JWT_SECRET.parse().unwrap());
    let app = spawn_with(config, Clock::System, None).await;
    let (admin, service) = (jwt("admin", json!({})), jwt("service", json!({})));

    let body = session_body("per_participant", 2, 60_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    let created = app
        .call_as(
            Some(&service),
            Method::POST,
            "/v1/sessions",
            Some(body.clone()),
        )
        .await;
    assert_eq!(created.status, 201);
    let r = app
        .call_as(
            Some(&service),
            Method::POST,
            &format!("/v1/sessions/{id}/complete"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let dead = await_dead_letters(&app, Some(&admin), 1).await;
    assert_eq!(receiver.received().len(), 3, "1 + 2 retries");
    let letter = &dead[0];
    assert_eq!(
        (
            &letter["type"],
            &letter["attempts"],
            &letter["last_error"],
            &letter["session_id"]
        ),
        (
            &json!("session.completed"),
            &json!(3),
            &json!("HTTP 500"),
            &json!(id)
        )
    );
    let event_id = letter["event_id"].as_str().unwrap().to_owned();
    assert_eq!(event_id, receiver.received()[0].id);

    // Who may list and re-send: admin and service; nobody else.
    let pid = body["participants"][0]["participant_id"].as_str().unwrap();
    let participant = jwt("participant", json!({"sid": id, "pid": pid}));
    let viewer = jwt("viewer", json!({"sid": id}));
    let retry = format!("/v1/webhooks/failed/{event_id}/retry");
    for (token, status) in [(None, 401), (Some(&participant), 403), (Some(&viewer), 403)] {
        let token = token.map(String::as_str);
        let list = app
            .call_as(token, Method::GET, "/v1/webhooks/failed", None)
            .await;
        let again = app.call_as(token, Method::POST, &retry, None).await;
        assert_eq!(
            (list.status.as_u16(), again.status.as_u16()),
            (status, status)
        );
    }
    let unknown = app
        .call_as(
            Some(&service),
            Method::POST,
            "/v1/webhooks/failed/nope/retry",
            None,
        )
        .await;
    assert_eq!(
        (unknown.status.as_u16(), unknown.code()),
        (404, "NOT_FOUND")
    );

    // Re-sent by a service token: delivered with the same id and body.
    receiver.answer(204);
    let again = app
        .call_as(Some(&service), Method::POST, &retry, None)
        .await;
    assert_eq!(again.status, 202, "{}", again.text);
    let got = receiver
        .until("the re-sent event", |got| got.len() >= 4)
        .await;
    assert_eq!(
        (got[3].id.as_str(), got[3].answered),
        (event_id.as_str(), 204)
    );
    assert_eq!(got[3].raw, got[0].raw);
    let list = app
        .call_as(Some(&admin), Method::GET, "/v1/webhooks/failed", None)
        .await;
    assert_eq!(list.data(), &json!([]));
}

#[tokio::test]
async fn a_sessions_own_url_is_admitted_only_under_an_allowed_prefix() {
    let receiver = Receiver::start().await;
    let mut config = webhook_config(&receiver, None, "100ms");
    config.webhook_url = None;
    config.webhook_allowed_urls = Some(format!(
        "{}, https://elsewhere.example/x",
        receiver.url("/games")
    ));
    let app = spawn_with(config, Clock::System, None).await;

    let mut body = session_body("per_participant", 2, 60_000);
    body["webhook_url"] = json!(receiver.url("/games/42?token=abc"));
    let id = body["session_id"].as_str().unwrap().to_owned();
    let created = app.create(&body).await;
    assert_eq!(created["webhook_url"], body["webhook_url"]);
    app.command(&id, "start").await;
    let got = receiver
        .until("the session's events", |got| got.len() >= 2)
        .await;
    assert!(got.iter().all(|r| r.path == "/games/42" && r.verified));

    for refused in [
        receiver.url("/gamesX/42"),
        receiver.url("/other"),
        format!("http://localhost:{}/games/1", receiver.addr.port()),
        "https://elsewhere.example/xy".into(),
        "ftp://elsewhere.example/x".into(),
        "not a url".into(),
    ] {
        let mut body = session_body("per_participant", 2, 60_000);
        body["webhook_url"] = json!(refused);
        let r = app.post("/v1/sessions", Some(body)).await;
        assert_eq!(
            (r.status.as_u16(), r.fields()),
            (400, vec!["webhook_url".to_owned()]),
            "{refused}"
        );
    }

    // Without webhooks, no session may name a URL.
    let plain = spawn_app().await;
    let mut body = session_body("per_participant", 2, 60_000);
    body["webhook_url"] = json!(receiver.url("/games/1"));
    let r = plain.post("/v1/sessions", Some(body)).await;
    assert_eq!(
        (r.status.as_u16(), r.fields()),
        (400, vec!["webhook_url".to_owned()])
    );
}

#[tokio::test]
async fn a_hanging_receiver_leaves_the_request_path_and_timeouts_alone() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    receiver.hang(true);
    let node = webhook_instance(&redis, &receiver, &[("WEBHOOK_TIMEOUT_MS", "60000")]);
    let app = Rest::new(&node.base());
    // Far more events than the deliverer holds at once (256), all hanging.
    let ids =
        futures_util::future::join_all((0..100).map(|_| app.started("per_participant", 2, 60_000)))
            .await;
    let paths: Vec<String> = ids
        .iter()
        .map(|id| format!("/v1/sessions/{id}/switch"))
        .collect();
    for round in 0..5 {
        let replies =
            futures_util::future::join_all(paths.iter().map(|path| app.post(path, None))).await;
        assert!(replies.iter().all(|r| r.status == 200), "round {round}");
    }
    receiver
        .until("the deliveries, held", |got| got.len() >= 8)
        .await;
    // A server-side timeout still happens on time, and /ready says the
    // instance serves.
    let flagged = app.started("per_participant", 2, 1_000).await;
    let expired = app
        .await_expired(
            &flagged,
            std::time::Instant::now() + Duration::from_secs(15),
        )
        .await;
    assert_eq!(expired["status"], "expired");
    let ready = app.get("/ready").await;
    assert_eq!(
        (ready.status.as_u16(), &ready.body["webhooks"]),
        (200, &json!("ok"))
    );
    // What the receiver holds is bounded per endpoint; the rest waits in Redis.
    assert!(receiver.received().len() <= synckairos::webhooks::deliver::PER_ENDPOINT);
}
