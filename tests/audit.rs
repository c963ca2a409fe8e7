//! The audit trail end to end: real Redis, real PostgreSQL (started by the
//! tests), real instances. Every event of every write reaches `sync_events`
//! exactly once, whatever happens to PostgreSQL or to an instance.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;
use synckairos::audit::postgres::AuditDb;
use synckairos::clock::Clock;
use synckairos::config::Config;
use synckairos::store::Store;
use synckairos::store::redis::RedisStore;

use common::postgres::{PostgresServer, await_sql, database, psql, query};
use common::process::{Instance, binary};
use common::redis::RedisServer;
use common::ws::WsClient;
use common::{Rest, spawn_app, spawn_with, test_config};

/// An in-process instance's configuration with the audit trail on.
fn audit_config(redis: Option<&RedisServer>, db: &str) -> Config {
    let mut config = test_config();
    config.redis_url = redis.map(RedisServer::url);
    config.database_url = Some(db.to_owned());
    config.database_timeout_ms = 500;
    config
}

/// Once the drain has created the tables.
async fn await_migrated(db: &str) {
    await_sql(
        db,
        "SELECT count(*) FROM pg_tables WHERE tablename = 'sync_events'",
        "1",
    )
    .await;
}

/// Once `n` events are in `sync_events` (the drain creates the table first,
/// asynchronously: a query before that would fail, not wait).
async fn await_events(db: &str, n: usize) {
    await_migrated(db).await;
    await_sql(db, "SELECT count(*) FROM sync_events", &n.to_string()).await;
}

/// The outbox of every bucket: (entries, pending). The streams and their
/// group exist from the first instance's start.
fn outbox(redis: &RedisServer) -> (u64, u64) {
    let script = "local n, p = 0, 0 \
        for _, k in ipairs(KEYS) do \
          n = n + redis.call('XLEN', k) \
          p = p + redis.call('XPENDING', k, 'audit')[1] \
        end \
        return {n, p}";
    let layout = redis.layout();
    let streams: Vec<String> = (0..16).map(|b| layout.audit(b)).collect();
    let mut args = vec!["EVAL", script, "16"];
    args.extend(streams.iter().map(String::as_str));
    let out = redis.cli(&args);
    let mut nums = out.lines().map(|l| l.trim().parse::<u64>().unwrap());
    (nums.next().unwrap(), nums.next().unwrap())
}

