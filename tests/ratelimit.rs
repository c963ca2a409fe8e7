//! Rate limits over real HTTP: each instance decides the client limit on
//! its own view and settles it through Redis, so two instances together
//! allow no more than the limit plus the documented tolerance; per-session
//! switch limits, checked by the write itself; 429s with `Retry-After` and
//! `RateLimit-*`; operational routes exempt.

mod common;

use std::time::Instant;

use futures_util::future::join_all;
use reqwest::StatusCode;
use synckairos::clock::Clock;

use common::process::Instance;
use common::redis::RedisServer;
use common::{Reply, Rest, spawn_with, test_config};

/// The most a GCRA limit of `limit` per `period_s` may allow in `elapsed_s`:
/// the burst, what refilled meanwhile, and one for rounding.
fn ceiling(limit: u32, period_s: f64, elapsed_s: f64) -> usize {
    (f64::from(limit) + f64::from(limit) * elapsed_s / period_s).floor() as usize + 1
}

/// Sends `n` requests at once, spread over `clients`; returns the answers.
async fn burst(clients: &[Rest], n: usize, path: &str, post: bool) -> Vec<Reply> {
    join_all((0..n).map(|i| {
        let client = &clients[i % clients.len()];
        async move {
            if post {
                client.post(path, None).await
            } else {
                client.get(path).await
            }
        }
    }))
    .await
}

