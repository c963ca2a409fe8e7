//! Redis Cluster, for real: local clusters of `redis-server` processes (3
//! primaries, 3 replicas) built by `redis-cli --cluster create`, SyncKairos
//! instances as separate processes, PostgreSQL for the audit trail. Buckets
//! spread evenly over primaries; command clients that fred gives up on (an
//! ASK to a node they have no connection to) are replaced; a failover
//! (manual, or a primary killed) and a live reshard under a switch storm
//! lose no acknowledged write, hang no request, keep every socket's versions
//! in order, apply every due timeout once and land every audit event once.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use synckairos::domain::SessionId;
use synckairos::store::redis::keys::{self, Layout, slot};

use common::cluster::RedisCluster;
use common::postgres::{TestDatabase, await_sql, database};
use common::process::{Instance, cluster_instances};
use common::ws::WsClient;
use common::*;

/// Every primary owns within one of `B / N` buckets, and our slot function
/// agrees with `CLUSTER KEYSLOT`.
#[tokio::test]
async fn buckets_spread_evenly_over_three_primaries() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 1))
        .await
        .unwrap();
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    for buckets in [16u16, 64, 100] {
        let layout = Layout::new(buckets);
        let mut owned: BTreeMap<u16, usize> = BTreeMap::new();
        for b in 0..buckets {
            let key = layout.due(b);
            let s = slot(&key);
            assert_eq!(cluster.keyslot(&key), s, "{key}");
            let owner = primaries.iter().find(|p| p.owns(s)).unwrap();
            *owned.entry(owner.port).or_default() += 1;
        }
        let fair = f64::from(buckets) / 3.0;
        assert_eq!(owned.len(), 3, "{buckets} buckets: {owned:?}");
        for (&port, &n) in &owned {
            assert!(
                (n as f64 - fair).abs() <= 1.0,
                "{buckets} buckets: primary {port} owns {n}, fair share {fair:.2}: {owned:?}"
            );
        }
    }
}

/// A slot migrating to a node that owns no slot yet, so that no command
/// connection has a connection to it: fred ends the connection task of each
/// client that follows an `ASK` there. The instance must replace those
/// clients (one merely restarted stops flushing lone non-script commands)
/// and, once the migration is called off, serve every read again — on every
/// client of its pool.
#[tokio::test]
async fn clients_lost_to_an_ask_are_replaced() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .unwrap();
    let node = cluster_instances(&cluster, 1, &[]).remove(0);
    let app = Rest::new(&node.base());
    let id = app.started("per_participant", 2, 3_600_000).await;
    let bucket_of = |id: &str| keys::bucket(SessionId::parse(id).unwrap(), 16);
    let b = bucket_of(&id);
    let bucket_slot = slot(Layout::new(16).tag(b));
    let s = bucket_slot.to_string();
    let (cluster, owner, target) = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        let owner = cluster.owner(bucket_slot);
        let target = cluster.add_primary(&owner);
        (cluster, owner, target)
    })
    .await
    .unwrap();
    cluster.cli(
        target.port,
        &["cluster", "setslot", &s, "importing", &owner.id],
    );
    cluster.cli(
        owner.port,
        &["cluster", "setslot", &s, "migrating", &target.id],
    );

    // Sessions of that bucket that do not exist: their owner answers ASK.
    // Many at once, so that clients die with calls queued.
    let missing: Vec<String> = std::iter::repeat_with(uuid)
        .filter(|m| bucket_of(m) == b)
        .take(64)
        .collect();
    let app = &app;
    let reads = missing
        .iter()
        .map(|m| async move { app.get(&format!("/v1/sessions/{m}")).await });
    for r in join_all(reads).await {
        assert!(matches!(r.status.as_u16(), 404 | 503), "{}", r.text);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = app.get("/metrics").await.text;
        if metric(&page, "synckairos_redis_connection_restarts_total") >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no client was lost:\n{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Migration called off: every read is served again, lone and in turn
    // on every client (more of them in a row than the pool has clients).
    cluster.cli(owner.port, &["cluster", "setslot", &s, "stable"]);
    cluster.cli(target.port, &["cluster", "setslot", &s, "stable"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut in_a_row = 0;
    while in_a_row < 16 {
        let served = app.get(&format!("/v1/sessions/{id}")).await.status == 200
            && app
                .get(&format!("/v1/sessions/{}", missing[0]))
                .await
                .status
                == 404;
        in_a_row = if served { in_a_row + 1 } else { 0 };
        assert!(Instant::now() < deadline, "reads not served again");
    }
    app.command(&id, "switch").await;
}

// ------------------------------------------------------------- under load

/// The deployment a failover scenario runs on.
struct Deployment {
    cluster: RedisCluster,
    db: TestDatabase,
    nodes: Vec<Instance>,
    apps: Vec<Arc<Rest>>,
}

/// What clients may see while the cluster changes.
#[derive(PartialEq)]
enum Served {
    /// Every request answered: the data stays reachable throughout.
    Always,
    /// 503 while a slot has no primary (fast: bounded by the command timeout).
    UnavailableBriefly,
}

static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// REDIS_TIMEOUT_MS of the instances: the bound on any one Redis call.
const REDIS_TIMEOUT_MS: u64 = 1_000;

async fn deployment() -> Deployment {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 1))
        .await
        .unwrap();
    let db = database();
    let timeout = REDIS_TIMEOUT_MS.to_string();
    let nodes = cluster_instances(
        &cluster,
        3,
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("REDIS_TIMEOUT_MS", timeout.as_str()),
            // A read whose reply was lost in the failover is pending on its
            // consumer until claimed as idle: claim within the test.
            ("AUDIT_CLAIM_IDLE_MS", "3000"),
        ],
    );
    let apps = nodes
        .iter()
        .map(|n| Arc::new(Rest::new(&n.base())))
        .collect();
    Deployment {
        cluster,
        db,
        nodes,
        apps,
    }
}

