//! The Redis backend under real conditions: its own `redis-server` per test,
//! real SyncKairos instances (several where it matters), outages by SIGKILL.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};
use synckairos::clock::Clock;
use synckairos::domain::{Command, NewSession, SessionId, Timestamp, decide};
use synckairos::engine::Engine;
use synckairos::server::Server;
use synckairos::store::redis::{RedisStore, keys};
use synckairos::store::{FeedEvent, Store};

use common::redis::RedisServer;
use common::*;

fn state_key(id: &str) -> String {
    let id = SessionId::parse(id).unwrap();
    let layout = keys::Layout::new(16);
    layout.state(layout.bucket(id), id)
}

#[tokio::test]
async fn a_switch_costs_exactly_two_round_trips() {
    let redis = RedisServer::start();
    let app = spawn_app_redis(&redis).await;
    let id = app.started("per_participant", 2, 600_000).await;

    let mut monitor = redis.monitor();
    let r = app.post(&format!("/v1/sessions/{id}/switch"), None).await;
    assert_eq!(r.status, 200);
    let marker = format!("marker-{}", uuid());
    redis.cli(&["echo", &marker]);

    // Commands the client sent for this session (script internals are tagged "lua").
    let sent: Vec<String> = monitor
        .lines_until(&marker)
        .into_iter()
        .filter(|l| l.contains(&id) && !l.contains("lua]"))
        .collect();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert!(sent[0].to_lowercase().contains("\"hget\""), "{}", sent[0]);
    assert!(
        sent[1].to_lowercase().contains("\"evalsha\""),
        "{}",
        sent[1]
    );
}

#[tokio::test]
async fn two_instances_under_100_concurrent_switches_never_lose_an_update() {
    let redis = RedisServer::start();
    let (a, b) = (spawn_app_redis(&redis).await, spawn_app_redis(&redis).await);
    let id = a.started("per_participant", 2, 3_600_000).await;
    let start = b.get(&format!("/v1/sessions/{id}")).await.data().clone();
    let start_version = start["version"].as_u64().unwrap();

    // 100 concurrent clients, alternating instances; each retries on 409
    // until its switch lands, so all 100 switches must end up accounted for.
    let path = format!("/v1/sessions/{id}/switch");
    let clients = (0..100).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let path = &path;
        async move {
            let mut replies = Vec::new();
            for _ in 0..1_000 {
                let r = app.post(path, None).await;
                let done = r.status == 200;
                replies.push(r);
                if done {
                    break;
                }
            }
            replies
        }
    });
    let replies: Vec<Reply> = join_all(clients).await.into_iter().flatten().collect();

    let mut accepted: Vec<(u64, i64)> = Vec::new();
    for r in &replies {
        match r.status.as_u16() {
            200 => accepted.push((
                r.data()["version"].as_u64().unwrap(),
                r.data()["server_time_ms"].as_i64().unwrap(),
            )),
            409 => assert_eq!(r.code(), "CONFLICT", "{}", r.text),
            _ => panic!("unexpected reply {}", r.text),
        }
    }
    assert_eq!(
        accepted.len(),
        100,
        "every client's switch eventually landed"
    );
    accepted.sort();
    let versions: Vec<u64> = accepted.iter().map(|(v, _)| *v).collect();
    let expected: Vec<u64> = (start_version + 1..=start_version + accepted.len() as u64).collect();
    assert_eq!(
        versions, expected,
        "every 200 is a distinct, consecutive version"
    );

    // Replaying the accepted switches one after another gives the stored state.
    let stored = a
        .engine
        .get(SessionId::parse(&id).unwrap())
        .await
        .unwrap()
        .session;
    assert_eq!(stored.version, start_version + accepted.len() as u64);
    let mut replay: synckairos::domain::Session =
        serde_json::from_value(strip_view(start)).unwrap();
    for (_, at) in &accepted {
        let switch = Command::Switch {
            next_participant_id: None,
            expected_version: None,
            by: None,
        };
        replay = decide(&replay, &switch, Timestamp(*at))
            .write
            .unwrap()
            .session;
    }
    assert_eq!(replay, stored);
}