fn assert_refusal(r: &Reply, limit: u32) {
    assert_eq!(r.code(), "RATE_LIMIT_EXCEEDED", "{}", r.text);
    let header = |name: &str| -> u64 { r.headers[name].to_str().unwrap().parse().unwrap() };
    assert!(header("retry-after") >= 1);
    assert_eq!(header("ratelimit-limit"), u64::from(limit));
    assert_eq!(header("ratelimit-remaining"), 0);
    assert!(header("ratelimit-reset") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_together_allow_no_more_than_the_limit() {
    let redis = RedisServer::start();
    let url = redis.url();
    let limit = 20;
    let env = [("REDIS_URL", url.as_str()), ("RATE_LIMIT_GENERAL", "20")];
    let a = Instance::start(&env);
    let b = Instance::start(&env);
    let clients = [Rest::new(&a.base()), Rest::new(&b.base())];
    let path = format!("/v1/sessions/{}", common::uuid());

    let started = Instant::now();
    let answers = burst(&clients, 80, &path, false).await;
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = answers
        .iter()
        .filter(|r| r.status != StatusCode::TOO_MANY_REQUESTS)
        .count();
    // 20 per minute: the burst of 20, plus what refilled during the run,
    // plus the tolerance of N instances × 2L, L = ⌈20 / 16⌉ (see `limiter`).
    let tolerance = 2 * 2 * 2;
    assert!(allowed >= limit as usize, "{allowed} allowed");
    assert!(
        allowed <= ceiling(limit, 60.0, elapsed) + tolerance,
        "{allowed} allowed in {elapsed:.2} s across both instances"
    );
    let refused: Vec<&Reply> = answers
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(!refused.is_empty());
    for r in refused {
        assert_refusal(r, limit);
    }
    // An allowed answer reports the limit too.
    let ok = answers
        .iter()
        .find(|r| r.status == StatusCode::NOT_FOUND)
        .expect("some requests went through");
    assert_eq!(ok.headers["ratelimit-limit"], "20");

    // The operational routes are never limited.
    for path in ["/health", "/ready", "/v1/time", "/metrics"] {
        for r in burst(&clients, 10, path, false).await {
            assert_eq!(r.status, 200, "{path}");
        }
    }
    let metrics = clients[0].get("/metrics").await.text;
    assert!(common::metric(&metrics, r#"synckairos_rate_limited_total{scope="client"}"#) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switches_are_limited_per_session_across_instances() {
    let redis = RedisServer::start();
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str()), ("RATE_LIMIT_SWITCH", "5")];
    let a = Instance::start(&env);
    let b = Instance::start(&env);
    let clients = [Rest::new(&a.base()), Rest::new(&b.base())];
    let busy = clients[0].started("per_participant", 2, 600_000).await;
    let quiet = clients[0].started("per_participant", 2, 600_000).await;

    // Each instance's client switches one after the other, racing the
    // other: a switch that read a version the other already moved on from
    // is a 409 (and counts nothing); one that would write past the limit
    // is a 429 and writes nothing.
    let path = format!("/v1/sessions/{busy}/switch");
    let started = Instant::now();
    let answers: Vec<Reply> = join_all(clients.iter().map(|client| {
        let path = &path;
        async move {
            let mut answers = Vec::new();
            for _ in 0..15 {
                answers.push(client.post(path, None).await);
            }
            answers
        }
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let count = |status: u16| answers.iter().filter(|r| r.status == status).count();
    let (switched, limited) = (count(200), count(429));
    assert_eq!(switched + limited + count(409), answers.len());
    assert!(switched >= 5, "{switched} switched");
    assert!(
        switched <= ceiling(5, 1.0, elapsed),
        "{switched} switches in {elapsed:.2} s"
    );
    assert!(limited > 0);
    for r in answers.iter().filter(|r| r.status == 429) {
        assert_refusal(r, 5);
    }
    // The version counts exactly the switches answered 200 (it was 2).
    let state = clients[1].get(&format!("/v1/sessions/{busy}")).await;
    assert_eq!(
        state.data()["version"],
        2 + switched as u64,
        "{}",
        state.text
    );
    // Another session's switches are not affected.
    let r = clients[1]
        .post(&format!("/v1/sessions/{quiet}/switch"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn each_client_has_its_own_budget_and_proxy_headers_count_only_when_trusted() {
    for trust_proxy in [true, false] {
        let mut config = test_config();
        config.rate_limit_general = 3;
        config.trust_proxy = trust_proxy;
        let app = spawn_with(config, Clock::System, None).await;
        let path = format!("{}/v1/sessions/{}", app.base, common::uuid());
        let from = |ip: &'static str| {
            let req = app.client.get(&path).header("x-forwarded-for", ip);
            async move { req.send().await.unwrap().status() }
        };
        for _ in 0..3 {
            assert_eq!(from("198.51.100.1").await, StatusCode::NOT_FOUND);
        }
        assert_eq!(from("198.51.100.1").await, StatusCode::TOO_MANY_REQUESTS);
        // Another client: its own budget behind a trusted proxy; without
        // trust both are the same peer (127.0.0.1), already spent.
        let expected = if trust_proxy {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(
            from("198.51.100.2").await,
            expected,
            "trust_proxy {trust_proxy}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_settle_in_a_few_calls_and_none_on_the_request_path() {
    let redis = RedisServer::start();
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    config.rate_limit_general = 1_200;
    config.trust_proxy = true;
    let app = spawn_with(config, Clock::System, None).await;
    let path = format!("{}/v1/sessions/{}", app.base, common::uuid());

    let mut monitor = redis.monitor();
    // A hundred clients, one request each.
    let clients = 100;
    let answers = join_all((0..clients).map(|i| {
        let req = app
            .client
            .get(&path)
            .header("x-forwarded-for", format!("198.51.100.{i}"));
        async move { req.send().await.unwrap().status() }
    }))
    .await;
    assert!(answers.iter().all(|s| *s == StatusCode::NOT_FOUND));
    // Read what Redis was sent until every client's count has been settled
    // (each settle call names the keys it settles).
    let is_settle = |l: &String| !l.contains("lua]") && l.contains(":rl:");
    let mut lines = Vec::new();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let marker = format!("marker-{}", common::uuid());
        redis.cli(&["echo", &marker]);
        lines.extend(monitor.lines_until(&marker));
        let settled: usize = lines
            .iter()
            .filter(|l| is_settle(l))
            .map(|l| l.matches(":rl:").count())
            .sum();
        if settled >= clients as usize {
            break;
        }
        assert!(Instant::now() < deadline, "{settled} clients settled");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let sent = |command: &str| {
        lines
            .iter()
            .filter(|l| !l.contains("lua]") && l.to_lowercase().contains(command))
            .count()
    };
    // Each request read its session (HGET), nothing else; the settles went
    // out in batches, a few calls for a hundred clients.
    assert_eq!(sent("\"hget\""), clients as usize);
    let settles = lines.iter().filter(|l| is_settle(l)).count();
    assert!(
        (1..=clients as usize / 4).contains(&settles),
        "{settles} settle calls for {clients} clients"
    );
}
