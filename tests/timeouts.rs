//! Server-side timeouts across instances: three SyncKairos processes on one
//! test Redis apply every due timeout exactly once, on time, with no client
//! calling anything.

mod common;

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use synckairos::domain::Timestamp;

use common::process::{Instance, instances};
use common::redis::RedisServer;
use common::ws::WsClient;
use common::*;

#[tokio::test]
async fn three_hundred_sessions_time_out_exactly_once_on_time_across_three_instances() {
    let redis = RedisServer::start();
    let nodes = instances(&redis, 3);
    let apps: Vec<Rest> = nodes.iter().map(|n| Rest::new(&n.base())).collect();

    // 300 sessions, banks from 1 to 4 s, created and started on all instances.
    let ids: Vec<String> = join_all((0..300).map(|i| {
        let app = &apps[i % 3];
        async move {
            let mut body = session_body("per_participant", 2, 1_000 + (i as i64 * 10) % 3_000);
            body["action_on_timeout"] = json!({"type": "end_session"});
            let id = body["session_id"].as_str().unwrap().to_owned();
            app.create(&body).await;
            app.command(&id, "start").await;
            id
        }
    }))
    .await;

    // One watcher per instance on a sample of sessions: each sees the
    // timeout as STATE_UPDATE + TIMEOUT, unless it had already happened when
    // it connected (then its STATE_SYNC shows it).
    let mut watchers = Vec::new();
    for id in ids.iter().step_by(30) {
        for node in &nodes {
            let mut ws = WsClient::watch(&node.base(), id).await;
            let sync = ws.next_of("STATE_SYNC").await;
            watchers.push((ws, sync["state"]["status"] == "expired"));
        }
    }
    for (ws, already) in &mut watchers {
        if *already {
            continue;
        }
        let update = ws.next().await;
        assert_eq!(
            (update["type"].as_str(), update["state"]["status"].as_str()),
            (Some("STATE_UPDATE"), Some("expired"))
        );
        assert_eq!(ws.next().await["type"], "TIMEOUT");
    }

    // Every session expired with exactly one write for its timeout, applied
    // within a second of its deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for (i, id) in ids.iter().enumerate() {
        let state = apps[(i + 1) % 3].await_expired(id, deadline).await;
        assert_eq!(
            state["version"], 3,
            "created, started, timed out once: {state}"
        );
        let due =
            Timestamp::parse_rfc3339(state["session_completed_at"].as_str().unwrap()).unwrap();
        let applied = Timestamp::parse_rfc3339(state["updated_at"].as_str().unwrap()).unwrap();
        assert!(
            applied.ms() - due.ms() < 1_000,
            "{id}: applied {} ms late",
            applied.ms() - due.ms()
        );
        assert!(applied >= due, "never early");
    }
}

#[tokio::test]
async fn when_an_instance_dies_the_others_apply_its_claimed_timeouts_once() {
    let redis = RedisServer::start();
    let mut nodes = instances(&redis, 3);
    let survivor = Rest::new(&nodes[1].base());

    // 90 sessions due between 1 and 2 s from now.
    let creator = Rest::new(&nodes[0].base());
    let ids: Vec<String> = join_all((0..90).map(|i| {
        let app = &creator;
        async move {
            let mut body = session_body("per_participant", 2, 1_000 + (i as i64 * 11) % 1_000);
            body["action_on_timeout"] = json!({"type": "end_session"});
            let id = body["session_id"].as_str().unwrap().to_owned();
            app.create(&body).await;
            app.command(&id, "start").await;
            id
        }
    }))
    .await;

    // Kill -9 one instance while the timeouts are falling due: whatever it had
    // claimed comes back when its lease (5 s) runs out.
    let first_done = survivor
        .await_expired(&ids[0], std::time::Instant::now() + Duration::from_secs(20))
        .await;
    assert_eq!(first_done["version"], 3);
    drop(nodes.remove(0));

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for id in &ids {
        let state = survivor.await_expired(id, deadline).await;
        assert_eq!(state["version"], 3, "timed out exactly once: {state}");
    }
}

