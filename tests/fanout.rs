//! Fan-out across instances: three SyncKairos processes of the built binary on
//! one test Redis (or a Redis Cluster), WebSocket clients on each. Any write
//! on any instance must reach every client of the session on every instance,
//! in version order.

mod common;

use futures_util::future::join_all;
use serde_json::{Value, json};

use common::cluster::RedisCluster;
use common::process::{Instance, cluster_instances, instances};
use common::redis::RedisServer;
use common::ws::WsClient;
use common::*;

/// A REST client for an instance.
fn rest(instance: &Instance) -> Rest {
    Rest::new(&instance.base())
}

#[tokio::test]
async fn a_switch_on_one_instance_reaches_clients_on_all_three_and_delete_closes_them() {
    let redis = RedisServer::start();
    switch_reaches_every_client_and_delete_closes_them(&instances(&redis, 3)).await;
}

#[tokio::test]
async fn on_a_cluster_a_switch_reaches_clients_on_all_three_and_delete_closes_them() {
    let cluster = RedisCluster::start(3, 1);
    switch_reaches_every_client_and_delete_closes_them(&cluster_instances(&cluster, 3, &[])).await;
}

async fn switch_reaches_every_client_and_delete_closes_them(nodes: &[Instance]) {
    let a = rest(&nodes[0]);

    let body = session_body("per_participant", 2, 600_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    // One client per instance connects before the session exists.
    let mut clients = Vec::new();
    for node in nodes {
        let mut ws = WsClient::watch(&node.base(), &id).await;
        assert_eq!(ws.next().await["type"], "CONNECTED");
        clients.push(ws);
    }
    // Subscriptions are in place once each instance has answered a PING
    // after CONNECTED (the hub subscribes before reading the state).
    for ws in &mut clients {
        ws.send_json(json!({"type": "PING"})).await;
        assert_eq!(ws.next().await["type"], "PONG");
    }

    a.create(&body).await;
    for ws in &mut clients {
        assert_eq!(
            ws.next().await["state"]["version"],
            1,
            "created, seen everywhere"
        );
    }
    let b = rest(&nodes[1]);
    b.command(&id, "start").await;
    let switched = a.post(&format!("/v1/sessions/{id}/switch"), None).await;
    let version = switched.data()["version"].as_u64().unwrap();
    for ws in &mut clients {
        assert_eq!(ws.next().await["state"]["version"], 2);
        let update = ws.next().await;
        assert_eq!(
            (update["type"].as_str(), update["state"]["version"].as_u64()),
            (Some("STATE_UPDATE"), Some(version))
        );
    }

    let c = rest(&nodes[2]);
    assert_eq!(
        c.call(reqwest::Method::DELETE, &format!("/v1/sessions/{id}"), None)
            .await
            .status,
        204
    );
    for ws in &mut clients {
        let (closed, before) = ws.until_closed().await;
        assert_eq!(before.last().unwrap()["type"], "SESSION_DELETED");
        assert_eq!(closed.code, 1000);
    }
}

#[tokio::test]
async fn two_hundred_switches_from_several_instances_arrive_in_version_order_everywhere() {
    let redis = RedisServer::start();
    switches_arrive_in_version_order_everywhere(&instances(&redis, 3)).await;
}

#[tokio::test]
async fn on_a_cluster_two_hundred_switches_arrive_in_version_order_everywhere() {
    let cluster = RedisCluster::start(3, 1);
    switches_arrive_in_version_order_everywhere(&cluster_instances(&cluster, 3, &[])).await;
}

async fn switches_arrive_in_version_order_everywhere(nodes: &[Instance]) {
    let apps: Vec<Rest> = nodes.iter().map(rest).collect();
    let id = apps[0].started("per_participant", 2, 3_600_000).await;

    let mut clients = Vec::new();
    for node in nodes {
        for _ in 0..2 {
            let mut ws = WsClient::watch(&node.base(), &id).await;
            assert_eq!(ws.next_of("STATE_SYNC").await["state"]["version"], 2);
            clients.push(ws);
        }
    }

    // 200 switches, 8 concurrent REST clients spread over the instances.
    let path = format!("/v1/sessions/{id}/switch");
    let workers = (0..8).map(|w| {
        let app = &apps[w % apps.len()];
        let path = &path;
        async move {
            let mut accepted = 0u64;
            for _ in 0..25 {
                let r = app.post(path, None).await;
                assert!(r.status == 200 || r.code() == "CONFLICT", "{}", r.text);
                accepted += u64::from(r.status == 200);
            }
            accepted
        }
    });
    let accepted: u64 = join_all(workers).await.into_iter().sum();
    let last = 2 + accepted;
    assert!(accepted > 0);

    for ws in &mut clients {
        let mut seen = Vec::new();
        while seen.last() != Some(&last) {
            let m = ws.next().await;
            assert_eq!(m["type"], "STATE_UPDATE", "{m}");
            seen.push(m["state"]["version"].as_u64().unwrap());
        }
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "strictly increasing: {seen:?}"
        );
    }
}