/// Waits until the outbox is empty: everything acknowledged and removed.
async fn await_outbox_empty(redis: &RedisServer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while outbox(redis) != (0, 0) {
        assert!(Instant::now() < deadline, "outbox: {:?}", outbox(redis));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/ready` answers 200 with this status and audit state.
async fn assert_ready(app: &Rest, status: &str, audit: &str) {
    let ready = app.get("/ready").await;
    assert_eq!(
        (
            ready.status.as_u16(),
            &ready.body["status"],
            &ready.body["audit"]
        ),
        (200, &Value::from(status), &Value::from(audit))
    );
}

/// Creates and starts `n` two-player chess clocks, spread over `apps`.
async fn start_sessions(apps: &[&Rest], n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            apps[i % apps.len()]
                .started("per_participant", 2, 600_000)
                .await,
        );
    }
    ids
}

/// Switches session `ids[i % len]` through `apps[i % apps]`, asserting 200.
async fn switch(apps: &[&Rest], ids: &[String], i: usize) {
    let app = apps[i % apps.len()];
    let id = &ids[i % ids.len()];
    let r = app.post(&format!("/v1/sessions/{id}/switch"), None).await;
    assert_eq!(r.status, 200, "switch {i}: {}", r.text);
}

async fn complete_all(apps: &[&Rest], ids: &[String]) {
    for (i, id) in ids.iter().enumerate() {
        apps[i % apps.len()].command(id, "complete").await;
    }
}

/// What `n` sessions that were created, started, switched `switches` times
/// in all and completed must have left in PostgreSQL: every event once,
/// versions 1..final per session with nothing missing or doubled,
/// timestamps in version order, and one finished `sync_sessions` row each.
async fn assert_trail(db: &str, n: usize, switches: usize) {
    await_events(db, 3 * n + switches).await;
    assert_eq!(
        query(
            db,
            "SELECT string_agg(event_type || '=' || c, ' ' ORDER BY event_type) \
             FROM (SELECT event_type, count(*) AS c FROM sync_events GROUP BY 1) t"
        )
        .await,
        format!(
            "cycle_switched={switches} session_completed={n} session_created={n} session_started={n}"
        )
    );
    let contiguous = "SELECT count(*) FROM (SELECT count(*) AS c, count(DISTINCT version) AS d, \
                      min(version) AS lo, max(version) AS hi FROM sync_events GROUP BY session_id) t \
                      WHERE c = d AND lo = 1 AND hi = c";
    assert_eq!(query(db, contiguous).await, n.to_string());
    let backwards = "SELECT count(*) FROM (SELECT \"timestamp\" < lag(\"timestamp\") \
                     OVER (PARTITION BY session_id ORDER BY version) AS back FROM sync_events) t \
                     WHERE back";
    assert_eq!(query(db, backwards).await, "0");
    let finished = "SELECT count(*) FROM sync_sessions WHERE sync_mode = 'per_participant' \
                    AND final_status = 'completed' AND completed_at >= started_at \
                    AND started_at >= created_at";
    assert_eq!(query(db, finished).await, n.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_every_write_lands_once_in_version_order() {
    let redis = RedisServer::start();
    let db = database();
    let a = spawn_with(audit_config(Some(&redis), &db.url), Clock::System, None).await;
    let b = spawn_with(audit_config(Some(&redis), &db.url), Clock::System, None).await;
    let apps = [&a.rest, &b.rest];
    let (sessions, switches) = (20, 200);
    let ids = start_sessions(&apps, sessions).await;
    for i in 0..switches {
        switch(&apps, &ids, i).await;
    }
    complete_all(&apps, &ids).await;
    assert_trail(&db.url, sessions, switches).await;
    await_outbox_empty(&redis).await;
}

#[tokio::test]
async fn a_sessions_time_control_is_recorded_with_it() {
    let db = database();
    let app = spawn_with(audit_config(None, &db.url), Clock::System, None).await;
    let mut body = common::session_body("per_participant", 2, 60_000);
    body["time_control"] =
        serde_json::json!({"type": "byoyomi", "periods": 5, "period_ms": 30_000});
    let id = body["session_id"].as_str().unwrap().to_owned();
    app.create(&body).await;
    await_events(&db.url, 1).await;
    let sql = format!(
        "SELECT time_control->>'type' || ' ' || (time_control->>'periods') \
         FROM sync_sessions WHERE session_id = '{id}'"
    );
    await_sql(&db.url, &sql, "byoyomi 5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_delays_the_trail_and_loses_nothing() {
    let redis = RedisServer::start();
    let mut pg = PostgresServer::start();
    let db = pg.database("audit");
    let a = spawn_with(audit_config(Some(&redis), &db), Clock::System, None).await;
    let b = spawn_with(audit_config(Some(&redis), &db), Clock::System, None).await;
    let apps = [&a.rest, &b.rest];
    let ids = start_sessions(&apps, 10).await;
    await_events(&db, 20).await;

    // Ten seconds without PostgreSQL: every call succeeds all the same.
    pg.stop();
    let mut latencies = Vec::new();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(10) {
        let started = Instant::now();
        switch(&apps, &ids, latencies.len()).await;
        latencies.push(started.elapsed());
    }
    let switches = latencies.len();
    complete_all(&apps, &ids).await;
    latencies.sort();
    println!(
        "{switches} switches during the outage: p50 {:?}, p99 {:?}, max {:?}",
        latencies[switches / 2],
        latencies[switches * 99 / 100],
        latencies[switches - 1]
    );
    let (backlog, _) = outbox(&redis);
    assert!(
        backlog >= switches as u64,
        "the events wait in the outbox: {backlog}"
    );

    pg.resume();
    assert_trail(&db, ids.len(), switches).await;
    await_outbox_empty(&redis).await;
    let metrics = a.get("/metrics").await.text;
    assert!(
        metrics.contains("synckairos_audit_failures_total{stage=\"insert\"}"),
        "the writer saw the outage"
    );
    // Batch sizes are a histogram with buckets (summaries do not aggregate).
    assert!(metrics.contains("synckairos_audit_batch_size_bucket{le=\"500\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_killed_instance_had_read_are_claimed_and_written_once() {
    let redis = RedisServer::start();
    let mut pg = PostgresServer::start();
    let db = pg.database("audit");
    let redis_url = redis.url();
    let env = [
        ("REDIS_URL", redis_url.as_str()),
        ("DATABASE_URL", db.as_str()),
    ];
    let a = Instance::start(&env);
    let rest_a = Rest::new(&a.base());
    await_migrated(&db).await;
    let ids = start_sessions(&[&rest_a], 5).await;
    await_events(&db, 10).await;

    // A reads the next events but cannot commit them...
    pg.stop();
    let switches = 50;
    for i in 0..switches {
        switch(&[&rest_a], &ids, i).await;
    }
    complete_all(&[&rest_a], &ids).await;
    let held = switches as u64 + 5;
    let deadline = Instant::now() + Duration::from_secs(30);
    while outbox(&redis) != (held, held) {
        assert!(Instant::now() < deadline, "outbox: {:?}", outbox(&redis));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and dies holding them.
    a.kill();
    pg.resume();

    // Half of them were committed by someone who then died before
    // acknowledging: the claimer's insert must skip those.
    let store = RedisStore::connect(redis.store_options()).await.unwrap();
    let taken = store
        .outbox_reclaim(synckairos::store::OutboxGroup::Audit, "test", 0, 1000)
        .await
        .unwrap();
    assert_eq!(taken.len() as u64, held);
    let half: Vec<_> = taken
        .iter()
        .take(taken.len() / 2)
        .map(|e| e.event.clone().unwrap())
        .collect();
    let audit = AuditDb::connect_lazy(&db, Duration::from_secs(5)).unwrap();
    assert_eq!(audit.insert(&half).await.unwrap(), half.len() as u64);

    // B takes over what has been idle for a second, and writes it.
    let b = Instance::start(&[
        ("REDIS_URL", redis_url.as_str()),
        ("DATABASE_URL", db.as_str()),
        ("AUDIT_CLAIM_IDLE_MS", "1000"),
    ]);
    assert_trail(&db, ids.len(), switches).await;
    await_outbox_empty(&redis).await;
    let metrics = Rest::new(&b.base()).get("/metrics").await.text;
    assert!(
        metrics.contains(&format!("synckairos_audit_duplicates_total {}", half.len())),
        "B skipped exactly the {} events already written:\n{}",
        half.len(),
        metrics
            .lines()
            .filter(|l| l.starts_with("synckairos_audit"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_on_an_empty_database_migrate_once() {
    let db = database();
    let config = audit_config(None, &db.url);
    let (a, b) = tokio::join!(
        spawn_with(config.clone(), Clock::System, None),
        spawn_with(config, Clock::System, None)
    );
    // Both serve, and both drain.
    a.started("global", 2, 60_000).await;
    b.started("global", 2, 60_000).await;
    await_events(&db.url, 4).await;
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert_eq!(
        query(
            &db.url,
            "SELECT count(*) FROM _sqlx_migrations WHERE success"
        )
        .await,
        files.to_string()
    );
}

#[test]
fn the_migrate_subcommand_applies_the_migrations_and_exits() {
    let db = database();
    let out = binary()
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        psql(&db.url, "SELECT count(*) FROM sync_events"),
        "0",
        "the tables exist"
    );
    // Again: nothing left to do, still a success.
    let again = binary()
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(again.status.success());

    // Without a database the audit log is off: nothing to migrate, and a
    // release step without Postgres does not abort the deploy.
    let missing = binary()
        .arg("migrate")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nothing to migrate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_newest_first_and_fails_clearly() {
    // The embedded backend drains its in-process outbox the same way.
    let mut pg = PostgresServer::start();
    let db = pg.database("audit");
    let app = spawn_with(audit_config(None, &db), Clock::System, None).await;
    let id = app.started("per_participant", 2, 600_000).await;
    for _ in 0..10 {
        app.command(&id, "switch").await;
    }
    app.command(&id, "complete").await;
    await_events(&db, 13).await;

    // Pages of 5: versions 13..9, 8..4, 3..1, each page's cursor the next's `before`.
    let mut versions = Vec::new();
    let mut path = format!("/v1/sessions/{id}/events?limit=5");
    let mut pages = 0;
    loop {
        let r = app.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.text);
        pages += 1;
        let events = r.data()["events"].as_array().unwrap().clone();
        versions.extend(events.iter().map(|e| e["version"].as_u64().unwrap()));
        assert!(events.iter().all(|e| e["session_id"] == id.as_str()));
        match &r.data()["next_before"] {
            Value::String(cursor) => {
                assert_eq!(events.last().unwrap()["id"], cursor.as_str());
                path = format!("/v1/sessions/{id}/events?limit=5&before={cursor}");
            }
            Value::Null => break,
            other => panic!("next_before: {other}"),
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(versions, (1..=13).rev().collect::<Vec<u64>>());
    let all = app.get(&format!("/v1/sessions/{id}/events")).await;
    let newest = &all.data()["events"][0];
    assert_eq!(newest["event_type"], "session_completed");
    assert_eq!(newest["state_snapshot"]["status"], "completed");
    assert_eq!(all.data()["events"][12]["event_type"], "session_created");

    assert_ready(&app, "ready", "ok").await;

    let unknown = app
        .get(&format!("/v1/sessions/{}/events", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(
        (unknown.status.as_u16(), unknown.code()),
        (404, "SESSION_NOT_FOUND")
    );
    for bad in ["limit=0", "limit=501", "limit=x", "before=nope"] {
        let r = app.get(&format!("/v1/sessions/{id}/events?{bad}")).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "VALIDATION_ERROR"),
            "{bad}"
        );
    }

    pg.stop();
    let down = app.get(&format!("/v1/sessions/{id}/events")).await;
    assert_eq!(
        (down.status.as_u16(), down.code()),
        (503, "SERVICE_UNAVAILABLE"),
        "{}",
        down.text
    );
    // Sessions are still served: degraded, not unready.
    assert_ready(&app, "degraded", "unreachable").await;
    app.started("global", 2, 60_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_answers_at_once_while_the_drain_finds_the_database_down() {
    let mut pg = PostgresServer::start();
    let db = pg.database("audit");
    let mut config = audit_config(None, &db);
    // A history call that had to find out for itself would wait a minute.
    config.database_timeout_ms = 60_000;
    let app = spawn_with(config, Clock::System, None).await;
    let id = app.started("per_participant", 2, 600_000).await;
    await_events(&db, 2).await;

    pg.stop();
    // A write gives the drain something to insert, and so to fail at.
    app.command(&id, "switch").await;
    let path = format!("{}/v1/sessions/{id}/events", app.base);
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // Calls made before the drain fails may wait (cut off here); once it
    // has failed, the answer is a 503 at once instead of a minute later.
    let deadline = Instant::now() + Duration::from_secs(40);
    let refused = loop {
        assert!(Instant::now() < deadline, "history never failed fast");
        if let Ok(r) = quick.get(&path).send().await {
            break r;
        }
    };
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");

    // Back: the drain's next commit clears it and the history is complete.
    pg.resume();
    await_events(&db, 3).await;
    let r = app.get(&format!("/v1/sessions/{id}/events")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["events"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn history_without_a_database_says_audit_is_off() {
    let app = spawn_app().await;
    let id = app.started("global", 2, 60_000).await;
    let r = app.get(&format!("/v1/sessions/{id}/events")).await;
    assert_eq!((r.status.as_u16(), r.code()), (503, "AUDIT_DISABLED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_batch_closes_sockets_with_1001_and_loses_no_event() {
    let redis = RedisServer::start();
    let pg = PostgresServer::start();
    let db = pg.database("audit");
    let redis_url = redis.url();
    let a = Instance::start(&[
        ("REDIS_URL", redis_url.as_str()),
        ("DATABASE_URL", db.as_str()),
        ("SHUTDOWN_GRACE_SECONDS", "5"),
    ]);
    let rest_a = Rest::new(&a.base());
    await_migrated(&db).await;
    let ids = start_sessions(&[&rest_a], 3).await;
    await_events(&db, 6).await;
    await_outbox_empty(&redis).await;

    // Someone holds the events table: the drain's next insert waits, a batch
    // read from the outbox and in flight when the signal comes.
    let mut locker = std::process::Command::new("psql")
        .args([
            db.as_str(),
            "-c",
            "BEGIN; LOCK TABLE sync_events IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    await_sql(
        &db,
        "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted \
         AND relation = 'sync_events'::regclass",
        "1",
    )
    .await;
    let switches = 9;
    for i in 0..switches {
        switch(&[&rest_a], &ids, i).await;
    }
    complete_all(&[&rest_a], &ids).await;
    await_sql(
        &db,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        "1",
    )
    .await;
    let mut watchers = Vec::new();
    for id in &ids {
        let mut ws = WsClient::watch(&rest_a.base, id).await;
        ws.next_of("STATE_SYNC").await;
        watchers.push(ws);
    }

    // SIGTERM: exit 0 within the bound `terminate` enforces, every socket
    // told the server is going away.
    let (status, log) = tokio::task::spawn_blocking(move || a.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}: {log:?}");
    assert!(
        log.iter().any(|l| l.contains("synckairos stopped")),
        "{log:?}"
    );
    for ws in &mut watchers {
        assert_eq!(ws.until_closed().await.0.code, 1001);
    }
    // The batch was not committed, so it was not acknowledged either.
    let held = (switches + ids.len()) as u64;
    assert_eq!(
        outbox(&redis).0,
        held,
        "unwritten events left in the outbox"
    );

    // The lock goes; B claims what A left, and every event lands once.
    query(
        &db,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()",
    )
    .await;
    let _ = locker.wait();
    let _b = Instance::start(&[
        ("REDIS_URL", redis_url.as_str()),
        ("DATABASE_URL", db.as_str()),
        ("AUDIT_CLAIM_IDLE_MS", "1000"),
    ]);
    assert_trail(&db, ids.len(), switches).await;
    await_outbox_empty(&redis).await;
}