#[tokio::test]
async fn a_dead_claimers_leases_come_back_and_are_applied_once() {
    let redis = RedisServer::start();
    let nodes = instances(&redis, 2);
    let app = Rest::new(&nodes[0].base());
    let ids: Vec<String> =
        join_all((0..20).map(|_| app.started("per_participant", 2, 1_000))).await;

    // A claimer that takes every entry (claiming as if far in the future) with
    // a 2.5 s lease, then dies without applying anything.
    let lease_end = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 2_500)
        .to_string();
    let claim = include_str!("../src/store/redis/claim.lua");
    let mut claimed = 0;
    let layout = redis.layout();
    for b in 0..16 {
        let key = layout.due(b);
        let out = redis.cli(&[
            "eval",
            claim,
            "1",
            &key,
            "99999999999999",
            &lease_end,
            "1000",
        ]);
        // The reply: the bucket's earliest score left, then the ids claimed.
        claimed += out.lines().skip(1).filter(|l| !l.is_empty()).count();
    }
    assert_eq!(claimed, ids.len(), "the dead claimer took every entry");

    // Nothing times out until the leases run out; then each exactly once.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for id in &ids {
        let state = app.await_expired(id, deadline).await;
        assert_eq!(state["version"], 3, "applied exactly once: {state}");
        let due =
            Timestamp::parse_rfc3339(state["session_completed_at"].as_str().unwrap()).unwrap();
        let applied = Timestamp::parse_rfc3339(state["updated_at"].as_str().unwrap()).unwrap();
        assert!(
            applied.ms() - due.ms() >= 1_000,
            "held back by the lease, not applied early"
        );
    }
}

#[tokio::test]
async fn a_deadline_entry_deleted_by_hand_is_repaired_and_the_timeout_still_happens() {
    let redis = RedisServer::start();
    let url = redis.url();
    let node = Instance::start(&[("REDIS_URL", url.as_str()), ("SWEEP_INTERVAL_SECONDS", "1")]);
    let app = Rest::new(&node.base());
    let id = app.started("per_participant", 2, 2_000).await;
    let sid = synckairos::domain::SessionId::parse(&id).unwrap();
    let layout = redis.layout();
    let due = layout.due(layout.bucket(sid));
    assert_eq!(
        redis.cli(&["zrem", &due, &id]),
        "1",
        "the entry existed and is gone"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let state = app.await_expired(&id, deadline).await;
    assert_eq!(state["version"], 3);
    let metrics = app.get("/metrics").await.text;
    assert!(
        metrics.contains("synckairos_sweep_repairs_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_pause_before_the_deadline_holds_it_on_redis_and_resume_sets_a_new_one() {
    let redis = RedisServer::start();
    let nodes = instances(&redis, 2);
    let (a, b) = (Rest::new(&nodes[0].base()), Rest::new(&nodes[1].base()));
    let id = a.started("per_participant", 2, 3_000).await;

    // Paused 1 s before the deadline, then held well past it.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let paused = a.command(&id, "pause").await;
    let left = paused["participants"][0]["total_time_ms"].as_i64().unwrap();
    assert!((1..3_000).contains(&left), "{paused}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let held = b.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(
        (
            held.data()["status"].as_str(),
            held.data()["version"].as_u64()
        ),
        (Some("paused"), Some(3)),
        "no timeout while paused"
    );

    // Resumed on the other instance: the new deadline is resume + what was left.
    let resumed = b.command(&id, "resume").await;
    let restarted =
        Timestamp::parse_rfc3339(resumed["cycle_started_at"].as_str().unwrap()).unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(15);
    let expired = a.await_expired(&id, until).await;
    assert_eq!(
        expired["version"], 5,
        "created, started, paused, resumed, expired"
    );
    let due = Timestamp::parse_rfc3339(expired["session_completed_at"].as_str().unwrap()).unwrap();
    assert_eq!(due, restarted.plus(left));
}