#[tokio::test]
async fn after_a_redis_restart_clients_stay_connected_get_state_sync_and_further_updates() {
    let mut redis = RedisServer::start_persistent();
    let nodes = instances(&redis, 2);
    let apps: Vec<Rest> = nodes.iter().map(rest).collect();
    let id = apps[0].started("per_participant", 2, 3_600_000).await;
    let mut clients = Vec::new();
    for node in &nodes {
        let mut ws = WsClient::watch(&node.base(), &id).await;
        ws.next_of("STATE_SYNC").await;
        clients.push(ws);
    }

    redis.restart();
    for ws in &mut clients {
        // Told that updates may be missed, then given the full state.
        assert_eq!(ws.next().await["type"], "FEED_INTERRUPTED");
        let sync = ws.next().await;
        assert_eq!(
            (sync["type"].as_str(), sync["state"]["version"].as_u64()),
            (Some("STATE_SYNC"), Some(2))
        );
    }
    // Updates flow again, from either instance (retry while the instance
    // itself is still reconnecting: 503 is its honest answer meanwhile).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let switched = loop {
        let r = apps[1]
            .post(&format!("/v1/sessions/{id}/switch"), None)
            .await;
        if r.status == 200 {
            break r;
        }
        assert_eq!(r.code(), "SERVICE_UNAVAILABLE", "{}", r.text);
        assert!(
            std::time::Instant::now() < deadline,
            "the instance did not recover"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let version = switched.data()["version"].clone();
    for ws in &mut clients {
        let update: Value = ws.next_of("STATE_UPDATE").await;
        assert_eq!(update["state"]["version"], version);
    }
}

#[tokio::test]
async fn losing_only_the_pubsub_link_resubscribes_and_resyncs_clients() {
    let redis = RedisServer::start();
    let nodes = instances(&redis, 1);
    let app = rest(&nodes[0]);
    let id = app.started("per_participant", 2, 3_600_000).await;
    let mut ws = WsClient::watch(&nodes[0].base(), &id).await;
    ws.next_of("STATE_SYNC").await;

    // Redis drops the instance's subscriber connection; commands are untouched.
    let killed: u32 = redis
        .cli(&["client", "kill", "type", "pubsub"])
        .parse()
        .unwrap();
    assert!(killed >= 1);
    let interrupted = ws.next().await;
    assert_eq!(
        (
            interrupted["type"].as_str(),
            interrupted["sessionId"].as_str()
        ),
        (Some("FEED_INTERRUPTED"), Some(id.as_str()))
    );
    let sync = ws.next().await;
    assert_eq!(
        (sync["type"].as_str(), sync["state"]["version"].as_u64()),
        (Some("STATE_SYNC"), Some(2))
    );
    let switched = app.post(&format!("/v1/sessions/{id}/switch"), None).await;
    assert_eq!(switched.status, 200);
    assert_eq!(ws.next_of("STATE_UPDATE").await["state"]["version"], 3);
    assert_eq!(
        app.get("/ready").await.status,
        200,
        "the probe answers again"
    );
}