/// What a switch storm saw.
#[derive(Default)]
struct Storm {
    /// Per session: every acknowledged (version, cycle_started_at in ms).
    acked: HashMap<String, Vec<(u64, i64)>>,
    /// Answers by status.
    statuses: BTreeMap<u16, u64>,
    slowest: Duration,
    /// The longest a worker went from its first 503 to its next success:
    /// the unavailability a client saw.
    unavailable: Duration,
    /// Other answers than 200, 409 or 503, with their bodies.
    unexpected: Vec<String>,
}

/// One worker per session switches it through the instances in turn until
/// `stop`; every answer is timed and classified, and `acks` counts the
/// acknowledged switches as they come.
async fn storm(
    apps: &[Arc<Rest>],
    ids: &[String],
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
) -> Storm {
    let workers = ids.iter().enumerate().map(|(k, id)| {
        let apps = apps.to_vec();
        let (stop, acks) = (stop.clone(), acks.clone());
        let id = id.clone();
        tokio::spawn(async move {
            let mut seen = Storm::default();
            let path = format!("/v1/sessions/{id}/switch");
            let mut turn = k;
            let mut failing_since: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                turn += 1;
                let started = Instant::now();
                let r = apps[turn % apps.len()].post(&path, None).await;
                seen.slowest = seen.slowest.max(started.elapsed());
                *seen.statuses.entry(r.status.as_u16()).or_default() += 1;
                match r.status.as_u16() {
                    200 => {
                        if let Some(since) = failing_since.take() {
                            seen.unavailable = seen.unavailable.max(since.elapsed());
                        }
                        let v = r.data()["version"].as_u64().unwrap();
                        let at = r.data()["cycle_started_at"].as_str().unwrap();
                        let at = synckairos::domain::Timestamp::parse_rfc3339(at).unwrap();
                        seen.acked.entry(id.clone()).or_default().push((v, at.ms()));
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    status @ (409 | 503) => {
                        if status == 503 {
                            failing_since.get_or_insert(started);
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    _ => seen.unexpected.push(r.text),
                }
            }
            seen
        })
    });
    let mut total = Storm::default();
    for part in join_all(workers).await {
        let part = part.unwrap();
        total.acked.extend(part.acked);
        for (s, n) in part.statuses {
            *total.statuses.entry(s).or_default() += n;
        }
        total.slowest = total.slowest.max(part.slowest);
        total.unavailable = total.unavailable.max(part.unavailable);
        total.unexpected.extend(part.unexpected);
    }
    total
}

/// Reads a socket for the whole scenario (a client that stops reading is
/// rightly dropped as too slow) until it has shown the version `target` is
/// set to: every STATE_UPDATE newer than what it showed before, a
/// STATE_SYNC no older. Returns the last version shown.
fn read_in_order(mut ws: WsClient, target: Arc<AtomicU64>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut shown = 0;
        while shown < target.load(Ordering::Relaxed) {
            let m = match tokio::time::timeout(Duration::from_millis(200), ws.next_or_close()).await
            {
                Err(_) => continue, // quiet: look at the target again
                Ok(Ok(m)) => m,
                Ok(Err(closed)) => panic!("socket closed after version {shown}: {closed:?}"),
            };
            let v = m["state"]["version"].as_u64();
            match (m["type"].as_str().unwrap(), v) {
                ("STATE_UPDATE", Some(v)) => {
                    assert!(v > shown, "update {v} after {shown}");
                    shown = v;
                }
                ("STATE_SYNC", Some(v)) => {
                    assert!(v >= shown, "sync {v} after {shown}");
                    shown = v;
                }
                ("FEED_INTERRUPTED", None) => {}
                other => panic!("unexpected message {other:?}: {m}"),
            }
        }
        shown
    })
}