/// The stored form of a wire state: without the derived fields.
fn strip_view(mut v: Value) -> Value {
    let o = v.as_object_mut().unwrap();
    o.remove("server_time_ms");
    for p in o["participants"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("time_remaining_ms");
    }
    v
}

#[tokio::test]
async fn ttl_is_set_and_refreshed_on_every_write_and_an_expired_session_is_404() {
    let redis = RedisServer::start();
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    config.session_ttl_seconds = 100;
    let app = spawn_with(config, Clock::System, None).await;
    let id = app.started("per_participant", 2, 600_000).await;
    let key = state_key(&id);

    // The running deadline is 600 s out: TTL = deadline + 100 s.
    let ttl: i64 = redis.cli(&["ttl", &key]).parse().unwrap();
    assert!((690..=700).contains(&ttl), "ttl {ttl}");
    redis.cli(&["expire", &key, "10"]);
    app.post(&format!("/v1/sessions/{id}/switch"), None).await;
    let ttl: i64 = redis.cli(&["ttl", &key]).parse().unwrap();
    assert!(ttl > 10, "the switch refreshed the TTL (ttl {ttl})");

    // Let it expire for real, then read it.
    redis.cli(&["pexpire", &key, "1"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.cli(&["exists", &key]) != "0" {
        assert!(Instant::now() < deadline, "key did not expire");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = app.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "SESSION_NOT_FOUND"));
}

#[tokio::test]
async fn a_long_timer_outlives_the_ttl_and_server_timeouts_do_not_refresh_it() {
    let redis = RedisServer::start();
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    config.session_ttl_seconds = 100;
    let app = spawn_with(config, Clock::System, None).await;
    // A three-hour exam: its key must outlive the TTL by the whole deadline.
    let mut body = session_body("global", 2, 60_000);
    body["total_time_ms"] = json!(3 * 3_600_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    app.command(&id, "start").await;
    let ttl: i64 = redis.cli(&["ttl", &state_key(&id)]).parse().unwrap();
    assert!((3 * 3600 + 90..=3 * 3600 + 100).contains(&ttl), "ttl {ttl}");

    // A 1 s bank with skip_cycle: the server's timeout writes keep the TTL.
    let mut body = session_body("per_participant", 2, 1_000);
    body["action_on_timeout"] = json!({"type": "skip_cycle"});
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    let mut updates = app.watch(&id).await;
    app.command(&id, "start").await;
    let _started = updates.next().await;
    redis.cli(&["expire", &state_key(&id), "50"]);
    let _timed_out = updates.next().await;
    let ttl: i64 = redis.cli(&["ttl", &state_key(&id)]).parse().unwrap();
    assert!(
        ttl <= 50,
        "the scheduler's write left the TTL alone (ttl {ttl})"
    );
}

#[tokio::test]
async fn the_state_is_stored_compactly_without_derived_fields() {
    let redis = RedisServer::start();
    let app = spawn_app_redis(&redis).await;
    let id = app.started("per_participant", 2, 600_000).await;
    let stored = redis.cli(&["hget", &state_key(&id), "d"]);
    assert!(
        !stored.contains(' ') && !stored.contains('\n'),
        "compact JSON: {stored}"
    );
    assert!(!stored.contains("time_remaining_ms") && !stored.contains("server_time_ms"));
    assert_eq!(redis.cli(&["hget", &state_key(&id), "v"]), "2");
}

#[tokio::test]
async fn an_outage_answers_503_within_the_timeout_and_the_instance_recovers_by_itself() {
    let mut redis = RedisServer::start();
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    config.redis_timeout_ms = 1_000;
    // Every protection on, as by default: none adds a wait of its own.
    config.rate_limit_general = 1_200;
    config.rate_limit_switch = 50;
    let app = spawn_with(config, Clock::System, None).await;
    let id = app.started("per_participant", 2, 600_000).await;
    let mut feed = app.engine.store().feed();
    app.engine
        .store()
        .subscribe(SessionId::parse(&id).unwrap())
        .await
        .unwrap();

    redis.kill();
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/sessions/{id}")),
        (reqwest::Method::POST, format!("/v1/sessions/{id}/switch")),
        (reqwest::Method::POST, "/v1/sessions".to_owned()),
    ] {
        let started = Instant::now();
        let body =
            (method == reqwest::Method::POST).then(|| session_body("per_participant", 2, 60_000));
        let r = app.call(method.clone(), &path, body).await;
        // One budget of REDIS_TIMEOUT_MS for all of a request's store calls,
        // not one per call: well under two budgets (with the client limit
        // asking Redis first, this took two).
        assert!(
            started.elapsed() < Duration::from_millis(1_900),
            "{method} {path} took {:?}",
            started.elapsed()
        );
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (503, "SERVICE_UNAVAILABLE"),
            "{method} {path}: {}",
            r.text
        );
    }
    let ready = app.get("/ready").await;
    assert_eq!(
        (ready.status.as_u16(), ready.body["status"].as_str()),
        (503, Some("not_ready"))
    );
    assert_eq!(app.get("/health").await.status, 200);

    // Same port, empty data: the instance reconnects without a restart.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while app.get("/ready").await.status != 200 {
        assert!(Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Pub/sub was resubscribed and the feed said so.
    let resubscribed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(FeedEvent::Resubscribed) = feed.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(
        resubscribed.is_ok(),
        "no Resubscribed event after the reconnect"
    );
    // The old session died with the data; the same id works again end to end,
    // including its updates over the resubscribed channel.
    let mut body = session_body("per_participant", 2, 60_000);
    body["session_id"] = json!(id);
    app.create(&body).await;
    let started = app.command(&id, "start").await;
    let update = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(FeedEvent::Message { payload, .. }) = feed.recv().await {
                let v: Value = serde_json::from_slice(&payload).unwrap();
                if v["state"]["state"]["version"] == started["version"] {
                    return;
                }
            }
        }
    })
    .await;
    assert!(update.is_ok(), "updates flow again after the reconnect");
}

