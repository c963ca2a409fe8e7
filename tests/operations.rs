//! What an operator watches: every metric docs/METRICS.md documents shows up on
//! `/metrics` (main port and `METRICS_PORT`) of a real instance on real Redis
//! and PostgreSQL, and a short scenario moves the counters it should.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::postgres::PostgresServer;
use common::process::Instance;
use common::receiver::{Receiver, SECRET};
use common::redis::RedisServer;
use common::ws::WsClient;
use common::{Rest, metric, participant_ids, session_body};

/// The metric names of docs/METRICS.md's table (labels stripped).
fn documented() -> BTreeSet<String> {
    let table =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/METRICS.md")).unwrap();
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `synckairos_"))
        .map(|rest| {
            let name = rest.split(['`', '{']).next().unwrap_or_default();
            format!("synckairos_{name}")
        })
        .collect()
}

/// The metric names on a Prometheus page (histogram suffixes folded).
fn exposed(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| l.starts_with("synckairos_"))
        .filter_map(|l| l.split([' ', '{']).next())
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

/// Polls `/metrics` until `done` holds; fails after 30 s with the page.
async fn await_metrics(rest: &Rest, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = rest.get("/metrics").await.text;
        if done(&page) {
            return page;
        }
        assert!(Instant::now() < deadline, "metrics never settled:\n{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_exposed_and_a_scenario_moves_them() {
    let mut redis = RedisServer::start();
    let pg = PostgresServer::start();
    let db = pg.database("audit");
    let redis_url = redis.url();
    let receiver = Receiver::start().await;
    let hooks = receiver.url("/hooks");
    let instance = Instance::start(&[
        ("REDIS_URL", redis_url.as_str()),
        ("DATABASE_URL", db.as_str()),
        ("SWEEP_INTERVAL_SECONDS", "1"),
        ("METRICS_PORT", "0"),
        ("WEBHOOK_URL", hooks.as_str()),
        ("WEBHOOK_SECRET", SECRET),
    ]);
    let rest = Rest::new(&instance.base());
    let scrape = Rest::new(&format!(
        "http://{}",
        instance.started["metrics_addr"]
            .as_str()
            .expect("the start-up line names the metrics address")
    ));

    // A chess clock watched over WebSocket: start, two switches, then the
    // clock runs out (the scheduler applies the timeout).
    let body = session_body("per_participant", 2, 1_000);
    let id = body["session_id"].as_str().unwrap().to_owned();
    let state = rest.create(&body).await;
    assert_eq!(participant_ids(&state).len(), 2);
    let mut ws = WsClient::watch(&rest.base, &id).await;
    ws.next_of("STATE_SYNC").await;
    rest.command(&id, "start").await;
    rest.command(&id, "switch").await;
    rest.command(&id, "switch").await;
    rest.await_expired(&id, Instant::now() + Duration::from_secs(10))
        .await;
    ws.next_of("TIMEOUT").await;

    let page = await_metrics(&scrape, |page| {
        metric(page, "synckairos_audit_events_written_total") >= 5.0
            && metric(page, "synckairos_active_sessions") >= 1.0
            && metric(page, "synckairos_webhook_latency_seconds_count") >= 2.0
    })
    .await;
    for (series, at_least) in [
        (
            r#"synckairos_http_request_duration_seconds_count{method="POST",route="/v1/sessions/{id}/switch",status="200"}"#,
            2.0,
        ),
        (
            r#"synckairos_engine_write_duration_seconds_count{command="switch"}"#,
            2.0,
        ),
        (
            r#"synckairos_engine_write_duration_seconds_count{command="timeout"}"#,
            1.0,
        ),
        ("synckairos_pubsub_messages_received_total", 4.0),
        ("synckairos_pubsub_delay_seconds_count", 4.0),
        ("synckairos_ws_messages_sent_total", 4.0),
        ("synckairos_ws_connections", 1.0),
        ("synckairos_timeouts_applied_total", 1.0),
        ("synckairos_timeout_lag_seconds_count", 1.0),
        ("synckairos_scheduler_claims_total", 1.0),
        ("synckairos_audit_batch_size_count", 1.0),
        // The timeout and the expiry, delivered (the default selection).
        (
            r#"synckairos_webhook_deliveries_total{outcome="delivered"}"#,
            2.0,
        ),
        (r#"synckairos_webhook_attempts_total{result="2xx"}"#, 2.0),
    ] {
        assert!(
            metric(&page, series) >= at_least,
            "{series} < {at_least}:\n{page}"
        );
    }

    // Redis gone: the request fails with 503 and the error is counted.
    redis.kill();
    let r = rest.get(&format!("/v1/sessions/{id}")).await;
    assert_eq!(r.status, 503, "{}", r.text);
    let page = await_metrics(&scrape, |page| {
        metric(page, "synckairos_redis_errors_total") >= 1.0
    })
    .await;

    // docs/METRICS.md and the page name the same metrics.
    let documented = documented();
    let exposed = exposed(&page);
    assert!(
        documented.len() >= 25,
        "docs/METRICS.md table parsed: {documented:?}"
    );
    assert_eq!(
        documented.difference(&exposed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented but not exposed"
    );
    assert_eq!(
        exposed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "exposed but not documented"
    );
    // The main port serves the same registry; the metrics port nothing else.
    let main = rest.get("/metrics").await;
    assert_eq!(main.status, 200);
    assert!(main.text.contains("synckairos_redis_errors_total"));
    let other = scrape.get("/v1/time").await;
    assert_eq!((other.status.as_u16(), other.code()), (404, "NOT_FOUND"));
}