/// Waits until the storm has acknowledged `n` switches in all (failing the
/// test if it stalls for 30 s: the service did not come back).
async fn await_acks(acks: &AtomicU64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks.load(Ordering::Relaxed) < n {
        assert!(
            Instant::now() < deadline,
            "the storm stalled before {n} acknowledged switches"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The failover scenario: a switch storm on 30 sessions through three
/// instances, one watcher per session, 100 sessions falling due in the
/// middle; `disrupt` runs (blocking) meanwhile. Then every property;
/// `Served::Always` also demands that no request failed.
async fn survives(served: Served, disrupt: impl FnOnce(&mut RedisCluster) + Send + 'static) {
    // One scenario at a time: each runs six Redis nodes, three instances and
    // PostgreSQL, and bounds how long a request may take.
    let _one_at_a_time = HEAVY.lock().await;
    let Deployment {
        cluster,
        db,
        nodes: _nodes,
        apps,
    } = deployment().await;
    let storm_ids: Vec<String> = join_all((0..30).map(|k| {
        let app = apps[k % 3].clone();
        async move { app.started("per_participant", 2, 3_600_000).await }
    }))
    .await;
    let mut watchers = Vec::new();
    for (k, id) in storm_ids.iter().enumerate() {
        let mut ws = WsClient::watch(&apps[(k + 1) % 3].base, id).await;
        ws.next_of("STATE_SYNC").await;
        let target = Arc::new(AtomicU64::new(u64::MAX));
        watchers.push((target.clone(), read_in_order(ws, target)));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let storming = tokio::spawn({
        let (apps, ids) = (apps.clone(), storm_ids.clone());
        let (stop, acks) = (stop.clone(), acks.clone());
        async move { storm(&apps, &ids, stop, acks).await }
    });
    // 100 sessions due 2 s from now: during or right after the disruption.
    let due_ids: Vec<String> = join_all((0..100).map(|k| {
        let app = apps[k % 3].clone();
        async move { app.started("per_participant", 1, 2_000).await }
    }))
    .await;
    // Disrupt while the storm is in full swing, and stop it once it has
    // been served well on the new topology too.
    await_acks(&acks, 100).await;
    let _cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        disrupt(&mut cluster);
        cluster
    })
    .await
    .unwrap();
    await_acks(&acks, acks.load(Ordering::Relaxed) + 500).await;
    stop.store(true, Ordering::Relaxed);
    let seen = storming.await.unwrap();
    eprintln!(
        "storm: {:?}, slowest {:?}, unavailable for {:?}, acknowledged {}",
        seen.statuses,
        seen.slowest,
        seen.unavailable,
        seen.acked.values().map(Vec::len).sum::<usize>()
    );
    assert!(seen.unexpected.is_empty(), "{:?}", seen.unexpected);
    if served == Served::Always {
        assert_eq!(seen.statuses.get(&503), None, "requests failed");
    }
    assert!(
        seen.slowest < Duration::from_millis(2 * REDIS_TIMEOUT_MS + 1_000),
        "a request hung for {:?}",
        seen.slowest
    );

    // Every session's final state holds at least its last acknowledged version.
    let mut finals = BTreeMap::new();
    for id in &storm_ids {
        let deadline = Instant::now() + Duration::from_secs(20);
        let state = loop {
            let r = apps[0].get(&format!("/v1/sessions/{id}")).await;
            if r.status == 200 {
                break r.data().clone();
            }
            assert_eq!(r.code(), "SERVICE_UNAVAILABLE", "{}", r.text);
            assert!(Instant::now() < deadline, "{id} unreadable");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let last = state["version"].as_u64().unwrap();
        let acked = seen.acked.get(id).and_then(|a| a.last()).map_or(0, |a| a.0);
        assert!(last >= acked, "{id}: acknowledged {acked}, stored {last}");
        finals.insert(id.clone(), last);
    }
    // Sockets saw every write in order, or a STATE_SYNC over what they missed.
    for ((target, reader), id) in watchers.into_iter().zip(&storm_ids) {
        target.store(finals[id], Ordering::Relaxed);
        let shown = tokio::time::timeout(Duration::from_secs(20), reader)
            .await
            .unwrap_or_else(|_| panic!("{id}: the socket never showed version {}", finals[id]))
            .unwrap();
        assert_eq!(shown, finals[id]);
    }
    // Every due session timed out, once.
    let until = Instant::now() + Duration::from_secs(20);
    for id in &due_ids {
        let state = apps[1].await_expired(id, until).await;
        assert_eq!(state["version"], 3, "{id}: exactly one timeout write");
    }

    // The audit trail: every write's events exactly once (versions 1..=final
    // of every storm session, 1..=3 of every due session) ...
    let distinct: u64 = finals.values().sum::<u64>() + 3 * due_ids.len() as u64;
    await_sql(
        &db.url,
        "SELECT count(*) FROM (SELECT DISTINCT session_id, version FROM sync_events) v",
        &distinct.to_string(),
    )
    .await;
    await_sql(
        &db.url,
        "SELECT count(*) FROM (SELECT session_id, version, event_type FROM sync_events \
         GROUP BY 1, 2, 3 HAVING count(*) > 1) dup",
        "0",
    )
    .await;
    await_sql(
        &db.url,
        "SELECT count(*) FROM sync_events WHERE event_type = 'session_expired'",
        &due_ids.len().to_string(),
    )
    .await;
    // ... and each acknowledged switch is the one recorded at its version
    // (a write lost in the failover and redone by another would differ).
    let acked: Vec<String> = seen
        .acked
        .iter()
        .flat_map(|(id, a)| {
            a.iter()
                .map(move |(v, at)| format!("('{id}'::uuid, {v}, {at})"))
        })
        .collect();
    // In chunks: one psql argument holds at most 128 KiB.
    for chunk in acked.chunks(500) {
        let sql = format!(
            "SELECT count(*) FROM (VALUES {}) AS a(session_id, version, at) \
             LEFT JOIN sync_events e ON e.session_id = a.session_id AND e.version = a.version \
               AND e.event_type = 'cycle_switched' \
               AND (extract(epoch FROM e.\"timestamp\") * 1000)::bigint = a.at \
             WHERE e.id IS NULL",
            chunk.join(", ")
        );
        await_sql(&db.url, &sql, "0").await;
    }
}

#[tokio::test]
async fn a_manual_failover_under_load_loses_nothing() {
    survives(Served::Always, |cluster| {
        // The primary that owns the most buckets.
        let layout = Layout::new(16);
        let primaries = cluster.primaries();
        let victim = primaries
            .iter()
            .max_by_key(|p| (0..16).filter(|&b| p.owns(slot(&layout.due(b)))).count())
            .unwrap();
        let promoted = cluster.failover(victim);
        eprintln!("failed over {} to {}", victim.port, promoted.port);
    })
    .await;
}

#[tokio::test]
async fn a_killed_primary_under_load_loses_nothing() {
    survives(Served::UnavailableBriefly, |cluster| {
        // The node the instances were given (REDIS_URL): afterwards they
        // must find the cluster through the nodes they learnt of.
        let seed = cluster.url();
        let victim = cluster
            .primaries()
            .into_iter()
            .find(|p| seed.ends_with(&format!(":{}", p.port)))
            .expect("the seed node is a primary");
        let killed = Instant::now();
        let elected = cluster.kill_primary(&victim);
        eprintln!(
            "killed {}; {} elected after {:?}",
            victim.port,
            elected.port,
            killed.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn adding_a_primary_and_resharding_while_serving_loses_nothing() {
    survives(Served::Always, |cluster| {
        let from = cluster.primaries()[0].clone();
        let port = cluster.add_primary_and_reshard(&from, 1_000);
        eprintln!("moved 1000 slots from {} to {port}", from.port);
    })
    .await;
}