#[tokio::test]
async fn a_script_flush_between_requests_is_harmless() {
    let redis = RedisServer::start();
    let app = spawn_app_redis(&redis).await;
    let id = app.started("per_participant", 2, 600_000).await;
    assert_eq!(redis.cli(&["script", "flush"]), "OK");
    let r = app.post(&format!("/v1/sessions/{id}/switch"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["version"], 3);
    let r = app
        .call(reqwest::Method::DELETE, &format!("/v1/sessions/{id}"), None)
        .await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn a_different_bucket_count_refuses_to_start() {
    let redis = RedisServer::start();
    let _first = spawn_app_redis(&redis).await;
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    config.buckets = 8;
    let err = Server::build(&config, Clock::System)
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("BUCKETS=8") && msg.contains("16"), "{msg}");
}

#[test]
fn the_write_script_acknowledges_its_own_retry_once_and_nobody_elses() {
    // A command is sent again after a lost reply, a dropped connection or a
    // Cluster redirect: the same call (same token) succeeds without writing
    // twice; another writer's call at the same version is a conflict.
    let redis = RedisServer::start();
    let script = include_str!("../src/store/redis/write.lua");
    let keys = [
        "sk:{t}:s:x",
        "sk:{t}:due",
        "sk:{t}:audit",
        "sk:{t}:c:x",
        "sk:{t}:hint",
    ];
    let call = |token: &str| {
        let mut args = vec!["eval", script, "5"];
        args.extend(keys);
        args.extend([
            "0",
            "1",
            "{}",
            "60",
            "x",
            "",
            "msg",
            token,
            "",
            "",
            "{\"e\":1}",
            "",
        ]);
        redis.cli(&args)
    };
    assert_eq!(call("t1"), "1");
    assert_eq!(call("t1"), "1", "a retry of the same call");
    assert_eq!(
        redis.cli(&["xlen", keys[2]]),
        "1",
        "its event appended once"
    );
    assert_eq!(call("t2"), "0\n1", "another writer: conflict at version 1");
    assert_eq!(redis.cli(&["xlen", keys[2]]), "1");
}

#[tokio::test]
async fn keys_of_an_older_layout_refuse_to_start() {
    // An earlier build recorded only the bucket count: its keys used other
    // hash tags, and serving on would silently lose every live session.
    let redis = RedisServer::start();
    assert_eq!(redis.cli(&["hset", "sk:meta", "buckets", "16"]), "1");
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    let err = Server::build(&config, Clock::System)
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("another layout (unversioned"), "{msg}");
    // A fresh Redis is stamped with this layout and served.
    assert_eq!(redis.cli(&["del", "sk:meta"]), "1");
    let _app = spawn_app_redis(&redis).await;
    assert_eq!(redis.cli(&["hget", "sk:meta", "layout"]), "slots-1");
}

#[tokio::test]
async fn an_unreachable_redis_fails_start_up_with_a_clear_error() {
    let port = {
        let redis = RedisServer::start();
        redis.port
    }; // stopped again: nothing listens there now
    let mut config = test_config();
    config.redis_url = Some(format!("redis://127.0.0.1:{port}"));
    let err = Server::build(&config, Clock::System)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("cannot connect to Redis"), "{err}");
}

#[tokio::test]
async fn audit_events_are_appended_to_the_bucket_stream_with_the_write() {
    let redis = RedisServer::start();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(redis.store_options()).await.unwrap());
    let engine = Engine::new(store, Clock::System);
    let new = NewSession::parse(&session_body("per_participant", 2, 60_000)).unwrap();
    let id = new.session_id;
    engine.create(new).await.unwrap();
    engine.execute(id, Command::Start).await.unwrap();
    let layout = redis.layout();
    let stream = layout.audit(layout.bucket(id));
    assert_eq!(redis.cli(&["xlen", &stream]), "2");
    let entries = redis.cli(&["xrange", &stream, "-", "+"]);
    assert!(
        entries.contains("session_created") && entries.contains("session_started"),
        "{entries}"
    );
}

#[tokio::test]
async fn the_server_applies_timeouts_on_redis_by_itself() {
    let redis = RedisServer::start();
    let app = spawn_app_redis(&redis).await;
    let body = session_body("per_participant", 2, 1_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    let mut updates = app.watch(&id).await;
    app.command(&id, "start").await;
    let _started = updates.next().await;
    match updates.next().await {
        synckairos::engine::Update::State {
            state, timeouts, ..
        } => {
            assert_eq!(
                state.decode().unwrap().status,
                synckairos::domain::Status::Expired
            );
            assert_eq!(timeouts.len(), 1);
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// A create body for a one-participant session in Redis bucket `b` (of 16).
fn body_in_bucket(b: u16, bank_ms: i64) -> Value {
    let id = std::iter::repeat_with(|| SessionId(uuid::Uuid::new_v4()))
        .find(|id| keys::bucket(*id, 16) == b)
        .unwrap();
    let mut body = session_body("per_participant", 1, bank_ms);
    body["session_id"] = json!(id.to_string());
    body
}

#[tokio::test]
async fn a_write_announces_a_deadline_only_when_it_becomes_its_buckets_earliest() {
    let redis = RedisServer::start();
    let app = spawn_app_redis(&redis).await;
    let hint = redis.layout().hint_channel(3);
    let mut monitor = redis.monitor();

    // Starts, in order: 10 min (first entry), 20 min (later), 5 min (earlier).
    let mut published = Vec::new();
    for bank in [600_000, 1_200_000, 300_000] {
        let body = body_in_bucket(3, bank);
        let id = body["session_id"].as_str().unwrap().to_owned();
        app.create(&body).await;
        let started = app.command(&id, "start").await;
        let marker = format!("marker-{}", uuid());
        redis.cli(&["echo", &marker]);
        let hints: Vec<String> = monitor
            .lines_until(&marker)
            .into_iter()
            .filter(|l| l.to_lowercase().contains("\"spublish\"") && l.contains(&hint))
            .collect();
        let started_at = Timestamp::parse_rfc3339(started["session_started_at"].as_str().unwrap());
        published.push((hints, started_at.unwrap().plus(bank).ms().to_string()));
    }
    let [(first, d1), (later, _), (earlier, d3)] = &published[..] else {
        unreachable!()
    };
    assert!(first.len() == 1 && first[0].contains(d1), "{first:?}");
    assert!(
        later.is_empty(),
        "a later deadline needs no hint: {later:?}"
    );
    assert!(earlier.len() == 1 && earlier[0].contains(d3), "{earlier:?}");
}

#[tokio::test]
async fn an_idle_instance_polls_at_the_fallback_rate_not_continuously() {
    let redis = RedisServer::start();
    let app = spawn_app_redis(&redis).await;
    // Something in the index, due in an hour: nothing to do until then.
    app.started("per_participant", 2, 3_600_000).await;

    let mut monitor = redis.monitor();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let marker = format!("marker-{}", uuid());
    redis.cli(&["echo", &marker]);
    let elapsed_ms = started.elapsed().as_millis() as usize;
    let lines = monitor.lines_until(&marker);
    let reads = lines
        .iter()
        .filter(|l| l.to_lowercase().contains("\"zrange\""))
        .count();
    // One read per bucket per poll, a poll every 100 ms at most (the
    // MIN_GAP-bounded fast path needs something due or hinted). Polling every
    // 10 ms would make about 1,600.
    let polls = reads / 16;
    assert!(polls >= 1, "the fallback poll runs ({reads} reads)");
    // All of a poll's reads are one command (one script call).
    let sha = redis.cli(&[
        "script",
        "load",
        include_str!("../src/store/redis/earliest.lua"),
    ]);
    let calls = lines
        .iter()
        .filter(|l| l.contains(sha.trim()) && !l.contains("lua]"))
        .count();
    assert_eq!(calls, polls, "{calls} calls for {reads} reads");
    assert!(
        polls <= elapsed_ms / 100 + 2,
        "{polls} polls in {elapsed_ms} ms"
    );
    assert!(
        app.engine
            .store()
            .claim_due(Clock::System.now(), 5_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_sweep_counts_no_repairs_while_sessions_change_under_it() {
    let redis = RedisServer::start();
    let app = spawn_app_redis(&redis).await;
    let ids = join_all((0..300).map(|_| app.started("per_participant", 2, 600_000))).await;
    let store = app.engine.store().clone();
    let done = std::sync::atomic::AtomicBool::new(false);

    // Switches land between the sweep's read of a session and its check of
    // the index: a changed session is not a broken index.
    let paths: Vec<String> = ids
        .iter()
        .map(|id| format!("/v1/sessions/{id}/switch"))
        .collect();
    let switching = async {
        let mut rounds = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            join_all(paths.iter().map(|path| app.post(path, None))).await;
            rounds += 1;
        }
        rounds
    };
    let sweeping = async {
        let mut repairs = 0;
        for _ in 0..2 {
            repairs += store
                .sweep(Clock::System.now(), 5_000)
                .await
                .unwrap()
                .repairs;
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        repairs
    };
    let (rounds, repairs) = tokio::join!(switching, sweeping);
    assert!(rounds >= 1);
    assert_eq!(repairs, 0, "2 sweeps during {rounds} rounds of switches");
}
